"""Events, deliveries and their attempts log.

A delivery is one (event, target) pair: one request to one receiver, retried until it succeeds
or is dead-lettered. Its state only moves through conditional updates:

- ``claim``: take a lease for attempt N, only if attempt N-1 is the last one recorded, the
  delivery is not final, and nobody else holds an unexpired lease;
- ``record``: append attempt N and move the status, only while still holding that lease.

So however often SQS hands out a message, an attempt is sent at most once per lease and never
again after a recorded success.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pynamodb.attributes import (
    BooleanAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
)
from pynamodb.exceptions import DoesNotExist, PutError, UpdateError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from chalicelib.domain.ids import new_id
from chalicelib.domain.retry import FINAL, Status
from chalicelib.storage.base import make_meta


class EventModel(Model):
    Meta = make_meta("events")

    event_id = UnicodeAttribute(hash_key=True)
    tenant_id = UnicodeAttribute()
    event_type = UnicodeAttribute()
    received_at = UnicodeAttribute()
    campaign_id = UnicodeAttribute(null=True)
    selection = UnicodeAttribute(null=True)
    payload = UnicodeAttribute()  # JSON
    test = BooleanAttribute(default=False)
    delivery_ids: ListAttribute[str] = ListAttribute(of=UnicodeAttribute, default=list)  # type: ignore[arg-type]
    fanned_out = BooleanAttribute(default=False)


class AttemptMap(MapAttribute[str, Any]):
    at = UnicodeAttribute()
    url = UnicodeAttribute()
    status_code = NumberAttribute(null=True)
    error = UnicodeAttribute(null=True)
    duration_ms = NumberAttribute()


class ByTenantStatus(GlobalSecondaryIndex["DeliveryModel"]):
    """Replay and dead-letter listing: a tenant's deliveries in one status, by creation time."""

    class Meta:
        index_name = "by_tenant_status"
        projection = AllProjection()

    tenant_status = UnicodeAttribute(hash_key=True)
    created_at = UnicodeAttribute(range_key=True)


class DeliveryModel(Model):
    Meta = make_meta("deliveries")

    delivery_id = UnicodeAttribute(hash_key=True)
    tenant_id = UnicodeAttribute()
    event_id = UnicodeAttribute()
    family = UnicodeAttribute()
    target_id = UnicodeAttribute()
    target = UnicodeAttribute()  # the primary destination, as shown to users
    content = UnicodeAttribute()  # JSON the family renders the request from
    status = UnicodeAttribute(default=Status.PENDING.value)
    tenant_status = UnicodeAttribute()
    attempt_count = NumberAttribute(default=0)
    attempts = ListAttribute(of=AttemptMap, default=list)  # type: ignore[arg-type]
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()
    next_attempt_at = UnicodeAttribute(null=True)
    failure_reason = UnicodeAttribute(null=True)
    replay_of = UnicodeAttribute(null=True)
    replayed_by = UnicodeAttribute(null=True)
    lease_token = UnicodeAttribute(null=True)
    lease_until = NumberAttribute(null=True)

    by_tenant_status = ByTenantStatus()

    @property
    def state(self) -> Status:
        return Status(self.status)


def tenant_status(tenant_id: str, status: Status) -> str:
    return f"{tenant_id}#{status.value}"


@dataclass(frozen=True)
class NewDelivery:
    delivery_id: str
    tenant_id: str
    event_id: str
    family: str
    target_id: str
    target: str
    content: dict[str, Any]


def build(new: NewDelivery, now: str, *, replay_of: str | None = None) -> DeliveryModel:
    return DeliveryModel(
        new.delivery_id,
        tenant_id=new.tenant_id,
        event_id=new.event_id,
        family=new.family,
        target_id=new.target_id,
        target=new.target,
        content=json.dumps(new.content, separators=(",", ":"), sort_keys=True),
        status=Status.PENDING.value,
        tenant_status=tenant_status(new.tenant_id, Status.PENDING),
        attempt_count=0,
        attempts=[],
        created_at=now,
        updated_at=now,
        replay_of=replay_of,
    )


def write_new(records: Sequence[DeliveryModel]) -> None:
    """Batch-write fresh deliveries (ids are new, so there is nothing to overwrite)."""
    with DeliveryModel.batch_write() as batch:
        for record in records:
            batch.save(record)


def write_if_absent(record: DeliveryModel) -> bool:
    """Conditional put, for resumed fan-outs where some deliveries may already exist."""
    try:
        record.save(condition=DeliveryModel.delivery_id.does_not_exist())
    except PutError as exc:
        if exc.cause_response_code == "ConditionalCheckFailedException":
            return False
        raise
    return True


def mark_replayed(record: DeliveryModel, replay_id: str) -> None:
    record.update(actions=[DeliveryModel.replayed_by.set(replay_id)])


