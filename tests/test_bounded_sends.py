"""Bounded sends (issue 13 item 1): a hostile receiver costs one attempt's deadline and a few KiB.

The receivers here are raw loopback sockets, because the hostile behaviours (a status line sent
one byte a second, a body that never ends) are exactly what a well-behaved HTTP server library
will not do. Each is checked through the sender directly (time and memory measured around one
attempt) and through the SQS dispatcher, where the other deliveries of the same batch must
still succeed. The notification ``verify`` route uses the same client and is checked too.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.delivery import senders
from chalicelib.delivery.registry import HttpOutbound, StreamOutbound
from chalicelib.delivery.safe_http import BODY_PREFIX_BYTES, MAX_RESPONSE_BYTES

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 2.0  # a trickle byte comes every second: no single read ever times out
SLACK = 2.0  # thread start-up and scheduling on a loaded 2-core machine; far below any trickle
ENDLESS_CAP = 64 * 1024 * 1024  # the endless body gives up here, so unbounded code fails, not hangs

HEAD_200 = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
TRICKLED_RESPONSE = HEAD_200 + b"Content-Length: 2\r\n\r\nok"


class HostileReceiver:
    """A loopback TCP server that misbehaves in one of a few ways, one thread per connection.

    - ``endless``: a 200 head without a length, then 64 KiB chunks until the client gives up
      (or ``ENDLESS_CAP``);
    - ``trickle_head``: a complete, valid 200 response, one byte a second from the first byte;
    - ``trickle_body``: the head at once (``Content-Length: 60``), then the body a byte a second;
    - ``tcp_endless``: (raw TCP) reads the line, then streams bytes until the client closes;
    - ``tcp_trickle``: (raw TCP) reads the line, then one byte a second, never closing first.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sent = 0
        self.closed_by_client = threading.Event()
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _read_request(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return
            body += chunk

    def _send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        self.sent += len(data)

    def _trickle(self, conn: socket.socket, data: bytes) -> None:
        for byte in data:
            if self.stop.wait(1.0):
                return
            self._send(conn, bytes([byte]))

    def _serve(self, conn: socket.socket) -> None:
        chunk = b"x" * 65536
        try:
            with conn:
                if self.mode.startswith("tcp_"):
                    conn.recv(65536)
                else:
                    self._read_request(conn)
                if self.mode == "endless":
                    self._send(conn, HEAD_200 + b"Connection: close\r\n\r\n")
                    while self.sent < ENDLESS_CAP and not self.stop.is_set():
                        self._send(conn, chunk)
                elif self.mode == "trickle_head":
                    self._trickle(conn, TRICKLED_RESPONSE)
                elif self.mode == "trickle_body":
                    self._send(conn, HEAD_200 + b"Content-Length: 60\r\n\r\n")
                    self._trickle(conn, b"y" * 60)
                elif self.mode == "tcp_endless":
                    while self.sent < ENDLESS_CAP and not self.stop.is_set():
                        self._send(conn, chunk)
                elif self.mode == "tcp_trickle":
                    self.stop.wait(DEADLINE * 3)  # nothing at all within the deadline
                    self._trickle(conn, b"ack\n")
        except OSError:
            self.closed_by_client.set()  # the client cut the connection (reset / broken pipe)


@pytest.fixture
def hostile() -> Iterator[Callable[[str], HostileReceiver]]:
    made: list[HostileReceiver] = []

    def factory(mode: str) -> HostileReceiver:
        made.append(HostileReceiver(mode))
        return made[-1]

    yield factory
    for receiver in made:
        receiver.close()


def _http(url: str) -> HttpOutbound:
    return HttpOutbound(
        method="POST", url=url, headers={"Content-Type": "application/json"}, body=b"{}"
    )


def _timed(send: Callable[[], Any]) -> tuple[Any, float, int]:
    """(result, seconds, peak bytes allocated while sending)."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        result = send()
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, elapsed, peak


# --- the sender on its own: time and memory of one attempt ---------------------------------


def test_an_endless_body_is_read_to_the_bound_then_cut_as_a_failed_attempt(hostile):
    receiver = hostile("endless")
    result, elapsed, peak = _timed(
        lambda: senders.send_http(
            _http(receiver.url), message_id="msg_1", timeout=DEADLINE, allow_private=True
        )
    )
    assert not result.success
    assert result.status_code == 200  # the head came; the body did not end
    assert result.error == f"response body longer than {MAX_RESPONSE_BYTES} bytes"
    assert result.response_prefix == "x" * BODY_PREFIX_BYTES
    assert elapsed < DEADLINE + SLACK
    assert peak < MAX_RESPONSE_BYTES  # chunks are dropped as they are read: never the body
    assert receiver.closed_by_client.wait(5)  # we hung up; the receiver could not go on
    assert receiver.sent < ENDLESS_CAP


@pytest.mark.parametrize("mode", ["trickle_head", "trickle_body"])
def test_a_receiver_trickling_a_byte_a_second_fails_as_a_timeout_within_the_deadline(hostile, mode):
    receiver = hostile(mode)
    result, elapsed, peak = _timed(
        lambda: senders.send_http(
            _http(receiver.url), message_id="msg_1", timeout=DEADLINE, allow_private=True
        )
    )
    assert (result.success, result.error) == (False, "timeout")
    assert elapsed < DEADLINE + SLACK  # a per-read timeout alone would wait ~60 s here
    assert result.duration_ms < (DEADLINE + SLACK) * 1000
    assert peak < MAX_RESPONSE_BYTES
    assert receiver.closed_by_client.wait(5)


def test_a_short_answer_succeeds_and_its_prefix_is_kept(httpserver):
    httpserver.expect_request("/ok").respond_with_data("z" * 10_000, status=202)
    result = senders.send_http(
        _http(httpserver.url_for("/ok")), message_id="msg_1", timeout=DEADLINE, allow_private=True
    )
    assert (result.success, result.status_code) == (True, 202)
    assert result.response_prefix == "z" * BODY_PREFIX_BYTES


def test_tcp_peer_streaming_without_end_is_read_once_and_bounded(hostile):
    receiver = hostile("tcp_endless")
    outbound = StreamOutbound("tcp", "127.0.0.1", receiver.port, b'{"a":1}\n')
    result, elapsed, peak = _timed(
        lambda: senders.send_stream(outbound, timeout=DEADLINE, allow_private=True)
    )
    assert result.success  # an answer is an acknowledgement
    assert result.response_prefix is not None
    assert 0 < len(result.response_prefix) <= BODY_PREFIX_BYTES
    assert elapsed < DEADLINE + SLACK and peak < MAX_RESPONSE_BYTES
    assert receiver.closed_by_client.wait(5)


def test_tcp_peer_silent_past_the_deadline_fails_as_a_timeout(hostile):
    receiver = hostile("tcp_trickle")
    outbound = StreamOutbound("tcp", "127.0.0.1", receiver.port, b'{"a":1}\n')
    result, elapsed, _ = _timed(
        lambda: senders.send_stream(outbound, timeout=DEADLINE, allow_private=True)
    )
    assert (result.success, result.error) == (False, "timeout")
    assert elapsed < DEADLINE + SLACK


# --- through the dispatcher: one SQS batch with hostile and healthy receivers ---------------


REG = "/companies/{}/campaigns/config/callbacks"


def _register(client: Any, tenant: Any, url: str, event_type: str) -> None:
    body = {"event_type": event_type, "destination_url": url}
    response = client.http.post(
        REG.format(tenant.tenant_id), headers=tenant.headers, body=json.dumps(body)
    )
    assert response.status_code == 201, response.json_body


def _publish(client: Any, tenant: Any, event_type: str) -> str:
    body = {"event_type": event_type, "payload": {"n": 1}}
    response = client.http.post("/events", headers=tenant.headers, body=json.dumps(body))
    assert response.status_code == 202, response.json_body
    assert response.json_body["deliveries"] == 1
    return str(response.json_body["event_id"])


def _delivery(client: Any, tenant: Any, event_id: str) -> dict[str, Any]:
    event = client.http.get(f"/events/{event_id}", headers=tenant.headers).json_body
    [entry] = event["deliveries"]
    view: dict[str, Any] = client.http.get(
        f"/deliveries/{entry['delivery_id']}", headers=tenant.headers
    ).json_body
    return view


def test_hostile_receivers_fail_alone_and_the_rest_of_their_batch_is_delivered(
    client, make_tenant, worker, hostile, httpserver, monkeypatch
):
    monkeypatch.setenv("RINGBACK_HTTP_TIMEOUT", "2")
    owner = make_tenant()
    healthy_requests: list[bytes] = []
    httpserver.expect_request("/fine").respond_with_handler(
        lambda request: (healthy_requests.append(request.get_data()), _ok())[1]
    )
    targets = {
        "endless.body": hostile("endless").url,
        "trickle.head": hostile("trickle_head").url,
        "trickle.body": hostile("trickle_body").url,
        "trickle.head2": hostile("trickle_head").url,
        "trickle.body2": hostile("trickle_body").url,
        "fine.one": httpserver.url_for("/fine"),
        "fine.two": httpserver.url_for("/fine"),
    }
    for event_type, url in targets.items():
        _register(client, owner, url, event_type)
    events = {event_type: _publish(client, owner, event_type) for event_type in targets}

    started = time.monotonic()
    assert worker.poll() == len(targets)  # one batch holds every delivery
    elapsed = time.monotonic() - started

    assert len(healthy_requests) == 2
    seen = {
        event_type: _delivery(client, owner, event_id) for event_type, event_id in events.items()
    }
    assert seen["fine.one"]["status"] == seen["fine.two"]["status"] == "delivered"
    hostile_types = [t for t in targets if not t.startswith("fine.")]
    for event_type in hostile_types:
        delivery = seen[event_type]
        assert delivery["status"] == "retrying", event_type  # a failed attempt, retried later
        [attempt] = delivery["attempts"]
        assert attempt["duration_ms"] < (2 + SLACK) * 1000, event_type
    assert seen["endless.body"]["attempts"][0]["error"].startswith("response body longer")
    for event_type in ("trickle.head", "trickle.body", "trickle.head2", "trickle.body2"):
        assert seen[event_type]["attempts"][0]["error"] == "timeout", event_type
    # in parallel: the batch costs about one deadline, not one per trickling receiver (4 x 2 s)
    assert elapsed < 4 * 2


def _ok() -> Any:
    from werkzeug import Response

    return Response("ok", status=200)


# --- the notification verify route ------------------------------------------------------------


NOTIFY = "/rest/api/v1.3/notifications"


@pytest.mark.parametrize("mode", ["trickle_head", "endless"])
def test_verify_against_a_hostile_receiver_answers_could_not_connect_within_the_cap(
    client, make_tenant, hostile, monkeypatch, mode
):
    from chalicelib.api import notification

    monkeypatch.setenv("RINGBACK_VERIFY_CALLBACKS", "false")  # create without connecting
    monkeypatch.setattr(notification, "VERIFY_TIMEOUT_CAP", DEADLINE)
    owner = make_tenant()
    receiver = hostile(mode)
    body = {
        "name": "orders_cb",
        "url": receiver.url,
        "batchSize": 10,
        "authentication": {"type": "B", "data": {"userName": "u", "password": "p-secret-1"}},
    }
    created = client.http.post(f"{NOTIFY}/callbacks", headers=owner.headers, body=json.dumps(body))
    assert created.status_code == 201, created.json_body

    started = time.monotonic()
    response = client.http.get(
        f"{NOTIFY}/callbacks/orders_cb/actions/verify", headers=owner.headers
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 400
    assert response.json_body["detail"] == f"Could not connect to callback url [{receiver.url}]"
    assert elapsed < DEADLINE + SLACK


# --- the deploy settings follow from the deadline ---------------------------------------------


def test_lambda_timeouts_and_queue_visibility_follow_the_deadline():
    """Each function has explicit memory and timeout; the dispatcher's timeout covers one
    deadline (a batch runs in parallel) plus the early wait and a margin for AWS calls, and the
    queues' visibility timeouts are at least 6x their consumer's timeout (AWS's guidance)."""
    from chalicelib.api.notification import VERIFY_TIMEOUT_CAP
    from chalicelib.delivery.worker import EARLY_WAIT_LIMIT
    from chalicelib.queues import AWS_CALL_MARGIN, all_queues

    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    functions = config["lambda_functions"]
    assert set(functions) == {"api_handler", "dispatcher", "dead_letters", "sweeper", "reconciler"}
    for name, settings in functions.items():
        assert isinstance(settings["lambda_memory_size"], int), name
        assert isinstance(settings["lambda_timeout"], int), name
    deadlines = [float(config["environment_variables"]["RINGBACK_HTTP_TIMEOUT"])]
    for stage in config["stages"].values():
        value = stage.get("environment_variables", {}).get("RINGBACK_HTTP_TIMEOUT")
        if value is not None:
            deadlines.append(float(value))
        assert "lambda_functions" not in stage  # one sizing, checked here
    dispatcher = functions["dispatcher"]["lambda_timeout"]
    assert dispatcher >= max(deadlines) + EARLY_WAIT_LIMIT + AWS_CALL_MARGIN
    assert functions["api_handler"]["lambda_timeout"] >= VERIFY_TIMEOUT_CAP + AWS_CALL_MARGIN
    assert functions["api_handler"]["lambda_timeout"] <= 29  # API Gateway's integration limit
    for spec in all_queues():
        assert spec.visibility_timeout >= 6 * dispatcher
        assert spec.dlq_visibility_timeout >= 6 * functions["dead_letters"]["lambda_timeout"]
