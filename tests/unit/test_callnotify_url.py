"""Callnotify URL rules: every seed message, IPv4/IPv6, with and without private access."""

from __future__ import annotations

import socket

import pytest

from chalicelib.domain.callnotify_url import (
    CallnotifyUrlError,
    NotifyUrl,
    validate_callnotify_url,
)

SEED_MESSAGES = {
    "Invalid URL",
    "URL protocol is invalid",
    "Protocol types TCP and UDP only permit host and port",
    "Protocol types TCP and UDP requires a valid port",
    "Port is invalid",
    "URL points to an invalid IP address",
    "URL points to an invalid hostname",
}

TABLE = {
    "pbx.example.com": ["93.184.216.34"],
    "v6.example.com": ["2606:2800:220:1:248:1893:25c8:1946"],
    "office.example.com": ["192.168.10.5"],
    "split.example.com": ["8.8.8.8", "10.0.0.1"],
    "meta.example.com": ["169.254.169.254"],
    "localhost": ["127.0.0.1"],
}


def resolver(host: str, port: int) -> list[str]:
    name = host.removesuffix(".")  # DNS treats the absolute form the same
    if name not in TABLE:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return TABLE[name]


INVALID_URL = "Invalid URL"
PROTOCOL = "URL protocol is invalid"
HOST_PORT_ONLY = "Protocol types TCP and UDP only permit host and port"
PORT_REQUIRED = "Protocol types TCP and UDP requires a valid port"
PORT = "Port is invalid"
BAD_IP = "URL points to an invalid IP address"
BAD_HOST = "URL points to an invalid hostname"

# (url, allow_private, expected): expected is (scheme, host, port) or a seed message.
CASES: list[tuple[str, bool, tuple[str, str, int | None] | str]] = [
    # --- accepted, public
    ("http://pbx.example.com/call", False, ("http", "pbx.example.com", None)),
    ("https://pbx.example.com:8443/call?token=abc", False, ("https", "pbx.example.com", 8443)),
    ("HTTP://PBX.Example.COM/", False, ("http", "pbx.example.com", None)),
    ("http://pbx.example.com.:81", False, ("http", "pbx.example.com.", 81)),
    ("tcp://pbx.example.com:5000", False, ("tcp", "pbx.example.com", 5000)),
    ("udp://pbx.example.com:5060/", False, ("udp", "pbx.example.com", 5060)),
    ("tcp://8.8.8.8:1", False, ("tcp", "8.8.8.8", 1)),
    ("udp://8.8.4.4:65535", False, ("udp", "8.8.4.4", 65535)),
    ("http://93.184.216.34:4000/call", False, ("http", "93.184.216.34", 4000)),
    ("https://[2606:4700::1111]/hook", False, ("https", "2606:4700::1111", None)),
    ("tcp://[2001:4860:4860::8888]:5000", False, ("tcp", "2001:4860:4860::8888", 5000)),
    ("http://v6.example.com:8080/x#frag", False, ("http", "v6.example.com", 8080)),
    # --- accepted only because private destinations are allowed
    ("http://100.64.123.100:4000/call", True, ("http", "100.64.123.100", 4000)),
    ("http://127.0.0.1:9000/hook", True, ("http", "127.0.0.1", 9000)),
    ("udp://10.0.0.7:5060", True, ("udp", "10.0.0.7", 5060)),
    ("tcp://[::1]:7000", True, ("tcp", "::1", 7000)),
    ("http://[fd12::5]/", True, ("http", "fd12::5", None)),
    ("http://office.example.com/", True, ("http", "office.example.com", None)),
    ("http://localhost:8000/", True, ("http", "localhost", 8000)),
    # --- Invalid URL
    ("", False, INVALID_URL),
    ("pbx.example.com/call", False, INVALID_URL),
    ("http:/pbx.example.com", False, INVALID_URL),
    ("http://", False, INVALID_URL),
    ("http:///call", False, INVALID_URL),
    ("://pbx.example.com", False, INVALID_URL),
    ("http://pbx.example.com/a b", False, INVALID_URL),
    ("http://user:secret@pbx.example.com/", False, INVALID_URL),
    ("http://[::1/", True, INVALID_URL),
    ("http://2001:db8::1/", False, INVALID_URL),
    # --- URL protocol is invalid
    ("ftp://pbx.example.com/", False, PROTOCOL),
    ("sip://pbx.example.com:5060", False, PROTOCOL),
    ("ws://pbx.example.com/", True, PROTOCOL),
    # --- TCP and UDP only permit host and port
    ("tcp://pbx.example.com:5000/path", False, HOST_PORT_ONLY),
    ("udp://pbx.example.com:5060?x=1", False, HOST_PORT_ONLY),
    ("tcp://pbx.example.com:5000/#frag", False, HOST_PORT_ONLY),
    ("udp://user@pbx.example.com:5060", False, HOST_PORT_ONLY),
    ("tcp://pbx.example.com/path", False, HOST_PORT_ONLY),
    # --- TCP and UDP require a valid port
    ("tcp://pbx.example.com", False, PORT_REQUIRED),
    ("udp://8.8.8.8/", False, PORT_REQUIRED),
    ("tcp://pbx.example.com:0", False, PORT_REQUIRED),
    ("udp://[2001:4860::1]:", False, PORT_REQUIRED),
    # --- Port is invalid
    ("http://pbx.example.com:65536/", False, PORT),
    ("https://pbx.example.com:abc/", False, PORT),
    ("http://pbx.example.com:0/", False, PORT),
    ("tcp://pbx.example.com:99999", False, PORT),
    ("udp://pbx.example.com:-1", False, PORT),
    ("http://[2606:4700::1111]:70000/", False, PORT),
    # --- URL points to an invalid IP address
    ("http://127.0.0.1/", False, BAD_IP),
    ("http://10.0.0.1:8080/", False, BAD_IP),
    ("http://100.64.123.100:4000/call", False, BAD_IP),
    ("tcp://192.168.1.1:5000", False, BAD_IP),
    ("http://169.254.169.254/", True, BAD_IP),
    ("http://0.0.0.0/", True, BAD_IP),
    ("udp://224.0.0.1:5060", True, BAD_IP),
    ("http://[::1]/", False, BAD_IP),
    ("http://[fe80::1]/", False, BAD_IP),
    ("http://[fc00::1]/", False, BAD_IP),
    ("http://[::ffff:127.0.0.1]/", False, BAD_IP),
    ("http://[::]/", True, BAD_IP),
    ("http://[fd00:ec2::254]/", True, BAD_IP),
    ("http://[fe80::1%25eth0]/", True, BAD_IP),
    ("http://127.1/", True, BAD_IP),
    ("http://2130706433/", True, BAD_IP),
    ("http://0x7f000001/", False, BAD_IP),
    ("http://0177.0.0.1/", False, BAD_IP),
    ("http://999.1.1.1/", False, BAD_IP),
    ("http://[not-an-ip]/", False, BAD_IP),
    # --- URL points to an invalid hostname
    ("http://localhost/", False, BAD_HOST),
    ("http://office.example.com/", False, BAD_HOST),
    ("http://split.example.com/", False, BAD_HOST),
    ("http://split.example.com/", True, ("http", "split.example.com", None)),
    ("http://meta.example.com/", True, BAD_HOST),
    ("http://unknown.example.com/", False, BAD_HOST),
    ("http://bad_name.example.com/", False, BAD_HOST),
    ("http://-pbx.example.com/", False, BAD_HOST),
    ("http://pbx-.example.com/", False, BAD_HOST),
    ("http://pbx..example.com/", False, BAD_HOST),
    ("tcp://" + "a" * 64 + ".example.com:5000", False, BAD_HOST),
    ("http://" + ".".join(["abcdefghi"] * 26) + ".com/", False, BAD_HOST),
    ("http://pbx!.example.com/", False, BAD_HOST),
]


