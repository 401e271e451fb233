"""Notification callbacks through the delivery engine: buffered batches to real loopback
receivers, Basic auth, signatures, the backup url, and crashes at every step of a flush."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
import time
from collections import Counter
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook
from werkzeug import Request, Response

BASE = "/rest/api/v1.3/notifications"
PASSWORD = "pw-Zq8!never-logged"


class Receiver:
    """Answers a scripted list of statuses (the last repeats) and records every request."""

    def __init__(self, httpserver: Any, path: str = "/hook", script: tuple[int, ...] = (200,)):
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.url = httpserver.url_for(path)
        httpserver.expect_request(path).respond_with_handler(self.handle)

    def handle(self, request: Request) -> Response:
        with self.lock:
            status = self.script[min(len(self.requests), len(self.script) - 1)]
            self.requests.append({"headers": dict(request.headers), "body": request.get_data()})
        return Response("ok", status=status)

    @property
    def batches(self) -> list[list[dict[str, Any]]]:
        """Delivered batches (the connection checks, empty arrays, left out)."""
        found = [json.loads(r["body"]) for r in self.requests]
        return [batch for batch in found if batch]

    def event_ids(self) -> Counter[str]:
        return Counter(obj["eventId"] for batch in self.batches for obj in batch)


@pytest.fixture
def fast(worker: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("RINGBACK_BATCH_WINDOW", "0.5")
    return worker


def create_callback(client: Any, tenant: Any, url: str, name: str = "cb", **fields: Any) -> Any:
    body = {
        "name": name,
        "url": url,
        "batchSize": 200,
        "authentication": {"type": "B", "data": {"userName": "hook-user", "password": PASSWORD}},
        **fields,
    }
    response = client.http.post(f"{BASE}/callbacks", headers=tenant.headers, body=json.dumps(body))
    assert response.status_code == 201, response.json_body
    return response.json_body


def subscribe(client: Any, tenant: Any, name: str, callback: str, events: list[str], **more: Any):
    body = {"name": name, "callbackName": callback, "eventNames": events, **more}
    response = client.http.post(
        f"{BASE}/subscriptions", headers=tenant.headers, body=json.dumps(body)
    )
    assert response.status_code == 201, response.json_body


def publish(client: Any, tenant: Any, event_type: str, payload: dict[str, Any]) -> Any:
    body = {"event_type": event_type, "payload": payload}
    response = client.http.post("/events", headers=tenant.headers, body=json.dumps(body))
    assert response.status_code == 202, response.json_body
    return response.json_body


def all_deliveries(tenant_id: str) -> list[Any]:
    from chalicelib.domain.retry import Status
    from chalicelib.storage import deliveries

    return [d for status in Status for d in deliveries.in_status(tenant_id, status)]


# --- the wire ---------------------------------------------------------------------------------


def test_events_arrive_as_one_signed_batch_with_basic_auth(client, make_tenant, fast, httpserver):
    owner = make_tenant()
    receiver = Receiver(httpserver)
    created = create_callback(client, owner, receiver.url)
    subscribe(client, owner, "bounces", "cb", ["EMAIL_BOUNCED", "SMS_FAILED"])
    payload = {
        "campaignId": 1234,
        "riid": 987654,
        "failureReason": "Mailbox full",
        "customerId": "C-1",
        "recipient": "someone@example.com",
        "failureType": "SOFT",
        "channelType": "EMAIL",
        "campaignName": "spring_sale",
        "optionalData": {"k": "v"},
        "internal": "never sent",
    }
    first = publish(client, owner, "EMAIL_BOUNCED", payload)
    second = publish(client, owner, "SMS_FAILED", {"riid": 5})
    assert first["deliveries"] == 1 and second["deliveries"] == 1
    fast.run_until_idle()

    [check, request] = receiver.requests  # the create-time check, then one batch of two
    assert check["body"] == b"[]"
    expected_auth = "Basic " + base64.b64encode(f"hook-user:{PASSWORD}".encode()).decode()
    assert request["headers"]["Authorization"] == expected_auth
    assert request["headers"]["Content-Type"] == "application/json"
    Webhook(created["signing_secret"]).verify(request["body"], request["headers"])
    text = request["body"].decode()
    assert text.startswith('[{"campaignId":1234,"riid":987654,"failureReason":"Mailbox full"')
    assert json.loads(text) == [
        {
            **{k: v for k, v in payload.items() if k != "internal"},
            "eventId": first["event_id"],
            "eventType": "EMAIL_BOUNCED",
        },
        {
            "campaignId": None,
            "riid": 5,
            "failureReason": None,
            "customerId": None,
            "recipient": None,
            "failureType": None,
            "channelType": None,
            "campaignName": None,
            "optionalData": None,
            "eventId": second["event_id"],
            "eventType": "SMS_FAILED",
        },
    ]
    [delivery] = all_deliveries(owner.tenant_id)
    assert delivery.status == "delivered" and delivery.family == "notification"
    assert request["headers"]["Webhook-Id"] == delivery.delivery_id


def test_a_rotated_secret_signs_batches_alongside_the_previous_one(
    client, make_tenant, fast, httpserver
):
    from datetime import UTC, datetime, timedelta

    from chalicelib.storage import notification as store

    owner = make_tenant()
    receiver = Receiver(httpserver)
    created = create_callback(client, owner, receiver.url)
    original = created["signing_secret"]
    before = datetime.now(UTC).replace(microsecond=0)
    rotated = client.http.post(f"{BASE}/callbacks/cb/secret/rotate", headers=owner.headers)
    assert rotated.status_code == 200, rotated.json_body
    body = rotated.json_body
    assert list(body) == ["name", "signing_secret", "previous_secret_valid_until"]
    fresh = body["signing_secret"]
    assert body["name"] == "cb" and fresh.startswith("whsec_") and fresh != original
    until = datetime.strptime(body["previous_secret_valid_until"], "%Y-%m-%dT%H:%M:%SZ")
    until = until.replace(tzinfo=UTC)
    assert timedelta(hours=24) <= until - before <= timedelta(hours=24, seconds=5)

    subscribe(client, owner, "all", "cb", ["EMAIL_FAILED"])
    publish(client, owner, "EMAIL_FAILED", {"riid": 1})
    fast.run_until_idle()
    [check, batch] = receiver.requests  # the create-time check, then the batch
    Webhook(original).verify(check["body"], check["headers"])
    for secret in (fresh, original):  # a receiver holding either secret accepts the batch
        Webhook(secret).verify(batch["body"], batch["headers"])
    # the verify request is signed like a delivery
    verify = client.http.get(f"{BASE}/callbacks/cb/actions/verify", headers=owner.headers)
    assert verify.status_code == 200
    for secret in (fresh, original):
        Webhook(secret).verify(receiver.requests[-1]["body"], receiver.requests[-1]["headers"])
    # once the overlap is over only the new secret signs
    record = store.get_callback(owner.tenant_id, "cb")
    assert record is not None
    assert store.signing_secrets_of(record) == (fresh, original)
    assert store.signing_secrets_of(record, until + timedelta(seconds=1)) == (fresh,)

    # neither secret (nor anything about the previous one) is shown again
    for path in ("/callbacks/cb", "/callbacks"):
        shown = client.http.get(BASE + path, headers=owner.headers)
        assert shown.status_code == 200
        text = shown.body.decode()
        assert fresh not in text and original not in text
        assert "ecret" not in text and "previous" not in text.lower()
    view = client.http.get(f"{BASE}/callbacks/cb", headers=owner.headers).json_body
    assert set(view) == {"name", "url", "backupUrl", "batchSize", "links"}


def test_subscriptions_decide_who_gets_what(client, make_tenant, fast, httpserver):
    owner = make_tenant()
    one, two = Receiver(httpserver, "/one"), Receiver(httpserver, "/two")
    create_callback(client, owner, one.url, "one")
    create_callback(client, owner, two.url, "two")
    # "one" is subscribed twice to EMAIL_BOUNCED: it still gets each event once
    subscribe(client, owner, "a", "one", ["EMAIL_BOUNCED"])
    subscribe(client, owner, "b", "one", ["EMAIL_BOUNCED", "EMAIL_CLICKED"])
    subscribe(client, owner, "c", "two", ["EMAIL_BOUNCED"], filters={"campaignNames": ["spring"]})
    spring = publish(client, owner, "EMAIL_BOUNCED", {"campaignName": "spring"})
    autumn = publish(client, owner, "EMAIL_BOUNCED", {"campaignName": "autumn"})
    nameless = publish(client, owner, "EMAIL_BOUNCED", {})
    clicked = publish(client, owner, "EMAIL_CLICKED", {"campaignName": "spring"})
    unlisted = publish(client, owner, "EMAIL_OPENED", {"campaignName": "spring"})
    other = make_tenant()
    elsewhere = publish(client, other, "EMAIL_BOUNCED", {"campaignName": "spring"})
    assert [e["deliveries"] for e in (spring, autumn, nameless, clicked, unlisted, elsewhere)] == [
        2,
        1,
        1,
        1,
        0,
        0,
    ]
    fast.run_until_idle()
    assert one.event_ids() == Counter(
        {e["event_id"]: 1 for e in (spring, autumn, nameless, clicked)}
    )
    assert two.event_ids() == Counter({spring["event_id"]: 1})


def test_malformed_payloads_of_listed_events_are_refused_at_publish(client, make_tenant, fast):
    owner = make_tenant()
    cases = [
        ({"campaignName": 5}, "payload.campaignName"),
        ({"campaignName": "  "}, "payload.campaignName"),
        ({"riid": [1]}, "payload.riid"),
        ({"recipient": {"a": 1}}, "payload.recipient"),
        ({"channelType": "SMS"}, "payload.channelType"),
        ({"optionalData": "x" * 40_000}, "payload.optionalData"),
    ]
    for payload, field in cases:
        body = {"event_type": "EMAIL_BOUNCED", "payload": payload}
        response = client.http.post("/events", headers=owner.headers, body=json.dumps(body))
        assert response.status_code == 400, payload
        assert response.json_body["field"] == field
    # the same payload under an event type outside the list is someone else's business
    body = {"event_type": "order.paid", "payload": {"campaignName": 5}}
    assert (
        client.http.post("/events", headers=owner.headers, body=json.dumps(body)).status_code == 202
    )


# --- batching ---------------------------------------------------------------------------------


def _load(tenant_id: str, callback_name: str, count: int, chunk: int = 25) -> list[str]:
    """Buffer ``count`` events the way ``buffer`` does, in bulk writes (the test stays fast)."""
    from chalicelib.delivery import notification as family
    from chalicelib.domain.ids import new_id
    from chalicelib.domain.notification import event_object
    from chalicelib.storage import notification as store
    from chalicelib.storage import notification_buffer as buffers

    callback = store.get_callback(tenant_id, callback_name)
    assert callback is not None
    ids = []
    base_ms = int(time.time() * 1000)
    for start in range(0, count, chunk):
        items = []
        for i in range(start, min(count, start + chunk)):
            event_id = new_id()
            ids.append(event_id)
            body = buffers.encode_event(event_object(event_id, "EMAIL_BOUNCED", {"riid": i}))
            items.append(buffers.Buffered(buffers.item_key(base_ms + i, event_id), event_id, body))
        family.buffer_items(tenant_id, callback.callback_id, callback_name, items)
    return ids


def test_a_burst_of_1000_events_with_batch_size_200_is_five_requests(
    client, make_tenant, worker, httpserver, monkeypatch
):
    monkeypatch.setenv("RINGBACK_BATCH_WINDOW", "2")
    owner = make_tenant()
    receiver = Receiver(httpserver)
    create_callback(client, owner, receiver.url, batchSize=200)
    subscribe(client, owner, "all", "cb", ["EMAIL_BOUNCED"])
    started = time.monotonic()
    ids = _load(owner.tenant_id, "cb", 1000)
    assert time.monotonic() - started < 2, "the burst must land inside one window"
    worker.run_until_idle(timeout=60)
    assert [len(batch) for batch in receiver.batches] == [200] * 5
    assert receiver.event_ids() == Counter({event_id: 1 for event_id in ids})
    # oldest first within each batch and across the batches
    delivered_order = [obj["eventId"] for batch in receiver.batches for obj in batch]
    assert sorted(delivered_order, key=ids.index) == sorted(ids, key=ids.index)
    assert len(all_deliveries(owner.tenant_id)) == 5


def test_published_events_are_cut_at_the_batch_size(client, make_tenant, fast, httpserver):
    owner = make_tenant()
    receiver = Receiver(httpserver)
    create_callback(client, owner, receiver.url, batchSize=25)
    subscribe(client, owner, "all", "cb", ["PUSH_FAILED"])
    published = [publish(client, owner, "PUSH_FAILED", {"riid": i})["event_id"] for i in range(60)]
    fast.run_until_idle(timeout=60)
    sizes = sorted(len(batch) for batch in receiver.batches)
    assert sum(sizes) == 60 and max(sizes) <= 25
    assert len(sizes) <= 4  # 3 when all 60 land in one window; one more if the window closed
    assert receiver.event_ids() == Counter({event_id: 1 for event_id in published})


def test_a_late_event_waits_at_most_one_window(
    client, make_tenant, worker, httpserver, monkeypatch
):
    monkeypatch.setenv("RINGBACK_BATCH_WINDOW", "1")
    owner = make_tenant()
    receiver = Receiver(httpserver)
    create_callback(client, owner, receiver.url, batchSize=200)
    subscribe(client, owner, "all", "cb", ["SMS_RECEIPT"])
    sent_at = time.monotonic()
    publish(client, owner, "SMS_RECEIPT", {"riid": 1})
    worker.run_until_idle()
    assert len(receiver.batches) == 1
    assert time.monotonic() - sent_at < 4


# --- the engine's retry rules apply to a batch ---------------------------------------------------


def test_backup_url_after_exactly_three_failures(client, make_tenant, fast, httpserver):
    owner = make_tenant()
    primary = Receiver(httpserver, "/primary", script=(200, 500))  # the check passes, then 500s
    backup = Receiver(httpserver, "/backup")
    create_callback(client, owner, primary.url, backupUrl=backup.url)
    subscribe(client, owner, "all", "cb", ["EMAIL_FAILED"])
    event = publish(client, owner, "EMAIL_FAILED", {"riid": 7})
    fast.run_until_idle()
    assert len(primary.batches) == 3
    assert len(backup.batches) == 1
    assert backup.event_ids() == Counter({event["event_id"]: 1})
    assert backup.requests[0]["headers"]["Authorization"].startswith("Basic ")
    [delivery] = all_deliveries(owner.tenant_id)
    assert [a.url for a in delivery.attempts] == [primary.url] * 3 + [backup.url]
    assert delivery.status == "delivered"
    ids = {r["headers"]["Webhook-Id"] for r in primary.requests[1:] + backup.requests}
    assert ids == {delivery.delivery_id}  # one delivery, retried: the same webhook-id throughout


def test_exhausted_batch_fails_and_replays(client, make_tenant, fast, httpserver, monkeypatch):
    monkeypatch.setenv("RINGBACK_RETRY_SCHEDULE", "1")
    owner = make_tenant()
    receiver = Receiver(httpserver, script=(200, 500, 500, 200))
    create_callback(client, owner, receiver.url)
    subscribe(client, owner, "all", "cb", ["MMS_FAILED"])
    event = publish(client, owner, "MMS_FAILED", {})
    fast.run_until_idle()
    [failed] = all_deliveries(owner.tenant_id)
    assert failed.status == "failed" and len(failed.attempts) == 2
    replay = client.http.post(f"/deliveries/{failed.delivery_id}/replay", headers=owner.headers)
    assert replay.status_code == 202
    fast.run_until_idle()
    assert receiver.event_ids() == Counter({event["event_id"]: 3})


def test_410_disables_the_callback_until_it_is_updated(client, make_tenant, fast, httpserver):
    owner = make_tenant()
    receiver = Receiver(httpserver, script=(200, 410, 200))
    create_callback(client, owner, receiver.url)
    subscribe(client, owner, "all", "cb", ["EMAIL_OPTOUT"])
    publish(client, owner, "EMAIL_OPTOUT", {})
    fast.run_until_idle()
    shown = client.http.get(f"{BASE}/callbacks/cb", headers=owner.headers).json_body
    assert "410" in shown["disabledReason"]
    publish(client, owner, "EMAIL_OPTOUT", {})
    fast.run_until_idle()
    assert len(receiver.requests) == 2  # the check and the 410: the next batch is skipped
    statuses = sorted(d.status for d in all_deliveries(owner.tenant_id))
    assert statuses == ["failed", "skipped"]
    update = {
        "name": "cb",
        "batchSize": 10,
        "authentication": {"type": "B", "data": {"userName": "hook-user", "password": PASSWORD}},
    }
    response = client.http.put(
        f"{BASE}/callbacks/cb", headers=owner.headers, body=json.dumps(update)
    )
    assert response.status_code == 200 and "disabledReason" not in response.json_body
    third = publish(client, owner, "EMAIL_OPTOUT", {})
    fast.run_until_idle()
    assert receiver.event_ids()[third["event_id"]] == 1


def test_events_buffered_for_a_deleted_callback_end_skipped(
    client, make_tenant, worker, httpserver, monkeypatch
):
    monkeypatch.setenv("RINGBACK_BATCH_WINDOW", "1")
    owner = make_tenant()
    receiver = Receiver(httpserver)
    create_callback(client, owner, receiver.url)
    subscribe(client, owner, "all", "cb", ["PUSH_BOUNCED"])
    publish(client, owner, "PUSH_BOUNCED", {})
    for path in ("/subscriptions/all", "/callbacks/cb"):
        assert client.http.delete(BASE + path, headers=owner.headers).status_code == 200
    # a new callback with the same name does not inherit the old one's events
    create_callback(client, owner, receiver.url)
    worker.run_until_idle()
    assert receiver.batches == []
    [delivery] = all_deliveries(owner.tenant_id)
    assert delivery.status == "skipped" and "no longer exists" in delivery.failure_reason


# --- nothing lost, nothing twice: a worker dying between any two steps of a flush ---------------


FAULTS = ["start", "set_pending", "deliver_direct", "finish_batch"]


@pytest.mark.parametrize("fault", FAULTS)
def test_a_flush_dying_after_any_step_loses_and_repeats_nothing(
    client, make_tenant, fast, httpserver, monkeypatch, fault
):
    from chalicelib.delivery import notification as family
    from chalicelib.storage import notification as store
    from chalicelib.storage import notification_buffer as buffers

    fast.sqs.set_queue_attributes(QueueUrl=fast.work_url, Attributes={"VisibilityTimeout": "1"})
    owner = make_tenant()
    receiver = Receiver(httpserver)
    create_callback(client, owner, receiver.url, batchSize=5)
    subscribe(client, owner, "all", "cb", ["SMS_OPT_OUT"])
    ids = _load(owner.tenant_id, "cb", 12, chunk=12)

    module = family.ingest if fault == "deliver_direct" else buffers
    real = getattr(module, fault)
    died: list[str] = []

    def dies_after(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        if not died:
            died.append(fault)
            if fault == "set_pending":
                # meanwhile an event from a Lambda with a slow clock sorts before the batch
                callback = store.get_callback(owner.tenant_id, "cb")
                assert callback is not None
                body = buffers.encode_event({"eventId": "skewed", "eventType": "SMS_OPT_OUT"})
                family.buffer_items(
                    owner.tenant_id,
                    callback.callback_id,
                    "cb",
                    [buffers.Buffered(buffers.item_key(1, "skewed"), "skewed", body)],
                )
                ids.append("skewed")
            raise RuntimeError(f"worker died after {fault}")
        return result

    monkeypatch.setattr(module, fault, dies_after)
    fast.run_until_idle(timeout=30)
    assert died == [fault]
    assert receiver.event_ids() == Counter({event_id: 1 for event_id in ids})
    assert all(len(batch) <= 5 for batch in receiver.batches)
    assert len(all_deliveries(owner.tenant_id)) == len(receiver.batches)


def test_buffer_writes_applied_then_answered_with_an_error_lose_and_repeat_nothing(
    client, make_tenant, fast, httpserver, monkeypatch
):
    """Every conditional write on the buffer is applied, then made again (botocore's retry of a
    call whose answer was lost): the retry fails its condition against our own write, and the
    flush must recognise that (a pending batch that is its own, a cursor it moved itself)."""
    from pynamodb.connection.base import Connection

    real = Connection._make_api_call
    repeated: list[str] = []

    def twice(self: Any, operation: str, kwargs: dict[str, Any]) -> Any:
        if operation in ("UpdateItem", "PutItem") and "notification_buffer" in str(
            kwargs.get("TableName", "")
        ):
            repeated.append(operation)
            with contextlib.suppress(Exception):  # a condition may fail the first time too
                real(self, operation, kwargs)  # applied; its answer is lost
        return real(self, operation, kwargs)

    owner = make_tenant()
    receiver = Receiver(httpserver)
    create_callback(client, owner, receiver.url, batchSize=5)
    subscribe(client, owner, "all", "cb", ["SMS_MO_FW_FAILED"])
    monkeypatch.setattr(Connection, "_make_api_call", twice)
    ids = [publish(client, owner, "SMS_MO_FW_FAILED", {"riid": i})["event_id"] for i in range(12)]
    fast.run_until_idle(timeout=30)
    assert "UpdateItem" in repeated and "PutItem" in repeated
    assert receiver.event_ids() == Counter({event_id: 1 for event_id in ids})
    assert sorted(len(batch) for batch in receiver.batches) == [2, 5, 5]


def test_an_event_written_as_its_generation_starts_goes_to_the_next_one(
    client, make_tenant, worker, httpserver, monkeypatch
):
    """A writer that finds its generation's flush started after writing into it cannot tell
    whether the flush saw the event: it writes it into a new generation, with its own flush."""
    from chalicelib.storage import notification as store
    from chalicelib.storage import notification_buffer as buffers

    monkeypatch.setenv("RINGBACK_BATCH_WINDOW", "1")
    owner = make_tenant()
    receiver = Receiver(httpserver)
    create_callback(client, owner, receiver.url)
    subscribe(client, owner, "all", "cb", ["SMS_OPT_IN"])
    first = publish(client, owner, "SMS_OPT_IN", {"riid": 1})["event_id"]
    callback = store.get_callback(owner.tenant_id, "cb")
    assert callback is not None
    marker = buffers.read_marker(owner.tenant_id, callback.callback_id)
    assert marker.generation is not None
    generation = buffers.BufferRef(owner.tenant_id, callback.callback_id, marker.generation)
    real_put = buffers.put_items
    started: list[str] = []

    def put_then_flush_starts(ref: Any, items: Any) -> None:
        real_put(ref, items)
        if ref == generation and not started:
            started.append(ref.generation)
            buffers.start(ref, time.time())  # the flush begins right after our write

    monkeypatch.setattr(buffers, "put_items", put_then_flush_starts)
    second = publish(client, owner, "SMS_OPT_IN", {"riid": 2})["event_id"]
    assert started == [marker.generation]
    after = buffers.read_marker(owner.tenant_id, callback.callback_id)
    assert after.generation not in (None, marker.generation)
    worker.run_until_idle()
    assert receiver.event_ids() == Counter({first: 1, second: 1})


def test_events_buffered_while_flushes_run_all_arrive(
    client, make_tenant, worker, httpserver, monkeypatch
):
    """Writers in several threads and a worker flushing at the same time, with a short window:
    generations open and close under the writers, and every event arrives."""
    from chalicelib.delivery import notification as family
    from chalicelib.domain.ids import new_id
    from chalicelib.domain.notification import event_object
    from chalicelib.storage import notification as store
    from chalicelib.storage import notification_buffer as buffers

    monkeypatch.setenv("RINGBACK_BATCH_WINDOW", "0.2")
    owner = make_tenant()
    receiver = Receiver(httpserver)
    create_callback(client, owner, receiver.url, batchSize=7)
    callback = store.get_callback(owner.tenant_id, "cb")
    assert callback is not None
    ids: list[str] = []
    lock = threading.Lock()
    writing = threading.Event()
    writing.set()

    def write(thread: int) -> None:
        for i in range(25):
            event_id = new_id()
            body = buffers.encode_event(event_object(event_id, "EMAIL_CLICKED", {"riid": i}))
            item = buffers.Buffered(
                buffers.item_key(int(time.time() * 1000), event_id), event_id, body
            )
            if thread % 2:
                family._remember((owner.tenant_id, callback.callback_id), None)  # another Lambda
            family.buffer_items(owner.tenant_id, callback.callback_id, "cb", [item])
            with lock:
                ids.append(event_id)

    def flush_meanwhile() -> None:
        while writing.is_set():
            worker.poll()

    flusher = threading.Thread(target=flush_meanwhile)
    flusher.start()
    writers = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    writing.clear()
    flusher.join()
    worker.run_until_idle(timeout=60)
    delivered = receiver.event_ids()
    assert set(delivered) == set(ids) and len(ids) == 100
    assert all(len(batch) <= 7 for batch in receiver.batches)


def test_a_batch_stored_before_compression_is_still_sent(client, make_tenant, fast, httpserver):
    """Deliveries made before batch bodies were compressed hold the body plain; they are still
    sent byte for byte, while new ones store it compressed."""
    from chalicelib.delivery import ingest
    from chalicelib.delivery.registry import Target
    from chalicelib.storage import deliveries
    from chalicelib.storage import notification as store

    owner = make_tenant()
    receiver = Receiver(httpserver)
    create_callback(client, owner, receiver.url)
    subscribe(client, owner, "all", "cb", ["PUSH_OPT_OUT"])
    callback = store.get_callback(owner.tenant_id, "cb")
    assert callback is not None
    plain = '[{"eventId":"before","eventType":"PUSH_OPT_OUT"}]'
    ingest.deliver_direct(
        delivery_id="plain-body-batch",
        tenant_id=owner.tenant_id,
        event_id="before",
        target=Target("notification", "cb", callback.url),
        content={"callback_id": callback.callback_id, "callback_name": "cb", "body": plain},
    )
    event = publish(client, owner, "PUSH_OPT_OUT", {"riid": 5})
    fast.run_until_idle()
    assert plain.encode() in [r["body"] for r in receiver.requests]
    assert receiver.event_ids() == Counter({"before": 1, event["event_id"]: 1})
    stored = [d for d in all_deliveries(owner.tenant_id) if d.delivery_id != "plain-body-batch"]
    assert [sorted(json.loads(d.content)) for d in stored] == [
        ["body_z", "callback_id", "callback_name"]
    ]
    assert deliveries.get("plain-body-batch").status == "delivered"


def test_events_buffered_before_generations_are_still_delivered(
    client, make_tenant, fast, httpserver
):
    """A flush message from before generations empties the callback's old partition."""
    from chalicelib.delivery import notification as family
    from chalicelib.delivery import queue
    from chalicelib.storage import notification as store
    from chalicelib.storage import notification_buffer as buffers

    owner = make_tenant()
    receiver = Receiver(httpserver)
    create_callback(client, owner, receiver.url, batchSize=2)
    callback = store.get_callback(owner.tenant_id, "cb")
    assert callback is not None
    old = buffers.BufferRef(owner.tenant_id, callback.callback_id)
    items = [
        buffers.Buffered(
            buffers.item_key(1000 + i, f"old{i}"),
            f"old{i}",
            buffers.encode_event({"eventId": f"old{i}", "eventType": "EMAIL_BOUNCED"}),
        )
        for i in range(3)
    ]
    buffers.put_items(old, items)
    message = family.flush_message(owner.tenant_id, callback.callback_id, "cb", "")
    del message["generation"]
    queue.send_now([message])
    fast.run_until_idle()
    assert receiver.event_ids() == Counter({"old0": 1, "old1": 1, "old2": 1})
    assert buffers.oldest(old, None, 10) == []


