"""Call notifiers: the pure rules and wire formats (seed ``api:customer:callnotify-create``).

This module knows three things and nothing about AWS:

* which values a notifier's ``method`` and ``selection`` may hold, and the seed's error rows
  (``CallnotifyError``) the API answers with when they are wrong;
* what a call event published to Ringback looks like (``parse_call_event`` -> ``CallEvent``);
* how one event is put on the wire for each delivery method (``render_http``, ``render_stream``).

URL rules live in ``callnotify_url``; this module only passes the URL string through.
The wire formats are described, with an example of each, in ``docs/callnotify-formats.md``.
Keep the two in step: subscribers parse these bytes, so any change here is a breaking change.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET  # building only; nothing untrusted is parsed here
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal
from urllib.parse import urlencode

from chalicelib.domain import flow
from chalicelib.domain.timeutil import BadTimestamp, fmt, parse_zoned

Method = Literal["POSTARGS", "POSTXML1", "POSTXML2", "POSTJSON", "GET1", "GET2"]
Selection = Literal["SIP", "MVNO", "ALL"]
EventSelection = Literal["SIP", "MVNO"]
CallEventType = Literal["CALL_START", "CALL_ANSWER", "CALL_END"]
Direction = Literal["in", "out"]

METHODS: Final[tuple[Method, ...]] = (
    "POSTARGS",
    "POSTXML1",
    "POSTXML2",
    "POSTJSON",
    "GET1",
    "GET2",
)
SELECTIONS: Final[tuple[Selection, ...]] = ("SIP", "MVNO", "ALL")
CALL_EVENT_TYPES: Final[tuple[CallEventType, ...]] = ("CALL_START", "CALL_ANSWER", "CALL_END")
EVENT_SELECTIONS: Final[tuple[EventSelection, ...]] = ("SIP", "MVNO")
DIRECTIONS: Final[tuple[Direction, ...]] = ("in", "out")

XML_CONTENT_TYPE: Final = "application/xml; charset=utf-8"
FORM_CONTENT_TYPE: Final = "application/x-www-form-urlencoded"
JSON_CONTENT_TYPE: Final = "application/json"
XML_ROOT: Final = "callevent"

# --------------------------------------------------------------------------------------------
# Errors (the seed's error table; the 422 ``url`` rows' messages come from callnotify_url)
# --------------------------------------------------------------------------------------------

INTERNAL_ERROR_MESSAGE: Final = "Internal server error"


class CallnotifyError(ValueError):
    """One row of the seed's error table: an HTTP status, a short code and a human message.

    It is a ValueError so that code which only cares "was the input bad" can catch it broadly,
    while the API layer reads ``status`` and ``body()`` to answer exactly as the seed says.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, str]:
        """The JSON error body every endpoint of the family returns."""
        return {"error": self.code, "message": self.message}

    def __repr__(self) -> str:
        return f"CallnotifyError({self.status}, {self.code!r}, {self.message!r})"


# Factories rather than shared instances: a raised exception carries a traceback, and sharing one
# instance between requests would leak one request's traceback into the next.
def access_denied() -> CallnotifyError:
    return CallnotifyError(403, "access_denied", "Insufficient access level")


def customer_not_found() -> CallnotifyError:
    return CallnotifyError(404, "customer", "Customer not found")


def not_found() -> CallnotifyError:
    return CallnotifyError(404, "not_found", "Call notify not found")


def invalid_method() -> CallnotifyError:
    return CallnotifyError(422, "method", "Invalid method")


def invalid_selection() -> CallnotifyError:
    return CallnotifyError(422, "selection", "Invalid selection")


def url_error(message: str) -> CallnotifyError:
    """Wrap one of callnotify_url's messages (e.g. "Port is invalid") as the seed's 422 ``url``."""
    return CallnotifyError(422, "url", message)


def busy() -> CallnotifyError:
    """Not in the seed: a concurrent change won (two rotations of one secret at once); retry."""
    return CallnotifyError(503, "busy", "Too many concurrent changes, retry")


def internal_error() -> CallnotifyError:
    """The 500 row: a fixed message, so no traceback or internal detail ever reaches a client."""
    return CallnotifyError(500, "internal_error", INTERNAL_ERROR_MESSAGE)


INVALID_URL_MESSAGE: Final = "Invalid URL"

# --------------------------------------------------------------------------------------------
# Notifier fields (create / update bodies)
# --------------------------------------------------------------------------------------------


