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

import base64
import hashlib
import itertools
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pynamodb.attributes import (
    BooleanAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
)
from pynamodb.exceptions import DoesNotExist, PutError
from pynamodb.indexes import GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model

from chalicelib import settings
from chalicelib.domain.ids import new_id
from chalicelib.domain.retry import FINAL, Status
from chalicelib.storage.base import make_meta, update_if

OPEN_SHARDS = 4
HOUR_FORMAT = "%Y-%m-%dT%H"
OPEN = (Status.PENDING.value, Status.RETRYING.value)


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
    # The deliveries of an inline fan-out (up to 100, sorted): listed here, they need no
    # ``by_event`` entry each (one write unit fewer per delivery). Deliveries of a chunked
    # fan-out, replays and firings carry ``event_key`` and are found on that index instead.
    delivery_ids: ListAttribute[str] = ListAttribute(of=UnicodeAttribute, null=True)  # type: ignore[arg-type]
    delivery_count = NumberAttribute(null=True)  # targets matched when it was accepted
    fanned_out = BooleanAttribute(default=False)
    expires_at = NumberAttribute(null=True)  # DynamoDB TTL: the stage's retention period


class AttemptMap(MapAttribute[str, Any]):
    at = UnicodeAttribute()
    url = UnicodeAttribute()
    status_code = NumberAttribute(null=True)
    error = UnicodeAttribute(null=True)
    duration_ms = NumberAttribute()
    response = UnicodeAttribute(null=True)  # the start of the receiver's answer


class ByTenantStatus(GlobalSecondaryIndex["DeliveryModel"]):
    """Dead letters: a tenant's ``failed`` or ``skipped`` deliveries, by creation time.

    Sparse and keys only: only a delivery that ends failed or skipped carries ``tenant_status``,
    so the deliveries that succeed (nearly all) never write this index at all, and an attempt's
    claim or record never rewrites an entry. Other statuses are listed from
    ``by_tenant_created``. A listing reads the page's records with one BatchGet."""

    class Meta:
        index_name = "by_tenant_status"
        projection = KeysOnlyProjection()

    tenant_status = UnicodeAttribute(hash_key=True)
    created_at = UnicodeAttribute(range_key=True)


class ByTenantCreated(GlobalSecondaryIndex["DeliveryModel"]):
    """Every delivery of a tenant, by creation time (listings across statuses; keys only, written
    once when the delivery is created)."""

    class Meta:
        index_name = "by_tenant_created"
        projection = KeysOnlyProjection()

    tenant_id = UnicodeAttribute(hash_key=True)
    created_at = UnicodeAttribute(range_key=True)


class ByEvent(GlobalSecondaryIndex["DeliveryModel"]):
    """The deliveries of one event that its record does not list: those of a chunked fan-out
    (no event record grows with thousands of targets), replays, scheduled firings. Sparse:
    only deliveries carrying ``event_key`` (= their ``event_id``) are in it."""

    class Meta:
        index_name = "by_event_key"
        projection = KeysOnlyProjection()

    event_key = UnicodeAttribute(hash_key=True)
    delivery_id = UnicodeAttribute(range_key=True)


class ByOpen(GlobalSecondaryIndex["DeliveryModel"]):
    """The reconciler's sparse index: only unfinished deliveries carry ``open_bucket``, keyed by
    the hour (and shard) of the moment the next step is due. A reconcile reads the items due
    before now minus a grace period, which are exactly the stuck ones: its cost follows the
    stuck work, never the size of the table."""

    class Meta:
        index_name = "by_open"
        projection = KeysOnlyProjection()

    open_bucket = UnicodeAttribute(hash_key=True)
    open_due = NumberAttribute(range_key=True)


