"""Tenant quotas in DynamoDB: counters changed in the same write as what they count, and the
events bucket (rules and defaults: ``domain/quotas.py``).

One small table, ``quotas``, one item per counter:

``<tenant>#reg#<family>``
    live registrations of a family. A create adds 1 in the SAME transaction as the record, on
    condition ``count < limit`` (``registration_slot``); a delete/end subtracts 1 in the same
    transaction as the delete (``release``). Registrations created before quotas existed were
    never counted: deleting one can take the count below the real number (never a refusal).
``<tenant>#pending``
    scheduled callbacks in a live state (scheduled/firing): +1 with the create's transaction,
    -1 in the same write that moves a callback to completed, failed or cancelled.
``<tenant>#events``
    the ``POST /events`` bucket (``domain.quotas.Bucket``): one conditional update per
    accepted request while the tenant is busy; a second one after an idle spell (or a change
    of its limit) and two more for a refused request. No read first.

A tenant's overrides live on its tenant item (``TenantModel.quotas``, JSON), read strongly
consistent, so a limit the operator raises applies to the very next request.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist, TransactWriteError, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.models import Model

from chalicelib.domain import quotas as rules
from chalicelib.domain.quotas import Limits
from chalicelib.storage import tenants
from chalicelib.storage.base import make_meta, update_if

_CONDITION_FAILED = "ConditionalCheckFailedException"


class QuotaModel(Model):
    Meta = make_meta("quotas")

    key = UnicodeAttribute(hash_key=True)
    used = NumberAttribute(null=True)  # counters (``count`` is a Model method)
    tat = NumberAttribute(null=True)  # the events bucket: theoretical arrival time, epoch ms
    rate = NumberAttribute(null=True)  # the events bucket: the limit it was filled for


class QuotaExceeded(Exception):
    """Over a limit: the family answers 429 with ``Retry-After: retry_after``."""

    def __init__(self, quota: str, limit: int, retry_after: int) -> None:
        super().__init__(f"quota {quota} exceeded (limit {limit})")
        self.quota = quota
        self.limit = limit
        self.retry_after = retry_after

    @property
    def message(self) -> str:
        if self.quota == rules.EVENTS:
            return f"more than {self.limit} events per second for this tenant; retry later"
        return f"this tenant's {self.quota} limit ({self.limit}) is reached"


def _key(tenant_id: str, name: str) -> str:
    return f"{tenant_id}#{name}"


def registration_counter(family: str) -> str:
    return f"reg#{family}"


PENDING_COUNTER = "pending"
EVENTS_BUCKET = "events"


# --------------------------------------------------------------------------- limits


def overrides_of(tenant: tenants.TenantModel | None) -> dict[str, Any]:
    if tenant is None or not tenant.quotas:
        return {}
    value = json.loads(tenant.quotas)
    return value if isinstance(value, dict) else {}


def stage_defaults() -> Limits:
    return rules.stage_defaults(os.environ)


def limits_for(tenant_id: str) -> Limits:
    """The limits in force for a tenant (one strongly consistent GetItem)."""
    tenant = tenants.get_tenant(tenant_id, consistent=True)
    return rules.apply(stage_defaults(), overrides_of(tenant))


class Contended(Exception):
    """Concurrent changes to one tenant's quotas; the client may retry."""


