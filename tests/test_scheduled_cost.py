"""What the scheduler's write-unit cuts (issue 16) must not cost: each test drives the path a cut
made cheaper into the failure that path must still survive, and checks what a user sees."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from tests.scheduled_helpers import Receiver, iso_in
from tests.test_scheduled_firing import create, shown


def _reconcile_later(seconds: float = 3600) -> dict:
    """A reconcile as it would run ``seconds`` from now (past the grace period by default)."""
    from chalicelib.delivery import reconciler

    return reconciler.reconcile(now=time.time() + seconds).__dict__


@pytest.mark.parametrize("ahead", [1, 20 * 60], ids=["near", "far"])
def test_a_firing_whose_worker_died_before_its_delivery_is_found_by_the_reconciler(
    client, make_tenant, worker, httpserver, monkeypatch, ahead
):
    """Starting a firing no longer moves the callback's ``by_open`` entry: the entry, due at the
    firing's time, is still what leads the reconciler to a firing that started and was lost. A
    far callback (its first firing a due item) enters ``by_open`` only when that firing starts:
    that entry leads the reconciler there too."""
    from types import SimpleNamespace

    from chalicelib.delivery import scheduled, sweeper
    from chalicelib.delivery import worker as worker_module
    from chalicelib.storage.guards import GuardModel
    from tests.test_scheduled_firing import epoch

    owner = make_tenant()
    receiver = Receiver(httpserver)
    when = iso_in(ahead)
    made = create(client, owner, receiver.url, when)

    def dies(record, firing):
        raise RuntimeError("worker killed")

    monkeypatch.setattr(scheduled, "_run_first_attempt", dies)
    if ahead > 60:  # be there: the sweep hands it over, the worker's clock moves too
        GuardModel(sweeper.CURSOR_KEY).delete()
        assert sweeper.sweep(now=epoch(when) - 0.5).handed_over == 1
        shift = epoch(when) - time.time()
        real_time = time.time
        clock = SimpleNamespace(time=lambda: real_time() + shift, sleep=time.sleep)
        monkeypatch.setattr(worker_module, "time", clock)
    else:
        time.sleep(1.2)
    worker.poll()
    worker.sqs.purge_queue(QueueUrl=worker.work_url)  # and its message never comes back
    monkeypatch.undo()
    assert shown(client, owner, made["callback_id"])["state"] == "firing"
    assert _reconcile_later(seconds=1)["firings_repaired"] == 0  # not overdue yet
    assert _reconcile_later()["firings_repaired"] == 1
    worker.run_until_idle()
    assert len(receiver.requests) == 1
    assert shown(client, owner, made["callback_id"])["state"] == "completed"


def _listed(client, owner, **params) -> tuple[list[str], str | None]:
    from tests.scheduled_helpers import answer, call

    body = answer(call(client, "list", {"api_key": owner.key, **params}))
    return [c["callback_id"] for c in body["callbacks"]], body["next_cursor"]


def _all_pages(client, owner, **params) -> list[str]:
    seen, cursor = [], None
    while True:
        ids, cursor = _listed(client, owner, **params, **({"cursor": cursor} if cursor else {}))
        seen += ids
        if cursor is None:
            return seen


def test_listing_one_live_state_leaves_out_the_other(client, make_tenant):
    """``scheduled`` and ``firing`` share one index partition (a firing that starts does not
    move its callback there): a ``state=`` listing of either shows exactly its own, in order,
    page after page, and a page is never followed by an empty one."""
    from datetime import UTC, datetime

    from chalicelib.storage import scheduled as store
    from tests.test_scheduled_api import created

    owner = make_tenant()
    ids = [created(client, owner, callback_time=iso_in(300 + i)) for i in range(7)]
    firing = ids[1::2]
    for callback_id in firing:  # their firing started and has not finished
        record = store.get(owner.tenant_id, callback_id)
        now = datetime.now(UTC)
        assert store.start_firing(record, 0, state=store.FIRING, next_fire_at=None, now=now)
    waiting = [i for i in ids if i not in firing]
    assert _all_pages(client, owner, state="firing", limit="2") == firing
    assert _all_pages(client, owner, state="scheduled", limit="2") == waiting
    assert _listed(client, owner, state="scheduled", limit="4") == (waiting, None)
    assert _listed(client, owner, state="firing", limit="3") == (firing, None)
    assert _all_pages(client, owner, limit="3") == ids


def test_a_first_firing_sqs_refused_at_create_is_stored_for_the_sweeper(
    client, make_tenant, worker, httpserver, monkeypatch
):
    """A first firing due within SQS's delay limit is no longer stored with the create: it goes
    straight to SQS. If SQS refuses it, the create still answers 200 and the firing is stored
    for the sweeper, which fires it on time."""
    from chalicelib.delivery import queue

    owner = make_tenant()
    receiver = Receiver(httpserver)

    def refuse(*args, **kwargs):
        raise OSError("SQS: 5xx")

    with monkeypatch.context() as patch:
        patch.setattr(queue, "send_now", refuse)
        made = create(client, owner, receiver.url, iso_in(1))
    time.sleep(1.2)
    worker.run_until_idle()
    assert [r["headers"]["Ringback-Fire-Count"] for r in receiver.requests] == ["1"]
    assert shown(client, owner, made["callback_id"])["state"] == "completed"


def test_the_pending_quota_refuses_a_near_create_too(client, make_tenant, admin_headers):
    """A near create's transaction holds one item fewer (no due item): its quota refusal is
    still recognised as one."""
    from tests.scheduled_helpers import answer, call
    from tests.test_quotas import _put

    owner = make_tenant()
    _put(client, admin_headers, owner.tenant_id, {"scheduled_pending": 1})
    create(client, owner, "http://127.0.0.1:9/a", iso_in(60))
    query = {
        "api_key": owner.key,
        "callback_url": "http://127.0.0.1:9/b",
        "callback_time": iso_in(60),
    }
    over = call(client, "create", query)
    assert over.status_code == 429 and answer(over) == {"success": 0, "error": "quota_exceeded"}


def test_the_outbox_limit_is_sqs_delay_limit():
    from chalicelib.delivery import queue
    from chalicelib.storage import scheduled as store

    assert store.OUTBOX_BEYOND == queue.SQS_MAX_DELAY


def test_the_sweeper_sends_firings_due_at_the_same_second_in_one_batch(
    client, make_tenant, worker, httpserver, monkeypatch
):
    """Far firings wait in due items; a sweep hands those released at the same second over in
    one SendMessageBatch (and deletes them in one BatchWriteItem), and every one of them fires,
    each once."""
    from chalicelib.delivery import queue
    from tests.test_scheduled_firing import epoch, travel_and_fire

    owner = make_tenant()
    receiver = Receiver(httpserver)
    when = iso_in(20 * 60)
    made = [create(client, owner, f"{receiver.url}?n={i}", when) for i in range(12)]
    before = queue.Counters.send_calls
    fired = travel_and_fire(worker, monkeypatch, epoch(when))
    assert fired == {"items_read": 12, "handed_over": 12}
    assert sorted(r["args"]["n"] for r in receiver.requests) == sorted(str(i) for i in range(12))
    assert queue.Counters.send_calls - before == 2  # 12 in batches of 10 (attempts run inline)
    for callback in made:
        assert shown(client, owner, callback["callback_id"])["state"] == "completed"


def test_a_sweep_that_dies_mid_minute_has_sent_what_it_claimed_before(
    client, make_tenant, worker, httpserver, monkeypatch
):
    """A busy minute is handed over a chunk at a time: a sweep that dies on its second chunk has
    already sent the first, and the next sweep (once the dead one's claims run out) sends the
    rest. Every firing goes out, each once."""
    from chalicelib.delivery import sweeper
    from chalicelib.storage.guards import GuardModel
    from tests.test_scheduled_firing import epoch, travel_and_fire

    owner = make_tenant()
    receiver = Receiver(httpserver)
    when = iso_in(20 * 60)
    for i in range(5):
        create(client, owner, f"{receiver.url}?n={i}", when)
    monkeypatch.setattr(sweeper, "HAND_OVER_CHUNK", 2)
    real_hand_over = sweeper._hand_over
    calls: list[int] = []

    def dies_on_the_second_chunk(items, now):
        calls.append(len(items))
        if len(calls) == 2:
            raise OSError("the sweeper's Lambda timed out")
        return real_hand_over(items, now)

    GuardModel(sweeper.CURSOR_KEY).delete()
    with monkeypatch.context() as patch:
        patch.setattr(sweeper, "_hand_over", dies_on_the_second_chunk)
        with pytest.raises(OSError):
            sweeper.sweep(now=epoch(when) - 0.5)
    from chalicelib.storage import due

    minute = due.minute_of(epoch(when))
    left = sum(1 for shard in range(due.SHARDS) for _ in due.due_in(minute, shard, epoch(when)))
    assert left == 3  # the first chunk was sent and deleted before the sweep died
    # a minute later the dead sweep's claims (real time) have run out
    real_time = time.time
    monkeypatch.setattr(
        due, "time", SimpleNamespace(time=lambda: real_time() + sweeper.CLAIM_SECONDS + 1)
    )
    fired = travel_and_fire(worker, monkeypatch, epoch(when))
    assert fired["handed_over"] == 3
    assert sorted(r["args"]["n"] for r in receiver.requests) == [str(i) for i in range(5)]
