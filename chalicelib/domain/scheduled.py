"""Pure rules of the Scheduled callbacks API (``/api/1.0/create/`` and friends).

The seed (``scheduled-callback-create.txt``) defines a query-string API: a client asks us to call
``callback_url`` at ``callback_time``, optionally repeating. This module turns the raw query
parameters into a validated :class:`CreateRequest` and computes when a (repeating) callback fires
next. It knows nothing about HTTP, DynamoDB or the clock: ``now`` is always passed in, so every
rule is deterministic and testable.

Conventions shared by every rule here:

* A parameter whose value is the empty string is treated exactly like an absent parameter
  (HTML forms send ``callback_repeat=`` for an untouched field).
* Enumerated values (``callback_repeat``, ``callback_repeat_type``, units, ``response_format``)
  are case-sensitive, as the seed says for ``response_format``.
* Every instant leaving this module is timezone-aware UTC. ``callback_time`` and
  ``callback_repeat_until`` are truncated to whole seconds, the precision the rest of the service
  stores (see ``chalicelib.domain.timeutil``).

The error keys, their HTTP statuses and the order in which :func:`parse_create` checks them are
listed in ``docs/scheduled-errors.md``.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal, get_args
from urllib.parse import urlsplit

from dateutil.parser import isoparser
from dateutil.relativedelta import relativedelta

# --------------------------------------------------------------------------- errors

ERROR_STATUS: dict[str, int] = {
    # common to every function of the API
    "api_key_absent": 401,
    "api_key_invalid": 401,
    "api_key_forbidden": 403,
    "response_format_invalid": 400,
    "callback_not_found": 404,
    "method_not_allowed": 405,
    "unsupported_media_type": 415,
    "internal_error": 500,
    # create
    "callback_url_absent": 400,
    "callback_url_invalid": 400,
    "callback_time_absent": 400,
    "callback_time_invalid": 400,
    "callback_time_expired": 400,
    "callback_already_exists": 409,
    "callback_repeat_invalid": 400,
    "callback_repeat_type_absent": 400,
    "callback_repeat_type_invalid": 400,
    "callback_repeat_interval_unit_absent": 400,
    "callback_repeat_interval_unit_invalid": 400,
    "callback_repeat_interval_absent": 400,
    "callback_repeat_interval_invalid": 400,
    "callback_repeat_count_invalid": 400,
    "callback_repeat_until_invalid": 400,
    "callback_url_forbidden": 400,
    "quota_exceeded": 429,  # the tenant's pending-callbacks quota (with Retry-After)
    # list
    "state_invalid": 400,
    "limit_invalid": 400,
    "cursor_invalid": 400,
}
"""Every error key this API returns and its HTTP status (the registry ``ScheduleError`` uses)."""


class ScheduleError(Exception):
    """A client-visible failure: the seed's error ``key`` plus the HTTP ``status`` to send.

    The status comes from :data:`ERROR_STATUS` so that one key always maps to one status; pass
    ``status`` explicitly only for a key that is not (yet) registered there. An unregistered key
    without a status is a programming error (a typo would otherwise reach a client as a 400).
    """

    key: str
    status: int

    def __init__(self, key: str, status: int | None = None) -> None:
        if status is None:
            if key not in ERROR_STATUS:
                raise ValueError(f"unknown scheduled-API error key {key!r}")
            status = ERROR_STATUS[key]
        super().__init__(key)
        self.key = key
        self.status = status

    def __repr__(self) -> str:
        return f"ScheduleError({self.key!r}, status={self.status})"


# --------------------------------------------------------------------------- data

UNITS = ("seconds", "minutes", "hours", "days", "months", "years")
"""The seed's permitted ``callback_repeat_interval_unit`` values."""

RepeatType = Literal["interval", "immediate"]
REPEAT_TYPES: tuple[str, ...] = get_args(RepeatType)

ResponseFormat = Literal["json", "xml"]
RESPONSE_FORMATS: tuple[str, ...] = get_args(ResponseFormat)

MAX_INT_DIGITS = 18
"""Longest accepted interval/count (fits a signed 64-bit integer; longer is surely a mistake)."""

