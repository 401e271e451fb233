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
    try:
        return parsed.astimezone(UTC).replace(microsecond=0)
    except OverflowError as exc:  # 0001-01-01T00:00+05:30 is before datetime.min in UTC
        raise BadTimestamp("out of range") from exc


def fmt(moment: datetime) -> str:
    """``FORMAT`` with the year always 4 digits: ``strftime("%Y")`` writes year 422 as "422",
    which sorts after "2026" and would break every string comparison of instants."""
    utc = moment.astimezone(UTC)
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}"
        f"T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}Z"
    )


def parse_stored(value: str) -> datetime:
    return datetime.strptime(value, FORMAT).replace(tzinfo=UTC)
