"""The self-serve portal, served by the app itself under ``/portal``.

- ``POST /portal/sessions`` (a tenant's OWNER key, an ADMIN key naming ``tenant_id``, or a
  RESELLER key for a child) answers a single-use magic link that expires in minutes.
- ``GET /portal/login?token=...`` spends the link for an ``HttpOnly``/``SameSite=Strict`` cookie
  session and redirects to ``/portal`` without the token.
- ``GET /portal`` is the page; ``/portal/static/...`` its script and style (no CDN, no build step,
  no inline script: the Content-Security-Policy is ``default-src 'self'``).

The page's script calls the API's own routes with the cookie (``chalicelib.portal.session``):
registrations, deliveries, replays and test events go through each family's handlers, with
their validation, storage and tenant rules. Only what no key-free route offers lives here: the
session itself; listing, creating and cancelling scheduled callbacks (the scheduled family reads
its key from the query string only and changes state with GETs, so the page does not call it
with a cookie; these routes call its own rules and storage); and per-target health.
"""

from __future__ import annotations

import hmac
import html
import logging
import time
from collections import Counter
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from chalice import Blueprint, Response

from chalicelib import settings
from chalicelib.api import scheduled as scheduled_api
from chalicelib.api.auth import Denied, authorize, extract_key, principal_for_key
from chalicelib.api.common import check_destination
from chalicelib.api.errors import ApiError, json_error
from chalicelib.api.house import Refusals, json_body, quota_refusal
from chalicelib.delivery import scheduled as scheduler
from chalicelib.domain import scheduled as scheduled_rules
from chalicelib.domain.access import Need, Principal, Role
from chalicelib.domain.retry import Status
from chalicelib.domain.timeutil import fmt, utcnow
from chalicelib.domain.urlsafety import InvalidUrl, UnsafeDestination
from chalicelib.portal import session as portal_session
from chalicelib.storage import deliveries
from chalicelib.storage import portal as store
from chalicelib.storage import scheduled as scheduled_store
from chalicelib.storage.quotas import QuotaExceeded

bp = Blueprint(__name__)
log = logging.getLogger("ringback.portal")

_REFUSALS = Refusals(
    forbidden="this key or session may not do that for this tenant", not_found="tenant not found"
)
ASSETS = Path(__file__).resolve().parent.parent / "portal"
STATIC_TYPES = {
    "portal.js": "text/javascript; charset=utf-8",
    "portal.css": "text/css; charset=utf-8",
}
LINK_SECONDS = 15 * 60
MAX_LINK_SECONDS = 60 * 60
SESSION_SECONDS = 8 * 3600
MAX_SESSION_SECONDS = 24 * 3600
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
RIGHTS_SPELLINGS = {"read": "read", "read-only": "read", "read_only": "read", "manage": "manage"}
"""``rights`` as a caller may spell it (read-only is read)."""
HEALTH_STATUSES = (Status.DELIVERED, Status.FAILED, Status.SKIPPED)
HEALTH_CAP = 2000  # deliveries read per status and tenant for the 7-day figures


Headers = dict[str, str | list[str]]


def security_headers(content_type: str, *, cache: bool = False) -> Headers:
    """Headers on every portal response: the strict CSP and its companions."""
    return {
        "Content-Type": content_type,
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "public, max-age=300" if cache else "no-store",
    }


def _prefix() -> str:
    """The API Gateway stage prefix (``/api`` on AWS, empty locally), so links and redirects
    point where the browser can reach them."""
    context = bp.current_request.context or {}
    path = str(context.get("path") or "")
    resource = str(context.get("resourcePath") or "")
    if resource and path.endswith(resource) and path != resource:
        return path[: -len(resource)]
    return ""


def _origin() -> str:
    headers: Mapping[str, str] = bp.current_request.headers or {}
    host = headers.get("host") or "localhost"
    default = "http" if settings.stage() == "local" else "https"
    scheme = (headers.get("x-forwarded-proto") or default).split(",")[0].strip()
    return f"{scheme}://{host}"


def _seconds(body: dict[str, Any], field: str, default: int, maximum: int) -> int:
    value = body.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise json_error(
            400, "invalid", f"{field} must be whole seconds from 1 to {maximum}", field=field
        )
    return value


# --------------------------------------------------------------------------- sessions


