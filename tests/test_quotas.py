"""Tenant quotas: over a limit -> 429 with Retry-After in the family's own body; raising the
limit through the admin API lets the request through; counts follow creates and deletes."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from chalicelib.domain import quotas as rules

NOTIF = "/rest/api/v1.3/notifications"


def _put(client: Any, admin: dict[str, str], tenant_id: str, body: dict[str, Any]) -> Any:
    response = client.http.put(
        f"/admin/tenants/{tenant_id}/quotas", headers=admin, body=json.dumps(body)
    )
    assert response.status_code == 200, response.body
    return response.json_body


def _quotas(client: Any, admin: dict[str, str], tenant_id: str) -> Any:
    return client.http.get(f"/admin/tenants/{tenant_id}/quotas", headers=admin).json_body


def _retry_after(response: Any) -> int:
    value = response.headers["Retry-After"]
    assert value.isdigit() and int(value) >= 1
    return int(value)


# --------------------------------------------------------------------------- admin API


def test_defaults_come_from_the_stage_and_overrides_from_the_admin(
    client, make_tenant, admin_headers, monkeypatch
):
    owner = make_tenant("OWNER")
    monkeypatch.setenv("RINGBACK_QUOTA_REGISTRATIONS", "7")
    monkeypatch.setenv("RINGBACK_QUOTA_EVENTS_PER_SECOND", "9")
    monkeypatch.delenv("RINGBACK_QUOTA_SCHEDULED_PENDING", raising=False)
    view = _quotas(client, admin_headers, owner.tenant_id)
    assert view["quotas"] == {
        "registrations": {"campaign": 7, "notification": 7, "callnotify": 7},
        "events_per_second": 9,
        "scheduled_pending": rules.DEFAULTS[rules.PENDING],
    }
    assert view["overrides"] == {}
    changed = _put(
        client,
        admin_headers,
        owner.tenant_id,
        {"registrations": {"campaign": 2}, "scheduled_pending": 3},
    )
    assert changed["quotas"]["registrations"] == {"campaign": 2, "notification": 7, "callnotify": 7}
    assert changed["quotas"]["scheduled_pending"] == 3
    back = _put(client, admin_headers, owner.tenant_id, {"scheduled_pending": None})
    assert back["quotas"]["scheduled_pending"] == rules.DEFAULTS[rules.PENDING]
    assert back["overrides"] == {"registrations": {"campaign": 2}}
    # the tenant reads its own quotas; only the operator changes them
    assert (
        client.http.get(
            f"/admin/tenants/{owner.tenant_id}/quotas", headers=owner.headers
        ).json_body["quotas"]["registrations"]["campaign"]
        == 2
    )
    refused = client.http.put(
        f"/admin/tenants/{owner.tenant_id}/quotas",
        headers=owner.headers,
        body=json.dumps({"events_per_second": 1000}),
    )
    assert refused.status_code == 403 and refused.json_body["error"] == "forbidden"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events_per_second": -1}, "events_per_second"),
        ({"events_per_second": "10"}, "events_per_second"),
        ({"registrations": {"sms": 3}}, "registrations.sms"),
        ({"registrations": 5}, "registrations"),
        ({"widgets": 5}, "widgets"),
        ({"scheduled_pending": True}, "scheduled_pending"),
    ],
)
def test_bad_quota_changes_are_refused(client, make_tenant, admin_headers, body, field):
    owner = make_tenant("OWNER")
    response = client.http.put(
        f"/admin/tenants/{owner.tenant_id}/quotas", headers=admin_headers, body=json.dumps(body)
    )
    assert response.status_code == 400 and response.json_body["field"] == field


# --------------------------------------------------------------------------- registrations


def test_campaign_registrations_quota(client, make_tenant, admin_headers):
    owner = make_tenant("OWNER")
    base = f"/companies/{owner.tenant_id}/campaigns/config/callbacks"
    _put(client, admin_headers, owner.tenant_id, {"registrations": {"campaign": 1}})

    def create(n: int) -> Any:
        body = {"event_type": f"order.q{n}", "destination_url": "http://127.0.0.1:9/hook"}
        return client.http.post(base, headers=owner.headers, body=json.dumps(body))

    first = create(1)
    assert first.status_code == 201
    over = create(2)
    assert over.status_code == 429
    _retry_after(over)
    assert over.json_body == {
        "error": "quota_exceeded",
        "message": over.json_body["message"],
        "quota": "registrations.campaign",
        "limit": 1,
    }
    assert len(client.http.get(base, headers=owner.headers).json_body) == 1  # nothing written
    # ending a registration frees its slot
    ended = client.http.delete(f"{base}/{first.json_body['callback_id']}", headers=owner.headers)
    assert ended.status_code == 200
    assert create(3).status_code == 201
    assert create(4).status_code == 429
    # raising the limit lets the request through
    _put(client, admin_headers, owner.tenant_id, {"registrations": {"campaign": 2}})
    assert create(5).status_code == 201
    usage = _quotas(client, admin_headers, owner.tenant_id)["usage"]
    assert usage["registrations"]["campaign"] == 2


def test_notification_callbacks_quota(client, make_tenant, admin_headers, monkeypatch):
    monkeypatch.setenv("RINGBACK_VERIFY_CALLBACKS", "false")
    owner = make_tenant("OWNER")
    headers = {"Authorization": owner.key, "Content-Type": "application/json"}
    _put(client, admin_headers, owner.tenant_id, {"registrations": {"notification": 1}})

    def create(name: str) -> Any:
        body = {
            "name": name,
            "url": f"http://127.0.0.1:9/{name}",
            "batchSize": 1,
            "authentication": {"type": "B", "data": {"userName": "u", "password": "p"}},
        }
        return client.http.post(f"{NOTIF}/callbacks", headers=headers, body=json.dumps(body))

    assert create("cb_one").status_code == 201
    over = create("cb_two")
    assert over.status_code == 429
    _retry_after(over)
    body = over.json_body
    assert list(body) == ["type", "title", "errorCode", "detail", "errorDetails"]
    assert body["errorCode"] == "TOO_MANY_REQUESTS" and body["errorDetails"] == []
    assert client.http.delete(f"{NOTIF}/callbacks/cb_one", headers=headers).status_code == 200
    assert create("cb_three").status_code == 201
    _put(client, admin_headers, owner.tenant_id, {"registrations": {"notification": 5}})
    assert create("cb_four").status_code == 201


def test_callnotify_notifiers_quota(client, make_tenant, admin_headers):
    owner = make_tenant("OWNER")
    base = f"/customer/{owner.tenant_id}/callnotify"
    _put(client, admin_headers, owner.tenant_id, {"registrations": {"callnotify": 0}})

    def create() -> Any:
        body = {"url": "http://127.0.0.1:9/cn", "method": "POSTJSON", "selection": "ALL"}
        return client.http.post(base, headers=owner.headers, body=json.dumps(body))

    over = create()
    assert over.status_code == 429
    _retry_after(over)
    assert over.json_body == {"error": "quota_exceeded", "message": over.json_body["message"]}
    _put(client, admin_headers, owner.tenant_id, {"registrations": {"callnotify": 1}})
    created = create()
    assert created.status_code == 201
    assert create().status_code == 429
    gone = client.http.delete(f"{base}/{created.json_body['_id']}", headers=owner.headers)
    assert gone.status_code == 204
    assert create().status_code == 201


# --------------------------------------------------------------------------- scheduled


def _schedule(client: Any, key: str, url: str, seconds: int, fmt: str = "json") -> Any:
    when = (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0).isoformat()
    params = {"api_key": key, "callback_url": url, "callback_time": when, "response_format": fmt}
    return client.http.get(f"/api/1.0/create/?{urlencode(params)}")


def test_scheduled_pending_quota(client, make_tenant, admin_headers):
    owner = make_tenant("OWNER")
    _put(client, admin_headers, owner.tenant_id, {"scheduled_pending": 1})
    first = _schedule(client, owner.key, "http://127.0.0.1:9/a", 3600)
    assert first.status_code == 200
    over = _schedule(client, owner.key, "http://127.0.0.1:9/b", 3600)
    assert over.status_code == 429
    _retry_after(over)
    assert json.loads(over.body) == {"success": 0, "error": "quota_exceeded"}
    as_xml = _schedule(client, owner.key, "http://127.0.0.1:9/b", 3600, fmt="xml")
    assert as_xml.status_code == 429 and b"quota_exceeded" in as_xml.body
    # cancelling frees the slot (same transaction as the cancel)
    callback_id = json.loads(first.body)["callback_id"]
    cancelled = client.http.get(f"/api/1.0/delete/{callback_id}/?api_key={owner.key}")
    assert cancelled.status_code == 200
    assert _quotas(client, admin_headers, owner.tenant_id)["usage"]["scheduled_pending"] == 0
    assert _schedule(client, owner.key, "http://127.0.0.1:9/c", 3600).status_code == 200
    _put(client, admin_headers, owner.tenant_id, {"scheduled_pending": 2})
    assert _schedule(client, owner.key, "http://127.0.0.1:9/d", 3600).status_code == 200


def test_a_callback_that_completes_leaves_the_pending_count(
    client, make_tenant, admin_headers, worker, httpserver
):
    httpserver.expect_request("/done").respond_with_data("ok")
    owner = make_tenant("OWNER")
    _put(client, admin_headers, owner.tenant_id, {"scheduled_pending": 1})
    created = _schedule(client, owner.key, httpserver.url_for("/done"), 2)
    assert created.status_code == 200
    callback_id = json.loads(created.body)["callback_id"]
    assert _schedule(client, owner.key, httpserver.url_for("/other"), 3600).status_code == 429
    deadline = time.monotonic() + 30
    state = None
    while time.monotonic() < deadline:  # a progress loop, not a timing assert
        worker.run_until_idle()
        shown = client.http.get(f"/api/1.0/retrieve/{callback_id}/?api_key={owner.key}")
        state = json.loads(shown.body)["callback"]["state"]
        if state == "completed":
            break
        time.sleep(0.5)
    assert state == "completed"
    assert _quotas(client, admin_headers, owner.tenant_id)["usage"]["scheduled_pending"] == 0
    assert _schedule(client, owner.key, httpserver.url_for("/other"), 3600).status_code == 200


# --------------------------------------------------------------------------- events


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The events bucket's clock, moved by hand: no test here depends on real timing."""
    from chalicelib.storage import quotas

    now = [1_900_000_000.0]
    monkeypatch.setattr(quotas, "_clock", lambda: now[0])
    return now


