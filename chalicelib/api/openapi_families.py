"""OpenAPI descriptions of the families with their own error shapes: notification, callnotify and
scheduled. Same rule as ``openapi_catalog``: enums, bounds, patterns and error codes come from the
definitions the handlers use; error bodies are grouped by status by asking each family's error
factories (so a new factory with a new status shows up in the document by itself).
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from chalicelib.api import callnotify as callnotify_api
from chalicelib.api import notification as notification_api
from chalicelib.api import scheduled as scheduled_api
from chalicelib.api.errors import _CHALICE_CODES
from chalicelib.api.openapi import Body, Catalogue, Family, Operation, Param
from chalicelib.api.openapi_catalog import HTTP_SCHEMES, ID, TIMESTAMP
from chalicelib.api.openapi_schema import (
    FORM,
    JSON,
    XML,
    Schema,
    array,
    const,
    enum,
    integer,
    nullable,
    obj,
    prefix_pattern,
    regex,
    string,
    url_pattern,
    xml_shape,
)
from chalicelib.domain import callnotify as callnotify_rules
from chalicelib.domain import callnotify_url, signing
from chalicelib.domain import notification as notification_rules
from chalicelib.domain import scheduled as scheduled_rules
from chalicelib.domain.notification import NotificationError

# --------------------------------------------------------------------------- notification


def _sample_argument(parameter: inspect.Parameter) -> Any:
    annotation = str(parameter.annotation)
    return ["x"] if "Iterable" in annotation else "x"


def notification_errors() -> dict[int, set[tuple[str, str]]]:
    """``status -> {(title, errorCode)}`` for every ``NotificationError`` constructor, plus the
    renderer's fallback for other 4xx (Chalice's own 400s)."""
    found: dict[int, set[tuple[str, str]]] = defaultdict(set)
    for name, member in vars(NotificationError).items():
        if not isinstance(member, classmethod):
            continue
        factory = getattr(NotificationError, name)
        params = list(inspect.signature(factory).parameters.values())
        error = factory(*(_sample_argument(p) for p in params))
        found[error.status].add((error.title, error.error_code))
    for status in (405, 415, 401, 403, 500):
        rendered = notification_api.render_error(status, "x", "x").body
        assert isinstance(rendered, dict)
        found[status].add((rendered["title"], rendered["errorCode"]))
    fallback = notification_api.render_error(400, "x", "x").body
    assert isinstance(fallback, dict)
    found[400].add((fallback["title"], fallback["errorCode"]))
    return dict(found)


def _envelope(pairs: Iterable[tuple[str, str]]) -> Schema:
    """The seed's envelope; ``title`` and ``errorCode`` only in the pairs the family uses."""
    listed = sorted(pairs)
    titles, codes = zip(*listed, strict=True)
    schema = obj(
        {
            "type": const(""),
            "title": enum(titles),
            "errorCode": enum(codes),
            "detail": string(),
            "errorDetails": array({}, max_items=0),
        }
    )
    schema["anyOf"] = [
        {"properties": {"title": const(title), "errorCode": const(code)}} for title, code in listed
    ]
    return schema


NAME = string(pattern=regex(notification_rules._NAME))
NOTIFICATION = Family(
    tag="notification",
    description="Notification callbacks and subscriptions (seed: notification-callbacks-update)."
    " Every failure is the seed's envelope.",
    errors={status: Body(_envelope(pairs)) for status, pairs in notification_errors().items()},
    path_params={"callback_name": NAME, "name": NAME},
    security=[{"bareKey": []}, {"bearer": []}],
)

