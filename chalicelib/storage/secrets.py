"""Secrets at rest (signing secrets, basic-auth passwords) are KMS-encrypted.

Each secret is small (well under KMS's 4 KB limit), so it is encrypted with the stage's KMS key
directly, bound to an encryption context (tenant and owner) so that a ciphertext copied onto
another record does not decrypt. Decryption happens only at send time and is cached per process:
a warm Lambda does not call KMS for every delivery.
"""

from __future__ import annotations

import base64
import functools
import secrets as pysecrets
from typing import Any

import boto3

from chalicelib import settings


@functools.cache
def _kms() -> Any:
    return boto3.client("kms", region_name=settings.region())


def reset_clients() -> None:
    """Forget cached clients and plaintexts (tests point the process at a fresh endpoint)."""
    _kms.cache_clear()
    _decrypt_cached.cache_clear()


def _context_items(context: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(context.items()))


def encrypt(plaintext: str, context: dict[str, str]) -> bytes:
    response = _kms().encrypt(
        KeyId=settings.kms_key_id(),
        Plaintext=plaintext.encode("utf-8"),
        EncryptionContext=context,
    )
    blob: bytes = response["CiphertextBlob"]
    return blob


@functools.lru_cache(maxsize=4096)
def _decrypt_cached(blob: bytes, context: tuple[tuple[str, str], ...]) -> str:
    response = _kms().decrypt(CiphertextBlob=blob, EncryptionContext=dict(context))
    plaintext: bytes = response["Plaintext"]
    return plaintext.decode("utf-8")


def decrypt(blob: bytes, context: dict[str, str]) -> str:
    return _decrypt_cached(bytes(blob), _context_items(context))


def signing_set(
    current_enc: bytes,
    previous_enc: bytes | None,
    previous_until: str | None,
    context: dict[str, str],
    now: str,
) -> tuple[str, ...]:
    """The secrets a request is signed with: the current one, plus the previous one while a
    rotation's overlap lasts (``previous_until`` and ``now`` are ``YYYY-MM-DDTHH:MM:SSZ``, so
    they compare as strings). A receiver holding either secret then verifies."""
    found = [decrypt(current_enc, context)]
    if previous_enc and previous_until and previous_until > now:
        found.append(decrypt(previous_enc, context))
    return tuple(found)


def new_signing_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(pysecrets.token_bytes(24)).decode("ascii")