MAX_URL_LENGTH = 2048
"""Longest accepted ``callback_url`` (the de-facto limit of browsers and most servers)."""


@dataclass(frozen=True)
class Repeat:
    """How a callback repeats.

    ``unit`` and ``interval`` are mandatory in the seed even for ``immediate`` repeats, so they are
    always present; ``immediate`` ignores them. ``count`` is the total number of firings including
    the first one at ``callback_time`` (``None``: unbounded). ``until`` is the last instant a firing
    may be scheduled at, inclusive (``None``: unbounded).
    """

    type: RepeatType
    unit: str
    interval: int
    count: int | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class CreateRequest:
    """A validated ``create`` call.

    ``api_call_parameters`` are the query parameters exactly as received, in the order received,
    minus ``api_key``: the seed echoes the call's parameters back and a secret is never echoed.
    """

    callback_url: str
    callback_time: datetime
    repeat: Repeat | None
    api_call_parameters: dict[str, str] = field(default_factory=dict)
    offset_seconds: int = 0
    """The UTC offset ``callback_time`` was written in: month and year repeats follow the
    client's calendar at that (fixed) offset, see :func:`anchor_at`."""


# --------------------------------------------------------------------------- helpers


def _get(params: Mapping[str, str], name: str) -> str | None:
    """The parameter's value, with the empty string folded into "absent"."""
    value = params.get(name)
    return value if value else None


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


_POSITIVE_INT = re.compile(r"[0-9]+")


def _positive_int(value: str) -> int | None:
    """ASCII decimal digits only (no sign, no spaces, no ``²``), value > 0, at most 18 digits."""
    if len(value) > MAX_INT_DIGITS or not _POSITIVE_INT.fullmatch(value):
        return None
    number = int(value)
    return number if number > 0 else None


# --------------------------------------------------------------------------- api_key, format


def require_api_key(params: Mapping[str, str]) -> str:
    """The ``api_key`` parameter, or ``ScheduleError("api_key_absent")``.

    Whether the key is *valid* needs the account store and is decided by the caller
    (``api_key_invalid``).
    """
    key = _get(params, "api_key")
    if key is None:
        raise ScheduleError("api_key_absent")
    return key


def parse_response_format(params: Mapping[str, str]) -> ResponseFormat:
    """``response_format``: absent (or empty) means ``json``; otherwise exactly ``json``/``xml``.

    The match is case-sensitive as the seed demands (``JSON`` is an error). The caller renders the
    resulting ``response_format_invalid`` error itself in JSON, the default format.
    """
    value = _get(params, "response_format")
    if value is None or value == "json":
        return "json"
    if value == "xml":
        return "xml"
    raise ScheduleError("response_format_invalid")


# --------------------------------------------------------------------------- callback_url

_CONTROL_OR_SPACE = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
_HOST_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?")


def _valid_hostname(netloc: str, hostname: str) -> bool:
    if "[" in netloc:  # IPv6 literal; zone ids ("%25eth0") are refused
        if "%" in hostname:
            return False
        try:
            ipaddress.IPv6Address(hostname)
        except ValueError:
            return False
        return True
    try:
        ascii_host = hostname.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    ascii_host = ascii_host.removesuffix(".")
    if not ascii_host or len(ascii_host) > 253:
        return False
    return all(_HOST_LABEL.fullmatch(label) for label in ascii_host.lower().split("."))


def is_valid_callback_url(url: str) -> bool:
    """Syntax only: an absolute ``http``/``https`` URL with a host (and a valid port, if any).

    Refused: other schemes, relative URLs, an empty host, whitespace or control characters
    anywhere, malformed IPv6 literals, ports outside 1..65535, URLs longer than 2048 characters.
    Whether the destination is *safe* to call (SSRF) is decided by ``chalicelib.domain.urlsafety``.
    """
    if len(url) > MAX_URL_LENGTH or _CONTROL_OR_SPACE.search(url):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return False
    if port == 0:
        return False
    return _valid_hostname(parts.netloc, parts.hostname)


