"""The SQS queues, by stage.

One delivery queue carries every kind of work message (a delivery attempt, a scheduled firing);
after ``MAX_RECEIVES`` failed receives a message moves to the dead-letter queue, where the DLQ
handler records it as failed so a user sees it and can replay it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MAX_RECEIVES = 5
VISIBILITY_TIMEOUT = 120  # > the dispatcher Lambda's timeout (60 s), as SQS triggers require


@dataclass(frozen=True)
class QueueSpec:
    name: str
    dlq_name: str
    visibility_timeout: int = VISIBILITY_TIMEOUT
    max_receives: int = MAX_RECEIVES


def delivery_queue_name() -> str:
    """The name is needed when app.py is imported (to declare the SQS trigger), so it comes from
    ``RINGBACK_DELIVERY_QUEUE_NAME`` or the stage, never from a lookup."""
    stage = os.environ.get("RINGBACK_STAGE", "local")
    return os.environ.get("RINGBACK_DELIVERY_QUEUE_NAME", f"ringback-{stage}-deliveries")


def delivery_queue() -> QueueSpec:
    name = delivery_queue_name()
    return QueueSpec(name=name, dlq_name=f"{name}-dlq")


def all_queues() -> list[QueueSpec]:
    return [delivery_queue()]
