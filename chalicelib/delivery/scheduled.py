"""The scheduler: scheduled callbacks as a family of the delivery engine, plus the ``fire`` work
kind that starts each firing.

A firing is one ``fire`` work message, due at the firing's time (SQS ``DelaySeconds`` within 15
minutes, else a due item the sweeper hands over a minute ahead; the worker sleeps off the last
fraction of a second). Its handler:

1. starts firing ``k`` with a conditional update (only from ``scheduled`` with
   ``fired_count == k``), so duplicate or late messages and a concurrent cancel can never start
   it twice or after a cancel;
2. for an ``interval`` series, schedules firing ``k+1`` at ``fire_time(anchor, k+1)``, measured
   from the anchor, so slow receivers and retries never shift the series;
3. creates the firing's delivery (id derived from the callback id and ``k``) and runs its first
   attempt through the engine's own ``handle_deliver``: retries, the attempts log, dead letters
   and ``on_final`` are the engine's, as for every family. ``prepare`` re-reads the callback on
   retries and skips once it is cancelled.

When a firing's delivery is final the engine calls :meth:`ScheduledFamily.on_final` (at least
once): it records ``last_status`` and, when that firing was the latest one, moves the callback on
in one conditional write: an ``immediate`` repeat schedules the next firing now; a finished series
becomes ``completed`` or ``failed``. Every message may be repeated: a step that already happened
is recognised by its condition and only its follow-up work is sent again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from chalicelib import settings
from chalicelib.delivery import dispatcher, queue, registry
from chalicelib.delivery.registry import HttpOutbound, Outbound, PublishedEvent, Skip, Target
from chalicelib.domain import flow
from chalicelib.domain import scheduled as rules
from chalicelib.domain.retry import Status
from chalicelib.domain.timeutil import fmt, parse_stored
from chalicelib.storage import deliveries, due
from chalicelib.storage import scheduled as store
from chalicelib.storage.deliveries import DeliveryModel, NewDelivery

log = logging.getLogger("ringback.scheduler")

FAMILY = "scheduled"
FIRE_KIND = "fire"
CALLBACK_ID_HEADER = "Ringback-Callback-Id"
FIRE_COUNT_HEADER = "Ringback-Fire-Count"
HANDOVER_CLAIM_SECONDS = 60.0


def _now() -> datetime:
    return datetime.now(UTC)


def delivery_id_for(callback_id: str, firing: int) -> str:
    """The delivery of firing ``firing`` (0-based): the same id however often it is started."""
    return hashlib.sha256(f"{callback_id}|fire|{firing}".encode()).hexdigest()[:24]


# --------------------------------------------------------------------------- scheduling


def hand_over(first: store.FirstFiring, now: float | None = None) -> bool:
    """After a create: send its first firing to SQS when it is due within SQS's delay limit.
    Returns True if sent here.

    Not stored (due within the limit at create): sent now. If the send fails, the due item is
    stored instead, for the sweeper (within a minute); if this process dies before either, the
    reconciler sends it once it is a grace period overdue (``storage.scheduled``). Stored (due
    beyond the limit at create): normally left to the sweeper; if it has come within the limit
    meanwhile (a slow create), it is claimed first, so a sweep at the same moment cannot send it
    too, then sent and removed, exactly as the sweeper would.
    """
    now = time.time() if now is None else now
    item = first.item
    due_at = float(item.due_at)
    message = json.loads(item.message)
    item_id = item.item_key.partition("#")[2]
    if not first.stored:
        try:
            queue.send_at(message, due_at, item_id, now)
        except Exception:
            log.exception("first firing of %s: SQS refused it; stored for the sweeper", item_id)
            item.save()
            return False
        return True
    if due_at - now > queue.SQS_MAX_DELAY or not due.claim(item, HANDOVER_CLAIM_SECONDS):
        return False
    queue.send_at(message, due_at, item_id, now)
    due.remove(item)
    return True


def schedule_firing(record: store.ScheduledCallbackModel, firing: int, at: datetime) -> None:
    """Queue the ``fire`` message of firing ``firing`` for ``at`` (SQS or due items)."""
    queue.send_at(
        store.fire_message(record.tenant_id, record.callback_id, firing, record.repeat_type),
        at.timestamp(),
        store.fire_item_id(record.callback_id, firing),
    )


def _stored_time(value: str | None) -> datetime | None:
    return parse_stored(value) if value else None


# --------------------------------------------------------------------------- the fire kind

_started = threading.local()
"""The callback as the fire handler's conditional update left it, while that handler runs the
firing's first attempt inline: ``prepare`` and ``on_final`` use it instead of reading it again
(the state is milliseconds old and was just checked by that update)."""


def _just_started(callback_id: str) -> store.ScheduledCallbackModel | None:
    record: store.ScheduledCallbackModel | None = getattr(_started, "record", None)
    return record if record is not None and record.callback_id == callback_id else None


def handle_fire(message: dict[str, Any]) -> None:
    """Start firing ``message["firing"]`` of a callback, or finish starting it (a repeat)."""
    tenant_id = str(message["tenant_id"])
    callback_id = str(message["callback_id"])
    firing = int(message["firing"])
    now = _now()
    record: store.ScheduledCallbackModel | None
    if message.get("series") in ("once", "immediate"):
        # Nothing to compute first: try to start it straight away (the update returns the item).
        record = store.skeleton(tenant_id, callback_id)
        started = store.start_firing(record, firing, state=store.FIRING, next_fire_at=None, now=now)
        if not started:
            record = store.get(tenant_id, callback_id)
    else:
        record = store.get(tenant_id, callback_id)
        ready = record is not None and record.state == store.SCHEDULED
        if record is not None and ready and int(record.fired_count) == firing:
            next_at = _next_interval_firing(record, firing, now)
            state = store.SCHEDULED if next_at is not None else store.FIRING
            if not store.start_firing(record, firing, state=state, next_fire_at=next_at, now=now):
                record = store.get(tenant_id, callback_id)  # cancelled, or started elsewhere
    if record is None:
        log.warning("callback %s does not exist; dropping firing %s", callback_id, firing + 1)
        return
    if int(record.fired_count) <= firing:
        return  # not started: cancelled (or stopped) before it was due
    if int(record.fired_count) > firing + 1 or record.state not in rules.LIVE_STATES:
        # Started, and the series has moved on since (or ended). This message is a late copy:
        # if the worker that started the firing died before creating its delivery, the
        # firing would be lost, so make sure it exists (a conditional put; nothing is sent
        # twice: the delivery's first attempt is claimed once).
        if deliveries.get(delivery_id_for(callback_id, firing)) is None:
            log.warning("firing %s of %s had no delivery; creating it", firing + 1, callback_id)
            _run_first_attempt(record, firing)
        return
    if record.repeat_type == "interval" and record.state == store.SCHEDULED:
        next_at = _stored_time(record.next_fire_at)
        if next_at is not None:  # before the attempt: a slow receiver must not delay it
            schedule_firing(record, firing + 1, next_at)
    _run_first_attempt(record, firing)


def _next_interval_firing(
    record: store.ScheduledCallbackModel, firing: int, now: datetime
) -> datetime | None:
    """For an interval series: when the firing after ``firing`` is due (None for the last one,
    and for one-time and immediate callbacks, whose next firing waits for this one to end)."""
    repeat = record.repeat
    if repeat is None or repeat.type != "interval":
        return None
    this_slot = _stored_time(record.next_fire_at) or parse_stored(record.callback_time)
    return rules.next_fire(
        record.anchor, repeat, firing + 1, completed_at=this_slot, now=max(now, this_slot)
    )


def limits_content(record: store.ScheduledCallbackModel) -> dict[str, Any]:
    """The callback's flow-control limits, copied into each firing's delivery content."""
    rate = float(record.rate_limit) if record.rate_limit is not None else None
    most = int(record.max_in_flight) if record.max_in_flight is not None else None
    return flow.to_content(flow.Limits(rate, most))


def _run_first_attempt(record: store.ScheduledCallbackModel, firing: int) -> None:
    """Create the firing's delivery (id derived from callback and firing, so a repeat finds it)
    and run its first attempt right here through the engine's own ``handle_deliver``: claim,
    send, record, retries on SQS or due items, dead letters, ``on_final``, exactly as a queued
    attempt. ``ingest.deliver_direct`` would queue that attempt instead; running it inline saves
    a queue round trip on every firing, which matters for fire-time lag."""
    delivery_id = _write_firing_delivery(record, firing)
    _started.record = record
    try:
        dispatcher.handle_deliver(dispatcher.deliver_message(delivery_id, 1))
    finally:
        _started.record = None


FIRE_REDRIVES = 3
"""How often a dead-lettered ``fire`` message of a firing that never started is put back on
the queue before the series is stopped: AWS throttling a few receives in a row must not end a
customer's series."""


