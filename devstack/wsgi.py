"""The Chalice app as a WSGI application, for in-process HTTP tools (schemathesis, werkzeug).

It goes through Chalice's ``LocalGateway``, the same API-Gateway emulation ``chalice local`` and
``chalice.test.Client`` use (route matching, 403 for unknown routes, Content-Type checks, the
Lambda event), so a tool that speaks WSGI sees what an HTTP client of ``make run`` sees, without
a socket. The raw request path is passed on undecoded, as API Gateway receives it.

Stage environment variables are not patched per request (``chalice.test.Client`` does that, and
it is not thread-safe); the caller prepares the environment, as tests/conftest.py does.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

from chalice import Chalice
from chalice.config import Config
from chalice.local import LocalGateway, LocalGatewayException

from devstack.stage import stage_environment

StartResponse = Callable[..., Any]

_REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _request_target(environ: dict[str, Any]) -> str:
    """Path and query as sent (``%2F`` in a path parameter stays one segment)."""
    raw = str(environ.get("RAW_URI") or environ.get("REQUEST_URI") or "")
    if raw.startswith("/") and "?" in raw:
        return raw  # gunicorn and friends: path and query as received
    path = raw or quote(environ.get("PATH_INFO", "") or "/", safe="/:@!$&'()*+,;=-._~")
    query = str(environ.get("QUERY_STRING", ""))
    return f"{path}?{query}" if query else path


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in environ.items():
        if name.startswith("HTTP_"):
            headers[name[5:].replace("_", "-").lower()] = str(value)
    for name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(name):
            headers[name.replace("_", "-").lower()] = str(environ[name])
    return headers


def _body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ.get("wsgi.input")
    if stream is None or length <= 0:
        return b""
    data = stream.read(length)
    return bytes(data)


class ChaliceWsgi:
    """``ChaliceWsgi(app)`` is a WSGI callable serving ``app`` as stage ``stage``."""

    def __init__(self, app: Chalice, stage: str = "local") -> None:
        config = Config.create(
            chalice_stage=stage,
            app_name=app.app_name,
            environment_variables=stage_environment(stage),
        )
        self._gateway = LocalGateway(app, config)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        try:
            response = self._gateway.handle_request(
                method=method,
                path=_request_target(environ),
                headers=_headers(environ),
                body=_body(environ),
            )
        except LocalGatewayException as exc:
            return self._send(start_response, exc.CODE, dict(exc.headers), exc.body or b"")
        headers: dict[str, Any] = dict(response.get("headers") or {})
        multi: dict[str, list[str]] = dict(response.get("multiValueHeaders") or {})
        body = response.get("body") or b""
        if response.get("isBase64Encoded"):
            body = base64.b64decode(body)
        if isinstance(body, str):
            body = body.encode("utf-8")
        return self._send(start_response, int(response["statusCode"]), headers, body, multi)

    @staticmethod
    def _send(
        start_response: StartResponse,
        status: int,
        headers: dict[str, Any],
        body: bytes,
        multi: dict[str, list[str]] | None = None,
    ) -> list[bytes]:
        pairs = [(str(k), str(v)) for k, v in headers.items()]
        for name, values in (multi or {}).items():
            pairs += [(str(name), str(value)) for value in values]
        names = {name.lower() for name, _ in pairs}
        if "content-type" not in names and status != 204:
            pairs.append(("Content-Type", "application/json"))  # as chalice local answers
        if "content-length" not in names:
            pairs.append(("Content-Length", str(len(body))))
        start_response(f"{status} {_REASONS.get(status, 'Status')}", pairs)
        return [body]