def test_events_per_second_quota(client, make_tenant, admin_headers, frozen_clock):
    owner = make_tenant("OWNER")
    _put(client, admin_headers, owner.tenant_id, {"events_per_second": 3})

    def publish() -> Any:
        body = {"event_type": "order.paid", "payload": {}}
        return client.http.post("/events", headers=owner.headers, body=json.dumps(body))

    assert [publish().status_code for _ in range(3)] == [202, 202, 202]  # a second's burst
    over = publish()
    assert over.status_code == 429
    assert _retry_after(over) == 1
    assert over.json_body["error"] == "quota_exceeded"
    assert over.json_body["quota"] == "events_per_second" and over.json_body["limit"] == 3
    assert "event_id" not in over.json_body  # nothing was accepted
    frozen_clock[0] += 1 / 3 + 0.001  # one token back
    assert publish().status_code == 202
    assert publish().status_code == 429
    # raising the limit lets the very next request through
    _put(client, admin_headers, owner.tenant_id, {"events_per_second": 100})
    assert publish().status_code == 202


def test_an_idempotent_retry_refused_by_the_quota_is_not_dropped(
    client, make_tenant, admin_headers, frozen_clock
):
    """A 429 is given before acceptance: the same request later is accepted once."""
    owner = make_tenant("OWNER")
    _put(client, admin_headers, owner.tenant_id, {"events_per_second": 1})
    headers = {**owner.headers, "Idempotency-Key": "order-42"}
    body = json.dumps({"event_type": "order.paid", "payload": {"n": 42}})
    first = client.http.post("/events", headers=owner.headers, body=body)
    assert first.status_code == 202
    refused = client.http.post("/events", headers=headers, body=body)
    assert refused.status_code == 429
    frozen_clock[0] += 2
    accepted = client.http.post("/events", headers=headers, body=body)
    assert accepted.status_code == 202 and "Idempotent-Replayed" not in accepted.headers
    event = client.http.get(f"/events/{accepted.json_body['event_id']}", headers=owner.headers)
    assert event.status_code == 200


