"""URL rules of the callnotify family (``POST /customer/{id}/callnotify`` and friends).

The seed API documents ``<protocol>://<host>:<port>/<path>?<args>`` with protocols http,
https, tcp and udp, and seven distinct 422 messages for the ``url`` field. This module
turns a submitted string into a ``NotifyUrl`` or a ``CallnotifyUrlError`` whose
``message`` is exactly one of those seven, so the API layer can report it verbatim.

Checks run in the order the seed lists its messages, so a URL with several problems
reports the first one in that list. Destination safety (no loopback, private, metadata,
...) reuses ``chalicelib.domain.urlsafety`` so callnotify and the http senders agree.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from chalicelib.domain.urlsafety import (
    InvalidUrl,
    Resolver,
    UnsafeDestination,
    ip_refusal_reason,
    looks_like_ipv4,
    parse_ip_literal,
    parse_port,
    resolve_checked,
    split_authority,
)

INVALID_URL = "Invalid URL"
INVALID_PROTOCOL = "URL protocol is invalid"
TCP_UDP_HOST_PORT_ONLY = "Protocol types TCP and UDP only permit host and port"
TCP_UDP_PORT_REQUIRED = "Protocol types TCP and UDP requires a valid port"
INVALID_PORT = "Port is invalid"
INVALID_IP = "URL points to an invalid IP address"
INVALID_HOSTNAME = "URL points to an invalid hostname"

PROTOCOLS = ("http", "https", "tcp", "udp")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEME_PREFIX = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", re.DOTALL)
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_DOTTED_QUAD = re.compile(r"(0|[1-9][0-9]{0,2})(\.(0|[1-9][0-9]{0,2})){3}")


class CallnotifyUrlError(ValueError):
    """A rejected callnotify URL; ``message`` is one of the seed's 422 texts."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class NotifyUrl:
    """A validated callnotify URL.

    ``host`` is lowercase and without IPv6 brackets; ``port`` is None when an http(s)
    URL relies on the default port; ``url`` is the string as submitted.
    """

    scheme: str
    host: str
    port: int | None
    url: str


def _has_bad_chars(text: str) -> bool:
    return any(ord(c) <= 0x20 or 0x7F <= ord(c) <= 0x9F or c.isspace() or c == "\\" for c in text)


def _valid_hostname(host: str) -> bool:
    """RFC 1123 host name: letters, digits, inner hyphens; labels <= 63; total <= 253."""
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > 253 or not name.isascii():
        return False
    return all(_LABEL.fullmatch(label) for label in name.split("."))


def _check_ip(host: str, allow_private: bool) -> str:
    """Validate an IP literal host and return its canonical text.

    Only the plain spellings are accepted (dotted quad, IPv6 without zone id): the
    decimal/hex/octal forms exist mainly to sneak past filters, and a zone id means
    nothing to a receiver outside our own machine.
    """
    ip = parse_ip_literal(host)
    if ip is None:
        raise CallnotifyUrlError(INVALID_IP)
    if isinstance(ip, ipaddress.IPv4Address) and not _DOTTED_QUAD.fullmatch(host):
        raise CallnotifyUrlError(INVALID_IP)
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        raise CallnotifyUrlError(INVALID_IP)
    if ip_refusal_reason(ip, allow_private) is not None:
        raise CallnotifyUrlError(INVALID_IP)
    return str(ip)


def validate_callnotify_url(
    url: str,
    *,
    allow_private: bool,
    resolver: Resolver | None = None,
) -> NotifyUrl:
    """Validate a callnotify ``url`` field, resolving host names with ``resolver``.

    Raises CallnotifyUrlError with the seed's message for the first rule broken.
    Credentials in an http(s) URL count as "Invalid URL": they would be stored and
    echoed back in plain text, and the seed puts authentication in the query args.
    """
    if not isinstance(url, str) or not url or _has_bad_chars(url):
        raise CallnotifyUrlError(INVALID_URL)
    match = _SCHEME_PREFIX.fullmatch(url)
    if match is None:
        raise CallnotifyUrlError(INVALID_URL)
    scheme = match.group(1).lower()
    if scheme not in PROTOCOLS:
        raise CallnotifyUrlError(INVALID_PROTOCOL)

    rest = match.group(2)
    authority_end = min((i for i in (rest.find(c) for c in "/?#") if i != -1), default=len(rest))
    netloc, tail = rest[:authority_end], rest[authority_end:]
    stream = scheme in ("tcp", "udp")
    if stream and (tail not in ("", "/") or "@" in netloc):
        raise CallnotifyUrlError(TCP_UDP_HOST_PORT_ONLY)
    try:
        authority = split_authority(netloc)
    except InvalidUrl as exc:
        raise CallnotifyUrlError(INVALID_URL) from exc
    if not authority.host:
        raise CallnotifyUrlError(INVALID_URL)

    port: int | None = None
    if authority.port is not None:
        port = parse_port(authority.port)
        if port is None:
            empty_or_zero = authority.port == "" or (
                authority.port.isascii() and authority.port.isdigit() and int(authority.port) == 0
            )
            raise CallnotifyUrlError(
                TCP_UDP_PORT_REQUIRED if stream and empty_or_zero else INVALID_PORT
            )
    elif stream:
        raise CallnotifyUrlError(TCP_UDP_PORT_REQUIRED)

    raw_host = authority.host
    if authority.bracketed or ":" in raw_host:
        return NotifyUrl(scheme, _check_ip(raw_host, allow_private), port, url)
    host = raw_host.lower()
    if looks_like_ipv4(host):
        return NotifyUrl(scheme, _check_ip(host, allow_private), port, url)
    if not _valid_hostname(host):
        raise CallnotifyUrlError(INVALID_HOSTNAME)
    try:
        resolve_checked(
            host,
            port or _DEFAULT_PORTS[scheme],
            allow_private=allow_private,
            resolver=resolver,
        )
    except UnsafeDestination as exc:
        raise CallnotifyUrlError(INVALID_HOSTNAME) from exc
    return NotifyUrl(scheme, host, port, url)