def test_a_dead_lettered_flush_comes_back(client, make_tenant, fast, httpserver, monkeypatch):
    from app import dead_letters
    from chalicelib.delivery import notification as family
    from devstack.loops import sqs_event

    owner = make_tenant()
    receiver = Receiver(httpserver)
    create_callback(client, owner, receiver.url)
    subscribe(client, owner, "all", "cb", ["WEBPUSH_FAILED"])
    event = publish(client, owner, "WEBPUSH_FAILED", {})
    messages = fast.sqs.receive_message(QueueUrl=fast.work_url, MaxNumberOfMessages=10)["Messages"]
    [flush] = [m for m in messages if json.loads(m["Body"])["kind"] == family.FLUSH_KIND]
    fast.sqs.delete_message(QueueUrl=fast.work_url, ReceiptHandle=flush["ReceiptHandle"])
    monkeypatch.setattr(family, "DEAD_LETTER_RETRY", 0.5)
    dead_letters(sqs_event([flush], "arn:aws:sqs:us-east-1:123456789012:dlq"), None)
    fast.run_until_idle()
    assert receiver.event_ids() == Counter({event["event_id"]: 1})


# --- the password stays secret ------------------------------------------------------------------


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_the_password_is_never_logged_nor_returned(client, make_tenant, fast, httpserver):
    capture = _Capture()
    capture.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    quiet = {name: logging.getLogger(name).level for name in ("botocore", "urllib3", "boto3")}
    for name in quiet:
        # the AWS SDK's wire dumps (DEBUG) carry KMS plaintext in base64; stages never run them
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        owner = make_tenant()
        receiver = Receiver(httpserver, script=(200, 500, 200))
        bodies = [json.dumps(create_callback(client, owner, receiver.url))]
        subscribe(client, owner, "all", "cb", ["EMAIL_SKIPPED"])
        publish(client, owner, "EMAIL_SKIPPED", {})
        fast.run_until_idle()
        for path in ("/callbacks/cb", "/callbacks", "/callbacks/cb/actions/verify"):
            bodies.append(client.http.get(BASE + path, headers=owner.headers).body.decode())
        failing = {"name": "cb", "url": "http://127.0.0.1:1/x", "batchSize": 1}
        failing["authentication"] = {"type": "B", "data": {"userName": "u", "password": PASSWORD}}
        bodies.append(
            client.http.put(
                BASE + "/callbacks/cb", headers=owner.headers, body=json.dumps(failing)
            ).body.decode()
        )
        [delivery] = all_deliveries(owner.tenant_id)
        bodies.append(
            client.http.get(
                f"/deliveries/{delivery.delivery_id}", headers=owner.headers
            ).body.decode()
        )
    finally:
        root.removeHandler(capture)
        root.setLevel(previous)
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)
    assert len(receiver.batches) == 2 and len(receiver.requests) == 4  # one batch, retried once
    assert any("ringback" in line for line in capture.lines), "the capture saw our logs"
    encoded = base64.b64encode(PASSWORD.encode()).decode()
    basic = base64.b64encode(f"hook-user:{PASSWORD}".encode()).decode()
    for text in capture.lines + bodies:
        assert PASSWORD not in text and encoded not in text and basic not in text
