"""SSRF guard: IP spellings, address policy, resolution and http URL checks."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from chalicelib.domain.urlsafety import (
    InvalidUrl,
    UnsafeDestination,
    check_http_url,
    ip_refusal_reason,
    parse_ip_literal,
    resolve_checked,
)


def fake_resolver(table: dict[str, list[str]]):
    """A resolver answering from ``table``; unknown names fail like getaddrinfo does."""
    calls: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append((host, port))
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(table[host])

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


DNS = fake_resolver(
    {
        "private.example": ["10.1.2.3"],
        "mixed.example": ["8.8.8.8", "10.0.0.1"],
        "public.example": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
        "metadata.example": ["169.254.169.254"],
        "mapped.example": ["::ffff:127.0.0.1"],
        "garbage.example": ["not-an-ip"],
        "empty.example": [],
        "localhost": ["127.0.0.1"],
    }
)


# ------------------------------------------------------------------ parse_ip_literal


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1.2", "10.1.0.2"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0177.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("1.0xffffff", "1.255.255.255"),
        ("0", "0.0.0.0"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("[fe80::1%eth0]", "fe80::1%eth0"),
        ("[2001:db8::1]", "2001:db8::1"),
    ],
)
def test_parse_ip_literal_recognises_every_spelling(host, expected):
    assert str(parse_ip_literal(host)) == expected


@pytest.mark.parametrize(
    "host",
    ["example.com", "localhost", "256.1.1.1", "1.2.3.4.5", "08.0.0.1", "4294967296", "", "[zz]"],
)
def test_parse_ip_literal_returns_none_for_names_and_broken_addresses(host):
    assert parse_ip_literal(host) is None


@pytest.mark.parametrize(
    "host", ["127.1", "10.1.2", "2130706433", "0x7f000001", "0x7f.0.0.1", "0177.0.0.1", "1.256"]
)
def test_parse_ip_literal_agrees_with_inet_aton(host):
    literal = parse_ip_literal(host)
    assert literal is not None
    assert literal.packed == socket.inet_aton(host)


# ------------------------------------------------------------------ ip_refusal_reason


@pytest.mark.parametrize(
    ("address", "reason_part"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("100.64.123.100", "shared"),
        ("169.254.1.1", "link-local"),
        ("::1", "loopback"),
        ("fc00::1", "unique-local"),
        ("fd12:3456::1", "unique-local"),
        ("fe80::1", "link-local"),
        ("fec0::1", "site-local"),
        ("::ffff:127.0.0.1", "IPv4-mapped"),
        ("::ffff:10.0.0.1", "IPv4-mapped"),
        ("::127.0.0.1", "IPv4-compatible"),
        ("64:ff9b::a00:1", "NAT64"),
        ("2002:7f00:1::", "6to4"),
        ("2002:c0a8:101::1", "6to4"),
    ],
)
def test_private_ranges_are_refused_unless_allowed(address, reason_part):
    ip = ipaddress.ip_address(address)
    reason = ip_refusal_reason(ip, allow_private=False)
    assert reason is not None
    assert reason_part in reason
    assert ip_refusal_reason(ip, allow_private=True) is None


@pytest.mark.parametrize(
    ("address", "reason_part"),
    [
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("255.255.255.255", "broadcast"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.10", "documentation"),
        ("2001:db8::1", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("169.254.169.254", "metadata"),
        ("169.254.170.2", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("::ffff:169.254.169.254", "metadata"),
        ("64:ff9b::a9fe:a9fe", "metadata"),
        ("::ffff:0.0.0.0", "unspecified"),
    ],
)
def test_special_ranges_and_metadata_are_refused_even_when_private_allowed(address, reason_part):
    ip = ipaddress.ip_address(address)
    for allow_private in (False, True):
        reason = ip_refusal_reason(ip, allow_private=allow_private)
        assert reason is not None
        assert reason_part in reason


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "93.184.216.34", "1.1.1.1", "100.128.0.1", "172.32.0.1", "2606:4700::1111",
     "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"],
)  # fmt: skip
def test_public_addresses_are_allowed(address):
    assert ip_refusal_reason(ipaddress.ip_address(address), allow_private=False) is None


def test_zone_id_does_not_hide_link_local():
    ip = parse_ip_literal("[fe80::1%25eth0]")
    assert ip is not None
    reason = ip_refusal_reason(ip, allow_private=False)
    assert reason is not None
    assert "link-local" in reason


def test_refusal_reason_names_the_address():
    assert (
        ip_refusal_reason(ipaddress.ip_address("127.0.0.1"), False) == "loopback address 127.0.0.1"
    )


# ------------------------------------------------------------------ resolve_checked


def test_resolve_checked_returns_all_checked_addresses():
    assert resolve_checked("public.example", 443, allow_private=False, resolver=DNS) == [
        "93.184.216.34",
        "2606:2800:220:1:248:1893:25c8:1946",
    ]


def test_resolve_checked_passes_host_and_port_to_resolver():
    resolver = fake_resolver({"public.example": ["8.8.8.8"]})
    resolve_checked("public.example", 8443, allow_private=False, resolver=resolver)
    assert resolver.calls == [("public.example", 8443)]


def test_literal_ips_are_checked_without_resolving():
    resolver = fake_resolver({})
    assert resolve_checked("[::ffff:808:808]", 80, allow_private=False, resolver=resolver) == [
        "::ffff:808:808"
    ]
    assert resolve_checked("0x08080808", 80, allow_private=False, resolver=resolver) == ["8.8.8.8"]
    with pytest.raises(UnsafeDestination, match="loopback"):
        resolve_checked("127.1", 80, allow_private=False, resolver=resolver)
    assert resolver.calls == []


@pytest.mark.parametrize(
    ("host", "reason_part"),
    [
        ("private.example", "private address 10.1.2.3"),
        ("mixed.example", "private address 10.0.0.1"),
        ("metadata.example", "metadata"),
        ("mapped.example", "IPv4-mapped"),
        ("nowhere.example", "does not resolve"),
        ("empty.example", "does not resolve"),
        ("garbage.example", "non-address"),
        ("localhost", "loopback hostname"),
        ("api.localhost", "loopback hostname"),
    ],
)
def test_resolve_checked_refuses(host, reason_part):
    with pytest.raises(UnsafeDestination) as info:
        resolve_checked(host, 80, allow_private=False, resolver=DNS)
    assert reason_part in info.value.reason


def test_allow_private_lets_private_names_through_but_not_metadata():
    assert resolve_checked("private.example", 80, allow_private=True, resolver=DNS) == ["10.1.2.3"]
    assert resolve_checked("localhost", 80, allow_private=True, resolver=DNS) == ["127.0.0.1"]
    with pytest.raises(UnsafeDestination, match="metadata"):
        resolve_checked("metadata.example", 80, allow_private=True, resolver=DNS)


# ------------------------------------------------------------------ check_http_url


SSRF_URLS = [
    "http://127.0.0.1/",
    "http://127.1/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0177.0.0.1/",
    "http://localhost/",
    "http://LOCALHOST./",
    "http://app.localhost:8080/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/",
    "http://[fc00::1]/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://[::ffff:127.0.0.1]/",
    "http://0.0.0.0/",
    "https://private.example/hook",
    "https://mixed.example/hook",
    "http://100.64.0.1/",
]


@pytest.mark.parametrize("url", SSRF_URLS)
def test_ssrf_matrix_is_refused(url):
    with pytest.raises(UnsafeDestination):
        check_http_url(url, allow_private=False, resolver=DNS)


@pytest.mark.parametrize(
    "url",
    [
        "https://public.example/hook?x=1",
        "http://public.example:8080",
        "HTTPS://PUBLIC.EXAMPLE/",
        "http://8.8.8.8/",
        "http://134744072/",
        "http://[2606:4700::1111]:443/path",
    ],
)
def test_public_urls_are_accepted_and_returned(url):
    assert check_http_url(url, allow_private=False, resolver=DNS) == url


def test_private_urls_are_accepted_when_allowed():
    assert check_http_url("http://127.0.0.1:9000/", allow_private=True) == "http://127.0.0.1:9000/"
    assert check_http_url("http://private.example/", allow_private=True, resolver=DNS)


def test_metadata_is_refused_even_when_private_allowed():
    with pytest.raises(UnsafeDestination, match="metadata"):
        check_http_url("http://169.254.169.254/", allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "example.com/hook",
        "ftp://public.example/",
        "file:///etc/passwd",
        "gopher://public.example/",
        "http:public.example",
        "http:///path",
        "http://",
        "http://public.example:0/",
        "http://public.example:65536/",
        "http://public.example:+80/",
        "http://public.example:8_0/",
        "http://public.example:/",
        "http://user:pw@public.example/",
        "http://public.example@127.0.0.1/",
        "http://public.example\\@127.0.0.1/",
        "http://public .example/",
        "http://public.example/a b",
        " http://public.example/",
        "http://public.example/\n",
        "http://pub\x00lic.example/",
        "http://[::1/",
        "http://::1/",
        "http://[public.example]/",
        "http://999.1.1.1/",
        "http://1.2.3.4.5/",
        "http://127.0.0.%31/",
        "http://-bad.example/",
        "http://" + "a" * 64 + ".example/",
    ],
)
def test_malformed_urls_are_invalid(url):
    with pytest.raises(InvalidUrl):
        check_http_url(url, allow_private=False, resolver=DNS)


def test_resolve_false_skips_dns_but_still_checks_literals_and_localhost():
    resolver = fake_resolver({})
    url = "https://unknown.example/"
    assert check_http_url(url, allow_private=False, resolver=resolver, resolve=False) == url
    assert resolver.calls == []
    with pytest.raises(UnsafeDestination):
        check_http_url("http://127.1/", allow_private=False, resolve=False)
    with pytest.raises(UnsafeDestination):
        check_http_url("http://localhost/", allow_private=False, resolve=False)


def test_unresolvable_name_is_refused():
    with pytest.raises(UnsafeDestination, match="does not resolve"):
        check_http_url("https://nowhere.example/", allow_private=False, resolver=DNS)


def test_default_port_is_used_for_resolution():
    resolver = fake_resolver({"public.example": ["8.8.8.8"]})
    check_http_url("https://public.example/", allow_private=False, resolver=resolver)
    check_http_url("http://public.example/", allow_private=False, resolver=resolver)
    check_http_url("http://public.example:8080/", allow_private=False, resolver=resolver)
    assert [port for _, port in resolver.calls] == [443, 80, 8080]


def test_errors_are_value_errors():
    assert issubclass(InvalidUrl, ValueError)
    assert issubclass(UnsafeDestination, ValueError)
