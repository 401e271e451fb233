"""Notification callbacks benchmark (issue 4). Run: ``python -m bench.notification [events]``.

Delivered events/s through a batched callback (batchSize 200) against an unbatched one
(batchSize 1), the same events, the same receiver, the same engine: events are buffered first
(bulk writes, untimed), then the clock runs from the first flush until the receiver has every
event. Both pay the same per-delivery engine cost (claim, prepare, send, record: DynamoDB + SQS
round trips, serialised by moto); batching pays it once per 200 events instead of once per
event. A second figure times the per-event buffering path (``NotificationFamily.buffer``, what
``POST /events`` runs), which is the same whatever the batch size.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from bench.common import Receiver, show, start_embedded_aws


def _setup(receiver_url: str, batch_size: int) -> tuple[str, str]:
    from datetime import UTC, datetime

    from chalicelib.domain.notification import CallbackSpec, SubscriptionSpec
    from chalicelib.storage import notification as store
    from chalicelib.storage import tenants

    tenant_id = tenants.create_tenant("bench", None).tenant_id
    now = datetime.now(UTC)
    spec = CallbackSpec("cb", f"{receiver_url}?b={batch_size}", None, batch_size, "u", "p")
    record = store.create_callback(tenant_id, spec, "whsec_" + "A" * 32, now)
    store.create_subscription(tenant_id, SubscriptionSpec("all", "cb", ("EMAIL_BOUNCED",), ()), now)
    return tenant_id, record.callback_id


def _buffer(tenant_id: str, callback_id: str, count: int) -> None:
    from chalicelib.delivery import notification as family
    from chalicelib.domain.ids import new_id
    from chalicelib.domain.notification import event_object
    from chalicelib.storage import notification_buffer as buffers

    base_ms = int(time.time() * 1000)
    items = []
    for i in range(count):
        event_id = new_id()
        body = buffers.encode_event(event_object(event_id, "EMAIL_BOUNCED", {"riid": i}))
        items.append(buffers.Buffered(buffers.item_key(base_ms + i, event_id), event_id, body))
    family.buffer_items(tenant_id, callback_id, "cb", items)  # batch writes; flush due at once


def _drain(receiver: Receiver, expected: int, timeout: float) -> int:
    """Run the dispatcher as the local stack does until ``expected`` events arrived."""
    from app import dispatcher
    from devstack.loops import poll_once

    queue_url = os.environ["RINGBACK_DELIVERY_QUEUE_URL"]
    deadline = time.monotonic() + timeout
    while _events(receiver) < expected and time.monotonic() < deadline:
        if poll_once(queue_url, dispatcher) == 0:
            time.sleep(0.01)
    return _events(receiver)


def _events(receiver: Receiver) -> int:
    return sum(len(json.loads(body)) for body in receiver.bodies)


def bench_delivery(batch_size: int, count: int) -> dict[str, Any]:
    receiver = Receiver()
    receiver.keep_bodies = True
    tenant_id, callback_id = _setup(receiver.url, batch_size)
    _buffer(tenant_id, callback_id, count)
    started = time.perf_counter()
    delivered = _drain(receiver, count, timeout=600)
    elapsed = time.perf_counter() - started
    receiver.stop()
    return {
        "batch_size": batch_size,
        "events": count,
        "events_delivered": delivered,
        "requests": len(receiver.bodies),
        "seconds": round(elapsed, 2),
        "events_per_s": round(delivered / elapsed, 1),
    }


def bench_buffering(count: int) -> dict[str, Any]:
    from chalicelib.delivery.notification import NotificationFamily
    from chalicelib.delivery.registry import PublishedEvent
    from chalicelib.domain.ids import new_id

    receiver = Receiver()
    tenant_id, _ = _setup(receiver.url, 200)
    family = NotificationFamily()
    os.environ["RINGBACK_BATCH_WINDOW"] = "600"  # measure buffering only; nothing flushes
    started = time.perf_counter()
    for i in range(count):
        family.buffer(PublishedEvent(new_id(), tenant_id, "EMAIL_BOUNCED", "", {"riid": i}))
    elapsed = time.perf_counter() - started
    os.environ["RINGBACK_BATCH_WINDOW"] = "0"
    receiver.stop()
    return {
        "events": count,
        "seconds": round(elapsed, 2),
        "events_buffered_per_s": round(count / elapsed, 1),
    }


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    start_embedded_aws()
    os.environ["RINGBACK_BATCH_WINDOW"] = "0"
    batched = bench_delivery(200, count)
    show("batched callback (batchSize 200)", batched)
    unbatched = bench_delivery(1, count)
    show("unbatched callback (batchSize 1)", unbatched)
    show(
        "batched vs unbatched",
        {
            "batched_events_per_s": batched["events_per_s"],
            "unbatched_events_per_s": unbatched["events_per_s"],
            "ratio": round(batched["events_per_s"] / unbatched["events_per_s"], 1),
        },
    )
    show("per-event buffering (the POST /events path)", bench_buffering(min(count, 300)))


if __name__ == "__main__":
    main()
