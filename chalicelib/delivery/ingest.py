"""Accepting an event: claim its idempotency key, record it, fan it out.

Order matters for "nothing is lost":

1. With an ``Idempotency-Key``, the key is claimed first with a conditional put that carries a
   short lease: of any number of concurrent requests with one key, exactly one fans out; the
   others wait for it to finish and answer with the same event (or 409 ``in_progress`` if it
   takes too long). A request whose owner died (its lease ran out before the key was marked
   done) takes the lease over and finishes the same event: every step below is idempotent.
2. The event record is written (it never lists its deliveries: they are a Query on the
   deliveries' ``by_event`` index, so no item grows with the number of targets).
3. Up to ``FANOUT_INLINE_LIMIT`` targets: the deliveries are written (batch writes of 25) and
   their work messages sent (SQS batches of 10) inside the request. Past it, the request sends
   one ``fanout`` plan message; a worker matches the targets again and queues them in chunks of
   ``FANOUT_CHUNK``; each chunk writes its deliveries and sends their messages under a lease of
   its own, once. The request writes and sends the same whatever the number of targets; only
   the match (to answer with their count) grows with them.
4. Only then is the event marked fanned out and the key done, and the API answers 202. A
   request that fails on the way answers 5xx and gives its lease back, so the publisher's retry
   with the same key finishes the work at once.

Deliveries written whose message never reached SQS are found by the reconciler: every
unfinished delivery carries a due time in a sparse index.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import PutError, UpdateError

from chalicelib import logs
from chalicelib.delivery import queue, registry
from chalicelib.delivery.dispatcher import LeaseHeld, deliver_message
from chalicelib.delivery.registry import PublishedEvent, Target
from chalicelib.domain.ids import new_id
from chalicelib.domain.timeutil import fmt, utcnow
from chalicelib.storage import deliveries
from chalicelib.storage.deliveries import EventModel, NewDelivery
from chalicelib.storage.guards import GuardModel, read_guard

log = logging.getLogger("ringback.ingest")

IDEMPOTENCY_SECONDS = 24 * 3600
CLAIM_LEASE_SECONDS = 30.0
"""How long a request owns an idempotency key it claimed before another may take it over."""
WAIT_FOR_OWNER_SECONDS = 10.0
FANOUT_INLINE_LIMIT = 100
FANOUT_CHUNK = 100
FANOUT_KIND = "fanout"
CHUNK_LEASE_SECONDS = 60.0
"""Shorter than the queue's visibility timeout: when a chunk's worker dies, its message comes
back after the lease ran out and takes it over."""
DONE = "done"


@dataclass(frozen=True)
class Published:
    event_id: str
    deliveries: int
    repeated: bool = False


class InProgress(Exception):
    """Another request with the same idempotency key is still fanning its event out."""

    def __init__(self, event_id: str) -> None:
        super().__init__(event_id)
        self.event_id = event_id


def delivery_id_for(event_id: str, target: Target) -> str:
    digest = hashlib.sha256(f"{event_id}|{target.family}|{target.target_id}".encode()).hexdigest()
    return digest[:24]


# --------------------------------------------------------------------------- idempotency


@dataclass(frozen=True)
class _Claim:
    event_id: str
    done: bool = False
    resumed: bool = False


def _idempotency_key(tenant_id: str, key: str) -> str:
    return f"idem#{tenant_id}#{hashlib.sha256(key.encode()).hexdigest()}"


def _claim_idempotency(guard_key: str, event_id: str) -> _Claim:
    """Own ``guard_key`` for ``event_id``, or learn which event owns it (waiting a little for a
    live owner to finish)."""
    deadline = time.monotonic() + WAIT_FOR_OWNER_SECONDS
    while True:
        now = time.time()
        guard = GuardModel(
            guard_key,
            owner=event_id,
            expires_at=int(now) + IDEMPOTENCY_SECONDS,
            lease_until=now + CLAIM_LEASE_SECONDS,
        )
        try:
            guard.save(
                condition=GuardModel.key.does_not_exist() | (GuardModel.expires_at < int(now))
            )
            return _Claim(event_id)
        except PutError as exc:
            if exc.cause_response_code != "ConditionalCheckFailedException":
                raise
        existing = read_guard(guard_key)
        if existing is None:  # expired and removed in between: claim it again
            continue
        if existing.owner == event_id:  # our own put committed; only its answer was lost
            return _Claim(event_id)
        owner = existing.owner or event_id
        if existing.payload == DONE:
            return _Claim(owner, done=True)
        held = existing.lease_until
        if held is None or float(held) < now:
            if _take_over(existing, held, now):
                return _Claim(owner, resumed=True)
            continue
        if time.monotonic() >= deadline:
            raise InProgress(owner)
        time.sleep(0.1)


def _take_over(guard: GuardModel, held: float | None, now: float) -> bool:
    condition = (
        GuardModel.lease_until.does_not_exist() if held is None else GuardModel.lease_until == held
    )
    try:
        guard.update(
            actions=[GuardModel.lease_until.set(now + CLAIM_LEASE_SECONDS)],
            condition=condition & GuardModel.payload.does_not_exist(),
        )
    except UpdateError as exc:
        if exc.cause_response_code == "ConditionalCheckFailedException":
            return False
        raise
    return True


def _settle_idempotency(guard_key: str, event_id: str, done: bool) -> None:
    """Mark the key done, or give its lease back after a failure (so the publisher's retry
    need not wait for it to run out). Never raises: a failure here only delays a repeat."""
    actions: list[Any] = (
        [GuardModel.payload.set(DONE), GuardModel.lease_until.remove()]
        if done
        else [GuardModel.lease_until.set(0)]
    )
    try:
        GuardModel(guard_key).update(actions=actions, condition=GuardModel.owner == event_id)
    except Exception:
        # The event is accepted (or refused) all the same. An unmarked key only means that a
        # repeat within the lease waits for it to run out, then redoes the (idempotent) work.
        log.warning(
            "could not %s the idempotency key of event %s",
            "mark done" if done else "give back",
            event_id,
            exc_info=True,
        )


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
    event_id = new_id()
    resumed = False
    guard_key = _idempotency_key(tenant_id, idempotency_key) if idempotency_key else None
    if guard_key is not None:
        claim = _claim_idempotency(guard_key, event_id)
        event_id, resumed = claim.event_id, claim.resumed
        if claim.done:
            logs.bind(tenant_id=tenant_id, event_id=event_id)
            return _replayed(event_id)
    logs.bind(tenant_id=tenant_id, event_id=event_id)  # until the caller's log scope ends
    try:
        published = _accept(
            event_id,
            tenant_id,
            event_type,
            payload,
            campaign_id=campaign_id,
            selection=selection,
            test=test,
            families=families,
            resumed=resumed,
        )
    except Exception:
        if guard_key is not None:
            _settle_idempotency(guard_key, event_id, done=False)
        raise
    if guard_key is not None:
        _settle_idempotency(guard_key, event_id, done=True)
    return published


def _replayed(event_id: str) -> Published:
    existing = deliveries.get_event(event_id)
    count = 0
    if existing is not None:
        count = int(existing.delivery_count or 0) or len(existing.delivery_ids or [])
    return Published(event_id, count, repeated=True)


def _accept(
    event_id: str,
    tenant_id: str,
    event_type: str,
    payload: dict[str, Any],
    *,
    campaign_id: str | None,
    selection: str | None,
    test: bool,
    families: Iterable[str] | None,
    resumed: bool,
) -> Published:
    existing = deliveries.get_event(event_id) if resumed else None
    event = PublishedEvent(
        event_id=event_id,
        tenant_id=tenant_id,
        event_type=event_type,
        received_at=existing.received_at if existing is not None else fmt(utcnow()),
        payload=payload,
        campaign_id=campaign_id,
        selection=selection,
        test=test,
    )
    wanted = set(families) if families is not None else None
    chosen = [fam for fam in registry.families() if wanted is None or fam.name in wanted]
    targets = [target for fam in chosen for target in fam.match(event)]
    record = EventModel(
        event_id,
        tenant_id=tenant_id,
        event_type=event_type,
        received_at=event.received_at,
        campaign_id=campaign_id,
        selection=selection,
        payload=json.dumps(payload, separators=(",", ":")),
        test=test,
        delivery_count=len(targets),
        fanned_out=False,
        expires_at=deliveries.retention_expiry(),
    )
    records: list[deliveries.DeliveryModel] = []
    if len(targets) <= FANOUT_INLINE_LIMIT:
        # The event record comes last, written once and already fanned out (one write unit
        # fewer per event): nothing reads it before the request answers.
        records = _write_deliveries(event, targets, first_time=not resumed)
        queue.send_now([deliver_message(rec.delivery_id, 1) for rec in records])
        buffered = _buffer(chosen, event)
        record.fanned_out = True
        record.save()
    else:
        # The plan (one message) reads the event record: it is written first. The request
        # sends no target anywhere: its time does not grow with their number beyond the match.
        record.save()
        queue.send_now([_plan_message(event, [fam.name for fam in chosen])])
        buffered = _buffer(chosen, event)
        record.update(actions=[EventModel.fanned_out.set(True)])
    log.info(
        "event %s accepted: %s deliveries%s, %s buffered",
        event_type,
        len(targets),
        "" if len(targets) <= FANOUT_INLINE_LIMIT else " (fan-out queued in chunks)",
        buffered,
        extra={"delivery_ids": [rec.delivery_id for rec in records][:50]},
    )
    return Published(event_id, len(targets) + buffered)


def _buffer(chosen: Sequence[registry.Family], event: PublishedEvent) -> int:
    """Batching families keep the event for their next batch; how many took it."""
    return sum(fam.buffer(event) for fam in chosen if isinstance(fam, registry.BufferingFamily))


def _write_deliveries(
    event: PublishedEvent, targets: Sequence[Target], *, first_time: bool
) -> list[deliveries.DeliveryModel]:
    """The deliveries of ``targets``: batch-written the first time (their ids are new), else
    each with a conditional put, so one that has moved on is never reset and sent again."""
    now = fmt(utcnow())
    records = [deliveries.build(new, now) for new in _new_deliveries(event, targets)]
    if first_time:
        deliveries.write_new(records)
    else:
        for rec in records:
            deliveries.write_if_absent(rec)
    return records


def _new_deliveries(event: PublishedEvent, targets: Sequence[Target]) -> list[NewDelivery]:
    return [
        NewDelivery(
            delivery_id=delivery_id_for(event.event_id, target),
            tenant_id=event.tenant_id,
            event_id=event.event_id,
            family=target.family,
            target_id=target.target_id,
            target=target.target,
            content={"event": event.as_content(), **target.content},
        )
        for target in targets
    ]


# --------------------------------------------------------------------------- fan-out chunks


def _fanout_message(
    event: PublishedEvent, number: int, targets: Sequence[Target]
) -> dict[str, Any]:
    """One chunk of a large fan-out. It carries its targets (as matched when the event was
    accepted) but not the event, which the chunk reads from the event record."""
    return {
        "kind": FANOUT_KIND,
        "tenant_id": event.tenant_id,
        "event_id": event.event_id,
        "chunk": number,
        "targets": [[t.family, t.target_id, t.target, t.content] for t in targets],
    }


def _plan_message(event: PublishedEvent, families: Sequence[str]) -> dict[str, Any]:
    """A large fan-out, handed over whole: a worker matches the targets again and queues them
    in chunks (``handle_fanout``)."""
    return {
        "kind": FANOUT_KIND,
        "tenant_id": event.tenant_id,
        "event_id": event.event_id,
        "plan": True,
        "families": list(families),
    }


def _stored_event(stored: EventModel) -> PublishedEvent:
    return PublishedEvent(
        event_id=stored.event_id,
        tenant_id=stored.tenant_id,
        event_type=stored.event_type,
        received_at=stored.received_at,
        payload=json.loads(stored.payload),
        campaign_id=stored.campaign_id,
        selection=stored.selection,
        test=bool(stored.test),
    )


def _plan(event: PublishedEvent, families: Sequence[str]) -> None:
    """Match the event's targets (as at acceptance: the same registrations, unless one changed
    in the seconds between) and queue them in chunks. A repeated plan queues the same chunks
    again; each chunk is written once (its guard)."""
    targets = [
        target for fam in registry.families() if fam.name in families for target in fam.match(event)
    ]
    queue.send_now(
        [
            _fanout_message(event, number, targets[start : start + FANOUT_CHUNK])
            for number, start in enumerate(range(0, len(targets), FANOUT_CHUNK))
        ]
    )


def handle_fanout(message: dict[str, Any]) -> None:
    """The plan of a large fan-out (match, then queue chunks), or one chunk: write its
    deliveries and send their messages, once per chunk: a guard item per chunk holds a lease
    while it runs and says ``done`` after. A repeat of a finished chunk does nothing; a repeat of
    one whose worker died redoes it with conditional puts."""
    event_id = str(message["event_id"])
    stored = deliveries.get_event(event_id)
    if stored is None:
        log.warning("event %s does not exist; dropping its fan-out message", event_id)
        return
    if message.get("plan"):
        _plan(_stored_event(stored), [str(f) for f in message.get("families") or []])
        return
    number = int(message["chunk"])
    key = f"fanout#{event_id}#{number}"
    first_time = _claim_chunk(key)
    if first_time is None:
        return
    event = _stored_event(stored)
    targets = [Target(str(f), str(i), str(t), dict(c)) for f, i, t, c in message["targets"]]
    try:
        records = _write_deliveries(event, targets, first_time=first_time)
        queue.send_now([deliver_message(rec.delivery_id, 1) for rec in records])
    except Exception:
        # Give the lease back so the message's redelivery redoes the chunk at once (with
        # conditional puts) instead of waiting for the lease to run out.
        with contextlib.suppress(Exception):
            GuardModel(key).update(
                actions=[GuardModel.lease_until.set(0)],
                condition=GuardModel.payload.does_not_exist(),
            )
        raise
    GuardModel(key).update(actions=[GuardModel.payload.set(DONE), GuardModel.lease_until.remove()])


def _claim_chunk(key: str) -> bool | None:
    """True: ours, first time; False: ours, redo (a worker died on it, or gave the lease back
    after a failure); None: done already. Raises ``LeaseHeld`` while another holds the lease."""
    token = new_id()
    now = time.time()
    guard = GuardModel(
        key,
        owner=token,
        lease_until=now + CHUNK_LEASE_SECONDS,
        expires_at=deliveries.retention_expiry(now),
    )
    try:
        guard.save(condition=GuardModel.key.does_not_exist())
        return True
    except PutError as exc:
        if exc.cause_response_code != "ConditionalCheckFailedException":
            raise
    existing = read_guard(key)
    if existing is None:
        raise LeaseHeld(f"fan-out chunk {key} vanished; try again")
    if existing.owner == token:  # our put committed; its answer was lost
        return True
    if existing.payload == DONE:
        return None
    held = existing.lease_until
    if held is not None and float(held) >= now:
        # Another copy of this message is being handled right now, or its worker died holding
        # the lease. This copy comes back later (SQS redelivers it): by then the chunk is done,
        # or the lease has run out and this copy takes it over. Dropping it could lose the chunk.
        raise LeaseHeld(f"fan-out chunk {key} is being written by another worker")
    if not _take_over(existing, held, now):
        raise LeaseHeld(f"fan-out chunk {key} was taken over by another worker")
    return False


def _fanout_dead_letter(message: dict[str, Any]) -> None:
    """SQS gave up on a chunk: its deliveries may be partly written. Write the rest (each with a
    conditional put) and queue them, so nothing of the event is lost; a failure here leaves the
    message to this handler's own redrive."""
    if message.get("plan"):
        handle_fanout(message)  # planning again only queues chunks; each is written once
        return
    key = f"fanout#{message['event_id']}#{message['chunk']}"
    existing = read_guard(key)
    if existing is not None and existing.payload == DONE:
        return
    stored = deliveries.get_event(str(message["event_id"]))
    if stored is None:
        return
    GuardModel(key, lease_until=0).save()
    handle_fanout(message)


registry.register_kind(FANOUT_KIND, handle_fanout, _fanout_dead_letter)


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
