"""Portal magic links and browser sessions, stored only as SHA-256 hashes.

One table holds both kinds of token, keyed by the hash of the token: a *link* (single use,
minutes) and the *session* it is exchanged for (hours). Exchanging is one DynamoDB transaction:
delete the link on condition that it is still there, still a link and not expired, and put the
session on condition that its hash is new. Two browsers opening the same link race on that
condition and exactly one wins; the loser (and anyone opening it later) is refused.

DynamoDB TTL removes expired items eventually (and never on moto), so every read checks
``expires_at`` itself.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DeleteError, DoesNotExist, TransactWriteError
from pynamodb.models import Model

from chalicelib import settings
from chalicelib.storage.base import make_meta, transaction

LINK = "link"
SESSION = "session"
RIGHTS = ("read", "manage")


class PortalTokenModel(Model):
    Meta = make_meta("portal_tokens")

    token_hash = UnicodeAttribute(hash_key=True)
    kind = UnicodeAttribute()  # "link" or "session"
    tenant_id = UnicodeAttribute()
    rights = UnicodeAttribute()  # "read" or "manage"
    created_at = NumberAttribute()  # epoch seconds
    expires_at = NumberAttribute()  # epoch seconds; DynamoDB TTL attribute
    session_seconds = NumberAttribute(null=True)  # links: how long the session will last
    created_by = UnicodeAttribute(null=True)  # links: the role of the key that asked for it


@dataclass(frozen=True)
class Session:
    """A live session, as the request that presented its cookie sees it."""

    token_hash: str
    tenant_id: str
    rights: str
    expires_at: float

    @property
    def can_write(self) -> bool:
        return self.rights == "manage"


def _new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def create_link(
    tenant_id: str,
    rights: str,
    *,
    link_seconds: float,
    session_seconds: float,
    created_by: str,
    now: float | None = None,
) -> tuple[str, float]:
    """Mint a single-use link token; returns (token, expires_at). Only its hash is stored."""
    assert rights in RIGHTS
    at = time.time() if now is None else now
    token = _new_token("rbl_")
    expires_at = at + link_seconds
    PortalTokenModel(
        settings.hash_key(token),
        kind=LINK,
        tenant_id=tenant_id,
        rights=rights,
        created_at=at,
        expires_at=expires_at,
        session_seconds=session_seconds,
        created_by=created_by,
    ).save(condition=PortalTokenModel.token_hash.does_not_exist())
    return token, expires_at


def exchange(link_token: str, *, now: float | None = None) -> tuple[str, Session] | None:
    """Spend ``link_token`` for a new session token; None when the link is unknown, already
    used or expired. The link is deleted and the session created in one transaction."""
    if not link_token or len(link_token) > 128:
        return None
    at = time.time() if now is None else now
    link_hash = settings.hash_key(link_token)
    try:
        link = PortalTokenModel.get(link_hash, consistent_read=True)
    except DoesNotExist:
        return None
    if link.kind != LINK or float(link.expires_at) <= at:
        return None
    token = _new_token("rbs_")
    token_hash = settings.hash_key(token)
    expires_at = at + float(link.session_seconds or 8 * 3600)
    session = PortalTokenModel(
        token_hash,
        kind=SESSION,
        tenant_id=link.tenant_id,
        rights=link.rights,
        created_at=at,
        expires_at=expires_at,
    )
    try:
        with transaction() as tx:
            tx.delete(
                PortalTokenModel(link_hash),
                condition=(PortalTokenModel.kind == LINK) & (PortalTokenModel.expires_at > at),
            )
            tx.save(session, condition=PortalTokenModel.token_hash.does_not_exist())
    except TransactWriteError:
        return None  # someone else spent it first (or it expired in between)
    return token, Session(token_hash, link.tenant_id, link.rights, expires_at)


def find_session(token: str, *, now: float | None = None) -> Session | None:
    """The live session behind a cookie value, or None (unknown, expired, or a link token)."""
    if not token or len(token) > 128:
        return None
    at = time.time() if now is None else now
    try:
        record = PortalTokenModel.get(settings.hash_key(token))
    except DoesNotExist:
        return None
    if record.kind != SESSION or float(record.expires_at) <= at:
        return None
    return Session(record.token_hash, record.tenant_id, record.rights, float(record.expires_at))


def end_session(token_hash: str) -> None:
    """Log out: the session's item goes, so its cookie is refused from now on."""
    try:
        PortalTokenModel(token_hash).delete(condition=PortalTokenModel.kind == SESSION)
    except DeleteError as exc:
        if exc.cause_response_code != "ConditionalCheckFailedException":
            raise
