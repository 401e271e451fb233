"""Per-target flow control: the pure rules (limits, validation, the bucket arithmetic).

A target (one registration of one family) may carry a rate limit (deliveries per second) and a
maximum number of concurrent deliveries. The storage layer (``chalicelib/storage/limiter.py``)
makes DynamoDB hold them across every Lambda; this module only computes.

The rate limit is a token bucket of capacity one, kept in the form of the generic cell rate
algorithm (GCRA): one number per target, the *theoretical arrival time* ``tat`` of the next
delivery. A delivery takes the slot ``max(tat, now)`` and moves ``tat`` one spacing further. A
bucket of capacity one never bursts, so a receiver limited to ``r`` per second never sees more
than ``r`` deliveries in any one-second window, not only in aligned ones (a bigger bucket would
let ``capacity + r`` through a window that straddles a refill).

The spacing is ``(1 + GUARD) / rate``: each window of the receiver's one second is given 20%
slack for what the limiter cannot see, i.e. the clocks of different Lambdas disagreeing and
the time between taking a slot and the request reaching the receiver. With exact ``1 / rate``
spacing, any jitter at all could put ``r + 1`` requests into some one-second window.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

GUARD = 0.2
"""Slack added to each spacing, as a fraction (see the module docstring): a receiver's one-second
window then holds at most ``rate`` deliveries as long as sends land within 0.2 s of their slots.
Measured on a loaded two-core machine, 0.1 (0.1 s) was not enough."""

LATE_TOLERANCE = 0.05
"""A delivery that reaches its reserved slot later than this (seconds) takes a new slot instead:
sending late would crowd the deliveries that hold the next slots. A quarter of the guard's 0.2 s;
the rest is for the send itself (connecting, a busy CPU)."""

SLEEP_LIMIT = 1.0
"""A slot at most this far ahead is waited for in place; further ones go back to the queue."""

PREWAKE = 0.5
"""A delivery that goes back to the queue is due this long before its slot: claiming it and
preparing the request again take time (and a poller may be busy), and a delivery that reached
its slot late would have to give it up. It sleeps off the rest in place (less than
``SLEEP_LIMIT``)."""


def requeue_at(slot: float, now: float) -> float:
    """When a delivery waiting for ``slot`` should come off the queue again."""
    return max(now, slot - PREWAKE)


MIN_RATE = 0.01
MAX_RATE = 1000.0
MAX_IN_FLIGHT = 1000


class LimitInvalid(ValueError):
    """A limit a client sent is out of range; ``field`` is the family-neutral field name
    (``rate_limit`` or ``max_in_flight``), which each family maps to its own spelling."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Limits:
    """A target's limits; ``None`` means unlimited."""

    rate: float | None = None
    max_in_flight: int | None = None

    @property
    def unlimited(self) -> bool:
        return self.rate is None and self.max_in_flight is None


UNLIMITED = Limits()


def effective(own: Limits | None, default: Limits) -> Limits:
    """Each limit the target carries wins; the stage default fills in the ones it does not."""
    own = own or UNLIMITED
    return Limits(
        rate=own.rate if own.rate is not None else default.rate,
        max_in_flight=own.max_in_flight if own.max_in_flight is not None else default.max_in_flight,
    )


def parse_rate(
    value: object, field: str = "rate_limit", *, allow_text: bool = False
) -> float | None:
    """A rate limit in deliveries per second, ``MIN_RATE`` to ``MAX_RATE``; ``None`` (absent)
    means no limit of the target's own. JSON bodies must send a number; query parameters
    (``allow_text``) are text by nature."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise LimitInvalid(field, f"{field} must be a number of deliveries per second")
    if isinstance(value, str) and allow_text:
        try:
            value = float(value.strip())
        except ValueError:
            raise LimitInvalid(
                field, f"{field} must be a number of deliveries per second"
            ) from None
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise LimitInvalid(field, f"{field} must be a number of deliveries per second")
    if not MIN_RATE <= float(value) <= MAX_RATE:
        raise LimitInvalid(field, f"{field} must be from {MIN_RATE:g} to {MAX_RATE:g} per second")
    return float(value)


def parse_max_in_flight(
    value: object, field: str = "max_in_flight", *, allow_text: bool = False
) -> int | None:
    """A concurrency limit: a whole number from 1 to ``MAX_IN_FLIGHT``; ``None`` when absent.
    Text (``"4"``) only where ``allow_text`` says the value comes from a query string."""
    if value is None:
        return None
    if isinstance(value, str) and allow_text:
        text = value.strip()
        if not text.isascii() or not text.isdigit():
            raise LimitInvalid(field, f"{field} must be a whole number from 1 to {MAX_IN_FLIGHT}")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int):
        raise LimitInvalid(field, f"{field} must be a whole number from 1 to {MAX_IN_FLIGHT}")
    if not 1 <= value <= MAX_IN_FLIGHT:
        raise LimitInvalid(field, f"{field} must be a whole number from 1 to {MAX_IN_FLIGHT}")
    return value


def spacing(rate: float) -> float:
    """Seconds between two slots of a target limited to ``rate`` per second."""
    return (1.0 + GUARD) / rate


def take_slot(tat: float | None, now: float, rate: float) -> tuple[float, float]:
    """GCRA with a bucket of one: ``(slot, new_tat)`` for a delivery arriving at ``now``.

    The storage layer does the same in DynamoDB (a conditional update per branch); this is the
    reference the unit tests and the bench check it against."""
    slot = now if tat is None or tat <= now else tat
    return slot, slot + spacing(rate)


def is_late(slot: float, now: float) -> bool:
    return now - slot > LATE_TOLERANCE


def slot_entry(token: str, expires_at: float) -> str:
    """An in-flight slot as stored: who holds it and until when, so that a slot whose worker
    crashed stops counting on its own (nothing else would ever give it back)."""
    return f"{token}|{expires_at:.3f}"


def expired_entries(entries: Iterable[str], now: float) -> set[str]:
    """The in-flight slots whose holder's lease has run out (malformed ones count as expired)."""
    out: set[str] = set()
    for entry in entries:
        _, _, until = entry.rpartition("|")
        try:
            if float(until) <= now:
                out.add(entry)
        except ValueError:
            out.add(entry)
    return out


CONTENT_KEY = "flow_limits"
"""Where a delivery's stored content carries its target's limits, copied from the registration
when the delivery is created, so that reading them at send time costs no AWS call."""


def to_content(limits: Limits) -> dict[str, object]:
    """The content entry for a target's limits; empty when it has none (content unchanged)."""
    if limits.unlimited:
        return {}
    return {CONTENT_KEY: {"rate_limit": limits.rate, "max_in_flight": limits.max_in_flight}}


def from_content(content: dict[str, object]) -> Limits | None:
    raw = content.get(CONTENT_KEY)
    if not isinstance(raw, dict):
        return None
    rate = raw.get("rate_limit")
    most = raw.get("max_in_flight")
    return Limits(
        rate=float(rate) if isinstance(rate, int | float) else None,
        max_in_flight=int(most) if isinstance(most, int) else None,
    )


def with_min_interval(own: Limits | None, min_seconds: float) -> Limits | None:
    """``own``, with the rate lowered so that slots are at least ``min_seconds`` apart, when
    that is stricter (the guard is part of the spacing, so the rate is ``(1 + GUARD) / min``)."""
    if min_seconds <= 0:
        return own
    floor = (1.0 + GUARD) / min_seconds
    own = own or UNLIMITED
    rate = floor if own.rate is None else min(own.rate, floor)
    return Limits(rate=rate, max_in_flight=own.max_in_flight)
