"""Portal sessions as API credentials.

A browser that opened a magic link holds an ``HttpOnly`` cookie naming its session. The portal's
pages call the very same API routes a backend calls with a key: ``auth.authenticate`` asks
``resolve`` when a request carries no key, and the session stands for the tenant's OWNER
(``manage``) or VIEWER (``read``) key. So the portal runs every family's own validation,
storage and tenant rules, never a second copy of them.

Two extra rules hold for a cookie, because a browser sends it by itself:

- a write (any method but GET/HEAD/OPTIONS) must carry ``X-CSRF-Token``, a value derived from
  the session token that only the portal's own script can read (``GET /portal/session``);
  together with ``SameSite=Strict`` no other site can make the browser write;
- a ``read`` session never writes, whatever a family would allow a VIEWER key;
- no session reaches the admin routes (tenants, API keys), whatever its rights.
"""

from __future__ import annotations

import hashlib
import hmac
from http.cookies import CookieError, SimpleCookie

from chalice.app import Request

from chalicelib import settings
from chalicelib.domain.access import Principal, Role
from chalicelib.storage import portal as store

COOKIE = "rb_portal"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
OFF_LIMITS = ("/admin",)
"""Routes a session never reaches: tenants and API keys (an hours-long session must not mint a
key that outlives it)."""


class Refused(Exception):
    """A live session asked for something it may not do (a write without the CSRF token, or
    any write from a read-only session)."""


def cookie_token(request: Request) -> str | None:
    """The session token from the request's ``Cookie`` header, if any."""
    raw = request.headers.get("cookie") if request.headers else None
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None and morsel.value else None


def csrf_token(session_token: str) -> str:
    """The per-session CSRF token: derived from the session token, never stored, and useless
    without the cookie it belongs to."""
    return hashlib.sha256(b"ringback-portal-csrf:" + session_token.encode()).hexdigest()


def current(request: Request) -> tuple[str, store.Session] | None:
    """(token, session) for the request's cookie, or None."""
    token = cookie_token(request)
    if token is None:
        return None
    found = store.find_session(token)
    return (token, found) if found is not None else None


def resolve(request: Request) -> Principal | None:
    """The principal a session cookie stands for, or None without a live session.

    Raises ``Refused`` for a write the session may not make."""
    found = current(request)
    if found is None:
        return None
    token, session = found
    context = getattr(request, "context", None) or {}
    route = str(context.get("resourcePath") or getattr(request, "path", "") or "")
    if route.startswith(OFF_LIMITS):
        raise Refused("a portal session does not manage tenants or keys")
    if request.method.upper() not in SAFE_METHODS:
        if not session.can_write:
            raise Refused("this portal session is read-only")
        sent = request.headers.get(CSRF_HEADER) or ""
        if not hmac.compare_digest(sent.encode(), csrf_token(token).encode()):
            raise Refused("missing or wrong X-CSRF-Token")
    return Principal(session.tenant_id, Role.OWNER if session.can_write else Role.VIEWER)


def cookie_header(token: str, max_age: int) -> str:
    """``Set-Cookie`` for a session: HttpOnly, SameSite=Strict, Secure outside the local stage
    (the local stack serves plain HTTP on loopback)."""
    parts = [f"{COOKIE}={token}", "Path=/", f"Max-Age={max_age}", "HttpOnly", "SameSite=Strict"]
    if settings.stage() != "local":
        parts.append("Secure")
    return "; ".join(parts)


def clearing_cookie_header() -> str:
    return cookie_header("", 0)
