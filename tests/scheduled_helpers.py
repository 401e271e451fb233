"""Helpers shared by the scheduled-callbacks tests: calling the query-string API through
``chalice.test.Client`` and reading its JSON or XML answers."""

from __future__ import annotations

import json
import math
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

from defusedxml import ElementTree as SafeET
from werkzeug import Request, Response

API = "/api/1.0"


def iso_in(seconds: float, offset_hours: int = 0) -> str:
    """A whole-second ISO 8601 time ``seconds`` from now (rounded up), at ``offset_hours``."""
    moment = datetime.fromtimestamp(math.ceil(time.time() + seconds), UTC)
    return moment.astimezone(timezone(timedelta(hours=offset_hours))).isoformat()


def call(
    client: Any,
    function: str,
    params: dict[str, str] | None = None,
    *,
    method: str = "GET",
    slash: bool = True,
    form: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    """``GET /api/1.0/<function>/?<params>`` (or a POST with ``form`` as its body)."""
    path = f"{API}/{function}" + ("/" if slash else "")
    if params:
        path += "?" + urlencode(params)
    if method == "GET":
        return client.http.get(path, headers=headers or {})
    if method == "POST":
        sent = dict(headers or {})
        body = ""
        if form is not None:
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
            body = urlencode(form)
        return client.http.post(path, headers=sent, body=body)
    return client.http.request(method, path, headers=headers or {}, body=b"")


def _element(node: Any) -> Any:
    children = list(node)
    if node.tag == "api_call_parameters":
        return {p.find("key").text or "": p.find("value").text or "" for p in children}
    if not children:
        return node.text
    if node.tag == "callbacks":
        return [_element(child) for child in children]
    return {child.tag: _element(child) for child in children}


def parse_xml(text: str) -> dict[str, Any]:
    """The seed's XML document as a dict (every leaf a string, like XML itself)."""
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n'), text[:60]
    root = SafeET.fromstring(text.encode("utf-8"))
    assert root.tag == "response"
    return {child.tag: _element(child) for child in root}


def answer(response: Any) -> dict[str, Any]:
    """The body, parsed by its Content-Type (JSON or XML)."""
    headers = {name.lower(): value for name, value in response.headers.items()}
    content_type = headers.get("content-type", "")
    text = response.body.decode("utf-8")
    if content_type.startswith("application/xml"):
        return parse_xml(text)
    assert content_type.startswith("application/json"), content_type
    result: dict[str, Any] = json.loads(text)
    return result


class Receiver:
    """A loopback receiver that records every request's arrival time (wall clock)."""

    def __init__(self, httpserver: Any, path: str = "/cb", status: int = 200, delay: float = 0):
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.status = status
        self.delay = delay
        self.url = httpserver.url_for(path)
        httpserver.expect_request(path).respond_with_handler(self.handle)

    def handle(self, request: Request) -> Response:
        arrived = time.time()
        with self.lock:
            self.requests.append(
                {
                    "at": arrived,
                    "method": request.method,
                    "args": dict(request.args),
                    "headers": dict(request.headers),
                    "body": request.get_data(),
                }
            )
        if self.delay:
            time.sleep(self.delay)
        return Response("ok", status=self.status)

    def wait_for(self, count: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= count:
                    return
            time.sleep(0.02)
        raise AssertionError(f"{len(self.requests)} of {count} requests arrived")
