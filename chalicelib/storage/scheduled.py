"""Scheduled callbacks in DynamoDB, and the conditional writes behind their rules.

One item per callback (partition: the tenant, sort key: the callback id). Callback ids start
with the creation time in milliseconds (hex), so a tenant's partition, and the ``by_tenant_state``
index (partition ``<tenant>#<state>``, same sort key), list callbacks oldest first and page with
a plain ``callback_id > <last seen>`` key condition. The two live states share one index
partition, ``<tenant>#scheduled`` (see ``tenant_state``), so starting a firing does not move
the callback in that index; a listing of one live state filters the other out.

Rules and how DynamoDB holds them:

- Duplicates (same instant + same URL per account): a guard item
  ``sched-dup#<tenant>#<epoch>#<sha256(url)>`` put with ``attribute_not_exists`` in the same
  transaction as the callback, so of N concurrent identical creates exactly one commits.
  Cancelling releases the guard (same transaction), so the same call can be made again.
- Nothing scheduled is lost. A first firing due beyond SQS's 15-minute delay limit has its work
  message written to the ``due_items`` table in that same transaction: that item is its
  schedule, the sweeper hands it over. One due sooner is sent to SQS by the API right after the
  commit (``scheduler.hand_over``); if that send fails, the API stores the due item instead; if
  the process dies in between, the reconciler finds the callback through ``by_open`` once it is
  a grace period overdue and sends the message then. (Storing every first firing as an outbox
  item made that case late by a minute at most instead, for 4 write units on every create.)
- Firing ``k`` starts with a conditional update (``state = scheduled AND fired_count = k``), so
  duplicate or late work messages, overlapping workers and a concurrent cancel can never start a
  firing twice or start one after a cancel. Every later state change is conditional as well.
"""

from __future__ import annotations

import hashlib
import json
import secrets as pysecrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist, TransactWriteError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model

from chalicelib import settings
from chalicelib.domain import scheduled as rules
from chalicelib.domain.timeutil import fmt, parse_stored
from chalicelib.storage import due, quotas, scheduled_secrets
from chalicelib.storage.base import cancelled_by_condition, make_meta, transaction, update_if
from chalicelib.storage.due import DueItemModel
from chalicelib.storage.guards import GuardModel, read_guard

SCHEDULED, FIRING, COMPLETED, FAILED, CANCELLED = rules.STATES
OPEN_SHARDS = 4
GUARD_GRACE_SECONDS = 24 * 3600
"""A duplicate guard outlives its callback's time by a day (then DynamoDB's TTL removes it; a
create for a past time is refused anyway, so an expired guard can never be needed)."""


class ByTenantState(GlobalSecondaryIndex["ScheduledCallbackModel"]):
    """``list?state=``: one tenant's callbacks in one state (both live states in one partition),
    oldest first."""

    class Meta:
        index_name = "by_tenant_state"
        projection = AllProjection()

    tenant_state = UnicodeAttribute(hash_key=True)
    callback_id = UnicodeAttribute(range_key=True)


class ByOpen(GlobalSecondaryIndex["ScheduledCallbackModel"]):
    """The reconciler's sparse index: only live callbacks carry ``open_bucket``, keyed by the
    hour (and shard) of when their next step is due (the next firing; for the one running, when
    it was due, or when the reconciler re-armed it). Reading what is overdue costs what is
    overdue, not what is scheduled."""

    class Meta:
        index_name = "by_open"
        projection = KeysOnlyProjection()

    open_bucket = UnicodeAttribute(hash_key=True)
    open_due = NumberAttribute(range_key=True)


