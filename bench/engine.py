"""Delivery engine benchmarks (issue 3). Run: ``make bench`` or ``python -m bench.engine``.

(a) a batch of 10 deliveries to a receiver that takes 50 ms, against one request: parallel sends
    mean a batch costs about one receiver round trip, not ten (target <= 1.5x);
(b) sustained deliveries/s through the whole engine against a raw pooled ``requests`` loop to the
    same receiver (target >= 0.8; over moto every delivery also pays ~4 serialised AWS calls);
(c) fan-out of one event to 1,000 targets: SQS send calls (target <= 100) and DynamoDB items
    read while matching (target ~ matches).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import requests

from bench.common import Receiver, receive_all, show, start_embedded_aws, timed


def _setup_campaign(receiver_url: str, count: int) -> str:
    """A tenant with ``count`` registrations (one per event type) pointing at the receiver."""
    from datetime import UTC, datetime

    from chalicelib.domain.campaign import RegistrationInput
    from chalicelib.storage import campaign as store
    from chalicelib.storage import tenants

    tenant_id = tenants.create_tenant("bench", None).tenant_id
    for i in range(count):
        spec = RegistrationInput(
            event_type=f"bench.{i}",
            campaign_id=None,
            destination_url=receiver_url,
            destination_method="POST",
            content_type="application/json",
            start=datetime(2020, 1, 1, tzinfo=UTC),
            end=None,
            backup_url=None,
        )
        store.create_registration(tenant_id, spec, datetime.now(UTC))
    return tenant_id


def _publish(tenant_id: str, event_types: Sequence[str]) -> None:
    from chalicelib.delivery import ingest

    for event_type in event_types:
        ingest.publish(tenant_id, event_type, {"n": 1})


def bench_batch(slow: Receiver) -> dict[str, float]:
    from chalicelib.delivery import engine

    tenant_id = _setup_campaign(slow.url, 10)
    session = requests.Session()
    session.post(slow.url, data=b"warm")
    one = min(timed(lambda: session.post(slow.url, data=b"{}")) for _ in range(5))
    _publish(tenant_id, [f"bench.{i}" for i in range(10)])
    records = receive_all(10)
    batch = timed(lambda: engine.on_work_batch(records))
    return {
        "deliveries_in_batch": len(records),
        "one_request_s": round(one, 4),
        "batch_of_10_s": round(batch, 4),
        "ratio": round(batch / one, 2),
        "target": "<= 1.5",
    }


def bench_throughput(fast: Receiver, total: int = 300) -> dict[str, float]:
    from chalicelib.delivery import engine

    tenant_id = _setup_campaign(fast.url, 10)
    session = requests.Session()
    raw = timed(lambda: [session.post(fast.url, data=b"{}") for _ in range(total)])
    for _ in range(0, total, 10):
        _publish(tenant_id, [f"bench.{i}" for i in range(10)])
    before = fast.count
    records = receive_all(total)
    elapsed = timed(
        lambda: [engine.on_work_batch(records[i : i + 10]) for i in range(0, len(records), 10)]
    )
    delivered = fast.count - before
    raw_rate = total / raw
    engine_rate = delivered / elapsed
    return {
        "deliveries": delivered,
        "raw_pooled_requests_per_s": round(raw_rate, 1),
        "engine_deliveries_per_s": round(engine_rate, 1),
        "ratio": round(engine_rate / raw_rate, 3),
        "target": ">= 0.8 (engine incl. DynamoDB+SQS over moto vs bare HTTP)",
    }


def bench_fanout(count: int = 1000) -> dict[str, int | str]:
    """A synthetic family matching ``count`` targets: the fan-out path alone (campaign
    registrations cannot overlap per event type, so one event never reaches 1,000 of them)."""
    from chalicelib.delivery import ingest, queue, registry
    from chalicelib.delivery.registry import PublishedEvent, Skip, Target
    from chalicelib.storage import deliveries

    read = {"items": 0}

    class Synthetic:
        name = "bench-synthetic"

        def match(self, event: PublishedEvent) -> list[Target]:
            read["items"] += count  # what a Query returning ``count`` matches reads
            return [
                Target(self.name, f"t{i:04d}", f"http://127.0.0.1:9/t{i}") for i in range(count)
            ]

        def prepare(self, delivery, attempt_no, use_backup):  # type: ignore[no-untyped-def]
            return Skip("bench")

        def target_gone(self, delivery, reason):  # type: ignore[no-untyped-def]
            pass

    registry.register_family(Synthetic())
    sends_before = queue.Counters.send_calls
    started = time.perf_counter()
    published = ingest.publish("f" * 24, "fanout", {"n": 1}, families=["bench-synthetic"])
    elapsed = time.perf_counter() - started
    stored = deliveries.get_event(published.event_id)
    return {
        "targets": count,
        "deliveries_created": published.deliveries,
        "event_lists_deliveries": len(stored.delivery_ids) if stored else 0,
        "sqs_send_calls": queue.Counters.send_calls - sends_before,
        "dynamodb_items_read_matching": read["items"],
        "dynamodb_batch_write_calls": -(-count // 25),
        "seconds_over_moto": round(elapsed, 2),
        "target": "sends <= 100, reads ~ matches",
    }


def main() -> None:
    start_embedded_aws()
    slow = Receiver(delay=0.05)
    fast = Receiver()
    show("(a) batch of 10 to a 50 ms receiver", bench_batch(slow))
    show("(b) sustained deliveries/s vs raw pooled requests", bench_throughput(fast))
    show("(c) fan-out of one event to 1,000 targets", bench_fanout())


if __name__ == "__main__":
    main()