def test_table_is_large_and_covers_every_seed_message():
    assert len(CASES) >= 40
    assert {expected for _, _, expected in CASES if isinstance(expected, str)} == SEED_MESSAGES
    assert {allow for _, allow, _ in CASES} == {True, False}


@pytest.mark.parametrize(("url", "allow_private", "expected"), CASES)
def test_callnotify_url_rules(url, allow_private, expected):
    if isinstance(expected, str):
        with pytest.raises(CallnotifyUrlError) as info:
            validate_callnotify_url(url, allow_private=allow_private, resolver=resolver)
        assert info.value.message == expected
        assert str(info.value) == expected
    else:
        scheme, host, port = expected
        result = validate_callnotify_url(url, allow_private=allow_private, resolver=resolver)
        assert result == NotifyUrl(scheme=scheme, host=host, port=port, url=url)


def test_error_is_a_value_error():
    with pytest.raises(ValueError, match="URL protocol is invalid"):
        validate_callnotify_url("ftp://x.example/", allow_private=False, resolver=resolver)


def test_hostname_resolution_uses_the_url_port_or_the_scheme_default():
    seen: list[tuple[str, int]] = []

    def recording(host: str, port: int) -> list[str]:
        seen.append((host, port))
        return ["8.8.8.8"]

    validate_callnotify_url("https://pbx.example.com/", allow_private=False, resolver=recording)
    validate_callnotify_url("http://pbx.example.com/", allow_private=False, resolver=recording)
    validate_callnotify_url("udp://pbx.example.com:5060", allow_private=False, resolver=recording)
    assert seen == [("pbx.example.com", 443), ("pbx.example.com", 80), ("pbx.example.com", 5060)]


def test_ip_literals_are_not_resolved():
    def failing(host: str, port: int) -> list[str]:
        raise AssertionError("IP literals must not go to DNS")

    result = validate_callnotify_url("tcp://8.8.8.8:5000", allow_private=False, resolver=failing)
    assert result.host == "8.8.8.8"