def get(delivery_id: str, *, consistent: bool = True) -> DeliveryModel | None:
    try:
        return DeliveryModel.get(delivery_id, consistent_read=consistent)
    except DoesNotExist:
        return None


def get_many(delivery_ids: Iterable[str]) -> dict[str, DeliveryModel]:
    ids = list(dict.fromkeys(delivery_ids))
    found: dict[str, DeliveryModel] = {}
    for start in range(0, len(ids), 100):
        for record in DeliveryModel.batch_get(ids[start : start + 100]):
            found[record.delivery_id] = record
    return found


def claim(record: DeliveryModel, attempt_no: int, lease_seconds: float) -> str | None:
    """Take the lease for ``attempt_no``; None when another worker has it or it is done."""
    token = new_id()
    now = time.time()
    condition = (
        (DeliveryModel.attempt_count == attempt_no - 1)
        & DeliveryModel.status.is_in(Status.PENDING.value, Status.RETRYING.value)
        & (DeliveryModel.lease_until.does_not_exist() | (DeliveryModel.lease_until < now))
    )
    try:
        record.update(
            actions=[
                DeliveryModel.lease_token.set(token),
                DeliveryModel.lease_until.set(now + lease_seconds),
            ],
            condition=condition,
        )
    except UpdateError as exc:
        if exc.cause_response_code == "ConditionalCheckFailedException":
            return None
        raise
    return token


def release(record: DeliveryModel, token: str) -> None:
    """Give a lease back after a crash in our own code, so a redelivery can retry at once."""
    try:
        record.update(
            actions=[DeliveryModel.lease_token.remove(), DeliveryModel.lease_until.remove()],
            condition=DeliveryModel.lease_token == token,
        )
    except UpdateError as exc:
        if exc.cause_response_code != "ConditionalCheckFailedException":
            raise


def record_attempt(
    record: DeliveryModel,
    *,
    token: str,
    attempt_no: int,
    attempt: dict[str, Any],
    status: Status,
    now: str,
    next_attempt_at: str | None,
    failure_reason: str | None,
) -> bool:
    """Append the attempt and move the status, only while holding ``token``."""
    actions: list[Any] = [
        DeliveryModel.attempt_count.set(attempt_no),
        DeliveryModel.attempts.set(DeliveryModel.attempts.append([AttemptMap(**attempt)])),
        DeliveryModel.status.set(status.value),
        DeliveryModel.tenant_status.set(tenant_status(record.tenant_id, status)),
        DeliveryModel.updated_at.set(now),
        DeliveryModel.lease_token.remove(),
        DeliveryModel.lease_until.remove(),
    ]
    actions.append(
        DeliveryModel.next_attempt_at.set(next_attempt_at)
        if next_attempt_at
        else DeliveryModel.next_attempt_at.remove()
    )
    if failure_reason:
        actions.append(DeliveryModel.failure_reason.set(failure_reason))
    try:
        record.update(actions=actions, condition=DeliveryModel.lease_token == token)
    except UpdateError as exc:
        if exc.cause_response_code == "ConditionalCheckFailedException":
            return False
        raise
    return True


def finish_without_attempt(record: DeliveryModel, status: Status, reason: str, now: str) -> bool:
    """Move a not-yet-final delivery to a final state (skipped, or dead-lettered by SQS)."""
    assert status in FINAL
    try:
        record.update(
            actions=[
                DeliveryModel.status.set(status.value),
                DeliveryModel.tenant_status.set(tenant_status(record.tenant_id, status)),
                DeliveryModel.failure_reason.set(reason),
                DeliveryModel.updated_at.set(now),
                DeliveryModel.next_attempt_at.remove(),
                DeliveryModel.lease_token.remove(),
                DeliveryModel.lease_until.remove(),
            ],
            condition=DeliveryModel.status.is_in(Status.PENDING.value, Status.RETRYING.value),
        )
    except UpdateError as exc:
        if exc.cause_response_code == "ConditionalCheckFailedException":
            return False
        raise
    return True


def in_status(
    tenant_id: str, status: Status, since: str | None = None, until: str | None = None
) -> Iterator[DeliveryModel]:
    """A tenant's deliveries in ``status`` created in ``[since, until]`` (one index Query)."""
    key = tenant_status(tenant_id, status)
    condition: Any = None
    if since and until:
        condition = DeliveryModel.created_at.between(since, until)
    elif since:
        condition = DeliveryModel.created_at >= since
    elif until:
        condition = DeliveryModel.created_at <= until
    yield from DeliveryModel.by_tenant_status.query(key, range_key_condition=condition)


def get_event(event_id: str) -> EventModel | None:
    try:
        return EventModel.get(event_id, consistent_read=True)
    except DoesNotExist:
        return None
