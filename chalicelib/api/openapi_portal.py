"""What the OpenAPI document says about the portal's routes (``chalicelib.api.portal``).

Two kinds: the browser's pages (HTML, the script and style, the magic link), which need no key,
and the portal's JSON routes, which take a key like the house routes or, from the page, the
session cookie (``rb_portal``) plus ``X-CSRF-Token`` on writes.
"""

from __future__ import annotations

from chalicelib.api import portal as portal_api
from chalicelib.api.openapi import Body, Catalogue, Family, Operation, Param
from chalicelib.api.openapi_catalog import HOUSE_ERRORS, ID, TIMESTAMP, house_error
from chalicelib.api.openapi_families import SCHEDULED_VIEW
from chalicelib.api.openapi_schema import (
    array,
    boolean,
    enum,
    integer,
    nullable,
    obj,
    string,
)
from chalicelib.storage import portal as store

HTML = "text/html"
PAGE = Body(string(description="an HTML page"), media_types=(HTML,))

PORTAL = Family(
    tag="portal",
    description="The self-serve portal: magic links, browser sessions, and the data its pages "
    "need that no API route gives (the scheduled timeline and cancel, target health).",
    errors={
        **HOUSE_ERRORS,
        401: Body(house_error(), description="no key, or no live portal session"),
        403: Body(
            house_error(),
            description="not allowed here; a read-only session or a missing X-CSRF-Token",
        ),
    },
    path_params={"callback_id": ID, "name": string(min_length=1)},
)
PAGES = Family(
    tag="portal",
    description=PORTAL.description,
    errors={
        **HOUSE_ERRORS,
        401: Body(PAGE.schema, description="not signed in", media_types=(HTML,)),
        404: Body(string(), description="no such file", media_types=("text/plain",)),
        410: Body(PAGE.schema, description="link used or expired", media_types=(HTML,)),
    },
    path_params={"name": string(min_length=1)},
)

_SECONDS = integer(minimum=1)
_COUNTS = obj(
    {
        **{s.value: integer(minimum=0) for s in portal_api.HEALTH_STATUSES},
        "success_rate": nullable({"type": "number", "minimum": 0, "maximum": 1}),
    }
)
_UTC = string(fmt="date-time", description="UTC")


def portal() -> Catalogue:
    link_request = obj(
        {
            "tenant_id": ID,
            "rights": enum(portal_api.RIGHTS_SPELLINGS, description="default read"),
            "expires_in": integer(minimum=1, maximum=portal_api.MAX_LINK_SECONDS),
            "session_expires_in": integer(minimum=1, maximum=portal_api.MAX_SESSION_SECONDS),
        },
        required=(),
    )
    link = obj(
        {
            "url": string(min_length=1, description="single use; open it in a browser"),
            "tenant_id": ID,
            "rights": enum(store.RIGHTS),
            "expires_at": _UTC,
            "session_expires_in": _SECONDS,
        }
    )
    session = obj(
        {
            "tenant_id": ID,
            "rights": enum(store.RIGHTS),
            "expires_at": _UTC,
            "csrf_token": string(min_length=1),
        }
    )
    health = obj(
        {
            "targets": array(
                obj(
                    {
                        "family": string(),
                        "target": string(),
                        "24h": _COUNTS,
                        "7d": _COUNTS,
                    }
                )
            ),
            "capped": boolean(),
            "generated_at": TIMESTAMP,
        }
    )
    created_scheduled = {
        **SCHEDULED_VIEW,
        "properties": {**SCHEDULED_VIEW["properties"], "signing_secret": string(min_length=1)},
        "required": [*SCHEDULED_VIEW["required"], "signing_secret"],
    }
    return {
        ("POST", "/portal/sessions"): Operation(
            PORTAL,
            "A single-use magic link into the portal (OWNER, its RESELLER, or ADMIN key)",
            {201: Body(link)},
            errors=(400, 401, 403, 404),
            request=Body(link_request),
        ),
        ("GET", "/portal/login"): Operation(
            PAGES,
            "Spend a magic link: sets the session cookie and redirects to /portal",
            {303: Body(string(), media_types=(HTML,), headers={"Location": string()})},
            errors=(410,),
            query=(Param("token", string(), "the link's token", required=False),),
            public=True,
        ),
        ("GET", "/portal"): Operation(
            PAGES,
            "The portal page (needs the session cookie)",
            {200: PAGE},
            errors=(401,),
            public=True,
        ),
        ("GET", "/portal/static/{name}"): Operation(
            PAGES,
            "The portal's script and style",
            {
                200: Body(
                    string(),
                    media_types=tuple(t.split(";")[0] for t in portal_api.STATIC_TYPES.values()),
                )
            },
            errors=(404,),
            public=True,
        ),
        ("GET", "/portal/session"): Operation(
            PORTAL,
            "The cookie's session, with its CSRF token",
            {200: Body(session)},
            errors=(401,),
            public=True,
        ),
        ("POST", "/portal/logout"): Operation(
            PORTAL,
            "End the cookie's session (X-CSRF-Token required)",
            {204: Body(string(), media_types=())},
            errors=(401, 403),
            public=True,
        ),
        ("GET", "/portal/api/scheduled"): Operation(
            PORTAL,
            "The tenant's live scheduled callbacks, soonest first within a page",
            {
                200: Body(
                    obj({"callbacks": array(SCHEDULED_VIEW), "next_cursor": nullable(string())})
                )
            },
            errors=(400, 401, 403, 404),
            query=(Param("cursor", string(), "next_cursor of the previous page"),),
        ),
        ("POST", "/portal/api/scheduled"): Operation(
            PORTAL,
            "Create a scheduled callback (the scheduled API's own create parameters, as JSON)",
            {201: Body(created_scheduled)},
            errors=(400, 401, 403, 409, 429),
            request=Body(
                obj(
                    {"callback_url": string(), "callback_time": string()},
                    required=(),
                    closed=False,
                )
            ),
        ),
        ("POST", "/portal/api/scheduled/{callback_id}/cancel"): Operation(
            PORTAL,
            "Cancel a scheduled callback",
            {200: Body(SCHEDULED_VIEW)},
            errors=(401, 403, 404),
        ),
        ("GET", "/portal/api/health"): Operation(
            PORTAL,
            "Per target: "
            + "/".join(s.value for s in portal_api.HEALTH_STATUSES)
            + " counts and success rate over 24 h and 7 days",
            {200: Body(health)},
            errors=(401, 403, 404),
        ),
    }