class ScheduledCallbackModel(Model):
    Meta = make_meta("scheduled_callbacks")

    tenant_id = UnicodeAttribute(hash_key=True)
    callback_id = UnicodeAttribute(range_key=True)
    callback_url = UnicodeAttribute()
    callback_time = UnicodeAttribute()  # the anchor, UTC, whole seconds
    offset_seconds = NumberAttribute(default=0)  # the client's UTC offset, for month arithmetic
    repeat_type = UnicodeAttribute(null=True)  # None: a one-time callback
    repeat_unit = UnicodeAttribute(null=True)
    repeat_interval = NumberAttribute(null=True)
    repeat_count = NumberAttribute(null=True)
    repeat_until = UnicodeAttribute(null=True)
    state = UnicodeAttribute()
    tenant_state = UnicodeAttribute()
    fired_count = NumberAttribute(default=0)  # firings started
    next_fire_at = UnicodeAttribute(null=True)  # when firing number fired_count is due
    last_fired_at = UnicodeAttribute(null=True)
    last_status = UnicodeAttribute(null=True)  # final status of the latest finished firing
    last_status_firing = NumberAttribute(null=True)  # which firing (1-based) that was
    failure_reason = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()
    duplicate_key = UnicodeAttribute()
    open_bucket = UnicodeAttribute(null=True)  # only while live (``ByOpen``)
    open_due = NumberAttribute(null=True)  # epoch seconds the next step is due
    expires_at = NumberAttribute(null=True)  # DynamoDB TTL, once finished: + the retention
    rate_limit = NumberAttribute(null=True)  # flow control: firings per second
    max_in_flight = NumberAttribute(null=True)  # flow control: concurrent deliveries

    by_tenant_state = ByTenantState()
    by_open = ByOpen()

    @property
    def repeat(self) -> rules.Repeat | None:
        if self.repeat_type is None or self.repeat_unit is None or self.repeat_interval is None:
            return None
        return rules.Repeat(
            type="interval" if self.repeat_type == "interval" else "immediate",
            unit=self.repeat_unit,
            interval=int(self.repeat_interval),
            count=int(self.repeat_count) if self.repeat_count is not None else None,
            until=parse_stored(self.repeat_until) if self.repeat_until else None,
        )

    @property
    def anchor(self) -> datetime:
        """``callback_time`` at the client's offset (see ``rules.anchor_at``)."""
        return rules.anchor_at(parse_stored(self.callback_time), int(self.offset_seconds))


class AlreadyExists(Exception):
    """Another callback of the account has the same time and URL."""


OUTBOX_BEYOND = 15 * 60
"""A first firing due later than this (seconds; SQS's delay limit, ``queue.SQS_MAX_DELAY``) is
stored as a due item in the create's transaction; a sooner one goes straight to SQS."""


@dataclass(frozen=True)
class FirstFiring:
    """The first firing's work message, as the due item that holds (or would hold) it."""

    item: DueItemModel
    stored: bool  # written in the create's transaction (due beyond ``OUTBOX_BEYOND``)


@dataclass(frozen=True)
class Created:
    record: ScheduledCallbackModel
    signing_secret: str
    outbox: FirstFiring


def new_callback_id(now_epoch: float) -> str:
    """24 hex characters: creation time in ms (11) + 52 random bits (13), so ids sort by age."""
    return f"{int(now_epoch * 1000):011x}"[-11:] + pysecrets.token_hex(7)[:13]


def tenant_state(tenant_id: str, state: str) -> str:
    """The ``by_tenant_state`` partition of a callback in ``state``.

    Both live states (``scheduled`` and ``firing``) share ``<tenant>#scheduled``: every firing
    goes ``scheduled`` -> ``firing`` (and an immediate repeat back), and an index key that
    changes costs a delete and a put in the index (2 write units) on each such step. Finished
    states keep their own partition: a callback enters one once. A ``state=firing`` listing reads
    the live partition and filters (live callbacks are bounded by the pending quota); a
    ``state=scheduled`` one filters out the few that are firing at that moment.
    """
    shown = SCHEDULED if state in rules.LIVE_STATES else state
    return f"{tenant_id}#{shown}"


LIVE_PAGE_READ = 1000
"""Items a ``state=firing`` listing evaluates per Query (firing callbacks are few among the live
ones, so reading a page's worth at a time would take many Queries)."""


def duplicate_key(tenant_id: str, callback_time: datetime, callback_url: str) -> str:
    """Same instant (whatever offset it was written in) and byte-identical URL."""
    digest = hashlib.sha256(callback_url.encode("utf-8")).hexdigest()
    return f"sched-dup#{tenant_id}#{int(callback_time.timestamp())}#{digest}"


def signing_secret(record: ScheduledCallbackModel) -> str:
    """The callback's own secret, derived from its account's master (``scheduled_secrets``)."""
    return scheduled_secrets.signing_secret(record.tenant_id, record.callback_id)


