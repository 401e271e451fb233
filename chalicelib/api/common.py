"""Small helpers every blueprint uses: JSON bodies and destination checks."""

from __future__ import annotations

import ipaddress
import json
from typing import Any
from urllib.parse import urlsplit

from chalice.app import Request

from chalicelib import settings
from chalicelib.domain import urlsafety


class BadBody(ValueError):
    """The request body is not a JSON object."""


def json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object; empty body -> ``{}``. Raises ``BadBody`` otherwise."""
    raw = request.raw_body
    if not raw or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadBody("the body is not valid JSON") from exc
    if not isinstance(value, dict):
        raise BadBody("the body must be a JSON object")
    return value


def check_destination(url: str) -> None:
    """Registration-time check of an HTTP(S) destination for this stage.

    Refuses malformed URLs and addresses that are (or resolve to) loopback, private, link-local,
    metadata and other internal ranges, unless the stage allows private targets. A public name that
    does not resolve right now is accepted: DNS may lag a registration, and the send-time check
    (which pins the address it checked) refuses it if it then resolves somewhere internal.
    """
    allow_private = settings.allow_private_targets()
    urlsafety.check_http_url(url, allow_private=allow_private, resolve=False)
    host = urlsplit(url).hostname or ""
    if urlsafety.parse_ip_literal(host) is not None:
        return
    try:
        answers = urlsafety.default_resolver(host, 443)
    except (OSError, UnicodeError):
        return
    for answer in answers:
        reason = urlsafety.ip_refusal_reason(ipaddress.ip_address(answer), allow_private)
        if reason is not None:
            raise urlsafety.UnsafeDestination(f"host {host} resolves to {reason}")
