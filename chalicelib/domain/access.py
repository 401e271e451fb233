"""Roles and who may do what.

VIEWER reads; MANAGER and OWNER read and write; a RESELLER acts on its own tenant and on tenants
whose parent it is; ADMIN does everything. Families may widen this where their seed says so
(callnotify lets a VIEWER create) by asking for a lower ``Need``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    VIEWER = "VIEWER"
    MANAGER = "MANAGER"
    OWNER = "OWNER"
    RESELLER = "RESELLER"
    ADMIN = "ADMIN"


class Need(StrEnum):
    READ = "read"
    WRITE = "write"
    OWN = "own"  # owner-only actions: rotating secrets, minting keys


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant a key belongs to and its role."""

    tenant_id: str
    role: Role


_GRANTS: dict[Role, frozenset[Need]] = {
    Role.VIEWER: frozenset({Need.READ}),
    Role.MANAGER: frozenset({Need.READ, Need.WRITE}),
    Role.OWNER: frozenset({Need.READ, Need.WRITE, Need.OWN}),
    Role.RESELLER: frozenset({Need.READ, Need.WRITE, Need.OWN}),
    Role.ADMIN: frozenset({Need.READ, Need.WRITE, Need.OWN}),
}


def may(principal: Principal, need: Need, *, tenant_id: str, tenant_parent_id: str | None) -> bool:
    """May ``principal`` do ``need`` on data of ``tenant_id`` (whose parent is given)?"""
    if principal.role is Role.ADMIN:
        return True
    if need not in _GRANTS[principal.role]:
        return False
    if principal.tenant_id == tenant_id:
        return True
    return principal.role is Role.RESELLER and tenant_parent_id == principal.tenant_id


def mintable_roles(principal: Principal, *, own_tenant: bool) -> frozenset[Role]:
    """Which roles ``principal`` may mint keys for (own tenant, or a child tenant)."""
    if principal.role is Role.ADMIN:
        return frozenset(Role)
    if principal.role is Role.RESELLER:
        return frozenset({Role.VIEWER, Role.MANAGER, Role.OWNER}) | (
            {Role.RESELLER} if own_tenant else set()
        )
    if principal.role is Role.OWNER and own_tenant:
        return frozenset({Role.VIEWER, Role.MANAGER, Role.OWNER})
    return frozenset()
