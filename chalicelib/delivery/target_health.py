"""Dead-target detection: how long a receiver has failed every attempt, and what that costs.

The failure run lives in DynamoDB (``storage.health``): a failure sets its start if absent, a
success deletes it. Deleting on every success would cost an AWS call per delivery for the common
case, a healthy target with no run to end. So each process remembers the targets it has cleared
and, while that memory is fresh, skips the delete:

- in one process the record is exact: a failure seen here forgets the target first;
- across processes a failure recorded elsewhere after our clear survives our successes until our
  memory of that target expires (at most ``CLEAR_MEMORY_SECONDS``, and never more than a tenth of
  the dead-target limit), so a run is ended at most that much late against a limit of days.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from chalicelib import settings
from chalicelib.storage import health

CLEAR_MEMORY_SECONDS = 60.0
MAX_REMEMBERED = 10_000


class _ClearedTargets:
    """Targets whose failure run this process deleted, and when (bounded, oldest evicted)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cleared: OrderedDict[str, float] = OrderedDict()

    def fresh(self, key: str, now: float, window: float) -> bool:
        with self._lock:
            at = self._cleared.get(key)
            return at is not None and now - at < window

    def remember(self, key: str, now: float) -> None:
        with self._lock:
            self._cleared[key] = now
            self._cleared.move_to_end(key)
            while len(self._cleared) > MAX_REMEMBERED:
                self._cleared.popitem(last=False)

    def forget(self, key: str) -> None:
        with self._lock:
            self._cleared.pop(key, None)


_cleared = _ClearedTargets()


def _window() -> float:
    return min(CLEAR_MEMORY_SECONDS, settings.dead_target_seconds() / 10)


def succeeded(key: str) -> None:
    """A send succeeded: the target's failure run (if any) is over."""
    now = time.time()
    if _cleared.fresh(key, now, _window()):
        return
    health.record_success(key)
    _cleared.remember(key, now)


def failed(key: str, disable: Callable[[str], None]) -> None:
    """A send failed: extend the run, and call ``disable`` with the reason once the run has
    lasted the stage's limit. The run is then cleared, so a tenant who re-enables the target
    starts a new one rather than being disabled again by the next single failure."""
    _cleared.forget(key)
    now = time.time()
    limit = settings.dead_target_seconds()
    failing_for = now - health.record_failure(key, now)
    if failing_for >= limit:
        disable(f"every attempt failed for {int(failing_for)} s (limit {int(limit)} s)")
        gone(key)


def gone(key: str) -> None:
    """The target was disabled (410 Gone, or the run reached the limit): end its run."""
    _cleared.forget(key)
    health.record_success(key)