def validate_notifier_fields(body: Mapping[str, Any], *, partial: bool) -> dict[str, str]:
    """Check a create (``partial=False``) or update (``partial=True``) body; return clean fields.

    * ``method`` and ``selection`` must be exactly one of the seed's spellings. Matching is
      case-sensitive and whitespace is not trimmed: ``"postjson"`` is invalid. The seed lists the
      values in upper case, and a stored value is later compared to the dispatch table, so
      accepting variants would either store a spelling nothing else recognises or silently
      rewrite what the client sent.
    * On create all three fields are required; ``selection`` does NOT default to ``"ALL"``. The
      seed lists it as a body field with no default, and guessing "ALL" would send a subscriber
      call data it never asked for.
    * On update any subset may be sent; a field that is present must still be valid (``null``
      is not a way to clear a field: a notifier without a method or selection cannot work).
    * A missing or non-string field yields that field's 422. Fields are checked in the seed's
      table order (url, method, selection) and the first failure is raised.
    * ``_id`` and unknown fields are ignored, never stored.
    * ``url`` is returned as given (only its type is checked); callnotify_url judges it.

    A body that is not a mapping at all (e.g. a JSON array) is treated like an empty one.
    """
    source: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
    cleaned: dict[str, str] = {}

    if "url" in source or not partial:
        url = source.get("url")
        if not isinstance(url, str):
            raise url_error(INVALID_URL_MESSAGE)
        cleaned["url"] = url

    if "method" in source or not partial:
        method = source.get("method")
        if not isinstance(method, str) or method not in METHODS:
            raise invalid_method()
        cleaned["method"] = method

    if "selection" in source or not partial:
        selection = source.get("selection")
        if not isinstance(selection, str) or selection not in SELECTIONS:
            raise invalid_selection()
        cleaned["selection"] = selection

    return cleaned


LIMIT_FIELDS: Final = ("rate_limit", "max_in_flight")


def invalid_limit(field_name: str) -> CallnotifyError:
    """Not in the seed (flow control): the family's 422 with the field as the code, like
    ``url``/``method``/``selection``."""
    return CallnotifyError(422, field_name, f"Invalid {field_name.replace('_', ' ')}")


def validate_limits(body: Mapping[str, Any], *, partial: bool) -> dict[str, float | int | None]:
    """``rate_limit`` (deliveries per second) and ``max_in_flight`` (concurrent deliveries),
    both optional, checked after the seed's fields. Only the fields present are returned; on an
    update ``null`` removes a limit (``None`` in the result), on a create it means absent."""
    source: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
    cleaned: dict[str, float | int | None] = {}
    parsers = (("rate_limit", flow.parse_rate), ("max_in_flight", flow.parse_max_in_flight))
    for name, parse in parsers:
        if name not in source or (source[name] is None and not partial):
            continue
        try:
            cleaned[name] = parse(source[name], name)
        except flow.LimitInvalid:
            raise invalid_limit(name) from None
    return cleaned


def selection_matches(notifier_selection: str, event_selection: str) -> bool:
    """Whether a notifier with ``notifier_selection`` wants an event from ``event_selection``.

    ``ALL`` receives SIP and MVNO events; ``SIP`` and ``MVNO`` receive only their own. Anything
    else (an unknown stored value, or an event claiming "ALL") matches nothing, so bad data
    results in no delivery rather than a delivery to the wrong subscriber.
    """
    if event_selection not in EVENT_SELECTIONS:
        return False
    if notifier_selection == "ALL":
        return True
    return notifier_selection == event_selection


# --------------------------------------------------------------------------------------------
# Call events
# --------------------------------------------------------------------------------------------

MAX_FIELD_LENGTH: Final = 1024
MAX_EXTRA_FIELDS: Final = 32
_EXTRA_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
# XML 1.0 forbids most control characters and lone surrogates; rejecting them when the event is
# parsed means every later rendering (XML above all) is guaranteed to be well-formed.
_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

_BASE_PAYLOAD_KEYS: Final = frozenset(
    {"call_id", "from", "to", "direction", "timestamp", "duration", "cause"}
)
# Wire names: basic fields, then the "additional data" fields.
_WIRE_BASIC: Final = (
    "event",
    "selection",
    "callid",
    "from",
    "to",
    "direction",
    "timestamp",
    "duration",
    "cause",
)
_WIRE_ADDITIONAL: Final = ("customerid", "notifyid", "eventid", "attempt")
# Extra payload fields are flattened next to the basic ones, so they may not take any name the
# formats already use (compared case-insensitively so no subscriber can confuse them).
_RESERVED_EXTRA_NAMES: Final = frozenset(
    name.lower() for name in (*_BASE_PAYLOAD_KEYS, *_WIRE_BASIC, *_WIRE_ADDITIONAL)
)