def fire_message(
    tenant_id: str, callback_id: str, firing: int, repeat_type: str | None
) -> dict[str, Any]:
    """The scheduler's work message: start firing number ``firing`` (0-based) of a callback.

    ``series`` (``once``, ``interval``, ``immediate``; never changes) tells the handler whether
    it must read the callback before starting the firing (only ``interval`` computes the next
    time then); the others start with the conditional update alone.
    """
    return {
        "kind": "fire",
        "tenant_id": tenant_id,
        "callback_id": callback_id,
        "firing": firing,
        "series": repeat_type or "once",
    }


def fire_item_id(callback_id: str, firing: int) -> str:
    """Stable per firing, so a repeated hand-over lands on the same due item."""
    return f"fire.{callback_id}.{firing}"


def _outbox_item(message: dict[str, Any], due_at: float, item_id: str) -> DueItemModel:
    """The due item ``queue.send_at`` would write (same bucket, key and message encoding)."""
    body = json.dumps({**message, "due_at": due_at}, separators=(",", ":"), sort_keys=True)
    return DueItemModel(
        f"{due.minute_of(due_at)}#{due.shard_of(item_id)}",
        f"{int(due_at * 1000):015d}#{item_id}",
        due_at=due_at,
        message=body,
    )


def create(tenant_id: str, request: rules.CreateRequest, now: datetime) -> Created:
    """Store a callback and its duplicate guard (and, when it is due beyond SQS's delay limit,
    its first firing), all or nothing. The caller hands the first firing over
    (``scheduler.hand_over(created.outbox)``).

    Raises ``AlreadyExists`` when the guard is held by another callback.
    """
    callback_id = new_callback_id(time.time())  # ``now`` is whole seconds: too coarse here
    repeat = request.repeat
    key = duplicate_key(tenant_id, request.callback_time, request.callback_url)
    secret = scheduled_secrets.signing_secret(tenant_id, callback_id)
    record = ScheduledCallbackModel(
        tenant_id,
        callback_id,
        callback_url=request.callback_url,
        callback_time=fmt(request.callback_time),
        offset_seconds=request.offset_seconds,
        repeat_type=repeat.type if repeat else None,
        repeat_unit=repeat.unit if repeat else None,
        repeat_interval=repeat.interval if repeat else None,
        repeat_count=repeat.count if repeat else None,
        repeat_until=fmt(repeat.until) if repeat and repeat.until else None,
        state=SCHEDULED,
        tenant_state=tenant_state(tenant_id, SCHEDULED),
        fired_count=0,
        next_fire_at=fmt(request.callback_time),
        created_at=fmt(now),
        updated_at=fmt(now),
        duplicate_key=key,
        rate_limit=request.limits.rate,
        max_in_flight=request.limits.max_in_flight,
    )
    due_at = request.callback_time.timestamp()
    if due_at - time.time() <= OUTBOX_BEYOND:
        # Sent to SQS after the commit: if that hand-over is lost, the reconciler finds the
        # callback here. A later first firing is stored in this transaction (the sweeper's,
        # never lost), so it enters ``by_open`` only when it starts (``start_firing``): one
        # index entry fewer in a transaction that bills twice.
        record.open_bucket = open_bucket(callback_id, due_at)
        record.open_due = round(due_at, 3)
    outbox = FirstFiring(
        _outbox_item(
            fire_message(tenant_id, callback_id, 0, repeat.type if repeat else None),
            due_at,
            fire_item_id(callback_id, 0),
        ),
        stored=record.open_due is None,
    )
    guard = GuardModel(
        key, owner=callback_id, expires_at=int(due_at) + GUARD_GRACE_SECONDS, version=0
    )
    slot = quotas.pending_slot(tenant_id)  # raises QuotaExceeded

    def write() -> None:
        with transaction() as tx:
            tx.save(
                guard,
                condition=GuardModel.key.does_not_exist()
                | (GuardModel.expires_at < int(now.timestamp())),
            )
            tx.save(record, condition=ScheduledCallbackModel.callback_id.does_not_exist())
            if outbox.stored:
                tx.save(outbox.item)
            # the tenant's pending count, +1 under its limit (puts come first: after them)
            tx.update(slot.model, actions=slot.actions, condition=slot.condition)

    try:
        quotas.retrying_conflicts(write)
    except TransactWriteError as exc:
        if not cancelled_by_condition(exc):
            raise
        held = read_guard(key)
        if held is not None and held.owner == callback_id:
            # The guard is ours: this transaction was applied and its answer lost (the retry
            # failed its own condition). The callback exists; answer as for a fresh create.
            return Created(record, secret, outbox)
        if cancelled_by_condition(exc, index=0):
            raise AlreadyExists(key) from exc
        if cancelled_by_condition(exc, index=3 if outbox.stored else 2):
            raise slot.exceeded() from exc
        raise
    return Created(record, secret, outbox)


