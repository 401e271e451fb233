"""Structured logs (chalicelib/logs.py): JSON lines on stdout with the ids of the work at hand,
and no secret on any line, through the real app: a delivery flow (API, ingest, the SQS
dispatcher against a loopback receiver), auth failures, a crash whose message carries secrets,
and an unreadable dead letter."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib import logs
from tests.conftest import ADMIN_KEY

REG = "/companies/{}/campaigns/config/callbacks"
REQUIRED = ("timestamp", "level", "logger", "message")


@pytest.fixture
def log_lines(capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """Every JSON line the app logs at INFO while the test runs (the local stage logs WARNING
    and up by default)."""
    from app import app

    logs.configure(app.log, "INFO")
    capsys.readouterr()

    def read() -> list[dict[str, Any]]:
        out = capsys.readouterr().out
        lines = [line for line in out.splitlines() if line.strip()]
        parsed = [json.loads(line) for line in lines]  # every line is one JSON object
        for entry in parsed:
            assert all(entry.get(name) for name in REQUIRED), entry
        read.raw += out  # type: ignore[attr-defined]
        return parsed

    read.raw = ""  # type: ignore[attr-defined]
    yield read
    logs.configure(app.log)


def _no_secret(raw: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in raw, f"{secret[:10]}... appears in the logs"


def test_a_delivery_flow_logs_json_lines_with_its_ids(
    client, make_tenant, worker, httpserver, log_lines
):
    owner = make_tenant()
    httpserver.expect_request("/hook").respond_with_data("ok")
    created = client.http.post(
        REG.format(owner.tenant_id),
        headers=owner.headers,
        body=json.dumps(
            {"event_type": "order.paid", "destination_url": httpserver.url_for("/hook")}
        ),
    )
    assert created.status_code == 201
    signing_secret = created.json_body["signing_secret"]
    published = client.http.post(
        "/events", headers=owner.headers, body=json.dumps({"event_type": "order.paid"})
    )
    assert published.status_code == 202
    event_id = published.json_body["event_id"]
    worker.run_until_idle()
    [delivery] = client.http.get(f"/events/{event_id}", headers=owner.headers).json_body[
        "deliveries"
    ]
    assert delivery["status"] == "delivered"
    # a later request on the same thread carries none of the ids bound above
    assert client.http.get(REG.format(owner.tenant_id), headers=owner.headers).status_code == 200

    lines = log_lines()
    accepted = [e for e in lines if e["logger"] == "ringback.ingest"]
    assert len(accepted) == 1
    assert accepted[0]["tenant_id"] == owner.tenant_id and accepted[0]["event_id"] == event_id
    assert accepted[0]["delivery_ids"] == [delivery["delivery_id"]]
    [attempt] = [e for e in lines if e["logger"] == "ringback.dispatcher"]
    assert attempt["level"] == "INFO" and attempt["stage"] == "dispatch"
    assert attempt["message"] == "attempt 1: HTTP 200 -> delivered"
    assert (attempt["tenant_id"], attempt["event_id"], attempt["delivery_id"]) == (
        owner.tenant_id,
        event_id,
        delivery["delivery_id"],
    )
    access = [e for e in lines if e["logger"] == "ringback.api"]
    publish_line = next(e for e in access if e["route"] == "/events")
    assert publish_line["status"] == 202 and publish_line["event_id"] == event_id
    assert publish_line["tenant_id"] == owner.tenant_id and publish_line["stage"] == "api"
    read_line = next(e for e in access if e["route"] == "/events/{event_id}")
    assert read_line["event_id"] == event_id  # from the path
    last = access[-1]
    assert last["route"].endswith("/callbacks") and last["method"] == "GET"
    assert "event_id" not in last and "delivery_id" not in last
    _no_secret(log_lines.raw, owner.key, signing_secret, ADMIN_KEY)


def test_auth_failures_are_logged_without_the_key(client, make_tenant, admin_headers, log_lines):
    owner = make_tenant()
    other = make_tenant()
    wrong = "rbk_" + "Q" * 43
    url = REG.format(owner.tenant_id)
    assert client.http.get(url, headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
    assert client.http.get(url, headers=other.headers).status_code == 403
    scheduled = client.http.get(f"/api/1.0/list/?api_key={wrong}")
    assert scheduled.status_code == 401
    notification = client.http.get(
        "/rest/api/v1.3/notifications/callbacks", headers={"Authorization": other.key + "x"}
    )
    assert notification.status_code == 401

    lines = log_lines()
    refused = [e for e in lines if e["logger"] == "ringback.api"]
    assert [e["status"] for e in refused] == [401, 403, 401, 401]
    assert refused[0]["tenant_id"] == owner.tenant_id  # the tenant the request addressed
    assert refused[0]["route"] == "/companies/{company_id}/campaigns/config/callbacks"
    assert refused[1]["tenant_id"] == owner.tenant_id
    _no_secret(log_lines.raw, wrong, other.key, owner.key)


def test_a_crash_logs_its_traceback_redacted(client, make_tenant, monkeypatch, log_lines):
    owner = make_tenant()
    leaked = "whsec_" + "A" * 32

    def explode(company_id: str) -> list[Any]:
        raise RuntimeError(
            f"boom Authorization: Bearer {owner.key} secret={leaked} "
            f"{{'password': 'hunter2-pw'}} https://user:pw-in-url@example.com/"
        )

    monkeypatch.setattr("chalicelib.storage.campaign.list_registrations", explode)
    response = client.http.get(REG.format(owner.tenant_id), headers=owner.headers)
    assert response.status_code == 500
    assert response.json_body == {"error": "internal_error", "message": "internal error"}

    lines = log_lines()
    [crash] = [e for e in lines if e["level"] == "ERROR" and "exception" in e]
    assert "RuntimeError: boom" in crash["exception"] and crash["tenant_id"] == owner.tenant_id
    assert "[REDACTED]" in crash["exception"]
    _no_secret(log_lines.raw, owner.key, leaked, "hunter2-pw", "pw-in-url")


def test_an_unreadable_dead_letter_is_logged_redacted(aws, log_lines):
    from app import dead_letters

    body = "not json Authorization: Basic dXNlcjpzM2NyZXQ= api_key=rbk_secretsecretsecret"
    dead_letters({"Records": [{"messageId": "m-1", "body": body, "receiptHandle": "r"}]}, None)

    [line] = log_lines()
    assert line["level"] == "ERROR" and line["stage"] == "dead_letter"
    assert line["message_id"] == "m-1"
    _no_secret(log_lines.raw, "dXNlcjpzM2NyZXQ=", "rbk_secretsecretsecret")


# --------------------------------------------------------------------------- the formatter


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer rbk_abc-DEF_123", "rbk_abc-DEF_123"),
        ('{"authorization": "Basic dXNlcjpwYXNz"}', "dXNlcjpwYXNz"),
        ("{'Authorization': 'plain-key-value'}", "plain-key-value"),
        ("GET /api/1.0/list/?api_key=k3y-value&response_format=xml", "k3y-value"),
        ("the secret is whsec_AbC+/9xyz=", "whsec_AbC+/9xyz="),
        ('{"password": "pw \\" quoted", "userName": "u"}', "quoted"),
        ("{'signing_secret': 'abc123'}", "abc123"),
        ("signing_secret=abc123&b=2", "abc123"),
        ("https://user:hunter2@example.com/x", "hunter2"),
        ("key rbk_unlabelled_key_in_text", "rbk_unlabelled_key_in_text"),
    ],
)
def test_redact_masks_every_secret_form(text: str, secret: str) -> None:
    assert secret not in logs.redact(text)


def test_redact_leaves_ordinary_text_alone() -> None:
    text = "delivery 0123abcd attempt 2: HTTP 503 -> retrying (http://127.0.0.1:8000/hook?x=1)"
    assert logs.redact(text) == text


def test_structured_fields_are_redacted_by_name_and_content() -> None:
    record = logging.LogRecord("ringback.t", logging.INFO, __file__, 1, "m %s", ("x",), None)
    record.headers = {"Authorization": "Bearer zz", "X-Trace": "t rbk_leak"}
    record.password = "pw"
    record.items = ["whsec_abc"]
    with logs.scope(tenant_id="t1", api_key="rbk_bound"):
        entry = json.loads(logs.JsonFormatter().format(record))
    assert entry["message"] == "m x" and entry["tenant_id"] == "t1"
    assert entry["headers"] == {"Authorization": "[REDACTED]", "X-Trace": "t rbk_[REDACTED]"}
    assert entry["password"] == "[REDACTED]" and entry["items"] == ["whsec_[REDACTED]"]
    assert entry["api_key"] == "[REDACTED]"


def test_context_is_per_thread_and_per_scope() -> None:
    seen: dict[str, dict[str, Any]] = {}

    def work(name: str) -> None:
        with logs.scope(delivery_id=name):
            logs.bind(tenant_id=f"tenant-{name}")
            seen[name] = logs.current()
        seen[name + "-after"] = logs.current()

    threads = [threading.Thread(target=work, args=(str(n),)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for n in range(8):
        assert seen[str(n)] == {"delivery_id": str(n), "tenant_id": f"tenant-{n}"}
        assert seen[f"{n}-after"] == {}


def test_ids_bound_outside_a_unit_of_work_do_not_reach_the_next_one() -> None:
    logs.bind(event_id="stray")  # e.g. a script calling ingest.publish directly
    assert logs.current() == {}
    with logs.scope(tenant_id="outer"):
        with logs.scope(clear=True, stage="api"):
            assert logs.current() == {"stage": "api"}
        with logs.scope(delivery_id="d"):
            assert logs.current() == {"tenant_id": "outer", "delivery_id": "d"}


def test_configure_replaces_chalices_handler_and_reads_the_level(monkeypatch) -> None:
    logger = logging.getLogger("ringback-test-configure")
    logger.addHandler(logging.StreamHandler())
    monkeypatch.setenv("RINGBACK_STAGE", "prod")
    monkeypatch.delenv("RINGBACK_LOG_LEVEL", raising=False)
    logs.configure(logger)
    logs.configure(logger)
    assert len(logger.handlers) == 1 and isinstance(logger.handlers[0], logs.StdoutHandler)
    assert logger.level == logging.INFO and logger.propagate is False
    monkeypatch.setenv("RINGBACK_STAGE", "local")
    logs.configure(logger)
    assert logger.level == logging.WARNING
    monkeypatch.setenv("RINGBACK_LOG_LEVEL", "debug")
    logs.configure(logger)
    assert logger.level == logging.DEBUG
