"""Credentials never reach a log line or the attempts log: ``redact_url`` and ``logs.redact``."""

from __future__ import annotations

import pytest

from chalicelib import logs
from chalicelib.domain.redact import REDACTED, is_sensitive_name, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://hooks.example.com/in?api_key=abc123&x=1",
            f"https://hooks.example.com/in?api_key={REDACTED}&x=1",
        ),
        (
            "https://h.example/p?key=K1&Token=T2",
            f"https://h.example/p?key={REDACTED}&Token={REDACTED}",
        ),
        (
            "https://h.example/p?access_token=a.b.c;password=pw#client_secret=s",
            f"https://h.example/p?access_token={REDACTED};password={REDACTED}#client_secret={REDACTED}",
        ),
        ("https://user:hunter2@h.example/p", f"https://user:{REDACTED}@h.example/p"),
        ("https://h.example/rbk_abcdef123/x", f"https://h.example/rbk_{REDACTED}/x"),
        (
            "https://h.example/p?sig=0a&pwd=p&auth=a",
            f"https://h.example/p?sig={REDACTED}&pwd={REDACTED}&auth={REDACTED}",
        ),
        (
            "https://h.example/p?x-api-key=1&AWSAccessKeyId=2",
            f"https://h.example/p?x-api-key={REDACTED}&AWSAccessKeyId=2",
        ),
    ],
)
def test_redact_url_masks_credentials(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "https://h.example/hook?monkey=1&bypass=2&keyboard=3&page=4",
        "http://127.0.0.1:8000/hook?x=1#frag",
        "https://h.example/p?key=",  # nothing to hide
        "not a url at all",
        "",
    ],
)
def test_redact_url_leaves_ordinary_urls_alone(url: str) -> None:
    assert redact_url(url) == url


def test_sensitive_names() -> None:
    for name in (
        "key",
        "api_key",
        "apikey",
        "X-Api-Key",
        "client_secret",
        "accessToken",
        "db.password",
        "sig",
    ):
        assert is_sensitive_name(name), name
    for name in ("monkey", "keyboard", "bypass", "page", "key_id", "signal"):
        assert not is_sensitive_name(name), name


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("GET /events?key=plainvalue1", "plainvalue1"),
        ("GET /x?token=t0ken-v&y=1", "t0ken-v"),
        ("GET /x?pwd=pw-value", "pw-value"),
        ("url https://h.example/p?client_secret=cs-123 failed", "cs-123"),
        ('{"x_api_key": "xk-1"}', "xk-1"),
    ],
)
def test_log_lines_mask_key_style_query_values(text: str, secret: str) -> None:
    assert secret not in logs.redact(text)


def test_log_lines_keep_harmless_parameters() -> None:
    text = "GET /deliveries?status=failed&limit=10&monkey=1 -> 200"
    assert logs.redact(text) == text
