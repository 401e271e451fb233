"""Tenants and their API keys. Keys are stored only as SHA-256 hashes.

Authentication is one strongly consistent GetItem by the key's hash (``find_key``), so a revoked
key (``revoked_at`` set) is refused by the very next request, whichever Lambda serves it.
``last_used`` is written by a separate conditional update only when the item just read shows it
is more than ``LAST_USED_EVERY`` seconds old, so a busy key costs one write a minute, not one a
request.

A key's public id (``key_id``) is the first 24 hex characters of its hash: keys minted before ids
existed have one too, without a migration, and it says nothing about the key (a SHA-256 prefix of
a 256-bit random value). The ``by_tenant`` index (partition ``tenant_id``, sort ``key_hash``)
lists a tenant's keys and finds one by id with ``begins_with``: one Query, never a Scan.

Tenants are listed through two indexes: ``by_parent`` (a reseller's children, oldest first) and
``directory`` (every tenant, for the operator; the constant ``directory`` attribute is written
on create, so tenants created before this index existed are listed only once that attribute is
backfilled on them).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pynamodb.attributes import UnicodeAttribute
from pynamodb.exceptions import DoesNotExist, UpdateError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from chalicelib import settings
from chalicelib.domain.ids import is_id, new_id, new_secret_key
from chalicelib.domain.timeutil import fmt, utcnow
from chalicelib.storage.base import make_meta, put_new

DIRECTORY = "tenants"
LAST_USED_EVERY = 60  # seconds: at most one last_used write per key per minute
KEY_ID_LENGTH = 24


class ByParent(GlobalSecondaryIndex["TenantModel"]):
    """A reseller's children, oldest first."""

    class Meta:
        index_name = "by_parent"
        projection = AllProjection()

    parent_id = UnicodeAttribute(hash_key=True)
    created_at = UnicodeAttribute(range_key=True)


class Directory(GlobalSecondaryIndex["TenantModel"]):
    """Every tenant, oldest first (the operator's ``GET /admin/tenants``)."""

    class Meta:
        index_name = "directory"
        projection = AllProjection()

    directory = UnicodeAttribute(hash_key=True)
    created_at = UnicodeAttribute(range_key=True)


class TenantModel(Model):
    Meta = make_meta("tenants")

    tenant_id = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute()
    parent_id = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute()
    directory = UnicodeAttribute(null=True)  # always DIRECTORY: puts the tenant in that index
    quotas = UnicodeAttribute(null=True)  # JSON: this tenant's quota overrides (storage.quotas)

    by_parent = ByParent()
    directory_index = Directory()


class ByTenant(GlobalSecondaryIndex["ApiKeyModel"]):
    """A tenant's keys; ``begins_with(key_hash, key_id)`` finds one by its id."""

    class Meta:
        index_name = "by_tenant"
        projection = AllProjection()

    tenant_id = UnicodeAttribute(hash_key=True)
    key_hash = UnicodeAttribute(range_key=True)


class ApiKeyModel(Model):
    Meta = make_meta("api_keys")

    key_hash = UnicodeAttribute(hash_key=True)
    tenant_id = UnicodeAttribute()
    role = UnicodeAttribute()
    key_prefix = UnicodeAttribute()  # first characters, so an operator can tell keys apart
    created_at = UnicodeAttribute()
    expires_at = UnicodeAttribute(null=True)  # refused from then on
    last_used = UnicodeAttribute(null=True)  # to the minute (see LAST_USED_EVERY)
    revoked_at = UnicodeAttribute(null=True)  # refused from then on

    by_tenant = ByTenant()

    @property
    def key_id(self) -> str:
        return self.key_hash[:KEY_ID_LENGTH]

    def usable(self, now: datetime) -> bool:
        """Not revoked and not expired at ``now``."""
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or fmt(now) < self.expires_at


# --------------------------------------------------------------------------- tenants


def create_tenant(name: str, parent_id: str | None) -> TenantModel:
    tenant = TenantModel(
        new_id(),
        name=name,
        parent_id=parent_id,
        created_at=fmt(utcnow()),
        directory=DIRECTORY,
    )
    put_new(tenant, TenantModel.tenant_id.does_not_exist())
    return tenant


def get_tenant(tenant_id: str, *, consistent: bool = False) -> TenantModel | None:
    try:
        return TenantModel.get(tenant_id, consistent_read=consistent)
    except DoesNotExist:
        return None


class BadCursor(ValueError):
    """A ``cursor`` that this listing did not hand out."""


def _encode_cursor(tenant: TenantModel, partition: tuple[str, str]) -> str:
    key = {
        "tenant_id": tenant.tenant_id,
        "created_at": tenant.created_at,
        partition[0]: partition[1],
    }
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, partition: tuple[str, str]) -> dict[str, dict[str, str]]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadCursor(cursor) from exc
    names = {"tenant_id", "created_at", partition[0]}
    if (
        not isinstance(raw, dict)
        or set(raw) != names
        or not all(isinstance(v, str) and v for v in raw.values())
        or raw[partition[0]] != partition[1]  # a cursor from another listing
        or not is_id(raw["tenant_id"])
        or len(raw["created_at"]) > 32
    ):
        raise BadCursor(cursor)
    return {name: {"S": value} for name, value in raw.items()}