@bp.route("/portal/sessions", methods=["POST"])
def create_session_link() -> Response:
    """A single-use link into the portal for one tenant, with ``read`` or ``manage`` rights."""
    request = bp.current_request
    try:  # a key only: a portal session never mints further links
        principal = principal_for_key(extract_key(request))
    except Denied as exc:
        raise _REFUSALS.error(exc.status) from exc
    body = json_body(request)
    tenant_id = body.get("tenant_id")
    if tenant_id is None:
        if principal.role is Role.ADMIN:
            raise json_error(400, "invalid", "an admin key must name tenant_id", field="tenant_id")
        tenant_id = principal.tenant_id
    if not isinstance(tenant_id, str):
        raise json_error(400, "invalid", "tenant_id must be a string", field="tenant_id")
    raw_rights = body.get("rights", "read")
    rights = RIGHTS_SPELLINGS.get(raw_rights) if isinstance(raw_rights, str) else None
    if rights is None:
        raise json_error(400, "invalid", "rights must be read or manage", field="rights")
    link_seconds = _seconds(body, "expires_in", LINK_SECONDS, MAX_LINK_SECONDS)
    session_seconds = _seconds(body, "session_expires_in", SESSION_SECONDS, MAX_SESSION_SECONDS)
    _REFUSALS.access(principal, tenant_id, Need.OWN)  # OWNER, its RESELLER, or ADMIN
    token, expires_at = store.create_link(
        tenant_id,
        rights,
        link_seconds=link_seconds,
        session_seconds=session_seconds,
        created_by=principal.role.value,
    )
    path = f"{_prefix()}/portal/login?token={token}"
    return Response(
        body={
            "url": _origin() + path,
            "tenant_id": tenant_id,
            "rights": rights,
            "expires_at": fmt_epoch(expires_at),
            "session_expires_in": session_seconds,
        },
        status_code=201,
        headers={"Cache-Control": "no-store"},
    )


def fmt_epoch(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _page(status: int, title: str, message: str) -> Response:
    text = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        f"<link rel='stylesheet' href='{html.escape(_prefix())}/portal/static/portal.css'>"
        f"</head><body><main class='notice'><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(message)}</p></main></body></html>"
    )
    return Response(body=text, status_code=status, headers=security_headers("text/html"))


@bp.route("/portal/login", methods=["GET"])
def login() -> Response:
    """Spend a magic link: set the session cookie and send the browser on without the token."""
    token = dict(bp.current_request.query_params or {}).get("token", "")
    spent = store.exchange(token)
    if spent is None:
        return _page(
            410,
            "This link cannot be used",
            "Portal links work once and only for a few minutes. Ask for a new one.",
        )
    session_token, session = spent
    headers = security_headers("text/html")
    headers["Location"] = f"{_prefix()}/portal"
    headers["Set-Cookie"] = portal_session.cookie_header(
        session_token, max(1, int(session.expires_at - time.time()))
    )
    return Response(body="", status_code=303, headers=headers)


def _session() -> tuple[str, store.Session]:
    found = portal_session.current(bp.current_request)
    if found is None:
        raise ApiError(
            Response(
                body={"error": "unauthorized", "message": "no portal session; open a new link"},
                status_code=401,
                headers={"Cache-Control": "no-store"},
            )
        )
    return found


@bp.route("/portal/session", methods=["GET"])
def current_session() -> Response:
    """What the page needs to know about its session, the CSRF token included (this route is
    same-origin only: no CORS, and the cookie is ``SameSite=Strict``)."""
    token, session = _session()
    return Response(
        body={
            "tenant_id": session.tenant_id,
            "rights": session.rights,
            "expires_at": fmt_epoch(session.expires_at),
            "csrf_token": portal_session.csrf_token(token),
        },
        headers={"Cache-Control": "no-store"},
    )


@bp.route("/portal/logout", methods=["POST"])
def logout() -> Response:
    """End the session now (CSRF token required, read-only sessions may log out too)."""
    token, session = _session()
    sent = bp.current_request.headers.get(portal_session.CSRF_HEADER) or ""
    if not hmac.compare_digest(sent.encode(), portal_session.csrf_token(token).encode()):
        raise json_error(403, "forbidden", "missing or wrong X-CSRF-Token")
    store.end_session(session.token_hash)
    return Response(
        body="",
        status_code=204,
        headers={"Set-Cookie": portal_session.clearing_cookie_header()},
    )


# --------------------------------------------------------------------------- pages


@bp.route("/portal", methods=["GET"])
def index() -> Response:
    if portal_session.current(bp.current_request) is None:
        return _page(
            401,
            "Ringback portal",
            "You are not signed in. Open the portal link your service gave you.",
        )
    text = (ASSETS / "index.html").read_text(encoding="utf-8")
    return Response(
        body=text.replace("{{prefix}}", html.escape(_prefix())),
        headers=security_headers("text/html; charset=utf-8"),
    )


@bp.route("/portal/static/{name}", methods=["GET"])
def static(name: str) -> Response:
    content_type = STATIC_TYPES.get(name)
    if content_type is None:
        return Response(body="not found", status_code=404, headers=security_headers("text/plain"))
    body = (ASSETS / "static" / name).read_text(encoding="utf-8")
    return Response(body=body, headers=security_headers(content_type, cache=True))


# --------------------------------------------------------------------------- portal-only data


def _tenant(need: Need) -> tuple[Principal, str]:
    """The caller's own tenant, as the own-tenant families (notification, scheduled) do it: a
    session's or key's tenant; the admin key has none here (403)."""
    principal = _REFUSALS.principal(bp.current_request)
    try:
        authorize(principal, principal.tenant_id, need)
    except Denied as exc:
        raise _REFUSALS.error(403) from exc
    return principal, principal.tenant_id


