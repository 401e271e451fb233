"""Who is calling, and may they touch this tenant's data.

A key arrives as ``Authorization: Bearer <key>`` or a bare ``Authorization: <key>``; only the
scheduled-callbacks family (whose seed requires it) also takes an ``api_key`` query parameter.
Anywhere else a key in the query string is refused (``Reason.QUERY_KEY``, a 401 saying to use the
header) even when a header is sent too: a URL ends up in proxies' and browsers' logs, so a key
there is as good as leaked, and the client must learn that at once.

The operator's admin key is compared by hash with the stage setting; tenant keys are looked up
by hash (one strongly consistent GetItem), refused when revoked or expired, and their
``last_used`` refreshed at most once a minute (``tenants.touch``). The functions raise ``Denied``
with a reason a family turns into its own error body.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from enum import StrEnum

from chalice.app import Request

from chalicelib import logs, settings
from chalicelib.domain.access import Need, Principal, Role, may
from chalicelib.domain.ids import is_id
from chalicelib.domain.timeutil import utcnow
from chalicelib.storage import tenants

log = logging.getLogger("ringback.auth")

ADMIN_TENANT = "0" * 24
QUERY_PARAMS = ("api_key",)
QUERY_KEY_MESSAGE = (
    "API keys are not accepted in the query string: send the key in the Authorization header "
    "(Authorization: Bearer <key>)"
)


class Reason(StrEnum):
    MISSING = "missing"  # no key at all -> 401
    INVALID = "invalid"  # a key we do not know -> 401
    FORBIDDEN = "forbidden"  # known key, not allowed here -> 403
    NO_TENANT = "no_tenant"  # an admin/reseller addressed a tenant that does not exist -> 404
    QUERY_KEY = "query_key"  # a key in the query string where only the header is taken -> 401


class Denied(Exception):
    def __init__(self, reason: Reason) -> None:
        super().__init__(reason.value)
        self.reason = reason

    @property
    def status(self) -> int:
        return {
            Reason.MISSING: 401,
            Reason.INVALID: 401,
            Reason.QUERY_KEY: 401,
            Reason.FORBIDDEN: 403,
        }.get(self.reason, 404)


def extract_key(request: Request, *, allow_query: bool = False) -> str | None:
    """The key the request carries. ``allow_query``: the scheduled family's ``api_key``
    parameter counts too; otherwise its presence raises ``Denied(QUERY_KEY)``."""
    query: dict[str, str] = dict(request.query_params or {})
    if not allow_query and any(name in query for name in QUERY_PARAMS):
        raise Denied(Reason.QUERY_KEY)
    header = request.headers.get("authorization") if request.headers else None
    if header and header.strip():
        value = header.strip()
        if value.lower().startswith("bearer "):
            value = value[7:].strip()
        return value or None
    if not allow_query:
        return None
    value = query.get("api_key")
    return value.strip() if value and value.strip() else None


def principal_for_key(key: str | None) -> Principal:
    if not key:
        raise Denied(Reason.MISSING)
    admin_hash = settings.admin_key_hash()
    hashed = settings.hash_key(key)
    if admin_hash and hmac.compare_digest(hashed, admin_hash):
        return Principal(ADMIN_TENANT, Role.ADMIN)
    if len(key) > 256:
        raise Denied(Reason.INVALID)
    record = tenants.find_key(key)
    now = utcnow()
    if record is None or not record.usable(now):
        raise Denied(Reason.INVALID)
    try:
        tenants.touch(record, now)
    except Exception:  # bookkeeping only: a failed write must not refuse a valid key
        log.warning("could not record the use of key %s", record.key_id, exc_info=True)
    return Principal(record.tenant_id, Role(record.role))


def authenticate(request: Request) -> Principal:
    """The caller, from the Authorization header (a key in the query string is refused)."""
    principal = principal_for_key(extract_key(request))
    if "tenant_id" not in logs.current():  # the addressed tenant (from the path) wins
        logs.bind(tenant_id=principal.tenant_id)
    return principal


@dataclass(frozen=True)
class Access:
    principal: Principal
    tenant: tenants.TenantModel


def authorize(principal: Principal, tenant_id: str, need: Need) -> Access:
    """Allow ``principal`` to ``need`` on ``tenant_id`` or raise ``Denied``.

    Callers outside a tenant's family never learn whether it exists: only ADMIN and the
    tenant's own reseller get a 404 for a missing tenant; everyone else gets a 403.
    """
    tenant = tenants.get_tenant(tenant_id) if is_id(tenant_id) else None
    if tenant is None:
        if principal.role in (Role.ADMIN, Role.RESELLER) or principal.tenant_id == tenant_id:
            raise Denied(Reason.NO_TENANT if principal.role is Role.ADMIN else Reason.FORBIDDEN)
        raise Denied(Reason.FORBIDDEN)
    if not may(principal, need, tenant_id=tenant.tenant_id, tenant_parent_id=tenant.parent_id):
        raise Denied(Reason.FORBIDDEN)
    return Access(principal, tenant)
