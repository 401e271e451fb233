"""Flow control in the delivery engine: whether an attempt may go now, and what it holds.

The dispatcher asks :func:`admit` after the family prepared the request and before it is sent.
The family tells the engine the target's limits through its optional ``limits`` hook (see
:class:`chalicelib.delivery.registry.FlowAware`); the stage defaults fill in what it does not
say. A target with no limit at all costs no AWS call here.

An attempt over a limit waits: it goes back to the queue for later, with the same attempt number,
so it is never dropped, never counted as a failed attempt and never dead-lettered for waiting.
A rate-limited attempt takes its slot before it waits and carries the slot in the message, so a
backlog is served in order, one bucket update per delivery, without a thundering herd.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

from chalicelib import settings
from chalicelib.delivery import queue, registry
from chalicelib.domain import flow
from chalicelib.domain.flow import Limits
from chalicelib.storage import limiter
from chalicelib.storage.deliveries import DeliveryModel

log = logging.getLogger("ringback.flow")

SLOT_FIELD = "flow_slot"
"""The work message field carrying a slot already reserved for this attempt."""

FULL_RETRY_SECONDS = 1.0
"""How long an attempt waits when all of its target's in-flight slots are taken (plus jitter)."""


def stage_defaults() -> Limits:
    return Limits(settings.default_rate_limit(), settings.default_max_in_flight())


def limits_of(fam: registry.Family, record: DeliveryModel) -> Limits:
    hook = getattr(fam, "limits", None)
    own = hook(record) if hook is not None else None
    return flow.effective(own, stage_defaults())


@dataclass
class Gate:
    """What :func:`admit` decided. ``wait_until`` set: the attempt must wait (re-queue it with
    :func:`requeue`). Otherwise send, then :meth:`release` whatever it holds."""

    wait_until: float | None = None
    slot: float | None = None
    _inflight: tuple[str, str] | None = field(default=None, repr=False)

    @property
    def admitted(self) -> bool:
        return self.wait_until is None

    def release(self) -> None:
        """Best effort: it runs after the send and before the attempt is recorded, so failing
        here must not lose the record (and resend); a slot not given back expires by itself."""
        if self._inflight is not None:
            key, entry = self._inflight
            self._inflight = None
            try:
                limiter.release(key, entry)
            except Exception:
                log.exception("in-flight slot of %s not given back; it expires by itself", key)


LATE_RETAKES = 3
"""How often an attempt whose sleep overran its slot takes a new one before sending anyway."""


def admit(
    fam: registry.Family,
    record: DeliveryModel,
    reserved_slot: Any,
    hold_seconds: float,
) -> Gate:
    """Rate first (take or honour a slot), then the in-flight maximum."""
    limits = limits_of(fam, record)
    if limits.unlimited:
        return Gate()
    ids = (record.family, record.tenant_id, record.target_id)
    if limits.rate is not None:
        slot = float(reserved_slot) if isinstance(reserved_slot, int | float) else None
        for _ in range(LATE_RETAKES):
            now = time.time()
            if slot is None or flow.is_late(slot, now):
                slot = limiter.take_slot(limiter.rate_key(*ids), limits.rate, now)
            if slot - now > flow.SLEEP_LIMIT:
                return Gate(wait_until=slot, slot=slot)
            if slot > now:
                time.sleep(slot - now)
            if not flow.is_late(slot, time.time()):
                break
            # The sleep overran (a busy CPU): sending now would crowd the next slots' holders.
    if limits.max_in_flight is not None:
        key = limiter.inflight_key(*ids)
        entry = limiter.acquire(key, limits.max_in_flight, hold_seconds, time.time())
        if entry is None:
            return Gate(wait_until=time.time() + FULL_RETRY_SECONDS + random.uniform(0, 1))
        return Gate(_inflight=(key, entry))
    return Gate()


def requeue(message: dict[str, Any], gate: Gate) -> None:
    """Put the attempt back on the queue until its turn (same attempt number, nothing recorded)."""
    assert gate.wait_until is not None
    waiting = {k: v for k, v in message.items() if k not in ("due_at", SLOT_FIELD)}
    if gate.slot is not None:
        waiting[SLOT_FIELD] = gate.slot
    item_id = f"{waiting.get('delivery_id')}.{waiting.get('attempt')}.flow.{gate.wait_until:.3f}"
    now = time.time()
    log.info(
        "over its target's limit: waits %.1fs",
        gate.wait_until - now,
        extra={"delivery_id": waiting.get("delivery_id")},
    )
    due_at = flow.requeue_at(gate.slot, now) if gate.slot is not None else gate.wait_until
    queue.send_at(waiting, due_at, item_id)
