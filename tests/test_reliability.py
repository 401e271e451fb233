"""Nothing lost, nothing stuck when AWS itself fails (issue 12): the reconciler, exact dead
letters, fan-out of any size, race-safe idempotency and recording after a send.

Each test makes AWS fail the way it does under stress (a call that raises, or a write that
commits and then raises) at one precise step, and checks what a user sees afterwards.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from tests.test_delivery_engine import Receiver, publish, register

FAMILY = "test-synthetic"


@pytest.fixture
def synthetic(httpserver) -> Iterator[dict]:
    """A family whose events match ``state["count"]`` targets, all on one loopback receiver."""
    from chalicelib.delivery import registry
    from chalicelib.delivery.registry import HttpOutbound, Target

    state: dict = {"count": 3, "hits": [], "lock": threading.Lock()}
    url = httpserver.url_for("/synthetic")

    def handler(request):
        from werkzeug import Response

        with state["lock"]:
            state["hits"].append(request.headers.get("X-Delivery"))
        return Response("ok", status=200)

    httpserver.expect_request("/synthetic").respond_with_handler(handler)

    class Synthetic:
        name = FAMILY

        def match(self, event):
            return [Target(self.name, f"t{i:05d}", url) for i in range(state["count"])]

        def prepare(self, delivery, attempt_no, use_backup):
            return HttpOutbound("POST", url, {"X-Delivery": delivery.delivery_id}, b"{}")

        def target_gone(self, delivery, reason):
            pass

        def tracks_health(self, delivery):
            return False

    registry.register_family(Synthetic())
    yield state
    registry._families.pop(FAMILY, None)


def _statuses(event_id: str) -> list[str]:
    from chalicelib.storage import deliveries

    found: list[str] = []
    cursor = None
    while True:
        page = deliveries.event_page(event_id, limit=100, cursor=cursor)
        found += [r.status for r in page.records]
        cursor = page.next_cursor
        if cursor is None:
            return found


def _queue_depth(worker) -> int:
    attrs = worker.sqs.get_queue_attributes(QueueUrl=worker.work_url, AttributeNames=["All"])
    return int(attrs["Attributes"]["ApproximateNumberOfMessages"])


def _publish_losing_its_messages(monkeypatch, tenant_id: str, event_type: str) -> None:
    """A publish whose deliveries are written but whose SQS send fails (the API answers 5xx),
    and the publisher never retries."""
    from chalicelib.delivery import ingest, queue

    def refuse(*args, **kwargs):
        raise OSError("SQS: 5xx")

    with monkeypatch.context() as patch:
        patch.setattr(queue, "send_now", refuse)
        with pytest.raises(OSError):
            ingest.publish(tenant_id, event_type, {}, families=[FAMILY])


def _reconcile_later(seconds: float = 3600) -> dict:
    """A reconcile as it would run ``seconds`` from now (past the grace period)."""
    from chalicelib.delivery import reconciler

    return reconciler.reconcile(now=time.time() + seconds).__dict__


# ----------------------------------------------------------------- 5. fan-out of any size


def test_a_batch_mixing_inline_and_chunked_events_delivers_each_target_once(synthetic, aws, worker):
    """One request of events whose target counts straddle the inline limit: the small ones are
    written inline together, the large one is queued in chunks; each is answered in order, and
    a key repeated inside the batch answers its first use."""
    from chalicelib.delivery import fanout, ingest

    counts = [3, fanout.FANOUT_CHUNK + 20, 1]

    def match(event):  # event n matches counts[n] targets (also when a plan matches again)
        synthetic["count"] = counts[event.payload["n"]]
        return real_match(event)

    from chalicelib.delivery import registry

    family = registry.family(FAMILY)
    real_match = family.match
    family.match = match
    try:
        requests = [
            ingest.EventRequest("e", {"n": 0}, idempotency_key="k"),
            ingest.EventRequest("e", {"n": 1}),
            ingest.EventRequest("e", {"n": 2}),
            ingest.EventRequest("e", {"n": 0}, idempotency_key="k"),
        ]
        outcomes = ingest.publish_many("f" * 24, requests, families=[FAMILY])
        worker.run_until_idle(timeout=120)
    finally:
        family.match = real_match
    assert [o.deliveries for o in outcomes] == [3, fanout.FANOUT_CHUNK + 20, 1, 3]
    assert outcomes[3].repeated and outcomes[3].event_id == outcomes[0].event_id
    assert not any(o.repeated for o in outcomes[:3])
    for outcome, count in zip(outcomes[:3], counts, strict=True):
        assert _statuses(outcome.event_id) == ["delivered"] * count
    assert len(synthetic["hits"]) == sum(counts) == len(set(synthetic["hits"]))


def test_a_request_past_its_inline_share_queues_the_rest_and_loses_none(
    synthetic, aws, worker, monkeypatch
):
    """A request writes at most ``INLINE_PER_REQUEST`` deliveries itself; the events past that
    share go through the queue like a large fan-out, and every target is delivered once."""
    from chalicelib.delivery import ingest

    monkeypatch.setattr(ingest, "INLINE_PER_REQUEST", 5)
    synthetic["count"] = 3
    requests = [ingest.EventRequest("e", {"n": n}) for n in range(3)]
    outcomes = ingest.publish_many("f" * 24, requests, families=[FAMILY])
    assert [o.deliveries for o in outcomes] == [3, 3, 3]
    assert _queue_depth(worker) == 3 + 2  # the first event's 3 messages, two plans
    worker.run_until_idle(timeout=60)
    for outcome in outcomes:
        assert _statuses(outcome.event_id) == ["delivered"] * 3
    assert len(synthetic["hits"]) == 9 == len(set(synthetic["hits"]))


def test_a_large_fan_out_goes_to_the_queue_in_chunks_and_creates_each_delivery_once(
    synthetic, aws, worker
):
    from chalicelib.delivery import fanout, ingest
    from chalicelib.storage import deliveries

    synthetic["count"] = 2 * fanout.FANOUT_CHUNK + 50
    published = ingest.publish("a" * 24, "big", {"n": 1}, families=[FAMILY])
    assert published.deliveries == synthetic["count"]
    # the request wrote no delivery itself and sent one plan message, not the targets
    assert deliveries.event_page(published.event_id).records == []
    assert _queue_depth(worker) == 1
    worker.poll()  # the plan: the targets matched again and queued in three chunks
    assert _queue_depth(worker) == 3
    stored = deliveries.get_event(published.event_id)
    assert stored.delivery_ids is None and int(stored.delivery_count) == synthetic["count"]

    worker.run_until_idle(timeout=120)
    statuses = _statuses(published.event_id)
    assert len(statuses) == synthetic["count"] and set(statuses) == {"delivered"}
    assert len(synthetic["hits"]) == synthetic["count"] == len(set(synthetic["hits"]))


def test_a_repeated_fan_out_chunk_creates_and_sends_nothing_twice(synthetic, aws, worker):
    from chalicelib.delivery import fanout, ingest

    synthetic["count"] = fanout.FANOUT_CHUNK + 1
    published = ingest.publish("a" * 24, "big", {}, families=[FAMILY])
    worker.poll()  # the plan queues the two chunks
    # a copy that finds another holding the chunk's lease comes back after 2 s, not 360 s
    worker.sqs.set_queue_attributes(QueueUrl=worker.work_url, Attributes={"VisibilityTimeout": "2"})
    received = worker.sqs.receive_message(QueueUrl=worker.work_url, MaxNumberOfMessages=10)[
        "Messages"
    ]
    assert len(received) == 2
    # SQS hands every chunk out twice (at least once means sometimes twice)
    for message in received:
        worker.sqs.delete_message(QueueUrl=worker.work_url, ReceiptHandle=message["ReceiptHandle"])
        worker.sqs.send_message(QueueUrl=worker.work_url, MessageBody=message["Body"])
        worker.sqs.send_message(QueueUrl=worker.work_url, MessageBody=message["Body"])
    worker.run_until_idle(timeout=120)
    statuses = _statuses(published.event_id)
    assert len(statuses) == synthetic["count"] and set(statuses) == {"delivered"}
    assert len(synthetic["hits"]) == synthetic["count"]


def test_a_plan_run_again_queues_nothing_or_only_careful_chunks(synthetic, aws, worker):
    """A plan handled twice queues its chunks once; a plan whose worker died before it was
    marked done runs again with careful chunks (conditional puts), which never reset or resend
    a delivery the first run's chunks delivered."""
    from chalicelib.delivery import fanout, ingest
    from chalicelib.storage.guards import GuardModel

    synthetic["count"] = fanout.FANOUT_CHUNK + 1
    published = ingest.publish("a" * 24, "big", {}, families=[FAMILY])
    ingest_event = fanout._stored_event(deliveries_event(published.event_id))
    plan = fanout.plan_message(ingest_event, [FAMILY])
    worker.run_until_idle(timeout=120)
    assert len(synthetic["hits"]) == synthetic["count"]
    fanout.handle_fanout(plan)  # SQS handed the plan out again: its guard says done
    assert _queue_depth(worker) == 0
    GuardModel(f"fanout#{ingest_event.event_id}#plan", lease_until=0).save()  # died, not done
    for number in range(2):  # and its chunks' guards were never written either
        GuardModel(f"fanout#{ingest_event.event_id}#{number}").delete()
    fanout.handle_fanout(plan)
    worker.run_until_idle(timeout=120)
    statuses = _statuses(published.event_id)
    assert len(statuses) == synthetic["count"] and set(statuses) == {"delivered"}
    assert len(synthetic["hits"]) == synthetic["count"]  # nothing reset, nothing sent again


