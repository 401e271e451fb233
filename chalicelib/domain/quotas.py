"""Tenant quotas: what is limited, the stage defaults, and the rules of the events bucket.

Three kinds of limit, each per tenant, each with a stage default that the operator (ADMIN) can
override per tenant (``PUT /admin/tenants/{tenant_id}/quotas``):

``registrations``
    Live registrations per family: campaign callback registrations (ended ones do not count),
    notification callbacks, callnotify notifiers. Default ``RINGBACK_QUOTA_REGISTRATIONS``
    (1000), for each family.
``events_per_second``
    ``POST /events`` requests accepted per second (a token bucket refilled at this rate, holding
    at most one second's worth). Default ``RINGBACK_QUOTA_EVENTS_PER_SECOND`` (100).
``scheduled_pending``
    Scheduled callbacks not yet in a final state (scheduled or firing). Default
    ``RINGBACK_QUOTA_SCHEDULED_PENDING`` (10000). The scheduled family's registrations *are* its
    callbacks, so this is that family's registration limit.

Over a limit a request is refused before anything is written: ``429`` with ``Retry-After``, in
the family's own error body. A request that was accepted is never undone by a quota.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

REGISTRATION_FAMILIES = ("campaign", "notification", "callnotify")
EVENTS = "events_per_second"
PENDING = "scheduled_pending"
REGISTRATIONS = "registrations"
MAX_LIMIT = 1_000_000_000

DEFAULTS = {REGISTRATIONS: 1000, EVENTS: 100, PENDING: 10000}
ENV = {
    REGISTRATIONS: "RINGBACK_QUOTA_REGISTRATIONS",
    EVENTS: "RINGBACK_QUOTA_EVENTS_PER_SECOND",
    PENDING: "RINGBACK_QUOTA_SCHEDULED_PENDING",
}
COUNT_RETRY_AFTER = 60
"""``Retry-After`` for a count limit: nothing frees a slot by itself (a delete, a callback that
finishes, or a raised limit does), so this only paces a client that retries blindly."""


class BadQuotas(ValueError):
    """A quota change the API refuses; ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Limits:
    registrations: dict[str, int] = field(default_factory=dict)
    events_per_second: int = DEFAULTS[EVENTS]
    scheduled_pending: int = DEFAULTS[PENDING]

    def registration_limit(self, family: str) -> int:
        return self.registrations.get(family, DEFAULTS[REGISTRATIONS])

    def view(self) -> dict[str, Any]:
        return {
            REGISTRATIONS: {f: self.registration_limit(f) for f in REGISTRATION_FAMILIES},
            EVENTS: self.events_per_second,
            PENDING: self.scheduled_pending,
        }


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LIMIT:
        raise BadQuotas(name, f"{name} must be an integer from 0 to {MAX_LIMIT}")
    return value


def stage_defaults(env: Mapping[str, str]) -> Limits:
    """The stage's limits from its environment (a bad value falls back to the default: a
    typo in a stage setting must not take the API down)."""

    def read(name: str) -> int:
        raw = env.get(ENV[name], "").strip()
        try:
            return _count(name, int(raw)) if raw else DEFAULTS[name]
        except (ValueError, BadQuotas):
            return DEFAULTS[name]

    per_family = read(REGISTRATIONS)
    return Limits(
        registrations=dict.fromkeys(REGISTRATION_FAMILIES, per_family),
        events_per_second=read(EVENTS),
        scheduled_pending=read(PENDING),
    )


def apply(defaults: Limits, overrides: Mapping[str, Any]) -> Limits:
    """The limits in force: the stage defaults, with a tenant's overrides on top."""
    registrations = dict(defaults.registrations)
    registrations.update(overrides.get(REGISTRATIONS) or {})
    limits = replace(defaults, registrations=registrations)
    if overrides.get(EVENTS) is not None:
        limits = replace(limits, events_per_second=int(overrides[EVENTS]))
    if overrides.get(PENDING) is not None:
        limits = replace(limits, scheduled_pending=int(overrides[PENDING]))
    return limits


def merge_change(current: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
    """A tenant's overrides after a ``PUT`` body: the fields given replace the tenant's, a
    ``null`` puts that limit back to the stage default, fields not given stay. Raises
    ``BadQuotas``."""
    unknown = set(body) - {REGISTRATIONS, EVENTS, PENDING}
    if unknown:
        name = sorted(unknown)[0]
        raise BadQuotas(name, f"unknown quota {name}: use {REGISTRATIONS}, {EVENTS}, {PENDING}")
    merged: dict[str, Any] = {
        REGISTRATIONS: dict(current.get(REGISTRATIONS) or {}),
        EVENTS: current.get(EVENTS),
        PENDING: current.get(PENDING),
    }
    if REGISTRATIONS in body:
        given = body[REGISTRATIONS]
        if given is None:
            merged[REGISTRATIONS] = {}
        elif not isinstance(given, dict):
            raise BadQuotas(REGISTRATIONS, f"{REGISTRATIONS} must be an object of family: limit")
        else:
            for family, value in given.items():
                name = f"{REGISTRATIONS}.{family}"
                if family not in REGISTRATION_FAMILIES:
                    families = ", ".join(REGISTRATION_FAMILIES)
                    raise BadQuotas(name, f"unknown family {family!r}: use {families}")
                if value is None:
                    merged[REGISTRATIONS].pop(family, None)
                else:
                    merged[REGISTRATIONS][family] = _count(name, value)
    for name in (EVENTS, PENDING):
        if name in body:
            merged[name] = None if body[name] is None else _count(name, body[name])
    return {k: v for k, v in merged.items() if v not in (None, {})}


# --------------------------------------------------------------------------- events bucket


@dataclass(frozen=True)
class Bucket:
    """The events bucket as a GCRA ("virtual scheduling") window, in milliseconds.

    One number per tenant, ``tat`` (theoretical arrival time): each accepted request moves it
    ``interval`` ms on. A request at ``now`` is accepted by one conditional update
    ``tat += interval`` when ``now - lag <= tat <= now + lag``: the bucket holds ``burst``
    tokens (one second's worth)
    centred on now, so DynamoDB itself decides, with no read first. A tenant idle for longer
    than ``lag`` has a ``tat`` in the past: a second conditional update resets it to
    ``now - lag + interval`` (a full bucket, minus this request).
    """

    interval: float  # ms between requests at the sustained rate
    lag: float  # ms either side of now the window allows

    @staticmethod
    def burst_of(per_second: int) -> int:
        """Tokens a full bucket holds: the most one request may take at once."""
        return max(1, per_second)

    @classmethod
    def for_rate(cls, per_second: int) -> Bucket:
        interval = 1000.0 / per_second
        burst = cls.burst_of(per_second)
        return cls(interval=interval, lag=(burst - 1) * interval / 2)

    def retry_after(self) -> int:
        """Whole seconds until a token is certainly back."""
        return max(1, math.ceil(self.interval / 1000.0))
