"""Structured logs: one JSON object per line on stdout, with the ids of the work at hand, and
never a secret.

Why a small stdlib formatter and not aws-lambda-powertools' Logger: Lambda sends stdout to
CloudWatch as it is, so all a function needs is a formatter; Powertools would add a 1 MB wheel
(3.5 MB, 343 files installed, plus ``jmespath``/``typing_extensions``) to every function's bundle
for a Logger whose appended keys are not per-thread (the dispatcher works each SQS record on its
own thread) and which has no redaction. Here the context lives in a ``ContextVar`` (one per
thread, one per request) and every line goes through ``redact``.

A line::

    {"timestamp": "2026-01-02T03:04:05.678Z", "level": "INFO", "logger": "ringback.dispatcher",
     "message": "attempt 1: HTTP 200 -> delivered", "service": "ringback", "env": "prod",
     "stage": "dispatch", "tenant_id": "...", "event_id": "...", "delivery_id": "...", ...}

``stage`` is the step of the pipeline that logged: ``api`` (a request, ingest included),
``dispatch`` (a work message) or ``dead_letter``; ``env`` is the deployment stage
(``RINGBACK_STAGE``). The logger name says which module wrote the line.

Context contract: an entry point opens a ``scope(clear=True)`` (the API middleware per request,
the worker per SQS record); inside it anyone may ``bind(...)`` ids they learn (ingest binds the
event id, the dispatcher the tenant and event of the delivery it claimed), and the scope drops
them all when the unit of work ends, so a warm Lambda never carries one tenant's ids into the
next call.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

from chalicelib.domain.redact import SENSITIVE_NAME, is_sensitive_name

CONTEXT_FIELDS = ("stage", "tenant_id", "event_id", "delivery_id")
"""The ids every line carries when known (others, like ``callback_id``, may be bound too)."""

REDACTED = "[REDACTED]"

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: ContextVar[Mapping[str, Any]] = ContextVar("ringback_log_context", default=_EMPTY)
_in_scope: ContextVar[bool] = ContextVar("ringback_log_scope", default=False)


# --------------------------------------------------------------------------- context


def current() -> dict[str, Any]:
    """The ids bound in this thread/request."""
    return dict(_context.get())


def bind(**fields: Any) -> None:
    """Add ids to the current ``scope`` (``None`` values are ignored). Outside any scope (a
    script calling ``ingest.publish`` directly) it does nothing: ids bound there would stay on
    the thread and end up on unrelated lines."""
    if _in_scope.get():
        merged = dict(_context.get())
        merged.update({name: value for name, value in fields.items() if value is not None})
        _context.set(merged)


@contextmanager
def scope(*, clear: bool = False, **fields: Any) -> Iterator[None]:
    """A unit of work: ids bound inside it (by anyone) are dropped when it ends. An entry point
    (a request, a work message) passes ``clear=True`` so it starts from no ids at all."""
    base = {} if clear else dict(_context.get())
    base.update({name: value for name, value in fields.items() if value is not None})
    token = _context.set(base)
    inside = _in_scope.set(True)
    try:
        yield
    finally:
        _in_scope.reset(inside)
        _context.reset(token)


# --------------------------------------------------------------------------- redaction

_SENSITIVE_NAMES = ("password", "passwd", "secret", "authorization", "token", "api_key", "apikey")
_SENSITIVE_EXACT = frozenset({"key", "keys", "x-api-key", "cookie", "set-cookie"})

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization: Bearer x / Basic x / a bare key, as a header line or a mapping entry.
    (
        re.compile(
            r"""(?i)(["']?\b(?:proxy-)?authorization["']?\s*[:=]\s*["']?)"""
            r"""(?:(?:bearer|basic|digest|token)\s+)?[^\s"',;}\]]+"""
        ),
        r"\1" + REDACTED,
    ),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{8,}"), r"\1 " + REDACTED),
    # name=value in query strings and form bodies.
    # (any name ``domain.redact`` calls sensitive: key=, api_key=, access_token=, pwd=, ...)
    (
        re.compile(rf"(?i)(?<![A-Za-z0-9_.\-])((?:{SENSITIVE_NAME})=)[^&\s\"'#;,]+"),
        r"\1" + REDACTED,
    ),
    # "password": "value" in JSON or repr'd dicts.
    (
        re.compile(rf"""(?i)(["'](?:{SENSITIVE_NAME})["']\s*:\s*)(["'])(?:\\.|(?!\2).)*\2"""),
        r"\1\2" + REDACTED + r"\2",
    ),
    # Credentials in a URL: scheme://user:password@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^/\s:@]*:)[^@/\s]*@"), r"\1" + REDACTED + "@"),
    # Ringback API keys and Standard Webhooks signing secrets, wherever they still appear.
    (re.compile(r"rbk_(?!\[REDACTED\])[A-Za-z0-9_\-]+"), "rbk_" + REDACTED),
    (re.compile(r"whsec_(?!\[REDACTED\])[A-Za-z0-9+/=_\-]+"), "whsec_" + REDACTED),
)


def redact(text: str) -> str:
    """``text`` with every key, password, signing secret and Authorization value masked."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _sensitive(name: str) -> bool:
    lowered = name.lower()
    return (
        lowered in _SENSITIVE_EXACT
        or any(part in lowered for part in _SENSITIVE_NAMES)
        or is_sensitive_name(lowered)
    )


def redact_value(name: str, value: Any) -> Any:
    """A structured field as it may be logged: sensitive names masked, strings scrubbed,
    mappings and sequences walked."""
    if _sensitive(name) and value not in (None, ""):
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(k): redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(name, item) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


# --------------------------------------------------------------------------- formatting

_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)


def _timestamp(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: fixed fields, then the context, then ``extra=``."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception:  # a bad %-format must not lose the line
            message = f"{record.msg!r} {record.args!r}"
        entry: dict[str, Any] = {
            "timestamp": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(message),
            "service": "ringback",
            "env": os.environ.get("RINGBACK_STAGE", "local"),
        }
        for name, value in _context.get().items():
            entry[name] = redact_value(name, value)
        for name, value in vars(record).items():
            if name not in _STANDARD_ATTRS and not name.startswith("_") and name not in entry:
                entry[name] = redact_value(name, value)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


class StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stdout`` is when a line is emitted (Lambda's, or a test's
    capture), not the one that was current at configuration time."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout  # under the handler's lock (Handler.handle holds it)
        super().emit(record)


def default_level() -> str:
    """``RINGBACK_LOG_LEVEL``, else INFO on AWS stages and WARNING on ``local``: the dev stack
    and the tests print only what needs attention (``RINGBACK_LOG_LEVEL=INFO make run`` shows
    every line)."""
    configured = os.environ.get("RINGBACK_LOG_LEVEL", "").strip()
    if configured:
        return configured.upper()
    return "WARNING" if os.environ.get("RINGBACK_STAGE", "local") == "local" else "INFO"


def configure(logger: logging.Logger, level: str | None = None) -> None:
    """Make ``logger`` (the app's ``app.log``, parent of every ``ringback.*`` module logger)
    write JSON lines to stdout at ``level`` (default: ``default_level()``). Idempotent;
    replaces Chalice's plain-text handler."""
    name = (level or default_level()).upper()
    resolved = logging.getLevelName(name)
    logger.setLevel(resolved if isinstance(resolved, int) else logging.INFO)
    for handler in list(logger.handlers):
        if isinstance(handler, logging.StreamHandler):
            logger.removeHandler(handler)
    handler = StdoutHandler()
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.propagate = False