def set_overrides(tenant_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Apply a ``PUT`` body to the tenant's overrides (conditional on the overrides read, so
    two concurrent changes never lose one). Raises ``BadQuotas``, ``Contended``,
    ``DoesNotExist``."""
    for _ in range(5):
        tenant = tenants.get_tenant(tenant_id, consistent=True)
        if tenant is None:
            raise DoesNotExist()
        merged = rules.merge_change(overrides_of(tenant), body)
        seen = tenants.TenantModel.quotas
        condition = (
            tenants.TenantModel.tenant_id.exists() & seen.does_not_exist()
            if tenant.quotas is None
            else seen == tenant.quotas
        )
        try:
            tenants.TenantModel(tenant_id).update(
                actions=[seen.set(json.dumps(merged, sort_keys=True)) if merged else seen.remove()],
                condition=condition,
            )
        except UpdateError as exc:
            if exc.cause_response_code == _CONDITION_FAILED:
                continue
            raise
        return merged
    raise Contended(tenant_id)


def usage(tenant_id: str) -> dict[str, Any]:
    """What the counters say now (for the admin view)."""
    names = [registration_counter(f) for f in rules.REGISTRATION_FAMILIES] + [PENDING_COUNTER]
    counts: dict[str, int] = {}
    for item in QuotaModel.batch_get([_key(tenant_id, n) for n in names]):
        counts[item.key.split("#", 1)[1]] = max(0, int(item.used or 0))
    return {
        rules.REGISTRATIONS: {
            f: counts.get(registration_counter(f), 0) for f in rules.REGISTRATION_FAMILIES
        },
        rules.PENDING: counts.get(PENDING_COUNTER, 0),
    }


# --------------------------------------------------------------------------- counters

_T = TypeVar("_T")
_CONFLICT_ATTEMPTS = 8


def conflicted(exc: TransactWriteError) -> bool:
    """Cancelled because another transaction was writing one of the items at that moment (a
    tenant's counter is shared by all its creates): nothing was written, try again."""
    reasons = list(getattr(exc, "cancellation_reasons", None) or [])
    return any(getattr(r, "code", None) == "TransactionConflict" for r in reasons if r)


def retrying_conflicts(write: Callable[[], _T]) -> _T:
    """``write()`` (one transaction), again after a short random pause while it is cancelled
    by a concurrent transaction on the same items."""
    for attempt in range(_CONFLICT_ATTEMPTS):
        try:
            return write()
        except TransactWriteError as exc:
            if not conflicted(exc) or attempt == _CONFLICT_ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0, 0.01 * (attempt + 1)))
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class Slot:
    """One more of something counted: the update a create adds to its own transaction."""

    quota: str
    limit: int
    model: QuotaModel
    actions: list[Action]
    condition: Condition

    def exceeded(self) -> QuotaExceeded:
        return QuotaExceeded(self.quota, self.limit, rules.COUNT_RETRY_AFTER)


def _slot(tenant_id: str, counter: str, quota: str, limit: int) -> Slot:
    if limit <= 0:  # nothing may be created: refuse without writing
        raise QuotaExceeded(quota, limit, rules.COUNT_RETRY_AFTER)
    return Slot(
        quota,
        limit,
        QuotaModel(_key(tenant_id, counter)),
        [QuotaModel.used.add(1)],
        QuotaModel.used.does_not_exist() | (QuotaModel.used < limit),
    )


def registration_slot(tenant_id: str, family: str) -> Slot:
    """For a create of ``family``; raises ``QuotaExceeded`` at once when the limit is 0."""
    limit = limits_for(tenant_id).registration_limit(family)
    quota = f"{rules.REGISTRATIONS}.{family}"
    return _slot(tenant_id, registration_counter(family), quota, limit)


def pending_slot(tenant_id: str) -> Slot:
    """For a scheduled callback create."""
    limit = limits_for(tenant_id).scheduled_pending
    return _slot(tenant_id, PENDING_COUNTER, rules.PENDING, limit)


@dataclass(frozen=True)
class Release:
    """One fewer: the update a delete (or a final state) adds to its own transaction."""

    model: QuotaModel
    actions: list[Action]


def release_registration(tenant_id: str, family: str) -> Release:
    return Release(
        QuotaModel(_key(tenant_id, registration_counter(family))), [QuotaModel.used.add(-1)]
    )


def release_pending(tenant_id: str) -> Release:
    return Release(QuotaModel(_key(tenant_id, PENDING_COUNTER)), [QuotaModel.used.add(-1)])


# --------------------------------------------------------------------------- events bucket


_clock = time.time  # seconds; tests replace it