def deliveries_event(event_id: str):
    from chalicelib.storage import deliveries

    return deliveries.get_event(event_id)


def test_get_event_pages_through_its_deliveries(client, make_tenant, synthetic, worker):
    from chalicelib.api import events as events_api
    from chalicelib.delivery import ingest

    owner = make_tenant()
    synthetic["count"] = events_api.EVENT_PAGE + 20
    published = ingest.publish(owner.tenant_id, "big", {}, families=[FAMILY])
    worker.run_until_idle(timeout=120)
    first = client.http.get(f"/events/{published.event_id}", headers=owner.headers).json_body
    assert len(first["deliveries"]) == events_api.EVENT_PAGE and first["next_cursor"]
    assert first["delivery_count"] == synthetic["count"]
    second = client.http.get(
        f"/events/{published.event_id}?cursor={first['next_cursor']}", headers=owner.headers
    ).json_body
    assert len(second["deliveries"]) == 20 and second["next_cursor"] is None
    ids = {d["delivery_id"] for d in first["deliveries"] + second["deliveries"]}
    assert len(ids) == synthetic["count"]
    bad = client.http.get(f"/events/{published.event_id}?cursor=nope", headers=owner.headers)
    assert bad.status_code == 400 and bad.json_body["field"] == "cursor"


