"""What the OpenAPI document says about each route, keyed by ``(method, path)`` of ``app.routes``.

Every schema here is built from what the handlers check with: enums from the tuples the
validators test membership in (campaign ``METHODS``/``CONTENT_TYPES``, events ``SELECTIONS``,
notification ``EVENT_NAMES`` and batch bounds, callnotify ``METHODS``/``SELECTIONS``, scheduled
``UNITS``/``REPEAT_TYPES``, ``Role``, delivery ``Status``), patterns from the validators' regexes,
error codes by asking each family's error factories what they answer. Literal strings appear only
where a handler writes the literal itself (e.g. a field name).

This module covers the service, admin, campaign and events routes; the three families with their
own error shapes live in ``openapi_families``. ``catalogue()`` joins them.
"""

from __future__ import annotations

from chalicelib.api import campaign as campaign_api
from chalicelib.api import events as events_api
from chalicelib.api.openapi import Body, Catalogue, Family, Operation, Param
from chalicelib.api.openapi_schema import (
    Schema,
    any_object,
    array,
    boolean,
    const,
    enum,
    integer,
    nullable,
    obj,
    one_of,
    prefix_pattern,
    regex,
    strftime_pattern,
    string,
    url_pattern,
)
from chalicelib.delivery import registry, safe_http
from chalicelib.domain import campaign as campaign_rules
from chalicelib.domain import flow as flow_rules
from chalicelib.domain import ids, timeutil
from chalicelib.domain import quotas as quota_rules
from chalicelib.domain.access import Role
from chalicelib.domain.retry import Status

# --------------------------------------------------------------------------- shared pieces

ID = string(pattern=regex(ids._ID), description="24 lowercase hex characters")
TIMESTAMP = string(pattern=strftime_pattern(timeutil.FORMAT), description="UTC, second precision")
ZONED = string(fmt="date-time", description="ISO 8601 with a zone (Z or +HH:MM)")
NON_BLANK = r"\S"
HTTP_SCHEMES = tuple(safe_http._DEFAULT_PORTS)  # the schemes the pinned HTTP sender speaks
LOOKUP_ID = string(
    min_length=1, max_length=64, description="an id as returned by the API (longer: 404)"
)


def house_error(extra: dict[str, Schema] | None = None) -> Schema:
    """``{"error", "message"}`` (errors.json_error), plus the fields some handlers add."""
    properties: dict[str, Schema] = {
        "error": string(min_length=1),
        "message": string(),
        "field": nullable(string()),
        "conflicting_callback_id": string(),
        "replayed_by": string(),
        "event_id": string(),
        "quota": string(),
        "limit": integer(minimum=0),
    }
    properties.update(extra or {})
    return obj(properties, required=["error", "message"])


HOUSE_ERRORS = {
    status: Body(house_error(), description=text)
    for status, text in {
        400: "invalid input; `field` names the field at fault",
        401: "no key, or a key Ringback does not know",
        403: "this key may not do that for this tenant",
        404: "not found (or, for the admin key, no such tenant)",
        409: "conflict (overlapping registration, delivery not replayable, a request with the "
        "same Idempotency-Key still in progress)",
        415: "Content-Type not accepted by this route",
        500: "unexpected error (never a traceback)",
        503: "too many concurrent changes; retry",
    }.items()
}
RETRY_AFTER = string(pattern=r"^[0-9]+$", description="seconds to wait before retrying")
HOUSE_ERRORS[429] = Body(
    house_error(),
    description="over one of the tenant's quotas (`quota` names it); see Retry-After",
    headers={"Retry-After": RETRY_AFTER},
)