def _write_firing_delivery(record: store.ScheduledCallbackModel, firing: int) -> str:
    """The delivery of firing ``firing`` (a conditional put: created once)."""
    delivery_id = delivery_id_for(record.callback_id, firing)
    deliveries.write_if_absent(
        deliveries.build(
            NewDelivery(
                delivery_id=delivery_id,
                tenant_id=record.tenant_id,
                event_id=record.callback_id,
                family=FAMILY,
                target_id=record.callback_id,
                target=record.callback_url,
                content={
                    "tenant_id": record.tenant_id,
                    "callback_id": record.callback_id,
                    "firing": firing,
                    "repeat_type": record.repeat_type,
                    **limits_content(record),
                },
            ),
            fmt(_now()),
            event_index=False,  # its event_id is the callback's: no event record lists it
        )
    )
    return delivery_id


def repair_firing(record: store.ScheduledCallbackModel, firing: int) -> None:
    """A firing that started without a delivery (its worker died in between): create it and
    queue its first attempt, as any delivery's (used by the reconciler)."""
    delivery_id = _write_firing_delivery(record, firing)
    queue.send_now([dispatcher.deliver_message(delivery_id, 1)])


def handle_fire_dead_letter(message: dict[str, Any]) -> None:
    """SQS gave up on a ``fire`` message. Only what it carried can fail: if its firing started
    (the series moved on, or this was a stale copy) nothing happens, beyond making sure that
    firing's delivery exists. If it never started, it is put back on the queue up to
    ``FIRE_REDRIVES`` times, and only then is the series stopped, where users look."""
    record = store.get(str(message["tenant_id"]), str(message["callback_id"]))
    if record is None or record.state not in rules.LIVE_STATES:
        return
    firing = int(message["firing"])
    fired = int(record.fired_count)
    if fired > firing:
        if deliveries.get(delivery_id_for(record.callback_id, firing)) is None:
            repair_firing(record, firing)
        return
    if fired < firing or record.state != store.SCHEDULED:
        return  # a message for a firing that is not the next one: stale
    redrives = int(message.get("redrives", 0))
    if redrives < FIRE_REDRIVES:
        queue.send_now([{**message, "redrives": redrives + 1}])
        return
    store.mark_failed(
        record,
        f"dead-lettered: the scheduler could not process firing {firing + 1}",
        _now(),
    )


