"""The scheduler's sweep: move work that falls due soon from DynamoDB to SQS.

On AWS an EventBridge rule runs it every minute with a 60 s window; SQS ``DelaySeconds`` then
releases each message at its own second. Locally it runs every second. It reads only the minute
buckets between its cursor and now + window (a Query each), so its cost follows what is due,
not what is scheduled.

The cursor (the earliest minute that may still hold work) lives in a guard item. It only moves
past a minute once that minute is in the past and everything in it was handed over, so an outage
of the sweeper delays work but never skips it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from pynamodb.exceptions import PutError

from chalicelib.delivery import queue
from chalicelib.storage import due
from chalicelib.storage.guards import GuardModel, read_guard

log = logging.getLogger("ringback.sweeper")

CURSOR_KEY = "sweeper-cursor"
FIRST_LOOKBACK = 15 * 60  # the first sweep ever looks this far back
CLAIM_SECONDS = 60.0


@dataclass
class SweepReport:
    queried_buckets: int = 0
    items_read: int = 0
    handed_over: int = 0


def _cursor(now: float) -> tuple[str, GuardModel | None]:
    guard = read_guard(CURSOR_KEY)
    if guard is None or not guard.payload:
        return due.minute_of(now - FIRST_LOOKBACK), guard
    return guard.payload, guard


def _advance(guard: GuardModel | None, minute: str) -> None:
    try:
        if guard is None:
            GuardModel(CURSOR_KEY, payload=minute, version=1).save(
                condition=GuardModel.key.does_not_exist()
            )
        elif minute > (guard.payload or ""):
            GuardModel(CURSOR_KEY, payload=minute, version=guard.version + 1).save(
                condition=GuardModel.version == guard.version
            )
    except PutError as exc:  # another sweep moved it first
        if exc.cause_response_code != "ConditionalCheckFailedException":
            raise


def sweep(now: float | None = None, window: float = 60.0) -> SweepReport:
    now = time.time() if now is None else now
    until = now + window
    report = SweepReport()
    start, guard = _cursor(now)
    current_minute = due.minute_of(now)
    last_minute = due.minute_of(until)
    minute = start
    new_cursor: str | None = None
    while minute <= last_minute:
        complete = True
        for shard in range(due.SHARDS):
            report.queried_buckets += 1
            for item in due.due_in(minute, shard, until):
                report.items_read += 1
                if not due.claim(item, CLAIM_SECONDS):
                    complete = False
                    continue
                try:
                    queue.send_at(json.loads(item.message), float(item.due_at), item.item_key, now)
                except Exception:
                    log.exception(
                        "could not hand over %s; it stays for the next sweep", item.item_key
                    )
                    complete = False
                    continue
                due.remove(item)
                report.handed_over += 1
        if new_cursor is None and not (complete and minute < current_minute):
            new_cursor = minute
        minute = due.minute_of(due.minute_start(minute) + 60)
    _advance(guard, new_cursor or current_minute)
    return report