class DeliveryModel(Model):
    Meta = make_meta("deliveries")

    delivery_id = UnicodeAttribute(hash_key=True)
    tenant_id = UnicodeAttribute()
    event_id = UnicodeAttribute()
    event_key = UnicodeAttribute(null=True)  # = event_id when not listed on the event (ByEvent)
    family = UnicodeAttribute()
    target_id = UnicodeAttribute()
    target = UnicodeAttribute()  # the primary destination, as shown to users
    content = UnicodeAttribute()  # JSON the family renders the request from
    status = UnicodeAttribute(default=Status.PENDING.value)
    tenant_status = UnicodeAttribute(null=True)  # only while failed or skipped (sparse)
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
    open_bucket = UnicodeAttribute(null=True)  # set only while pending/retrying (``ByOpen``)
    open_due = NumberAttribute(null=True)  # epoch seconds the next step is due
    expires_at = NumberAttribute(null=True)  # DynamoDB TTL: created + the stage's retention

    by_tenant_status = ByTenantStatus()
    by_tenant_created = ByTenantCreated()
    by_event = ByEvent()
    by_open = ByOpen()

    @property
    def state(self) -> Status:
        return Status(self.status)


DEAD_LETTER_STATUSES = frozenset({Status.FAILED, Status.SKIPPED})
"""The statuses the sparse ``by_tenant_status`` index holds."""


def _status_index_action(tenant_id: str, status: Status) -> Any:
    if status in DEAD_LETTER_STATUSES:
        return DeliveryModel.tenant_status.set(tenant_status(tenant_id, status))
    return DeliveryModel.tenant_status.remove()  # nothing written to the index when absent


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


def retention_expiry(now_epoch: float | None = None) -> int:
    """When an item written now expires (the TTL attribute): now + the stage's retention."""
    now_epoch = time.time() if now_epoch is None else now_epoch
    return int(now_epoch + settings.retention_seconds())


def is_expired(item: Any, now_epoch: float | None = None) -> bool:
    """DynamoDB deletes expired items within days, and the embedded AWS never does: readers
    treat an item past its ``expires_at`` as gone."""
    expires_at = getattr(item, "expires_at", None)
    now_epoch = time.time() if now_epoch is None else now_epoch
    return expires_at is not None and float(expires_at) <= now_epoch


def open_bucket(delivery_id: str, due: float) -> str:
    """``<hour>#<shard>`` of the moment a delivery's next step is due (``ByOpen``)."""
    hour = datetime.fromtimestamp(due, UTC).strftime(HOUR_FORMAT)
    shard = int(hashlib.sha256(delivery_id.encode()).hexdigest()[:8], 16) % OPEN_SHARDS
    return f"{hour}#{shard}"


def _open_actions(delivery_id: str, due: float) -> list[Any]:
    return [
        DeliveryModel.open_bucket.set(open_bucket(delivery_id, due)),
        DeliveryModel.open_due.set(round(due, 3)),
    ]


def _closed_actions() -> list[Any]:
    return [DeliveryModel.open_bucket.remove(), DeliveryModel.open_due.remove()]


def build(
    new: NewDelivery,
    now: str,
    *,
    replay_of: str | None = None,
    due: float | None = None,
    open_index: bool = True,
    event_index: bool = True,
) -> DeliveryModel:
    """A fresh, pending delivery; its first attempt is due at ``due`` (default now).

    ``open_index=False`` leaves it out of the reconciler's ``by_open`` index (two write units
    fewer: the entry's put, and its removal by the outcome) when something else covers it until
    its first message is in SQS: a publish request's outbox, a fan-out chunk's own message.
    ``event_index=False`` leaves it out of ``by_event`` (one more write unit): its event record
    lists it, or it has no event record to be listed under (a scheduled firing; a notification
    batch keeps its entry: ``GET /events/{id}`` of its first event shows it)."""
    now_epoch = time.time()
    due = now_epoch if due is None else due
    return DeliveryModel(
        new.delivery_id,
        tenant_id=new.tenant_id,
        event_id=new.event_id,
        event_key=new.event_id if event_index else None,
        family=new.family,
        target_id=new.target_id,
        target=new.target,
        content=json.dumps(new.content, separators=(",", ":"), sort_keys=True),
        status=Status.PENDING.value,
        attempt_count=0,
        attempts=[],
        created_at=now,
        updated_at=now,
        replay_of=replay_of,
        open_bucket=open_bucket(new.delivery_id, due) if open_index else None,
        open_due=round(due, 3) if open_index else None,
        expires_at=retention_expiry(now_epoch),
    )


