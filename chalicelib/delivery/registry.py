"""How API families plug into the delivery engine.

A family (campaign registrations, notification callbacks, callnotify, scheduled callbacks) tells
the engine two things: which of its targets an event reaches (``match``, a Query, never a Scan)
and what one attempt of a delivery sends (``prepare``). The engine owns everything else: delivery
records, leases, retries, backup URLs, signatures, the attempts log and dead letters.

Work messages on the queue have a ``kind``; ``deliver`` is the engine's own, and families may add
more (the scheduler's ``fire``), each with a handler for dead-lettered messages of that kind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from chalicelib.domain.flow import Limits
from chalicelib.storage.deliveries import DeliveryModel


@dataclass(frozen=True)
class PublishedEvent:
    event_id: str
    tenant_id: str
    event_type: str
    received_at: str
    payload: dict[str, Any]
    campaign_id: str | None = None
    selection: str | None = None
    test: bool = False

    def as_content(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "received_at": self.received_at,
            "campaign_id": self.campaign_id,
            "selection": self.selection,
            "payload": self.payload,
            "test": self.test,
        }


@dataclass(frozen=True)
class Target:
    """One receiver an event reaches. ``content`` is merged into the delivery's stored content."""

    family: str
    target_id: str
    target: str
    content: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HttpOutbound:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None
    params: list[tuple[str, str]] | None = None
    signing_secrets: tuple[str, ...] = ()


@dataclass(frozen=True)
class StreamOutbound:
    protocol: str  # "tcp" | "udp"
    host: str
    port: int
    payload: bytes


@dataclass(frozen=True)
class Skip:
    """Nothing to send (the target was deleted or disabled): the delivery ends ``skipped``."""

    reason: str


Outbound = HttpOutbound | StreamOutbound | Skip


class Family(Protocol):
    name: str

    def match(self, event: PublishedEvent) -> Sequence[Target]: ...

    def prepare(self, delivery: DeliveryModel, attempt_no: int, use_backup: bool) -> Outbound: ...

    def target_gone(self, delivery: DeliveryModel, reason: str) -> None: ...


@runtime_checkable
class BufferingFamily(Family, Protocol):
    """A family that batches: events are buffered durably (``buffer`` returns how many targets
    took the event) and the family creates batch deliveries itself, later."""

    def buffer(self, event: PublishedEvent) -> int: ...


class HealthAware(Protocol):
    """A family whose targets are not all worth dead-target bookkeeping (the scheduler's one-time
    callbacks have no later delivery to protect). Families without the hook track every target."""

    def tracks_health(self, delivery: DeliveryModel) -> bool: ...


class FinalAware(Protocol):
    """A family that wants to know when one of its deliveries reached a final status (the
    scheduler chains ``immediate`` repeats on it). Called at least once per final delivery, so it
    must be idempotent."""

    def on_final(self, delivery: DeliveryModel) -> None: ...


class FlowAware(Protocol):
    """A family whose targets may carry flow-control limits (a rate and a maximum in flight).

    Called for every attempt just before it is sent, so it must not call AWS: families copy the
    registration's limits into the delivery's content when they create it (see
    ``chalicelib.domain.flow.to_content``). ``None`` means the target carries none, and the
    stage defaults apply. Families without the hook get the stage defaults."""

    def limits(self, delivery: DeliveryModel) -> Limits | None: ...


_families: dict[str, Family] = {}

WorkHandler = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Kind:
    handle: WorkHandler
    dead_letter: WorkHandler


_kinds: dict[str, Kind] = {}


def register_family(family: Family) -> None:
    _families[family.name] = family


def family(name: str) -> Family:
    return _families[name]


def families() -> list[Family]:
    return list(_families.values())


EventValidator = Callable[[str, str | None, dict[str, Any]], None]
"""(event_type, selection, payload): raises ValueError("<field>: <why>") for an event its family
cannot deliver, so the publisher gets a 400 instead of a dead letter."""

_validators: list[EventValidator] = []


def register_event_validator(validator: EventValidator) -> None:
    _validators.append(validator)


def validate_event(event_type: str, selection: str | None, payload: dict[str, Any]) -> None:
    for validator in _validators:
        validator(event_type, selection, payload)


def register_kind(name: str, handle: WorkHandler, dead_letter: WorkHandler) -> None:
    _kinds[name] = Kind(handle, dead_letter)


def kind(name: str) -> Kind:
    return _kinds[name]
