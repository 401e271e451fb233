"""Stage settings, read from the environment.

Chalice applies a stage's ``environment_variables`` (``.chalice/config.json``) to the Lambda
process, and the local stack exports the same variables before it imports the app. Values that
shape PynamoDB models (table names, region) are read once at import time; everything else is
read on each call so that tests and the local stack can change behaviour without re-importing.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

DEFAULT_RETRY_SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 36000)


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def stage() -> str:
    """The deployment stage: ``local``, ``dev`` or ``prod``."""
    return _env("RINGBACK_STAGE", "local")


def region() -> str:
    return _env("AWS_DEFAULT_REGION", _env("AWS_REGION", "us-east-1"))


def table_prefix() -> str:
    """Every table name starts with this, so stages never share tables."""
    return _env("RINGBACK_TABLE_PREFIX", f"ringback-{stage()}-")


def table_name(short: str) -> str:
    return f"{table_prefix()}{short}"


def allow_private_targets() -> bool:
    """Loopback/private destinations are allowed only where a developer receives on a laptop."""
    return _env("RINGBACK_ALLOW_PRIVATE_TARGETS", "false").lower() == "true"


def admin_key_hash() -> str:
    """SHA-256 of the operator's admin key; the key itself never sits in config."""
    return _env("RINGBACK_ADMIN_KEY_HASH")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def retry_schedule() -> tuple[int, ...]:
    """Seconds to wait before attempts 2, 3, ... (``RINGBACK_RETRY_SCHEDULE``)."""
    raw = _env("RINGBACK_RETRY_SCHEDULE")
    if not raw.strip():
        return DEFAULT_RETRY_SCHEDULE
    return tuple(int(part) for part in raw.split(",") if part.strip())


def http_timeout() -> float:
    return float(_env("RINGBACK_HTTP_TIMEOUT", "10"))


def retention_seconds() -> float:
    """How long events, deliveries with their attempts and finished scheduled callbacks are kept
    (``RINGBACK_RETENTION_DAYS``, default 30); DynamoDB's TTL removes them after that."""
    return float(_env("RINGBACK_RETENTION_DAYS", "30")) * 24 * 3600


def reconcile_grace_seconds() -> float:
    """How long past its due time unfinished work may sit before the reconciler puts it back on
    its way (``RINGBACK_RECONCILE_GRACE_SECONDS``, default 600): longer than an attempt's lease
    and the queue's redelivery (visibility timeout 360 s), so healthy work in flight is never
    touched."""
    return float(_env("RINGBACK_RECONCILE_GRACE_SECONDS", "600"))


def dead_target_seconds() -> float:
    """A target that failed every attempt for this long is disabled (default 5 days)."""
    return float(_env("RINGBACK_DEAD_TARGET_SECONDS", str(5 * 24 * 3600)))


def delivery_queue_url() -> str:
    return _env("RINGBACK_DELIVERY_QUEUE_URL")


def kms_key_id() -> str:
    return _env("RINGBACK_KMS_KEY_ID", "alias/ringback")


@dataclass(frozen=True)
class Snapshot:
    """The settings in force, for logs and the health endpoint (no secrets)."""

    stage: str
    region: str
    table_prefix: str
    allow_private_targets: bool


def snapshot() -> Snapshot:
    return Snapshot(stage(), region(), table_prefix(), allow_private_targets())
