"""The ``ringback`` command, as a user runs it: commands through Typer's test runner against the
running local stack (``local_stack``), and ``ringback listen`` as a real process receiving real
signed callbacks from it (HTTP in JSON, XML, form and query form; TCP and UDP lines)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from typer.testing import CliRunner

from ringback_cli.listen import StatusScript, check_signature, parse_statuses
from ringback_cli.main import app, when
from ringback_cli.render import body_renderable
from tests.stack_helpers import free_port

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = [
    [],
    ["listen"],
    ["tenants"],
    ["tenants", "create"],
    ["tenants", "list"],
    ["keys"],
    ["keys", "create"],
    ["keys", "list"],
    ["keys", "revoke"],
    ["events"],
    ["events", "publish"],
    ["deliveries"],
    ["deliveries", "list"],
    ["deliveries", "show"],
    ["replay"],
    ["tail"],
    ["profile", "save"],
    ["profile", "show"],
]


@pytest.fixture
def cli(tmp_path: Path) -> Any:
    """``cli(*args, key=..., url=...)`` runs ``ringback`` with a profile file of its own."""
    runner = CliRunner()

    def run(*args: str, url: str | None = None, key: str | None = None, input: str | None = None):
        env = {"RINGBACK_CONFIG": str(tmp_path / "config.toml"), "COLUMNS": "250"}
        env["RINGBACK_URL"] = url or ""
        env["RINGBACK_KEY"] = key or ""
        return runner.invoke(app, list(args), env=env, input=input)

    return run


def _ok(result: Any) -> str:
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return str(result.output)


def _error_line(result: Any) -> str:
    """A failure is exactly one ``Error:`` line and status 1, never a traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


# --------------------------------------------------------------------------- without a stack


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "ringback")
def test_every_help_reads_well(cli, command):
    output = _ok(cli(*command, "--help"))
    assert "Usage: ringback" in output
    assert "Traceback" not in output
    # a sentence describing the command, not just the option table
    assert any(line.strip().endswith(".") for line in output.splitlines()[:8]), output


def test_the_top_help_names_every_command(cli):
    output = _ok(cli("--help"))
    for name in ("listen", "tenants", "keys", "events", "deliveries", "replay", "tail"):
        assert name in output
    assert "RINGBACK_URL" in output and "RINGBACK_KEY" in output


def test_a_wrong_url_says_so_in_one_line(cli):
    line = _error_line(cli("deliveries", "list", url=f"http://127.0.0.1:{free_port()}", key="k"))
    assert "cannot connect to Ringback" in line
    line = _error_line(cli("deliveries", "list", url="localhost:8000", key="k"))
    assert "is not a URL" in line


def test_no_key_says_how_to_give_one(cli):
    line = _error_line(cli("deliveries", "list", url="http://127.0.0.1:1"))
    assert "--key" in line and "RINGBACK_KEY" in line


def test_status_scripts():
    assert parse_statuses("500, 500,200") == [500, 500, 200]
    for bad in ("", "99", "600", "ok", "200,"):
        with pytest.raises(ValueError):
            parse_statuses(bad)
    script = StatusScript([500, 503, 200])
    assert [script.take() for _ in range(5)] == [500, 503, 200, 200, 200]


def test_bodies_are_read_by_content_type():
    kind, _ = body_renderable(b'{"a": 1}', "application/json; charset=utf-8")
    assert kind == "JSON"
    assert body_renderable(b"<a><b>1</b></a>", "application/xml")[0] == "XML"
    assert body_renderable(b"<a><b>1</b>", "text/xml")[0] == "invalid XML"
    assert body_renderable(b"a=1&b=x+y", "application/x-www-form-urlencoded")[0] == "form"
    assert body_renderable(b"", None)[0] == "empty"


def test_signatures_verify_only_with_the_right_secret():
    from standardwebhooks.webhooks import Webhook

    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"x":1}'
    stamp = int(time.time())
    from datetime import UTC, datetime

    signature = Webhook(secret).sign("msg_1", datetime.fromtimestamp(stamp, UTC), body.decode())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(stamp),
        "webhook-signature": signature,
    }
    assert str(check_signature([secret], body, headers)) == "verified"
    other = "whsec_" + "A" * 32
    assert str(check_signature([other, secret], body, headers)) == "verified (secret 2)"
    assert str(check_signature([other], body, headers)).startswith("FAILED")
    assert str(check_signature([secret], body + b" ", headers)).startswith("FAILED")
    assert str(check_signature([], body, headers)).startswith("signed, not checked")
    assert str(check_signature([secret], body, {})).startswith("unsigned")


