"""The notification buffer: events waiting to be cut into batches, one partition per generation.

The ``notification_buffer`` table holds, per callback:

- a marker row ``(<tenant>#<callback id>, "#state")``: the callback's current **generation**
  (``generation``), the due time of its flush (``flush_at``) and, once that flush has started,
  ``closed``. The generation is where new events go until its flush starts. The marker is
  only a hint for writers (the due time says when to read it again, ``closed`` spares a write
  into a generation that no longer takes events); what decides is the generation's own state
  row, read after each write;
- one partition per generation ``<tenant>#<callback id>#<generation>``: the buffered events
  (``item_key`` = arrival ms + event id, so a batch is oldest first) and a ``#state`` row that
  the generation's flush creates before it reads anything (``started_at``), holding how far
  the flush got (``cursor``, the last item key sent) and the batch being cut (``pending_*``).

Why generations: a generation stops taking events once its flush has started (a writer reads
the state row after its write and, finding it, writes the event into a new generation), so
what a flush reads never grows behind it. Its items are therefore never deleted one by one
(that was one write unit per event): the flush moves a cursor, and the items expire through
DynamoDB TTL (``expires_at``, the stage's retention), which DynamoDB does not bill.

The partition ``<tenant>#<callback id>`` (no generation) is where events were buffered before
generations existed; a flush message without a generation still empties it the old way (each
batch's items deleted once its delivery exists), so an upgrade loses nothing in flight.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pynamodb.attributes import (
    BinaryAttribute,
    ListAttribute,
    NumberAttribute,
    UnicodeAttribute,
)
from pynamodb.exceptions import DoesNotExist
from pynamodb.models import Model

from chalicelib import settings
from chalicelib.storage.base import make_meta, update_if

STATE_KEY = "#state"  # sorts before every item key (they start with a digit)
_ITEMS_FROM = "0"


class NotificationBufferModel(Model):
    """Buffered events of one callback generation, its state row, and the callback's marker."""

    Meta = make_meta("notification_buffer")

    buffer_key = UnicodeAttribute(hash_key=True)  # "<tenant>#<callback id>[#<generation>]"
    item_key = UnicodeAttribute(range_key=True)  # "<epoch ms, 15 digits>#<event id>" | "#state"
    event_id = UnicodeAttribute(null=True)
    body = UnicodeAttribute(null=True)  # the event object, JSON
    expires_at = NumberAttribute(null=True)  # DynamoDB TTL (generation items and state rows)
    # the callback's marker row
    flush_at = NumberAttribute(null=True)  # due time of the latest flush message sent
    generation = UnicodeAttribute(null=True)  # where new events go until its flush starts
    closed = UnicodeAttribute(null=True)  # ``generation`` once its flush has started
    # a generation's state row
    started_at = NumberAttribute(null=True)  # its flush began: no event is added any more
    cursor = UnicodeAttribute(null=True)  # the last item key already cut into a batch
    pending_delivery = UnicodeAttribute(null=True)  # the batch being cut, until it is recorded
    pending_items: ListAttribute[str] = ListAttribute(of=UnicodeAttribute, null=True)  # type: ignore[arg-type]
    pending_keys = BinaryAttribute(null=True, legacy_encoding=False)  # its keys, ``pack_keys``
    pending_owner = UnicodeAttribute(null=True)  # the flush (its flush_id) that cut it


@dataclass(frozen=True)
class BufferRef:
    """One buffer partition: a generation of a callback's events, or (``generation`` empty)
    the partition from before generations."""

    tenant_id: str
    callback_id: str
    generation: str = ""

    @property
    def key(self) -> str:
        base = f"{self.tenant_id}#{self.callback_id}"
        return f"{base}#{self.generation}" if self.generation else base

    @property
    def by_cursor(self) -> bool:
        """A generation is read with a cursor; the old partition is emptied by deletes."""
        return bool(self.generation)


@dataclass(frozen=True)
class Buffered:
    item_key: str
    event_id: str
    body: str  # the event object, JSON


@dataclass(frozen=True)
class Marker:
    generation: str | None
    flush_at: float | None
    closed: bool = False  # the generation's flush has started: the next event opens another


