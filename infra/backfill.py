"""``python -m infra.backfill --stage STAGE``: bring deliveries written by earlier releases in line
with what this release reads, so upgrading a stage keeps every event inspectable.

What it does (idempotent: run it again and it changes nothing):

- **``event_key``** (the sparse ``by_event_key`` index, 2026-11-30): a delivery that its event's
  record does not list, and that carries no ``event_key``, gets ``event_key = event_id``, so
  ``GET /events/{id}`` lists it again. Deliveries of inline fan-outs written by this release are
  listed on their event record and left alone; so are scheduled firings (no event record).

It Scans the deliveries table once (an operator's one-off, never a request or delivery path)
and reads each event record at most once; writes are conditional on ``event_key`` being absent.
Run it after the second infra deploy of the upgrade (docs/deploy.md), with the stage's AWS
credentials in the environment; ``--endpoint`` points it at the embedded AWS instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

from devstack.stage import stage_environment


@dataclass
class BackfillReport:
    scanned: int = 0
    listed_on_event: int = 0
    without_event: int = 0
    indexed: int = 0
    already_indexed: int = 0
    events_read: int = 0


def backfill_event_keys() -> BackfillReport:
    """Give ``event_key`` to every delivery its event record does not list."""
    from chalicelib.storage.base import update_if
    from chalicelib.storage.deliveries import DeliveryModel, EventModel

    report = BackfillReport()
    listed: dict[str, frozenset[str] | None] = {}  # event id -> the ids its record lists
    for delivery in DeliveryModel.scan():
        report.scanned += 1
        if delivery.event_key is not None:
            report.already_indexed += 1
            continue
        if delivery.event_id not in listed:
            try:
                event = EventModel.get(delivery.event_id, consistent_read=True)
                listed[delivery.event_id] = frozenset(event.delivery_ids or [])
            except EventModel.DoesNotExist:
                listed[delivery.event_id] = None
        names = listed[delivery.event_id]
        if names is None:
            report.without_event += 1
        elif delivery.delivery_id in names:
            report.listed_on_event += 1
        elif update_if(
            delivery,
            [DeliveryModel.event_key.set(delivery.event_id)],
            DeliveryModel.delivery_id.exists() & DeliveryModel.event_key.does_not_exist(),
        ):
            report.indexed += 1
        else:
            report.already_indexed += 1
    report.events_read = len(listed)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", required=True, help="a stage of .chalice/config.json")
    parser.add_argument("--endpoint", help="an AWS endpoint URL (the embedded AWS)")
    args = parser.parse_args(argv)
    for name, value in stage_environment(args.stage).items():
        os.environ.setdefault(name, value)  # the shell's own RINGBACK_* win, as in the app
    if args.endpoint:
        os.environ["AWS_ENDPOINT_URL"] = args.endpoint
    report = backfill_event_keys()
    print(
        f"deliveries scanned {report.scanned}: {report.indexed} given event_key, "
        f"{report.already_indexed} had it, {report.listed_on_event} listed on their event, "
        f"{report.without_event} without an event record (firings); "
        f"{report.events_read} event records read"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
