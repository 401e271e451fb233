"""Accepting events: claim their idempotency keys, record them, fan them out.

One request carries one event or a batch of up to 100; the batch shares what it can (one quota
update, one registration read per event type, one outbox, batch writes and SQS batches of 10).
Order matters for "nothing is lost":

1. With an idempotency key, the key is claimed first (``idempotency``): of concurrent requests
   with one key exactly one fans out; a request whose owner died finishes the same event.
2. Up to ``FANOUT_INLINE_LIMIT`` targets per event, inline: the request writes an outbox item
   listing its deliveries (``storage.outbox``), then the deliveries (batch writes of 25), sends
   their work messages (SQS batches of 10), writes its event records (already fanned out), and
   deletes the outbox. An outbox left behind (the request failed or died halfway) is found by
   the reconciler, which sends what is still unsent; once a message is in SQS, SQS and its
   dead-letter queue carry the delivery to a final state, so a delivery needs no index entry of
   its own for the reconciler (two write units fewer per delivery).
3. Past the limit, the event record is written first and one ``fanout`` plan message sent; a
   worker matches the targets again and queues them in chunks of ``FANOUT_CHUNK``; each chunk
   writes its deliveries and sends their messages under a lease of its own, once (the chunk's
   message is its outbox: SQS hands it out again until the chunk is done).
4. Only then are the keys marked done, and the API answers. A request that fails on the way
   answers 5xx for the events it could not finish and gives their leases back, so the
   publisher's retry with the same key finishes the work at once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from chalicelib import logs
from chalicelib.delivery import fanout, idempotency, queue, registry
from chalicelib.delivery.dispatcher import deliver_message
from chalicelib.delivery.idempotency import InProgress
from chalicelib.delivery.registry import PublishedEvent, Target
from chalicelib.domain.ids import new_id
from chalicelib.domain.timeutil import fmt, utcnow
from chalicelib.storage import deliveries, outbox, read_cache
from chalicelib.storage.deliveries import EventModel, NewDelivery

log = logging.getLogger("ringback.ingest")

FANOUT_INLINE_LIMIT = 100
INLINE_PER_REQUEST = 500
"""Deliveries one request writes itself, all its events together: past it, an event's fan-out
goes to the queue like a large one, so a batch of 100 events with 100 targets each still
answers well inside API Gateway's 29 s."""

__all__ = ["EventRequest", "InProgress", "Published", "publish", "publish_many"]


@dataclass(frozen=True)
class Published:
    event_id: str
    deliveries: int
    repeated: bool = False


@dataclass(frozen=True)
class EventRequest:
    """One event of a ``POST /events`` request, as checked by the API."""

    event_type: str
    payload: dict[str, Any]
    campaign_id: str | None = None
    selection: str | None = None
    idempotency_key: str | None = None
    test: bool = False


# --------------------------------------------------------------------------- publishing


def publish(
    tenant_id: str,
    event_type: str,
    payload: dict[str, Any],
    *,
    campaign_id: str | None = None,
    selection: str | None = None,
    idempotency_key: str | None = None,
    test: bool = False,
    families: Iterable[str] | None = None,
) -> Published:
    """One event; raises what stopped it (``InProgress``, or the AWS error that failed it)."""
    request = EventRequest(event_type, payload, campaign_id, selection, idempotency_key, test)
    (result,) = publish_many(tenant_id, [request], families=families)
    if isinstance(result, Exception):
        raise result
    return result


@dataclass
class _Accepting:
    """One event on its way through ``publish_many``."""

    index: int
    request: EventRequest
    event_id: str
    guard_key: str | None
    event: PublishedEvent | None = None
    targets: list[Target] = field(default_factory=list)


