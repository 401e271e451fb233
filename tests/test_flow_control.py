"""Per-target flow control: the bucket arithmetic, the DynamoDB limiter, the campaign fields, and
300 events to a target limited to 10/s measured at a loopback receiver."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chalicelib.domain import flow
from chalicelib.domain.flow import LimitInvalid, Limits

REG = "/companies/{}/campaigns/config/callbacks"


# --------------------------------------------------------------------------- pure arithmetic


def most_in_any_window(times: list[float], window: float = 1.0) -> int:
    """The largest number of ``times`` inside any half-open window ``[t, t + window)``."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, at in enumerate(ordered):
        while ordered[start] <= at - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_a_burst_is_spread_one_spacing_apart_and_never_exceeds_the_rate():
    tat = None
    slots = []
    for _ in range(50):
        slot, tat = flow.take_slot(tat, 100.0, rate=10.0)
        slots.append(slot)
    assert slots[0] == 100.0
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(slots)}
    assert gaps == {round(flow.spacing(10.0), 9)}
    assert most_in_any_window(slots) <= 10
    # Even with every send late by up to the guard's budget, no receiver window holds 11.
    jittered = [s + (0.19 if i % 2 else 0.0) for i, s in enumerate(slots)]
    assert most_in_any_window(jittered) <= 10


def test_an_idle_bucket_admits_at_once_and_keeps_no_credit():
    slot, tat = flow.take_slot(None, 10.0, rate=2.0)
    assert slot == 10.0 and tat == pytest.approx(10.0 + flow.spacing(2.0))
    slot, tat = flow.take_slot(tat, 50.0, rate=2.0)  # long idle: no burst saved up
    assert slot == 50.0
    slot, _ = flow.take_slot(tat, 50.0, rate=2.0)
    assert slot == pytest.approx(50.0 + flow.spacing(2.0))


def test_stage_defaults_fill_only_what_the_target_does_not_say():
    default = Limits(rate=5.0, max_in_flight=3)
    assert flow.effective(None, default) == default
    assert flow.effective(Limits(rate=1.0), default) == Limits(1.0, 3)
    assert flow.effective(Limits(max_in_flight=9), Limits()) == Limits(None, 9)
    assert flow.effective(None, Limits()).unlimited


@pytest.mark.parametrize("value", [0, -1, "x", True, float("nan"), 5000, [], {}])
def test_bad_rates_are_refused(value):
    with pytest.raises(LimitInvalid) as caught:
        flow.parse_rate(value, "rateLimit")
    assert caught.value.field == "rateLimit"


@pytest.mark.parametrize("value", [0, -2, 1.5, "1.5", "", True, 1001, "abc"])
def test_bad_in_flight_maximums_are_refused(value):
    with pytest.raises(LimitInvalid):
        flow.parse_max_in_flight(value)


def test_good_limits_parse_from_json_and_query_strings():
    assert flow.parse_rate(10) == 10.0
    assert flow.parse_rate("0.5", allow_text=True) == 0.5
    assert flow.parse_rate(None) is None
    assert flow.parse_max_in_flight(4) == 4
    assert flow.parse_max_in_flight("4", allow_text=True) == 4
    with pytest.raises(LimitInvalid):  # a JSON body sends the number, not its spelling
        flow.parse_rate("10")


def test_expired_in_flight_slots_are_recognised():
    live = flow.slot_entry("a", 200.0)
    dead = flow.slot_entry("b", 99.0)
    assert flow.expired_entries([live, dead, "garbage"], now=100.0) == {dead, "garbage"}


def test_limits_round_trip_through_delivery_content():
    assert flow.to_content(Limits()) == {}
    content = flow.to_content(Limits(2.5, 4))
    assert flow.from_content(json.loads(json.dumps(content))) == Limits(2.5, 4)
    assert flow.from_content({}) is None


# --------------------------------------------------------------------------- DynamoDB limiter


def test_the_bucket_in_dynamodb_hands_out_consecutive_slots(aws):
    from chalicelib.storage import limiter

    key = limiter.rate_key("campaign", "t1", "cb1")
    now = 1_000_000.0
    slots = [limiter.take_slot(key, 10.0, now) for _ in range(5)]
    step = flow.spacing(10.0)
    assert slots == pytest.approx([now + i * step for i in range(5)])
    # Once the backlog has passed, the bucket is idle again: admitted at once.
    assert limiter.take_slot(key, 10.0, now + 60) == now + 60