def get(
    tenant_id: str, callback_id: str, *, consistent: bool = True
) -> ScheduledCallbackModel | None:
    try:
        return ScheduledCallbackModel.get(tenant_id, callback_id, consistent_read=consistent)
    except DoesNotExist:
        return None


def list_page(
    tenant_id: str, state: str | None, limit: int, after: str | None
) -> tuple[list[ScheduledCallbackModel], str | None]:
    """One page, oldest first, and the id to continue after (None on the last page).

    One Query: on the table for all states, on ``by_tenant_state`` for one state (that index is
    eventually consistent, like every GSI: a callback that just changed state may show up under
    its old state for a moment). A live state shares its partition with the other live state
    (``tenant_state``) and is filtered, so it may take more than one Query to fill a page. It
    asks for one item more than the page to know whether another page follows, so the last page
    never comes with a cursor to an empty one.
    """
    condition: Any = None
    if state is None:
        if after is not None:
            condition = ScheduledCallbackModel.callback_id > after
        results = ScheduledCallbackModel.query(
            tenant_id, range_key_condition=condition, limit=limit + 1, consistent_read=True
        )
    else:
        if after is not None:
            condition = ByTenantState.callback_id > after
        live = state in rules.LIVE_STATES
        results = ScheduledCallbackModel.by_tenant_state.query(
            tenant_state(tenant_id, state),
            range_key_condition=condition,
            filter_condition=(ScheduledCallbackModel.state == state) if live else None,
            limit=limit + 1,
            page_size=max(limit + 1, LIVE_PAGE_READ) if state == FIRING else limit + 1,
        )
    found = list(results)
    if len(found) > limit:
        return found[:limit], found[limit - 1].callback_id
    return found, None


def open_bucket(callback_id: str, due: float) -> str:
    """``<hour>#<shard>`` of when a live callback's next step is due (``ByOpen``)."""
    hour = datetime.fromtimestamp(due, UTC).strftime("%Y-%m-%dT%H")
    shard = int(hashlib.sha256(callback_id.encode()).hexdigest()[:8], 16) % OPEN_SHARDS
    return f"{hour}#{shard}"


def _open_actions(callback_id: str, due: float, *, keep: bool = False) -> list[Any]:
    """Put the callback in ``by_open``, due at ``due``; with ``keep``, only if it is not there
    yet (an entry that exists stays as it is: no index write)."""
    bucket, rounded = open_bucket(callback_id, due), round(due, 3)
    if keep:
        return [
            ScheduledCallbackModel.open_bucket.set(ScheduledCallbackModel.open_bucket | bucket),
            ScheduledCallbackModel.open_due.set(ScheduledCallbackModel.open_due | rounded),
        ]
    return [
        ScheduledCallbackModel.open_bucket.set(bucket),
        ScheduledCallbackModel.open_due.set(rounded),
    ]


def _state_actions(
    record: ScheduledCallbackModel,
    state: str,
    now: datetime,
    due: datetime | None = None,
    *,
    keep_open: bool = False,
) -> list[Any]:
    """The state change, and what follows from it: a live callback (scheduled, firing) carries
    when its next step is due in the reconciler's sparse index; a finished one leaves that index
    and expires after the stage's retention period. ``keep_open`` leaves an index entry that
    exists as it is, and adds one due ``now`` otherwise (a firing that starts: see
    ``start_firing``)."""
    actions: list[Any] = [
        ScheduledCallbackModel.state.set(state),
        ScheduledCallbackModel.tenant_state.set(tenant_state(record.tenant_id, state)),
        ScheduledCallbackModel.updated_at.set(fmt(now)),
    ]
    if state in rules.LIVE_STATES:
        actions.extend(_open_actions(record.callback_id, (due or now).timestamp(), keep=keep_open))
    else:
        actions.extend(
            [
                ScheduledCallbackModel.open_bucket.remove(),
                ScheduledCallbackModel.open_due.remove(),
                ScheduledCallbackModel.expires_at.set(
                    int(now.timestamp() + settings.retention_seconds())
                ),
            ]
        )
    return actions


