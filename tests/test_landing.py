"""``GET /``: the index a newcomer sees first, public and the same for every caller."""

from __future__ import annotations

import json

from app import app


def test_the_root_answers_an_index_of_the_service(client):
    response = client.http.get("/")
    assert response.status_code == 200
    body = json.loads(response.body)
    assert body["service"] == "ringback"
    assert body["version"]
    assert body["links"] == {"openapi": "/openapi.json", "health": "/health"}
    bases = {family["name"]: family["base_path"] for family in body["families"]}
    assert bases == {
        "admin": "/admin/tenants",
        "campaign": "/companies/{company_id}/campaigns/config/callbacks",
        "events": "/events",
        "deliveries": "/deliveries",
        "scheduled": "/api/1.0",
        "notification": "/rest/api/v1.3/notifications",
        "callnotify": "/customer/{customer_id}/callnotify",
    }


def test_every_base_path_of_the_index_is_where_routes_live(client):
    """The index must not point at paths the app does not serve."""
    body = json.loads(client.http.get("/").body)
    for family in body["families"]:
        assert any(path.startswith(family["base_path"]) for path in app.routes), family


def test_the_index_needs_no_key_and_ignores_a_wrong_one(client):
    anonymous = client.http.get("/")
    with_bad_key = client.http.get("/", headers={"Authorization": "Bearer rbk_nonsense"})
    assert anonymous.status_code == with_bad_key.status_code == 200
    assert json.loads(anonymous.body) == json.loads(with_bad_key.body)


def test_other_methods_on_the_root_get_the_house_405(client):
    response = client.http.post("/", body=b"{}", headers={"Content-Type": "application/json"})
    assert response.status_code == 405
    assert json.loads(response.body)["error"] == "method_not_allowed"
