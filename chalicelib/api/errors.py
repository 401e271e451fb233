"""Errors as each API family shows them.

Every family has its own error body (campaign ``{"error","field"}``, the notification envelope,
the scheduled API's ``{"success":0,"error":...}``, callnotify's ``{"error","message"}``). A family
error is an exception carrying its own ``Response``; it derives from ``ChaliceUnhandledError`` so
Chalice passes it to our middleware untouched instead of logging it as a crash. Anything else that
escapes a view (and Chalice's own 405/415/500 answers) is rewritten here into the body of the family
whose path was called, so a client never sees a traceback or a foreign error shape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from chalice import Response
from chalice.app import ChaliceUnhandledError, Request

from chalicelib import logs

log = logging.getLogger("ringback.api")

Renderer = Callable[[int, str, str], Response]
"""(status, code, message) -> the family's error response."""


class ApiError(ChaliceUnhandledError):
    """An error that already knows its response."""

    def __init__(self, response: Response) -> None:
        super().__init__(str(response.body))
        self.response = response


def json_error(status: int, error: str, message: str, **extra: Any) -> ApiError:
    """The house style for campaign, admin and events routes."""
    body: dict[str, Any] = {"error": error, "message": message}
    body.update(extra)
    return ApiError(Response(body=body, status_code=status))


def _default_renderer(status: int, code: str, message: str) -> Response:
    return Response(body={"error": code, "message": message}, status_code=status)


_families: list[tuple[str, Renderer]] = []


def register_family(path_prefix: str, renderer: Renderer) -> None:
    """Errors under ``path_prefix`` are rendered by ``renderer`` (longest prefix wins)."""
    _families.append((path_prefix, renderer))
    _families.sort(key=lambda item: len(item[0]), reverse=True)


def renderer_for(path: str) -> Renderer:
    for prefix, renderer in _families:
        if path.startswith(prefix):
            return renderer
    return _default_renderer


_CHALICE_CODES = {
    405: "method_not_allowed",
    415: "unsupported_media_type",
    400: "bad_request",
    500: "internal_error",
}


def _request_path(request: Request) -> str:
    context = getattr(request, "context", None) or {}
    return str(context.get("resourcePath") or getattr(request, "path", "") or "")


_ID_PARAMS = {  # path parameter -> log field
    "company_id": "tenant_id",
    "customer_id": "tenant_id",
    "tenant_id": "tenant_id",
    "event_id": "event_id",
    "delivery_id": "delivery_id",
    "callback_id": "callback_id",
}


def error_middleware(request: Request, get_response: Callable[[Request], Response]) -> Response:
    """App-wide HTTP middleware: the request's log context (the ids its path names; ingest
    binds the event it creates) and one access line per request around ``_family_errors``."""
    path = _request_path(request)
    params = getattr(request, "uri_params", None) or {}
    ids = {_ID_PARAMS[n]: str(v)[:64] for n, v in params.items() if n in _ID_PARAMS and v}
    context = getattr(request, "context", None) or {}
    started = time.monotonic()
    with logs.scope(
        clear=True,
        stage="api",
        method=request.method,
        route=path,
        request_id=context.get("requestId"),
        **ids,
    ):
        response = _family_errors(request, get_response)
        status = response.status_code
        log.log(
            logging.ERROR if status >= 500 else logging.INFO,
            "%s %s -> %s",
            request.method,
            path,
            status,
            extra={"status": status, "duration_ms": int((time.monotonic() - started) * 1000)},
        )
    return response


def _family_errors(request: Request, get_response: Callable[[Request], Response]) -> Response:
    """Family errors through, everything else in the family's shape."""
    try:
        response = get_response(request)
    except ApiError as exc:
        return exc.response
    except Exception:
        log.exception("unhandled error on %s", _request_path(request))
        return renderer_for(_request_path(request))(500, "internal_error", "internal error")
    body = response.body
    if response.status_code >= 400 and isinstance(body, dict) and set(body) == {"Code", "Message"}:
        status = response.status_code
        message = "internal error" if status >= 500 else str(body["Message"])
        rendered = renderer_for(_request_path(request))(
            status, _CHALICE_CODES.get(status, "error"), message
        )
        for name, value in response.headers.items():
            rendered.headers.setdefault(name, value)
        return rendered
    return response