def test_in_flight_slots_stop_at_the_maximum_and_come_back(aws):
    from chalicelib.storage import limiter

    key = limiter.inflight_key("campaign", "t1", "cb1")
    now = 1_000_000.0
    first = limiter.acquire(key, 2, 30, now)
    second = limiter.acquire(key, 2, 30, now)
    assert first and second
    assert limiter.acquire(key, 2, 30, now) is None
    limiter.release(key, first)
    assert limiter.acquire(key, 2, 30, now) is not None


def test_a_crashed_workers_in_flight_slot_heals_by_itself(aws):
    from chalicelib.storage import limiter

    key = limiter.inflight_key("campaign", "t1", "cb1")
    now = 1_000_000.0
    assert limiter.acquire(key, 1, 30, now) is not None  # never released: the worker died
    assert limiter.acquire(key, 1, 30, now + 10) is None
    assert limiter.acquire(key, 1, 30, now + 31) is not None


def test_unlimited_targets_cost_no_limiter_call(aws, monkeypatch):
    from chalicelib.delivery import flow as engine_flow
    from chalicelib.storage import limiter

    def boom(*args, **kwargs):
        raise AssertionError("the limiter was called for an unlimited target")

    monkeypatch.setattr(limiter, "take_slot", boom)
    monkeypatch.setattr(limiter, "acquire", boom)

    class Fam:
        def limits(self, delivery):
            return None

    class Rec:
        family, tenant_id, target_id = "campaign", "t", "x"

    gate = engine_flow.admit(Fam(), Rec(), None, 30.0)  # type: ignore[arg-type]
    assert gate.admitted
    gate.release()


# --------------------------------------------------------------------------- campaign API fields


def _create(client, tenant, **fields):
    body = {"event_type": "order.paid", "destination_url": "https://example.com/hook", **fields}
    return client.http.post(
        REG.format(tenant.tenant_id), headers=tenant.headers, body=json.dumps(body)
    )


def test_campaign_registration_carries_and_shows_its_limits(client, make_tenant):
    tenant = make_tenant()
    created = _create(client, tenant, rate_limit=2.5, max_in_flight=3)
    assert created.status_code == 201, created.json_body
    assert created.json_body["rate_limit"] == 2.5
    assert created.json_body["max_in_flight"] == 3
    shown = client.http.get(created.json_body["url"], headers=tenant.headers).json_body
    assert shown["rate_limit"] == 2.5 and shown["max_in_flight"] == 3


def test_campaign_limits_are_optional(client, make_tenant):
    tenant = make_tenant()
    created = _create(client, tenant)
    assert created.status_code == 201
    assert created.json_body["rate_limit"] is None
    assert created.json_body["max_in_flight"] is None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"rate_limit": 0}, "rate_limit"),
        ({"rate_limit": "fast"}, "rate_limit"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"max_in_flight": 2.5}, "max_in_flight"),
    ],
)
def test_campaign_refuses_bad_limits_in_its_own_error_body(client, make_tenant, fields, field):
    tenant = make_tenant()
    refused = _create(client, tenant, **fields)
    assert refused.status_code == 400
    assert refused.json_body["error"] == "invalid"
    assert refused.json_body["field"] == field


# --------------------------------------------------------------------------- end to end