def write_new(records: Sequence[DeliveryModel]) -> None:
    """Batch-write fresh deliveries: only for ids nobody else can have written yet (a first
    fan-out, or a fan-out chunk under its lease for the first time)."""
    with DeliveryModel.batch_write() as batch:
        for record in records:
            batch.save(record)


def write_if_absent(record: DeliveryModel) -> bool:
    """Conditional put, for resumed fan-outs where some deliveries may already exist (a batch
    write would reset one that has moved on, and send it again)."""
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


def _refreshed(record: DeliveryModel) -> bool:
    """Re-read ``record`` in place (consistently); False when it no longer exists."""
    try:
        record.refresh(consistent_read=True)
    except DoesNotExist:
        return False
    return True


def claim(record: DeliveryModel, attempt_no: int, lease_seconds: float) -> str | None:
    """Take the lease for ``attempt_no``; None when another worker has it or it is done.

    A claim whose write committed but whose answer was lost (AWS answered 500 after applying
    it, and the SDK's retry then found its own lease) is recognised by its token: it is ours."""
    token = new_id()
    now = time.time()
    condition = (
        (DeliveryModel.attempt_count == attempt_no - 1)
        & DeliveryModel.status.is_in(*OPEN)
        & (DeliveryModel.lease_until.does_not_exist() | (DeliveryModel.lease_until < now))
    )
    actions = [
        DeliveryModel.lease_token.set(token),
        DeliveryModel.lease_until.set(now + lease_seconds),
    ]
    if update_if(record, actions, condition):
        return token
    if _refreshed(record) and record.lease_token == token:
        return token
    return None


def release(record: DeliveryModel, token: str) -> None:
    """Give a lease back after a crash in our own code, so a redelivery can retry at once."""
    update_if(
        record,
        [DeliveryModel.lease_token.remove(), DeliveryModel.lease_until.remove()],
        DeliveryModel.lease_token == token,
    )


def defer(record: DeliveryModel, token: str, until: float) -> bool:
    """Give the lease back without an attempt (flow control made it wait): the delivery is due
    again at ``until``, so the reconciler leaves it alone until then."""
    return update_if(
        record,
        [
            DeliveryModel.lease_token.remove(),
            DeliveryModel.lease_until.remove(),
            *_open_actions(record.delivery_id, until),
        ],
        DeliveryModel.lease_token == token,
    )


def record_attempt(
    record: DeliveryModel,
    *,
    token: str,
    attempt_no: int,
    attempt: dict[str, Any],
    status: Status,
    now: str,
    next_attempt_at: str | None,
    next_due: float | None = None,
    failure_reason: str | None,
) -> bool:
    """Append the attempt and move the status, only while holding ``token``.

    True also when this very write had committed before (its answer was lost and the retry
    found the lease gone): the attempt stored under ``attempt_no`` is then ours."""
    actions: list[Any] = [
        DeliveryModel.attempt_count.set(attempt_no),
        DeliveryModel.attempts.set(DeliveryModel.attempts.append([AttemptMap(**attempt)])),
        DeliveryModel.status.set(status.value),
        _status_index_action(record.tenant_id, status),
        DeliveryModel.updated_at.set(now),
        DeliveryModel.lease_token.remove(),
        DeliveryModel.lease_until.remove(),
    ]
    actions.append(
        DeliveryModel.next_attempt_at.set(next_attempt_at)
        if next_attempt_at
        else DeliveryModel.next_attempt_at.remove()
    )
    if status.value in OPEN and next_due is not None:
        actions.extend(_open_actions(record.delivery_id, next_due))
    else:
        actions.extend(_closed_actions())
    if failure_reason:
        actions.append(DeliveryModel.failure_reason.set(failure_reason))
    if update_if(record, actions, DeliveryModel.lease_token == token):
        return True
    return _recorded_already(record, attempt_no, attempt)


def _recorded_already(record: DeliveryModel, attempt_no: int, attempt: dict[str, Any]) -> bool:
    if not _refreshed(record) or int(record.attempt_count) < attempt_no:
        return False
    stored = list(record.attempts or [])
    if len(stored) < attempt_no:
        return False
    mine = stored[attempt_no - 1]
    return bool(mine.at == attempt["at"] and mine.url == attempt["url"])