def test_a_zero_limit_refuses_every_event(client, make_tenant, admin_headers):
    owner = make_tenant("OWNER")
    _put(client, admin_headers, owner.tenant_id, {"events_per_second": 0})
    body = json.dumps({"event_type": "order.paid"})
    refused = client.http.post("/events", headers=owner.headers, body=body)
    assert refused.status_code == 429 and refused.json_body["limit"] == 0


def test_the_bucket_holds_one_second_and_refills_at_the_rate() -> None:
    bucket = rules.Bucket.for_rate(10)
    assert bucket.interval == 100 and bucket.lag == 450  # 10 tokens: [now-450, now+450]
    assert rules.Bucket.for_rate(1).lag == 0 and rules.Bucket.for_rate(1).retry_after() == 1


def test_concurrent_creates_never_pass_the_limit(client, make_tenant, admin_headers):
    """20 threads create notifiers at once under a limit of 5: exactly 5 win (the count is
    changed in the same transaction as the create, on condition it is under the limit)."""
    from concurrent.futures import ThreadPoolExecutor

    from chalicelib.domain.timeutil import utcnow
    from chalicelib.storage import callnotify, quotas

    owner = make_tenant("OWNER")
    _put(client, admin_headers, owner.tenant_id, {"registrations": {"callnotify": 5}})
    fields = {"url": "http://127.0.0.1:9/race", "method": "POSTJSON", "selection": "ALL"}

    def create(_: int) -> str:
        try:
            callnotify.create(owner.tenant_id, fields, utcnow())
        except quotas.QuotaExceeded:
            return "refused"
        return "created"

    with ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(create, range(20)))
    assert outcomes.count("created") == 5 and outcomes.count("refused") == 15
    assert len(list(callnotify.list_for(owner.tenant_id))) == 5
    assert quotas.usage(owner.tenant_id)["registrations"]["callnotify"] == 5