SERVICE = Family(
    tag="service",
    description="Liveness and this document.",
    errors=HOUSE_ERRORS,
    path_params={},
)
ADMIN = Family(
    tag="admin",
    description="Tenants and API keys (admin key, resellers, owners).",
    errors=HOUSE_ERRORS,
    path_params={"tenant_id": ID, "key_id": string(min_length=1, max_length=200)},
)
CAMPAIGN = Family(
    tag="campaign",
    description="Campaign callback registrations (seed: campaign-callback-registrations).",
    errors=HOUSE_ERRORS,
    path_params={"company_id": ID, "callback_id": ID},
)
EVENTS = Family(
    tag="events",
    description="Publishing events; deliveries, their attempts and replays.",
    errors=HOUSE_ERRORS,
    path_params={"event_id": LOOKUP_ID, "delivery_id": LOOKUP_ID},
)

# --------------------------------------------------------------------------- service


def _service() -> Catalogue:
    from chalicelib.api import landing

    family_names = [name for name, _, _ in landing.FAMILIES]
    return {
        ("GET", "/"): Operation(
            SERVICE,
            "Index: the service, its version, the API families and their base paths",
            {
                200: Body(
                    obj(
                        {
                            "service": const(landing.SERVICE),
                            "name": string(),
                            "version": string(),
                            "families": array(
                                obj(
                                    {
                                        "name": enum(family_names),
                                        "base_path": string(pattern="^/"),
                                        "description": string(),
                                    }
                                )
                            ),
                            "links": obj(
                                {
                                    "openapi": const("/openapi.json"),
                                    "health": const("/health"),
                                }
                            ),
                        }
                    )
                )
            },
            public=True,
        ),
        ("GET", "/health"): Operation(
            SERVICE,
            "Liveness",
            {200: Body(obj({"status": const("ok"), "stage": string()}))},
            public=True,
        ),
        ("GET", "/openapi.json"): Operation(
            SERVICE,
            "This OpenAPI 3.1 document",
            {200: Body(any_object("an OpenAPI 3.1 document"))},
            public=True,
        ),
    }


# --------------------------------------------------------------------------- admin

TENANT_VIEW = obj(
    {"tenant_id": ID, "name": string(), "parent_id": nullable(ID), "created_at": TIMESTAMP}
)
ROLE = enum(Role.__members__)


KEY_ID = string(
    pattern=regex(ids._ID), description="a key's id: 24 lowercase hex characters (never the key)"
)
KEY_VIEW = obj(
    {
        "key_id": KEY_ID,
        "prefix": string(max_length=8, description="the key's first characters"),
        "role": ROLE,
        "created_at": TIMESTAMP,
        "last_used": nullable(TIMESTAMP),
        "expires_at": nullable(TIMESTAMP),
        "revoked_at": nullable(TIMESTAMP),
    }
)
_COUNT = integer(minimum=0, maximum=quota_rules.MAX_LIMIT)
_PER_FAMILY = obj({f: _COUNT for f in quota_rules.REGISTRATION_FAMILIES}, required=[])
QUOTAS = obj(
    {
        quota_rules.REGISTRATIONS: obj({f: _COUNT for f in quota_rules.REGISTRATION_FAMILIES}),
        quota_rules.EVENTS: _COUNT,
        quota_rules.PENDING: _COUNT,
    }
)
QUOTA_VIEW = obj(
    {
        "tenant_id": ID,
        "quotas": QUOTAS,
        "overrides": obj(
            {
                quota_rules.REGISTRATIONS: _PER_FAMILY,
                quota_rules.EVENTS: _COUNT,
                quota_rules.PENDING: _COUNT,
            },
            required=[],
        ),
        "usage": obj(
            {
                quota_rules.REGISTRATIONS: obj(
                    {f: integer(minimum=0) for f in quota_rules.REGISTRATION_FAMILIES}
                ),
                quota_rules.PENDING: integer(minimum=0),
            }
        ),
    }
)


