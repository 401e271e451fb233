"""The notification callbacks family in the delivery engine: buffered, batched deliveries.

An event whose type is in the event list is not fanned out one delivery per target. ``buffer``
stores it once per subscribed callback, and a ``notification-flush`` work message, due at the
end of a short window (``RINGBACK_BATCH_WINDOW`` seconds, default 5), cuts the buffer into
batches of at most ``batchSize`` events. Each batch is ONE engine delivery (``deliver_direct``),
so retries, the backup url after 3 failed attempts, signatures, the attempts log, dead letters
and replay are the engine's, unchanged. ``prepare`` renders the batch as a JSON array of event
objects with ``Authorization: Basic`` from the stored (decrypted) credentials.

Buffering one event for one callback (``NotificationFamily.buffer`` -> ``buffer_items``):

  B1. put the buffer item ``(tenant#callback_id, <arrival ms>#<event id>)``;
  B2. read the callback's flush marker (``flush_at``, the due time of the latest flush sent;
      a due time this process itself sent or read before serves as well);
  B3. if no flush is due later than now + 0.2 s, send a flush message due at now + window,
  B4. then move the marker to it (conditioned on the value read in B2).

Why nothing is lost wherever the worker (API Lambda) dies:

- before B1 completes: nothing was stored, and ``POST /events`` had not answered 202, so the
  publisher retries (with its Idempotency-Key the repeat resumes the same event id).
- between B1 and B3: the item is stored but no flush may cover it. Same as above: no 202 yet,
  the retry runs B1-B4 again (the same item key is rewritten or a second copy is stored; the
  flush drops repeated event ids within a batch). Any later event for the callback also
  schedules a flush, which takes every item in the buffer, orphans included.
- between B3 and B4: a flush is on its way but the marker does not say so; the next event sends
  another one. Two flushes are harmless (below).
- If B2 shows a flush due after now + 0.2 s (now taken after B1 completed), that flush cannot
  have started yet (the worker never runs a message before its ``due_at``; the margin covers
  clock skew between Lambdas), so its Query will see the item written in B1.

A flush for one callback (``handle_flush``; its message carries a ``flush_id``, the same on
every redelivery) repeats, until the buffer is empty or a budget (``FLUSH_MAX_BATCHES``) is
spent:

  F1. read the state row; if a batch is pending and this flush cut it, resume it (F3 with its
      item keys); if another flush cut it, stop: that flush is working, or its message will
      come back (SQS redelivery, or the dead-letter handler re-sending it with the same id);
  F2. else Query the oldest items (at most ``batchSize``, at most ``MAX_BATCH_BYTES`` of JSON),
      derive the delivery id from their keys, and record it as the pending batch with this
      flush as owner (conditional: only one batch may be pending);
  F3. ``deliver_direct`` the batch: a conditional put of the delivery, then its first work
      message (a repeat finds the delivery and only re-sends the message);
  F4. delete the batch's items from the buffer;
  F5. clear the pending batch (conditioned on it being this one);
  then, if items remain after the budget, send the next flush at once.

Why a redelivered flush cannot lose or duplicate a batch:

- dies after F2, or in F3/F4/F5: the message comes back (SQS redelivery, or the dead-letter
  handler sends it again a minute later with the same ``flush_id``); F1 finds its own pending
  batch and redoes F3-F5 with the same delivery id, so the delivery is found, not created
  twice, and its items, deleted only once the delivery exists, are never cut into another one.
- the pending batch is recorded BEFORE the delivery is created because "the oldest items" is
  not a stable set: an event stored by a Lambda whose clock is behind can sort before items
  already taken. Without the record a repeat could cut a different batch and send some items
  twice (a test injects exactly that).
- dies after F5, before the next query or the next flush message: the message comes back and
  carries on from the items that remain.
- a flush that stops at F1 because another one owns the pending batch loses nothing: the
  owner clears the batch after our check and then queries the buffer again, so it sees every
  item stored before our due time; if the owner died, its own message resumes.

A callback deleted (or re-created under the same name) after events were buffered for it still
gets its batches cut: ``prepare`` answers ``Skip`` and the deliveries end ``skipped`` where the
client can see them.

Batches of one callback are separate deliveries and may arrive out of order; every event object
carries ``eventId`` so a receiver can drop a repeat.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
import time
import zlib
from collections.abc import Sequence
from typing import Any

from chalicelib.delivery import ingest, queue, registry
from chalicelib.delivery.registry import HttpOutbound, Outbound, PublishedEvent, Skip, Target
from chalicelib.domain import flow
from chalicelib.domain import notification as rules
from chalicelib.domain.ids import new_id
from chalicelib.storage import deliveries
from chalicelib.storage import notification as store
from chalicelib.storage.deliveries import DeliveryModel

log = logging.getLogger("ringback.notification")

FAMILY = "notification"
FLUSH_KIND = "notification-flush"
DEFAULT_WINDOW = 5.0
MAX_WINDOW = 900.0  # SQS DelaySeconds limit
MAX_BATCH_BYTES = 300_000  # a delivery record (content + attempts log) must stay under 400 KB
FLUSH_MAX_BATCHES = 25  # per flush message; the rest continues in the next one at once
NOT_STARTED_MARGIN = 0.2  # a flush due later than now + this has certainly not started
DEAD_LETTER_RETRY = 60.0


def batch_window() -> float:
    """Seconds a buffered event waits for others (``RINGBACK_BATCH_WINDOW``, default 5)."""
    raw = os.environ.get("RINGBACK_BATCH_WINDOW", "").strip()
    try:
        value = float(raw) if raw else DEFAULT_WINDOW
    except ValueError:
        value = DEFAULT_WINDOW
    return min(max(value, 0.0), MAX_WINDOW)


def flush_message(tenant_id: str, callback_id: str, callback_name: str) -> dict[str, Any]:
    """``flush_id`` names this flush: the same on every redelivery of the message."""
    return {
        "kind": FLUSH_KIND,
        "tenant_id": tenant_id,
        "callback_id": callback_id,
        "callback_name": callback_name,
        "flush_id": new_id(),
    }


def batch_delivery_id(tenant_id: str, callback_id: str, keys: Sequence[str]) -> str:
    """Derived from the batch's items, so cutting the same batch again finds the same delivery."""
    digest = hashlib.sha256(f"{tenant_id}|{callback_id}|{','.join(keys)}".encode())
    return digest.hexdigest()[:24]