_URL = string(
    min_length=1,
    max_length=notification_rules.MAX_URL_LENGTH,
    pattern=url_pattern(notification_rules._DEFAULT_PORTS),
)
_AUTHENTICATION = obj(
    {
        "type": const(notification_rules.BASIC_AUTH),
        "data": obj(
            {"userName": string(min_length=1, pattern="^[^:]*$"), "password": string(min_length=1)}
        ),
    }
)
_CALLBACK_FIELDS: dict[str, Schema] = {
    "name": NAME,
    "url": _URL,
    "backupUrl": nullable(_URL),
    "batchSize": integer(
        minimum=notification_rules.MIN_BATCH_SIZE, maximum=notification_rules.MAX_BATCH_SIZE
    ),
    "authentication": _AUTHENTICATION,
}
CALLBACK_CREATE = obj(
    _CALLBACK_FIELDS,
    required=["name", "url", "batchSize", "authentication"],
    description='The seed\'s "backupUrl " (trailing space) is accepted as an alias of backupUrl.',
)
CALLBACK_UPDATE = {
    **obj(_CALLBACK_FIELDS, required=["name", "authentication"]),
    "anyOf": [{"required": ["url"]}, {"required": ["batchSize"]}],
}
_LINK = obj({"rel": string(), "href": string(), "method": enum(("GET", "POST", "PUT", "DELETE"))})
CALLBACK_VIEW = obj(
    {
        "name": string(),
        "url": string(),
        "backupUrl": nullable(string()),
        "batchSize": integer(),
        "links": array(_LINK),
        "disabledReason": string(),
    },
    required=["name", "url", "backupUrl", "batchSize", "links"],
)
CALLBACK_CREATED = {
    **CALLBACK_VIEW,
    "properties": {**CALLBACK_VIEW["properties"], "signing_secret": string(min_length=1)},
    "required": [*CALLBACK_VIEW["required"], "signing_secret"],
}
VERIFIED = obj({"status": string()})
WHSEC = string(
    pattern=prefix_pattern(signing.PREFIX), description="Standard Webhooks secret; shown only here"
)
SECRET_ROTATED = obj(
    {
        "name": string(),
        "signing_secret": WHSEC,
        "previous_secret_valid_until": TIMESTAMP,
    }
)
DELETED = obj({"message": string(), "status": const(True)})
EVENT_NAME = enum(notification_rules.EVENT_NAMES)
_SUBSCRIPTION_FIELDS: dict[str, Schema] = {
    "name": NAME,
    "callbackName": NAME,
    "eventNames": array(EVENT_NAME, min_items=1),
    "filters": obj(
        {"campaignNames": nullable(array(string(min_length=1, pattern=r"\S")))},
        required=[],
    ),
}
SUBSCRIPTION_NOTE = "Aliases accepted: callBackName for callbackName, eventTypes for eventNames."
SUBSCRIPTION_VIEW = obj(
    {
        "name": string(),
        "callbackName": string(),
        "eventNames": array(EVENT_NAME),
        "filters": obj({"campaignNames": array(string())}),
        "links": array(_LINK),
    }
)