def publish_many(
    tenant_id: str, requests: Sequence[EventRequest], *, families: Iterable[str] | None = None
) -> list[Published | Exception]:
    """Accept each event of one request on its own: the answer lists, in order, what became of
    each (``Published``, or the exception that stopped it). What the events share is paid once:
    the registration reads of an event type, the outbox, the batch writes and SQS batches."""
    results: list[Published | Exception | None] = [None] * len(requests)
    wanted = set(families) if families is not None else None
    chosen = [fam for fam in registry.families() if wanted is None or fam.name in wanted]
    logs.bind(tenant_id=tenant_id)
    repeats: dict[int, int] = {}  # a key used twice in one request: the later one repeats
    first_with_key: dict[str, int] = {}
    wait_until = time.monotonic() + idempotency.WAIT_FOR_OWNER_SECONDS  # for all keys at once
    with read_cache.request_scope():
        fresh: list[_Accepting] = []
        for index, request in enumerate(requests):
            key = request.idempotency_key
            if key is not None and key in first_with_key:
                repeats[index] = first_with_key[key]
                continue
            if key is not None:
                first_with_key[key] = index
            try:
                accepting = _claimed(tenant_id, index, request, chosen, results, wait_until)
            except Exception as exc:  # this event only: the others go on
                results[index] = exc
                continue
            if accepting is None:
                continue
            try:
                fresh.append(_matched(tenant_id, accepting, chosen))
            except Exception as exc:
                log.exception("event %s not accepted", accepting.event_id)
                results[index] = exc
                _settle(accepting, done=False)
        if len(requests) == 1 and fresh:  # one event: the rest of the request logs its id
            logs.bind(event_id=fresh[0].event_id)
        inline: list[_Accepting] = []
        written = 0
        for accepting in fresh:
            targets = len(accepting.targets)
            if targets <= FANOUT_INLINE_LIMIT and written + targets <= INLINE_PER_REQUEST:
                inline.append(accepting)
                written += targets
            else:
                results[accepting.index] = _settled(
                    accepting, functools.partial(_large, accepting, chosen)
                )
        if inline:
            try:
                outcomes = _inline(inline, chosen)
            except Exception as exc:
                log.exception("%s events not accepted", len(inline))
                outcomes = [exc] * len(inline)
            for accepting, outcome in zip(inline, outcomes, strict=True):
                results[accepting.index] = outcome
                _settle(accepting, done=isinstance(outcome, Published))
    for index, first in repeats.items():
        earlier = results[first]
        results[index] = (
            Published(earlier.event_id, earlier.deliveries, repeated=True)
            if isinstance(earlier, Published)
            else earlier
        )
    return [r if r is not None else RuntimeError("not handled") for r in results]


def _claimed(
    tenant_id: str,
    index: int,
    request: EventRequest,
    chosen: Sequence[registry.Family],
    results: list[Published | Exception | None],
    wait_until: float,
) -> _Accepting | None:
    """The event with its id, its key claimed; None when ``results`` already has its answer (a
    repeat of a finished key, or an event whose first request died halfway, finished here)."""
    event_id = new_id()
    key = request.idempotency_key
    guard_key = idempotency.guard_key_for(tenant_id, key) if key else None
    if guard_key is None:
        return _Accepting(index, request, event_id, None)
    claim = idempotency.claim(guard_key, event_id, wait_until)
    if claim.done:
        results[index] = _replayed(claim.event_id)
        return None
    accepting = _Accepting(index, request, claim.event_id, guard_key)
    if claim.resumed:  # a request that died halfway: finish it with conditional puts
        results[index] = _settled(accepting, lambda: _resume(tenant_id, accepting, chosen))
        return None
    return accepting


def _settled(accepting: _Accepting, work: Callable[[], Published]) -> Published | Exception:
    """``work()``, its key marked done; or the exception that stopped it, its key given back."""
    try:
        published: Published = work()
    except Exception as exc:
        log.exception("event %s not accepted", accepting.event_id)
        _settle(accepting, done=False)
        return exc
    _settle(accepting, done=True)
    return published


def _settle(accepting: _Accepting, *, done: bool) -> None:
    if accepting.guard_key is not None:
        idempotency.settle(accepting.guard_key, accepting.event_id, done)


def _replayed(event_id: str) -> Published:
    existing = deliveries.get_event(event_id)
    count = 0
    if existing is not None:
        count = int(existing.delivery_count or 0) or len(existing.delivery_ids or [])
    return Published(event_id, count, repeated=True)


def _event(
    tenant_id: str, event_id: str, request: EventRequest, received_at: str
) -> PublishedEvent:
    return PublishedEvent(
        event_id=event_id,
        tenant_id=tenant_id,
        event_type=request.event_type,
        received_at=received_at,
        payload=request.payload,
        campaign_id=request.campaign_id,
        selection=request.selection,
        test=request.test,
    )