# ----------------------------------------------------------------- 6. idempotency under races


def test_fifty_concurrent_publishes_with_one_key_fan_out_once(synthetic, aws, worker):
    from chalicelib.delivery import ingest

    synthetic["count"] = 5
    results: list = []
    errors: list = []
    start = threading.Barrier(50)

    def one() -> None:
        start.wait()
        try:
            results.append(
                ingest.publish("b" * 24, "raced", {}, idempotency_key="k-1", families=[FAMILY])
            )
        except Exception as exc:  # pragma: no cover - shown by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len({r.event_id for r in results}) == 1
    assert sum(not r.repeated for r in results) == 1
    assert _queue_depth(worker) == 5  # one fan-out: one message per target, no more
    worker.run_until_idle()
    assert len(synthetic["hits"]) == 5


def test_a_publish_that_failed_after_writing_is_finished_by_its_retry(
    synthetic, aws, worker, monkeypatch
):
    """POST /events answered 5xx after the deliveries were written (SQS refused the sends);
    the publisher retries with the same key: every delivery is created once and sent."""
    from chalicelib.delivery import ingest, queue

    synthetic["count"] = 4
    real_send = queue.send_now

    def refuse(messages, delay_seconds=0):
        raise RuntimeError("SQS: ServiceUnavailable")

    monkeypatch.setattr(queue, "send_now", refuse)
    with pytest.raises(RuntimeError):
        ingest.publish("c" * 24, "e", {}, idempotency_key="k-2", families=[FAMILY])
    monkeypatch.setattr(queue, "send_now", real_send)
    again = ingest.publish("c" * 24, "e", {}, idempotency_key="k-2", families=[FAMILY])
    worker.run_until_idle()
    assert _statuses(again.event_id) == ["delivered"] * 4
    assert len(synthetic["hits"]) == 4
    third = ingest.publish("c" * 24, "e", {}, idempotency_key="k-2", families=[FAMILY])
    assert third.repeated and third.event_id == again.event_id and third.deliveries == 4


