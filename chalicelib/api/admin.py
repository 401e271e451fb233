"""Tenants, keys and quotas: the operator's (ADMIN) and resellers' door into Ringback.

Keys: OWNER manages its own tenant's keys, a RESELLER those of its children (and its own), ADMIN
everyone's; a key may mint or revoke only roles it could mint (``mintable_roles``). Listing never
shows a key, only its id, prefix, role and dates. Quotas: anyone who may read a tenant sees its
limits and usage; only ADMIN changes them.
"""

from __future__ import annotations

import re
from typing import Any

from chalice import Blueprint, Response
from pynamodb.exceptions import DoesNotExist

from chalicelib.api.auth import ADMIN_TENANT
from chalicelib.api.errors import json_error
from chalicelib.api.house import Refusals, json_body
from chalicelib.domain import quotas as quota_rules
from chalicelib.domain.access import Need, Principal, Role, mintable_roles
from chalicelib.domain.ids import is_id
from chalicelib.domain.timeutil import BadTimestamp, parse_zoned, utcnow
from chalicelib.storage import quotas, tenants

bp = Blueprint(__name__)

_REFUSALS = Refusals(forbidden="this key may not do that", not_found="tenant not found")
PAGE_DEFAULT, PAGE_MAX = 100, 1000


def _principal() -> Principal:
    return _REFUSALS.principal(bp.current_request)


def tenant_view(tenant: tenants.TenantModel) -> dict[str, Any]:
    return {
        "tenant_id": tenant.tenant_id,
        "name": tenant.name,
        "parent_id": tenant.parent_id,
        "created_at": tenant.created_at,
    }


def key_view(record: tenants.ApiKeyModel) -> dict[str, Any]:
    """A key as listings show it: never the key, nor its hash."""
    return {
        "key_id": record.key_id,
        "prefix": record.key_prefix,
        "role": record.role,
        "created_at": record.created_at,
        "last_used": record.last_used,
        "expires_at": record.expires_at,
        "revoked_at": record.revoked_at,
    }


@bp.route("/admin/tenants", methods=["POST"])
def create_tenant() -> Response:
    principal = _principal()
    if principal.role not in (Role.ADMIN, Role.RESELLER):
        raise _REFUSALS.error(403)
    body = json_body(bp.current_request)
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise json_error(400, "invalid", "name must be a non-empty string", field="name")
    parent_id = body.get("parent_id")
    if principal.role is Role.RESELLER:
        if parent_id not in (None, principal.tenant_id):
            raise _REFUSALS.error(403)
        parent_id = principal.tenant_id
    elif parent_id is not None and (not is_id(parent_id) or tenants.get_tenant(parent_id) is None):
        raise json_error(400, "invalid", "parent_id is not an existing tenant", field="parent_id")
    tenant = tenants.create_tenant(name.strip(), parent_id)
    return Response(body=tenant_view(tenant), status_code=201)


@bp.route("/admin/tenants", methods=["GET"])
def list_tenants() -> dict[str, Any]:
    """ADMIN: every tenant; a RESELLER: its children; oldest first, paged by ``cursor``."""
    principal = _principal()
    if principal.role not in (Role.ADMIN, Role.RESELLER):
        raise _REFUSALS.error(403)
    query: dict[str, str] = dict(bp.current_request.query_params or {})
    raw_limit = query.get("limit", str(PAGE_DEFAULT))
    if not re.fullmatch(r"[0-9]{1,4}", raw_limit) or not 1 <= int(raw_limit) <= PAGE_MAX:
        raise json_error(400, "invalid", f"limit must be 1-{PAGE_MAX}", field="limit")
    parent = None if principal.role is Role.ADMIN else principal.tenant_id
    try:
        page, cursor = tenants.list_tenants(parent, int(raw_limit), query.get("cursor") or None)
    except tenants.BadCursor as exc:
        raise json_error(
            400, "invalid", "cursor is not one this listing gave", field="cursor"
        ) from exc
    return {"tenants": [tenant_view(t) for t in page], "next_cursor": cursor}


@bp.route("/admin/tenants/{tenant_id}", methods=["GET"])
def get_tenant(tenant_id: str) -> dict[str, Any]:
    principal = _principal()
    access = _REFUSALS.access(principal, tenant_id, Need.READ)
    return tenant_view(access.tenant)


def _own(principal: Principal, tenant_id: str) -> bool:
    return principal.tenant_id == tenant_id and principal.tenant_id != ADMIN_TENANT