def _admin() -> Catalogue:
    return {
        ("GET", "/admin/tenants"): Operation(
            ADMIN,
            "List tenants (admin key: all; a reseller: its children), oldest first",
            {200: Body(obj({"tenants": array(TENANT_VIEW), "next_cursor": nullable(string())}))},
            errors=(400, 401, 403),
            query=(
                Param("limit", integer(minimum=1, maximum=1000), "page size (default 100)"),
                Param("cursor", string(), "next_cursor of the previous page"),
            ),
        ),
        ("GET", "/admin/tenants/{tenant_id}/keys"): Operation(
            ADMIN,
            "List a tenant's API keys: ids, prefixes, roles and dates, never the keys",
            {200: Body(obj({"keys": array(KEY_VIEW)}))},
            errors=(401, 403, 404),
        ),
        ("DELETE", "/admin/tenants/{tenant_id}/keys/{key_id}"): Operation(
            ADMIN,
            "Revoke an API key: refused from the next request on (idempotent)",
            {204: Body({}, description="revoked", media_types=())},
            errors=(401, 403, 404),
        ),
        ("GET", "/admin/tenants/{tenant_id}/quotas"): Operation(
            ADMIN,
            "A tenant's quotas in force (stage defaults and overrides) and usage",
            {200: Body(QUOTA_VIEW)},
            errors=(401, 403, 404),
        ),
        ("PUT", "/admin/tenants/{tenant_id}/quotas"): Operation(
            ADMIN,
            "Change a tenant's quotas (admin key only; null: back to the stage default)",
            {200: Body(QUOTA_VIEW)},
            errors=(400, 401, 403, 404, 503),
            request=Body(
                obj(
                    {
                        quota_rules.REGISTRATIONS: nullable(
                            obj(
                                {f: nullable(_COUNT) for f in quota_rules.REGISTRATION_FAMILIES},
                                required=[],
                            )
                        ),
                        quota_rules.EVENTS: nullable(_COUNT),
                        quota_rules.PENDING: nullable(_COUNT),
                    },
                    required=[],
                )
            ),
            request_required=True,
        ),
        ("POST", "/admin/tenants"): Operation(
            ADMIN,
            "Create a tenant (admin key, or a reseller for a child of its own)",
            {201: Body(TENANT_VIEW)},
            errors=(400, 401, 403),
            request=Body(
                obj(
                    {
                        "name": string(min_length=1, max_length=200, pattern=NON_BLANK),
                        "parent_id": nullable(ID),
                    },
                    required=["name"],
                    closed=False,
                )
            ),
            request_required=True,
        ),
        ("GET", "/admin/tenants/{tenant_id}"): Operation(
            ADMIN, "Show a tenant", {200: Body(TENANT_VIEW)}, errors=(401, 403, 404)
        ),
        ("POST", "/admin/tenants/{tenant_id}/keys"): Operation(
            ADMIN,
            "Mint an API key for a tenant (shown once; stored hashed)",
            {
                201: Body(
                    obj(
                        {
                            "key": string(pattern="^rbk_"),
                            "key_id": KEY_ID,
                            "role": ROLE,
                            "tenant_id": ID,
                            "created_at": TIMESTAMP,
                            "expires_at": nullable(TIMESTAMP),
                        }
                    )
                )
            },
            errors=(400, 401, 403, 404),
            request=Body(
                obj({"role": ROLE, "expires_at": nullable(ZONED)}, required=["role"], closed=False)
            ),
            request_required=True,
        ),
    }


# --------------------------------------------------------------------------- campaign

