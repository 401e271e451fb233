"""The SQS-triggered dispatcher: a batch of work messages, processed in parallel.

A slow receiver must not hold up the rest of its batch, so each record runs on its own thread
(sends are I/O). A record whose processing raised is reported as failed so SQS delivers it again;
handlers are idempotent, so redelivering a record that had partly run is safe.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chalicelib import logs
from chalicelib.delivery import queue, registry

log = logging.getLogger("ringback.worker")

EARLY_WAIT_LIMIT = 2.0
MAX_PARALLEL = 64  # local pollers share one process; a Lambda batch is at most 10


def _message(record: dict[str, Any]) -> dict[str, Any]:
    body = record.get("body")
    message = json.loads(body) if isinstance(body, str) else body
    if not isinstance(message, dict) or "kind" not in message:
        raise ValueError("not a work message")
    return message


def process(message: dict[str, Any]) -> None:
    """Run one work message, waiting out the sub-second remainder of its due time."""
    due_at = message.get("due_at")
    if isinstance(due_at, int | float):
        early = float(due_at) - time.time()
        if early > EARLY_WAIT_LIMIT:
            # SQS delays in whole seconds and the sweeper hands over a minute ahead; anything
            # earlier than that goes back to wait.
            key = hashlib.sha256(json.dumps(message, sort_keys=True).encode()).hexdigest()[:24]
            queue.send_at(message, float(due_at), f"early.{key}")
            return
        if early > 0:
            time.sleep(early)
    registry.kind(str(message["kind"])).handle(message)


_LOGGED_IDS = ("tenant_id", "event_id", "delivery_id", "callback_id", "attempt")


def _ids(message: dict[str, Any]) -> dict[str, Any]:
    """The ids a work message carries, for every log line written while it runs."""
    return {name: message.get(name) for name in _LOGGED_IDS}


def _run(record: dict[str, Any]) -> str | None:
    message_id = str(record.get("messageId", ""))
    with logs.scope(clear=True, stage="dispatch", message_id=message_id):
        try:
            message = _message(record)
            logs.bind(kind=message.get("kind"), **_ids(message))
            process(message)
        except Exception:
            log.exception("work message %s failed; SQS will deliver it again", message_id)
            return message_id
    return None


def handle_batch(records: list[dict[str, Any]]) -> list[str]:
    """Process a batch; returns the message ids that failed."""
    if not records:
        return []
    if len(records) == 1:
        failed = _run(records[0])
        return [failed] if failed is not None else []
    results = list(_pool().map(_run, records))
    return [message_id for message_id in results if message_id is not None]


@functools.cache
def _pool() -> ThreadPoolExecutor:
    """One pool for the life of the process: a warm Lambda (or a local poller) reuses its threads
    instead of starting ten per batch. Threads start only as needed, up to the cap; handlers never
    submit to this pool themselves, so a full pool cannot deadlock."""
    return ThreadPoolExecutor(max_workers=MAX_PARALLEL, thread_name_prefix="send")


def handle_dead_letters(records: list[dict[str, Any]]) -> None:
    """Messages SQS gave up on: let their kind record the failure where users can see it."""
    for record in records:
        with logs.scope(clear=True, stage="dead_letter", message_id=record.get("messageId")):
            try:
                message = _message(record)
            except ValueError:
                log.error(
                    "unreadable dead letter %s dropped: %r",
                    record.get("messageId"),
                    record.get("body"),
                )
                continue
            logs.bind(kind=message.get("kind"), **_ids(message))
            registry.kind(str(message["kind"])).dead_letter(message)
