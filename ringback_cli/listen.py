"""``ringback listen``: a local receiver for callbacks, like ``stripe listen`` or ``svix listen``.

One HTTP server prints every request (method, path, query, headers, body by content type) and
whether its Standard Webhooks signature verifies; it answers a chosen status, or a script of
statuses (``500,500,200``: one per request, the last one repeats) to watch retries and the backup
URL happen; it can forward each request to another local URL. A TCP listener and a UDP socket
print the lines call notifiers (``tcp://``, ``udp://``) send.
"""

from __future__ import annotations

import socketserver
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests
from rich.console import Console, Group
from rich.panel import Panel
from rich.text import Text
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ringback_cli.render import body_renderable, line_renderable, pairs_table

HOP_BY_HOP = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}


def parse_statuses(text: str) -> list[int]:
    """``"500,500,200"`` -> ``[500, 500, 200]``; each an HTTP status from 100 to 599."""
    statuses = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or not 100 <= int(part) <= 599:
            raise ValueError(f"{part!r} is not an HTTP status (100-599)")
        statuses.append(int(part))
    if not statuses:
        raise ValueError("no status given")
    return statuses


class StatusScript:
    """The answer to each request in turn; the last one repeats once the script is used up."""

    def __init__(self, statuses: Sequence[int]) -> None:
        self._statuses = list(statuses)
        self._next = 0
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            status = self._statuses[min(self._next, len(self._statuses) - 1)]
            self._next += 1
            return status


def check_signature(secrets: Sequence[str], body: bytes, headers: dict[str, str]) -> Text:
    """Verified (with which secret), failed, unsigned, or not checked (no secret given)."""
    if "webhook-signature" not in headers:
        return Text("unsigned (no webhook-signature header)", style="yellow")
    if not secrets:
        return Text("signed, not checked (pass --secret whsec_... to verify)", style="dim")
    problems = []
    for index, secret in enumerate(secrets, 1):
        try:
            Webhook(secret).verify(body, headers, json_parse=False)
        except WebhookVerificationError as exc:
            problems.append(str(exc))
            continue
        except Exception as exc:  # a malformed secret: say so, do not crash
            problems.append(f"secret {index} unusable: {exc}")
            continue
        which = f" (secret {index})" if len(secrets) > 1 else ""
        return Text(f"verified{which}", style="bold green")
    return Text("FAILED: " + "; ".join(dict.fromkeys(problems)), style="bold red")


@dataclass
class Listener:
    console: Console
    secrets: Sequence[str] = ()
    statuses: StatusScript = field(default_factory=lambda: StatusScript([200]))
    status_chosen: bool = False
    forward: str | None = None
    count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _forward_url(self, path: str) -> str:
        assert self.forward is not None
        target = urlsplit(self.forward)
        if target.path in ("", "/"):
            return self.forward.rstrip("/") + path
        query = urlsplit(path).query
        return self.forward + (("&" if target.query else "?") + query if query else "")

    def handle_http(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, bytes, str | None]:
        """Print one request; returns (status, body, content type) to answer."""
        lowered = {name.lower(): value for name, value in headers}
        status = self.statuses.take()
        answer, answer_type, forwarded = b"", None, None
        if self.forward:
            url = self._forward_url(path)
            try:
                relayed = requests.request(
                    method,
                    url,
                    data=body,
                    headers={n: v for n, v in headers if n.lower() not in HOP_BY_HOP},
                    timeout=10,
                    allow_redirects=False,
                )
                forwarded = Text(f"forwarded to {url}: HTTP {relayed.status_code}")
                if not self.status_chosen:
                    status, answer = relayed.status_code, relayed.content
                    answer_type = relayed.headers.get("Content-Type")
            except requests.RequestException as exc:
                forwarded = Text(f"forward to {url} failed: {exc}", style="red")
                if not self.status_chosen:
                    status = 502
        kind, shown = body_renderable(body, lowered.get("content-type"))
        parts: list[Any] = [pairs_table("headers", headers)]
        query = urlsplit(path).query
        if query:
            parts.append(pairs_table("query", parse_qsl(query, keep_blank_values=True)))
        parts += [Text(f"body ({kind}):", style="bold"), shown]
        signature = Text("signature: ", style="bold") + check_signature(self.secrets, body, lowered)
        parts.append(signature)
        if forwarded is not None:
            parts.append(forwarded)
        with self.lock:
            self.count += 1
            title = f"#{self.count} {time.strftime('%H:%M:%S')} HTTP {method} {path} -> {status}"
            self.console.print(Panel(Group(*parts), title=title, title_align="left"))
        return status, answer, answer_type

    def handle_line(self, protocol: str, peer: str, line: bytes) -> None:
        with self.lock:
            self.count += 1
            title = f"#{self.count} {time.strftime('%H:%M:%S')} {protocol} from {peer}"
            self.console.print(Panel(line_renderable(line), title=title, title_align="left"))


def _http_handler(listener: Listener) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
            status, answer, answer_type = listener.handle_http(
                self.command, self.path, list(self.headers.items()), body
            )
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            if answer_type:
                self.send_header("Content-Type", answer_type)
            self.end_headers()
            if answer and self.command != "HEAD":
                self.wfile.write(answer)

        def __getattr__(self, name: str) -> Any:
            if name.startswith("do_"):  # every method, QUERY and friends included
                return self._any
            raise AttributeError(name)

        def log_message(self, format: str, *args: Any) -> None:
            return None  # the panel says it all

    return Handler


def _tcp_handler(listener: Listener) -> type[socketserver.StreamRequestHandler]:
    class Handler(socketserver.StreamRequestHandler):
        timeout = 10

        def handle(self) -> None:
            peer = f"{self.client_address[0]}:{self.client_address[1]}"
            try:
                for line in self.rfile:
                    listener.handle_line("TCP", peer, line)
            except OSError:
                return

    return Handler


def _udp_handler(listener: Listener) -> type[socketserver.DatagramRequestHandler]:
    class Handler(socketserver.DatagramRequestHandler):
        def handle(self) -> None:
            peer = f"{self.client_address[0]}:{self.client_address[1]}"
            listener.handle_line("UDP", peer, self.rfile.read())

    return Handler


class _TcpServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class _UdpServer(socketserver.ThreadingUDPServer):
    allow_reuse_address = True
    daemon_threads = True


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True


@dataclass
class Servers:
    servers: list[socketserver.BaseServer]
    addresses: list[str]

    def start(self) -> None:
        for server in self.servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


def open_servers(
    listener: Listener, host: str, port: int, tcp_port: int | None, udp_port: int | None
) -> Servers:
    """Bind every listener (raises ``OSError`` naming the port in use)."""
    servers: list[socketserver.BaseServer] = []
    addresses: list[str] = []
    wanted: list[tuple[str, int | None, Any, Any]] = [
        ("http", port, _HttpServer, _http_handler(listener)),
        ("tcp", tcp_port, _TcpServer, _tcp_handler(listener)),
        ("udp", udp_port, _UdpServer, _udp_handler(listener)),
    ]
    for protocol, number, server_class, handler in wanted:
        if number is None:
            continue
        try:
            server = server_class((host, number), handler)
        except OSError as exc:
            for opened in servers:
                opened.server_close()
            raise OSError(exc.errno, f"{protocol} port {number}: {exc.strerror}") from None
        servers.append(server)
        addresses.append(f"{protocol}://{host}:{server.server_address[1]}")
    return Servers(servers, addresses)
