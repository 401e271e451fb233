"""Identifiers: 24 lowercase hex characters everywhere (the seeds' company/customer id shape)."""

from __future__ import annotations

import re
import secrets

_ID = re.compile(r"^[0-9a-f]{24}$")


def new_id() -> str:
    return secrets.token_hex(12)


def is_id(value: object) -> bool:
    return isinstance(value, str) and bool(_ID.match(value))


def new_secret_key() -> str:
    """An API key: shown once, stored only as a hash."""
    return "rbk_" + secrets.token_urlsafe(32)
