"""Idempotency-Key claims for ``POST /events``: of any number of concurrent requests with one
key, exactly one fans its event out; the others wait for it to finish and answer with the same
event (or 409 ``in_progress`` if it takes too long). A request whose owner died (its lease ran
out before the key was marked done) takes the lease over and finishes the same event.

The same lease-and-take-over pattern guards the chunks of a large fan-out (``ingest``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import PutError, UpdateError

from chalicelib.storage.guards import GuardModel, read_guard

log = logging.getLogger("ringback.ingest")

IDEMPOTENCY_SECONDS = 24 * 3600
CLAIM_LEASE_SECONDS = 30.0
"""How long a request owns an idempotency key it claimed before another may take it over."""
WAIT_FOR_OWNER_SECONDS = 10.0
DONE = "done"


class InProgress(Exception):
    """Another request with the same idempotency key is still fanning its event out."""

    def __init__(self, event_id: str) -> None:
        super().__init__(event_id)
        self.event_id = event_id


@dataclass(frozen=True)
class Claim:
    event_id: str
    done: bool = False
    resumed: bool = False


def guard_key_for(tenant_id: str, key: str) -> str:
    return f"idem#{tenant_id}#{hashlib.sha256(key.encode()).hexdigest()}"


def claim(guard_key: str, event_id: str, deadline: float | None = None) -> Claim:
    """Own ``guard_key`` for ``event_id``, or learn which event owns it (waiting a little for a
    live owner to finish: until ``deadline``, a ``time.monotonic()`` instant that the keys of
    one request share, so a batch never waits longer than one key would)."""
    if deadline is None:
        deadline = time.monotonic() + WAIT_FOR_OWNER_SECONDS
    while True:
        now = time.time()
        guard = GuardModel(
            guard_key,
            owner=event_id,
            expires_at=int(now) + IDEMPOTENCY_SECONDS,
            lease_until=now + CLAIM_LEASE_SECONDS,
        )
        try:
            guard.save(
                condition=GuardModel.key.does_not_exist() | (GuardModel.expires_at < int(now))
            )
            return Claim(event_id)
        except PutError as exc:
            if exc.cause_response_code != "ConditionalCheckFailedException":
                raise
        existing = read_guard(guard_key)
        if existing is None:  # expired and removed in between: claim it again
            continue
        if existing.owner == event_id:  # our own put committed; only its answer was lost
            return Claim(event_id)
        owner = existing.owner or event_id
        if existing.payload == DONE:
            return Claim(owner, done=True)
        held = existing.lease_until
        if held is None or float(held) < now:
            if take_over(existing, held, now):
                return Claim(owner, resumed=True)
            continue
        if time.monotonic() >= deadline:
            raise InProgress(owner)
        time.sleep(0.1)


def take_over(guard: GuardModel, held: float | None, now: float) -> bool:
    condition = (
        GuardModel.lease_until.does_not_exist() if held is None else GuardModel.lease_until == held
    )
    try:
        guard.update(
            actions=[GuardModel.lease_until.set(now + CLAIM_LEASE_SECONDS)],
            condition=condition & GuardModel.payload.does_not_exist(),
        )
    except UpdateError as exc:
        if exc.cause_response_code == "ConditionalCheckFailedException":
            return False
        raise
    return True


def settle(guard_key: str, event_id: str, done: bool) -> None:
    """Mark the key done, or give its lease back after a failure (so the publisher's retry
    need not wait for it to run out). Never raises: a failure here only delays a repeat."""
    actions: list[Any] = (
        [GuardModel.payload.set(DONE), GuardModel.lease_until.remove()]
        if done
        else [GuardModel.lease_until.set(0)]
    )
    try:
        GuardModel(guard_key).update(actions=actions, condition=GuardModel.owner == event_id)
    except Exception:
        # The event is accepted (or refused) all the same. An unmarked key only means that a
        # repeat within the lease waits for it to run out, then redoes the (idempotent) work.
        log.warning(
            "could not %s the idempotency key of event %s",
            "mark done" if done else "give back",
            event_id,
            exc_info=True,
        )