def _matched(
    tenant_id: str, accepting: _Accepting, chosen: Sequence[registry.Family]
) -> _Accepting:
    event = _event(tenant_id, accepting.event_id, accepting.request, fmt(utcnow()))
    accepting.event = event
    accepting.targets = [target for fam in chosen for target in fam.match(event)]
    return accepting


def _record(event: PublishedEvent, targets: Sequence[Target], fanned_out: bool) -> EventModel:
    """The event record; an inline fan-out's record lists its deliveries (``by_event`` then
    holds none of them)."""
    inline = len(targets) <= FANOUT_INLINE_LIMIT
    return EventModel(
        event.event_id,
        tenant_id=event.tenant_id,
        event_type=event.event_type,
        received_at=event.received_at,
        campaign_id=event.campaign_id,
        selection=event.selection,
        payload=json.dumps(event.payload, separators=(",", ":")),
        test=event.test,
        delivery_count=len(targets),
        delivery_ids=sorted(fanout.delivery_id_for(event.event_id, t) for t in targets)
        if inline
        else None,
        fanned_out=fanned_out,
        expires_at=deliveries.retention_expiry(),
    )


def _inline(
    group: Sequence[_Accepting], chosen: Sequence[registry.Family]
) -> list[Published | Exception]:
    """The events of a request with up to ``FANOUT_INLINE_LIMIT`` targets each, together: one
    outbox, then the deliveries, their messages, the event records (already fanned out: one
    write each, listing their deliveries), and the outbox's removal.

    A failure before the messages are sent fails them all (raised: the caller answers 5xx for
    each and gives their keys back; the outbox makes sure whatever was written is sent). Once
    sent, each event is finished on its own (its buffering, its record), so one event's failure
    there costs no other event a 5xx and a retried duplicate."""
    now = fmt(utcnow())
    records = [
        deliveries.build(new, now, open_index=False, event_index=False)
        for accepting in group
        for new in fanout.new_deliveries(_event_of(accepting), accepting.targets)
    ]
    opened = outbox.open_outbox([r.delivery_id for r in records], time.time()) if records else []
    deliveries.write_new(records)
    queue.send_now([deliver_message(rec.delivery_id, 1) for rec in records])
    outcomes: list[Published | Exception] = [
        _finish_inline(accepting, chosen) for accepting in group
    ]
    try:
        with EventModel.batch_write() as batch:
            for accepting, outcome in zip(group, outcomes, strict=True):
                if isinstance(outcome, Published):
                    batch.save(_record(_event_of(accepting), accepting.targets, fanned_out=True))
    except Exception:  # each record on its own, so one failure fails one event
        log.warning("batch write of %s event records failed; one by one", len(group))
        for position, (accepting, outcome) in enumerate(zip(group, outcomes, strict=True)):
            if isinstance(outcome, Published):
                try:
                    _record(_event_of(accepting), accepting.targets, fanned_out=True).save()
                except Exception as exc:
                    log.exception("event %s not recorded", accepting.event_id)
                    outcomes[position] = exc
    try:
        outbox.close(opened)
    except Exception:  # everything is handed over; the reconciler removes the leftover
        log.warning("could not remove the outbox of %s deliveries", len(records), exc_info=True)
    return outcomes


def _finish_inline(
    accepting: _Accepting, chosen: Sequence[registry.Family]
) -> Published | Exception:
    """One event of an inline group whose messages are sent: the batching families take it."""
    try:
        extra = _buffer(chosen, _event_of(accepting))
    except Exception as exc:
        log.exception("event %s not buffered", accepting.event_id)
        return exc
    log.info(
        "event %s accepted: %s deliveries, %s buffered",
        accepting.request.event_type,
        len(accepting.targets),
        extra,
        extra={
            "event_id": accepting.event_id,
            "delivery_ids": sorted(
                fanout.delivery_id_for(accepting.event_id, t) for t in accepting.targets
            )[:50],
        },
    )
    return Published(accepting.event_id, len(accepting.targets) + extra)


def _event_of(accepting: _Accepting) -> PublishedEvent:
    assert accepting.event is not None
    return accepting.event


