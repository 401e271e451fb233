"""One delivery attempt, from a ``deliver`` work message to the next step.

The message says which attempt it carries. Whatever SQS does (redeliver, duplicate, reorder),
the record decides: an attempt already recorded is not sent again, a final delivery is left
alone, and only the holder of the lease may record. If the worker dies after recording a failed
attempt but before scheduling the next one, the redelivered message finds the attempt recorded
and schedules the next one: nothing stalls, nothing is sent twice.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib import logs, settings
from chalicelib.delivery import queue, registry, senders, target_health
from chalicelib.delivery.registry import HttpOutbound, Skip, StreamOutbound
from chalicelib.domain.redact import redact_url
from chalicelib.domain.retry import FINAL, AttemptResult, Decision, Status, decide, use_backup
from chalicelib.domain.timeutil import fmt, utcnow
from chalicelib.storage import deliveries, health
from chalicelib.storage.deliveries import DeliveryModel

log = logging.getLogger("ringback.dispatcher")

LEASE_MARGIN = 30.0
RESPONSE_KEPT = 512
"""Characters of a receiver's answer kept in the attempts log (the sender reads at most 4 KiB)."""


def deliver_message(delivery_id: str, attempt_no: int) -> dict[str, Any]:
    return {"kind": "deliver", "delivery_id": delivery_id, "attempt": attempt_no}


def handle_deliver(message: dict[str, Any]) -> None:
    """Claim first, read only when the claim fails: the common path costs one conditional
    update (which returns the whole record), not a read and then an update."""
    delivery_id = str(message["delivery_id"])
    attempt_no = int(message["attempt"])
    timeout = settings.http_timeout()
    record = DeliveryModel(delivery_id)
    token = deliveries.claim(record, attempt_no, timeout + LEASE_MARGIN)
    if token is None:
        _not_claimed(delivery_id, attempt_no)
        return
    logs.bind(tenant_id=record.tenant_id, event_id=record.event_id, delivery_id=delivery_id)
    try:
        _attempt(record, token, attempt_no, timeout)
    except Exception:
        deliveries.release(record, token)
        raise


class LeaseHeld(Exception):
    """Another worker holds this attempt's lease. The message must come back later: if that
    worker died, nobody else would ever send the attempt."""


def _not_claimed(delivery_id: str, attempt_no: int) -> None:
    """Why the claim failed decides what this message still owes."""
    record = deliveries.get(delivery_id)
    if record is None:
        log.warning("delivery %s does not exist; dropping message", delivery_id)
        return
    if record.state in FINAL:
        _notify_final(record)  # again, in case the worker died right after finishing it
        return
    recorded = int(record.attempt_count)
    if recorded >= attempt_no:
        # Already sent and recorded. If the worker died before queueing the next attempt,
        # this redelivered message queues it (a duplicate of it is claimed only once).
        if record.state is Status.RETRYING and recorded == attempt_no:
            _schedule_next(record, recorded + 1, record.next_attempt_at)
        return
    if recorded != attempt_no - 1:
        log.warning(
            "delivery %s: message for attempt %s, %s recorded", delivery_id, attempt_no, recorded
        )
        return
    raise LeaseHeld(f"delivery {delivery_id} attempt {attempt_no} is leased by another worker")


def _attempt(record: DeliveryModel, token: str, attempt_no: int, timeout: float) -> None:
    fam = registry.family(record.family)
    outbound = fam.prepare(record, attempt_no, use_backup(attempt_no))
    if isinstance(outbound, Skip):
        log.info("skipped: %s", outbound.reason, extra={"family": record.family})
        if deliveries.finish_without_attempt(
            record, Status.SKIPPED, outbound.reason, fmt(utcnow())
        ):
            record.status = Status.SKIPPED.value
            _notify_final(record)
        return
    url, result = _send(outbound, record, timeout)
    decision = decide(result, attempt_no, settings.retry_schedule())
    _record(record, token, attempt_no, url, result, decision)
    log.info(
        "attempt %s: %s -> %s",
        attempt_no,
        f"HTTP {result.status_code}" if result.status_code is not None else result.error,
        decision.status.value,
        extra={"family": record.family, "target_id": record.target_id, "attempt": attempt_no},
    )
    if decision.target_gone:
        fam.target_gone(record, decision.reason or "gone")
    _track_health(fam, record, result.success, gone=decision.target_gone)
    if decision.status in FINAL:
        record.status = decision.status.value
        _notify_final(record)


def _track_health(fam: registry.Family, record: DeliveryModel, success: bool, gone: bool) -> None:
    tracks = getattr(fam, "tracks_health", None)
    if tracks is not None and not tracks(record):
        return
    key = health.health_key(record.family, record.tenant_id, record.target_id)
    if gone:
        target_health.gone(key)
    elif success:
        target_health.succeeded(key)
    else:
        target_health.failed(key, lambda reason: fam.target_gone(record, reason))


