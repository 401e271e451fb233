"""Delivery engine benchmarks (issue 3). Run: ``make bench`` or ``python -m bench.engine``.

(a) a batch of 10 deliveries to a receiver that takes 50 ms, against one request: parallel sends
    mean a batch costs about one receiver round trip, not ten (target <= 1.5x);
(b) sustained deliveries/s through the whole engine against a raw pooled ``requests`` loop to the
    same receiver (target >= 0.8): once to a receiver that answers at once (one thread against
    one worker), once to the 50 ms receiver at equal concurrency (10 threads against batches of
    10). Over moto every AWS call is serialised, so each figure also prints how many AWS calls a
    delivery made and what share of the time went on waiting for them;
(c) fan-out of one event to 1,000 targets: SQS send calls (target <= 100) and DynamoDB items
    read while matching (target ~ matches).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
import requests.adapters

from bench.common import AwsCallMeter, Receiver, receive_all, show, start_embedded_aws, timed


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


def _engine_batches(records: list[dict[str, Any]]) -> None:
    from chalicelib.delivery import engine

    for i in range(0, len(records), 10):
        engine.on_work_batch(records[i : i + 10])


def bench_batch(slow: Receiver, meter: AwsCallMeter, rounds: int = 5) -> dict[str, Any]:
    """Cold: the first batch to new registrations (secrets not yet decrypted in this process,
    health not yet known). Warm: the same registrations again, as a busy worker sees them."""
    from chalicelib.delivery import engine

    tenant_id = _setup_campaign(slow.url, 10)
    session = requests.Session()
    session.post(slow.url, data=b"warm")
    one = min(timed(lambda: session.post(slow.url, data=b"{}")) for _ in range(5))
    runs: list[tuple[float, int, float, dict[str, int]]] = []
    for _ in range(1 + rounds):
        _publish(tenant_id, [f"bench.{i}" for i in range(10)])
        records = receive_all(10)
        meter.reset()
        elapsed = timed(lambda: engine.on_work_batch(records))  # noqa: B023
        runs.append((elapsed, meter.total_calls, meter.waited, dict(meter.calls)))
    cold, warm_runs = runs[0], sorted(runs[1:])
    warm = warm_runs[len(warm_runs) // 2]
    return {
        "one_request_s": round(one, 4),
        "cold_batch_of_10_s": round(cold[0], 4),
        "cold_ratio": round(cold[0] / one, 2),
        "cold_aws_calls": cold[1],
        "warm_batch_of_10_s": round(warm[0], 4),
        "warm_rounds": rounds,
        "warm_ratio": round(warm[0] / one, 2),
        "warm_aws_calls": warm[1],
        "warm_aws_calls_by_operation": warm[3],
        "warm_waiting_on_aws_s": round(warm[2], 4),
        "target": "<= 1.5 (whole batch, warm)",
    }


def bench_throughput(fast: Receiver, meter: AwsCallMeter, total: int = 300) -> dict[str, Any]:
    """One worker, one batch at a time, against one thread posting in a loop, to a receiver
    that answers at once: the engine's whole per-delivery cost against bare HTTP."""
    tenant_id = _setup_campaign(fast.url, 10)
    session = requests.Session()
    raw = timed(lambda: [session.post(fast.url, data=b"{}") for _ in range(total)])
    for _ in range(0, total, 10):
        _publish(tenant_id, [f"bench.{i}" for i in range(10)])
    _engine_batches(receive_all(10))  # warm: secrets decrypted, health known
    before = fast.count
    records = receive_all(total - 10)
    meter.reset()
    elapsed = timed(lambda: _engine_batches(records))
    delivered = fast.count - before
    calls, waited = meter.total_calls, meter.waited
    raw_rate = total / raw
    engine_rate = delivered / elapsed
    storage_rate = _raw_storage_rate(tenant_id, records, delivered)
    return {
        "deliveries": delivered,
        "raw_pooled_requests_per_s": round(raw_rate, 1),
        "engine_deliveries_per_s": round(engine_rate, 1),
        "ratio": round(engine_rate / raw_rate, 3),
        "target": ">= 0.8",
        "aws_calls_per_delivery": round(calls / delivered, 2),
        "share_of_time_waiting_on_aws": round(waited / elapsed, 2),
        "raw_dynamodb_claim_read_record_per_s": round(storage_rate, 1),
        "engine_vs_raw_dynamodb": round(engine_rate / storage_rate, 2),
    }


