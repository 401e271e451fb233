"""``python -m bench.fanout``: fan-out of any size (issue 12, item 5).

An event matching 10, 1,000 and 20,000 targets of a synthetic family (campaign registrations
cannot overlap per event type, so no real family reaches that many with one event). For each:
how long ``POST /events``'s work (``ingest.publish``) takes, what it costs in AWS calls, and,
after the worker has run the queued ``fanout`` chunks, whether every delivery was created
exactly once. The worker here runs only the chunks: the deliveries' own work messages are
counted as they are sent, not queued (sending them is the engine bench's subject), which keeps
moto's queue shallow (its receives slow down as a queue fills).

``--aws-faults RATE`` runs the same against an embedded AWS that fails that share of calls
(``devstack.faults``): chunks then fail and come back, and the count must still be exact.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from typing import Any

from bench.common import start_embedded_aws

FAMILY = "bench-fanout"


def _register(state: dict[str, int]) -> None:
    from chalicelib.delivery import registry
    from chalicelib.delivery.registry import PublishedEvent, Skip, Target

    class Synthetic:
        name = FAMILY

        def match(self, event: PublishedEvent) -> list[Target]:
            return [
                Target(self.name, f"t{i:06d}", f"http://127.0.0.1:9/t{i}")
                for i in range(state["count"])
            ]

        def prepare(self, delivery, attempt_no, use_backup):  # type: ignore[no-untyped-def]
            return Skip("bench")

        def target_gone(self, delivery, reason):  # type: ignore[no-untyped-def]
            pass

    registry.register_family(Synthetic())


_DELIVER_SENT: Counter[str] = Counter()


def _keep_deliver_messages_off_the_queue() -> None:
    """The chunks' ``deliver`` messages are counted here instead of queued: moto's SQS slows
    down with the queue's depth (every receive walks the queue), which would measure moto, not
    the fan-out. ``fanout`` messages still go through SQS."""
    from chalicelib.delivery import queue

    real = queue.send_now

    def send_now(messages: Any, delay_seconds: int = 0) -> None:
        rest = []
        delivers = []
        for message in messages:
            if message.get("kind") == "deliver":
                _DELIVER_SENT[str(message["delivery_id"])] += 1
                delivers.append(json.dumps(message))
            else:
                rest.append(message)
        # the SendMessageBatch calls these would have taken
        queue.Counters.send_calls += len(queue._batches(delivers))
        if rest:
            real(rest, delay_seconds)

    queue.send_now = send_now  # type: ignore[assignment]


def _run_chunks(deadline_s: float) -> dict[str, Any]:
    """Receive until the queue is empty, running ``fanout`` messages through the real worker."""
    import boto3

    from chalicelib.delivery import worker

    sqs = boto3.client("sqs")
    url = os.environ["RINGBACK_DELIVERY_QUEUE_URL"]
    deliver_messages = _DELIVER_SENT
    chunks_run = chunk_failures = 0
    faults_seen: Counter[str] = Counter()
    deadline = time.monotonic() + deadline_s
    idle = 0
    while time.monotonic() < deadline:
        try:
            got = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=5
            ).get("Messages", [])
        except Exception as exc:  # an injected AWS fault: receive again
            faults_seen[type(exc).__name__] += 1
            continue
        if not got:
            idle += 1
            if idle > 40:  # 8 s: longer than the 5 s a failed chunk stays invisible
                break
            time.sleep(0.2)
            continue
        idle = 0
        done = []
        for message in got:
            body = json.loads(message["Body"])
            if body["kind"] == "deliver":
                deliver_messages[body["delivery_id"]] += 1
                done.append(message)
                continue
            failed = worker.handle_batch(
                [{"messageId": message["MessageId"], "body": message["Body"]}]
            )
            chunks_run += 1
            if failed:
                chunk_failures += 1
            else:
                done.append(message)
        for message in done:
            try:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            except Exception as exc:  # it comes back; a repeated chunk does nothing twice
                faults_seen[type(exc).__name__] += 1
    return {
        "deliver_messages": deliver_messages,
        "chunks_run": chunks_run,
        "chunk_failures": chunk_failures,
        "faults_seen": dict(faults_seen),
    }


def _count_deliveries(event_id: str) -> int:
    """Deliveries that exist for the event: those its record lists (an inline fan-out) and
    those on the ``by_event`` index (a chunked one), each read back."""
    from chalicelib.storage import deliveries

    count, cursor = 0, None
    while True:
        page = deliveries.event_page(event_id, limit=1000, cursor=cursor)
        count += len(page.records)
        cursor = page.next_cursor
        if cursor is None:
            return count


def bench(counts: list[int]) -> list[dict[str, Any]]:
    from chalicelib.delivery import ingest, queue

    state = {"count": 0}
    _register(state)
    _keep_deliver_messages_off_the_queue()
    rows = []
    for count in counts:
        state["count"] = count
        _DELIVER_SENT.clear()
        sends_before = queue.Counters.send_calls
        started = time.perf_counter()
        while True:
            try:
                published = ingest.publish(
                    "f" * 24,
                    "fanout",
                    {"n": count},
                    idempotency_key=f"bench-{count}",
                    families=[FAMILY],
                )
                break
            except Exception as exc:  # a 5xx: the publisher retries with its key
                print(f"  publish failed ({type(exc).__name__}); retrying with the same key")
        accept_s = time.perf_counter() - started
        sends = queue.Counters.send_calls - sends_before
        ran = _run_chunks(deadline_s=900)
        created = _count_deliveries(published.event_id)
        messages: Counter[str] = ran["deliver_messages"]
        rows.append(
            {
                "targets": count,
                "accept_seconds_on_moto": round(accept_s, 3),
                "sqs_send_calls_in_request": sends,
                "inline": count <= ingest.FANOUT_INLINE_LIMIT,
                "chunks_run": ran["chunks_run"],
                "chunk_failures_retried": ran["chunk_failures"],
                "aws_errors_seen_by_the_bench_loop": ran["faults_seen"],
                "deliveries_created": created,
                "distinct_deliveries_queued": len(messages),
                "created_exactly_once": created == count == len(messages),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--counts", default="10,1000,20000")
    parser.add_argument("--aws-faults", type=float, default=0.0, metavar="RATE")
    args = parser.parse_args(argv)
    start_embedded_aws(faults=args.aws_faults)
    rows = bench([int(c) for c in args.counts.split(",")])
    for row in rows:
        print(json.dumps(row), flush=True)
    base = rows[0]["accept_seconds_on_moto"]
    for row in rows[1:]:
        ratio = row["accept_seconds_on_moto"] / base if base else 0
        print(f"accept time, {row['targets']} vs {rows[0]['targets']} targets: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
