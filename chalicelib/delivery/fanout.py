"""Deliveries for targets, and large fan-outs in chunks.

An event with more than ``ingest.FANOUT_INLINE_LIMIT`` targets is handed over whole: the request
writes its event record and sends one ``fanout`` plan message; a worker matches the targets again
and queues them in chunks of ``FANOUT_CHUNK``; each chunk writes its deliveries and sends their
messages under a lease of its own (a guard item), once. The chunk's message is its outbox: SQS
hands it out again until the chunk is done, and its dead-letter handler finishes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from pynamodb.exceptions import PutError

from chalicelib.delivery import idempotency, queue, registry
from chalicelib.delivery.dispatcher import LeaseHeld, deliver_message
from chalicelib.delivery.idempotency import DONE
from chalicelib.delivery.registry import PublishedEvent, Target
from chalicelib.domain.ids import new_id
from chalicelib.domain.timeutil import fmt, utcnow
from chalicelib.storage import deliveries
from chalicelib.storage.deliveries import EventModel, NewDelivery
from chalicelib.storage.guards import GuardModel, read_guard

log = logging.getLogger("ringback.ingest")

FANOUT_CHUNK = 100
FANOUT_KIND = "fanout"
CHUNK_LEASE_SECONDS = 60.0
"""Shorter than the queue's visibility timeout: when a chunk's worker dies, its message comes
back after the lease ran out and takes it over."""


def delivery_id_for(event_id: str, target: Target) -> str:
    digest = hashlib.sha256(f"{event_id}|{target.family}|{target.target_id}".encode()).hexdigest()
    return digest[:24]


def write_deliveries(
    event: PublishedEvent, targets: Sequence[Target], *, careful: bool, listed: bool = False
) -> list[deliveries.DeliveryModel]:
    """The deliveries of ``targets``: batch-written when none of them can exist yet (a chunk's
    first run, of a plan's first run), else (``careful``) each with a conditional put, so one
    that exists already (written by an earlier try, or by an earlier plan that numbered its
    chunks over different targets) is never reset and sent again. Both bill the same write
    units; a conditional put costs a round trip per delivery.

    No reconciler index entry: the caller's own message (a fan-out chunk that SQS hands out
    again until it is done, or a resumed request's outbox) covers them until they are sent."""
    now = fmt(utcnow())
    records = [
        deliveries.build(new, now, open_index=False, event_index=not listed)
        for new in new_deliveries(event, targets)
    ]
    if careful:
        for rec in records:
            deliveries.write_if_absent(rec)
    else:
        deliveries.write_new(records)
    return records


def new_deliveries(event: PublishedEvent, targets: Sequence[Target]) -> list[NewDelivery]:
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


def _fanout_message(
    event: PublishedEvent, number: int, targets: Sequence[Target], careful: bool
) -> dict[str, Any]:
    """One chunk of a large fan-out. It carries its targets (as matched when the event was
    accepted) but not the event, which the chunk reads from the event record. ``careful``: some
    of its deliveries may exist already (see ``plan_message``)."""
    return {
        "kind": FANOUT_KIND,
        "tenant_id": event.tenant_id,
        "event_id": event.event_id,
        "chunk": number,
        "careful": careful,
        "targets": [[t.family, t.target_id, t.target, t.content] for t in targets],
    }


def plan_message(
    event: PublishedEvent, families: Sequence[str], *, careful: bool = False
) -> dict[str, Any]:
    """A large fan-out, handed over whole: a worker matches the targets again and queues them
    in chunks (``handle_fanout``). ``careful`` when deliveries of the event may exist already
    (a publish resumed after its first request died): its chunks then write each delivery with
    a conditional put instead of a batch write, so none that moved on is reset."""
    return {
        "kind": FANOUT_KIND,
        "tenant_id": event.tenant_id,
        "event_id": event.event_id,
        "plan": True,
        "careful": careful,
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


def _plan(event: PublishedEvent, families: Sequence[str], careful: bool) -> None:
    """Match the event's targets (as at acceptance: the same registrations, unless one changed
    in the seconds between) and queue them in chunks, once: a guard item holds a lease while
    the plan runs and says ``done`` after. A plan run again after its worker died may number
    its chunks over different targets (a registration changed in between), so its chunks are
    careful: each delivery a conditional put."""
    key = f"fanout#{event.event_id}#plan"
    state = _claim_chunk(key)
    if state is None:
        return
    targets = [
        target for fam in registry.families() if fam.name in families for target in fam.match(event)
    ]
    careful = careful or state is False
    try:
        queue.send_now(
            [
                _fanout_message(event, number, targets[start : start + FANOUT_CHUNK], careful)
                for number, start in enumerate(range(0, len(targets), FANOUT_CHUNK))
            ]
        )
    except Exception:
        _give_back(key)
        raise
    GuardModel(key).update(actions=[GuardModel.payload.set(DONE), GuardModel.lease_until.remove()])


def _give_back(key: str) -> None:
    """Hand a guard's lease back after a failure, so the message's redelivery redoes the work at
    once instead of waiting for the lease to run out."""
    with contextlib.suppress(Exception):
        GuardModel(key).update(
            actions=[GuardModel.lease_until.set(0)],
            condition=GuardModel.payload.does_not_exist(),
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
        families = [str(f) for f in message.get("families") or []]
        _plan(_stored_event(stored), families, bool(message.get("careful", True)))
        return
    number = int(message["chunk"])
    key = f"fanout#{event_id}#{number}"
    first_time = _claim_chunk(key)
    if first_time is None:
        return
    event = _stored_event(stored)
    targets = [Target(str(f), str(i), str(t), dict(c)) for f, i, t, c in message["targets"]]
    careful = not first_time or bool(message.get("careful", True))
    try:
        records = write_deliveries(event, targets, careful=careful)
        queue.send_now([deliver_message(rec.delivery_id, 1) for rec in records])
    except Exception:
        _give_back(key)  # its redelivery redoes the chunk at once, carefully
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
    if not idempotency.take_over(existing, held, now):
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
