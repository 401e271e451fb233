"""When to try again, and when to stop.

The schedule lists the seconds to wait before attempts 2, 3, ...; after the last entry the
delivery is dead-lettered (``failed``). Each wait is jittered by ±20 % so that a receiver coming
back from an outage is not hit by every queued delivery in the same second. A ``Retry-After`` on
429/503 is honoured, but only within 1-2x the scheduled wait: a receiver may slow us down, not
park a delivery for a day or make us hammer it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

JITTER = 0.2
BACKUP_AFTER_ATTEMPTS = 3


class Status(StrEnum):
    PENDING = "pending"
    RETRYING = "retrying"
    DELIVERED = "delivered"
    FAILED = "failed"
    SKIPPED = "skipped"


FINAL = frozenset({Status.DELIVERED, Status.FAILED, Status.SKIPPED})


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt saw. ``status_code`` is None when no HTTP response came back.

    ``response_prefix`` is the start of the receiver's answer (at most 4 KiB of an HTTP body,
    decoded leniently; a TCP peer's first bytes), for the attempts log; None when there was none.
    """

    success: bool
    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None
    duration_ms: int = 0
    response_prefix: str | None = None


@dataclass(frozen=True)
class Decision:
    status: Status
    delay_seconds: float | None = None  # before the next attempt, when retrying
    reason: str | None = None  # why it stopped, when failed
    target_gone: bool = False


def use_backup(attempt_no: int) -> bool:
    """Attempts after the third unsuccessful one at the primary URL go to the backup URL."""
    return attempt_no > BACKUP_AFTER_ATTEMPTS


def jittered(seconds: float, rng: random.Random | None = None) -> float:
    factor = 1 + (rng or random).uniform(-JITTER, JITTER)
    return max(0.0, seconds * factor)


def decide(
    result: AttemptResult,
    attempt_no: int,
    schedule: tuple[int, ...],
    rng: random.Random | None = None,
) -> Decision:
    """The outcome of attempt ``attempt_no`` (1-based) under ``schedule``."""
    if result.success:
        return Decision(Status.DELIVERED)
    if result.status_code == 410:
        return Decision(Status.FAILED, reason="receiver answered 410 Gone", target_gone=True)
    if attempt_no > len(schedule):
        return Decision(Status.FAILED, reason=f"gave up after {attempt_no} attempts")
    base = float(schedule[attempt_no - 1])
    delay = jittered(base, rng)
    if result.retry_after is not None and result.status_code in (429, 503):
        delay = min(max(result.retry_after, base), 2 * base)
    return Decision(Status.RETRYING, delay_seconds=delay)


def parse_retry_after(value: str | None, now_epoch: float) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - now_epoch)