@bp.route("/admin/tenants/{tenant_id}/keys", methods=["POST"])
def create_key(tenant_id: str) -> Response:
    principal = _principal()
    _REFUSALS.access(principal, tenant_id, Need.OWN)
    body = json_body(bp.current_request)
    role_name = body.get("role")
    if not isinstance(role_name, str) or role_name not in Role.__members__:
        raise json_error(
            400, "invalid", f"role must be one of {', '.join(Role.__members__)}", field="role"
        )
    role = Role(role_name)
    expires_at = None
    if body.get("expires_at") is not None:
        try:
            expires_at = parse_zoned(body["expires_at"])
        except BadTimestamp as exc:
            raise json_error(
                400,
                "invalid",
                f"expires_at must be ISO 8601 with a zone: {exc}",
                field="expires_at",
            ) from exc
        if expires_at <= utcnow():
            raise json_error(400, "invalid", "expires_at must be in the future", field="expires_at")
    if role not in mintable_roles(principal, own_tenant=_own(principal, tenant_id)):
        raise json_error(403, "forbidden", f"this key may not mint {role.value} keys")
    minted = tenants.mint_key(tenant_id, role.value, expires_at)
    return Response(
        body={
            "key": minted.key,
            "key_id": minted.record.key_id,
            "role": role.value,
            "tenant_id": tenant_id,
            "created_at": minted.record.created_at,
            "expires_at": minted.record.expires_at,
        },
        status_code=201,
    )


@bp.route("/admin/tenants/{tenant_id}/keys", methods=["GET"])
def list_keys(tenant_id: str) -> dict[str, Any]:
    """Every key of the tenant, revoked and expired ones included, oldest first."""
    principal = _principal()
    _REFUSALS.access(principal, tenant_id, Need.OWN)
    return {"keys": [key_view(k) for k in tenants.list_keys(tenant_id)]}


@bp.route("/admin/tenants/{tenant_id}/keys/{key_id}", methods=["DELETE"])
def revoke_key(tenant_id: str, key_id: str) -> Response:
    """Revoke a key: refused from the next request on. Idempotent (204 again)."""
    principal = _principal()
    _REFUSALS.access(principal, tenant_id, Need.OWN)
    record = tenants.get_key(tenant_id, key_id)
    if record is None:
        raise json_error(404, "not_found", f"key {key_id[:64]} not found")
    role = Role(record.role)
    if role not in mintable_roles(principal, own_tenant=_own(principal, tenant_id)):
        raise json_error(403, "forbidden", f"this key may not revoke {role.value} keys")
    tenants.revoke_key(record, utcnow())
    return Response(body="", status_code=204)


# --------------------------------------------------------------------------- quotas


def _quota_view(tenant_id: str, overrides: dict[str, Any]) -> dict[str, Any]:
    limits = quota_rules.apply(quotas.stage_defaults(), overrides)
    return {
        "tenant_id": tenant_id,
        "quotas": limits.view(),
        "overrides": overrides,
        "usage": quotas.usage(tenant_id),
    }


@bp.route("/admin/tenants/{tenant_id}/quotas", methods=["GET"])
def get_quotas(tenant_id: str) -> dict[str, Any]:
    """The limits in force (stage defaults with this tenant's overrides) and current usage."""
    access = _REFUSALS.access(_principal(), tenant_id, Need.READ)
    return _quota_view(tenant_id, quotas.overrides_of(access.tenant))


@bp.route("/admin/tenants/{tenant_id}/quotas", methods=["PUT"])
def put_quotas(tenant_id: str) -> dict[str, Any]:
    """ADMIN only: change some limits (``null``: back to the stage default)."""
    principal = _principal()
    _REFUSALS.access(principal, tenant_id, Need.WRITE)
    if principal.role is not Role.ADMIN:
        raise json_error(403, "forbidden", "only the operator's admin key may change quotas")
    body = json_body(bp.current_request)
    try:
        overrides = quotas.set_overrides(tenant_id, body)
    except quota_rules.BadQuotas as exc:
        raise json_error(400, "invalid", str(exc), field=exc.field) from exc
    except DoesNotExist as exc:
        raise _REFUSALS.error(404) from exc
    except quotas.Contended as exc:
        raise json_error(503, "contended", "quotas changed concurrently; retry") from exc
    return _quota_view(tenant_id, overrides)