# --------------------------------------------------------------------------- times

_ISO = isoparser(sep="T")

# A client that forgets to URL-encode "+" in "+01:00" sends a space: "2010-11-28T19:55:00 01:00".
# Only this exact shape (a calendar date, "T" or one space, a time, ONE space, then hh, hhmm or
# hh:mm) is repaired to "+01:00"; anything else keeps its meaning.
_SPACE_FOR_PLUS = re.compile(
    r"(?P<datetime>\d{4}-?\d{2}-?\d{2}[T ]\d{2}(?::?\d{2}(?::?\d{2}(?:[.,]\d+)?)?)?)"
    r" (?P<offset>\d{2}(?::?\d{2})?)"
)
_SPACE_SEPARATOR = re.compile(r"(?P<date>\d{4}-?\d{2}-?\d{2}) (?P<time>\d)")


def parse_iso_time(value: str) -> datetime:
    """Parse ISO 8601 with a zone designator (``Z``, ``+01:00``, ``+0100``, ``+01``).

    Returns an aware datetime *in the offset it was written in* (callers wanting the client's
    calendar for month arithmetic can keep it; :func:`parse_create` converts to UTC). Raises
    ``ValueError`` for anything else, including a time without a zone and a date alone.

    Lenient on purpose: a space directly before a numeric offset is read as ``+`` (an unencoded
    ``+`` in a query string decodes to a space), and a single space may separate date and time
    (RFC 3339 style). The date/time separator must otherwise be ``T``.
    """
    text = value
    repaired = _SPACE_FOR_PLUS.fullmatch(text)
    if repaired:
        text = f"{repaired['datetime']}+{repaired['offset']}"
    text = _SPACE_SEPARATOR.sub(r"\g<date>T\g<time>", text, count=1)
    try:
        parsed = _ISO.isoparse(text)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"not ISO 8601: {value!r}") from exc
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(f"no zone designator: {value!r}")
    return parsed


def _parse_utc_seconds(value: str) -> datetime:
    """:func:`parse_iso_time`, in UTC, truncated to whole seconds."""
    parsed = parse_iso_time(value)
    try:
        return parsed.astimezone(UTC).replace(microsecond=0)
    except OverflowError as exc:  # "9999-12-31T23:59:59-01:00" is past datetime.max in UTC
        raise ValueError(f"out of range: {value!r}") from exc


# --------------------------------------------------------------------------- parse_create


def parse_create(params: Mapping[str, str], now: datetime) -> CreateRequest:
    """Validate a ``create`` call's query parameters; raise the first ``ScheduleError`` found.

    Checks, in this order (the first failure wins):

    1. ``response_format`` (``response_format_invalid``) and ``api_key`` presence
       (``api_key_absent``); the API layer normally checks both before calling this.
    2. ``callback_url``: absent -> ``callback_url_absent``; not an absolute http(s) URL with a
       host -> ``callback_url_invalid``.
    3. ``callback_time``: absent -> ``callback_time_absent``; not ISO 8601 with a zone ->
       ``callback_time_invalid``; earlier than ``now`` -> ``callback_time_expired``.
    4. ``callback_repeat``: not ``0``/``1`` -> ``callback_repeat_invalid``. When ``0`` or absent,
       every other ``callback_repeat_*`` parameter is ignored (not even validated).
    5. When ``1``: ``callback_repeat_type``, then ``callback_repeat_interval_unit``, then
       ``callback_repeat_interval`` (each ``_absent`` then ``_invalid``), then the optional
       extensions ``callback_repeat_count`` and ``callback_repeat_until`` (``_invalid``).

    ``now`` must be timezone-aware. An interval whose first repeat would fall after year 9999 is
    ``callback_repeat_interval_invalid``.
    """
    _require_aware(now, "now")
    parse_response_format(params)
    require_api_key(params)

    callback_url = _get(params, "callback_url")
    if callback_url is None:
        raise ScheduleError("callback_url_absent")
    if not is_valid_callback_url(callback_url):
        raise ScheduleError("callback_url_invalid")

    raw_time = _get(params, "callback_time")
    if raw_time is None:
        raise ScheduleError("callback_time_absent")
    try:
        precise = parse_iso_time(raw_time)
        callback_time = _parse_utc_seconds(raw_time)
    except ValueError:
        raise ScheduleError("callback_time_invalid") from None
    if precise < now:
        raise ScheduleError("callback_time_expired")
    offset = precise.utcoffset()
    offset_seconds = int(offset.total_seconds()) if offset is not None else 0

    repeat = _parse_repeat(params, anchor_at(callback_time, offset_seconds))
    echoed = {name: value for name, value in params.items() if name != "api_key"}
    return CreateRequest(
        callback_url=callback_url,
        callback_time=callback_time,
        repeat=repeat,
        api_call_parameters=echoed,
        offset_seconds=offset_seconds,
    )


