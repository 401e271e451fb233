"""SSRF matrix in the prod stage's settings: internal destinations are refused at registration
and at send time, whatever their spelling, and redirects are never followed."""

from __future__ import annotations

import json

import pytest

INTERNAL = [
    "http://127.0.0.1/hook",
    "http://127.1/hook",
    "http://2130706433/hook",
    "http://0x7f000001/hook",
    "http://0177.0.0.1/hook",
    "http://localhost/hook",
    "http://10.0.0.1/hook",
    "http://172.16.0.1/hook",
    "http://192.168.1.1/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://[::1]/hook",
    "http://[fc00::1]/hook",
    "http://[fe80::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://0.0.0.0/hook",
    "http://internal.example/hook",  # resolves to a private address (patched resolver)
]


@pytest.fixture
def prod_client(aws, monkeypatch):
    from chalice.test import Client

    from app import app
    from chalicelib.domain import urlsafety
    from tests.conftest import ROOT

    real = urlsafety.default_resolver

    def resolver(host: str, port: int) -> list[str]:
        if host == "internal.example":
            return ["10.1.2.3"]
        return real(host, port)

    monkeypatch.setattr(urlsafety, "default_resolver", resolver)
    monkeypatch.setenv("RINGBACK_ALLOW_PRIVATE_TARGETS", "false")
    with Client(app, stage_name="prod", project_dir=str(ROOT)) as test_client:
        yield test_client


@pytest.mark.parametrize("url", INTERNAL)
def test_campaign_registration_refuses_internal_destinations(prod_client, make_tenant, url):
    owner = make_tenant()
    for field in ("destination_url", "backup_url"):
        body = {"event_type": "x", "destination_url": "https://example.com/hook"}
        body[field] = url
        response = prod_client.http.post(
            f"/companies/{owner.tenant_id}/campaigns/config/callbacks",
            headers=owner.headers,
            body=json.dumps(body),
        )
        assert response.status_code == 400, (field, url, response.json_body)
        assert response.json_body["field"] == field


def test_send_time_check_refuses_what_registration_let_through(
    client, make_tenant, worker, httpserver, monkeypatch
):
    """Registered while private targets were allowed (or before DNS changed): the send refuses."""
    hits = []
    httpserver.expect_request("/hook").respond_with_handler(lambda r: hits.append(r) or _ok())
    owner = make_tenant()
    created = client.http.post(
        f"/companies/{owner.tenant_id}/campaigns/config/callbacks",
        headers=owner.headers,
        body=json.dumps({"event_type": "x", "destination_url": httpserver.url_for("/hook")}),
    )
    assert created.status_code == 201
    monkeypatch.setenv("RINGBACK_ALLOW_PRIVATE_TARGETS", "false")
    monkeypatch.setenv("RINGBACK_RETRY_SCHEDULE", "1")
    from chalicelib.delivery import ingest

    event = ingest.publish(owner.tenant_id, "x", {})
    worker.run_until_idle()
    from chalicelib.storage import deliveries

    [record] = deliveries.event_page(event.event_id).records
    assert record.status == "failed"
    assert all(a.error.startswith("destination refused") for a in record.attempts)
    assert hits == []


def test_a_redirect_to_an_internal_address_is_not_followed(client, make_tenant, worker, httpserver):
    internal_hits = []
    httpserver.expect_request("/internal").respond_with_handler(
        lambda r: internal_hits.append(r) or _ok()
    )
    httpserver.expect_request("/hook").respond_with_data(
        "", status=302, headers={"Location": httpserver.url_for("/internal")}
    )
    owner = make_tenant()
    client.http.post(
        f"/companies/{owner.tenant_id}/campaigns/config/callbacks",
        headers=owner.headers,
        body=json.dumps({"event_type": "x", "destination_url": httpserver.url_for("/hook")}),
    )
    from chalicelib.delivery import ingest
    from chalicelib.storage import deliveries

    event = ingest.publish(owner.tenant_id, "x", {})
    worker.run_until_idle()
    [record] = deliveries.event_page(event.event_id).records
    assert internal_hits == []
    assert {a.status_code for a in record.attempts} == {302}
    assert record.status == "failed"


def _ok():
    from werkzeug import Response

    return Response("ok")


@pytest.mark.parametrize("url", INTERNAL)
def test_every_family_refuses_internal_destinations_at_registration(prod_client, make_tenant, url):
    from urllib.parse import quote

    owner = make_tenant()
    notification = prod_client.http.post(
        "/rest/api/v1.3/notifications/callbacks",
        headers=owner.headers,
        body=json.dumps(
            {
                "name": "cb",
                "url": url,
                "batchSize": 10,
                "authentication": {"type": "B", "data": {"userName": "u", "password": "p"}},
            }
        ),
    )
    assert notification.status_code == 400, notification.json_body
    assert notification.json_body["errorCode"] == "INVALID_PARAMETER"

    scheduled = prod_client.http.get(
        f"/api/1.0/create/?api_key={owner.key}&callback_url={quote(url, safe='')}"
        "&callback_time=2099-01-01T00:00:00Z"
    )
    assert scheduled.status_code == 400, scheduled.json_body
    assert scheduled.json_body["success"] == 0
    assert scheduled.json_body["error"] in ("callback_url_forbidden", "callback_url_invalid")

    notifier = prod_client.http.post(
        f"/customer/{owner.tenant_id}/callnotify",
        headers=owner.headers,
        body=json.dumps({"url": url, "method": "POSTJSON", "selection": "ALL"}),
    )
    assert notifier.status_code == 422, notifier.json_body
    assert notifier.json_body["error"] == "url"