# --- buffering ----------------------------------------------------------------------------


def subscribed_callbacks(event: PublishedEvent) -> dict[str, str]:
    """callback id -> callback name for every callback a subscription sends this event to
    (one entry per callback, however many of its subscriptions match)."""
    if not rules.is_notification_event(event.event_type):
        return {}
    campaign = event.payload.get("campaignName")
    campaign_name = campaign if isinstance(campaign, str) else None
    found: dict[str, str] = {}
    for sub in store.list_subscriptions(event.tenant_id):
        if rules.subscription_matches(
            store.subscription_spec(sub), event.event_type, campaign_name
        ):
            found.setdefault(sub.callback_id, sub.callback_name)
    return found


_known_flushes: dict[tuple[str, str], float] = {}
_known_lock = threading.Lock()
_KNOWN_LIMIT = 10_000


def _remember(key: tuple[str, str], due_at: float) -> None:
    with _known_lock:
        if len(_known_flushes) >= _KNOWN_LIMIT:
            _known_flushes.clear()
        _known_flushes[key] = max(due_at, _known_flushes.get(key, 0.0))


def _not_started(due_at: float | None, now: float) -> bool:
    return due_at is not None and due_at > now + NOT_STARTED_MARGIN


def ensure_flush(tenant_id: str, callback_id: str, callback_name: str) -> None:
    """Steps B2-B4: make sure a flush that has not started yet will look at the buffer.

    Call it after the item is stored. A due time this process already knows of (it sent that
    flush, or read it from the marker) saves the marker read during a burst: it is the due time
    of a flush that was really sent, so the same reasoning holds.
    """
    key = (tenant_id, callback_id)
    now = time.time()
    with _known_lock:
        known = _known_flushes.get(key)
    if _not_started(known, now):
        return
    state = store.buffer_state(tenant_id, callback_id)
    seen = float(state.flush_at) if state is not None and state.flush_at is not None else None
    if seen is not None and _not_started(seen, now):
        _remember(key, seen)
        return
    due_at = now + batch_window()
    queue.send_at(
        flush_message(tenant_id, callback_id, callback_name),
        due_at,
        f"flush.{callback_id}.{int(due_at * 1000)}",
    )
    store.mark_flush(tenant_id, callback_id, due_at, seen)
    _remember(key, due_at)


def buffer_items(
    tenant_id: str, callback_id: str, callback_name: str, items: Sequence[store.Buffered]
) -> None:
    """Store ``items`` for one callback and make sure a flush is coming (bulk loads use this)."""
    if len(items) == 1:
        store.put_buffered(tenant_id, callback_id, items[0])
    else:
        store.put_buffered_many(tenant_id, callback_id, items)
    ensure_flush(tenant_id, callback_id, callback_name)