def _raw_storage_rate(tenant_id: str, records: list[dict[str, Any]], count: int) -> float:
    """The storage ceiling: per delivery, the engine's three DynamoDB calls made bare with boto3
    (a conditional UpdateItem returning the item, a GetItem of the registration, an UpdateItem),
    from 10 threads like a batch, on the same tables and items. Nothing else: no HTTP, no engine."""
    import json

    import boto3

    from chalicelib.storage.campaign import CampaignRegistrationModel
    from chalicelib.storage.deliveries import DeliveryModel

    ddb = boto3.client("dynamodb")
    deliveries_table = DeliveryModel.Meta.table_name
    registrations_table = CampaignRegistrationModel.Meta.table_name
    delivery_ids = [json.loads(r["body"])["delivery_id"] for r in records]
    callback_id = next(iter(CampaignRegistrationModel.query(tenant_id))).callback_id

    def one(i: int) -> None:
        key = {"delivery_id": {"S": delivery_ids[i % len(delivery_ids)]}}
        ddb.update_item(
            TableName=deliveries_table,
            Key=key,
            UpdateExpression="SET lease_until = :until",
            ConditionExpression="attribute_not_exists(lease_until) OR lease_until < :until",
            ExpressionAttributeValues={":until": {"N": str(time.time() + 1000 + i)}},
            ReturnValues="ALL_NEW",
        )
        ddb.get_item(
            TableName=registrations_table,
            Key={"company_id": {"S": tenant_id}, "callback_id": {"S": callback_id}},
            ConsistentRead=False,
        )
        ddb.update_item(
            TableName=deliveries_table,
            Key=key,
            UpdateExpression="REMOVE lease_until SET updated_at = :now",
            ExpressionAttributeValues={":now": {"S": str(time.time())}},
        )

    with ThreadPoolExecutor(max_workers=10) as pool:
        elapsed = timed(lambda: list(pool.map(one, range(count))))
    return count / elapsed


def bench_throughput_at_receiver_latency(
    slow: Receiver, meter: AwsCallMeter, total: int = 200
) -> dict[str, Any]:
    """The same comparison at equal concurrency (10 in flight) to the 50 ms receiver: a pool of
    10 threads sharing one pooled session, against the engine's batches of 10."""
    tenant_id = _setup_campaign(slow.url, 10)
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=10)
    session.mount("http://", adapter)
    with ThreadPoolExecutor(max_workers=10) as pool:
        raw = timed(
            lambda: list(pool.map(lambda _: session.post(slow.url, data=b"{}"), range(total)))
        )
    for _ in range(0, total, 10):
        _publish(tenant_id, [f"bench.{i}" for i in range(10)])
    _engine_batches(receive_all(10))
    before = slow.count
    records = receive_all(total - 10)
    meter.reset()
    elapsed = timed(lambda: _engine_batches(records))
    delivered = slow.count - before
    raw_rate = total / raw
    engine_rate = delivered / elapsed
    return {
        "deliveries": delivered,
        "raw_pooled_requests_per_s (10 threads)": round(raw_rate, 1),
        "engine_deliveries_per_s (batches of 10)": round(engine_rate, 1),
        "ratio": round(engine_rate / raw_rate, 3),
        "aws_calls_per_delivery": round(meter.total_calls / delivered, 2),
        "share_of_time_waiting_on_aws": round(meter.waited / elapsed, 2),
        "target": ">= 0.8",
    }


def main() -> None:
    start_embedded_aws()
    meter = AwsCallMeter()
    slow = Receiver(delay=0.05)
    fast = Receiver()
    show("(a) batch of 10 to a 50 ms receiver", bench_batch(slow, meter))
    show("(b) sustained deliveries/s vs raw pooled requests", bench_throughput(fast, meter))
    show(
        "(b') the same at equal concurrency to the 50 ms receiver",
        bench_throughput_at_receiver_latency(slow, meter),
    )
    # (c) fan-out of one event to many targets: python -m bench.fanout


if __name__ == "__main__":
    main()
