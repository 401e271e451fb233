"""Reads shared by the events of one request.

A batch of up to 100 events usually names a handful of event types: the registrations that
match one are read once for the whole request, not once per event. The scope lasts one
request, so a registration changed by another request is seen by the next one, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

_T = TypeVar("_T")
_scope: ContextVar[dict[Hashable, Any] | None] = ContextVar("ringback_read_scope", default=None)


@contextmanager
def request_scope() -> Iterator[None]:
    """Reads made through ``once`` inside this block are made once."""
    token = _scope.set({})
    try:
        yield
    finally:
        _scope.reset(token)


def once(key: Hashable, read: Callable[[], list[_T]]) -> list[_T]:
    """``read()``, or what it gave the first time within the current request scope (outside
    one, every call reads)."""
    cache = _scope.get()
    if cache is None:
        return read()
    if key not in cache:
        cache[key] = read()
    result: list[_T] = cache[key]
    return result