def buffered_item(event: PublishedEvent, at_ms: int) -> store.Buffered:
    obj = rules.event_object(event.event_id, event.event_type, event.payload)
    return store.Buffered(
        store.item_key(at_ms, event.event_id), event.event_id, store.encode_event(obj)
    )


# --- flushing -----------------------------------------------------------------------------


def _take(items: Sequence[store.Buffered], limit_bytes: int) -> list[store.Buffered]:
    taken: list[store.Buffered] = []
    size = 2
    for item in items:
        size += len(item.body) + 1
        if taken and size > limit_bytes:
            break
        taken.append(item)
    return taken


def _unique(items: Sequence[store.Buffered]) -> list[store.Buffered]:
    """The batch's items, oldest first, each event id once."""
    seen: set[str] = set()
    unique: list[store.Buffered] = []
    for item in items:
        if item.event_id not in seen:
            seen.add(item.event_id)
            unique.append(item)
    return unique


def batch_body(items: Sequence[store.Buffered]) -> str:
    """The request body: a JSON array of the stored event objects, byte for byte. Kept as a
    string inside the delivery's content because the content is stored with sorted keys and
    the event object's key order is part of the wire format."""
    return "[" + ",".join(item.body for item in items) + "]"


def pack_body(body: str) -> str:
    """The batch body as the delivery stores it: zlib, then base64 (``body_z``).

    Every write of a delivery bills its whole item (the create, each attempt's claim and its
    record), so a 200-event batch stored as plain JSON (about 60 KB) cost about 60 write units
    three times over on a first-try success. Event objects of one callback compress about
    7 to 9 times (their field names and most values repeat); the event ids inside them
    already name the batch's events, so no separate list is kept."""
    return base64.b64encode(zlib.compress(body.encode("utf-8"), 6)).decode("ascii")


def unpack_body(content: dict[str, Any]) -> bytes:
    """The request body of a batch delivery; deliveries made before ``pack_body`` hold it
    plain, under ``body``."""
    packed = content.get("body_z")
    if isinstance(packed, str):
        return zlib.decompress(base64.b64decode(packed))
    return str(content.get("body", "[]")).encode("utf-8")


class _Busy:
    """Another flush owns the pending batch (see the module docstring)."""


BUSY = _Busy()


def _cut_batch(
    tenant_id: str, callback_id: str, batch_size: int, flush_id: str
) -> tuple[str, list[str], list[store.Buffered]] | _Busy | None:
    """F1/F2: our pending batch, or a new one claimed as pending; BUSY when another flush owns
    the pending batch; None when nothing is left."""
    for _ in range(3):
        state = store.buffer_state(tenant_id, callback_id)
        if state is not None and state.pending_delivery:
            if state.pending_owner not in (None, flush_id):
                return BUSY
            keys = list(state.pending_items or [])
            return state.pending_delivery, keys, store.get_buffered(tenant_id, callback_id, keys)
        items = _take(store.oldest(tenant_id, callback_id, batch_size), MAX_BATCH_BYTES)
        if not items:
            return None
        keys = [item.item_key for item in items]
        delivery_id = batch_delivery_id(tenant_id, callback_id, keys)
        if store.set_pending(tenant_id, callback_id, delivery_id, keys, flush_id):
            return delivery_id, keys, items
    raise RuntimeError(f"buffer {tenant_id}#{callback_id}: pending batch kept changing")


def _deliver(
    tenant_id: str,
    callback_id: str,
    callback_name: str,
    shown_target: str,
    delivery_id: str,
    items: Sequence[store.Buffered],
    limits: dict[str, Any] | None = None,
) -> None:
    """F3: the batch's delivery (created once) and its first work message."""
    unique = _unique(items)
    if not unique and deliveries.get(delivery_id) is None:
        return  # nothing was left to send and no delivery was made: nothing to resume
    ingest.deliver_direct(
        delivery_id=delivery_id,
        tenant_id=tenant_id,
        event_id=unique[0].event_id if unique else delivery_id,
        target=Target(FAMILY, callback_name, shown_target),
        content={
            "callback_id": callback_id,
            "callback_name": callback_name,
            "body_z": pack_body(batch_body(unique)),
            **(limits or {}),
        },
    )


def limits_content(callback: store.NotificationCallbackModel) -> dict[str, Any]:
    """The callback's flow-control limits, copied into each batch delivery's content."""
    spec = store.spec_of(callback)
    return flow.to_content(flow.Limits(spec.rate_limit, spec.max_in_flight))