# ----------------------------------------------------------------- 3. the reconciler


def test_deliveries_whose_messages_were_lost_are_put_back_on_their_way(
    synthetic, aws, worker, monkeypatch
):
    """The publisher never retried: the deliveries exist, their messages do not. The reconciler
    finds the request's outbox (and only it) once it is overdue by the grace period, and sends
    the deliveries it lists."""

    synthetic["count"] = 3
    _publish_losing_its_messages(monkeypatch, "d" * 24, "e")
    worker.run_until_idle()
    assert synthetic["hits"] == []

    assert _reconcile_later(seconds=1)["deliveries_requeued"] == 0  # not overdue yet
    report = _reconcile_later()
    assert report["deliveries_requeued"] == 3
    assert report["outboxes_read"] == 1 and report["records_read"] == 3
    worker.run_until_idle()
    assert len(synthetic["hits"]) == 3
    assert _reconcile_later(seconds=7200)["items_read"] == 0  # the outbox is gone


def test_a_batch_whose_sends_failed_answers_each_event_and_loses_none(
    synthetic, aws, worker, monkeypatch
):
    """SQS refused the sends of a batch (after its deliveries were written): every event of it
    is reported not accepted, and the request's outbox still gets each delivery sent once."""
    from chalicelib.delivery import ingest, queue

    synthetic["count"] = 2
    requests = [ingest.EventRequest("e", {"n": n}) for n in range(5)]

    def refuse(*args, **kwargs):
        raise OSError("SQS: 5xx")

    with monkeypatch.context() as patch:
        patch.setattr(queue, "send_now", refuse)
        outcomes = ingest.publish_many("d" * 24, requests, families=[FAMILY])
    assert all(isinstance(o, OSError) for o in outcomes) and len(outcomes) == 5
    worker.run_until_idle()
    assert synthetic["hits"] == []
    report = _reconcile_later()
    assert report["outboxes_read"] == 1 and report["deliveries_requeued"] == 10
    worker.run_until_idle()
    assert len(synthetic["hits"]) == 10 == len(set(synthetic["hits"]))
    assert _reconcile_later(seconds=7200)["deliveries_requeued"] == 0


def test_an_outbox_whose_request_died_before_writing_sends_nothing(
    synthetic, aws, worker, monkeypatch
):
    """The request wrote its outbox and died before its deliveries: nothing was accepted, so
    the reconciler finds nothing to send and drops the outbox."""
    from chalicelib.storage import deliveries

    synthetic["count"] = 3

    def die(records):
        raise OSError("DynamoDB: 5xx")

    with monkeypatch.context() as patch:
        patch.setattr(deliveries, "write_new", die)
        from chalicelib.delivery import ingest

        with pytest.raises(OSError):
            ingest.publish("d" * 24, "e", {}, families=[FAMILY])
    report = _reconcile_later()
    assert report["outboxes_read"] == 1 and report["records_read"] == 0
    assert report["deliveries_requeued"] == 0
    assert _reconcile_later(seconds=7200)["items_read"] == 0


def test_a_stuck_delivery_is_re_armed_not_resent_every_run(synthetic, aws, worker, monkeypatch):

    synthetic["count"] = 1
    _publish_losing_its_messages(monkeypatch, "d" * 24, "e")
    now = time.time() + 3600
    from chalicelib.delivery import reconciler

    assert reconciler.reconcile(now=now).deliveries_requeued == 1
    # the next run, before another grace period has passed, reads nothing
    assert reconciler.reconcile(now=now + 5).items_read == 0


def test_reconcile_reads_only_the_stuck_work(synthetic, aws, worker, monkeypatch):
    from chalicelib.delivery import ingest

    synthetic["count"] = 40
    ingest.publish("e" * 24, "ok", {}, families=[FAMILY])
    worker.run_until_idle()
    synthetic["count"] = 2
    _publish_losing_its_messages(monkeypatch, "e" * 24, "stuck")
    report = _reconcile_later()
    # the one outbox left by the failed request, and its two deliveries: not the 40 delivered
    assert report["items_read"] == 1 and report["records_read"] == 2