def finish_without_attempt(record: DeliveryModel, status: Status, reason: str, now: str) -> bool:
    """Move a not-yet-final delivery to a final state (skipped, or dead-lettered by SQS)."""
    assert status in FINAL
    return finish_if(record, status, reason, now, DeliveryModel.status.is_in(*OPEN))


def finish_if(record: DeliveryModel, status: Status, reason: str, now: str, condition: Any) -> bool:
    """Move a delivery to a final state when ``condition`` holds (one conditional write)."""
    return update_if(
        record,
        [
            DeliveryModel.status.set(status.value),
            _status_index_action(record.tenant_id, status),
            DeliveryModel.failure_reason.set(reason),
            DeliveryModel.updated_at.set(now),
            DeliveryModel.next_attempt_at.remove(),
            DeliveryModel.lease_token.remove(),
            DeliveryModel.lease_until.remove(),
            *_closed_actions(),
        ],
        condition,
    )


def rearm(delivery_id: str, seen_due: float, due: float) -> bool:
    """The reconciler put a stuck delivery back on its way: it is next due at ``due``. Only if
    nothing moved it since it was read (same due time, still unfinished)."""
    return update_if(
        DeliveryModel(delivery_id),
        _open_actions(delivery_id, due),
        DeliveryModel.status.is_in(*OPEN) & (DeliveryModel.open_due == seen_due),
    )


def open_due_before(bucket: str, until: float) -> Iterator[tuple[str, float]]:
    """(delivery id, due) of the unfinished deliveries in ``bucket`` due at or before ``until``
    (one Query on the sparse ``by_open`` index; keys only)."""
    for item in DeliveryModel.by_open.query(
        bucket, range_key_condition=DeliveryModel.open_due <= until
    ):
        yield item.delivery_id, float(item.open_due)


# --------------------------------------------------------------------------- listings


def _created_condition(since: str | None, until: str | None) -> Any:
    if since and until:
        return DeliveryModel.created_at.between(since, until)
    if since:
        return DeliveryModel.created_at >= since
    if until:
        return DeliveryModel.created_at <= until
    return None


def _in_order(keys: Sequence[str]) -> list[DeliveryModel]:
    """Full records for index keys, in the index's order, without expired ones."""
    found = get_many(keys)
    now = time.time()
    return [found[k] for k in keys if k in found and not is_expired(found[k], now)]


def in_status(
    tenant_id: str, status: Status, since: str | None = None, until: str | None = None
) -> Iterator[DeliveryModel]:
    """A tenant's deliveries in ``status`` created in ``[since, until]``, oldest first: a Query
    on a keys-only index (the sparse dead-letter index for failed/skipped, else every delivery
    of the tenant, filtered), then the records by BatchGet, 100 at a time."""
    if status in DEAD_LETTER_STATUSES:
        keys: Any = DeliveryModel.by_tenant_status.query(
            tenant_status(tenant_id, status), range_key_condition=_created_condition(since, until)
        )
    else:
        keys = DeliveryModel.by_tenant_created.query(
            tenant_id, range_key_condition=_created_condition(since, until)
        )
    for batch in iter(lambda: [item.delivery_id for item in itertools.islice(keys, 100)], []):
        yield from (r for r in _in_order(batch) if r.status == status.value)


@dataclass(frozen=True)
class Page:
    records: list[DeliveryModel]
    next_cursor: str | None


class BadCursor(ValueError):
    pass


def encode_cursor(values: dict[str, str]) -> str:
    raw = json.dumps(values, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, names: Sequence[str]) -> dict[str, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError) as exc:
        raise BadCursor("cursor is not one this API gave out") from exc
    if not isinstance(values, dict) or sorted(values) != sorted(names):
        raise BadCursor("cursor is not one this API gave out")
    if not all(isinstance(v, str) and len(v) <= 300 for v in values.values()):
        raise BadCursor("cursor is not one this API gave out")
    return values


