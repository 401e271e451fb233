"""Tenants and keys: the operator's (ADMIN) and resellers' door into Ringback."""

from __future__ import annotations

from typing import Any

from chalice import Blueprint, Response

from chalicelib.api.auth import ADMIN_TENANT
from chalicelib.api.errors import json_error
from chalicelib.api.house import Refusals, json_body
from chalicelib.domain.access import Need, Principal, Role, mintable_roles
from chalicelib.domain.ids import is_id
from chalicelib.storage import tenants

bp = Blueprint(__name__)

_REFUSALS = Refusals(forbidden="this key may not do that", not_found="tenant not found")


def _principal() -> Principal:
    return _REFUSALS.principal(bp.current_request)


def tenant_view(tenant: tenants.TenantModel) -> dict[str, Any]:
    return {
        "tenant_id": tenant.tenant_id,
        "name": tenant.name,
        "parent_id": tenant.parent_id,
        "created_at": tenant.created_at,
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


@bp.route("/admin/tenants/{tenant_id}", methods=["GET"])
def get_tenant(tenant_id: str) -> dict[str, Any]:
    principal = _principal()
    access = _REFUSALS.access(principal, tenant_id, Need.READ)
    return tenant_view(access.tenant)


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
    own = principal.tenant_id == tenant_id and principal.tenant_id != ADMIN_TENANT
    if role not in mintable_roles(principal, own_tenant=own):
        raise json_error(403, "forbidden", f"this key may not mint {role.value} keys")
    key = tenants.create_key(tenant_id, role.value)
    return Response(body={"key": key, "role": role.value, "tenant_id": tenant_id}, status_code=201)
