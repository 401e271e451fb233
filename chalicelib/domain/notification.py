"""Notification callbacks family: the pure rules behind ``/rest/api/v1.3/notifications``.

The seed (a Responsys-style "Update a Callback" page) fixes the error envelope and a set of
failure texts, odd spacing and brackets included; clients match on those strings, so they are
reproduced byte for byte here and nowhere else. Everything the seed leaves open (batch size
bounds, backup URL rules, subscriptions, the event list, the delivery object) is decided here
once and documented in ``docs/notification-api.md``, so the API layer only wires HTTP to these
functions. No I/O: reachability and SSRF checks, uniqueness and storage live elsewhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, urlsplit

API_BASE_PATH: Final = "/rest/api/v1.3/notifications"
MIN_BATCH_SIZE: Final = 1
MAX_BATCH_SIZE: Final = 200
MAX_URL_LENGTH: Final = 2048
BASIC_AUTH: Final = "B"

EVENT_NAMES: Final[tuple[str, ...]] = (
    "EMAIL_BOUNCED",
    "EMAIL_FAILED",
    "EMAIL_SKIPPED",
    "EMAIL_CLICKED",
    "EMAIL_OPTOUT",
    "EMAIL_OPTIN",
    "EMAIL_COMPLAINT",
    "SMS_FAILED",
    "SMS_SKIPPED",
    "SMS_MO_FW_FAILED",
    "SMS_RECEIPT",
    "SMS_OPT_IN",
    "SMS_OPT_OUT",
    "MMS_SKIPPED",
    "MMS_FAILED",
    "PUSH_SKIPPED",
    "PUSH_FAILED",
    "PUSH_BOUNCED",
    "PUSH_OPT_IN",
    "PUSH_OPT_OUT",
    "WEBPUSH_SKIPPED",
    "WEBPUSH_FAILED",
    "WEBPUSH_BOUNCED",
    "WEBPUSH_OPT_IN",
    "WEBPUSH_OPT_OUT",
    "WEBPUSH_CLICKED",
)
_EVENT_SET: Final = frozenset(EVENT_NAMES)

# Names end up as URL path segments, so keep them to characters that need no escaping.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}

# The seed's sample request spells the key "backupUrl " (trailing space); accept it as an alias.
_BACKUP_ALIAS: Final = "backupUrl "
_CALLBACK_FIELDS: Final = frozenset(
    {"name", "url", "backupUrl", _BACKUP_ALIAS, "batchSize", "authentication"}
)
_SUBSCRIPTION_FIELDS: Final = frozenset(
    {"name", "callbackName", "callBackName", "eventNames", "eventTypes", "filters"}
)
_FILTER_FIELDS: Final = frozenset({"campaignNames"})

EVENT_OBJECT_FIELDS: Final[tuple[str, ...]] = (
    "campaignId",
    "riid",
    "failureReason",
    "customerId",
    "recipient",
    "failureType",
    "channelType",
    "campaignName",
    "optionalData",
)

_INVALID_PARAMETER = ("Invalid request parameters", "INVALID_PARAMETER")
_NOT_FOUND = ("Object not found", "OBJECT_NOT_FOUND")


class NotificationError(Exception):
    """A failure the client sees as ``status`` plus the seed's error envelope.

    One class for every failure so the API layer has a single ``except`` that renders it; the
    constructors below own the wording so no other module invents error text.
    """

    def __init__(self, status: int, title: str, error_code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.error_code = error_code
        self.detail = detail

    def body(self) -> dict[str, Any]:
        """The envelope, keys in the seed's order; ``type`` is always empty as in the seed."""
        return {
            "type": "",
            "title": self.title,
            "errorCode": self.error_code,
            "detail": self.detail,
            "errorDetails": [],
        }

    def __repr__(self) -> str:
        return f"NotificationError({self.status}, {self.error_code}, {self.detail!r})"

    # --- failures the seed lists, verbatim -------------------------------------------------

    @classmethod
    def not_found(cls, name: str) -> NotificationError:
        return cls(404, *_NOT_FOUND, f"CallBack [{name}] not found")

    @classmethod
    def url_exists(cls, url: str) -> NotificationError:
        # Sic: the seed has a closing bracket and no opening one.
        return cls(400, *_INVALID_PARAMETER, f"Callback url {url} ] already exists")

    @classmethod
    def could_not_connect(cls, url: str) -> NotificationError:
        return cls(400, *_INVALID_PARAMETER, f"Could not connect to callback url [{url}]")

    @classmethod
    def only_basic(cls) -> NotificationError:
        # Sic: trailing space.
        return cls(
            400,
            *_INVALID_PARAMETER,
            "Only Basic Authentication is supported currently and value should be 'B' ",
        )

    @classmethod
    def batch_size_negative(cls) -> NotificationError:
        return cls(400, *_INVALID_PARAMETER, "Batch Size cannot be less than 0")

    @classmethod
    def empty_name(cls) -> NotificationError:
        return cls(400, *_INVALID_PARAMETER, "callback name cannot be empty or null")

    @classmethod
    def empty_url(cls) -> NotificationError:
        return cls(400, *_INVALID_PARAMETER, "callback url cannot be empty or null")

    @classmethod
    def invalid_field_names(cls, names: Iterable[str]) -> NotificationError:
        """Names joined with ", " inside one pair of brackets, first-seen order, no repeats."""
        listed = ", ".join(dict.fromkeys(names))
        return cls(
            400,
            "Invalid field name",
            "INVALID_FIELD_NAME",
            f"The following field names [{listed}] are invalid",
        )

    # --- failures the family needs beyond the seed ----------------------------------------

    @classmethod
    def batch_size_required(cls) -> NotificationError:
        return cls(400, *_INVALID_PARAMETER, "Batch Size cannot be empty or null")

    @classmethod
    def batch_size_not_integer(cls) -> NotificationError:
        return cls(400, *_INVALID_PARAMETER, "Batch Size must be an integer")

    @classmethod
    def batch_size_out_of_range(cls) -> NotificationError:
        return cls(
            400,
            *_INVALID_PARAMETER,
            f"Batch Size must be between {MIN_BATCH_SIZE} and {MAX_BATCH_SIZE}",
        )

    @classmethod
    def url_or_batch_size_required(cls) -> NotificationError:
        return cls(400, *_INVALID_PARAMETER, "One of url or batchSize must be specified")

    @classmethod
    def invalid_url(cls, field_name: str, value: object) -> NotificationError:
        return cls(400, *_INVALID_PARAMETER, f"Invalid callback {field_name} [{value}]")

    @classmethod
    def backup_same_as_url(cls) -> NotificationError:
        return cls(
            400, *_INVALID_PARAMETER, "Callback backupUrl cannot be the same location as url"
        )

    @classmethod
    def invalid_name(cls, kind: str, value: object) -> NotificationError:
        return cls(400, *_INVALID_PARAMETER, f"Invalid {kind} name [{value}]")

    @classmethod
    def name_mismatch(cls, path_name: str, body_name: str) -> NotificationError:
        return cls(
            400,
            *_INVALID_PARAMETER,
            f"Name [{body_name}] in request body does not match [{path_name}] in path",
        )

    @classmethod
    def conflicting_fields(cls, first: str, second: str) -> NotificationError:
        return cls(
            400, *_INVALID_PARAMETER, f"Fields [{first}] and [{second}] cannot both be specified"
        )

    @classmethod
    def invalid_user_name(cls) -> NotificationError:
        return cls(400, *_INVALID_PARAMETER, "authentication userName cannot contain ':'")

    @classmethod
    def callback_exists(cls, name: str) -> NotificationError:
        return cls(400, *_INVALID_PARAMETER, f"CallBack [{name}] already exists")

    @classmethod
    def callback_in_use(cls, name: str, subscriptions: Iterable[str]) -> NotificationError:
        listed = ", ".join(dict.fromkeys(subscriptions))
        return cls(
            400, *_INVALID_PARAMETER, f"CallBack [{name}] is used by subscriptions [{listed}]"
        )

    @classmethod
    def subscription_not_found(cls, name: str) -> NotificationError:
        return cls(404, *_NOT_FOUND, f"Subscription [{name}] not found")

    @classmethod
    def subscription_exists(cls, name: str) -> NotificationError:
        return cls(400, *_INVALID_PARAMETER, f"Subscription [{name}] already exists")

    @classmethod
    def empty_subscription_name(cls) -> NotificationError:
        return cls(400, *_INVALID_PARAMETER, "subscription name cannot be empty or null")

    @classmethod
    def empty_event_names(cls) -> NotificationError:
        return cls(400, *_INVALID_PARAMETER, "eventNames cannot be empty or null")

    @classmethod
    def invalid_event_names(cls, names: Iterable[str]) -> NotificationError:
        listed = ", ".join(dict.fromkeys(names))
        return cls(400, *_INVALID_PARAMETER, f"Invalid event name [{listed}]")

    @classmethod
    def invalid_campaign_names(cls) -> NotificationError:
        return cls(
            400,
            *_INVALID_PARAMETER,
            "filters.campaignNames must be a list of non-empty campaign names",
        )

    @classmethod
    def subscription_change_required(cls) -> NotificationError:
        return cls(
            400,
            *_INVALID_PARAMETER,
            "One of callbackName, eventNames or filters must be specified",
        )

    @classmethod
    def invalid_action(cls, action: str) -> NotificationError:
        return cls(400, *_INVALID_PARAMETER, f"Invalid action [{action}]")

    @classmethod
    def method_not_allowed(cls) -> NotificationError:
        return cls(
            405, "Method not allowed", "METHOD_NOT_ALLOWED", "The method is not allowed here"
        )

    @classmethod
    def unsupported_media_type(cls) -> NotificationError:
        return cls(
            415,
            "Unsupported media type",
            "UNSUPPORTED_MEDIA_TYPE",
            "Content-Type must be application/json",
        )

    @classmethod
    def busy(cls) -> NotificationError:
        """Too many concurrent changes to one callback; the client may simply retry."""
        return cls(503, "Service unavailable", "SERVICE_UNAVAILABLE", "Too many concurrent changes")

    @classmethod
    def missing_body(cls) -> NotificationError:
        return cls(400, *_INVALID_PARAMETER, "Request body is required")

    @classmethod
    def malformed_json(cls) -> NotificationError:
        return cls(400, *_INVALID_PARAMETER, "Request body is not valid JSON")

    @classmethod
    def body_not_object(cls) -> NotificationError:
        return cls(400, *_INVALID_PARAMETER, "Request body must be a JSON object")

    @classmethod
    def unauthorized(cls) -> NotificationError:
        return cls(401, "Unauthorized", "UNAUTHORIZED", "Authorization token is missing or invalid")

    @classmethod
    def quota_exceeded(cls, detail: str) -> NotificationError:
        """Over a tenant quota (sent with ``Retry-After``): not in the seed, worded like it."""
        return cls(429, "Too Many Requests", "TOO_MANY_REQUESTS", detail)

    @classmethod
    def forbidden(cls) -> NotificationError:
        return cls(403, "Forbidden", "FORBIDDEN", "Not authorized to access this resource")

    @classmethod
    def internal_error(cls) -> NotificationError:
        """Fixed text on purpose: the cause goes to the log, never to the client."""
        return cls(
            500, "Internal server error", "INTERNAL_SERVER_ERROR", "An unexpected error occurred"
        )