@dataclass(frozen=True)
class CallEvent:
    """A validated call event. ``timestamp`` is UTC at second precision (the project's instants).

    ``duration`` and ``cause`` are set exactly when ``event_type`` is ``CALL_END``. ``extra``
    holds the optional extra string fields, sorted by name, as a tuple so the event is immutable
    and hashable.
    """

    event_type: CallEventType
    selection: EventSelection
    call_id: str
    from_: str
    to: str
    direction: Direction
    timestamp: datetime
    duration: int | None = None
    cause: str | None = None
    extra: tuple[tuple[str, str], ...] = ()

    def as_published(self) -> dict[str, Any]:
        """The event in the shape it was published in; ``parse_call_event`` accepts it back."""
        payload: dict[str, Any] = {
            "call_id": self.call_id,
            "from": self.from_,
            "to": self.to,
            "direction": self.direction,
            "timestamp": fmt(self.timestamp),
        }
        if self.duration is not None:
            payload["duration"] = self.duration
        if self.cause is not None:
            payload["cause"] = self.cause
        payload.update(self.extra)
        return {"event_type": self.event_type, "selection": self.selection, "payload": payload}


def _text(payload: Mapping[str, Any], key: str, *, allow_empty: bool) -> str:
    value = payload.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected a string")
    _check_text(key, value, allow_empty=allow_empty)
    return value


def _check_text(key: str, value: str, *, allow_empty: bool) -> None:
    if not value and not allow_empty:
        raise ValueError(f"{key}: must not be empty")
    if len(value) > MAX_FIELD_LENGTH:
        raise ValueError(f"{key}: longer than {MAX_FIELD_LENGTH} characters")
    if _NOT_XML_CHAR.search(value):
        raise ValueError(f"{key}: contains a control or non-character code point")


def parse_call_event(event_type: object, selection: object, payload: object) -> CallEvent:
    """Validate one published call event; raise ValueError whose message starts with the field.

    Rules (strict, because a malformed event rendered to six formats is worse than a rejected
    one): ``call_id`` is a non-empty string; ``from``/``to`` are strings and may be empty (a
    withheld number); ``direction`` is ``in`` or ``out``; ``timestamp`` is ISO 8601 with a zone;
    ``duration`` (int >= 0, not bool) and ``cause`` (string) are required on CALL_END and refused
    on other events. Any other key is an extra field: its value must be a string and its name
    must match ``[A-Za-z][A-Za-z0-9_]{0,63}``, must not start with "xml" and must not clash with a
    wire field name. No string may hold XML-illegal characters or exceed 1024 characters; at
    most 32 extra fields are accepted.
    """
    if not isinstance(event_type, str) or event_type not in CALL_EVENT_TYPES:
        raise ValueError(f"event_type: must be one of {', '.join(CALL_EVENT_TYPES)}")
    if not isinstance(selection, str) or selection not in EVENT_SELECTIONS:
        raise ValueError(f"selection: must be one of {', '.join(EVENT_SELECTIONS)}")
    if not isinstance(payload, Mapping):
        raise ValueError("payload: expected an object")

    call_id = _text(payload, "call_id", allow_empty=False)
    from_ = _text(payload, "from", allow_empty=True)
    to = _text(payload, "to", allow_empty=True)
    direction = payload.get("direction")
    if not isinstance(direction, str) or direction not in DIRECTIONS:
        raise ValueError("direction: must be 'in' or 'out'")
    try:
        timestamp = parse_zoned(payload.get("timestamp"))
    except BadTimestamp as exc:
        raise ValueError(f"timestamp: {exc}") from exc

    duration: int | None = None
    cause: str | None = None
    if event_type == "CALL_END":
        raw_duration = payload.get("duration")
        if isinstance(raw_duration, bool) or not isinstance(raw_duration, int):
            raise ValueError("duration: expected an integer number of seconds")
        if raw_duration < 0:
            raise ValueError("duration: must not be negative")
        duration = raw_duration
        cause = _text(payload, "cause", allow_empty=True)
    else:
        for key in ("duration", "cause"):
            if key in payload:
                raise ValueError(f"{key}: only allowed on CALL_END")

    extra: list[tuple[str, str]] = []
    for key, value in payload.items():
        if key in _BASE_PAYLOAD_KEYS:
            continue
        if not isinstance(key, str) or not _EXTRA_NAME.match(key):
            raise ValueError(f"{key}: extra field names must match [A-Za-z][A-Za-z0-9_]{{0,63}}")
        if key.lower() in _RESERVED_EXTRA_NAMES or key.lower().startswith("xml"):
            raise ValueError(f"{key}: reserved name, cannot be used for an extra field")
        if not isinstance(value, str):
            raise ValueError(f"{key}: extra fields must be strings")
        _check_text(key, value, allow_empty=True)
        extra.append((key, value))
    if len(extra) > MAX_EXTRA_FIELDS:
        raise ValueError(f"payload: more than {MAX_EXTRA_FIELDS} extra fields")

    return CallEvent(
        event_type=event_type,
        selection=selection,
        call_id=call_id,
        from_=from_,
        to=to,
        direction=direction,
        timestamp=timestamp,
        duration=duration,
        cause=cause,
        extra=tuple(sorted(extra)),
    )