def notification() -> Catalogue:
    base = notification_rules.API_BASE_PATH
    callback = f"{base}/callbacks/{{callback_name}}"
    subscription = f"{base}/subscriptions/{{name}}"
    created = {"Location": string(pattern=prefix_pattern(f"{base}/"))}
    sub_create = Body(
        obj(_SUBSCRIPTION_FIELDS, required=["name", "callbackName", "eventNames"]),
        description=SUBSCRIPTION_NOTE,
    )
    sub_for_callback = Body(
        obj(_SUBSCRIPTION_FIELDS, required=["name", "eventNames"]),
        description="callbackName comes from the path (a different one in the body: 400). "
        + SUBSCRIPTION_NOTE,
    )
    sub_update = Body(
        {
            **obj(_SUBSCRIPTION_FIELDS, required=[]),
            "anyOf": [{"required": [f]} for f in ("callbackName", "eventNames", "filters")],
        },
        description="name, if given, must be the one in the path. " + SUBSCRIPTION_NOTE,
    )
    nf = NOTIFICATION
    return {
        ("POST", f"{base}/callbacks"): Operation(
            nf,
            "Create a callback (the url is called with the credentials first)",
            {201: Body(CALLBACK_CREATED, headers=created)},
            errors=(400, 401, 403, 429, 503),
            request=Body(CALLBACK_CREATE),
            request_required=True,
        ),
        ("GET", f"{base}/callbacks"): Operation(
            nf, "List callbacks", {200: Body(array(CALLBACK_VIEW))}, errors=(401, 403)
        ),
        ("GET", callback): Operation(
            nf,
            "Show a callback (or verify it with ?action=verify)",
            {200: Body({"anyOf": [CALLBACK_VIEW, VERIFIED]})},
            errors=(400, 401, 403, 404),
            query=(Param("action", enum(("verify",)), "verify: connect to the url now"),),
        ),
        ("PUT", callback): Operation(
            nf,
            "Update a callback",
            {200: Body(CALLBACK_VIEW)},
            errors=(400, 401, 403, 404, 503),
            request=Body(CALLBACK_UPDATE, description="name must be the one in the path"),
            request_required=True,
        ),
        ("DELETE", callback): Operation(
            nf,
            "Delete a callback (refused while subscriptions use it)",
            {200: Body(DELETED)},
            errors=(400, 401, 403, 404, 503),
        ),
        ("POST", f"{callback}/secret/rotate"): Operation(
            nf,
            "Rotate the signing secret (OWNER; the previous one signs for 24 h more)",
            {200: Body(SECRET_ROTATED)},
            errors=(401, 403, 404, 503),
        ),
        ("GET", f"{callback}/actions/verify"): Operation(
            nf,
            "Verify a callback: connect to its url with its credentials",
            {200: Body(VERIFIED)},
            errors=(400, 401, 403, 404),
        ),
        ("POST", f"{base}/subscriptions"): Operation(
            nf,
            "Create a subscription",
            {201: Body(SUBSCRIPTION_VIEW, headers=created)},
            errors=(400, 401, 403, 404, 503),
            request=sub_create,
            request_required=True,
        ),
        ("GET", f"{base}/subscriptions"): Operation(
            nf, "List subscriptions", {200: Body(array(SUBSCRIPTION_VIEW))}, errors=(401, 403)
        ),
        ("POST", f"{callback}/subscriptions"): Operation(
            nf,
            "Create a subscription of this callback",
            {201: Body(SUBSCRIPTION_VIEW, headers=created)},
            errors=(400, 401, 403, 404, 503),
            request=sub_for_callback,
            request_required=True,
        ),
        ("GET", f"{callback}/subscriptions"): Operation(
            nf,
            "List this callback's subscriptions",
            {200: Body(array(SUBSCRIPTION_VIEW))},
            errors=(401, 403, 404),
        ),
        ("GET", subscription): Operation(
            nf, "Show a subscription", {200: Body(SUBSCRIPTION_VIEW)}, errors=(401, 403, 404)
        ),
        ("PUT", subscription): Operation(
            nf,
            "Update a subscription (fields left out are kept)",
            {200: Body(SUBSCRIPTION_VIEW)},
            errors=(400, 401, 403, 404, 503),
            request=sub_update,
            request_required=True,
        ),
        ("DELETE", subscription): Operation(
            nf, "Delete a subscription", {200: Body(DELETED)}, errors=(401, 403, 404, 503)
        ),
        ("GET", f"{base}/eventList"): Operation(
            nf,
            "Events a subscription may name",
            {
                200: Body(
                    obj(
                        {
                            "events": array(
                                obj(
                                    {
                                        "name": EVENT_NAME,
                                        "channelType": enum(
                                            notification_rules.channel_of(n)
                                            for n in notification_rules.EVENT_NAMES
                                        ),
                                    }
                                )
                            )
                        }
                    )
                )
            },
            errors=(401, 403),
        ),
    }


# --------------------------------------------------------------------------- callnotify

