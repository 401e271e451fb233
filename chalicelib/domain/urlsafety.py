"""Outbound URL safety: decide whether the service may open a connection to a URL.

Ringback calls URLs that customers give it. Without a guard, a customer could point a
callback at ``http://169.254.169.254/`` (cloud metadata), at ``http://127.1:8000/`` (the
service itself) or at a name whose DNS answer is a private address, and use us to reach
networks they cannot (SSRF). This module is the single place that decides what is
reachable. It is pure: DNS goes through an injectable ``Resolver`` so tests can fake it,
and nothing here opens a connection (see ``chalicelib.delivery.safe_http`` for that).

Two error classes keep the two kinds of failure apart: ``InvalidUrl`` is a syntax problem
(the caller made a typo), ``UnsafeDestination`` means the URL is well formed but points
somewhere we refuse to go; its ``reason`` says why in words a user can act on.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

Resolver = Callable[[str, int], list[str]]
"""Maps (host, port) to the IP address strings a connection could use."""


class InvalidUrl(ValueError):
    """The URL is not syntactically acceptable (bad scheme, host, port, characters...)."""


class UnsafeDestination(ValueError):
    """The URL is well formed but its destination is refused (SSRF protection)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"unsafe destination: {reason}")
        self.reason = reason


def default_resolver(host: str, port: int) -> list[str]:
    """Resolve with the system resolver, only address families this machine can use.

    AI_ADDRCONFIG keeps IPv6 answers out on an IPv4-only host (e.g. Lambda), where the
    first answer would otherwise be an address we cannot connect to.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG)
    return [str(info[4][0]) for info in infos]


# --------------------------------------------------------------------------- IP literals

_HEX_PART = re.compile(r"0[xX][0-9a-fA-F]*")
_OCT_PART = re.compile(r"0[0-7]+")
_DEC_PART = re.compile(r"[0-9]+")


def _ipv4_part(part: str) -> int | None:
    """One dot-separated component as inet_aton reads it (hex, octal or decimal)."""
    if _HEX_PART.fullmatch(part):
        return int(part[2:] or "0", 16)
    if _OCT_PART.fullmatch(part):
        return int(part, 8)
    if _DEC_PART.fullmatch(part) and (part == "0" or not part.startswith("0")):
        return int(part)
    return None


def _parse_ipv4_loose(host: str) -> ipaddress.IPv4Address | None:
    """Parse every IPv4 spelling that inet_aton (and so most resolvers) accepts.

    ``127.1``, ``10.1.2``, ``2130706433``, ``0x7f000001``, ``0x7f.0.0.1`` and
    ``0177.0.0.1`` all mean an address; treating them as hostnames would let them slip
    past a check that only knows dotted quads. One trailing dot is tolerated (URL parsers
    accept it), which makes this a superset of inet_aton: the safe direction.
    """
    if host.endswith("."):
        host = host[:-1]
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        value = _ipv4_part(part)
        if value is None:
            return None
        values.append(value)
    *head, last = values
    if any(v > 0xFF for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = last
    for index, value in enumerate(head):
        number |= value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def looks_like_ipv4(host: str) -> bool:
    """True when a host's last label is numeric, i.e. it can only be meant as an IPv4.

    Such a host that fails ``parse_ip_literal`` (``999.1.1.1``, ``1.2.3.4.5``) is a broken
    address, not a hostname (no TLD is numeric), so callers reject it instead of resolving.
    """
    labels = host.rstrip(".").split(".")
    return bool(_HEX_PART.fullmatch(labels[-1]) or _DEC_PART.fullmatch(labels[-1]))


def parse_ip_literal(host: str) -> IPAddress | None:
    """Return the address a host string denotes when it is an IP literal, else None.

    Handles dotted quads and all inet_aton short/decimal/hex/octal forms, IPv6 with or
    without brackets, IPv4-mapped IPv6 and zone ids (``fe80::1%eth0`` or the URL form
    ``%25eth0``). Real hostnames give None.
    """
    candidate = host.strip()
    if candidate.startswith("[") and candidate.endswith("]"):
        candidate = candidate[1:-1]
    if ":" in candidate:
        try:
            return ipaddress.IPv6Address(candidate)
        except ValueError:
            return None
    if not candidate:
        return None
    return _parse_ipv4_loose(candidate)


# --------------------------------------------------------------------------- IP policy


@dataclass(frozen=True)
class _Range:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    label: str
    always: bool  # refused even when private destinations are allowed


def _v4(cidr: str, label: str, *, always: bool) -> _Range:
    return _Range(ipaddress.IPv4Network(cidr), label, always)


def _v6(cidr: str, label: str, *, always: bool) -> _Range:
    return _Range(ipaddress.IPv6Network(cidr), label, always)


# Instance-metadata and similar endpoints: never needed by a callback, even in development.
_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS/GCP/Azure/OpenStack metadata
        "169.254.170.2",  # ECS task metadata / credentials
        "169.254.170.23",  # EKS pod identity agent
        "100.100.100.200",  # Alibaba Cloud metadata
        "168.63.129.16",  # Azure wire server
        "fd00:ec2::254",  # AWS metadata over IPv6
        "fd00:ec2::23",  # EKS pod identity agent over IPv6
    )
)

# Order matters only for the wording of the reason: more specific ranges come first.
_IPV4_RANGES = (
    _v4("255.255.255.255/32", "broadcast address", always=True),
    _v4("0.0.0.0/8", "unspecified address", always=True),
    _v4("224.0.0.0/4", "multicast address", always=True),
    _v4("240.0.0.0/4", "reserved address", always=True),
    _v4("192.0.2.0/24", "documentation address", always=True),
    _v4("198.51.100.0/24", "documentation address", always=True),
    _v4("203.0.113.0/24", "documentation address", always=True),
    _v4("198.18.0.0/15", "benchmarking address", always=True),
    _v4("192.0.0.0/24", "IETF protocol assignment address", always=True),
    _v4("192.88.99.0/24", "reserved 6to4 relay address", always=True),
    _v4("127.0.0.0/8", "loopback address", always=False),
    _v4("10.0.0.0/8", "private address", always=False),
    _v4("172.16.0.0/12", "private address", always=False),
    _v4("192.168.0.0/16", "private address", always=False),
    _v4("100.64.0.0/10", "shared (carrier-grade NAT) address", always=False),
    _v4("169.254.0.0/16", "link-local address", always=False),
)

_IPV6_RANGES = (
    _v6("::/128", "unspecified address", always=True),
    _v6("ff00::/8", "multicast address", always=True),
    _v6("100::/64", "discard-only address", always=True),
    _v6("2001:db8::/32", "documentation address", always=True),
    _v6("2001:2::/48", "benchmarking address", always=True),
    _v6("::1/128", "loopback address", always=False),
    _v6("fc00::/7", "unique-local address", always=False),
    _v6("fe80::/10", "link-local address", always=False),
    _v6("fec0::/10", "site-local address", always=False),
)

_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 transition format carries, with the format's name.

    Connecting to any of these can end up at the embedded IPv4 address (dual-stack
    sockets, NAT64 gateways, 6to4/Teredo relays), so that address must pass too.
    """
    n = int(ip)
    low32 = ipaddress.IPv4Address(n & 0xFFFFFFFF)
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if n >> 32 == 0xFFFF0000:  # ::ffff:0:a.b.c.d, SIIT IPv4-translated
        return "IPv4-translated", low32
    if n >> 32 == 0:  # ::a.b.c.d, deprecated IPv4-compatible (:: and ::1 handled before)
        return "IPv4-compatible", low32
    if ip in ipaddress.IPv6Network("64:ff9b::/96") or ip in ipaddress.IPv6Network("64:ff9b:1::/48"):
        return "NAT64", low32
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip.teredo is not None:
        return "Teredo", ip.teredo[1]
    return None