def _large(
    accepting: _Accepting, chosen: Sequence[registry.Family], careful: bool = False
) -> Published:
    """Past the inline limit: the plan (one message) reads the event record, so it is written
    first. The request sends no target anywhere: its time does not grow with their number
    beyond the match."""
    event = _event_of(accepting)
    record = _record(event, accepting.targets, fanned_out=False)
    record.save()
    queue.send_now([fanout.plan_message(event, [fam.name for fam in chosen], careful=careful)])
    buffered = _buffer(chosen, event)
    record.update(actions=[EventModel.fanned_out.set(True)])
    log.info(
        "event %s accepted: %s deliveries (fan-out queued in chunks), %s buffered",
        event.event_type,
        len(accepting.targets),
        buffered,
        extra={"event_id": event.event_id},
    )
    return Published(event.event_id, len(accepting.targets) + buffered)


def _resume(tenant_id: str, accepting: _Accepting, chosen: Sequence[registry.Family]) -> Published:
    """Finish an event whose first request died halfway (its lease ran out): the same event
    (its first received time), each delivery with a conditional put so one that has moved on
    is never reset and sent again."""
    existing = deliveries.get_event(accepting.event_id)
    received_at = existing.received_at if existing is not None else fmt(utcnow())
    event = _event(tenant_id, accepting.event_id, accepting.request, received_at)
    accepting.event = event
    accepting.targets = [target for fam in chosen for target in fam.match(event)]
    if len(accepting.targets) > FANOUT_INLINE_LIMIT:
        return _large(accepting, chosen, careful=True)  # the first try may have written some
    ids = [fanout.delivery_id_for(event.event_id, target) for target in accepting.targets]
    opened = outbox.open_outbox(ids, time.time()) if ids else []
    records = fanout.write_deliveries(event, accepting.targets, careful=True, listed=True)
    queue.send_now([deliver_message(rec.delivery_id, 1) for rec in records])
    buffered = _buffer(chosen, event)
    _record(event, accepting.targets, fanned_out=True).save()
    with contextlib.suppress(Exception):  # handed over; the reconciler removes a leftover
        outbox.close(opened)
    return Published(event.event_id, len(accepting.targets) + buffered)


def _buffer(chosen: Sequence[registry.Family], event: PublishedEvent) -> int:
    """Batching families keep the event for their next batch; how many took it."""
    return sum(fam.buffer(event) for fam in chosen if isinstance(fam, registry.BufferingFamily))


def deliver_direct(
    *,
    delivery_id: str,
    tenant_id: str,
    event_id: str,
    target: Target,
    content: dict[str, Any],
    due_at: float | None = None,
) -> bool:
    """Create one delivery outside an event fan-out (a scheduled firing, a notification batch)
    and queue its first attempt, now or at ``due_at``.

    Idempotent on ``delivery_id``: derive it from what the delivery is (callback id and firing
    number, the batch's items) and a repeat finds the delivery and only makes sure it is queued.
    Returns True when this call created it.
    """
    created = deliveries.write_if_absent(
        deliveries.build(
            NewDelivery(
                delivery_id=delivery_id,
                tenant_id=tenant_id,
                event_id=event_id,
                family=target.family,
                target_id=target.target_id,
                target=target.target,
                content={**content, **target.content},
            ),
            fmt(utcnow()),
            due=due_at,
        )
    )
    message = deliver_message(delivery_id, 1)
    if due_at is None:
        queue.send_now([message])
    else:
        queue.send_at(message, due_at, f"{delivery_id}.1")
    return created


def replay_id_for(delivery_id: str) -> str:
    return hashlib.sha256(f"{delivery_id}|replay".encode()).hexdigest()[:24]


def replay(record: deliveries.DeliveryModel) -> str:
    """A fresh delivery of the same content to the same target; returns its id.

    One replay per delivery, with an id derived from the original: replaying twice (or a
    request retried after a crash) finds the same replay and only makes sure it is queued.
    To retry a failed replay, replay the replay.
    """
    replay_id = replay_id_for(record.delivery_id)
    new = NewDelivery(
        delivery_id=replay_id,
        tenant_id=record.tenant_id,
        event_id=record.event_id,
        family=record.family,
        target_id=record.target_id,
        target=record.target,
        content=json.loads(record.content),
    )
    deliveries.write_if_absent(deliveries.build(new, fmt(utcnow()), replay_of=record.delivery_id))
    if record.replayed_by != replay_id:
        deliveries.mark_replayed(record, replay_id)
    current = deliveries.get(replay_id)
    if current is not None and int(current.attempt_count) == 0 and current.status == "pending":
        queue.send_now([deliver_message(replay_id, 1)])
    return replay_id