_CALLNOTIFY_FACTORIES: tuple[Callable[[], callnotify_rules.CallnotifyError], ...] = (
    callnotify_rules.access_denied,
    callnotify_rules.customer_not_found,
    callnotify_rules.not_found,
    callnotify_rules.invalid_method,
    callnotify_rules.invalid_selection,
    lambda: callnotify_rules.url_error(callnotify_rules.INVALID_URL_MESSAGE),
    callnotify_rules.internal_error,
    callnotify_rules.busy,
)


def callnotify_errors() -> dict[int, set[str]]:
    """``status -> {error code}``: the seed's rows, the API's own two, the renderer's codes."""
    found: dict[int, set[str]] = defaultdict(set)
    for factory in _CALLNOTIFY_FACTORIES:
        error = factory()
        found[error.status].add(error.code)
    found[401].add(callnotify_api.UNAUTHORIZED[0])
    found[400].add(callnotify_api.INVALID_BODY[0])
    found[429].add(callnotify_api.QUOTA_EXCEEDED)
    for status, code in _CHALICE_CODES.items():
        body = callnotify_api.render_error(status, code, "x").body
        assert isinstance(body, dict)
        found[status].add(body["error"])
    return dict(found)


CALLNOTIFY = Family(
    tag="callnotify",
    description="Call notifiers (seed: api:customer:callnotify-create); errors are "
    '{"error": CODE, "message": MESSAGE}.',
    errors={
        status: Body(obj({"error": enum(sorted(codes)), "message": string()}))
        for status, codes in callnotify_errors().items()
    },
    path_params={"customer_id": ID, "notify_id": ID},
)
_NOTIFIER_FIELDS: dict[str, Schema] = {
    "url": string(
        min_length=1,
        max_length=callnotify_api.MAX_URL_LENGTH,
        pattern=url_pattern(callnotify_url.PROTOCOLS),
    ),
    "method": enum(callnotify_rules.METHODS),
    "selection": enum(callnotify_rules.SELECTIONS),
}
NOTIFIER_VIEW = obj(
    {
        "_id": ID,
        "url": string(),
        "method": enum(callnotify_rules.METHODS),
        "selection": enum(callnotify_rules.SELECTIONS),
        "disabled_reason": string(),
    },
    required=["_id", "url", "method", "selection"],
)
NOTIFIER_CREATED = {
    **NOTIFIER_VIEW,
    "properties": {**NOTIFIER_VIEW["properties"], "signing_secret": string(min_length=1)},
    "required": [*NOTIFIER_VIEW["required"], "signing_secret"],
}
NOTIFIER_SECRET_ROTATED = obj(
    {
        "_id": ID,
        "signing_secret": WHSEC,
        "previous_secret_valid_until": TIMESTAMP,
    }
)
NOTIFIER_LOCATION = string(pattern=prefix_pattern(callnotify_api.PREFIX))
URL_NOTE = (
    "url: http(s)://, tcp:// or udp:// (see docs/callnotify-api.md); `_id` and unknown fields "
    "are ignored."
)