def _start_key(hash_name: str, values: dict[str, str], range_name: str) -> dict[str, Any]:
    return {
        hash_name: {"S": values[hash_name]},
        range_name: {"S": values[range_name]},
        "delivery_id": {"S": values["delivery_id"]},
    }


MAX_EXAMINED = 2000  # keys one page may read past filters before it answers with a cursor


def list_page(
    tenant_id: str,
    *,
    status: Status | None,
    since: str | None = None,
    until: str | None = None,
    family: str | None = None,
    target: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> Page:
    """One page of a tenant's deliveries, oldest first, in one status or all of them.

    One Query on a keys-only index (the sparse ``by_tenant_status`` for failed or skipped, else
    ``by_tenant_created``) and BatchGets of the page's records; the status, ``family`` and
    ``target`` (a target id or URL) filter those records.
    A page reads at most ``MAX_EXAMINED`` keys: past that it may hold fewer than ``limit``
    deliveries and a cursor to go on from. No cursor means there is nothing more.
    """
    if status in DEAD_LETTER_STATUSES:
        index: Any = DeliveryModel.by_tenant_status
        hash_name, hash_value = "tenant_status", tenant_status(tenant_id, status)
    else:  # every status, or one the sparse index does not hold: filtered below
        index = DeliveryModel.by_tenant_created
        hash_name, hash_value = "tenant_id", tenant_id
    start = None
    if cursor:
        values = decode_cursor(cursor, ["created_at", "delivery_id"])
        start = _start_key(hash_name, {**values, hash_name: hash_value}, "created_at")
    keys = iter(
        index.query(
            hash_value,
            range_key_condition=_created_condition(since, until),
            last_evaluated_key=start,
            page_size=min(max(limit, 25), 500),
        )
    )

    def wanted(record: DeliveryModel) -> bool:
        if status is not None and record.status != status.value:
            return False
        if family is not None and record.family != family:
            return False
        return target is None or target in (record.target_id, record.target)

    found: list[DeliveryModel] = []
    examined = 0
    last: tuple[str, str] | None = None
    while examined < MAX_EXAMINED:
        batch = [(item.created_at, item.delivery_id) for item in itertools.islice(keys, 100)]
        if not batch:
            return Page(found, None)
        examined += len(batch)
        fetched = get_many(d for _, d in batch)
        now = time.time()
        for position, (created_at, delivery_id) in enumerate(batch):
            last = (created_at, delivery_id)
            record = fetched.get(delivery_id)
            if record is None or is_expired(record, now) or not wanted(record):
                continue
            found.append(record)
            if len(found) == limit:
                if position == len(batch) - 1 and next(keys, None) is None:
                    return Page(found, None)
                return Page(found, encode_cursor({"created_at": last[0], "delivery_id": last[1]}))
    assert last is not None
    if next(keys, None) is None:
        return Page(found, None)
    return Page(found, encode_cursor({"created_at": last[0], "delivery_id": last[1]}))


def event_page(
    event_id: str,
    *,
    limit: int = 100,
    cursor: str | None = None,
    event: EventModel | None = None,
) -> Page:
    """One page of an event's deliveries, in delivery id order: those its record lists (an
    inline fan-out) merged with those on the ``by_event`` index (a chunked fan-out, replays,
    firings). ``event`` saves reading the record again when the caller has it."""
    after = decode_cursor(cursor, ["delivery_id"])["delivery_id"] if cursor else None
    if event is None:
        event = get_event(event_id)
    listed = (
        sorted(i for i in (event.delivery_ids or []) if after is None or i > after) if event else []
    )
    keys = DeliveryModel.by_event.query(
        event_id,
        range_key_condition=DeliveryModel.delivery_id > after if after else None,
        limit=limit + 1,
        page_size=limit + 1,
    )
    ids = sorted({*listed, *(item.delivery_id for item in keys)})
    more = len(ids) > limit
    ids = ids[:limit]
    records = _in_order(ids)
    next_cursor = encode_cursor({"delivery_id": ids[-1]}) if more and ids else None
    return Page(records, next_cursor)


def get_event(event_id: str) -> EventModel | None:
    try:
        event = EventModel.get(event_id, consistent_read=True)
    except DoesNotExist:
        return None
    return None if is_expired(event) else event
