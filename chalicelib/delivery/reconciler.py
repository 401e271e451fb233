"""The reconciler: finds work that fell through the cracks and puts it back on its way.

Every step of the engine is idempotent and most failures heal by themselves (SQS redelivers a
message whose handler failed). What cannot heal that way is work whose *message* never existed
or was consumed without effect, for example:

- deliveries written by a fan-out whose SQS send then failed (the API answered 5xx and the
  publisher never retried), or whose next attempt's message was lost;
- a scheduled callback whose first firing's hand-over after create failed, or whose create
  committed after the sweeper had passed that minute;
- a firing that started (the series moved on) whose worker died before creating its delivery,
  or a firing whose delivery finished without the callback hearing of it.

Outboxes left behind by publish requests are Queried the same way (by the hour they were
written), and only those: a request that finished removed its own. Deliveries being retried (or
created outside a publish) and live scheduled callbacks (from their first firing's hand-over, or
its start when it was handed to the due-items table) carry, in a sparse index of their own
(``by_open`` on each table), the moment their next step is due, bucketed by hour and shard.
A reconcile Queries the buckets from its cursor up to now minus a grace period
(``RINGBACK_RECONCILE_GRACE_SECONDS``) and reads only what is overdue by more than that: the
stuck work, and nothing else, whatever the size of the tables. For each it sends the work
message that should exist (duplicates are harmless: every step is claimed with a conditional
write) and re-arms it, so it is looked at again only if it is still stuck a grace period later.

On AWS an EventBridge rule runs it every minute; the local stack runs it every few seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from pynamodb.exceptions import PutError

from chalicelib import settings
from chalicelib.delivery import dispatcher, queue, registry
from chalicelib.delivery import scheduled as scheduler
from chalicelib.domain import scheduled as rules
from chalicelib.domain.retry import FINAL
from chalicelib.storage import deliveries, outbox
from chalicelib.storage import scheduled as schedule_store
from chalicelib.storage.guards import GuardModel, read_guard

log = logging.getLogger("ringback.reconciler")

HOUR = 3600.0
HOUR_FORMAT = "%Y-%m-%dT%H"
FIRST_LOOKBACK = 2 * HOUR
"""The first reconcile ever looks this far back (later ones start at their cursor). Nothing
older can be in the index: only work written since the reconciler exists carries a due time."""


@dataclass
class ReconcileReport:
    queried_buckets: int = 0
    items_read: int = 0
    """Index entries read (keys only), both tables."""
    records_read: int = 0
    """Full records read to decide what an overdue entry needs."""
    deliveries_requeued: int = 0
    outboxes_read: int = 0
    """Outbox items left by publish requests that did not finish."""
    firings_requeued: int = 0
    firings_repaired: int = 0


def _hour(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime(HOUR_FORMAT)


def _hour_start(hour: str) -> float:
    return datetime.strptime(hour, HOUR_FORMAT).replace(tzinfo=UTC).timestamp()


def _hours(first: str, last: str) -> Iterator[str]:
    hour = first
    while hour <= last:
        yield hour
        hour = _hour(_hour_start(hour) + HOUR)


class _Cursor:
    """The earliest hour that may still hold overdue work, per table. It moves past an hour
    only once that hour is wholly before ``now - grace`` and everything read in it was handled
    (handled items are re-armed into a later hour, so the old one is then empty)."""

    def __init__(self, name: str, now: float) -> None:
        self.key = f"reconciler-cursor#{name}"
        self.guard = read_guard(self.key)
        stored = self.guard.payload if self.guard is not None else None
        self.start = stored or _hour(now - FIRST_LOOKBACK)

    def advance(self, hour: str) -> None:
        try:
            if self.guard is None:
                GuardModel(self.key, payload=hour, version=1).save(
                    condition=GuardModel.key.does_not_exist()
                )
            elif hour > (self.guard.payload or ""):
                GuardModel(self.key, payload=hour, version=self.guard.version + 1).save(
                    condition=GuardModel.version == self.guard.version
                )
        except PutError as exc:  # another reconcile moved it first
            if exc.cause_response_code != "ConditionalCheckFailedException":
                raise


def _sweep_table(
    name: str,
    now: float,
    shards: int,
    read: Callable[[str, float], Iterator[tuple[object, float]]],
    handle: Callable[[object, float, float], None],
    report: ReconcileReport,
) -> None:
    until = now - settings.reconcile_grace_seconds()
    cursor = _Cursor(name, now)
    last_hour = _hour(until)
    new_start: str | None = None
    for hour in _hours(cursor.start, last_hour):
        clean = True
        for shard in range(shards):
            report.queried_buckets += 1
            for key, due in read(f"{hour}#{shard}", until):
                report.items_read += 1
                try:
                    handle(key, due, now)
                except Exception:
                    clean = False
                    log.exception("reconcile of %s %s failed; it is retried next run", name, key)
        if new_start is None and not (clean and hour < last_hour):
            new_start = hour
    cursor.advance(new_start or last_hour)


def reconcile(now: float | None = None) -> ReconcileReport:
    now = time.time() if now is None else now
    report = ReconcileReport()

    def read_deliveries(bucket: str, until: float) -> Iterator[tuple[object, float]]:
        yield from deliveries.open_due_before(bucket, until)

    def read_callbacks(bucket: str, until: float) -> Iterator[tuple[object, float]]:
        for tenant_id, callback_id, due in schedule_store.open_due_before(bucket, until):
            yield (tenant_id, callback_id), due

    _sweep_table(
        "deliveries",
        now,
        deliveries.OPEN_SHARDS,
        read_deliveries,
        lambda key, due, at: _revive_delivery(str(key), due, at, report),
        report,
    )
    _sweep_table(
        "outbox",
        now,
        outbox.SHARDS,
        lambda bucket, until: (
            (item, float(item.due_at)) for item in outbox.left_before(f"outbox#{bucket}", until)
        ),
        lambda item, due, at: _revive_outbox(item, at, report),  # type: ignore[arg-type]
        report,
    )
    _sweep_table(
        "scheduled",
        now,
        schedule_store.OPEN_SHARDS,
        read_callbacks,
        lambda key, due, at: _revive_callback(key, due, at, report),  # type: ignore[arg-type]
        report,
    )
    if report.deliveries_requeued or report.firings_requeued or report.firings_repaired:
        log.warning(
            "reconciled: %s deliveries and %s firings put back on their way, %s firings repaired",
            report.deliveries_requeued,
            report.firings_requeued,
            report.firings_repaired,
        )
    return report


def _revive_delivery(delivery_id: str, due: float, now: float, report: ReconcileReport) -> None:
    """An unfinished delivery overdue by more than the grace period: send the message for its
    next attempt (the claim makes a duplicate harmless) and look again a grace period later."""
    record = deliveries.get(delivery_id)
    report.records_read += 1
    if record is None or record.state in FINAL:
        return  # the index lags the table: it finished meanwhile
    if record.open_due is None or float(record.open_due) != due:
        return  # it moved on since the index entry was read
    lease = record.lease_until
    if lease is not None and float(lease) > now:
        deliveries.rearm(delivery_id, due, float(lease))  # an attempt is running right now
        return
    queue.send_now([dispatcher.deliver_message(delivery_id, int(record.attempt_count) + 1)])
    deliveries.rearm(delivery_id, due, now)
    report.deliveries_requeued += 1


def _revive_outbox(item: outbox.OutboxModel, now: float, report: ReconcileReport) -> None:
    """A publish request that wrote its outbox and did not finish (it answered 5xx, or died):
    send the first attempt of each of its deliveries that exists and was never started (the
    claim makes a duplicate of a message that did reach SQS harmless), then drop the outbox.
    Deliveries that moved on are the retries' business (``by_open``) or final."""
    report.outboxes_read += 1
    found = deliveries.get_many(outbox.delivery_ids(item))
    report.records_read += len(found)
    unsent = [
        record.delivery_id
        for record in found.values()
        if record.state not in FINAL
        and int(record.attempt_count) == 0
        and record.open_due is None
        and (record.lease_until is None or float(record.lease_until) <= now)
    ]
    queue.send_now([dispatcher.deliver_message(delivery_id, 1) for delivery_id in unsent])
    report.deliveries_requeued += len(unsent)
    outbox.remove(item)


