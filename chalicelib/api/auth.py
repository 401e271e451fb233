"""Who is calling, and may they touch this tenant's data.

A key arrives as ``Authorization: Bearer <key>``, a bare ``Authorization: <key>`` or an
``api_key`` query parameter. The operator's admin key is compared by hash with the stage setting;
tenant keys are looked up by hash (one GetItem). The functions raise ``Denied`` with a reason a
family turns into its own error body.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import StrEnum

from chalice.app import Request

from chalicelib import logs, settings
from chalicelib.domain.access import Need, Principal, Role, may
from chalicelib.domain.ids import is_id
from chalicelib.portal import session as portal_session
from chalicelib.storage import tenants

ADMIN_TENANT = "0" * 24


class Reason(StrEnum):
    MISSING = "missing"  # no key at all -> 401
    INVALID = "invalid"  # a key we do not know -> 401
    FORBIDDEN = "forbidden"  # known key, not allowed here -> 403
    NO_TENANT = "no_tenant"  # an admin/reseller addressed a tenant that does not exist -> 404


class Denied(Exception):
    def __init__(self, reason: Reason) -> None:
        super().__init__(reason.value)
        self.reason = reason

    @property
    def status(self) -> int:
        return {Reason.MISSING: 401, Reason.INVALID: 401, Reason.FORBIDDEN: 403}.get(
            self.reason, 404
        )


def extract_key(request: Request) -> str | None:
    header = request.headers.get("authorization") if request.headers else None
    if header and header.strip():
        value = header.strip()
        if value.lower().startswith("bearer "):
            value = value[7:].strip()
        return value or None
    query: dict[str, str] = dict(request.query_params or {})
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
    if record is None:
        raise Denied(Reason.INVALID)
    return Principal(record.tenant_id, Role(record.role))


def authenticate(request: Request) -> Principal:
    """The caller: its key, or without one a portal session cookie (``portal.session``)."""
    key = extract_key(request)
    principal = _session_principal(request) if key is None else None
    if principal is None:
        principal = principal_for_key(key)
    if "tenant_id" not in logs.current():  # the addressed tenant (from the path) wins
        logs.bind(tenant_id=principal.tenant_id)
    return principal


def _session_principal(request: Request) -> Principal | None:
    try:
        return portal_session.resolve(request)
    except portal_session.Refused as exc:
        raise Denied(Reason.FORBIDDEN) from exc


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