def anchor_at(callback_time: datetime, offset_seconds: int) -> datetime:
    """``callback_time`` (any aware datetime) seen at the client's fixed UTC offset: the anchor
    :func:`fire_time` and :func:`next_fire` take, so "monthly from Jan 31 23:30 -05:00" stays on
    the client's month ends rather than UTC's (Feb 1 04:30Z). A fixed offset knows no daylight
    saving time: the wall-clock hour may move by one across a DST change."""
    _require_aware(callback_time, "callback_time")
    return callback_time.astimezone(timezone(timedelta(seconds=offset_seconds)))


def _parse_repeat(params: Mapping[str, str], callback_time: datetime) -> Repeat | None:
    """Steps 4 and 5 of :func:`parse_create`."""
    flag = _get(params, "callback_repeat")
    if flag is None or flag == "0":
        return None
    if flag != "1":
        raise ScheduleError("callback_repeat_invalid")

    repeat_type = _get(params, "callback_repeat_type")
    if repeat_type is None:
        raise ScheduleError("callback_repeat_type_absent")
    if repeat_type not in REPEAT_TYPES:
        raise ScheduleError("callback_repeat_type_invalid")

    unit = _get(params, "callback_repeat_interval_unit")
    if unit is None:
        raise ScheduleError("callback_repeat_interval_unit_absent")
    if unit not in UNITS:
        raise ScheduleError("callback_repeat_interval_unit_invalid")

    raw_interval = _get(params, "callback_repeat_interval")
    if raw_interval is None:
        raise ScheduleError("callback_repeat_interval_absent")
    interval = _positive_int(raw_interval)
    if interval is None:
        raise ScheduleError("callback_repeat_interval_invalid")

    count: int | None = None
    raw_count = _get(params, "callback_repeat_count")
    if raw_count is not None:
        count = _positive_int(raw_count)
        if count is None:
            raise ScheduleError("callback_repeat_count_invalid")

    until: datetime | None = None
    raw_until = _get(params, "callback_repeat_until")
    if raw_until is not None:
        try:
            until = _parse_utc_seconds(raw_until)
        except ValueError:
            raise ScheduleError("callback_repeat_until_invalid") from None
        if until <= callback_time:
            raise ScheduleError("callback_repeat_until_invalid")

    repeat = Repeat(
        type="interval" if repeat_type == "interval" else "immediate",
        unit=unit,
        interval=interval,
        count=count,
        until=until,
    )
    if repeat.type == "interval":
        try:
            fire_time(callback_time, repeat, 1)
        except OverflowError:
            raise ScheduleError("callback_repeat_interval_invalid") from None
    return repeat


# --------------------------------------------------------------------------- schedule arithmetic

_FIXED_SECONDS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}
_CALENDAR_MONTHS = {"months": 1, "years": 12}
_ONE_MICROSECOND = timedelta(microseconds=1)


