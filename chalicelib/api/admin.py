"""Tenants and keys: the operator's (ADMIN) and resellers' door into Ringback."""

from __future__ import annotations

from typing import Any

from chalice import Blueprint, Response

from chalicelib.api.auth import ADMIN_TENANT, Denied, authenticate, authorize
from chalicelib.api.common import BadBody, json_object
from chalicelib.api.errors import json_error
from chalicelib.domain.access import Need, Principal, Role, mintable_roles
from chalicelib.domain.ids import is_id
from chalicelib.storage import tenants

bp = Blueprint(__name__)

_DENIED = {
    401: ("unauthorized", "a valid API key is required"),
    403: ("forbidden", "this key may not do that"),
    404: ("not_found", "tenant not found"),
}


def _principal() -> Principal:
    try:
        return authenticate(bp.current_request)
    except Denied as exc:
        raise json_error(exc.status, *_DENIED[exc.status]) from exc


def _body() -> dict[str, Any]:
    try:
        return json_object(bp.current_request)
    except BadBody as exc:
        raise json_error(400, "invalid", str(exc), field=None) from exc


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
        raise json_error(403, *_DENIED[403])
    body = _body()
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise json_error(400, "invalid", "name must be a non-empty string", field="name")
    parent_id = body.get("parent_id")
    if principal.role is Role.RESELLER:
        if parent_id not in (None, principal.tenant_id):
            raise json_error(403, *_DENIED[403])
        parent_id = principal.tenant_id
    elif parent_id is not None and (not is_id(parent_id) or tenants.get_tenant(parent_id) is None):
        raise json_error(400, "invalid", "parent_id is not an existing tenant", field="parent_id")
    tenant = tenants.create_tenant(name.strip(), parent_id)
    return Response(body=tenant_view(tenant), status_code=201)


@bp.route("/admin/tenants/{tenant_id}", methods=["GET"])
def get_tenant(tenant_id: str) -> dict[str, Any]:
    principal = _principal()
    try:
        access = authorize(principal, tenant_id, Need.READ)
    except Denied as exc:
        raise json_error(exc.status, *_DENIED[exc.status]) from exc
    return tenant_view(access.tenant)


@bp.route("/admin/tenants/{tenant_id}/keys", methods=["POST"])
def create_key(tenant_id: str) -> Response:
    principal = _principal()
    try:
        authorize(principal, tenant_id, Need.OWN)
    except Denied as exc:
        raise json_error(exc.status, *_DENIED[exc.status]) from exc
    body = _body()
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