def test_relative_times():
    assert when("2030-01-01T00:00:00Z") == "2030-01-01T00:00:00Z"
    assert when(None) is None
    stamp = when("1h")
    assert stamp is not None and stamp.endswith("Z") and stamp < str(when("now"))


# --------------------------------------------------------------------------- listen, a process


class Listen:
    """``ringback listen`` in a process of its own; its output is collected line by line."""

    def __init__(self, *args: str, port: int | None = None) -> None:
        self.port = port or free_port()
        script = Path(sys.executable).parent / "ringback"
        command = [str(script)] if script.exists() else [sys.executable, "-m", "ringback_cli"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("RINGBACK_")}
        tcp = [] if "--tcp-port" in args else ["--tcp-port", str(free_port())]
        env.update({"PYTHONUNBUFFERED": "1", "COLUMNS": "200"})
        self.process = subprocess.Popen(
            [*command, "listen", "--port", str(self.port), *tcp, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()
        self.wait_for("Ctrl-C to stop.", 30)

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_for(self, needle: str, timeout: float = 60, count: int = 1) -> str:
        deadline = time.monotonic() + timeout
        while self.text.count(needle) < count:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"{needle!r} x{count} not seen in:\n{self.text}")
            time.sleep(0.1)
        return self.text

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.text


@pytest.fixture
def listeners() -> Iterator[list[Listen]]:
    started: list[Listen] = []
    yield started
    for listener in started:
        listener.stop()


def _owner(local_stack: Any) -> Any:
    return local_stack.tenant_key("OWNER")


def _register(local_stack: Any, owner: Any, event_type: str, url: str, **extra: Any) -> str:
    created = requests.post(
        f"{local_stack.base_url}/companies/{owner.tenant_id}/campaigns/config/callbacks",
        headers=owner.headers,
        json={"event_type": event_type, "destination_url": url, **extra},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    return str(created.json()["signing_secret"])


@pytest.mark.stack
def test_listen_shows_a_signed_json_callback_and_its_retry(local_stack, listeners, cli, tmp_path):
    """``listen --secret --status 500,200``: the first attempt is refused, the retry lands; both
    are printed with their JSON body and a verified signature; the delivery shows both."""
    owner = _owner(local_stack)
    port = free_port()  # registered first: the listener needs the secret the create returns
    secret = _register(
        local_stack, owner, "cli.json", f"http://127.0.0.1:{port}/hooks/json?src=ringback"
    )
    listener = Listen("--secret", secret, "--status", "500,200", port=port)
    listeners.append(listener)

    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps({"order": "42", "items": [1, 2]}))
    output = _ok(
        cli(
            "events",
            "publish",
            "cli.json",
            "--payload",
            f"@{payload}",
            "--idempotency-key",
            "order-42",
            url=local_stack.base_url,
            key=owner.key,
        )
    )
    assert "1 delivery" in output
    event_id = output.split()[1].rstrip(":")
    again = _ok(
        cli(
            "events", "publish", "cli.json", "--payload", f"@{payload}",
            "--idempotency-key", "order-42", "-q",
            url=local_stack.base_url, key=owner.key,
        )
    )  # fmt: skip
    assert again.strip() == event_id  # the idempotency key: the first answer, nothing new

    text = listener.wait_for("signature: verified", count=2)
    assert "HTTP POST /hooks/json?src=ringback -> 500" in text
    assert "HTTP POST /hooks/json?src=ringback -> 200" in text
    assert '"order": "42"' in text and "body (JSON)" in text
    assert "webhook-signature" in text and "FAILED" not in text

    delivery_id = requests.get(
        f"{local_stack.base_url}/events/{event_id}", headers=owner.headers, timeout=10
    ).json()["deliveries"][0]["delivery_id"]
    deadline = time.monotonic() + 30
    while True:
        shown = _ok(cli("deliveries", "show", delivery_id, url=local_stack.base_url, key=owner.key))
        if "delivered" in shown or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "delivered" in shown
    attempt_rows = [line for line in shown.splitlines() if "/hooks/json" in line and "│" in line]
    assert len(attempt_rows) == 2
    assert " 500 " in attempt_rows[0] and " 200 " in attempt_rows[1]

    listed = _ok(
        cli("deliveries", "list", "--status", "delivered", url=local_stack.base_url, key=owner.key)
    )
    assert delivery_id in listed
    as_json = json.loads(
        _ok(
            cli(
                "--json", "deliveries", "show", delivery_id, url=local_stack.base_url, key=owner.key
            )
        )
    )
    assert [a["status_code"] for a in as_json["attempts"]] == [500, 200]


CALL = {
    "call_id": "c-1@10.0.0.1",
    "from": "+4512345678",
    "to": "+4587654321",
    "direction": "in",
    "timestamp": "2016-05-27T09:30:00Z",
    "duration": 42,
    "cause": "normal",
}


@pytest.mark.stack
def test_listen_prints_xml_form_query_tcp_and_udp(local_stack, listeners, cli):
    """Call notifiers of every kind at one listener: XML and form bodies, a GET's query, a TCP
    line and a UDP datagram are each shown in their own form; the HTTP ones verify."""
    owner = _owner(local_stack)
    port = free_port()
    tcp_port = free_port()
    base = f"{local_stack.base_url}/customer/{owner.tenant_id}/callnotify"
    notifiers = [
        {"url": f"http://127.0.0.1:{port}/xml", "method": "POSTXML1", "selection": "ALL"},
        {"url": f"http://127.0.0.1:{port}/form", "method": "POSTARGS", "selection": "ALL"},
        {"url": f"http://127.0.0.1:{port}/get?key=s3cret", "method": "GET2", "selection": "ALL"},
        {"url": f"tcp://127.0.0.1:{tcp_port}", "method": "POSTJSON", "selection": "ALL"},
        {"url": f"udp://127.0.0.1:{port}", "method": "POSTJSON", "selection": "ALL"},
    ]
    secrets = []
    for notifier in notifiers:
        created = requests.post(base, headers=owner.headers, json=notifier, timeout=10)
        assert created.status_code == 201, created.text
        secrets += ["--secret", created.json()["signing_secret"]]
    listener = Listen("--tcp-port", str(tcp_port), *secrets, port=port)
    listeners.append(listener)

    _ok(
        cli(
            "events", "publish", "CALL_END", "--selection", "MVNO",
            "--payload", json.dumps(CALL),
            url=local_stack.base_url, key=owner.key,
        )
    )  # fmt: skip
    listener.wait_for("TCP from")
    listener.wait_for("UDP from")
    text = listener.wait_for("signature: verified", count=3)
    assert "HTTP POST /xml -> 200" in text and "body (XML)" in text
    assert "<callevent>" in text and "<event>CALL_END</event>" in text
    assert "HTTP POST /form -> 200" in text and "form fields" in text
    assert "HTTP GET /get?key=s3cret" in text
    query_part = text[text.index("HTTP GET /get") :]
    assert "query" in query_part and "s3cret" in query_part and "CALL_END" in query_part
    assert text.count('"event": "CALL_END"') >= 2  # the TCP line and the UDP datagram, as JSON
    assert "FAILED" not in text


@pytest.mark.stack
def test_listen_forwards_and_answers_with_the_forwards_status(local_stack, listeners):
    """``listen --forward``: the request reaches the second listener (path kept) and the first
    answers what the second answered."""
    owner = _owner(local_stack)
    behind = Listen("--status", "202")
    listeners.append(behind)
    port = free_port()
    _register(local_stack, owner, "cli.forward", f"http://127.0.0.1:{port}/relay/me")
    front = Listen("--forward", f"http://127.0.0.1:{behind.port}", port=port)
    listeners.append(front)
    requests.post(
        f"{local_stack.base_url}/events",
        headers=owner.headers,
        json={"event_type": "cli.forward", "payload": {"n": 1}},
        timeout=10,
    ).raise_for_status()
    behind.wait_for("HTTP POST /relay/me -> 202")
    text = front.wait_for("forwarded to")
    assert f"forwarded to http://127.0.0.1:{behind.port}/relay/me: HTTP 202" in text
    assert "HTTP POST /relay/me -> 202" in text


# --------------------------------------------------------------------------- operator commands


@pytest.mark.stack
def test_tenants_and_keys(local_stack, cli):
    admin = {"url": local_stack.base_url, "key": local_stack.admin_key}
    tenant_id = _ok(cli("tenants", "create", "Acme CLI", "-q", **admin)).strip()
    assert len(tenant_id) == 24
    shown = _ok(cli("tenants", "create", "Acme child", "--parent", tenant_id, **admin))
    assert "parent_id" in shown and tenant_id in shown
    key = _ok(cli("keys", "create", tenant_id, "--role", "OWNER", "-q", **admin)).strip()
    assert key.startswith("rbk_")
    table = _ok(cli("keys", "create", tenant_id, "--role", "VIEWER", **admin))
    assert "VIEWER" in table and "shown this once" in table
    # the new key works: it lists its own (empty) failures
    assert "0 failed" in _ok(cli("deliveries", "list", url=local_stack.base_url, key=key))
    refused = _error_line(cli("keys", "create", tenant_id, "--role", "BOSS", **admin))
    assert "HTTP 400" in refused and "role" in refused


@pytest.mark.stack
def test_tenants_list_keys_list_and_revoke(local_stack, cli):
    admin = {"url": local_stack.base_url, "key": local_stack.admin_key}
    tenant_id = _ok(cli("tenants", "create", "Listed", "-q", **admin)).strip()
    listed = _ok(cli("tenants", "list", **admin))
    assert tenant_id in listed and "Listed" in listed
    every = json.loads(_ok(cli("--json", "tenants", "list", **admin)))["tenants"]
    assert tenant_id in [tenant["tenant_id"] for tenant in every]
    made = json.loads(_ok(cli("--json", "keys", "create", tenant_id, "--role", "VIEWER", **admin)))
    assert "0 failed" in _ok(cli("deliveries", "list", url=local_stack.base_url, key=made["key"]))
    keys = _ok(cli("keys", "list", tenant_id, **admin))
    assert made["key"] not in keys  # never the key itself
    assert made["key_id"] in keys and "VIEWER" in keys
    revoked = _ok(cli("keys", "revoke", tenant_id, made["key_id"], **admin))
    assert f"revoked key {made['key_id']}" in revoked
    refused = _error_line(cli("deliveries", "list", url=local_stack.base_url, key=made["key"]))
    assert "HTTP 401" in refused and "refused" in refused
    shown = json.loads(_ok(cli("--json", "keys", "list", tenant_id, **admin)))["keys"]
    assert [k["revoked_at"] for k in shown if k["key_id"] == made["key_id"]] != [None]
    # a tenant's own OWNER key may not list tenants: the API's refusal, in one line
    owner_key = _ok(cli("keys", "create", tenant_id, "--role", "OWNER", "-q", **admin)).strip()
    refused = _error_line(cli("tenants", "list", url=local_stack.base_url, key=owner_key))
    assert refused.startswith("Error: HTTP 403")


@pytest.mark.stack
def test_a_wrong_key_and_a_wrong_base_path_say_so(local_stack, cli):
    line = _error_line(cli("deliveries", "list", url=local_stack.base_url, key="rbk_not-a-key"))
    assert "HTTP 401" in line and "refused" in line and "rbk_not-a-key" not in line
    owner = _owner(local_stack)
    line = _error_line(cli("deliveries", "list", url=local_stack.base_url + "/api", key=owner.key))
    assert "HTTP 403" in line and "no route GET /deliveries" in line
    assert owner.key not in line  # the gateway quotes the header back: never shown
    line = _error_line(cli("deliveries", "show", "nope", url=local_stack.base_url, key=owner.key))
    assert line == "Error: HTTP 404 not_found: delivery nope not found"


@pytest.mark.stack
def test_a_profile_file_supplies_url_and_key(local_stack, cli):
    owner = _owner(local_stack)
    saved = _ok(cli("--url", local_stack.base_url, "--key", owner.key, "profile", "save"))
    assert "saved profile 'default'" in saved
    assert "0 failed" in _ok(cli("deliveries", "list"))  # nothing given: the profile's
    _ok(cli("--url", local_stack.base_url, "--key", "rbk_wrong", "profile", "save", "broken"))
    assert "HTTP 401" in _error_line(cli("--profile", "broken", "deliveries", "list"))
    shown = _ok(cli("profile", "show"))
    assert owner.key not in shown and owner.key[:8] in shown
    assert "no profile 'nope'" in _error_line(cli("--profile", "nope", "deliveries", "list"))


@pytest.mark.stack
def test_replay_twice_replays_once(local_stack, cli):
    """Failed deliveries (410 Gone receivers) replayed over a time range; running the same
    command again replays nothing more: an interrupted run can simply be rerun."""
    owner = _owner(local_stack)
    gone = Listen("--status", "410")
    try:
        since = when("now")
        for number in (1, 2):  # two deliveries, each answered 410 at once: failed
            _register(local_stack, owner, f"cli.replay.{number}", gone.url(f"/gone/{number}"))
            requests.post(
                f"{local_stack.base_url}/events",
                headers=owner.headers,
                json={"event_type": f"cli.replay.{number}", "payload": {"n": number}},
                timeout=10,
            ).raise_for_status()
        gone.wait_for("-> 410", count=2)
    finally:
        gone.stop()
    target = {"url": local_stack.base_url, "key": owner.key}
    deadline = time.monotonic() + 30
    while "2 failed" not in _ok(cli("deliveries", "list", "--since", str(since), **target)):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    first_run = cli("--json", "replay", "--since", str(since), "--until", "now", **target)
    _ok(first_run)
    first = json.loads(first_run.stdout)
    assert (first["matched"], first["replayed"], first["left"]) == (2, 2, 0)
    again = _ok(cli("replay", "--since", str(since), "--until", "now", **target))
    summary = [line for line in again.splitlines() if line.startswith("│")][-1]
    cells = [cell.strip() for cell in summary.strip("│").split("│")]
    assert cells == ["2", "0", "2", "0", "0"]  # matched, replayed, already, refused, left


@pytest.mark.stack
def test_an_interrupted_replay_is_finished_by_running_it_again(local_stack, cli, monkeypatch):
    """Ctrl-C after the first replay: the summary says what is left (exit 130); the same
    command replays the rest and nothing twice."""
    from ringback_cli.client import Client

    owner = _owner(local_stack)
    gone = Listen("--status", "410")
    try:
        since = when("now")
        for number in (1, 2, 3):
            _register(local_stack, owner, f"cli.cut.{number}", gone.url(f"/cut/{number}"))
            requests.post(
                f"{local_stack.base_url}/events",
                headers=owner.headers,
                json={"event_type": f"cli.cut.{number}"},
                timeout=10,
            ).raise_for_status()
        gone.wait_for("-> 410", count=3)
    finally:
        gone.stop()
    target = {"url": local_stack.base_url, "key": owner.key}
    deadline = time.monotonic() + 30
    while "3 failed" not in _ok(cli("deliveries", "list", "--since", str(since), **target)):
        assert time.monotonic() < deadline
        time.sleep(0.5)

    real_post = Client.post
    replays = []

    def interrupted_after_one(self: Client, path: str, **kwargs: Any) -> Any:
        if replays:
            raise KeyboardInterrupt
        replays.append(path)
        return real_post(self, path, **kwargs)

    monkeypatch.setattr(Client, "post", interrupted_after_one)
    cut = cli("--json", "replay", "--since", str(since), "--until", "now", **target)
    assert cut.exit_code == 130, cut.output
    assert "run the same command again" in cut.output
    summary = json.loads(cut.stdout)
    assert (summary["replayed"], summary["left"], summary["interrupted"]) == (1, 2, True)

    monkeypatch.setattr(Client, "post", real_post)
    rerun = cli("--json", "replay", "--since", str(since), "--until", "now", **target)
    _ok(rerun)
    finished = json.loads(rerun.stdout)
    assert (finished["matched"], finished["replayed"], finished["already replayed"]) == (3, 2, 1)
    assert finished["left"] == 0


@pytest.mark.stack
def test_tail_follows_new_deliveries_to_their_outcome(local_stack, cli):
    owner = _owner(local_stack)
    receiver = Listen("--status", "500,200")
    try:
        _register(local_stack, owner, "cli.tail", receiver.url("/tail"))
        since = when("now")

        def publish() -> None:
            time.sleep(2)
            requests.post(
                f"{local_stack.base_url}/events",
                headers=owner.headers,
                json={"event_type": "cli.tail"},
                timeout=10,
            ).raise_for_status()

        threading.Thread(target=publish, daemon=True).start()
        output = _ok(
            cli(
                "tail", "--since", str(since), "--interval", "0.5", "--timeout", "15",
                url=local_stack.base_url, key=owner.key,
            )
        )  # fmt: skip
    finally:
        receiver.stop()
    lines = [line for line in output.splitlines() if "/tail" in line]
    assert lines, output
    assert "new" in lines[0]
    assert any("retrying" in line and "attempt 1: 500" in line for line in lines), output
    assert "delivered" in lines[-1] and "attempt 2: 200" in lines[-1], output
