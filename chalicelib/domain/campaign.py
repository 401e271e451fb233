"""Campaign callback registrations: input rules and the overlap rule.

The seed: registrations are per company and event type, with an active date range
``[start_date, end_date)`` (open end = forever); two registrations of one company may not share
an event type when their ranges overlap. The comparison lives here, pure; the storage layer makes
DynamoDB hold it under concurrency.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib.domain.timeutil import BadTimestamp, parse_zoned

METHODS = ("POST", "PUT", "GET")
CONTENT_TYPES = (
    "application/json",
    "application/xml",
    "text/xml",
    "application/x-www-form-urlencoded",
)
DEFAULT_METHOD = "POST"
DEFAULT_CONTENT_TYPE = "application/json"
_EVENT_TYPE = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
_MAX_TEXT = 2048


class CampaignInvalid(ValueError):
    """A create request broke a rule; ``field`` names the field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class RegistrationInput:
    event_type: str
    campaign_id: str | None
    destination_url: str
    destination_method: str
    content_type: str
    start: datetime
    end: datetime | None
    backup_url: str | None


UrlCheck = Callable[[str], None]
"""Raises ValueError (with a message for the user) when a destination may not be used."""


def _text(body: Mapping[str, Any], field: str, *, required: bool) -> str | None:
    value = body.get(field)
    if value is None or (isinstance(value, str) and not value.strip() and not required):
        if required:
            raise CampaignInvalid(field, f"{field} is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise CampaignInvalid(field, f"{field} must be a non-empty string")
    if len(value) > _MAX_TEXT:
        raise CampaignInvalid(field, f"{field} is longer than {_MAX_TEXT} characters")
    return value.strip()


def _url(body: Mapping[str, Any], field: str, check: UrlCheck, *, required: bool) -> str | None:
    value = _text(body, field, required=required)
    if value is None:
        return None
    try:
        check(value)
    except ValueError as exc:
        raise CampaignInvalid(field, f"{field} is not allowed: {exc}") from exc
    return value


def _date(body: Mapping[str, Any], field: str) -> datetime | None:
    value = body.get(field)
    if value is None:
        return None
    try:
        return parse_zoned(value)
    except BadTimestamp as exc:
        raise CampaignInvalid(
            field, f"{field} must be ISO 8601 with a zone, like 2010-01-01T00:00Z"
        ) from exc


def validate_create(
    body: Mapping[str, Any], *, now: datetime, url_check: UrlCheck
) -> RegistrationInput:
    """Check a create body. Fields the seed says are not allowed in a create are ignored."""
    event_type = _text(body, "event_type", required=True)
    assert event_type is not None
    if not _EVENT_TYPE.match(event_type):
        raise CampaignInvalid(
            "event_type", "event_type may hold letters, digits and _ . : - (max 128)"
        )
    destination_url = _url(body, "destination_url", url_check, required=True)
    assert destination_url is not None
    backup_url = _url(body, "backup_url", url_check, required=False)
    if backup_url is not None and backup_url == destination_url:
        raise CampaignInvalid("backup_url", "backup_url must differ from destination_url")

    method = body.get("destination_method", DEFAULT_METHOD)
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise CampaignInvalid(
            "destination_method", f"destination_method must be one of {', '.join(METHODS)}"
        )
    content_type = body.get("content_type", DEFAULT_CONTENT_TYPE)
    if not isinstance(content_type, str) or content_type.lower() not in CONTENT_TYPES:
        raise CampaignInvalid(
            "content_type", f"content_type must be one of {', '.join(CONTENT_TYPES)}"
        )

    campaign_id = body.get("campaign_id")
    if campaign_id is not None and (not isinstance(campaign_id, str) or len(campaign_id) > 256):
        raise CampaignInvalid("campaign_id", "campaign_id must be a string")

    start = _date(body, "start_date") or now
    end = _date(body, "end_date")
    if end is not None and end < start:
        raise CampaignInvalid("end_date", "end_date is before start_date")
    return RegistrationInput(
        event_type=event_type,
        campaign_id=campaign_id or None,
        destination_url=destination_url,
        destination_method=method.upper(),
        content_type=content_type.lower(),
        start=start,
        end=end,
        backup_url=backup_url,
    )


def overlaps(a_start: str, a_end: str | None, b_start: str, b_end: str | None) -> bool:
    """Half-open ranges ``[start, end)`` of UTC timestamps in our sortable format.

    An empty range (end == start, a registration deleted the moment it began) overlaps nothing.
    """
    if a_end is not None and a_end <= a_start:
        return False
    if b_end is not None and b_end <= b_start:
        return False
    a_before_b_ends = b_end is None or a_start < b_end
    b_before_a_ends = a_end is None or b_start < a_end
    return a_before_b_ends and b_before_a_ends


def encode_range(start: str, end: str | None) -> str:
    return f"{start}|{end or ''}"


def decode_range(value: str) -> tuple[str, str | None]:
    start, _, end = value.partition("|")
    return start, end or None


def find_conflict(ranges: Mapping[str, str], start: str, end: str | None) -> str | None:
    """The id of a registration whose range overlaps ``[start, end)``, if any (lowest id first)."""
    for callback_id in sorted(ranges):
        other_start, other_end = decode_range(ranges[callback_id])
        if overlaps(start, end, other_start, other_end):
            return callback_id
    return None


def still_open(ranges: Mapping[str, str], now: str) -> dict[str, str]:
    """The ranges that can still be active at ``now`` or later: those not ended by ``now``.

    A range ``[start, end)`` with ``end <= now`` can never again overlap anything that can still
    happen, so the overlap guard drops it on every write. The guard then holds only the live and
    future registrations, however many were created and deleted before (issue 12: unpruned, it
    grew past DynamoDB's 400 KB item limit and every later create failed).
    """
    return {
        callback_id: value
        for callback_id, value in ranges.items()
        if (end := decode_range(value)[1]) is None or end > now
    }


def conflict_from_now(
    ranges: Mapping[str, str], start: str, end: str | None, now: str
) -> str | None:
    """The registration overlapping the part of ``[start, end)`` that lies from ``now`` on.

    The past part of a new range is never checked: whatever it overlaps there was active, or
    not, before the registration existed, and nothing can be delivered to it then. A range that
    ends by ``now`` overlaps nothing.
    """
    return find_conflict(still_open(ranges, now), max(start, now), end)


def is_active(start: str, end: str | None, deleted: bool, now: str) -> bool:
    """In effect right now: started, not ended, not deleted."""
    return not deleted and start <= now and (end is None or now < end)


def is_listed(end: str | None, deleted: bool, now: str) -> bool:
    """The list shows active and future registrations: those whose range has not ended."""
    return not deleted and (end is None or now < end)