def callnotify() -> Catalogue:
    base = callnotify_api.BASE
    item = callnotify_api.ITEM
    update = Operation(
        CALLNOTIFY,
        "Update a notifier (any subset of url, method, selection)",
        {200: Body(NOTIFIER_VIEW)},
        errors=(400, 401, 403, 404, 422),
        request=Body(obj(_NOTIFIER_FIELDS, required=[], closed=False), description=URL_NOTE),
    )
    return {
        ("GET", base): Operation(
            CALLNOTIFY,
            "List the customer's notifiers",
            {200: Body(array(NOTIFIER_VIEW))},
            errors=(401, 403, 404),
        ),
        ("POST", base): Operation(
            CALLNOTIFY,
            "Create a notifier (a VIEWER key may, as the seed says)",
            {
                201: Body(
                    NOTIFIER_CREATED,
                    headers={"Location": string(pattern=prefix_pattern(callnotify_api.PREFIX))},
                )
            },
            errors=(400, 401, 403, 404, 422, 429),
            request=Body(obj(_NOTIFIER_FIELDS, closed=False), description=URL_NOTE),
            request_required=True,
        ),
        ("GET", item): Operation(
            CALLNOTIFY, "Show a notifier", {200: Body(NOTIFIER_VIEW)}, errors=(401, 403, 404)
        ),
        ("POST", item): update,
        ("PUT", item): update,
        ("POST", f"{item}/secret/rotate"): Operation(
            CALLNOTIFY,
            "Rotate the signing secret (the previous one signs for 24 h more)",
            {200: Body(NOTIFIER_SECRET_ROTATED)},
            errors=(401, 403, 404, 503),
        ),
        ("DELETE", item): Operation(
            CALLNOTIFY,
            "Delete a notifier",
            {204: Body({}, description="deleted", media_types=())},
            errors=(401, 403, 404),
        ),
    }


# --------------------------------------------------------------------------- scheduled


_POSITIVE = integer(minimum=1, maximum=10**scheduled_rules.MAX_INT_DIGITS - 1)
_ISO_TIME = string(fmt="date-time", description="ISO 8601 with a zone designator")
_COMMON_QUERY = (
    Param(
        "response_format",
        enum(scheduled_rules.RESPONSE_FORMATS),
        "json (default) or xml; case-sensitive",
    ),
)
CREATE_PARAMETERS: dict[str, Schema] = {
    "callback_url": string(
        min_length=1, max_length=scheduled_rules.MAX_URL_LENGTH, pattern=url_pattern(HTTP_SCHEMES)
    ),
    "callback_time": _ISO_TIME,
    "callback_repeat": enum(("0", "1")),
    "callback_repeat_type": enum(scheduled_rules.REPEAT_TYPES),
    "callback_repeat_interval_unit": enum(scheduled_rules.UNITS),
    "callback_repeat_interval": _POSITIVE,
    "callback_repeat_count": _POSITIVE,
    "callback_repeat_until": _ISO_TIME,
}
CREATE_REQUIRED = ("callback_url", "callback_time")


def scheduled_errors() -> dict[int, list[str]]:
    """``status -> [error key]`` from the family's own registry, ``ERROR_STATUS``."""
    found: dict[int, list[str]] = defaultdict(list)
    for key, status in scheduled_rules.ERROR_STATUS.items():
        found[status].append(key)
    return dict(found)


def _scheduled_body(schema: Schema) -> Body:
    return Body(schema, media_types=(JSON, XML), media_schemas={XML: xml_shape(schema)})


SCHEDULED = Family(
    tag="scheduled",
    description="Scheduled callbacks (seed: scheduled-callback-create), CallMyApp style: "
    'parameters in the query, answers {"success": 1|0, ...} as JSON or XML.',
    errors={
        status: _scheduled_body(obj({"success": const(0), "error": enum(keys)}))
        for status, keys in scheduled_errors().items()
    },
    path_params={"callback_id": ID},
    security=[{"queryKey": []}, {"bearer": []}, {"bareKey": []}],
)
_RETRY_AFTER = string(pattern=r"^[0-9]+$", description="seconds to wait before retrying")
for _family in (NOTIFICATION, CALLNOTIFY, SCHEDULED):  # over a tenant quota: Retry-After too
    _quota = _family.errors[429]
    _family.errors[429] = replace(_quota, headers={"Retry-After": _RETRY_AFTER})  # type: ignore[index]
