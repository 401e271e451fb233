"""Signing secrets of scheduled callbacks: one per callback, derived from one master per account.

Each callback gets its own Standard Webhooks secret (shown once, in ``create``'s answer), so a
receiver that leaks one secret exposes one callback. Storing a KMS-encrypted secret per callback
would cost a KMS Encrypt on every create and a Decrypt on the first firing of every callback;
instead each account has one random 256-bit master, stored KMS-encrypted in a guard item
(``sched-master#<tenant>``) and decrypted once per process, and a callback's secret is
``HMAC-SHA256(master, callback_id)``. Nothing derived is ever stored.

The master is created on first use with a conditional put; concurrent first creates all end up
with the one that won.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as pysecrets
import threading

from pynamodb.exceptions import PutError

from chalicelib.storage import secrets
from chalicelib.storage.guards import GuardModel, read_guard

SECRET_BYTES = 24  # as secrets.new_signing_secret: "whsec_" + base64 of 24 bytes

_masters: dict[str, bytes] = {}
_lock = threading.Lock()


def _key(tenant_id: str) -> str:
    return f"sched-master#{tenant_id}"


def _context(tenant_id: str) -> dict[str, str]:
    return {"tenant": tenant_id, "owner": "scheduled-master"}


def _decrypt(tenant_id: str, payload: str) -> bytes:
    plaintext = secrets.decrypt(base64.b64decode(payload), _context(tenant_id))
    return base64.b64decode(plaintext)


def master(tenant_id: str) -> bytes:
    """The account's master secret (created on first use)."""
    with _lock:
        cached = _masters.get(tenant_id)
    if cached is not None:
        return cached
    guard = read_guard(_key(tenant_id))
    if guard is None or not guard.payload:
        fresh = base64.b64encode(pysecrets.token_bytes(32)).decode("ascii")
        blob = secrets.encrypt(fresh, _context(tenant_id))
        payload = base64.b64encode(blob).decode("ascii")
        try:
            GuardModel(_key(tenant_id), payload=payload, version=1).save(
                condition=GuardModel.key.does_not_exist()
            )
        except PutError as exc:
            if exc.cause_response_code != "ConditionalCheckFailedException":
                raise
            guard = read_guard(_key(tenant_id))  # another create made it first: use theirs
            assert guard is not None and guard.payload
            payload = guard.payload
    else:
        payload = guard.payload
    value = _decrypt(tenant_id, payload)
    with _lock:
        _masters[tenant_id] = value
    return value


def signing_secret(tenant_id: str, callback_id: str) -> str:
    """The callback's Standard Webhooks secret (``whsec_...``)."""
    digest = hmac.new(master(tenant_id), callback_id.encode("ascii"), hashlib.sha256).digest()
    return "whsec_" + base64.b64encode(digest[:SECRET_BYTES]).decode("ascii")


def forget() -> None:
    """Drop cached masters (tests that reset the embedded AWS)."""
    with _lock:
        _masters.clear()
