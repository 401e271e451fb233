"""Per-target flow control in DynamoDB: a rate bucket and an in-flight counter per target.

Both live in the guards table (keys ``flow-rate#...`` and ``flow-inflight#...``) so that no new
table is needed; a separate model names only the attributes they use. Every change is one
conditional UpdateItem, never a read followed by a write, so any number of Lambdas share them:

- ``take_slot``: the GCRA bucket of ``chalicelib.domain.flow``. DynamoDB has no ``max()`` in
  update expressions, so the two branches of ``slot = max(tat, now)`` are two conditional
  updates: "idle" (``tat <= now``: slot now, ``tat = now + spacing``) and "busy"
  (``tat > now``: ``ADD tat spacing``, the slot is the old ``tat``). The branch this process saw
  last for the target is tried first, so a backlogged target costs one call per delivery.
- ``acquire``/``release``: the in-flight slots are a string set of ``token|expires`` entries. A
  slot is added only while the set holds fewer than the maximum (``size()`` in the condition) and
  removed when the attempt finishes. A worker that dies holding one cannot leak it: when the set
  is full, expired entries are deleted and the add is tried once more (a process looks at most
  every ``SWEEP_EVERY`` seconds per target: the look is a read).

Items carry ``expires_at`` (the guards table's TTL attribute), so idle targets disappear.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from pynamodb.attributes import NumberAttribute, UnicodeAttribute, UnicodeSetAttribute
from pynamodb.exceptions import DoesNotExist, UpdateError
from pynamodb.expressions.condition import size
from pynamodb.models import Model

from chalicelib.domain import flow
from chalicelib.domain.ids import new_id
from chalicelib.storage.base import make_meta

KEEP_SECONDS = 86400.0
"""How long an idle bucket or counter is kept after its last use (TTL)."""

_BRANCH_TRIES = 4

SWEEP_EVERY = 5.0
"""A process looks for expired in-flight slots of one target at most this often (seconds): the
look is a read, and a full target is usually full of live slots. A dead worker's slot is still
freed within its hold time plus this."""


class FlowModel(Model):
    """Limiter items in the guards table (the table itself is created from ``GuardModel``)."""

    Meta = make_meta("guards")

    key = UnicodeAttribute(hash_key=True)
    tat = NumberAttribute(null=True)  # rate bucket: the next free slot, epoch seconds
    slots = UnicodeSetAttribute(null=True)  # in-flight: "token|expires" entries
    expires_at = NumberAttribute(null=True)  # TTL


def rate_key(family: str, tenant_id: str, target_id: str) -> str:
    return f"flow-rate#{family}#{tenant_id}#{target_id}"


def inflight_key(family: str, tenant_id: str, target_id: str) -> str:
    return f"flow-inflight#{family}#{tenant_id}#{target_id}"


def _failed_condition(exc: UpdateError) -> bool:
    return exc.cause_response_code == "ConditionalCheckFailedException"


_busy_hint: dict[str, bool] = {}
_last_sweep: dict[str, float] = {}
_hint_lock = threading.Lock()


def _idle(key: str, now: float, step: float) -> float | None:
    item = FlowModel(key)
    try:
        item.update(
            actions=[
                FlowModel.tat.set(now + step),
                FlowModel.expires_at.set(now + step + KEEP_SECONDS),
            ],
            condition=FlowModel.tat.does_not_exist() | (FlowModel.tat <= now),
        )
    except UpdateError as exc:
        if _failed_condition(exc):
            return None
        raise
    return now


def _busy(key: str, now: float, step: float) -> float | None:
    item = FlowModel(key)
    try:
        item.update(
            actions=[
                FlowModel.tat.add(step),
                FlowModel.expires_at.set(FlowModel.tat + (step + KEEP_SECONDS)),
            ],
            condition=FlowModel.tat > now,
        )
    except UpdateError as exc:
        if _failed_condition(exc):
            return None
        raise
    return float(item.tat) - step


def take_slot(key: str, rate: float, now: float) -> float:
    """Reserve this target's next slot (epoch seconds, ``>= now``) for one delivery."""
    step = flow.spacing(rate)
    with _hint_lock:
        busy_first = _busy_hint.get(key, False)
    branches = (_busy, _idle) if busy_first else (_idle, _busy)
    for _ in range(_BRANCH_TRIES):
        for branch in branches:
            slot = branch(key, now, step)
            if slot is not None:
                with _hint_lock:
                    _busy_hint[key] = slot > now
                return slot
    # The bucket flipped between idle and busy under us every time: extremely unlikely; the
    # busy branch alone is always safe (it only ever moves the next slot later).
    item = FlowModel(key)
    item.update(actions=[FlowModel.tat.add(step)])
    return max(now, float(item.tat) - step)


def acquire(key: str, limit: int, hold_seconds: float, now: float) -> str | None:
    """One in-flight slot, held for at most ``hold_seconds``; None when all are taken."""
    entry = flow.slot_entry(new_id(), now + hold_seconds)
    for sweep in (True, False):
        try:
            FlowModel(key).update(
                actions=[
                    FlowModel.slots.add({entry}),
                    FlowModel.expires_at.set(now + hold_seconds + KEEP_SECONDS),
                ],
                condition=FlowModel.slots.does_not_exist() | (size(FlowModel.slots) < limit),
            )
            return entry
        except UpdateError as exc:
            if not _failed_condition(exc):
                raise
        if not sweep or not _sweep_due(key, now) or not _drop_expired(key, now):
            return None
    return None


def _sweep_due(key: str, now: float) -> bool:
    with _hint_lock:
        if now - _last_sweep.get(key, float("-inf")) < SWEEP_EVERY:
            return False
        _last_sweep[key] = now
        return True


def _drop_expired(key: str, now: float) -> bool:
    """Delete the slots whose holders' time ran out; True when there were any."""
    try:
        item = FlowModel.get(key, consistent_read=True)
    except DoesNotExist:
        return True
    stale = flow.expired_entries(item.slots or (), now)
    if not stale:
        return False
    _delete(key, stale)
    return True


def release(key: str, entry: str) -> None:
    _delete(key, [entry])


def _delete(key: str, entries: Iterable[str]) -> None:
    """DELETE from a set is idempotent (absent entries are ignored), so no condition."""
    FlowModel(key).update(actions=[FlowModel.slots.delete(set(entries))])