# --- request body parsing ----------------------------------------------------------------


def _reject_constant(token: str) -> object:
    raise ValueError(f"non-standard JSON constant {token}")


def parse_json_body(raw: bytes | str | None) -> dict[str, Any]:
    """Decode a request body into a JSON object, or raise the envelope error a client sees.

    Done here rather than with Chalice's ``json_body`` so malformed input gets the family's
    envelope instead of the framework's. NaN/Infinity are refused: they are not JSON.
    """
    if raw is None:
        raise NotificationError.missing_body()
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise NotificationError.malformed_json() from None
    if not text.strip():
        raise NotificationError.missing_body()
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        raise NotificationError.malformed_json() from None
    return _require_object(value)


def _require_object(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise NotificationError.body_not_object()
    return body


def _take_alias(body: Mapping[str, Any], canonical: str, alias: str) -> tuple[bool, Any]:
    """``(present, value)`` for a field with an accepted alternate spelling; both -> error."""
    if canonical in body and alias in body:
        raise NotificationError.conflicting_fields(canonical, alias)
    if canonical in body:
        return True, body[canonical]
    if alias in body:
        return True, body[alias]
    return False, None


def _unknown_fields(body: Mapping[str, Any], allowed: frozenset[str]) -> list[str]:
    return [key for key in body if key not in allowed]


def _is_blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def is_valid_name(value: object) -> bool:
    """A callback/subscription name as the rules allow it (a path segment that could exist)."""
    return isinstance(value, str) and bool(_NAME.match(value))


def _check_name(value: object, kind: str) -> str:
    if _is_blank(value):
        raise (
            NotificationError.empty_name()
            if kind == "callback"
            else NotificationError.empty_subscription_name()
        )
    if not isinstance(value, str) or not _NAME.match(value):
        raise NotificationError.invalid_name(kind, value)
    return value


# --- URLs ------------------------------------------------------------------------------


def is_valid_url(url: str) -> bool:
    """Absolute http(s) URL with a host, a sane port, no credentials, no fragment, no spaces.

    Credentials belong in ``authentication``, not the URL; a fragment is never sent over HTTP.
    Whether the host may be called (SSRF) is decided elsewhere.
    """
    if not url or len(url) > MAX_URL_LENGTH or any(c.isspace() or ord(c) < 32 for c in url):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname:
        return False
    if "@" in parts.netloc or parts.fragment or url.endswith("#"):
        return False
    return port is None or port > 0


def normalise_url(url: str) -> str:
    """Canonical form used to say whether two URLs are the same location.

    Lower-case scheme and host, default port dropped, empty path = "/", trailing slash dropped;
    path case and query kept (servers may treat them as significant). Different schemes stay
    different locations. Also the key the API layer should use for "url already exists".
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""  # urlsplit already lower-cases the host
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    path = parts.path.rstrip("/") or "/"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{path}{query}"


def same_location(first: str, second: str) -> bool:
    return normalise_url(first) == normalise_url(second)


def _check_url(value: object, field_name: str) -> str:
    if not isinstance(value, str) or not is_valid_url(value):
        raise NotificationError.invalid_url(field_name, value)
    return value


# --- callbacks -------------------------------------------------------------------------


@dataclass(frozen=True)
class CallbackSpec:
    """A validated callback. ``password`` is kept out of ``repr`` so logs never carry it."""

    name: str
    url: str
    backup_url: str | None
    batch_size: int
    user_name: str
    password: str = field(repr=False)


def _auth_is_empty(auth: object) -> bool:
    """The seed's "Empty authentication": absent, not an object, ``{}``, or no ``type``."""
    return not isinstance(auth, dict) or not auth or _is_blank(auth.get("type"))


def _check_field_names(body: Mapping[str, Any]) -> None:
    bad = _unknown_fields(body, _CALLBACK_FIELDS)
    if _auth_is_empty(body.get("authentication")):
        bad.append("authentication")
    if bad:
        raise NotificationError.invalid_field_names(bad)


def _check_authentication(auth: Mapping[str, Any]) -> tuple[str, str]:
    if auth.get("type") != BASIC_AUTH:
        raise NotificationError.only_basic()
    data = auth.get("data")
    if not isinstance(data, dict):
        raise NotificationError.invalid_field_names(["authentication.data"])
    user, password = data.get("userName"), data.get("password")
    missing = [
        f"authentication.data.{key}"
        for key, value in (("userName", user), ("password", password))
        if not isinstance(value, str) or not value
    ]
    if missing:
        raise NotificationError.invalid_field_names(missing)
    assert isinstance(user, str) and isinstance(password, str)
    if ":" in user:
        raise NotificationError.invalid_user_name()
    return user, password


def _check_batch_size(value: object) -> int:
    if value is None:
        raise NotificationError.batch_size_required()
    if isinstance(value, bool) or not isinstance(value, int):
        raise NotificationError.batch_size_not_integer()
    if value < 0:
        raise NotificationError.batch_size_negative()
    if not MIN_BATCH_SIZE <= value <= MAX_BATCH_SIZE:
        raise NotificationError.batch_size_out_of_range()
    return value


def _check_callback_url(value: object) -> str:
    if _is_blank(value):
        raise NotificationError.empty_url()
    return _check_url(value, "url")


def _check_backup(present: bool, value: object, current: str | None) -> str | None:
    """Absent keeps ``current``; null or "" removes the backup; anything else must be a URL."""
    if not present:
        return current
    if value is None or value == "":
        return None
    return _check_url(value, "backupUrl")


def _check_backup_differs(url: str, backup_url: str | None) -> None:
    if backup_url is not None and same_location(url, backup_url):
        raise NotificationError.backup_same_as_url()


def validate_create(body: object) -> CallbackSpec:
    """Rules for ``POST /callbacks``; the first failing check (docs: "Check order") wins."""
    data = _require_object(body)
    backup_present, backup_value = _take_alias(data, "backupUrl", _BACKUP_ALIAS)
    _check_field_names(data)
    name = _check_name(data.get("name"), "callback")
    user, password = _check_authentication(data["authentication"])
    url = _check_callback_url(data.get("url"))
    batch_size = _check_batch_size(data.get("batchSize"))
    backup_url = _check_backup(backup_present, backup_value, None)
    _check_backup_differs(url, backup_url)
    return CallbackSpec(name, url, backup_url, batch_size, user, password)


def validate_update(path_name: str, body: object, current: CallbackSpec) -> CallbackSpec:
    """Rules for ``PUT /callbacks/{callbackName}`` per the seed; returns the callback after it.

    ``name`` and ``authentication`` are required (new credentials replace the stored ones),
    plus at least one of ``url`` / ``batchSize``; fields left out keep ``current``'s values.
    """
    data = _require_object(body)
    backup_present, backup_value = _take_alias(data, "backupUrl", _BACKUP_ALIAS)
    _check_field_names(data)
    name = _check_name(data.get("name"), "callback")
    if name != path_name:
        raise NotificationError.name_mismatch(path_name, name)
    user, password = _check_authentication(data["authentication"])
    if "url" not in data and "batchSize" not in data:
        raise NotificationError.url_or_batch_size_required()
    url = _check_callback_url(data["url"]) if "url" in data else current.url
    batch_size = _check_batch_size(data["batchSize"]) if "batchSize" in data else current.batch_size
    backup_url = _check_backup(backup_present, backup_value, current.backup_url)
    _check_backup_differs(url, backup_url)
    return CallbackSpec(path_name, url, backup_url, batch_size, user, password)


def deleted_view(kind: str, name: str) -> dict[str, Any]:
    """Body of a successful DELETE (the issue's text for callbacks; subscriptions mirror it)."""
    return {"message": f"{kind} [{name}] deleted successfully", "status": True}


def verified_view(name: str) -> dict[str, Any]:
    """Body of a successful verify. Sic: the trailing space is in the issue's text."""
    return {"status": f"Successfully verified [{name}] "}


def secret_rotated_view(name: str, signing_secret: str, previous_until: str) -> dict[str, Any]:
    """Body of a successful secret rotation: the new secret (shown this once) and until when
    the previous one still signs (UTC, ``YYYY-MM-DDTHH:MM:SSZ``)."""
    return {
        "name": name,
        "signing_secret": signing_secret,
        "previous_secret_valid_until": previous_until,
    }


_CREDENTIALS_REFUSED: Final = frozenset({401, 403, 407})


def connection_verified(status_code: int) -> bool:
    """Did a verify request "connect to the url with the credentials"?

    The seed's failure is "Could not connect", so this checks reachability and credentials, not
    that the receiver likes the test request: yes for any 2xx, and for a 4xx other than
    401/403/407 (a receiver may refuse the empty test batch with a 400 and still be the right
    place with the right credentials). No for 3xx (deliveries never follow redirects, so every
    batch would fail), 5xx (the receiver cannot take anything right now) and credential
    refusals. No response at all (refused, timeout, TLS failure, unsafe address) is also a no.
    """
    if 200 <= status_code < 300:
        return True
    return 400 <= status_code < 500 and status_code not in _CREDENTIALS_REFUSED


def callback_path(name: str, base_path: str = API_BASE_PATH) -> str:
    return f"{base_path.rstrip('/')}/callbacks/{quote(name, safe='')}"


def callback_view(
    spec: CallbackSpec, base_path: str = API_BASE_PATH, *, self_method: str = "PUT"
) -> dict[str, Any]:
    """Response body for one callback. Credentials (user name and password) are never shown.

    Links point at the callback's resource path (the seed's "<callback_url>" placeholder is
    read as "the callback resource", not the client's webhook URL). ``self`` carries the
    method of the request being answered (PUT for the seed's update response).
    """
    href = callback_path(spec.name, base_path)
    return {
        "name": spec.name,
        "url": spec.url,
        "backupUrl": spec.backup_url,
        "batchSize": spec.batch_size,
        "links": [
            {"rel": "self", "href": href, "method": self_method},
            {"rel": "getCallBack", "href": href, "method": "GET"},
            {"rel": "updateCallBack", "href": href, "method": "PUT"},
            {"rel": "deleteCallBack", "href": href, "method": "DELETE"},
        ],
    }


# --- events ----------------------------------------------------------------------------


def channel_of(event_name: str) -> str:
    """EMAIL, SMS, MMS, PUSH or WEBPUSH: the prefix of the event name."""
    return event_name.split("_", 1)[0]


def event_list_view() -> dict[str, Any]:
    """Body of ``GET /eventList``: every subscribable event with its channel, fixed order."""
    return {"events": [{"name": name, "channelType": channel_of(name)} for name in EVENT_NAMES]}


def event_object(event_id: str, event_type: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """One element of a delivery batch (a batch is a JSON array of these).

    Fixed key order; payload fields not supplied are ``null`` and unknown payload keys are
    dropped, so internal data never leaks into a client's webhook.
    """
    if event_type not in _EVENT_SET:
        raise ValueError(f"unknown event type {event_type!r}")
    obj = {key: payload.get(key) for key in EVENT_OBJECT_FIELDS}
    obj["eventId"] = event_id
    obj["eventType"] = event_type
    return obj


MAX_EVENT_OBJECT_BYTES: Final = 32 * 1024
_STRING_FIELDS: Final = ("failureReason", "customerId", "recipient", "failureType")


def _scalar_id(value: object) -> bool:
    return value is None or (isinstance(value, str | int) and not isinstance(value, bool))


def check_event_payload(event_type: str, payload: Mapping[str, Any]) -> None:
    """Refuse a payload this family could not deliver: ``ValueError("<field>: <why>")``.

    Only the event-object fields are checked (other keys are dropped at delivery anyway).
    ``campaignName`` must be a string because subscription filters compare it; ``channelType``,
    when given, must be the event's own channel; one event object is at most 32 KB so that a
    batch always fits a delivery record. Event types outside the event list are not ours.
    """
    if event_type not in _EVENT_SET:
        return
    for key in ("campaignId", "riid"):
        if not _scalar_id(payload.get(key)):
            raise ValueError(f"{key}: must be a string or an integer")
    for key in (*_STRING_FIELDS, "campaignName"):
        value = payload.get(key)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{key}: must be a string")
    name = payload.get("campaignName")
    if isinstance(name, str) and not name.strip():
        raise ValueError("campaignName: must not be blank")
    channel = payload.get("channelType")
    if channel is not None and channel != channel_of(event_type):
        raise ValueError(f"channelType: must be {channel_of(event_type)} for {event_type}")
    size = len(json.dumps(event_object("", event_type, payload), separators=(",", ":")))
    if size > MAX_EVENT_OBJECT_BYTES:
        raise ValueError(
            f"optionalData: the event object is larger than {MAX_EVENT_OBJECT_BYTES} bytes"
        )


def is_notification_event(event_type: str) -> bool:
    return event_type in _EVENT_SET


# --- subscriptions ---------------------------------------------------------------------


@dataclass(frozen=True)
class SubscriptionSpec:
    name: str
    callback_name: str
    event_names: tuple[str, ...]
    campaign_names: tuple[str, ...]


def _check_event_names(value: object) -> tuple[str, ...]:
    if _is_blank(value) or value == []:
        raise NotificationError.empty_event_names()
    if not isinstance(value, list):
        raise NotificationError.invalid_event_names([str(value)])
    unknown = [str(item) for item in value if not isinstance(item, str) or item not in _EVENT_SET]
    if unknown:
        raise NotificationError.invalid_event_names(unknown)
    return tuple(dict.fromkeys(value))


def _check_filters(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise NotificationError.invalid_campaign_names()
    names = value.get("campaignNames")
    if names is None:
        return ()
    if not isinstance(names, list) or any(_is_blank(n) or not isinstance(n, str) for n in names):
        raise NotificationError.invalid_campaign_names()
    return tuple(dict.fromkeys(names))


def validate_subscription(
    body: object,
    *,
    partial: bool,
    current: SubscriptionSpec | None = None,
    path_name: str | None = None,
    callback_name: str | None = None,
) -> SubscriptionSpec:
    """Rules for subscription create (``partial=False``) and update (``partial=True``).

    Update needs ``current``: fields left out keep its values and ``filters`` replaces the
    whole filter. ``path_name`` / ``callback_name`` come from the URL when the route has them;
    a body value that differs is refused rather than silently renaming or moving.
    Checking that the callback exists is the API layer's job (404 ``not_found``).
    """
    if partial and current is None:
        raise ValueError("partial validation needs the current subscription")
    data = _require_object(body)
    cb_present, cb_value = _take_alias(data, "callbackName", "callBackName")
    ev_present, ev_value = _take_alias(data, "eventNames", "eventTypes")
    bad = _unknown_fields(data, _SUBSCRIPTION_FIELDS)
    filters = data.get("filters")
    if isinstance(filters, dict):
        bad += [f"filters.{key}" for key in _unknown_fields(filters, _FILTER_FIELDS)]
    if bad:
        raise NotificationError.invalid_field_names(bad)

    expected_name = path_name if path_name is not None else (current.name if current else None)
    if partial and "name" not in data:
        name = expected_name or ""
    else:
        name = _check_name(data.get("name"), "subscription")
    if expected_name is not None and name != expected_name:
        raise NotificationError.name_mismatch(expected_name, name)

    if partial and not (cb_present or ev_present or "filters" in data):
        raise NotificationError.subscription_change_required()

    if cb_present or not partial:
        if not cb_present and callback_name is not None:
            cb_value = callback_name
        cb_name = _check_name(cb_value, "callback")
        if callback_name is not None and cb_name != callback_name:
            raise NotificationError.name_mismatch(callback_name, cb_name)
    else:
        assert current is not None
        cb_name = current.callback_name

    if ev_present or not partial:
        events = _check_event_names(ev_value)
    else:
        assert current is not None
        events = current.event_names

    if "filters" in data or not partial:
        campaigns = _check_filters(filters)
    else:
        assert current is not None
        campaigns = current.campaign_names
    return SubscriptionSpec(name, cb_name, events, campaigns)


def subscription_path(name: str, base_path: str = API_BASE_PATH) -> str:
    return f"{base_path.rstrip('/')}/subscriptions/{quote(name, safe='')}"


def subscription_view(
    spec: SubscriptionSpec, base_path: str = API_BASE_PATH, *, self_method: str = "GET"
) -> dict[str, Any]:
    """Response body for one subscription, in the request's canonical spellings."""
    href = subscription_path(spec.name, base_path)
    return {
        "name": spec.name,
        "callbackName": spec.callback_name,
        "eventNames": list(spec.event_names),
        "filters": {"campaignNames": list(spec.campaign_names)},
        "links": [
            {"rel": "self", "href": href, "method": self_method},
            {"rel": "getSubscription", "href": href, "method": "GET"},
            {"rel": "updateSubscription", "href": href, "method": "PUT"},
            {"rel": "deleteSubscription", "href": href, "method": "DELETE"},
            {
                "rel": "getCallBack",
                "href": callback_path(spec.callback_name, base_path),
                "method": "GET",
            },
        ],
    }


def subscription_matches(
    spec: SubscriptionSpec, event_name: str, campaign_name: str | None
) -> bool:
    """Does an event go to this subscription? Empty campaign filter means every campaign."""
    if event_name not in spec.event_names:
        return False
    return not spec.campaign_names or campaign_name in spec.campaign_names