def list_tenants(
    parent_id: str | None, limit: int, cursor: str | None
) -> tuple[list[TenantModel], str | None]:
    """One page of tenants, oldest first: a reseller's children (``parent_id``) or, with None,
    every tenant. One Query on an index, asking for one more than the page to know whether
    another page follows. Raises ``BadCursor``."""
    partition = ("parent_id", parent_id) if parent_id is not None else ("directory", DIRECTORY)
    start = _decode_cursor(cursor, partition) if cursor else None
    index: Any = TenantModel.by_parent if parent_id is not None else TenantModel.directory_index
    found = list(index.query(partition[1], limit=limit + 1, last_evaluated_key=start))
    if len(found) > limit:
        return found[:limit], _encode_cursor(found[limit - 1], partition)
    return found, None


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class Minted:
    key: str  # the plaintext: returned once, never stored
    record: ApiKeyModel


def mint_key(tenant_id: str, role: str, expires_at: datetime | None = None) -> Minted:
    """Mint a key; only its hash is stored, so this is the one time it is seen."""
    key = new_secret_key()
    record = ApiKeyModel(
        settings.hash_key(key),
        tenant_id=tenant_id,
        role=role,
        key_prefix=key[:8],
        created_at=fmt(utcnow()),
        expires_at=fmt(expires_at) if expires_at is not None else None,
    )
    put_new(record, ApiKeyModel.key_hash.does_not_exist())  # a 256-bit key: new
    return Minted(key, record)


def create_key(tenant_id: str, role: str) -> str:
    """Mint a key without expiry and return it (scripts and tests)."""
    return mint_key(tenant_id, role).key


def find_key(key: str) -> ApiKeyModel | None:
    """The key's record, read strongly consistent: a revocation a moment ago is seen."""
    try:
        return ApiKeyModel.get(settings.hash_key(key), consistent_read=True)
    except DoesNotExist:
        return None


def touch(record: ApiKeyModel, now: datetime) -> bool:
    """Record a use, at most once per ``LAST_USED_EVERY`` seconds per key.

    Called only when the record just read is stale, and conditional on it still being stale,
    so concurrent requests with the same key write once between them. False: nothing written
    (fresh already, or another request won)."""
    if record.last_used is not None and record.last_used >= fmt(
        now - timedelta(seconds=LAST_USED_EVERY)
    ):
        return False
    threshold = fmt(now - timedelta(seconds=LAST_USED_EVERY))
    try:
        ApiKeyModel(record.key_hash).update(
            actions=[ApiKeyModel.last_used.set(fmt(now))],
            condition=ApiKeyModel.key_hash.exists()
            & (ApiKeyModel.last_used.does_not_exist() | (ApiKeyModel.last_used < threshold)),
        )
    except UpdateError as exc:
        if exc.cause_response_code == "ConditionalCheckFailedException":
            return False
        raise
    record.last_used = fmt(now)
    return True


def list_keys(tenant_id: str) -> list[ApiKeyModel]:
    """Every key of a tenant (revoked and expired ones too), oldest first."""
    found = list(ApiKeyModel.by_tenant.query(tenant_id))
    return sorted(found, key=lambda k: (k.created_at, k.key_hash))


def _keys_with_id(tenant_id: str, key_id: str) -> Iterator[ApiKeyModel]:
    yield from ApiKeyModel.by_tenant.query(
        tenant_id, range_key_condition=ApiKeyModel.key_hash.startswith(key_id)
    )


def get_key(tenant_id: str, key_id: str) -> ApiKeyModel | None:
    """The tenant's key with this id, or None (one Query on ``by_tenant``)."""
    if len(key_id) != KEY_ID_LENGTH or any(c not in "0123456789abcdef" for c in key_id):
        return None
    for record in _keys_with_id(tenant_id, key_id):
        return record
    return None


def revoke_key(record: ApiKeyModel, now: datetime) -> ApiKeyModel:
    """Revoke a key from now on (its record stays, for the listing). Revoking a revoked key
    keeps the first ``revoked_at``. Conditional on the key still belonging to its tenant."""
    try:
        ApiKeyModel(record.key_hash).update(
            actions=[ApiKeyModel.revoked_at.set(fmt(now))],
            condition=(ApiKeyModel.tenant_id == record.tenant_id)
            & ApiKeyModel.revoked_at.does_not_exist(),
        )
    except UpdateError as exc:
        if exc.cause_response_code != "ConditionalCheckFailedException":
            raise
        current = ApiKeyModel.get(record.key_hash, consistent_read=True)
        return current
    record.revoked_at = fmt(now)
    return record