def test_a_scheduled_callback_whose_hand_over_was_lost_still_fires(
    client, make_tenant, worker, httpserver
):
    """The create committed but its first firing's message never reached SQS (and the sweeper
    had passed that minute): the reconciler sends it."""
    from tests.scheduled_helpers import iso_in
    from tests.test_scheduled_firing import create, shown

    owner = make_tenant()
    receiver = Receiver(httpserver)
    made = create(client, owner, receiver.url, iso_in(1))
    worker.sqs.purge_queue(QueueUrl=worker.work_url)  # the hand-over is lost
    time.sleep(1.5)
    worker.run_until_idle()
    assert receiver.requests == []
    report = _reconcile_later()
    assert report["firings_requeued"] == 1
    worker.run_until_idle()
    assert len(receiver.requests) == 1
    assert shown(client, owner, made["callback_id"])["state"] == "completed"


def test_an_interval_firing_whose_message_came_back_late_is_not_lost(
    client, make_tenant, worker, httpserver, monkeypatch
):
    """The worker started firing 1 (the series moved on to firing 2) and died before creating
    its delivery; the message comes back after firing 2 started: firing 1 is still sent."""
    from chalicelib.delivery import scheduled
    from tests.scheduled_helpers import iso_in
    from tests.test_scheduled_firing import create, repeat

    owner = make_tenant()
    receiver = Receiver(httpserver)
    made = create(
        client, owner, receiver.url, iso_in(1), **repeat("interval", "seconds", 1, count=2)
    )
    real = scheduled._run_first_attempt
    died: list[dict] = []

    def dies_once(record, firing):
        if firing == 0 and not died:
            died.append({"firing": firing})
            raise RuntimeError("worker killed")
        return real(record, firing)

    monkeypatch.setattr(scheduled, "_run_first_attempt", dies_once)
    # the failed message comes back after 3 s, when firing 2 has started
    worker.sqs.set_queue_attributes(QueueUrl=worker.work_url, Attributes={"VisibilityTimeout": "3"})
    time.sleep(1.2)
    worker.run_until_idle(timeout=30)
    assert died
    fired = sorted(r["headers"]["Ringback-Fire-Count"] for r in receiver.requests)
    assert fired == ["1", "2"], fired
    from chalicelib.storage import deliveries

    ids = {scheduled.delivery_id_for(made["callback_id"], k) for k in (0, 1)}
    assert {deliveries.get(i).status for i in ids} == {"delivered"}


# ----------------------------------------------------------------- 4. dead letters


def _dead_letter(body: dict) -> None:
    from app import dead_letters
    from devstack.loops import sqs_event

    message = {"MessageId": "m-1", "ReceiptHandle": "r", "Body": json.dumps(body)}
    dead_letters(sqs_event([message], "arn:aws:sqs:us-east-1:123456789012:dlq"), None)


def test_a_stale_dead_letter_leaves_a_delivered_delivery_alone(
    client, make_tenant, worker, httpserver
):
    owner = make_tenant()
    receiver = Receiver(httpserver, script=((500, {}, 0), (200, {}, 0)))
    register(client, owner, receiver.url)
    published = publish(client, owner)
    worker.run_until_idle()
    [delivery] = client.http.get(
        f"/events/{published['event_id']}", headers=owner.headers
    ).json_body["deliveries"]
    assert delivery["status"] == "delivered"
    # a copy of attempt 1's message SQS gave up on arrives late
    _dead_letter({"kind": "deliver", "delivery_id": delivery["delivery_id"], "attempt": 1})
    view = client.http.get(f"/deliveries/{delivery['delivery_id']}", headers=owner.headers)
    assert view.json_body["status"] == "delivered" and view.json_body["failure_reason"] is None


def test_a_stale_dead_letter_leaves_a_retrying_delivery_alone(
    client, make_tenant, worker, httpserver, monkeypatch
):
    monkeypatch.setenv("RINGBACK_RETRY_SCHEDULE", "600")
    owner = make_tenant()
    receiver = Receiver(httpserver, script=((500, {}, 0),))
    register(client, owner, receiver.url)
    published = publish(client, owner)
    worker.poll()
    [delivery] = client.http.get(
        f"/events/{published['event_id']}", headers=owner.headers
    ).json_body["deliveries"]
    assert delivery["status"] == "retrying"
    _dead_letter({"kind": "deliver", "delivery_id": delivery["delivery_id"], "attempt": 1})
    view = client.http.get(f"/deliveries/{delivery['delivery_id']}", headers=owner.headers)
    assert view.json_body["status"] == "retrying"
    # the current attempt's own dead letter does fail it (replayable)
    _dead_letter({"kind": "deliver", "delivery_id": delivery["delivery_id"], "attempt": 2})
    view = client.http.get(f"/deliveries/{delivery['delivery_id']}", headers=owner.headers)
    assert view.json_body["status"] == "failed"


