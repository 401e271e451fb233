"""Work that falls due later than SQS can delay (15 minutes): the scheduler's table.

Items are keyed by the minute they fall due (plus a small shard, so one hot minute does not
make one hot partition), sorted by due time inside it. The sweeper Queries only the minutes from
its cursor up to now + window, so the cost of a sweep depends on what is due, never on how much
is scheduled. Claiming an item is a conditional update, so overlapping sweeps never both send it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DeleteError, UpdateError
from pynamodb.models import Model

from chalicelib.storage.base import make_meta

SHARDS = 4
MINUTE_FORMAT = "%Y-%m-%dT%H:%M"


class DueItemModel(Model):
    Meta = make_meta("due_items")

    bucket = UnicodeAttribute(hash_key=True)  # "<minute>#<shard>"
    item_key = UnicodeAttribute(range_key=True)  # "<due epoch ms, 15 digits>#<item id>"
    due_at = NumberAttribute()  # epoch seconds
    message = UnicodeAttribute()  # the work message (JSON) to put on SQS
    claimed_until = NumberAttribute(null=True)


def minute_of(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime(MINUTE_FORMAT)


def minute_start(minute: str) -> float:
    return datetime.strptime(minute, MINUTE_FORMAT).replace(tzinfo=UTC).timestamp()


def shard_of(item_id: str) -> int:
    return int(hashlib.sha256(item_id.encode()).hexdigest()[:8], 16) % SHARDS


def _item_key(due_at: float, item_id: str) -> str:
    return f"{int(due_at * 1000):015d}#{item_id}"


def put(item_id: str, due_at: float, message: str) -> None:
    """Idempotent: the same item id and due time always land on the same key."""
    DueItemModel(
        f"{minute_of(due_at)}#{shard_of(item_id)}",
        _item_key(due_at, item_id),
        due_at=due_at,
        message=message,
    ).save()


def due_in(minute: str, shard: int, until: float) -> Iterator[DueItemModel]:
    """Items of one minute bucket due at or before ``until``."""
    yield from DueItemModel.query(
        f"{minute}#{shard}",
        range_key_condition=DueItemModel.item_key <= f"{int(until * 1000):015d}~",
        consistent_read=True,
    )


def claim(item: DueItemModel, lease_seconds: float) -> bool:
    now = time.time()
    try:
        item.update(
            actions=[DueItemModel.claimed_until.set(now + lease_seconds)],
            condition=DueItemModel.bucket.exists()
            & (DueItemModel.claimed_until.does_not_exist() | (DueItemModel.claimed_until < now)),
        )
    except UpdateError as exc:
        if exc.cause_response_code == "ConditionalCheckFailedException":
            return False
        raise
    return True


def remove(item: DueItemModel) -> None:
    try:
        item.delete()
    except DeleteError as exc:  # already gone: another sweep finished it
        if exc.cause_response_code != "ConditionalCheckFailedException":
            raise


def remove_all(items: list[DueItemModel]) -> None:
    """Delete handed-over items, 25 to a ``BatchWriteItem`` (PynamoDB resends unprocessed ones).
    An item already gone (another sweep finished it) is no error: a delete is idempotent."""
    if not items:
        return
    with DueItemModel.batch_write() as batch:
        for item in items:
            batch.delete(item)
