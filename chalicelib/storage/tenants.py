"""Tenants and their API keys. Keys are stored only as SHA-256 hashes."""

from __future__ import annotations

from pynamodb.attributes import UnicodeAttribute
from pynamodb.exceptions import DoesNotExist
from pynamodb.models import Model

from chalicelib import settings
from chalicelib.domain.ids import new_id, new_secret_key
from chalicelib.domain.timeutil import fmt, utcnow
from chalicelib.storage.base import make_meta, put_new


class TenantModel(Model):
    Meta = make_meta("tenants")

    tenant_id = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute()
    parent_id = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute()


class ApiKeyModel(Model):
    Meta = make_meta("api_keys")

    key_hash = UnicodeAttribute(hash_key=True)
    tenant_id = UnicodeAttribute()
    role = UnicodeAttribute()
    key_prefix = UnicodeAttribute()  # first characters, so an operator can tell keys apart
    created_at = UnicodeAttribute()


def create_tenant(name: str, parent_id: str | None) -> TenantModel:
    tenant = TenantModel(new_id(), name=name, parent_id=parent_id, created_at=fmt(utcnow()))
    put_new(tenant, TenantModel.tenant_id.does_not_exist())
    return tenant


def get_tenant(tenant_id: str) -> TenantModel | None:
    try:
        return TenantModel.get(tenant_id)
    except DoesNotExist:
        return None


def create_key(tenant_id: str, role: str) -> str:
    """Mint a key and return it; only its hash is stored, so this is the one time it is seen."""
    key = new_secret_key()
    record = ApiKeyModel(
        settings.hash_key(key),
        tenant_id=tenant_id,
        role=role,
        key_prefix=key[:8],
        created_at=fmt(utcnow()),
    )
    put_new(record, ApiKeyModel.key_hash.does_not_exist())  # a 256-bit key: new
    return key


def find_key(key: str) -> ApiKeyModel | None:
    try:
        return ApiKeyModel.get(settings.hash_key(key))
    except DoesNotExist:
        return None
