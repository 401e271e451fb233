"""Flow-control benchmark (issue 13): the limiter's AWS calls per delivery.

Run: ``make bench`` or ``python -m bench.flow``. Every AWS call the process makes is counted
through botocore's ``before-call`` event, registered on boto3's default session (SQS, KMS) and on
the client of every PynamoDB model; calls made by the limiter's own model
(``chalicelib.storage.limiter.FlowModel``) are counted apart. Scenarios, each to a fresh
campaign registration and a loopback receiver answering at once:

- unlimited: no limit and no stage default (the limiter must cost nothing);
- rate, under the limit: events trickled in slower than the target's rate;
- rate, backlog: every event published at once to a target limited to 5/s (well below what the
  engine delivers over moto), so nearly every delivery waits: it takes a slot, then sleeps up to
  a second in place or goes back to the queue and comes back at its slot;
- max_in_flight: a concurrency limit only.

"Delivery-path calls" leave out what does not depend on the limiter: the publisher's four calls
per event (Query, BatchWriteItem, PutItem, SendMessageBatch) and the pollers' ReceiveMessage,
DeleteMessageBatch and GetQueueAttributes (their number follows idle time, not work). "Extra" is
the delivery-path calls beyond the unlimited run's: the limiter's own calls plus what waiting
costs (giving the lease back, re-queueing, claiming and reading the registration again).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from bench.common import Receiver, show, start_embedded_aws


class CallCounter:
    """AWS calls seen through botocore's ``before-call`` event, split into the limiter's own
    (its PynamoDB model's client) and everything else."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.total = 0
        self.limiter = 0
        self.by_operation: dict[str, int] = {}

    def _hook(self, own: bool) -> Callable[..., None]:
        def count(model: Any = None, **_: Any) -> None:
            name = getattr(model, "name", "?")
            with self.lock:
                self.total += 1
                if own:
                    self.limiter += 1
                key = f"{'limiter.' if own else ''}{name}"
                self.by_operation[key] = self.by_operation.get(key, 0) + 1

        return count

    def install(self) -> None:
        import boto3

        from chalicelib.storage import base
        from chalicelib.storage.limiter import FlowModel
        from chalicelib.storage.schema import ALL_MODELS

        if boto3.DEFAULT_SESSION is None:
            boto3.setup_default_session()
        assert boto3.DEFAULT_SESSION is not None
        boto3.DEFAULT_SESSION._session.register("before-call", self._hook(False))
        for model in ALL_MODELS:
            model._get_connection().connection.client.meta.events.register(
                "before-call", self._hook(False)
            )
        base.connection().client.meta.events.register("before-call", self._hook(False))
        FlowModel._get_connection().connection.client.meta.events.register(
            "before-call", self._hook(True)
        )

    def reset(self) -> None:
        with self.lock:
            self.total = self.limiter = 0
            self.by_operation = {}

    def snapshot(self) -> tuple[int, int, dict[str, int]]:
        with self.lock:
            return self.total, self.limiter, dict(self.by_operation)


def _registration(receiver_url: str, event_type: str, rate: float | None, most: int | None) -> str:
    from datetime import UTC, datetime

    from chalicelib.domain.campaign import RegistrationInput
    from chalicelib.domain.flow import Limits
    from chalicelib.storage import campaign as store
    from chalicelib.storage import tenants

    tenant_id = tenants.create_tenant(f"bench-{event_type}", None).tenant_id
    spec = RegistrationInput(
        event_type=event_type,
        campaign_id=None,
        destination_url=receiver_url,
        destination_method="POST",
        content_type="application/json",
        start=datetime(2020, 1, 1, tzinfo=UTC),
        end=None,
        backup_url=None,
        limits=Limits(rate, most),
    )
    store.create_registration(tenant_id, spec, datetime.now(UTC))
    return tenant_id


def _run_workers(done: Callable[[], bool], pollers: int = 3, timeout: float = 300.0) -> None:
    import os

    from app import dispatcher
    from devstack.loops import poll_once

    url = os.environ["RINGBACK_DELIVERY_QUEUE_URL"]
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            if poll_once(url, dispatcher) == 0:
                time.sleep(0.02)

    threads = [threading.Thread(target=poll, daemon=True) for _ in range(pollers)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)


def scenario(
    counter: CallCounter,
    name: str,
    *,
    total: int,
    rate: float | None = None,
    most: int | None = None,
    trickle: float = 0.0,
) -> dict[str, Any]:
    """Publish ``total`` events (``trickle`` seconds apart, while workers run) and deliver
    them; returns the AWS calls per delivery, all and the limiter's own."""
    from chalicelib.delivery import ingest

    receiver = Receiver()
    tenant_id = _registration(receiver.url, f"flow.{name}", rate, most)
    # Warm the process (KMS decrypt of the secret, health state) outside the count.
    ingest.publish(tenant_id, f"flow.{name}", {"warm": True})
    _run_workers(lambda: receiver.count >= 1)
    time.sleep(max(1.0, 2.0 / rate) if rate else 0.1)  # let the bucket go idle again
    counter.reset()
    started = time.monotonic()
    target = receiver.count + total

    if trickle:
        publisher = threading.Thread(
            target=lambda: [
                (ingest.publish(tenant_id, f"flow.{name}", {"n": n}), time.sleep(trickle))
                for n in range(total)
            ],
            daemon=True,
        )
        publisher.start()
        _run_workers(lambda: receiver.count >= target)
        publisher.join()
    else:
        for n in range(total):
            ingest.publish(tenant_id, f"flow.{name}", {"n": n})
        _run_workers(lambda: receiver.count >= target)
    elapsed = time.monotonic() - started
    calls, limiter_calls, by_operation = counter.snapshot()
    delivered = receiver.count - (target - total)
    receiver.stop()
    polling = sum(by_operation.get(op, 0) for op in POLLING)
    delivery_path = calls - polling - PUBLISH_CALLS * total
    return {
        "deliveries": delivered,
        "rate_limit": rate,
        "max_in_flight": most,
        "elapsed_s": round(elapsed, 1),
        "delivery_path_calls_per_delivery": round(delivery_path / delivered, 2),
        "limiter_calls_per_delivery": round(limiter_calls / delivered, 2),
        "calls_by_operation": by_operation,
    }


POLLING = ("ReceiveMessage", "DeleteMessageBatch", "GetQueueAttributes")
PUBLISH_CALLS = 4  # Query, BatchWriteItem, PutItem, SendMessageBatch per event with one target


def main() -> None:
    start_embedded_aws()
    import app  # noqa: F401  (registers the families: an event published before matches nothing)

    counter = CallCounter()
    counter.install()
    results = {}
    for name, run in (
        ("unlimited", lambda: scenario(counter, "unlimited", total=100)),
        ("rate_under_limit", lambda: scenario(counter, "under", total=60, rate=20.0, trickle=0.1)),
        ("rate_backlog", lambda: scenario(counter, "backlog", total=100, rate=5.0)),
        ("max_in_flight_only", lambda: scenario(counter, "inflight", total=100, most=5)),
    ):
        started = time.monotonic()
        results[name] = run()
        print(f"({name}: {time.monotonic() - started:.1f} s with set-up)", flush=True)
    base = results["unlimited"]["delivery_path_calls_per_delivery"]
    for name, figures in results.items():
        figures["extra_calls_per_delivery_vs_unlimited"] = round(
            figures["delivery_path_calls_per_delivery"] - base, 2
        )
        show(f"flow control: {name}", figures)


if __name__ == "__main__":
    main()