@dataclass(frozen=True)
class State:
    cursor: str | None = None
    pending_delivery: str | None = None
    pending_items: tuple[str, ...] = ()
    pending_owner: str | None = None


def item_key(at_ms: int, event_id: str) -> str:
    return f"{at_ms:015d}#{event_id}"


def encode_event(event_object: dict[str, Any]) -> str:
    return json.dumps(event_object, separators=(",", ":"))


def _expiry() -> int:
    """Buffered items outlive any flush (a dead-lettered one comes back every minute) by far:
    they are kept as long as the events themselves (``RINGBACK_RETENTION_DAYS``)."""
    return int(time.time() + settings.retention_seconds())


def _row(ref: BufferRef, item: Buffered, expires_at: int | None) -> NotificationBufferModel:
    return NotificationBufferModel(
        ref.key, item.item_key, event_id=item.event_id, body=item.body, expires_at=expires_at
    )


def put_items(ref: BufferRef, items: Sequence[Buffered]) -> None:
    """One PutItem for one event; batch writes (25 a call) for bulk loads."""
    expires_at = _expiry() if ref.by_cursor else None
    if len(items) == 1:
        _row(ref, items[0], expires_at).save()
        return
    with NotificationBufferModel.batch_write() as batch:
        for item in items:
            batch.save(_row(ref, item, expires_at))


def delete_items(ref: BufferRef, keys: Sequence[str]) -> None:
    with NotificationBufferModel.batch_write() as batch:
        for k in keys:
            batch.delete(NotificationBufferModel(ref.key, k))


def _as_buffered(row: NotificationBufferModel) -> Buffered:
    return Buffered(row.item_key, row.event_id or "", row.body or "null")


def oldest(ref: BufferRef, after: str | None, limit: int) -> list[Buffered]:
    """The oldest items after ``after`` (the cursor; None = from the first item)."""
    condition = (
        NotificationBufferModel.item_key > after
        if after is not None
        else NotificationBufferModel.item_key >= _ITEMS_FROM
    )
    rows = NotificationBufferModel.query(
        ref.key,
        range_key_condition=condition,
        consistent_read=True,
        limit=limit,
        page_size=limit,
    )
    return [_as_buffered(row) for row in rows]


def get_buffered(ref: BufferRef, keys: Sequence[str]) -> list[Buffered]:
    """The given items that are still buffered, in key order."""
    found: dict[str, Buffered] = {}
    for start in range(0, len(keys), 100):
        chunk = [(ref.key, k) for k in keys[start : start + 100]]
        for row in NotificationBufferModel.batch_get(chunk, consistent_read=True):
            found[row.item_key] = _as_buffered(row)
    return [found[k] for k in sorted(found)]


# --- the marker ---------------------------------------------------------------------------


def _marker_row(tenant_id: str, callback_id: str) -> NotificationBufferModel:
    return NotificationBufferModel(BufferRef(tenant_id, callback_id).key, STATE_KEY)


def read_marker(tenant_id: str, callback_id: str) -> Marker:
    """Eventually consistent (half a read unit): the marker is a hint for writers, never what
    decides whether an event is seen (``has_started`` does). A stale answer costs at most a
    write into a generation that has started, or a generation opened early."""
    try:
        row = NotificationBufferModel.get(
            BufferRef(tenant_id, callback_id).key, STATE_KEY, consistent_read=False
        )
    except DoesNotExist:
        return Marker(None, None)
    return Marker(
        row.generation,
        float(row.flush_at) if row.flush_at is not None else None,
        row.closed is not None and row.closed == row.generation,
    )


def move_marker(
    tenant_id: str, callback_id: str, generation: str, flush_at: float, seen: str | None
) -> bool:
    """Point new events at ``generation`` (its flush is due at ``flush_at``), unless another
    writer moved the marker since we read ``seen``: then theirs stands, and both generations
    are flushed, each by its own message."""
    condition = (
        NotificationBufferModel.generation.does_not_exist()
        if seen is None
        else NotificationBufferModel.generation == seen
    )
    return update_if(
        _marker_row(tenant_id, callback_id),
        [
            NotificationBufferModel.generation.set(generation),
            NotificationBufferModel.flush_at.set(flush_at),
        ],
        condition,
    )