_TEXT = campaign_rules._MAX_TEXT
CAMPAIGN_URL = string(min_length=1, max_length=_TEXT, pattern=url_pattern(HTTP_SCHEMES))
RATE_LIMIT: Schema = {
    "type": "number",
    "minimum": flow_rules.MIN_RATE,
    "maximum": flow_rules.MAX_RATE,
    "description": "flow control: deliveries per second to this target",
}
MAX_IN_FLIGHT: Schema = {
    **integer(minimum=1, maximum=flow_rules.MAX_IN_FLIGHT),
    "description": "flow control: concurrent deliveries to this target",
}
REGISTRATION_VIEW = obj(
    {
        "callback_id": ID,
        "event_type": string(pattern=regex(campaign_rules._EVENT_TYPE)),
        "campaign_id": nullable(string()),
        "destination_url": string(),
        "backup_url": nullable(string()),
        "destination_method": enum(campaign_rules.METHODS),
        "content_type": enum(campaign_rules.CONTENT_TYPES),
        "start_date": TIMESTAMP,
        "end_date": nullable(TIMESTAMP),
        "url": string(pattern=prefix_pattern("/companies/")),
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
        "active": boolean(),
        "disabled_reason": nullable(string()),
        "rate_limit": nullable(RATE_LIMIT),
        "max_in_flight": nullable(MAX_IN_FLIGHT),
    }
)
CREATED_REGISTRATION = {
    **REGISTRATION_VIEW,
    "properties": {**REGISTRATION_VIEW["properties"], "signing_secret": string(min_length=1)},
    "required": [*REGISTRATION_VIEW["required"], "signing_secret"],
}
CREATE_REGISTRATION = obj(
    {
        "event_type": string(pattern=regex(campaign_rules._EVENT_TYPE)),
        "destination_url": CAMPAIGN_URL,
        "backup_url": nullable(CAMPAIGN_URL),
        "destination_method": enum(
            campaign_rules.METHODS, description="case-insensitive; default POST"
        ),
        "content_type": enum(
            campaign_rules.CONTENT_TYPES, description="case-insensitive; default application/json"
        ),
        "campaign_id": nullable(string(max_length=256)),
        "start_date": nullable(ZONED),
        "end_date": nullable(ZONED),
        "rate_limit": nullable(RATE_LIMIT),
        "max_in_flight": nullable(MAX_IN_FLIGHT),
    },
    required=["event_type", "destination_url"],
    closed=False,
    description="Fields the seed does not allow in a create are ignored.",
)


def _campaign() -> Catalogue:
    base = campaign_api.BASE
    item = f"{base}/callbacks/{{callback_id}}"
    return {
        ("GET", f"{base}/callbacks"): Operation(
            CAMPAIGN,
            "List active and future registrations",
            {200: Body(array(REGISTRATION_VIEW))},
            errors=(401, 403, 404),
        ),
        ("POST", f"{base}/callbacks"): Operation(
            CAMPAIGN,
            "Register a callback (overlapping ranges of one event type: 409)",
            {201: Body(CREATED_REGISTRATION, headers={"Location": string()})},
            errors=(400, 401, 403, 404, 409, 429, 503),
            request=Body(CREATE_REGISTRATION),
            request_required=True,
        ),
        ("GET", item): Operation(
            CAMPAIGN, "Show a registration", {200: Body(REGISTRATION_VIEW)}, errors=(401, 403, 404)
        ),
        ("DELETE", item): Operation(
            CAMPAIGN,
            "End a registration now",
            {200: Body(REGISTRATION_VIEW)},
            errors=(401, 403, 404, 503),
        ),
        ("POST", f"{item}/secret/rotate"): Operation(
            CAMPAIGN,
            "Rotate the signing secret (owner; the old one signs for 24 h more)",
            {
                200: Body(
                    obj(
                        {
                            "callback_id": ID,
                            "signing_secret": string(min_length=1),
                            "previous_secret_valid_until": nullable(TIMESTAMP),
                        }
                    )
                )
            },
            errors=(401, 403, 404, 503),
        ),
        ("POST", f"{item}/enable"): Operation(
            CAMPAIGN,
            "Deliver again to a registration disabled after a 410 or a dead period",
            {200: Body(REGISTRATION_VIEW)},
            errors=(401, 403, 404),
        ),
        ("POST", f"{base}/callback_events/test"): Operation(
            CAMPAIGN,
            "Send a test event to the active registrations of an event type",
            {
                201: Body(
                    obj(
                        {
                            "event_id": ID,
                            "event_type": string(),
                            "deliveries": integer(minimum=1),
                        }
                    )
                )
            },
            errors=(400, 401, 403, 404),
            request=Body(
                obj(
                    {
                        "event_type": string(min_length=1, pattern=NON_BLANK),
                        "campaign_id": nullable(string()),
                        "payload": any_object(
                            f"at most {events_api.MAX_PAYLOAD_BYTES} bytes as JSON, as for "
                            "POST /events"
                        ),
                    },
                    required=["event_type"],
                    closed=False,
                )
            ),
        ),
    }