def test_a_stale_fire_dead_letter_never_stops_a_series_that_moved_on(
    client, make_tenant, worker, httpserver
):
    from tests.scheduled_helpers import iso_in
    from tests.test_scheduled_firing import create, repeat, shown

    owner = make_tenant()
    receiver = Receiver(httpserver)
    made = create(client, owner, receiver.url, iso_in(1), **repeat("interval", "hours", 1))
    time.sleep(1.2)
    worker.run_until_idle()
    assert len(receiver.requests) == 1
    before = shown(client, owner, made["callback_id"])
    _dead_letter(
        {
            "kind": "fire",
            "tenant_id": owner.tenant_id,
            "callback_id": made["callback_id"],
            "firing": 0,
            "series": "interval",
        }
    )
    after = shown(client, owner, made["callback_id"])
    assert after["state"] == "scheduled" == before["state"]
    assert len(receiver.requests) == 1


# ----------------------------------------------------------------- 8. recording after a send


@pytest.mark.parametrize("committed", [False, True], ids=["raised", "applied-then-raised"])
def test_a_failed_attempt_record_does_not_send_the_attempt_again(
    client, make_tenant, worker, httpserver, monkeypatch, committed
):
    from chalicelib.delivery import dispatcher
    from chalicelib.storage import deliveries

    monkeypatch.setattr(dispatcher, "RECORD_RETRY_DELAYS", (0.05, 0.05))
    owner = make_tenant()
    receiver = Receiver(httpserver)
    register(client, owner, receiver.url)
    real = deliveries.record_attempt
    failures: list[int] = []

    def flaky(record, **fields):
        if not failures:
            failures.append(1)
            if committed:
                real(record, **fields)
            raise OSError("DynamoDB: InternalServerError")
        return real(record, **fields)

    monkeypatch.setattr(deliveries, "record_attempt", flaky)
    published = publish(client, owner)
    worker.run_until_idle()
    assert failures == [1]
    assert len(receiver.requests) == 1
    [delivery] = client.http.get(
        f"/events/{published['event_id']}", headers=owner.headers
    ).json_body["deliveries"]
    view = client.http.get(f"/deliveries/{delivery['delivery_id']}", headers=owner.headers)
    assert view.json_body["status"] == "delivered" and len(view.json_body["attempts"]) == 1


# ----------------------------------------------------------------- listings and retention


def test_deliveries_list_every_status_with_filters_and_cursors(
    client, make_tenant, worker, httpserver
):
    owner = make_tenant()
    ok = Receiver(httpserver, path="/ok")
    register(client, owner, ok.url)
    for _ in range(5):
        publish(client, owner)
    worker.run_until_idle()
    seen: list[str] = []
    cursor = None
    while True:
        query = "?status=all&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.http.get(f"/deliveries{query}", headers=owner.headers).json_body
        assert len(page["deliveries"]) <= 2
        seen += [d["delivery_id"] for d in page["deliveries"]]
        cursor = page["next_cursor"]
        assert page["truncated"] is (cursor is not None)
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5
    delivered = client.http.get("/deliveries?status=delivered", headers=owner.headers).json_body
    assert len(delivered["deliveries"]) == 5
    assert client.http.get("/deliveries", headers=owner.headers).json_body["deliveries"] == []
    none = client.http.get("/deliveries?status=all&family=scheduled", headers=owner.headers)
    assert none.json_body["deliveries"] == []
    by_target = client.http.get(
        f"/deliveries?status=all&target={ok.url}", headers=owner.headers
    ).json_body
    assert len(by_target["deliveries"]) == 5
    bad = client.http.get("/deliveries?status=all&limit=0", headers=owner.headers)
    assert bad.status_code == 400 and bad.json_body["field"] == "limit"


