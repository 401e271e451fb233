"""Target health: how long a receiver has failed every attempt.

One guard item per target (``health#<family>#<tenant>#<target>``) holds the time of the first
failure in the current unbroken run. A failure sets it only if absent (one UpdateItem with
``if_not_exists``, which also returns it); a success deletes it. When the run is older than the
stage's limit, the engine disables the target: deliveries to it end ``skipped``, not lost, and the
tenant sees why and can re-enable it.
"""

from __future__ import annotations

from chalicelib.storage.guards import GuardModel


def health_key(family: str, tenant_id: str, target_id: str) -> str:
    return f"health#{family}#{tenant_id}#{target_id}"


def record_failure(key: str, now: float) -> float:
    """Returns the start of the current run of failures (``now`` if this is the first)."""
    guard = GuardModel(key)
    guard.update(actions=[GuardModel.failing_since.set(GuardModel.failing_since | now)])
    return float(guard.failing_since if guard.failing_since is not None else now)


def record_success(key: str) -> None:
    GuardModel(key).delete()