# --------------------------------------------------------------------------------------------
# Wire formats ("common telecom provider format", see docs/callnotify-formats.md)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpRendering:
    """What to send for one HTTP delivery.

    ``query`` is APPENDED to the notifier URL's own query arguments (which must be kept, they
    often carry the subscriber's authentication); ``body``/``content_type`` are None for GET.
    """

    http_method: Literal["GET", "POST"]
    query: list[tuple[str, str]]
    body: bytes | None
    content_type: str | None


@dataclass(frozen=True)
class _Additional:
    customer_id: str
    notifier_id: str
    event_id: str
    attempt: int


def _basic_fields(event: CallEvent) -> list[tuple[str, str | int]]:
    """The basic call fields in wire order; duration stays an int so JSON can keep it numeric."""
    fields: list[tuple[str, str | int]] = [
        ("event", event.event_type),
        ("selection", event.selection),
        ("callid", event.call_id),
        ("from", event.from_),
        ("to", event.to),
        ("direction", event.direction),
        ("timestamp", fmt(event.timestamp)),
    ]
    if event.duration is not None:
        fields.append(("duration", event.duration))
    if event.cause is not None:
        fields.append(("cause", event.cause))
    fields.extend(event.extra)
    return fields


def _additional_fields(extra: _Additional) -> list[tuple[str, str | int]]:
    return [
        ("customerid", extra.customer_id),
        ("notifyid", extra.notifier_id),
        ("eventid", extra.event_id),
        ("attempt", extra.attempt),
    ]


def _as_text(fields: list[tuple[str, str | int]]) -> list[tuple[str, str]]:
    return [(name, str(value)) for name, value in fields]


def _xml(fields: list[tuple[str, str]]) -> bytes:
    root = ET.Element(XML_ROOT)
    for name, value in fields:
        ET.SubElement(root, name).text = value
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data


def _json(fields: list[tuple[str, str | int]]) -> bytes:
    return json.dumps(dict(fields), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _checked_additional(
    customer_id: str, notifier_id: str, event_id: str, attempt: int
) -> _Additional:
    for name, value in (
        ("customer_id", customer_id),
        ("notifier_id", notifier_id),
        ("event_id", event_id),
    ):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name}: expected a non-empty string")
        _check_text(name, value, allow_empty=False)
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValueError("attempt: expected an integer >= 1")
    return _Additional(customer_id, notifier_id, event_id, attempt)


def render_http(
    method: str,
    event: CallEvent,
    *,
    customer_id: str,
    notifier_id: str,
    event_id: str,
    attempt: int,
) -> HttpRendering:
    """Render ``event`` for an http/https notifier using one of the six METHODS.

    The "1" variants carry the basic call fields; the "2" variants append the additional data
    (customerid, notifyid, eventid, attempt). POSTJSON carries the basic fields plus eventid, so a
    JSON subscriber can de-duplicate retries. Raises ValueError for an unknown method (stored
    notifiers are validated, so that is a programming error, not a client's).
    """
    additional = _checked_additional(customer_id, notifier_id, event_id, attempt)
    basic = _basic_fields(event)
    if method == "POSTARGS":
        return HttpRendering(
            "POST", [], urlencode(_as_text(basic)).encode("ascii"), FORM_CONTENT_TYPE
        )
    if method == "POSTXML1":
        return HttpRendering("POST", [], _xml(_as_text(basic)), XML_CONTENT_TYPE)
    if method == "POSTXML2":
        full = _as_text(basic + _additional_fields(additional))
        return HttpRendering("POST", [], _xml(full), XML_CONTENT_TYPE)
    if method == "POSTJSON":
        return HttpRendering(
            "POST", [], _json([*basic, ("eventid", additional.event_id)]), JSON_CONTENT_TYPE
        )
    if method == "GET1":
        return HttpRendering("GET", _as_text(basic), None, None)
    if method == "GET2":
        return HttpRendering("GET", _as_text(basic + _additional_fields(additional)), None, None)
    raise ValueError(f"method: unknown delivery method {method!r}")


def render_stream(
    event: CallEvent, *, customer_id: str, notifier_id: str, event_id: str, attempt: int
) -> bytes:
    """One line of compact UTF-8 JSON ending in ``\\n`` for tcp (udp: the same bytes, one datagram).

    It always carries the basic fields and the additional data (tcp/udp have no "1"/"2" variants).
    JSON escapes any newline inside values, so the only ``\\n`` byte is the terminating one and a
    stream reader can split on it.
    """
    additional = _checked_additional(customer_id, notifier_id, event_id, attempt)
    return _json(_basic_fields(event) + _additional_fields(additional)) + b"\n"
