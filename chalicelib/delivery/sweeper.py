"""The scheduler's sweep: move work that falls due soon from DynamoDB to SQS.

On AWS an EventBridge rule runs it every minute with a 60 s window; SQS ``DelaySeconds`` then
releases each message at its own second. Locally it runs every second. It reads only the minute
buckets between its cursor and now + window (a Query each), so its cost follows what is due,
not what is scheduled. Each item is claimed (a conditional update); those released at the same
second go to SQS in one batch and are deleted in one batch, so a burst (every callback "on the
hour") costs a request per ten firings, not one each.

The cursor (the earliest minute that may still hold work) lives in a guard item. It only moves
past a minute once that minute is in the past and everything in it was handed over, so an outage
of the sweeper delays work but never skips it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

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


def _hand_over(items: list[due.DueItemModel], now: float) -> list[due.DueItemModel]:
    """Send claimed items to SQS, those released at the same second in one batch
    (``SendMessageBatch``: up to ten messages, one delay), and return the ones sent. A group
    SQS refuses stays (claimed) for a later sweep; if part of it did go out, those messages go
    out again then, which every work kind tolerates (a ``fire`` starts once, an attempt is
    claimed once)."""
    groups: dict[int, list[tuple[due.DueItemModel, dict[str, Any]]]] = {}
    for item in items:
        due_at = float(item.due_at)
        delay = max(0, min(queue.SQS_MAX_DELAY, math.floor(due_at - now)))
        message = {**json.loads(item.message), "due_at": due_at}
        groups.setdefault(delay, []).append((item, message))
    sent: list[due.DueItemModel] = []
    for delay, group in sorted(groups.items()):
        try:
            queue.send_now([message for _, message in group], delay_seconds=delay)
        except Exception:
            log.exception(
                "could not hand over %s items due in %s s; they stay for the next sweep",
                len(group),
                delay,
            )
            continue
        sent.extend(item for item, _ in group)
    return sent


HAND_OVER_CHUNK = 100
"""Claimed items sent and deleted together (SQS batches of 10, BatchWriteItem deletes of 25)."""


def _hand_over_claimed(claimed: list[due.DueItemModel], now: float, report: SweepReport) -> bool:
    """Send and delete what is claimed so far, and empty ``claimed``; True when all of it went.

    A busy minute is handed over a chunk at a time: a run that dies mid-minute has sent what it
    claimed before, and the next run is not blocked by a whole minute of claims it never sent."""
    if not claimed:
        return True
    sent = _hand_over(claimed, now)
    due.remove_all(sent)
    report.handed_over += len(sent)
    done = len(sent) == len(claimed)
    claimed.clear()
    return done


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
        claimed: list[due.DueItemModel] = []
        for shard in range(due.SHARDS):
            report.queried_buckets += 1
            for item in due.due_in(minute, shard, until):
                report.items_read += 1
                if due.claim(item, CLAIM_SECONDS):
                    claimed.append(item)
                else:
                    complete = False
                if len(claimed) >= HAND_OVER_CHUNK:
                    complete = _hand_over_claimed(claimed, now, report) and complete
        complete = _hand_over_claimed(claimed, now, report) and complete
        if new_cursor is None and not (complete and minute < current_minute):
            new_cursor = minute
        minute = due.minute_of(due.minute_start(minute) + 60)
    _advance(guard, new_cursor or current_minute)
    return report