def _revive_callback(key: tuple[str, str], due: float, now: float, report: ReconcileReport) -> None:
    """A live scheduled callback whose next step is overdue by more than the grace period.

    ``scheduled``: its next firing's ``fire`` message should have started it; send it again
    (starting a firing is a conditional write, so a duplicate starts nothing).
    ``firing``: the firing that started needs its delivery (created if missing: a worker died
    in between) and, once that delivery is final, the callback must hear of it.
    """
    tenant_id, callback_id = key
    record = schedule_store.get(tenant_id, callback_id)
    report.records_read += 1
    if record is None or record.state not in rules.LIVE_STATES:
        return
    if record.open_due is None or float(record.open_due) != due:
        return
    fired = int(record.fired_count)
    if record.state == schedule_store.SCHEDULED:
        queue.send_now(
            [schedule_store.fire_message(tenant_id, callback_id, fired, record.repeat_type)]
        )
        schedule_store.rearm(tenant_id, callback_id, due, now)
        report.firings_requeued += 1
        return
    firing = fired - 1
    delivery = deliveries.get(scheduler.delivery_id_for(callback_id, firing))
    report.records_read += 1
    if delivery is None:
        scheduler.repair_firing(record, firing)
        report.firings_repaired += 1
    elif delivery.state in FINAL:
        hook = getattr(registry.family(delivery.family), "on_final", None)
        if hook is not None:
            hook(delivery)
        report.firings_repaired += 1
    elif delivery.open_due is not None:
        # Its delivery is still being retried: the deliveries' own reconcile watches that;
        # look at the callback again once that retry is due.
        schedule_store.rearm(tenant_id, callback_id, due, float(delivery.open_due) + 1)
        return
    schedule_store.rearm(tenant_id, callback_id, due, now)