def flush(tenant_id: str, callback_id: str, callback_name: str, flush_id: str) -> int:
    """Cut and hand over batches until the buffer is empty or the budget is spent; returns
    the number of batches. Sends the next flush when items remain."""
    callback = store.get_callback(tenant_id, callback_name)
    live = callback is not None and callback.callback_id == callback_id
    batch_size = int(callback.batch_size) if callback is not None and live else rules.MAX_BATCH_SIZE
    shown = callback.url if callback is not None and live else f"(deleted callback {callback_name})"
    limits = limits_content(callback) if callback is not None and live else {}
    batches = 0
    while batches < FLUSH_MAX_BATCHES:
        cut = _cut_batch(tenant_id, callback_id, batch_size, flush_id)
        if cut is None or isinstance(cut, _Busy):
            return batches
        delivery_id, keys, items = cut
        _deliver(tenant_id, callback_id, callback_name, shown, delivery_id, items, limits)
        store.remove_buffered(tenant_id, callback_id, keys)
        store.clear_pending(tenant_id, callback_id, delivery_id)
        batches += 1
    if store.oldest(tenant_id, callback_id, 1):
        queue.send_now([flush_message(tenant_id, callback_id, callback_name)])
    return batches


def handle_flush(message: dict[str, Any]) -> None:
    flush(
        str(message["tenant_id"]),
        str(message["callback_id"]),
        str(message["callback_name"]),
        str(message.get("flush_id") or ""),
    )


def handle_flush_dead_letter(message: dict[str, Any]) -> None:
    """A flush failed on every receive. Its events stay buffered: the same flush (same
    ``flush_id``, so it may resume its pending batch) is sent again a minute later."""
    log.error(
        "flush of notification callback %s (tenant %s) dead-lettered; retrying in %ss",
        message.get("callback_name"),
        message.get("tenant_id"),
        DEAD_LETTER_RETRY,
    )
    again = {k: v for k, v in message.items() if k != "due_at"}
    due_at = time.time() + DEAD_LETTER_RETRY
    queue.send_at(again, due_at, f"flush-retry.{message.get('flush_id')}.{int(due_at)}")


# --- the family ---------------------------------------------------------------------------


def basic_authorization(user_name: str, password: str) -> str:
    token = base64.b64encode(f"{user_name}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


class NotificationFamily:
    name = FAMILY

    def match(self, event: PublishedEvent) -> Sequence[Target]:
        return []  # never one delivery per event: ``buffer`` batches them

    def buffer(self, event: PublishedEvent) -> int:
        """Steps B1-B4 for every subscribed callback; returns how many took the event."""
        callbacks = subscribed_callbacks(event)
        if not callbacks:
            return 0
        item = buffered_item(event, int(time.time() * 1000))
        for callback_id, callback_name in callbacks.items():
            buffer_items(event.tenant_id, callback_id, callback_name, [item])
        return len(callbacks)

    def prepare(self, delivery: DeliveryModel, attempt_no: int, use_backup: bool) -> Outbound:
        content = json.loads(delivery.content)
        callback = store.get_callback(delivery.tenant_id, delivery.target_id)
        if callback is None or callback.callback_id != content.get("callback_id"):
            return Skip("the callback no longer exists")
        if callback.disabled_reason:
            return Skip(f"the callback is disabled: {callback.disabled_reason}")
        url = callback.backup_url if use_backup and callback.backup_url else callback.url
        body = unpack_body(content)
        headers = {
            "Content-Type": "application/json",
            "Authorization": basic_authorization(callback.user_name, store.password_of(callback)),
        }
        return HttpOutbound(
            method="POST",
            url=url,
            headers=headers,
            body=body,
            signing_secrets=store.signing_secrets_of(callback),
        )

    def limits(self, delivery: DeliveryModel) -> flow.Limits | None:
        return flow.from_content(json.loads(delivery.content))

    def target_gone(self, delivery: DeliveryModel, reason: str) -> None:
        content = json.loads(delivery.content)
        store.disable(
            delivery.tenant_id, delivery.target_id, str(content.get("callback_id")), reason
        )


def _validate_event(event_type: str, selection: str | None, payload: dict[str, Any]) -> None:
    rules.check_event_payload(event_type, payload)


registry.register_family(NotificationFamily())
registry.register_kind(FLUSH_KIND, handle_flush, handle_flush_dead_letter)
registry.register_event_validator(_validate_event)