def test_events_and_deliveries_expire_after_the_retention_period(
    client, make_tenant, worker, httpserver, monkeypatch
):
    from chalicelib.storage import deliveries
    from chalicelib.storage.schema import TTL_ATTRIBUTES

    owner = make_tenant()
    receiver = Receiver(httpserver, script=((500, {}, 0),))
    register(client, owner, receiver.url)
    monkeypatch.setenv("RINGBACK_RETRY_SCHEDULE", "1")
    published = publish(client, owner)
    worker.run_until_idle()
    event = deliveries.get_event(published["event_id"])
    [record] = deliveries.event_page(published["event_id"]).records
    thirty_days = 30 * 24 * 3600
    assert abs(int(event.expires_at) - (time.time() + thirty_days)) < 120
    assert abs(int(record.expires_at) - (time.time() + thirty_days)) < 120
    for model in ("events", "deliveries", "scheduled_callbacks", "guards"):
        assert any(t.endswith(model) for t in TTL_ATTRIBUTES)
    failed = client.http.get("/deliveries?status=failed", headers=owner.headers).json_body
    assert [d["delivery_id"] for d in failed["deliveries"]] == [record.delivery_id]
    # the embedded AWS never expires items: readers treat them as gone once expired
    record.update(actions=[deliveries.DeliveryModel.expires_at.set(int(time.time()) - 1)])
    failed = client.http.get("/deliveries?status=failed", headers=owner.headers).json_body
    assert failed["deliveries"] == []
    gone = client.http.get(f"/deliveries/{record.delivery_id}", headers=owner.headers)
    assert gone.status_code == 404


def test_the_attempts_log_keeps_the_start_of_the_answer(client, make_tenant, worker, httpserver):
    from werkzeug import Response

    owner = make_tenant()
    httpserver.expect_request("/talkative").respond_with_response(
        Response("x" * 3000 + "tail", status=500)
    )
    register(client, owner, httpserver.url_for("/talkative"))
    published = publish(client, owner)
    worker.poll()
    [delivery] = client.http.get(
        f"/events/{published['event_id']}", headers=owner.headers
    ).json_body["deliveries"]
    [attempt] = client.http.get(
        f"/deliveries/{delivery['delivery_id']}", headers=owner.headers
    ).json_body["attempts"]
    assert attempt["status_code"] == 500 and attempt["response"] == "x" * 512


def test_the_attempts_log_never_shows_a_key_from_the_url(client, make_tenant, worker, httpserver):
    owner = make_tenant()
    receiver = Receiver(httpserver)
    register(client, owner, receiver.url + "?token=s3cr3t-value&order=1")
    published = publish(client, owner)
    worker.run_until_idle()
    assert receiver.requests[0]["args"]["token"] == "s3cr3t-value"  # the receiver gets it
    [delivery] = client.http.get(
        f"/events/{published['event_id']}", headers=owner.headers
    ).json_body["deliveries"]
    [attempt] = client.http.get(
        f"/deliveries/{delivery['delivery_id']}", headers=owner.headers
    ).json_body["attempts"]
    assert "s3cr3t-value" not in attempt["url"] and "order=1" in attempt["url"]


def test_a_fan_out_chunk_that_failed_halfway_is_finished_by_its_redelivery(
    synthetic, aws, worker, monkeypatch
):
    """AWS failed a chunk after some of its deliveries were written: the chunk gives its lease
    back and SQS's redelivery writes the rest and queues them all (found by bench.fanout with
    AWS faults on: a chunk that kept its lease was dropped by its own redelivery)."""
    from chalicelib.delivery import fanout, ingest, queue

    synthetic["count"] = fanout.FANOUT_CHUNK + 1
    worker.sqs.set_queue_attributes(QueueUrl=worker.work_url, Attributes={"VisibilityTimeout": "2"})
    real = queue.send_now
    failed: list[int] = []

    def flaky(messages, delay_seconds=0):
        if messages and messages[0].get("kind") == "deliver" and len(messages) > 1 and not failed:
            failed.append(len(messages))
            raise OSError("SQS: ServiceUnavailable")
        return real(messages, delay_seconds)

    monkeypatch.setattr(queue, "send_now", flaky)
    published = ingest.publish("a" * 24, "big", {}, families=[FAMILY])
    worker.run_until_idle(timeout=60)
    assert failed
    statuses = _statuses(published.event_id)
    assert len(statuses) == synthetic["count"] and set(statuses) == {"delivered"}
    assert len(synthetic["hits"]) == synthetic["count"] == len(set(synthetic["hits"]))