def fire_time(anchor: datetime, repeat: Repeat, k: int) -> datetime:
    """The ``k``-th fire time (``k`` = 0 is ``anchor``) of an interval series, in UTC.

    Always computed from the anchor as ``anchor + k * interval``, never by adding one interval to
    the previous fire time, so there is no drift: monthly from Jan 31 gives Feb 28 (29 in leap
    years), Mar 31, Apr 30, May 31... rather than sticking at the 28th after February.

    Seconds to days are exact elapsed time (a day is 86,400 s). Months and years are calendar
    arithmetic (``dateutil.relativedelta``, day clipped to the month's length, Feb 29 + 1 year =
    Feb 28) done in the anchor's own offset: pass the anchor with the client's offset to follow
    the client's calendar, or in UTC to follow UTC's. Raises ``OverflowError`` past year 9999.
    """
    _require_aware(anchor, "anchor")
    if k < 0:
        raise ValueError("k must be >= 0")
    if repeat.interval <= 0:
        raise ValueError("interval must be positive")
    if repeat.unit in _FIXED_SECONDS:
        seconds = _FIXED_SECONDS[repeat.unit] * repeat.interval * k
        try:
            return anchor.astimezone(UTC) + timedelta(seconds=seconds)
        except OverflowError as exc:
            raise OverflowError("fire time out of range") from exc
    if repeat.unit in _CALENDAR_MONTHS:
        months = _CALENDAR_MONTHS[repeat.unit] * repeat.interval * k
        try:
            return (anchor + relativedelta(months=months)).astimezone(UTC)
        except (OverflowError, ValueError) as exc:
            raise OverflowError("fire time out of range") from exc
    raise ValueError(f"unknown unit {repeat.unit!r}")


