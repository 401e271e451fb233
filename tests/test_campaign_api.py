"""Campaign callback registrations, as a user of the seed API sees them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

BASE = "/companies/{}/campaigns/config/callbacks"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _create(client, tenant, **fields):
    body = {"event_type": "ack_participant_added", "destination_url": "http://127.0.0.1:9/hook"}
    body.update(fields)
    return client.http.post(
        BASE.format(tenant.tenant_id), headers=tenant.headers, body=json.dumps(body)
    )


def test_create_applies_the_seed_defaults_and_ignores_forbidden_fields(client, make_tenant):
    owner = make_tenant("OWNER")
    response = _create(
        client,
        owner,
        callback_id="AB3423",
        created_at="2012-04-05T14:30Z",
        url="/somewhere",
        campaign_id="c1234",
        unknown="ignored",
    )
    assert response.status_code == 201
    entity = response.json_body
    assert entity["callback_id"] != "AB3423" and len(entity["callback_id"]) == 24
    assert entity["destination_method"] == "POST"
    assert entity["content_type"] == "application/json"
    assert entity["end_date"] is None
    assert entity["campaign_id"] == "c1234"
    assert (
        entity["url"]
        == f"/companies/{owner.tenant_id}/campaigns/config/callbacks/{entity['callback_id']}"
    )
    assert entity["created_at"] != "2012-04-05T14:30Z"
    assert "unknown" not in entity
    assert entity["active"] is True
    assert entity["signing_secret"].startswith("whsec_")
    started = datetime.strptime(entity["start_date"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - started).total_seconds()) < 5

    fetched = client.http.get(entity["url"], headers=owner.headers)
    assert fetched.status_code == 200
    assert "signing_secret" not in fetched.json_body
    assert fetched.json_body["callback_id"] == entity["callback_id"]


def test_seed_style_dates_parse_and_come_back_in_utc(client, make_tenant):
    owner = make_tenant()
    response = _create(
        client, owner, start_date="2030-01-01T01:00+01:00", end_date="2031-01-01T00:00Z"
    )
    assert response.status_code == 201
    assert response.json_body["start_date"] == "2030-01-01T00:00:00Z"
    assert response.json_body["end_date"] == "2031-01-01T00:00:00Z"
    assert response.json_body["active"] is False  # future: listed, not yet in effect


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"destination_url": "not a url"}, "destination_url"),
        ({"destination_url": "ftp://example.com/x"}, "destination_url"),
        ({"destination_url": None}, "destination_url"),
        ({"event_type": ""}, "event_type"),
        ({"event_type": None}, "event_type"),
        ({"destination_method": "DELETE"}, "destination_method"),
        ({"content_type": "image/png"}, "content_type"),
        ({"start_date": "yesterday"}, "start_date"),
        ({"start_date": "2030-01-01T00:00"}, "start_date"),  # no zone
        ({"end_date": "2030-13-01T00:00Z"}, "end_date"),
        ({"start_date": "2030-01-02T00:00Z", "end_date": "2030-01-01T00:00Z"}, "end_date"),
    ],
)
def test_validation_errors_name_the_field(client, make_tenant, fields, field):
    owner = make_tenant()
    response = _create(client, owner, **fields)
    assert response.status_code == 400
    assert response.json_body["error"] == "invalid"
    assert response.json_body["field"] == field


def test_malformed_json_is_a_400_not_a_500(client, make_tenant):
    owner = make_tenant()
    for body in ("{not json", "[1, 2]", '"text"'):
        response = client.http.post(BASE.format(owner.tenant_id), headers=owner.headers, body=body)
        assert response.status_code == 400, body
        assert response.json_body["error"] == "invalid"


def test_overlapping_ranges_for_one_event_type_conflict(client, make_tenant):
    owner = make_tenant()
    first = _create(client, owner, start_date="2030-01-01T00:00Z", end_date="2030-06-01T00:00Z")
    assert first.status_code == 201
    clash = _create(client, owner, start_date="2030-05-01T00:00Z")
    assert clash.status_code == 409
    assert clash.json_body["conflicting_callback_id"] == first.json_body["callback_id"]
    # touching ranges do not overlap: [Jan, Jun) and [Jun, ...)
    assert _create(client, owner, start_date="2030-06-01T00:00Z").status_code == 201
    # another event type is independent
    assert (
        _create(client, owner, event_type="other", start_date="2030-05-01T00:00Z").status_code
        == 201
    )
    # an open-ended range overlaps everything after it
    assert _create(client, owner, start_date="2031-01-01T00:00Z").status_code == 409


def test_list_shows_active_and_future_only(client, make_tenant):
    owner = make_tenant()
    past = _create(client, owner, start_date="2001-01-01T00:00Z", end_date="2002-01-01T00:00Z")
    current = _create(client, owner, event_type="b")
    future = _create(client, owner, event_type="c", start_date="2040-01-01T00:00Z")
    ended = _create(client, owner, event_type="d")
    client.http.delete(ended.json_body["url"], headers=owner.headers)
    listed = client.http.get(BASE.format(owner.tenant_id), headers=owner.headers)
    assert listed.status_code == 200
    ids = {item["callback_id"] for item in listed.json_body}
    assert ids == {current.json_body["callback_id"], future.json_body["callback_id"]}
    assert past.status_code == 201


def test_delete_ends_now_and_pulls_a_future_start_in(client, make_tenant):
    owner = make_tenant()
    future = _create(client, owner, start_date="2040-01-01T00:00Z").json_body
    deleted = client.http.delete(future["url"], headers=owner.headers)
    assert deleted.status_code == 200
    body = deleted.json_body
    assert body["active"] is False
    now = datetime.now(UTC)
    for field in ("start_date", "end_date"):
        moment = datetime.strptime(body[field], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert abs((now - moment).total_seconds()) < 5
    # the range is closed, so a new registration starting now is allowed
    assert _create(client, owner).status_code == 201
    # deleting again is harmless and keeps the first end date
    again = client.http.delete(future["url"], headers=owner.headers)
    assert again.status_code == 200 and again.json_body["end_date"] == body["end_date"]


def test_delete_of_an_active_registration_keeps_its_start(client, make_tenant):
    owner = make_tenant()
    start = _iso(datetime.now(UTC) - timedelta(days=3))
    created = _create(client, owner, start_date=start).json_body
    deleted = client.http.delete(created["url"], headers=owner.headers).json_body
    assert deleted["start_date"] == start
    assert deleted["end_date"] > start


def test_missing_registrations_are_404(client, make_tenant):
    owner = make_tenant()
    url = BASE.format(owner.tenant_id) + "/" + "f" * 24
    assert client.http.get(url, headers=owner.headers).status_code == 404
    response = client.http.delete(url, headers=owner.headers)
    assert response.status_code == 404
    assert response.json_body["error"] == "not_found"


def test_keys_roles_and_tenant_isolation(client, make_tenant, admin_headers):
    owner = make_tenant("OWNER")
    viewer = make_tenant("VIEWER", tenant_id=owner.tenant_id)
    manager = make_tenant("MANAGER", tenant_id=owner.tenant_id)
    other = make_tenant("OWNER")
    created = _create(client, owner).json_body
    url = BASE.format(owner.tenant_id)

    assert client.http.get(url).status_code == 401
    assert client.http.get(url, headers={"Authorization": "Bearer rbk_nope"}).status_code == 401
    # a bare header is accepted too; a key in the query string only by the scheduled API
    assert client.http.get(url, headers={"Authorization": owner.key}).status_code == 200
    in_query = client.http.get(f"{url}?api_key={owner.key}")
    assert in_query.status_code == 401 and "Authorization" in in_query.json_body["message"]

    assert client.http.get(url, headers=viewer.headers).status_code == 200
    assert _create(client, viewer, event_type="v").status_code == 403
    assert client.http.delete(created["url"], headers=viewer.headers).status_code == 403
    assert _create(client, manager, event_type="m").status_code == 201

    forbidden = client.http.get(created["url"], headers=other.headers)
    assert forbidden.status_code == 403
    assert created["callback_id"] not in json.dumps(forbidden.json_body)
    assert client.http.get(url, headers=admin_headers).status_code == 200


def test_reseller_acts_on_children_only(client, make_tenant):
    reseller = make_tenant("RESELLER")
    child = make_tenant("OWNER", parent=reseller.tenant_id)
    stranger = make_tenant("OWNER")
    child_url = BASE.format(child.tenant_id)
    assert client.http.get(child_url, headers=reseller.headers).status_code == 200
    assert (
        _create(
            client, type("K", (), {"tenant_id": child.tenant_id, "headers": reseller.headers})
        ).status_code
        == 201
    )
    assert (
        client.http.get(BASE.format(stranger.tenant_id), headers=reseller.headers).status_code
        == 403
    )
    assert (
        client.http.get(BASE.format(reseller.tenant_id), headers=child.headers).status_code == 403
    )


def test_unknown_company_is_404_for_admin_and_403_for_others(client, make_tenant, admin_headers):
    owner = make_tenant()
    ghost = BASE.format("a" * 24)
    assert client.http.get(ghost, headers=admin_headers).status_code == 404
    assert client.http.get(ghost, headers=owner.headers).status_code == 403
    assert client.http.get(BASE.format("not-an-id"), headers=owner.headers).status_code == 403