def _strip_zone(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        return ipaddress.IPv6Address(int(ip))
    return ip


def ip_refusal_reason(ip: IPAddress, allow_private: bool) -> str | None:
    """Why the service must not connect to ``ip``, or None when it may.

    ``allow_private`` opens loopback/private/link-local ranges for local development
    (a receiver on the developer's machine); special-purpose ranges and cloud metadata
    stay closed regardless, since no legitimate callback lives there.
    """
    ip = _strip_zone(ip)
    if ip in _METADATA:
        return f"cloud metadata address {ip}"
    if isinstance(ip, ipaddress.IPv4Address):
        for entry in _IPV4_RANGES:
            if ip in entry.network and (entry.always or not allow_private):
                return f"{entry.label} {ip}"
        return None
    for entry in _IPV6_RANGES:
        if ip in entry.network and (entry.always or not allow_private):
            return f"{entry.label} {ip}"
        if ip in entry.network:
            return None  # a private range the caller allowed; nothing is embedded in it
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        kind, inner = embedded
        inner_reason = ip_refusal_reason(inner, allow_private)
        return None if inner_reason is None else f"{kind} address {ip} embeds {inner_reason}"
    if ip not in _GLOBAL_UNICAST_V6:
        return f"reserved address {ip}"
    return None


# --------------------------------------------------------------------------- resolution


def _is_localhost_name(host: str) -> bool:
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


def resolve_checked(
    host: str,
    port: int,
    *,
    allow_private: bool,
    resolver: Resolver | None = None,
) -> list[str]:
    """Resolve ``host`` and return its addresses, all of which passed ``ip_refusal_reason``.

    Every answer must pass, not just the first: a name answering both 8.8.8.8 and
    10.0.0.1 is refused, because the connecting side might pick either. Callers connect
    to the returned addresses (not the name again) so DNS cannot change in between.
    """
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    literal = parse_ip_literal(bare)
    if literal is not None:
        reason = ip_refusal_reason(literal, allow_private)
        if reason is not None:
            raise UnsafeDestination(reason)
        return [str(literal)]
    if not bare:
        raise UnsafeDestination("empty host")
    if _is_localhost_name(bare) and not allow_private:
        raise UnsafeDestination(f"loopback hostname {bare}")
    resolve = resolver or default_resolver
    try:
        answers = resolve(bare, port)
    except (OSError, UnicodeError) as exc:
        raise UnsafeDestination(f"host {bare} does not resolve") from exc
    if not answers:
        raise UnsafeDestination(f"host {bare} does not resolve")
    checked: list[str] = []
    for answer in answers:
        try:
            ip = ipaddress.ip_address(answer)
        except ValueError as exc:
            raise UnsafeDestination(f"host {bare} resolves to non-address {answer!r}") from exc
        reason = ip_refusal_reason(ip, allow_private)
        if reason is not None:
            raise UnsafeDestination(f"host {bare} resolves to {reason}")
        if str(ip) not in checked:
            checked.append(str(ip))
    return checked


# --------------------------------------------------------------------------- URL syntax

_HOST_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


def _has_forbidden_chars(text: str) -> bool:
    """Whitespace, control characters and backslashes.

    Parsers disagree about all of them (browsers read ``\\`` as ``/``, some clients cut
    at whitespace), and a URL read differently by checker and sender defeats the check.
    """
    return any(ord(c) <= 0x20 or 0x7F <= ord(c) <= 0x9F or c.isspace() or c == "\\" for c in text)


@dataclass(frozen=True)
class Authority:
    """Host and port as written in a URL's authority (host without brackets)."""

    host: str
    port: str | None  # raw text after ':' (may be empty or non-numeric); None if absent
    bracketed: bool


def split_authority(netloc: str) -> Authority:
    """Split ``host[:port]`` by hand; urllib's ``.port`` accepts ``+1``/``1_0`` and varies.

    Raises InvalidUrl for userinfo (``user@``) and malformed brackets; port text is
    returned raw so each caller can word its own port error.
    """
    if "@" in netloc:
        raise InvalidUrl("credentials in the URL are not allowed")
    if netloc.startswith("["):
        end = netloc.find("]")
        if end == -1:
            raise InvalidUrl("unterminated '[' in host")
        host, rest = netloc[1:end], netloc[end + 1 :]
        if rest and not rest.startswith(":"):
            raise InvalidUrl("unexpected text after ']'")
        port = rest[1:] if rest else None
        return Authority(host.replace("%25", "%"), port, bracketed=True)
    if "[" in netloc or "]" in netloc:
        raise InvalidUrl("misplaced bracket in host")
    host, sep, port_text = netloc.partition(":")
    if ":" in port_text:
        raise InvalidUrl("IPv6 addresses must be written in brackets")
    return Authority(host, port_text if sep else None, bracketed=False)


def parse_port(text: str) -> int | None:
    """A port written as 1-5 ASCII digits in 1..65535, else None."""
    if not (text.isascii() and text.isdigit()) or len(text) > 5:
        return None
    value = int(text)
    return value if 1 <= value <= 65535 else None


def _ascii_host(host: str) -> str:
    """Lowercase ASCII form of a hostname (IDNA for international names)."""
    if host.isascii():
        return host.lower()
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise InvalidUrl(f"host {host!r} is not a valid international name") from exc


def _check_hostname_syntax(host: str) -> None:
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > 253:
        raise InvalidUrl("host name is empty or too long")
    if not all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
        raise InvalidUrl(f"host {host!r} is not a valid host name")


def check_http_url(
    url: str,
    *,
    allow_private: bool,
    resolver: Resolver | None = None,
    resolve: bool = True,
) -> str:
    """Accept an http(s) URL the service may call, or raise InvalidUrl/UnsafeDestination.

    Syntax is strict (http/https, a host, optional port 1-65535, no credentials, no
    whitespace/control characters). IP literals in any spelling and localhost names are
    refused without DNS; with ``resolve=True`` names are resolved and every answer
    checked. Checking at registration gives the user an early error; the sender checks
    again (and pins the address) because DNS can change later.
    """
    if not isinstance(url, str) or not url:
        raise InvalidUrl("URL must be a non-empty string")
    if _has_forbidden_chars(url):
        raise InvalidUrl("URL contains whitespace, control characters or backslashes")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidUrl(f"URL cannot be parsed: {exc}") from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidUrl("URL scheme must be http or https")
    if not url[len(parts.scheme) :].startswith("://") or not parts.netloc:
        raise InvalidUrl("URL has no host")
    authority = split_authority(parts.netloc)
    port = 443 if parts.scheme.lower() == "https" else 80
    if authority.port is not None:
        parsed_port = parse_port(authority.port)
        if parsed_port is None:
            raise InvalidUrl(f"port {authority.port!r} is not in 1-65535")
        port = parsed_port
    if not authority.host:
        raise InvalidUrl("URL has no host")
    literal = parse_ip_literal(authority.host)
    if authority.bracketed and not isinstance(literal, ipaddress.IPv6Address):
        raise InvalidUrl("brackets must hold an IPv6 address")
    if literal is not None:
        reason = ip_refusal_reason(literal, allow_private)
        if reason is not None:
            raise UnsafeDestination(reason)
        return url
    if "%" in authority.host:
        raise InvalidUrl("percent-encoded host names are not allowed")
    host = _ascii_host(authority.host)
    if looks_like_ipv4(host):
        raise InvalidUrl(f"host {authority.host!r} is not a valid IP address")
    _check_hostname_syntax(host)
    if _is_localhost_name(host) and not allow_private:
        raise UnsafeDestination(f"loopback hostname {host}")
    if resolve:
        resolve_checked(host, port, allow_private=allow_private, resolver=resolver)
    return url