_PARAMETERS_ECHO = {"type": "object", "additionalProperties": string()}
_REPEAT_VIEW = obj(
    {
        "type": enum(scheduled_rules.REPEAT_TYPES),
        "interval_unit": enum(scheduled_rules.UNITS),
        "interval": integer(minimum=1),
        "count": nullable(integer(minimum=1)),
        "until": nullable(TIMESTAMP),
    }
)
SCHEDULED_VIEW = obj(
    {
        "callback_id": ID,
        "callback_url": string(),
        "callback_time": TIMESTAMP,
        "timestamp": nullable(TIMESTAMP),
        "state": enum(scheduled_rules.STATES),
        "repeat": nullable(_REPEAT_VIEW),
        "fired_count": integer(minimum=0),
        "last_fired_at": nullable(TIMESTAMP),
        "last_status": nullable(string()),
        "last_delivery_id": nullable(string()),
        "failure_reason": nullable(string()),
        "created_at": TIMESTAMP,
    }
)


def _success(function: str, extra: dict[str, Schema]) -> Body:
    return _scheduled_body(
        obj(
            {
                "success": const(1),
                "api_function": const(function),
                "api_call_parameters": _PARAMETERS_ECHO,
                **extra,
            }
        )
    )


def scheduled() -> Catalogue:
    prefix = scheduled_api.PREFIX
    create_query = tuple(
        Param(name, schema, required=name in CREATE_REQUIRED)
        for name, schema in CREATE_PARAMETERS.items()
    )
    created = _success("create", {"callback_id": ID, "signing_secret": string(min_length=1)})
    create_errors = (400, 401, 403, 409, 429)
    lookup_errors = (400, 401, 403, 404)
    return {
        ("GET", f"{prefix}/create"): Operation(
            SCHEDULED,
            "Create a scheduled callback (parameters in the query)",
            {200: created},
            errors=create_errors,
            query=(*create_query, *_COMMON_QUERY),
        ),
        ("POST", f"{prefix}/create"): Operation(
            SCHEDULED,
            "Create a scheduled callback (parameters in a form body; a body value wins)",
            {200: created},
            errors=create_errors,
            query=_COMMON_QUERY,
            request=Body(
                obj(CREATE_PARAMETERS, required=CREATE_REQUIRED, closed=False),
                media_types=(FORM,),
            ),
            request_required=True,
        ),
        ("GET", f"{prefix}/retrieve/{{callback_id}}"): Operation(
            SCHEDULED,
            "Show a scheduled callback",
            {200: _success("retrieve", {"callback_id": ID, "callback": SCHEDULED_VIEW})},
            errors=lookup_errors,
            query=_COMMON_QUERY,
        ),
        ("GET", f"{prefix}/delete/{{callback_id}}"): Operation(
            SCHEDULED,
            "Cancel a scheduled callback",
            {200: _success("delete", {"callback_id": ID})},
            errors=lookup_errors,
            query=_COMMON_QUERY,
        ),
        ("GET", f"{prefix}/retrieve"): Operation(
            SCHEDULED,
            "Retrieve without an id: always callback_not_found",
            {},
            errors=lookup_errors,
            query=_COMMON_QUERY,
        ),
        ("GET", f"{prefix}/delete"): Operation(
            SCHEDULED,
            "Delete without an id: always callback_not_found",
            {},
            errors=lookup_errors,
            query=_COMMON_QUERY,
        ),
        ("GET", f"{prefix}/list"): Operation(
            SCHEDULED,
            "List the account's scheduled callbacks, a page at a time",
            {
                200: _success(
                    "list",
                    {"callbacks": array(SCHEDULED_VIEW), "next_cursor": nullable(string())},
                )
            },
            errors=(400, 401, 403),
            query=(
                Param("state", enum(scheduled_rules.STATES)),
                Param(
                    "limit",
                    integer(minimum=1, maximum=scheduled_rules.MAX_LIST_LIMIT),
                    f"default {scheduled_rules.DEFAULT_LIST_LIMIT}",
                ),
                Param(
                    "cursor",
                    string(pattern="^[A-Za-z0-9_-]{16}$"),  # scheduled.decode_cursor's check
                    "next_cursor of the previous page",
                ),
                *_COMMON_QUERY,
            ),
        ),
    }