class Arrivals:
    """A threaded loopback receiver recording when each request arrived, per path, and how many
    requests it was serving at once (each answer takes ``delay`` seconds)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.lock = threading.Lock()
        self.delay = delay
        self.serving = 0
        self.most_at_once = 0
        self.times: dict[str, list[float]] = {}
        self.bodies: dict[str, list[bytes]] = {}
        arrivals = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                at = time.monotonic()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with arrivals.lock:
                    arrivals.times.setdefault(self.path, []).append(at)
                    arrivals.bodies.setdefault(self.path, []).append(body)
                    arrivals.serving += 1
                    arrivals.most_at_once = max(arrivals.most_at_once, arrivals.serving)
                time.sleep(arrivals.delay)
                with arrivals.lock:
                    arrivals.serving -= 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self, path: str) -> int:
        with self.lock:
            return len(self.times.get(path, []))


@pytest.fixture
def arrivals() -> Iterator[Arrivals]:
    receiver = Arrivals()
    yield receiver
    receiver.server.shutdown()


def test_300_events_to_a_target_limited_to_10_per_second(client, make_tenant, worker, arrivals):
    from chalicelib.delivery import ingest

    tenant = make_tenant()
    limited = _create(
        client,
        tenant,
        event_type="order.paid",
        destination_url=arrivals.url("/limited"),
        rate_limit=10,
    )
    free = _create(client, tenant, event_type="order.sent", destination_url=arrivals.url("/free"))
    assert limited.status_code == 201 and free.status_code == 201

    event_ids = []
    for n in range(300):
        event_ids.append(ingest.publish(tenant.tenant_id, "order.paid", {"n": n}).event_id)
        if n % 3 == 0:
            ingest.publish(tenant.tenant_id, "order.sent", {"n": n})

    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            if worker.poll() == 0:
                time.sleep(0.02)

    pollers = [threading.Thread(target=poll, daemon=True) for _ in range(4)]
    for thread in pollers:
        thread.start()
    deadline = time.monotonic() + 240
    while arrivals.count("/limited") < 300 and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    for thread in pollers:
        thread.join(timeout=30)

    limited_times = arrivals.times.get("/limited", [])
    free_times = arrivals.times.get("/free", [])
    assert len(limited_times) == 300
    assert len(free_times) == 100
    gaps = sorted(b - a for a, b in itertools.pairwise(sorted(limited_times)))
    assert most_in_any_window(limited_times) <= 10, f"smallest gaps: {gaps[:12]}"
    delivered = {json.loads(body)["event_id"] for body in arrivals.bodies["/limited"]}
    assert delivered == set(event_ids)
    # Not slowed: the unlimited target was done before the limited one was a third through.
    assert max(free_times) < sorted(limited_times)[100]
    # Waiting is not a failed attempt: every limited delivery succeeded on its first attempt.
    for event_id in event_ids[:20]:
        _assert_delivered_at_first_attempt(client, tenant, event_id)


# --------------------------------------------------------------------------- notification API

NOTIF = "/rest/api/v1.3/notifications"


def _notif_body(url, **extra):
    return {
        "name": "orders_cb",
        "url": url,
        "batchSize": 10,
        "authentication": {"type": "B", "data": {"userName": "u", "password": "p-secret"}},
        **extra,
    }


def test_notification_callback_carries_rate_limit_and_max_in_flight(
    client, make_tenant, httpserver
):
    httpserver.expect_request("/hook").respond_with_data("ok")
    url = httpserver.url_for("/hook")
    tenant = make_tenant()
    created = client.http.post(
        f"{NOTIF}/callbacks",
        headers=tenant.headers,
        body=json.dumps(_notif_body(url, rateLimit=5, maxInFlight=2)),
    )
    assert created.status_code == 201, created.json_body
    assert created.json_body["rateLimit"] == 5 and created.json_body["maxInFlight"] == 2
    shown = client.http.get(f"{NOTIF}/callbacks/orders_cb", headers=tenant.headers).json_body
    assert shown["rateLimit"] == 5 and shown["maxInFlight"] == 2
    # An update that leaves them out keeps them; null removes one.
    updated = client.http.put(
        f"{NOTIF}/callbacks/orders_cb",
        headers=tenant.headers,
        body=json.dumps({**_notif_body(url), "rateLimit": None}),
    )
    assert updated.status_code == 200, updated.json_body
    assert "rateLimit" not in updated.json_body and updated.json_body["maxInFlight"] == 2


@pytest.mark.parametrize(
    ("field", "value"), [("rateLimit", 0), ("rateLimit", "5"), ("maxInFlight", 1.5)]
)
def test_notification_refuses_bad_limits_in_its_own_envelope(
    client, make_tenant, httpserver, field, value
):
    httpserver.expect_request("/hook").respond_with_data("ok")
    tenant = make_tenant()
    refused = client.http.post(
        f"{NOTIF}/callbacks",
        headers=tenant.headers,
        body=json.dumps(_notif_body(httpserver.url_for("/hook"), **{field: value})),
    )
    assert refused.status_code == 400
    body = refused.json_body
    assert body["errorCode"] == "INVALID_PARAMETER"
    assert body["title"] == "Invalid request parameters"
    assert field in body["detail"] and body["errorDetails"] == []


# --------------------------------------------------------------------------- scheduled API


def _scheduled_create(client, tenant, **params):
    from tests.scheduled_helpers import answer, call, iso_in

    query = {
        "api_key": tenant.key,
        "callback_url": "http://127.0.0.1:9/hook",
        "callback_time": iso_in(120),
        **params,
    }
    response = call(client, "create", query)
    return response, answer(response)


def test_scheduled_callback_carries_rate_limit_and_max_in_flight(client, make_tenant):
    from tests.scheduled_helpers import answer, call

    tenant = make_tenant()
    response, body = _scheduled_create(client, tenant, rate_limit="0.5", max_in_flight="2")
    assert response.status_code == 200, body
    assert body["success"] == 1
    shown = answer(call(client, f"retrieve/{body['callback_id']}", {"api_key": tenant.key}))
    assert shown["callback"]["rate_limit"] == 0.5
    assert shown["callback"]["max_in_flight"] == 2


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"rate_limit": "fast"}, "rate_limit_invalid"),
        ({"rate_limit": "0"}, "rate_limit_invalid"),
        ({"max_in_flight": "-1"}, "max_in_flight_invalid"),
    ],
)
def test_scheduled_refuses_bad_limits_with_its_own_keys(client, make_tenant, params, key):
    tenant = make_tenant()
    response, body = _scheduled_create(client, tenant, **params)
    assert response.status_code == 400
    assert body == {"success": 0, "error": key}


def test_scheduled_refuses_repeats_shorter_than_the_stage_minimum(client, make_tenant, monkeypatch):
    monkeypatch.setenv("RINGBACK_MIN_REPEAT_SECONDS", "60")
    tenant = make_tenant()
    repeat = {"callback_repeat": "1", "callback_repeat_type": "interval"}
    short = {**repeat, "callback_repeat_interval_unit": "seconds", "callback_repeat_interval": "5"}
    response, body = _scheduled_create(client, tenant, **short)
    assert response.status_code == 400
    assert body == {"success": 0, "error": "callback_repeat_interval_too_short"}
    enough = {**repeat, "callback_repeat_interval_unit": "minutes", "callback_repeat_interval": "1"}
    response, body = _scheduled_create(client, tenant, **enough)
    assert response.status_code == 200 and body["success"] == 1, body


def test_immediate_repeats_are_spaced_by_the_stage_minimum(monkeypatch):
    from chalicelib.delivery.scheduled import ScheduledFamily

    class Delivery:
        content = json.dumps({"repeat_type": "immediate", "firing": 3})

    monkeypatch.setenv("RINGBACK_MIN_REPEAT_SECONDS", "30")
    limits = ScheduledFamily().limits(Delivery())  # type: ignore[arg-type]
    assert limits is not None and limits.rate is not None
    assert flow.spacing(limits.rate) == pytest.approx(30.0)


# --------------------------------------------------------------------------- callnotify API

CALLNOTIFY = "/customer/{}/callnotify"
NOTIFIER = {"url": "http://127.0.0.1:4000/call", "method": "POSTXML1", "selection": "MVNO"}


def test_call_notifier_carries_rate_limit_and_max_in_flight(client, make_tenant):
    tenant = make_tenant()
    created = client.http.post(
        CALLNOTIFY.format(tenant.tenant_id),
        headers=tenant.headers,
        body=json.dumps({**NOTIFIER, "rate_limit": 20, "max_in_flight": 4}),
    )
    assert created.status_code == 201, created.json_body
    assert created.json_body["rate_limit"] == 20 and created.json_body["max_in_flight"] == 4
    item = f"{CALLNOTIFY.format(tenant.tenant_id)}/{created.json_body['_id']}"
    shown = client.http.get(item, headers=tenant.headers).json_body
    assert shown["rate_limit"] == 20 and shown["max_in_flight"] == 4
    updated = client.http.put(
        item, headers=tenant.headers, body=json.dumps({"max_in_flight": None})
    ).json_body
    assert "max_in_flight" not in updated and updated["rate_limit"] == 20


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("rate_limit", -3, "Invalid rate limit"),
        ("rate_limit", "20", "Invalid rate limit"),
        ("max_in_flight", 0, "Invalid max in flight"),
    ],
)
def test_callnotify_refuses_bad_limits_in_its_own_error_body(
    client, make_tenant, field, value, message
):
    tenant = make_tenant()
    refused = client.http.post(
        CALLNOTIFY.format(tenant.tenant_id),
        headers=tenant.headers,
        body=json.dumps({**NOTIFIER, field: value}),
    )
    assert refused.status_code == 422
    assert refused.json_body == {"error": field, "message": message}


def _run_workers(worker, done, pollers=4, timeout=240.0):
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            if worker.poll() == 0:
                time.sleep(0.02)

    threads = [threading.Thread(target=poll, daemon=True) for _ in range(pollers)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)


def test_max_in_flight_holds_concurrent_deliveries_and_the_rest_wait(client, make_tenant, worker):
    from chalicelib.delivery import ingest

    slow = Arrivals(delay=0.6)
    try:
        tenant = make_tenant()
        created = _create(client, tenant, destination_url=slow.url("/slow"), max_in_flight=2)
        assert created.status_code == 201
        event_ids = [
            ingest.publish(tenant.tenant_id, "order.paid", {"n": n}).event_id for n in range(8)
        ]
        _run_workers(worker, lambda: slow.count("/slow") >= 8 and slow.serving == 0)
    finally:
        slow.server.shutdown()
    assert slow.count("/slow") == 8
    assert slow.most_at_once == 2
    for event_id in event_ids:
        _assert_delivered_at_first_attempt(client, tenant, event_id)


def _assert_delivered_at_first_attempt(client, tenant, event_id):
    """As a client sees it: delivered, with one attempt in the log (waiting left no trace)."""
    shown = client.http.get(f"/events/{event_id}", headers=tenant.headers)
    assert shown.status_code == 200, shown.json_body
    (delivery,) = shown.json_body["deliveries"]
    detail = client.http.get(f"/deliveries/{delivery['delivery_id']}", headers=tenant.headers)
    assert detail.json_body["status"] == "delivered"
    assert len(detail.json_body["attempts"]) == 1


def test_a_waiting_delivery_comes_back_before_its_slot_to_be_on_time():
    assert flow.requeue_at(100.0, now=90.0) == pytest.approx(100.0 - flow.PREWAKE)
    assert flow.requeue_at(100.0, now=99.9) == 99.9
    assert flow.PREWAKE < flow.SLEEP_LIMIT  # what is left is slept off in place


def test_stage_defaults_apply_to_targets_without_limits(monkeypatch):
    from chalicelib.delivery import flow as engine_flow

    class Fam:
        def __init__(self, own):
            self.own = own

        def limits(self, delivery):
            return self.own

    monkeypatch.setenv("RINGBACK_DEFAULT_RATE_LIMIT", "3")
    monkeypatch.setenv("RINGBACK_DEFAULT_MAX_IN_FLIGHT", "7")
    assert engine_flow.limits_of(Fam(None), None) == Limits(3.0, 7)  # type: ignore[arg-type]
    own = Fam(Limits(rate=1.0))
    assert engine_flow.limits_of(own, None) == Limits(1.0, 7)  # type: ignore[arg-type]
    monkeypatch.delenv("RINGBACK_DEFAULT_RATE_LIMIT")
    monkeypatch.delenv("RINGBACK_DEFAULT_MAX_IN_FLIGHT")
    assert engine_flow.limits_of(Fam(None), None).unlimited  # type: ignore[arg-type]


def test_every_family_hands_its_targets_limits_to_the_engine(client, make_tenant):
    """The limits a registration carries reach its deliveries' content, where the family's
    ``limits`` hook reads them at send time without an AWS call."""
    from chalicelib.delivery import registry
    from chalicelib.delivery.registry import PublishedEvent

    tenant = make_tenant()
    created = client.http.post(
        CALLNOTIFY.format(tenant.tenant_id),
        headers=tenant.headers,
        body=json.dumps({**NOTIFIER, "selection": "ALL", "rate_limit": 2, "max_in_flight": 3}),
    )
    assert created.status_code == 201
    event = PublishedEvent(
        event_id="e1",
        tenant_id=tenant.tenant_id,
        event_type="CALL_END",
        received_at="2026-01-01T00:00:00Z",
        selection="SIP",
        payload={
            "call_id": "c1",
            "from": "+4512345678",
            "to": "+4587654321",
            "direction": "in",
            "timestamp": "2016-05-27T09:30:00Z",
            "duration": 1,
            "cause": "normal",
        },
    )
    family = registry.family("callnotify")
    (target,) = family.match(event)

    class Delivery:
        content = json.dumps(target.content)

    assert family.limits(Delivery()) == Limits(2.0, 3)  # type: ignore[attr-defined]
    registered = _create(client, tenant, rate_limit=4)
    assert registered.status_code == 201
    campaign = registry.family("campaign")
    (target,) = campaign.match(
        PublishedEvent("e2", tenant.tenant_id, "order.paid", "2099-01-01T00:00:00Z", {})
    )
    Delivery.content = json.dumps(target.content)
    assert campaign.limits(Delivery()) == Limits(4.0, None)  # type: ignore[attr-defined]
