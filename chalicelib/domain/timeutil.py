"""ISO 8601 with a zone in, UTC out.

Every stored and returned instant is UTC, second precision, ``YYYY-MM-DDTHH:MM:SSZ``, which sorts
lexically in time order (DynamoDB range keys and string comparisons rely on that).
"""

from __future__ import annotations

from datetime import UTC, datetime

from dateutil.parser import isoparse

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class BadTimestamp(ValueError):
    """Not an ISO 8601 timestamp with a zone designator."""


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def parse_zoned(value: object) -> datetime:
    """Parse ISO 8601 that carries a zone (``2010-01-01T00:00Z``, ``...+01:00``) into UTC."""
    if not isinstance(value, str) or not value.strip():
        raise BadTimestamp("expected an ISO 8601 string")
    try:
        parsed = isoparse(value.strip())
    except (ValueError, OverflowError) as exc:
        raise BadTimestamp(str(exc)) from exc
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise BadTimestamp("a zone designator (Z or +HH:MM) is required")
    return parsed.astimezone(UTC).replace(microsecond=0)


def fmt(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(FORMAT)


def parse_stored(value: str) -> datetime:
    return datetime.strptime(value, FORMAT).replace(tzinfo=UTC)
