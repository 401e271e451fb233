"""Accepting an event: match, record, fan out.

Order matters for "nothing is lost": the event record is written first, then every delivery
record (batch writes of 25), then the work messages (SQS batches of 10), and only then does the
API answer 202. With an ``Idempotency-Key`` the same key within 24 hours returns the first
event: if the first request died halfway, the repeat finishes its fan-out (delivery ids are
derived from the event and target, so nothing is created twice).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import PutError

from chalicelib import logs
from chalicelib.delivery import queue, registry
from chalicelib.delivery.dispatcher import deliver_message
from chalicelib.delivery.registry import PublishedEvent, Target
from chalicelib.domain.ids import new_id
from chalicelib.domain.timeutil import fmt, utcnow
from chalicelib.storage import deliveries
from chalicelib.storage.deliveries import EventModel, NewDelivery
from chalicelib.storage.guards import GuardModel, read_guard

log = logging.getLogger("ringback.ingest")

IDEMPOTENCY_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Published:
    event_id: str
    deliveries: int
    repeated: bool = False


def delivery_id_for(event_id: str, target: Target) -> str:
    digest = hashlib.sha256(f"{event_id}|{target.family}|{target.target_id}".encode()).hexdigest()
    return digest[:24]


def _claim_idempotency(tenant_id: str, key: str, event_id: str) -> str:
    """Returns the event id that owns ``key``: ours when we are first."""
    now = int(time.time())
    guard_key = f"idem#{tenant_id}#{hashlib.sha256(key.encode()).hexdigest()}"
    guard = GuardModel(guard_key, owner=event_id, expires_at=now + IDEMPOTENCY_SECONDS)
    try:
        guard.save(condition=GuardModel.key.does_not_exist() | (GuardModel.expires_at < now))
        return event_id
    except PutError as exc:
        if exc.cause_response_code != "ConditionalCheckFailedException":
            raise
    existing = read_guard(guard_key)
    if existing is None or existing.owner is None:  # expired and removed in between: take it
        return _claim_idempotency(tenant_id, key, event_id)
    return existing.owner


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
    fresh = True
    if idempotency_key:
        owner = _claim_idempotency(tenant_id, idempotency_key, event_id)
        if owner != event_id:
            existing = deliveries.get_event(owner)
            if existing is not None:
                logs.bind(tenant_id=tenant_id, event_id=owner)
                return _resume(existing)
            event_id, fresh = owner, False  # the first request died before recording the event
    logs.bind(tenant_id=tenant_id, event_id=event_id)  # until the caller's log scope ends
    event = PublishedEvent(
        event_id=event_id,
        tenant_id=tenant_id,
        event_type=event_type,
        received_at=fmt(utcnow()),
        payload=payload,
        campaign_id=campaign_id,
        selection=selection,
        test=test,
    )
    wanted = set(families) if families is not None else None
    targets = [
        target
        for fam in registry.families()
        if wanted is None or fam.name in wanted
        for target in fam.match(event)
    ]
    now = fmt(utcnow())
    records = [deliveries.build(new, now) for new in _new_deliveries(event, targets)]
    # Deliveries first, then the event that lists them: a request that dies in between leaves
    # nothing a repeat (same idempotency key) cannot finish.
    if fresh:
        deliveries.write_new(records)
    else:
        for rec in records:
            deliveries.write_if_absent(rec)
    buffered = sum(
        fam.buffer(event)
        for fam in registry.families()
        if (wanted is None or fam.name in wanted) and isinstance(fam, registry.BufferingFamily)
    )
    record = EventModel(
        event_id,
        tenant_id=tenant_id,
        event_type=event_type,
        received_at=event.received_at,
        campaign_id=campaign_id,
        selection=selection,
        payload=json.dumps(payload, separators=(",", ":")),
        test=test,
        delivery_ids=[rec.delivery_id for rec in records],
        fanned_out=False,
    )
    record.save()
    queue.send_now([deliver_message(rec.delivery_id, 1) for rec in records])
    record.update(actions=[EventModel.fanned_out.set(True)])
    log.info(
        "event %s accepted: %s deliveries, %s buffered",
        event_type,
        len(records),
        buffered,
        extra={"delivery_ids": [rec.delivery_id for rec in records][:50]},
    )
    return Published(event_id, len(records) + buffered)


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


def _resume(existing: EventModel) -> Published:
    """The same idempotency key again: answer as the first time, finishing its fan-out if the
    first request died before sending the work messages (duplicates are harmless: each attempt
    is claimed once)."""
    ids = list(existing.delivery_ids or [])
    if not existing.fanned_out:
        found = deliveries.get_many(ids)
        queue.send_now(
            [
                deliver_message(delivery_id, 1)
                for delivery_id in ids
                if delivery_id in found and int(found[delivery_id].attempt_count) == 0
            ]
        )
        existing.update(actions=[EventModel.fanned_out.set(True)])
    return Published(existing.event_id, len(ids), repeated=True)


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