def _notify_final(record: DeliveryModel) -> None:
    hook = getattr(registry.family(record.family), "on_final", None)
    if hook is not None:
        hook(record)


def _send(
    outbound: HttpOutbound | StreamOutbound, record: DeliveryModel, timeout: float
) -> tuple[str, AttemptResult]:
    allow_private = settings.allow_private_targets()
    if isinstance(outbound, HttpOutbound):
        result = senders.send_http(
            outbound, message_id=record.delivery_id, timeout=timeout, allow_private=allow_private
        )
        return outbound.url, result
    result = senders.send_stream(outbound, timeout=timeout, allow_private=allow_private)
    return f"{outbound.protocol}://{outbound.host}:{outbound.port}", result


def _record(
    record: DeliveryModel,
    token: str,
    attempt_no: int,
    url: str,
    result: AttemptResult,
    decision: Decision,
) -> None:
    now = utcnow()
    next_at = None
    if decision.status is Status.RETRYING and decision.delay_seconds is not None:
        next_at = fmt(now + timedelta(seconds=decision.delay_seconds))
    attempt = {
        "at": fmt(now),
        "url": redact_url(url),  # a key or password in the query never reaches the log
        "status_code": result.status_code,
        "error": result.error,
        "duration_ms": result.duration_ms,
    }
    if result.response_prefix:
        # Kept short: every write of the delivery pays for its size in write units.
        attempt["response"] = result.response_prefix[:RESPONSE_KEPT]
    next_due = time.time() + decision.delay_seconds if decision.delay_seconds is not None else None
    held = _record_with_retries(
        record,
        token=token,
        attempt_no=attempt_no,
        attempt=attempt,
        status=decision.status,
        now=fmt(now),
        next_attempt_at=next_at,
        next_due=next_due,
        failure_reason=decision.reason,
    )
    if not held:
        log.error(
            "delivery %s: lease lost before recording attempt %s", record.delivery_id, attempt_no
        )
        return
    if decision.status is Status.RETRYING and next_due is not None:
        queue.send_at(
            deliver_message(record.delivery_id, attempt_no + 1),
            next_due,
            f"{record.delivery_id}.{attempt_no + 1}",
        )


RECORD_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0)
"""Waits between tries of an attempt's record write (7.7 s in all, well inside the lease's
margin): the attempt was sent, so a transient AWS error must not make it look unsent."""


def _record_with_retries(record: DeliveryModel, **fields: Any) -> bool:
    for wait in (*RECORD_RETRY_DELAYS, None):
        try:
            return deliveries.record_attempt(record, **fields)
        except Exception:
            if wait is None:
                raise
            log.warning(
                "delivery %s: recording attempt %s failed; trying again in %.1f s",
                record.delivery_id,
                fields["attempt_no"],
                wait,
                exc_info=True,
            )
            time.sleep(wait)
    return False  # not reached: the last try returns or raises


def _schedule_next(record: DeliveryModel, attempt_no: int, next_at: str | None) -> None:
    """Recovery path: the previous attempt is recorded; make sure the next one is on its way."""
    due_at = time.time()
    if next_at:
        due_at = max(
            due_at, datetime.strptime(next_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
        )
    queue.send_at(
        deliver_message(record.delivery_id, attempt_no),
        due_at,
        f"{record.delivery_id}.{attempt_no}",
    )


def handle_dead_letter(message: dict[str, Any]) -> None:
    """SQS gave up on a message (the worker failed on it every time). The delivery is failed,
    visible in the API and replayable, but only when the attempt that message carried is still
    the delivery's current, unrecorded one and nobody holds a live lease on it: a stale message
    (its attempt was recorded since, or the delivery finished) changes nothing."""
    record = deliveries.get(str(message["delivery_id"]))
    if record is None or record.state in FINAL:
        return
    attempt_no = int(message.get("attempt", 0))
    if int(record.attempt_count) != attempt_no - 1:
        log.info(
            "stale dead letter for attempt %s of delivery %s (%s recorded): ignored",
            attempt_no,
            record.delivery_id,
            record.attempt_count,
        )
        return
    condition = (
        DeliveryModel.status.is_in(Status.PENDING.value, Status.RETRYING.value)
        & (DeliveryModel.attempt_count == attempt_no - 1)
        & (DeliveryModel.lease_until.does_not_exist() | (DeliveryModel.lease_until < time.time()))
    )
    reason = f"dead-lettered: the worker could not process attempt {attempt_no}"
    if deliveries.finish_if(record, Status.FAILED, reason, fmt(utcnow()), condition):
        record.status = Status.FAILED.value
        _notify_final(record)


registry.register_kind("deliver", handle_deliver, handle_dead_letter)
