"""Dead-target bookkeeping across worker processes: a success ends a failure run recorded by
another process at most a bounded time late (one process skips its delete while it remembers
clearing the run, to save an AWS call per healthy delivery)."""

from __future__ import annotations

import time

import pytest

from chalicelib.delivery import target_health
from chalicelib.storage import health
from chalicelib.storage.guards import GuardModel


def _run_start(key: str) -> float | None:
    try:
        return GuardModel.get(key, consistent_read=True).failing_since
    except GuardModel.DoesNotExist:
        return None


@pytest.fixture
def key(aws, monkeypatch):
    monkeypatch.setenv("RINGBACK_DEAD_TARGET_SECONDS", "3")  # memory window: 0.3 s
    name = f"health#campaign#t-{time.time_ns()}#reg"
    yield name
    target_health._cleared.forget(name)


def test_a_failure_in_this_process_is_never_hidden_by_a_remembered_clear(key):
    target_health.succeeded(key)
    target_health.failed(key, disable=lambda reason: pytest.fail(reason))
    assert _run_start(key) is not None
    target_health.succeeded(key)
    assert _run_start(key) is None


def test_a_failure_recorded_by_another_process_ends_within_the_window(key):
    target_health.succeeded(key)
    health.record_failure(key, time.time())  # another worker's failure
    target_health.succeeded(key)
    assert _run_start(key) is not None  # remembered clear: delete skipped
    time.sleep(0.35)
    target_health.succeeded(key)
    assert _run_start(key) is None


def test_disabling_for_a_long_run_clears_it(key):
    health.record_failure(key, time.time() - 10)
    reasons: list[str] = []
    target_health.failed(key, disable=reasons.append)
    assert reasons and "every attempt failed for 10 s (limit 3 s)" in reasons[0]
    assert _run_start(key) is None
