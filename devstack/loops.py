"""The local stand-ins for AWS triggers: SQS pollers, a once-a-second sweep and a reconcile
every few seconds.

On AWS, SQS invokes the dispatcher Lambda with batches (and the DLQ handler), and EventBridge
invokes the sweeper every minute. Chalice's local server does neither, so these threads build the
same event dicts and call the same handler functions. They short-poll: a long poll would hold the
embedded AWS's lock (it serialises requests) for the whole wait.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3

from chalicelib import settings

log = logging.getLogger("ringback.devstack")

Handler = Callable[[dict[str, Any], Any], Any]

RECONCILE_EVERY_SECONDS = 5.0
"""On AWS the reconciler runs every minute; locally every few seconds, so a laptop (and the
soak) sees stuck work put back on its way soon after its grace period."""


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": settings.region(),
            }
            for m in messages
        ]
    }


def schedule_event() -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": settings.region(),
        "resources": ["arn:aws:events:local:123456789012:rule/ringback-sweeper"],
        "detail": {},
    }


@functools.cache
def _sqs(region: str, endpoint: str | None) -> Any:
    """One client per process and endpoint: creating one costs milliseconds of CPU, which idle
    pollers would otherwise spend many times a second."""
    return boto3.client("sqs", region_name=region, endpoint_url=endpoint)


@functools.cache
def _queue_arn(queue_url: str, endpoint: str | None) -> str:
    sqs = _sqs(settings.region(), endpoint)
    arn: str = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    return arn


def poll_once(queue_url: str, handler: Handler, max_messages: int = 10) -> int:
    """Receive one batch, run the handler as Lambda would, delete what succeeded.

    Returns how many messages were received. A handler that raises leaves the whole batch to
    come back after the visibility timeout (as on AWS); ``batchItemFailures`` leave just those.
    """
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    sqs = _sqs(settings.region(), endpoint)
    received = sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=max_messages,
        WaitTimeSeconds=0,
        AttributeNames=["All"],
    ).get("Messages", [])
    if not received:
        return 0
    arn = _queue_arn(queue_url, endpoint)
    try:
        result = handler(sqs_event(received, arn), None)
    except Exception:
        log.exception("handler failed; the batch returns after the visibility timeout")
        return len(received)
    failed = (
        {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
        if isinstance(result, dict)
        else set()
    )
    done = [m for m in received if m["MessageId"] not in failed]
    for start in range(0, len(done), 10):
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(done[start : start + 10])
            ],
        )
    return len(received)


class Loops:
    """Worker, dead-letter and sweep threads for ``make run``."""

    def __init__(self, workers: int = 4, idle_sleep: float = 0.05) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._workers = workers
        self._idle_sleep = idle_sleep

    def _poll_forever(self, queue_url: str, handler: Handler, idle: float) -> None:
        while not self._stop.is_set():
            try:
                if poll_once(queue_url, handler) == 0:
                    self._stop.wait(idle)
            except Exception:
                log.exception("poller error")
                self._stop.wait(1.0)

    def _sweep_forever(self, handler: Handler) -> None:
        while not self._stop.is_set():
            try:
                handler(schedule_event(), None)
            except Exception:
                log.exception("sweep error")
            self._stop.wait(1.0)

    def _reconcile_forever(self, handler: Handler, every: float) -> None:
        while not self._stop.wait(every):
            try:
                handler(schedule_event(), None)
            except Exception:
                log.exception("reconcile error")

    def start(self) -> None:
        from app import dead_letters, dispatcher, reconciler, sweeper

        os.environ.setdefault("RINGBACK_REPORT_BATCH_FAILURES", "true")
        work_url = settings.delivery_queue_url()
        dlq_url = os.environ["RINGBACK_DELIVERY_DLQ_URL"]
        plans: list[tuple[str, Callable[[], None]]] = [
            (f"worker-{i}", lambda: self._poll_forever(work_url, dispatcher, self._idle_sleep))
            for i in range(self._workers)
        ]
        plans.append(("dead-letters", lambda: self._poll_forever(dlq_url, dead_letters, 1.0)))
        plans.append(("sweeper", lambda: self._sweep_forever(sweeper)))
        plans.append(
            ("reconciler", lambda: self._reconcile_forever(reconciler, RECONCILE_EVERY_SECONDS))
        )
        for name, target in plans:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