@bp.route("/portal/api/scheduled", methods=["GET"])
def scheduled_timeline() -> dict[str, Any]:
    """The tenant's live scheduled callbacks, soonest firing first within a page."""
    _, tenant_id = _tenant(Need.READ)
    query = dict(bp.current_request.query_params or {})
    after = None
    if query.get("cursor"):
        try:
            after = scheduled_rules.decode_cursor(query["cursor"])
        except scheduled_rules.ScheduleError as exc:
            raise json_error(400, "invalid", "cursor is not valid", field="cursor") from exc
    records, last = scheduled_store.list_page(
        tenant_id, "scheduled", scheduled_rules.DEFAULT_LIST_LIMIT, after
    )
    views = [scheduled_api.callback_view(r) for r in records]
    views.sort(key=lambda v: str(v.get("timestamp") or ""))
    return {
        "callbacks": views,
        "next_cursor": scheduled_rules.encode_cursor(last) if last else None,
    }


@bp.route("/portal/api/scheduled", methods=["POST"])
def create_scheduled() -> Response:
    """Create a scheduled callback from the page: the body holds the scheduled API's own
    parameters (``callback_url``, ``callback_time``, ``callback_repeat``...), checked by its
    ``parse_create`` and stored by its ``create``, exactly as ``/api/1.0/create`` does. Errors
    name the family's own key (``callback_time_expired``...) in the house body."""
    _, tenant_id = _tenant(Need.WRITE)
    body = json_body(bp.current_request)
    params = {
        name: str(value)
        for name, value in body.items()
        if isinstance(value, str | int) and not isinstance(value, bool) and name != "api_key"
    }
    params["api_key"] = "portal-session"  # the session stands for the key (checked above)
    now = utcnow()
    try:
        wanted = scheduled_rules.parse_create(params, now)
        check_destination(wanted.callback_url)
    except scheduled_rules.ScheduleError as exc:
        raise json_error(400, exc.key, exc.key.replace("_", " ")) from exc
    except (InvalidUrl, UnsafeDestination) as exc:
        raise json_error(400, "callback_url_forbidden", str(exc), field="callback_url") from exc
    try:
        created = scheduled_store.create(tenant_id, wanted, now)
    except scheduled_store.AlreadyExists as exc:
        raise json_error(409, "callback_already_exists", "the same URL and time exist") from exc
    except QuotaExceeded as exc:  # the tenant's pending-callbacks quota, as the family counts it
        raise quota_refusal(exc) from exc
    try:
        scheduler.hand_over(created.outbox)
    except Exception:  # stored durably (the sweeper) or watched (the reconciler)
        log.exception("callback %s: first firing not handed over", created.record.callback_id)
    view = scheduled_api.callback_view(created.record)
    view["signing_secret"] = created.signing_secret  # shown once
    return Response(body=view, status_code=201)


@bp.route("/portal/api/scheduled/{callback_id}/cancel", methods=["POST"])
def cancel_scheduled(callback_id: str) -> dict[str, Any]:
    """Cancel through the scheduled family's own storage rule (one transaction)."""
    _, tenant_id = _tenant(Need.WRITE)
    if len(callback_id) > 64:
        raise json_error(404, "not_found", f"callback {callback_id} not found")
    record = scheduled_store.cancel(tenant_id, callback_id, utcnow())
    if record is None:
        raise json_error(404, "not_found", f"callback {callback_id} not found")
    return scheduled_api.callback_view(record)


@bp.route("/portal/api/health", methods=["GET"])
def target_health() -> dict[str, Any]:
    """Per target: delivered/failed/skipped over the last 24 h and 7 days, and success rates.

    Read from the deliveries' ``by_tenant_status`` index (one Query per status, bounded by
    time and by ``HEALTH_CAP``), never a Scan."""
    _, tenant_id = _tenant(Need.READ)
    now = utcnow()
    day_ago = fmt(now - timedelta(days=1))
    week_ago = fmt(now - timedelta(days=7))
    counts: dict[tuple[str, str], dict[str, Counter[str]]] = {}
    capped = False
    for status in HEALTH_STATUSES:
        for n, record in enumerate(deliveries.in_status(tenant_id, status, week_ago)):
            if n >= HEALTH_CAP:
                capped = True
                break
            windows = counts.setdefault(
                (record.family, record.target), {"24h": Counter(), "7d": Counter()}
            )
            windows["7d"][status.value] += 1
            if record.created_at >= day_ago:
                windows["24h"][status.value] += 1
    targets = []
    for (family, target), windows in sorted(counts.items()):
        entry: dict[str, Any] = {"family": family, "target": target}
        for window, counter in windows.items():
            done = sum(counter[s.value] for s in HEALTH_STATUSES)
            entry[window] = {
                **{s.value: counter[s.value] for s in HEALTH_STATUSES},
                "success_rate": round(counter["delivered"] / done, 4) if done else None,
            }
        targets.append(entry)
    return {"targets": targets, "capped": capped, "generated_at": fmt(now)}
