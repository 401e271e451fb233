"""The SQS queues, by stage.

One delivery queue carries every kind of work message (a delivery attempt, a scheduled firing);
after ``MAX_RECEIVES`` failed receives a message moves to the dead-letter queue, where the DLQ
handler records it as failed so a user sees it and can replay it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MAX_RECEIVES = 5

# Lambda sizing (issue 13). The dispatcher runs a batch's records in parallel threads and each
# record makes at most one send, bounded by RINGBACK_HTTP_TIMEOUT (10 s): a batch of ten slow
# receivers takes one deadline, plus the worker's early wait (2 s) and the AWS calls around the
# send (claim, record, re-queue; each may be retried by botocore under throttling), for which
# AWS_CALL_MARGIN is kept. .chalice/config.json sets these timeouts (tests/test_bounded_sends.py
# checks that they agree), and the queues' visibility timeouts follow AWS's guidance for Lambda
# event sources: at least six times the consuming function's timeout.
AWS_CALL_MARGIN = 20
DISPATCHER_TIMEOUT = 60
DEAD_LETTERS_TIMEOUT = 60
VISIBILITY_TIMEOUT = 6 * DISPATCHER_TIMEOUT
DLQ_VISIBILITY_TIMEOUT = 6 * DEAD_LETTERS_TIMEOUT


@dataclass(frozen=True)
class QueueSpec:
    name: str
    dlq_name: str
    visibility_timeout: int = VISIBILITY_TIMEOUT
    max_receives: int = MAX_RECEIVES
    dlq_visibility_timeout: int = DLQ_VISIBILITY_TIMEOUT


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
