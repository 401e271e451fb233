"""Shared PynamoDB plumbing: per-stage table names, the endpoint, and transactions.

Table names and the endpoint are read when a model class is created (PynamoDB reads ``Meta``
then), so the process environment must be set before ``chalicelib.storage`` is imported; the
Lambda runtime, the local stack and the test harness all do that.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

from pynamodb.connection import Connection
from pynamodb.exceptions import PutError, TransactWriteError, UpdateError
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from chalicelib import settings
from chalicelib.domain.ids import new_id


def endpoint() -> str | None:
    """The embedded AWS endpoint when one is set (local stack, tests); None on AWS."""
    return os.environ.get("AWS_ENDPOINT_URL") or None


def make_meta(short_name: str) -> Any:
    """A PynamoDB ``Meta`` for one of our tables in the current stage."""

    class Meta:
        table_name = settings.table_name(short_name)
        region = settings.region()
        host = endpoint()
        billing_mode = "PAY_PER_REQUEST"

    return Meta


@functools.cache
def connection() -> Connection:
    """One connection per process: creating a botocore client costs ~50 ms, and clients are
    thread-safe."""
    return Connection(region=settings.region(), host=endpoint())


def transaction() -> TransactWrite:
    """A write transaction: all of its conditions hold, or nothing is written.

    It carries a client request token, so when AWS applied it but the answer was lost, the
    SDK's retry (same token, within 10 minutes) succeeds instead of failing its conditions
    against its own writes. The embedded AWS ignores the token: creates also recognise their
    own committed write after a failed condition (see ``put_new`` and the families' creates)."""
    return TransactWrite(connection=connection(), client_request_token=new_id())


def put_new(record: Model, condition: Any) -> None:
    """A conditional put of an item with a fresh, random key (a new id nobody else can hold).

    If the condition fails, the item can only be ours: AWS applied the put and lost its
    answer, and the SDK's retry found the item. That counts as success."""
    try:
        record.save(condition=condition)
    except PutError as exc:
        if exc.cause_response_code != "ConditionalCheckFailedException":
            raise


def update_if(item: Model, actions: Sequence[Any], condition: Any) -> bool:
    """One conditional UpdateItem: True when it applied, False when its condition did not hold
    (the state moved on: another worker, request or sweep got there first)."""
    try:
        item.update(actions=list(actions), condition=condition)
    except UpdateError as exc:
        if exc.cause_response_code == "ConditionalCheckFailedException":
            return False
        raise
    return True


def cancelled_by_condition(exc: TransactWriteError, index: int | None = None) -> bool:
    """True when the transaction was cancelled because a condition did not hold.

    ``index`` narrows the question to one operation of the transaction (in the order the
    operations were added).
    """
    reasons: list[Any] = list(getattr(exc, "cancellation_reasons", None) or [])
    if not reasons:
        return exc.cause_response_code == "TransactionCanceledException"
    if index is not None:
        reason = reasons[index] if index < len(reasons) else None
        return reason is not None and getattr(reason, "code", None) == "ConditionalCheckFailed"
    return any(getattr(r, "code", None) == "ConditionalCheckFailed" for r in reasons if r)