_last_tat: dict[str, float] = {}
"""The ``tat`` this process last wrote per tenant: a hint for which branch to try first (a
wrong guess costs one failed conditional write, never a wrong answer)."""


def events_refusal(tenant_id: str) -> QuotaExceeded:
    """The refusal for the events of a batch past what the tenant's bucket held."""
    rate = limits_for(tenant_id).events_per_second
    return QuotaExceeded(rules.EVENTS, rate, rules.Bucket.for_rate(max(rate, 1)).retry_after())


def admit_event(tenant_id: str) -> None:
    """Take one token from the tenant's events bucket, or raise ``QuotaExceeded``."""
    admit_events(tenant_id, 1)


def admit_events(tenant_id: str, wanted: int) -> int:
    """Take up to ``wanted`` tokens from the tenant's events bucket at once (a batch of events
    in one request costs one update, not one per event); returns how many were taken, at least
    1, or raises ``QuotaExceeded`` when none is left. Called before the events are accepted, so
    a refused event leaves nothing behind.

    The bucket remembers the rate it was filled for: when the operator changes the limit, the
    next request starts a full bucket at the new rate (a raised limit lets it through at once).
    """
    rate = limits_for(tenant_id).events_per_second
    if rate <= 0:
        raise QuotaExceeded(rules.EVENTS, rate, rules.COUNT_RETRY_AFTER)
    bucket = rules.Bucket.for_rate(rate)
    count = max(1, min(wanted, rules.Bucket.burst_of(rate)))
    now = _clock() * 1000
    # (half a millisecond of slack on top, so float rounding never costs the last token)
    low, high = now - bucket.lag, now + bucket.lag + 0.5
    item = QuotaModel(_key(tenant_id, EVENTS_BUCKET))
    take: tuple[list[Action], Condition] = (
        [QuotaModel.tat.add(count * bucket.interval)],
        QuotaModel.tat.between(low, high - (count - 1) * bucket.interval)
        & (QuotaModel.rate == rate),
    )
    refill: tuple[list[Action], Condition] = (
        [QuotaModel.tat.set(low + count * bucket.interval), QuotaModel.rate.set(rate)],
        QuotaModel.tat.does_not_exist() | (QuotaModel.tat < low) | (QuotaModel.rate != rate),
    )
    # busy tenant: the take decides; idle (or a new limit): the refill; a refill lost to a
    # concurrent one: take again from the bucket it refilled. The order follows what this
    # process last wrote, so an idle tenant does not pay a failed take per request.
    known = _last_tat.get(tenant_id)
    branches = (refill, take) if known is not None and known < low else (take, refill, take)
    for actions, condition in branches:
        if update_if(item, actions, condition):
            if actions is refill[0]:
                _last_tat[tenant_id] = low + count * bucket.interval
            elif known is not None:
                _last_tat[tenant_id] = known + count * bucket.interval
            return count
    if count > 1:  # not all of them fit: take what does (conditional on what was read)
        taken = _take_what_fits(tenant_id, item, bucket, rate, count, high)
        if taken:
            return taken
    raise QuotaExceeded(rules.EVENTS, rate, bucket.retry_after())


def _take_what_fits(
    tenant_id: str, item: QuotaModel, bucket: rules.Bucket, rate: int, count: int, high: float
) -> int:
    """Some of a batch: read the bucket and take the tokens left in it, on condition that
    nobody moved it since (three tries). 0 when none is left."""
    for _ in range(3):
        try:
            item.refresh(consistent_read=True)
        except DoesNotExist:
            return 0
        if item.tat is None or item.rate != rate:
            return 0
        seen = float(item.tat)
        fits = min(count, int((high - seen) // bucket.interval) + 1) if seen <= high else 0
        if fits <= 0:
            return 0
        if update_if(
            item,
            [QuotaModel.tat.set(seen + fits * bucket.interval)],
            (QuotaModel.tat == item.tat) & (QuotaModel.rate == rate),
        ):
            _last_tat[tenant_id] = seen + fits * bucket.interval
            return fits
    return 0