def test_a_batch_takes_what_the_bucket_holds_and_refuses_the_rest_in_order(
    client, make_tenant, admin_headers, frozen_clock
):
    """One request of 5 events against 3 per second: the first 3 are accepted with one update
    of the bucket, the other 2 get the family's 429 body in their place."""
    owner = make_tenant("OWNER")
    _put(client, admin_headers, owner.tenant_id, {"events_per_second": 3})
    batch = [{"event_type": "order.paid", "payload": {"n": n}} for n in range(5)]
    answer = client.http.post("/events", headers=owner.headers, body=json.dumps(batch))
    assert answer.status_code == 200
    results = answer.json_body["results"]
    assert [r["status"] for r in results] == [202, 202, 202, 429, 429]
    assert results[3]["error"] == "quota_exceeded" and results[3]["limit"] == 3
    assert results[3]["retry_after"] == 1  # what a single request's Retry-After would say
    assert "event_id" not in results[4]
    assert (answer.json_body["accepted"], answer.json_body["refused"]) == (3, 2)
    # the bucket is empty now: a whole batch is refused; a token later, one event goes through
    again = client.http.post("/events", headers=owner.headers, body=json.dumps(batch[:2]))
    assert [r["status"] for r in again.json_body["results"]] == [429, 429]
    frozen_clock[0] += 1 / 3 + 0.001
    later = client.http.post("/events", headers=owner.headers, body=json.dumps(batch[:2]))
    assert [r["status"] for r in later.json_body["results"]] == [202, 429]