# --- a generation's state -----------------------------------------------------------------


def pack_keys(keys: Sequence[str]) -> bytes:
    """The pending batch's item keys as the state row keeps them: a list of 200 keys is about
    8 KB (9 write units when it is recorded and 9 again when it is cleared); compressed, the
    shared timestamp digits go and about 3 KB is left."""
    return zlib.compress("\n".join(keys).encode("ascii"), 9)


def unpack_keys(packed: bytes) -> tuple[str, ...]:
    return tuple(zlib.decompress(packed).decode("ascii").split("\n")) if packed else ()


def _state_of(row: NotificationBufferModel) -> State:
    keys = unpack_keys(row.pending_keys) if row.pending_keys else tuple(row.pending_items or ())
    return State(row.cursor, row.pending_delivery, keys, row.pending_owner)


def has_started(ref: BufferRef) -> bool:
    """Whether the generation's flush has begun: read consistently after an item is written,
    so False means the flush's first read comes after that write and sees the item."""
    try:
        row = NotificationBufferModel.get(ref.key, STATE_KEY, consistent_read=True)
    except DoesNotExist:
        return False
    return row.started_at is not None


def start(ref: BufferRef, now: float) -> State:
    """A flush's first step: close the generation to new events (they go to the next one),
    and learn how far earlier runs of this flush got, in one write. Then the marker says so
    too, if it still names this generation, so that the callback's next event opens a new
    one at once instead of writing into this one and finding out (a flush that dies between
    the two writes costs that event one write more, nothing else). The old partition has no
    writers left to close it to: it is only read."""
    if not ref.by_cursor:
        return read_state(ref)
    row = NotificationBufferModel(ref.key, STATE_KEY)
    row.update(
        actions=[
            NotificationBufferModel.started_at.set(
                NotificationBufferModel.started_at | round(now, 3)
            ),
            NotificationBufferModel.expires_at.set(_expiry()),
        ]
    )
    update_if(
        _marker_row(ref.tenant_id, ref.callback_id),
        [NotificationBufferModel.closed.set(ref.generation)],
        NotificationBufferModel.generation == ref.generation,
    )
    return _state_of(row)


def read_state(ref: BufferRef) -> State:
    try:
        row = NotificationBufferModel.get(ref.key, STATE_KEY, consistent_read=True)
    except DoesNotExist:
        return State()
    return _state_of(row)


def set_pending(
    ref: BufferRef,
    delivery_id: str,
    keys: Sequence[str],
    owner: str,
    cursor: str | None = None,
) -> bool:
    """Claim the next batch for flush ``owner``: False when a batch is already pending or the
    cursor moved since it was read (another run of the flush got further)."""
    condition = NotificationBufferModel.pending_delivery.does_not_exist() & (
        NotificationBufferModel.cursor.does_not_exist()
        if cursor is None
        else NotificationBufferModel.cursor == cursor
    )
    return update_if(
        NotificationBufferModel(ref.key, STATE_KEY),
        [
            NotificationBufferModel.pending_delivery.set(delivery_id),
            NotificationBufferModel.pending_keys.set(pack_keys(keys)),
            NotificationBufferModel.pending_owner.set(owner),
        ],
        condition,
    )


def finish_batch(ref: BufferRef, delivery_id: str, keys: Sequence[str]) -> bool:
    """The batch's delivery exists: move past its items, and the next batch may be cut.

    In a generation that is one write (the cursor moves to the batch's last key, the items
    stay until their TTL); in the old partition the items are deleted first."""
    row = NotificationBufferModel(ref.key, STATE_KEY)
    actions: list[Any] = [
        NotificationBufferModel.pending_delivery.remove(),
        NotificationBufferModel.pending_items.remove(),
        NotificationBufferModel.pending_keys.remove(),
        NotificationBufferModel.pending_owner.remove(),
    ]
    if ref.by_cursor:
        actions.append(NotificationBufferModel.cursor.set(max(keys)))
    else:
        delete_items(ref, keys)
    return update_if(row, actions, NotificationBufferModel.pending_delivery == delivery_id)