def rearm(tenant_id: str, callback_id: str, seen_due: float, due: float) -> bool:
    """The reconciler handled a callback whose next step was overdue: look again at ``due``."""
    return update_if(
        skeleton(tenant_id, callback_id),
        _open_actions(callback_id, due),
        ScheduledCallbackModel.state.is_in(*rules.LIVE_STATES)
        & (ScheduledCallbackModel.open_due == seen_due),
    )


def open_due_before(bucket: str, until: float) -> Iterator[tuple[str, str, float]]:
    """(tenant id, callback id, due) of live callbacks in ``bucket`` due at or before ``until``."""
    for item in ScheduledCallbackModel.by_open.query(
        bucket, range_key_condition=ScheduledCallbackModel.open_due <= until
    ):
        yield item.tenant_id, item.callback_id, float(item.open_due)


def _final_update(record: ScheduledCallbackModel, actions: Sequence[Any], condition: Any) -> bool:
    """A move to a final state (completed, failed, cancelled): the callback's conditional
    update and the tenant's pending count -1, in one transaction, so the count drops exactly
    once per callback however many workers race to finish it."""
    release = quotas.release_pending(record.tenant_id)

    def write() -> None:
        with transaction() as tx:
            tx.update(record, actions=list(actions), condition=condition)
            tx.update(release.model, actions=release.actions)

    try:
        quotas.retrying_conflicts(write)
    except TransactWriteError as exc:
        if cancelled_by_condition(exc, index=0):
            return False
        raise
    return True


def start_firing(
    record: ScheduledCallbackModel,
    firing: int,
    *,
    state: str,
    next_fire_at: datetime | None,
    now: datetime,
) -> bool:
    """Firing ``firing`` (0-based) starts: only if the callback is scheduled and exactly
    ``firing`` firings have started. ``state``/``next_fire_at`` say what follows it: another
    firing already scheduled (interval series) or ``firing`` (nothing yet).

    A callback that goes to ``firing`` keeps its ``by_open`` entry, due at this firing's time
    (or when the reconciler last re-armed it): the reconciler looks at it once it is a grace
    period past that, exactly as it would a grace period past the start, since a firing starts
    when it is due. Moving the entry would rewrite the index's key (a delete and a put: 2 write
    units per firing) for a difference of the firing's start lag. A firing that starts more
    than a grace period late is looked at by the next reconcile, which finds its delivery
    running (and re-arms it) or creates it with a conditional put, a harmless duplicate. A
    callback created with its first firing stored as a due item has no entry yet: it gets one,
    due now."""
    actions = [
        *_state_actions(
            record,
            state,
            now,
            due=next_fire_at if state == SCHEDULED else None,
            keep_open=state != SCHEDULED,
        ),
        ScheduledCallbackModel.fired_count.set(firing + 1),
        ScheduledCallbackModel.last_fired_at.set(fmt(now)),
        ScheduledCallbackModel.next_fire_at.set(fmt(next_fire_at))
        if next_fire_at
        else ScheduledCallbackModel.next_fire_at.remove(),
    ]
    condition = (ScheduledCallbackModel.state == SCHEDULED) & (
        ScheduledCallbackModel.fired_count == firing
    )
    return update_if(record, actions, condition)


def record_outcome(
    record: ScheduledCallbackModel, firing: int, status: str, reason: str | None, now: datetime
) -> bool:
    """``last_status`` follows the latest firing that finished: an older firing finishing late
    (its retries outlasted the next firing) does not overwrite a newer one's outcome."""
    number = firing + 1
    actions: list[Any] = [
        ScheduledCallbackModel.last_status.set(status),
        ScheduledCallbackModel.last_status_firing.set(number),
        ScheduledCallbackModel.updated_at.set(fmt(now)),
    ]
    if reason:
        actions.append(ScheduledCallbackModel.failure_reason.set(reason))
    condition = ScheduledCallbackModel.callback_id.exists() & (
        ScheduledCallbackModel.last_status_firing.does_not_exist()
        | (ScheduledCallbackModel.last_status_firing < number)
    )
    return update_if(record, actions, condition)