registry.register_kind(FIRE_KIND, handle_fire, handle_fire_dead_letter)


# --------------------------------------------------------------------------- the family


class ScheduledFamily:
    name = FAMILY

    def match(self, event: PublishedEvent) -> Sequence[Target]:
        """Scheduled callbacks fire on time, never on events."""
        return []

    def prepare(self, delivery: DeliveryModel, attempt_no: int, use_backup: bool) -> Outbound:
        """GET the URL as given. Skipped once the callback is cancelled or stopped (failed): a
        retry of an earlier firing never goes out after a cancel."""
        content = json.loads(delivery.content)
        firing = int(content["firing"])
        record = _just_started(delivery.target_id) if attempt_no == 1 else None
        if record is None:
            record = store.get(delivery.tenant_id, delivery.target_id)
        if record is None:
            return Skip("the callback no longer exists")
        if record.state == store.CANCELLED:
            return Skip("the callback was cancelled")
        if record.state == store.FAILED:
            return Skip(f"the callback was stopped: {record.failure_reason}")
        return HttpOutbound(
            method="GET",
            url=record.callback_url,
            headers={
                CALLBACK_ID_HEADER: record.callback_id,
                FIRE_COUNT_HEADER: str(firing + 1),
            },
            body=None,
            signing_secrets=(store.signing_secret(record),),
        )

    def limits(self, delivery: DeliveryModel) -> flow.Limits | None:
        """The callback's own limits; an ``immediate`` repeat is also held to one firing per
        ``RINGBACK_MIN_REPEAT_SECONDS``, the minimum an ``interval`` repeat is held to at create."""
        content = json.loads(delivery.content)
        own = flow.from_content(content)
        if content.get("repeat_type") != "immediate":
            return own
        return flow.with_min_interval(own, settings.min_repeat_seconds())

    def tracks_health(self, delivery: DeliveryModel) -> bool:
        """Only a repeating callback has later firings to protect from a dead receiver; a
        one-time callback's retries end it either way, so its firing skips that bookkeeping
        (one AWS call fewer per firing)."""
        return json.loads(delivery.content).get("repeat_type") is not None

    def target_gone(self, delivery: DeliveryModel, reason: str) -> None:
        """The receiver answered 410 Gone, or failed every attempt for the stage's dead-target
        limit: the series stops."""
        store.mark_failed(store.skeleton(delivery.tenant_id, delivery.target_id), reason, _now())

    def on_final(self, delivery: DeliveryModel) -> None:
        """A firing's delivery is final (idempotent: the engine may call this more than once).

        If it was the latest firing and nothing is scheduled after it (state ``firing``), the
        callback moves on in one conditional write: an immediate repeat is scheduled again, a
        finished series becomes ``completed`` (delivered) or ``failed``. Otherwise only
        ``last_status`` is recorded (an older firing's outcome never overwrites a newer one's).
        """
        content = json.loads(delivery.content)
        firing = int(content["firing"])
        tenant_id, callback_id = delivery.tenant_id, delivery.target_id
        now = _now()
        status = delivery.status
        delivered = status == Status.DELIVERED.value
        reason = None if delivered else delivery.failure_reason
        immediate = content.get("repeat_type") == "immediate"
        started = _just_started(callback_id)
        if (
            not immediate
            and started is not None
            and started.state == store.SCHEDULED
            and int(started.fired_count) == firing + 1
        ):
            # An interval series whose next firing was scheduled when this one started: this
            # firing can never be the one that finishes the series (only the start of the next
            # one leaves ``scheduled``, and it moves ``fired_count`` on), so ``finish_firing``
            # would fail its condition, a cancelled transaction billed like a write. Only the
            # outcome is recorded.
            store.record_outcome(started, firing, status, reason, now)
            return
        record: store.ScheduledCallbackModel | None = store.skeleton(tenant_id, callback_id)
        next_at: datetime | None = None
        if immediate:
            record = _just_started(callback_id) or store.get(tenant_id, callback_id)
            if record is None:
                return
            next_at = self._next_after(record, firing, now)
        assert record is not None
        state = store.SCHEDULED if next_at else store.COMPLETED if delivered else store.FAILED
        if store.finish_firing(
            record,
            firing,
            state=state,
            next_fire_at=next_at,
            status=status,
            reason=reason,
            now=now,
        ):
            if next_at is not None:
                schedule_firing(record, firing + 1, next_at)
            return
        store.record_outcome(record, firing, status, reason, now)
        if immediate:
            # Maybe a repeat of this call: the state moved on, the message may not have been sent.
            fresh = store.get(tenant_id, callback_id)
            scheduled_at = _stored_time(fresh.next_fire_at) if fresh is not None else None
            if (
                fresh is not None
                and fresh.state == store.SCHEDULED
                and int(fresh.fired_count) == firing + 1
                and scheduled_at is not None
            ):
                schedule_firing(fresh, firing + 1, scheduled_at)

    @staticmethod
    def _next_after(
        record: store.ScheduledCallbackModel, firing: int, now: datetime
    ) -> datetime | None:
        repeat = record.repeat
        if repeat is None or repeat.type != "immediate":
            return None
        return rules.next_fire(record.anchor, repeat, firing + 1, completed_at=now, now=now)


registry.register_family(ScheduledFamily())