# --------------------------------------------------------------------------- events

STATUS = enum(s.value for s in Status)
REPLAYABLE = enum(events_api.REPLAYABLE)
ATTEMPT = obj(
    {
        "at": TIMESTAMP,
        "url": string(),
        "status_code": integer(),
        "error": string(),
        "duration_ms": integer(minimum=0),
        "response": string(
            max_length=512, description="the start of the receiver's answer (at most 512 bytes)"
        ),
    },
    required=["at", "url", "duration_ms"],
)


def _family_names() -> Schema:
    return enum(sorted(f.name for f in registry.families()))


def _delivery_view() -> Schema:
    return obj(
        {
            "delivery_id": string(),
            "event_id": string(),
            "family": _family_names(),
            "status": STATUS,
            "target": string(),
            "attempts": array(ATTEMPT),
            "next_attempt_at": nullable(TIMESTAMP),
            "failure_reason": nullable(string()),
            "replay_of": nullable(string()),
            "replayed_by": nullable(string()),
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
        }
    )


TENANT_PARAM = Param(
    "tenant_id", ID, "the tenant acted on (admin: required; reseller: a child; else own)"
)
RANGE = {"status": STATUS, "since": ZONED, "until": ZONED}
REPLAY_ONE = obj({"delivery_id": string(), "replay_of": string()})


