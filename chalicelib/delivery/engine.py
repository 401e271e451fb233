"""The delivery engine's Lambda entry points, free of Chalice types so tests and the local
stack call exactly what AWS calls. Importing this module registers every family."""

from __future__ import annotations

import os
from typing import Any

from chalicelib.delivery import callnotify as _callnotify  # noqa: F401  (registers the family)
from chalicelib.delivery import campaign as _campaign  # noqa: F401  (registers the family)
from chalicelib.delivery import dispatcher as _dispatcher  # noqa: F401  (registers "deliver")
from chalicelib.delivery import fanout as _fanout  # noqa: F401  (registers "fanout")
from chalicelib.delivery import notification as _notification  # noqa: F401  (registers the family)
from chalicelib.delivery import reconciler, sweeper, worker
from chalicelib.delivery import scheduled as _scheduled  # noqa: F401  (family + "fire")


class BatchFailed(Exception):
    """Raised so SQS redelivers a batch when partial-failure reporting is not configured."""


def on_work_batch(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Dispatcher: returns ``batchItemFailures`` for SQS to redeliver just those records.

    That return value only takes effect when the event source mapping reports batch item
    failures (the ``chalice package`` path adds it). Under plain ``chalice deploy`` it does not,
    so there (``RINGBACK_REPORT_BATCH_FAILURES`` unset) a failure raises instead and SQS
    redelivers the whole batch; the records that succeeded are no-ops the second time.
    """
    failed = worker.handle_batch(records)
    if failed and os.environ.get("RINGBACK_REPORT_BATCH_FAILURES", "").lower() != "true":
        raise BatchFailed(f"{len(failed)} of {len(records)} records failed: {failed}")
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}


def on_dead_letters(records: list[dict[str, Any]]) -> None:
    worker.handle_dead_letters(records)


def on_sweep(window: float = 60.0) -> dict[str, int]:
    report = sweeper.sweep(window=window)
    return {
        "queried_buckets": report.queried_buckets,
        "items_read": report.items_read,
        "handed_over": report.handed_over,
    }


def on_reconcile() -> dict[str, int]:
    report = reconciler.reconcile()
    return {
        "queried_buckets": report.queried_buckets,
        "items_read": report.items_read,
        "records_read": report.records_read,
        "deliveries_requeued": report.deliveries_requeued,
        "firings_requeued": report.firings_requeued,
        "firings_repaired": report.firings_repaired,
    }
