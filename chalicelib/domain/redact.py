"""Masking credentials in URLs and text, so they never reach a log line or the attempts log.

A receiver URL may carry its own credentials (``https://user:pw@host/hook?token=abc``), and a
client may have put an API key in a query string. Both are stored as given (the URL is needed to
deliver), but every place that *shows* one (log lines, the attempts log) masks them first.

``SENSITIVE_NAME`` is the one definition of "a parameter whose value is a credential": the whole
name, or its last ``_``/``-``/``.``-separated part, is one of the credential words (``key``,
``token``, ``secret``, ``password``, ...), or the name ends with one of the unambiguous ones
(``accesstoken``, ``clientsecret``, ``dbpassword``). ``monkey=`` or ``bypass=`` are left alone.
"""

from __future__ import annotations

import re

REDACTED = "[REDACTED]"

_WORDS = (
    "api_?key|apikey|key|keys|token|secret|password|passwd|pwd|pass|passphrase|signature|sig"
    "|auth|authorization|credentials?|session|sessionid|jwt"
)
SENSITIVE_NAME = rf"(?:[a-z0-9]+[_\-.])*(?:{_WORDS}|[a-z0-9]*(?:password|secret|token|apikey))"
"""A regex (case-insensitive) matching a whole parameter name that holds a credential."""

_NAME = re.compile(rf"(?i)^{SENSITIVE_NAME}$")

# name=value pairs in a query string or fragment: the value up to the next separator.
_PAIR = re.compile(rf"(?i)(^|[?&;#])({SENSITIVE_NAME})=([^&;#]*)")
# scheme://user:password@ -> the password masked (the user name stays: it says whose it is).
_USERINFO = re.compile(r"(?i)^([a-z][a-z0-9+.\-]*://[^/?#@:]*:)[^/?#@]*@")
# Ringback keys and signing secrets, wherever they appear (a path segment, say).
_TOKENS = (
    (re.compile(r"rbk_(?!\[REDACTED\])[A-Za-z0-9_\-]+"), "rbk_" + REDACTED),
    (re.compile(r"whsec_(?!\[REDACTED\])[A-Za-z0-9+/=_\-]+"), "whsec_" + REDACTED),
)


def is_sensitive_name(name: str) -> bool:
    """Does a parameter called ``name`` hold a credential?"""
    return bool(_NAME.match(name))


def redact_url(url: str) -> str:
    """``url`` with every credential masked: the userinfo password, the value of every
    sensitive query (and fragment) parameter, and any Ringback key or signing secret.

    Pure and total: any string goes in (a malformed URL is masked as text), the rest of the URL
    comes out byte for byte, so the attempts log still says where a delivery went.
    """
    if not isinstance(url, str) or not url:
        return url
    text = _USERINFO.sub(r"\1" + REDACTED + "@", url)
    text = _PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}={REDACTED}" if m.group(3) else m[0], text)
    for pattern, replacement in _TOKENS:
        text = pattern.sub(replacement, text)
    return text
