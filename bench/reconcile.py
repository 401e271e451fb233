"""``python -m bench.reconcile``: what one reconcile reads, with many final deliveries and a
few stuck ones (issue 12: at most 2x the stuck items for 100,000 final and 10 stuck).

Final deliveries carry no ``open_bucket``, so they are not in the reconciler's sparse index at
all. The stuck ones are of both kinds the reconciler finds: half are being retried and their
next message was lost (in the ``by_open`` index), half were written by publish requests whose SQS
send then failed (each request's outbox item is left; the worst case, one request per delivery).
The figure counted is index entries and outboxes plus records read by one reconcile, run as if
a grace period later. A second reconcile right after
shows the re-arm: nothing is read again until another grace period has passed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from bench.common import start_embedded_aws


def bench(final: int, stuck: int) -> dict[str, object]:
    start_embedded_aws()
    from chalicelib.delivery import reconciler
    from chalicelib.domain.retry import Status
    from chalicelib.domain.timeutil import fmt, utcnow
    from chalicelib.storage import deliveries, outbox
    from chalicelib.storage.deliveries import DeliveryModel, NewDelivery

    now = fmt(utcnow())
    started = time.time()

    def new(i: int) -> DeliveryModel:
        return deliveries.build(
            NewDelivery(
                delivery_id=f"{i:024x}",
                tenant_id="b" * 24,
                event_id=f"e{i // 10:023x}",
                family="campaign",
                target_id="t",
                target="http://127.0.0.1:9/x",
                content={"event": {"n": i}},
            ),
            now,
        )

    with DeliveryModel.batch_write() as batch:
        for i in range(final):
            record = new(i)
            record.status = Status.DELIVERED.value
            record.open_bucket = None
            record.open_due = None
            batch.save(record)
            if (i + 1) % 20000 == 0:
                print(f"  {i + 1} final written, {time.time() - started:.0f} s", flush=True)
        for i in range(stuck // 2):  # being retried; the next attempt's message was lost
            record = new(final + i)
            record.status, record.attempt_count = Status.RETRYING.value, 1
            batch.save(record)
    for i in range(stuck // 2, stuck):  # a publish whose SQS send failed: its outbox is left
        record = new(final + i)
        record.open_bucket = record.open_due = None
        outbox.open_outbox([record.delivery_id], time.time())
        record.save()
    write_s = time.time() - started
    later = time.time() + 3600
    t0 = time.perf_counter()
    first = reconciler.reconcile(now=later)
    first_ms = (time.perf_counter() - t0) * 1000
    again = reconciler.reconcile(now=later + 5)
    return {
        "final_deliveries": final,
        "stuck_deliveries": stuck,
        "write_s": round(write_s, 1),
        "first_reconcile": {
            "queried_buckets": first.queried_buckets,
            "index_entries_and_outboxes_read": first.items_read,
            "of_which_outboxes": first.outboxes_read,
            "records_read": first.records_read,
            "items_read_total": first.items_read + first.records_read,
            "requeued": first.deliveries_requeued,
            "ms_on_moto": round(first_ms),
        },
        "next_reconcile": {
            "index_entries_and_outboxes_read": again.items_read,
            "records_read": again.records_read,
        },
        "target": f"items_read_total <= {2 * stuck}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--final", type=int, default=100_000)
    parser.add_argument("--stuck", type=int, default=10)
    args = parser.parse_args(argv)
    print("reconcile cost:", json.dumps(bench(args.final, args.stuck), indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