def _first_slot_at_or_after(anchor: datetime, repeat: Repeat, moment: datetime, lowest: int) -> int:
    """Smallest ``k >= lowest`` with ``fire_time(anchor, repeat, k) >= moment``, without looping
    over every slot (a 1-second series after a day-long outage has 86,400 missed slots)."""
    if repeat.unit in _FIXED_SECONDS:
        step_us = _FIXED_SECONDS[repeat.unit] * repeat.interval * 1_000_000
        elapsed_us = (moment - anchor) // _ONE_MICROSECOND
        return max(lowest, -(-elapsed_us // step_us))
    step_months = _CALENDAR_MONTHS[repeat.unit] * repeat.interval
    local = moment.astimezone(anchor.tzinfo)
    months = (local.year - anchor.year) * 12 + (local.month - anchor.month)
    # fire_time(k) for this k lies in an earlier calendar month than `moment`: a safe start.
    k = max(lowest, months // step_months - 1)
    while fire_time(anchor, repeat, k) < moment:
        k += 1
    return k


def _fire_time_or_none(anchor: datetime, repeat: Repeat, k: int) -> datetime | None:
    try:
        return fire_time(anchor, repeat, k)
    except OverflowError:
        return None


def next_fire(
    anchor: datetime,
    repeat: Repeat | None,
    fired_count: int,
    *,
    completed_at: datetime | None,
    now: datetime,
) -> datetime | None:
    """When to fire next, after ``fired_count`` firings; ``None`` when the series is over.

    ``anchor`` is the callback_time, ``completed_at`` when the latest firing completed (``None``
    before the first), ``now`` the current time. All must be aware; the result is UTC and may be
    in the past (meaning "fire now, late").

    * No repeat: the anchor before the first firing, then ``None``. A one-shot callback that is
      late still fires once.
    * ``count``: finished once ``fired_count >= count`` (count includes the first firing).
    * ``until``: finished when the next time would be after ``until`` (``until`` is inclusive).
    * ``immediate``: the first firing at the anchor, each later one at ``completed_at`` -- "as soon
      as the previous callback has completed" (``completed_at`` is then required).
    * ``interval``: slot ``fired_count``, i.e. ``fire_time(anchor, repeat, fired_count)``, with
      two corrections so a firing never repeats a slot and a backlog never turns into a burst:

      1. never a slot at or before ``completed_at``: slots that elapsed while the previous call
         was still running are skipped (this also keeps the series right when ``fired_count``
         lags the slot index after an earlier skip);
      2. fallen behind: when the next slot after the candidate is also due (the candidate is one
         full interval or more in the past, e.g. after an outage), jump to the first slot at or
         after ``now`` instead of firing every missed slot in a row. Less than one interval late
         is fired late.

      Skipped slots are not firings, so they do not use up ``count``. A series whose next slot
      would be past year 9999 is finished.
    """
    _require_aware(anchor, "anchor")
    _require_aware(now, "now")
    if completed_at is not None:
        _require_aware(completed_at, "completed_at")
    if fired_count < 0:
        raise ValueError("fired_count must be >= 0")

    if repeat is None:
        return anchor.astimezone(UTC) if fired_count == 0 else None
    if repeat.count is not None and fired_count >= repeat.count:
        return None

    candidate: datetime | None
    if fired_count == 0 and repeat.type == "immediate":
        candidate = anchor
    elif repeat.type == "immediate":
        if completed_at is None:
            raise ValueError("an immediate repeat needs completed_at after the first firing")
        candidate = completed_at
    else:
        candidate = _next_interval_slot(anchor, repeat, fired_count, completed_at, now)
    if candidate is None:
        return None
    if repeat.until is not None and candidate > repeat.until:
        return None
    return candidate.astimezone(UTC)


def _next_interval_slot(
    anchor: datetime,
    repeat: Repeat,
    fired_count: int,
    completed_at: datetime | None,
    now: datetime,
) -> datetime | None:
    """The ``interval`` branch of :func:`next_fire`."""
    try:
        k = fired_count
        if completed_at is not None and fired_count > 0:
            k = _first_slot_at_or_after(anchor, repeat, completed_at + _ONE_MICROSECOND, k)
        following = _fire_time_or_none(anchor, repeat, k + 1)
        if following is not None and following <= now:
            k = _first_slot_at_or_after(anchor, repeat, now, k)
        return fire_time(anchor, repeat, k)
    except OverflowError:
        return None


# --------------------------------------------------------------------------- states, list

State = Literal["scheduled", "firing", "completed", "failed", "cancelled"]
STATES: tuple[str, ...] = get_args(State)
"""A callback's life: ``scheduled`` (a firing is due at ``next_fire_at``), ``firing`` (the latest
firing's request is in progress and nothing else is scheduled yet), then one of ``completed``
(the series is over, its last firing was delivered), ``failed`` (its last firing failed, its
receiver answered 410 Gone, or the scheduler could not process a firing) or ``cancelled``."""

LIVE_STATES: tuple[str, ...] = ("scheduled", "firing")
"""States in which a callback may still fire (and may be cancelled)."""

DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 100


@dataclass(frozen=True)
class ListRequest:
    """A validated ``list`` call: an optional state filter, a page size, where to start."""

    state: str | None
    limit: int
    after: str | None  # the callback id the previous page ended with
    api_call_parameters: dict[str, str] = field(default_factory=dict)


def encode_cursor(callback_id: str) -> str:
    """The opaque ``cursor`` a page hands back: the page's last callback id, packed."""
    raw = bytes.fromhex(callback_id)
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The callback id inside a cursor; ``ScheduleError("cursor_invalid")`` for anything else."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{16}", cursor):
        raise ScheduleError("cursor_invalid")
    return base64.urlsafe_b64decode(cursor).hex()


def parse_list(params: Mapping[str, str]) -> ListRequest:
    """``list``: ``state`` (one of :data:`STATES`, case-sensitive), ``limit`` (1..100, default
    50) and ``cursor`` (from the previous page's ``next_cursor``), checked in that order."""
    parse_response_format(params)
    require_api_key(params)
    state = _get(params, "state")
    if state is not None and state not in STATES:
        raise ScheduleError("state_invalid")
    limit = DEFAULT_LIST_LIMIT
    raw_limit = _get(params, "limit")
    if raw_limit is not None:
        parsed = _positive_int(raw_limit)
        if parsed is None or parsed > MAX_LIST_LIMIT:
            raise ScheduleError("limit_invalid")
        limit = parsed
    raw_cursor = _get(params, "cursor")
    after = decode_cursor(raw_cursor) if raw_cursor is not None else None
    echoed = {name: value for name, value in params.items() if name != "api_key"}
    return ListRequest(state=state, limit=limit, after=after, api_call_parameters=echoed)