def _events() -> Catalogue:
    delivery = _delivery_view()
    EVENT_INPUT = obj(
        {
            "tenant_id": ID,
            "event_type": string(min_length=1, max_length=128, pattern=NON_BLANK),
            "campaign_id": nullable(string()),
            "selection": nullable(enum(events_api.SELECTIONS)),
            "payload": any_object(
                f"at most {events_api.MAX_PAYLOAD_BYTES} bytes as JSON; families "
                "check the payloads of their own event types"
            ),
        },
        required=["event_type"],
        closed=False,
    )
    return {
        ("POST", "/events"): Operation(
            EVENTS,
            "Publish an event to every matching target of every family, or a batch of up to "
            f"{events_api.MAX_BATCH} events (a JSON array, each accepted or refused on its own)",
            {
                202: Body(
                    obj({"event_id": ID, "deliveries": integer(minimum=0)}),
                    description="accepted; `Idempotent-Replayed: true` when the key was seen",
                ),
                200: Body(
                    obj(
                        {
                            "accepted": integer(minimum=0),
                            "refused": integer(minimum=0),
                            "results": array(
                                obj(
                                    {
                                        "status": integer(minimum=200, maximum=599),
                                        "event_id": ID,
                                        "deliveries": integer(minimum=0),
                                        "idempotent_replayed": boolean(),
                                        "error": string(),
                                        "message": string(),
                                        "field": nullable(string()),
                                        "quota": string(),  # a 429's, as a single request's
                                        "limit": integer(minimum=0),
                                        # a 429's or 409's Retry-After, in seconds
                                        "retry_after": integer(minimum=0),
                                    },
                                    required=["status"],
                                ),
                                max_items=events_api.MAX_BATCH,
                            ),
                        }
                    ),
                    description="a batch: one result per event, in order, each with the status "
                    "and body a single request would have had",
                ),
            },
            errors=(400, 401, 403, 404, 409, 429),
            request=Body(
                one_of(
                    EVENT_INPUT,
                    array(
                        {
                            **EVENT_INPUT,
                            "properties": {
                                **EVENT_INPUT["properties"],
                                "idempotency_key": string(
                                    min_length=1, max_length=255, pattern=NON_BLANK
                                ),
                            },
                        },
                        min_items=1,
                        max_items=events_api.MAX_BATCH,
                    ),
                )
            ),
            request_required=True,
            headers=(
                Param(
                    "Idempotency-Key",
                    string(min_length=1, max_length=255, pattern=NON_BLANK),
                    "a repeat within 24 h returns the first event instead of a new one",
                ),
            ),
        ),
        ("GET", "/events/{event_id}"): Operation(
            EVENTS,
            "An event and where it went",
            {
                200: Body(
                    obj(
                        {
                            "event_id": string(),
                            "event_type": string(),
                            "received_at": TIMESTAMP,
                            "deliveries": array(
                                obj(
                                    {
                                        "delivery_id": string(),
                                        "target": string(),
                                        "status": STATUS,
                                    }
                                )
                            ),
                            "next_cursor": nullable(string()),
                            "delivery_count": integer(minimum=0),
                        },
                        required=["event_id", "event_type", "received_at", "deliveries"],
                    )
                )
            },
            errors=(400, 401, 403, 404),
            query=(Param("cursor", string(), "next_cursor of the previous page"),),
        ),
        ("GET", "/deliveries/{delivery_id}"): Operation(
            EVENTS, "A delivery and every attempt", {200: Body(delivery)}, errors=(401, 403, 404)
        ),
        ("POST", "/deliveries/{delivery_id}/replay"): Operation(
            EVENTS,
            "Replay a failed or skipped delivery",
            {202: Body(REPLAY_ONE)},
            errors=(401, 403, 404, 409),
        ),
        ("GET", "/deliveries"): Operation(
            EVENTS,
            f"Deliveries in a status (or all), oldest first, a page of at most "
            f"{events_api.REPLAY_LIMIT}",
            {
                200: Body(
                    obj(
                        {
                            "deliveries": array(delivery),
                            "truncated": boolean(),
                            "next_cursor": nullable(string()),
                        }
                    )
                )
            },
            errors=(400, 401, 403, 404),
            query=(
                TENANT_PARAM,
                Param(
                    "status",
                    enum([*(s.value for s in Status), events_api.ALL_STATUSES]),
                    "default failed; all: every status",
                ),
                Param("since", ZONED),
                Param("until", ZONED),
                Param("family", string(min_length=1, max_length=2048), "campaign, notification..."),
                Param("target", string(min_length=1, max_length=2048), "a target id or URL"),
                Param(
                    "limit",
                    integer(minimum=1, maximum=events_api.REPLAY_LIMIT),
                    f"page size, default {events_api.REPLAY_LIMIT}",
                ),
                Param("cursor", string(), "next_cursor of the previous page"),
            ),
        ),
        ("POST", "/deliveries/replay"): Operation(
            EVENTS,
            f"Replay failed or skipped deliveries in a time range (at most "
            f"{events_api.REPLAY_LIMIT})",
            {
                202: Body(
                    obj(
                        {
                            "replayed": integer(minimum=0),
                            "deliveries": array(REPLAY_ONE),
                            "truncated": boolean(),
                        }
                    )
                )
            },
            errors=(400, 401, 403, 404),
            request=Body(
                obj(
                    {"tenant_id": ID, "status": REPLAYABLE, "since": ZONED, "until": ZONED},
                    required=[],
                    closed=False,
                )
            ),
        ),
    }


def catalogue() -> dict[tuple[str, str], Operation]:
    """Every route's description (the test suite checks it covers ``app.routes`` exactly)."""
    from chalicelib.api import openapi_families, openapi_portal

    entries: dict[tuple[str, str], Operation] = {}
    for part in (
        _service(),
        _admin(),
        _campaign(),
        _events(),
        openapi_families.notification(),
        openapi_families.callnotify(),
        openapi_families.scheduled(),
        openapi_portal.portal(),
    ):
        for key, op in part.items():
            if key in entries:
                raise ValueError(f"{key} is described twice")
            entries[key] = op
    return entries
