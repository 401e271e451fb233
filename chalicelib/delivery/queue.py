"""Putting work on the delivery queue, now or later.

Work due within SQS's 15-minute delay limit goes straight to SQS with ``DelaySeconds``; later work
waits in the due-items table for the sweeper. The delay is rounded down and the message carries
``due_at``, so the worker can wait the last fraction of a second itself: fire times are kept to
the poll interval, not to whole seconds.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Sequence
from typing import Any

import boto3

from chalicelib import settings
from chalicelib.queues import delivery_queue_name
from chalicelib.storage import due

SQS_MAX_DELAY = 900
SQS_BATCH = 10


@functools.cache
def _sqs() -> Any:
    return boto3.client("sqs", region_name=settings.region())


@functools.cache
def _looked_up_url(name: str) -> str:
    url: str = _sqs().get_queue_url(QueueName=name)["QueueUrl"]
    return url


def queue_url() -> str:
    """The delivery queue's URL: from the stage config when set, else looked up once by name
    (so a ``chalice deploy`` stage needs only the queue name it already has)."""
    return settings.delivery_queue_url() or _looked_up_url(delivery_queue_name())


def reset_clients() -> None:
    _sqs.cache_clear()
    _looked_up_url.cache_clear()


class Counters:
    """Calls made, for the benchmarks (fan-out must batch its sends)."""

    send_calls = 0


def _encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), sort_keys=True)


SQS_BATCH_BYTES = 250_000  # SendMessageBatch carries at most 256 KiB in all; keep a margin


def _batches(bodies: Sequence[str]) -> list[list[str]]:
    """Groups of at most ten messages and ``SQS_BATCH_BYTES`` each."""
    groups: list[list[str]] = []
    size = 0
    for body in bodies:
        if not groups or len(groups[-1]) == SQS_BATCH or size + len(body) > SQS_BATCH_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(body)
        size += len(body)
    return groups


def send_now(messages: Sequence[dict[str, Any]], delay_seconds: int = 0) -> None:
    """SendMessageBatch in tens (and under SQS's size limit); raises if any entry failed (the
    caller's retry covers it)."""
    url = queue_url()
    for chunk in _batches([_encode(m) for m in messages]):
        entries = [
            {"Id": str(i), "MessageBody": body, "DelaySeconds": delay_seconds}
            for i, body in enumerate(chunk)
        ]
        Counters.send_calls += 1
        response = _sqs().send_message_batch(QueueUrl=url, Entries=entries)
        if response.get("Failed"):
            raise RuntimeError(
                f"SQS refused {len(response['Failed'])} messages: {response['Failed']}"
            )


def send_at(message: dict[str, Any], due_at: float, item_id: str, now: float | None = None) -> None:
    """Deliver ``message`` to the worker at ``due_at`` (epoch seconds)."""
    now = time.time() if now is None else now
    message = {**message, "due_at": due_at}
    wait = due_at - now
    if wait <= SQS_MAX_DELAY:
        send_now([message], delay_seconds=max(0, min(SQS_MAX_DELAY, math.floor(wait))))
    else:
        due.put(item_id, due_at, _encode(message))