def skeleton(tenant_id: str, callback_id: str) -> ScheduledCallbackModel:
    """Just the key, for a conditional update that needs no read first (the condition decides;
    PynamoDB fills the item in from the update's answer)."""
    return ScheduledCallbackModel(tenant_id, callback_id)


def finish_firing(
    record: ScheduledCallbackModel,
    firing: int,
    *,
    state: str,
    next_fire_at: datetime | None,
    status: str,
    reason: str | None,
    now: datetime,
) -> bool:
    """The latest firing (``firing``, 0-based) is over and nothing was scheduled after it: the
    callback moves on to ``scheduled`` (an immediate repeat, due at ``next_fire_at``) or to
    ``completed``/``failed``, and records the firing's outcome, in one write. Only from
    ``firing`` with that firing the latest one."""
    actions = [
        *_state_actions(record, state, now, due=next_fire_at),
        ScheduledCallbackModel.next_fire_at.set(fmt(next_fire_at))
        if next_fire_at
        else ScheduledCallbackModel.next_fire_at.remove(),
        ScheduledCallbackModel.last_status.set(status),
        ScheduledCallbackModel.last_status_firing.set(firing + 1),
    ]
    if reason:
        actions.append(ScheduledCallbackModel.failure_reason.set(reason))
    condition = (ScheduledCallbackModel.state == FIRING) & (
        ScheduledCallbackModel.fired_count == firing + 1
    )
    if state in rules.LIVE_STATES:  # an immediate repeat: still pending
        return update_if(record, actions, condition)
    return _final_update(record, actions, condition)


def mark_failed(record: ScheduledCallbackModel, reason: str, now: datetime) -> bool:
    """Stop a live series for good (its receiver is gone, or the scheduler gave up on it)."""
    actions = [
        *_state_actions(record, FAILED, now),
        ScheduledCallbackModel.failure_reason.set(reason),
        ScheduledCallbackModel.next_fire_at.remove(),
    ]
    condition = ScheduledCallbackModel.state.is_in(*rules.LIVE_STATES)
    return _final_update(record, actions, condition)


def cancel(tenant_id: str, callback_id: str, now: datetime) -> ScheduledCallbackModel | None:
    """Cancel a live callback and release its duplicate guard, in one transaction.

    Returns the callback as it is afterwards (None when it does not exist). A callback that is
    no longer live (already cancelled, completed or failed) is returned unchanged.
    """
    record = get(tenant_id, callback_id)
    if record is None or record.state not in rules.LIVE_STATES:
        return record
    release = quotas.release_pending(tenant_id)

    def write() -> None:
        with transaction() as tx:
            tx.update(
                record,
                actions=[
                    *_state_actions(record, CANCELLED, now),
                    ScheduledCallbackModel.next_fire_at.remove(),
                ],
                condition=ScheduledCallbackModel.state.is_in(*rules.LIVE_STATES),
            )
            tx.delete(
                GuardModel(record.duplicate_key),
                condition=GuardModel.key.does_not_exist() | (GuardModel.owner == callback_id),
            )
            tx.update(release.model, actions=release.actions)  # the pending count, -1

    try:
        quotas.retrying_conflicts(write)
    except TransactWriteError as exc:
        # DynamoDB gets deletes before updates: the guard is index 0, the callback index 1.
        if cancelled_by_condition(exc, index=1):  # it finished (or was cancelled) meanwhile
            return get(tenant_id, callback_id)
        if not cancelled_by_condition(exc, index=0):
            raise
        # The guard now belongs to another callback (only possible once ours expired): cancel
        # without touching it.
        _final_update(
            record,
            [*_state_actions(record, CANCELLED, now), ScheduledCallbackModel.next_fire_at.remove()],
            ScheduledCallbackModel.state.is_in(*rules.LIVE_STATES),
        )
    return get(tenant_id, callback_id)
