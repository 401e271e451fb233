"""The soak's loopback receivers: threaded HTTP servers that misbehave at random.

Each request draws one behaviour (a seeded ``random.Random``, so the *mix* is reproducible; which
request gets which depends on thread timing):

- ``ok``       200 at once;
- ``slow``     200 after 0.2-0.5 s (well inside the stack's HTTP timeout);
- ``error``    500;
- ``timeout``  sleeps past the stack's HTTP timeout, then answers 200 that nobody hears;
- ``reset``    closes the socket with an RST without answering.

The last three are the failures (``fail_rate`` split evenly). Every request is written down with
its ``webhook-id`` (the delivery id, stable across retries), the attempt number from the body,
the behaviour and whether its Standard Webhooks signature verified, so the soak can count
duplicates and tell a duplicate Ringback could not avoid (the receiver processed an attempt whose
answer never arrived) from one it should have (a send after a recorded success).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import socket
import struct
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

FAILURES = ("error", "timeout", "reset")
PROCESSED = ("ok", "slow", "timeout")
"""Behaviours in which the receiver did the work (it meant to answer 2xx)."""


@dataclass(frozen=True)
class Receipt:
    receiver: str
    path: str
    webhook_id: str
    attempt: int
    behaviour: str
    signature_ok: bool
    at: float
    callback_id: str = ""  # scheduled firings: Ringback-Callback-Id
    fire_count: int = 0  # scheduled firings: Ringback-Fire-Count

    @property
    def processed(self) -> bool:
        return self.behaviour in PROCESSED


def signature_ok(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks check, written out here (not the app's signer) so that the soak
    verifies the wire format independently: HMAC-SHA256 of ``id.timestamp.body`` with the
    base64 key after ``whsec_``, any of the space-separated ``v1,`` signatures matching."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers.get('webhook-id', '')}.{headers.get('webhook-timestamp', '')}.".encode()
    expected = base64.b64encode(hmac.new(key, signed + body, hashlib.sha256).digest()).decode()
    offered = headers.get("webhook-signature", "").split()
    return any(
        part.startswith("v1,") and hmac.compare_digest(part[3:], expected) for part in offered
    )


def _attempt_of(body: bytes, content_type: str) -> int:
    """``delivery_attempt`` from a JSON, form or XML campaign callback body (0 if absent)."""
    try:
        if content_type.startswith("application/json"):
            return int(json.loads(body)["delivery_attempt"])
        if content_type.startswith("application/x-www-form-urlencoded"):
            return int(parse_qs(body.decode())["delivery_attempt"][0])
        if "xml" in content_type:
            found = ET.fromstring(body).findtext("delivery_attempt")  # noqa: S314
            return int(found or 0)
    except (ValueError, KeyError, ET.ParseError):
        return 0
    return 0


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Broken pipes after a timeout or a reset are the point of the exercise: stay quiet."""


class FaultyReceiver:
    """One loopback HTTP server; ``url(path)`` gives a callback URL on it."""

    def __init__(self, name: str, *, fail_rate: float, late_after: float, seed: int) -> None:
        self.name = name
        self.receipts: list[Receipt] = []
        self.secrets: dict[str, str] = {}
        self.in_flight = 0
        self.crashes = 0  # a bug in this receiver, not a fault it meant to inject
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._fail_rate = fail_rate
        self._late_after = late_after
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the stack's pooled client expects
            wbufsize = -1

            def do_POST(self) -> None:
                outer._handle(self)

            do_PUT = do_GET = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name=name)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/{path}"

    def trust(self, path: str, secret: str) -> None:
        """Verify requests to ``path`` with this registration's signing secret."""
        self.secrets[path] = secret

    def _draw(self) -> str:
        with self._lock:
            roll = self._rng.random()
        if roll < self._fail_rate:
            return FAILURES[min(int(roll / self._fail_rate * 3), 2)]
        return "slow" if roll < self._fail_rate + 0.10 else "ok"

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.in_flight += 1
        try:
            self._answer(handler)
        except (ConnectionError, TimeoutError):
            pass  # the sender gave up (timeout) or we reset: the point of the exercise
        except Exception:
            with self._lock:
                self.crashes += 1
            raise
        finally:
            with self._lock:
                self.in_flight -= 1

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        path = handler.path.split("?", 1)[0].lstrip("/")
        if not body and "?" in handler.path:  # GET callbacks carry the fields in the query
            body = handler.path.split("?", 1)[1].encode()
        headers = {k.lower(): v for k, v in handler.headers.items()}
        secret = self.secrets.get(path)
        signed = secret is not None and signature_ok(secret, headers, body)
        behaviour = self._draw()
        receipt = Receipt(
            receiver=self.name,
            path=path,
            webhook_id=headers.get("webhook-id", ""),
            attempt=_attempt_of(
                body, headers.get("content-type", "application/x-www-form-urlencoded")
            ),
            behaviour=behaviour,
            signature_ok=signed,
            at=time.time(),
            callback_id=headers.get("ringback-callback-id", ""),
            fire_count=_int(headers.get("ringback-fire-count", "")),
        )
        with self._lock:
            self.receipts.append(receipt)
        if behaviour == "reset":
            # SO_LINGER 0: close() sends an RST instead of a FIN, and nothing was answered.
            handler.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            handler.close_connection = True
            handler.connection.close()
            return
        if behaviour == "slow":
            time.sleep(0.2 + 0.3 * random.random())
        elif behaviour == "timeout":
            time.sleep(self._late_after)
        status = 500 if behaviour == "error" else 200
        handler.send_response(status)
        handler.send_header("Content-Length", "2")
        handler.end_headers()
        handler.wfile.write(b"ok")
        handler.wfile.flush()

    def snapshot(self) -> list[Receipt]:
        with self._lock:
            return list(self.receipts)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
