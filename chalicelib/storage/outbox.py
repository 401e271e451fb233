"""The publish outbox: one small item per ``POST /events`` request that covers the moment
between writing its deliveries and handing their messages to SQS.

Why not an index entry per delivery: a delivery carried a ``by_open`` entry from creation so
the reconciler could find one whose message never reached SQS. That entry cost two write units
per delivery (written at creation, removed by the outcome), a third of what a first-try
delivery cost. Once its message is in SQS, SQS and its dead-letter queue carry a delivery to a
final state by themselves; only the request's own window needs covering. So the request writes
one outbox item listing its deliveries *before* writing them, and deletes it once their messages
are sent and their events recorded: a few write units per request, whatever the number of
events in it. An outbox left behind means the request failed (or died) in that window; the
reconciler reads only those, once they are older than its grace period, and sends what is still
unsent (the claim makes a duplicate harmless).

The items live in the due-items table under buckets of their own (``outbox#<hour>#<shard>``):
the sweeper's minute buckets never see them, and a reconcile Queries an hour's shards by the
time-ordered range key, reading only the leftovers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.models import Model

from chalicelib.domain.ids import new_id
from chalicelib.storage.base import make_meta

SHARDS = 4
HOUR_FORMAT = "%Y-%m-%dT%H"
MAX_IDS = 1000
"""Delivery ids per outbox item (about 25 KB): a request with more writes several items."""


class OutboxModel(Model):
    Meta = make_meta("due_items")

    bucket = UnicodeAttribute(hash_key=True)  # "outbox#<hour>#<shard>"
    item_key = UnicodeAttribute(range_key=True)  # "<written epoch ms, 15 digits>#<outbox id>"
    due_at = NumberAttribute()  # epoch seconds it was written
    ids = UnicodeAttribute()  # the delivery ids, comma-separated


def bucket_of(epoch: float, outbox_id: str) -> str:
    hour = datetime.fromtimestamp(epoch, UTC).strftime(HOUR_FORMAT)
    shard = int(hashlib.sha256(outbox_id.encode()).hexdigest()[:8], 16) % SHARDS
    return f"outbox#{hour}#{shard}"


def open_outbox(delivery_ids: Sequence[str], now: float) -> list[OutboxModel]:
    """Write the outbox items for ``delivery_ids`` (before the deliveries themselves)."""
    items: list[OutboxModel] = []
    for start in range(0, len(delivery_ids), MAX_IDS):
        outbox_id = new_id()
        item = OutboxModel(
            bucket_of(now, outbox_id),
            f"{int(now * 1000):015d}#{outbox_id}",
            due_at=round(now, 3),
            ids=",".join(delivery_ids[start : start + MAX_IDS]),
        )
        item.save()  # a fresh random key: a retried put overwrites only itself
        items.append(item)
    return items


def close(items: Sequence[OutboxModel]) -> None:
    """The request handed everything over: its outbox is no longer needed."""
    for item in items:
        remove(item)


def remove(item: OutboxModel) -> None:
    item.delete()  # unconditional: deleting one that another reconcile removed is a no-op


def delivery_ids(item: OutboxModel) -> list[str]:
    return [i for i in item.ids.split(",") if i]


def left_before(bucket: str, until: float) -> Iterator[OutboxModel]:
    """The outbox items of one bucket written at or before ``until`` (left by requests that
    did not finish)."""
    yield from OutboxModel.query(
        bucket,
        range_key_condition=OutboxModel.item_key <= f"{int(until * 1000):015d}~",
        consistent_read=True,
    )
