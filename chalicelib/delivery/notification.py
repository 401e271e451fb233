"""The notification callbacks family in the delivery engine: buffered, batched deliveries.

An event whose type is in the event list is not fanned out one delivery per target. ``buffer``
stores it once per subscribed callback, and a ``notification-flush`` work message, due at the
end of a short window (``RINGBACK_BATCH_WINDOW`` seconds, default 5), cuts the buffered events into
batches of at most ``batchSize`` events. Each batch is ONE engine delivery (``deliver_direct``),
so retries, the backup url after 3 failed attempts, signatures, the attempts log, dead letters
and replay are the engine's, unchanged. ``prepare`` renders the batch as a JSON array of event
objects with ``Authorization: Basic`` from the stored (decrypted) credentials.

Buffering one event for one callback (``NotificationFamily.buffer`` -> ``buffer_items``). The
buffer is cut into **generations** (``chalicelib/storage/notification_buffer.py``): each has
its own partition and its own flush message; new events go to the callback's current one
until its flush starts.

  B1. find the current generation: the one this process last wrote into, or the marker
      row's unless the marker says its flush started (read again once the known one's flush
      is due: the marker may name a newer one);
  B2. put the item into that generation, then read the generation's state row (consistently):
      no ``started_at`` means its flush has not begun, and since the flush marks itself
      started before it reads anything, its reads will see the item. Done. A generation
      whose flush is late (a backlog) keeps taking events until the flush really starts, so
      a late flush sends fuller batches, not more of them;
  B3. if it had started (the item is deleted from it again, so a flush that did not read it
      yet will not send it twice), try the marker's generation if that is another one; with
      none left, start a new generation: put the item into it, send its flush message due at
      now + window, and move the marker to it (conditioned on the marker read; if another
      writer moved it first, both generations are flushed, each by its own message).

Why nothing is lost wherever the worker (API Lambda) dies:

- before B2 or B3 completes: ``POST /events`` had not answered 202, so the publisher retries
  (with its Idempotency-Key the repeat resumes the same event id) and buffers it again; an
  item left in a generation that was flushed already is sent twice at worst (every event
  object carries ``eventId``; the flush drops repeated event ids within a batch).
- a new generation's flush message is sent only after its first item is stored, so it finds
  at least that item; a marker that was not moved only means the next writer starts a new
  generation of its own.
- nothing in B1-B3 depends on clocks agreeing: the due time only says when to read the
  marker again; whether a flush has begun is read from DynamoDB.

A flush of one generation (``handle_flush``; its message carries the generation and a
``flush_id``, the same on every redelivery) repeats, until the generation is exhausted or a
budget (``FLUSH_MAX_BATCHES``) is spent:

  F1. mark the generation started (from now on writers go elsewhere) and read its state
      row, in one write; nothing is ever added behind the flush after that. Then mark the
      marker closed if it still names this generation (the next event opens a new one
      without trying this one first: a hint, like the due time);
  F2. if a batch is pending and this flush cut it, resume it (F3 with its item keys); if
      another flush cut it, stop: that flush is working, or its message will come back (SQS
      redelivery, or the dead-letter handler re-sending it with the same id);
  F3. else Query the oldest items after the cursor (at most ``batchSize``, at most
      ``MAX_BATCH_BYTES`` of JSON), derive the delivery id from their keys, and record it as
      the pending batch with this flush as owner (conditional: only one batch may be pending,
      and only from the cursor read);
  F4. ``deliver_direct`` the batch: a conditional put of the delivery, then its first work
      message (a repeat finds the delivery and only re-sends the message);
  F5. move the cursor past the batch and clear the pending batch, in one write (conditioned
      on it being this one); the items stay until their TTL, never deleted one by one;
  then, if items remain after the budget, send the next flush of the generation at once.

Why a redelivered flush cannot lose or duplicate a batch:

- dies after F3, or in F4/F5: the message comes back (SQS redelivery, or the dead-letter
  handler sends it again a minute later with the same ``flush_id``); F2 finds its own pending
  batch and redoes F4-F5 with the same delivery id and the recorded item keys, so the
  delivery is found, not created twice, and the cursor only moves once the delivery exists.
- the pending batch is recorded as its item keys BEFORE the delivery is created, so a repeat
  sends exactly those items: a writer that found the generation started after its write may
  have left its item (then deleted again) inside the batch's key range meanwhile.
- dies after F5, before the next query or the next flush message: the message comes back and
  carries on from the cursor.
- a flush that stops at F2 because another one owns the pending batch loses nothing: the
  owner carries on from the cursor after it; if the owner died, its own message resumes.

A flush message without a generation (sent before generations existed) empties the callback's
old partition the old way: the same steps, but each batch's items are deleted in F5 and the
next batch is the oldest items left.

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
from dataclasses import dataclass
from typing import Any

from chalicelib.delivery import ingest, queue, registry
from chalicelib.delivery.registry import HttpOutbound, Outbound, PublishedEvent, Skip, Target
from chalicelib.domain import flow
from chalicelib.domain import notification as rules
from chalicelib.domain.ids import new_id
from chalicelib.storage import deliveries, read_cache
from chalicelib.storage import notification as store
from chalicelib.storage import notification_buffer as buffers
from chalicelib.storage.deliveries import DeliveryModel

log = logging.getLogger("ringback.notification")

FAMILY = "notification"
FLUSH_KIND = "notification-flush"
DEFAULT_WINDOW = 5.0
MAX_WINDOW = 900.0  # SQS DelaySeconds limit
MAX_BATCH_BYTES = 300_000  # a delivery record (content + attempts log) must stay under 400 KB
FLUSH_MAX_BATCHES = 25  # per flush message; the rest continues in the next one at once
DEAD_LETTER_RETRY = 60.0


def batch_window() -> float:
    """Seconds a buffered event waits for others (``RINGBACK_BATCH_WINDOW``, default 5)."""
    raw = os.environ.get("RINGBACK_BATCH_WINDOW", "").strip()
    try:
        value = float(raw) if raw else DEFAULT_WINDOW
    except ValueError:
        value = DEFAULT_WINDOW
    return min(max(value, 0.0), MAX_WINDOW)


def flush_message(
    tenant_id: str, callback_id: str, callback_name: str, generation: str
) -> dict[str, Any]:
    """``flush_id`` names this flush: the same on every redelivery of the message. A message
    without ``generation`` (sent before generations) empties the callback's old partition."""
    return {
        "kind": FLUSH_KIND,
        "tenant_id": tenant_id,
        "callback_id": callback_id,
        "callback_name": callback_name,
        "generation": generation,
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
    subscriptions = read_cache.once(  # once per request, however many events it carries
        ("notification", event.tenant_id),
        lambda: list(store.list_subscriptions(event.tenant_id)),
    )
    for sub in subscriptions:
        if rules.subscription_matches(
            store.subscription_spec(sub), event.event_type, campaign_name
        ):
            found.setdefault(sub.callback_id, sub.callback_name)
    return found


@dataclass(frozen=True)
class _Known:
    """A generation this process wrote into (or read from the marker), and when to look at the
    marker again: once its flush is due, the marker may already name the next generation."""

    generation: str
    look_again_at: float


_known: dict[tuple[str, str], _Known] = {}
_known_lock = threading.Lock()
_KNOWN_LIMIT = 10_000
MARKER_REREAD = 1.0  # seconds between marker reads while a due generation is still open


def _remember(key: tuple[str, str], known: _Known | None) -> None:
    with _known_lock:
        if known is None:
            _known.pop(key, None)
            return
        if len(_known) >= _KNOWN_LIMIT:
            _known.clear()
        _known[key] = known


def _from_marker(tenant_id: str, callback_id: str) -> tuple[_Known | None, str | None]:
    """The marker's generation if its flush has not started (as far as the marker knows), and
    the marker's generation as read (for the conditional move)."""
    marker = buffers.read_marker(tenant_id, callback_id)
    if not marker.generation or marker.closed:
        return None, marker.generation
    due = marker.flush_at if marker.flush_at is not None else 0.0
    return _Known(marker.generation, max(due, time.time() + MARKER_REREAD)), marker.generation


def buffer_items(
    tenant_id: str, callback_id: str, callback_name: str, items: Sequence[buffers.Buffered]
) -> None:
    """Steps B1-B3: store ``items`` for one callback where a flush that has not started will
    read them (``POST /events`` stores one; bulk loads many)."""
    key = (tenant_id, callback_id)
    with _known_lock:
        known = _known.get(key)
    if known is None or known.look_again_at <= time.time():
        known, seen = _from_marker(tenant_id, callback_id)
    else:
        seen = known.generation
    tried: list[str] = []
    while known is not None and known.generation not in tried and len(tried) < 3:
        ref = buffers.BufferRef(tenant_id, callback_id, known.generation)
        buffers.put_items(ref, items)
        if not buffers.has_started(ref):
            _remember(key, known)
            return
        # its flush started before our write was seen: the flush may or may not read it; the
        # next generation takes the events for certain (and this copy is dropped again)
        tried.append(known.generation)
        _remember(key, None)
        buffers.delete_items(ref, [item.item_key for item in items])
        known, seen = _from_marker(tenant_id, callback_id)
    generation = new_id()
    flush_at = time.time() + batch_window()
    buffers.put_items(buffers.BufferRef(tenant_id, callback_id, generation), items)
    queue.send_at(
        flush_message(tenant_id, callback_id, callback_name, generation),
        flush_at,
        f"flush.{callback_id}.{generation}",
    )
    if buffers.move_marker(tenant_id, callback_id, generation, flush_at, seen):
        _remember(key, _Known(generation, flush_at))
    else:
        _remember(key, None)  # another writer's generation is the marker's: read it next time


def buffered_item(event: PublishedEvent, at_ms: int) -> buffers.Buffered:
    obj = rules.event_object(event.event_id, event.event_type, event.payload)
    return buffers.Buffered(
        buffers.item_key(at_ms, event.event_id), event.event_id, buffers.encode_event(obj)
    )


# --- flushing -----------------------------------------------------------------------------


def _take(items: Sequence[buffers.Buffered], limit_bytes: int) -> list[buffers.Buffered]:
    taken: list[buffers.Buffered] = []
    size = 2
    for item in items:
        size += len(item.body) + 1
        if taken and size > limit_bytes:
            break
        taken.append(item)
    return taken


def _unique(items: Sequence[buffers.Buffered]) -> list[buffers.Buffered]:
    """The batch's items, oldest first, each event id once."""
    seen: set[str] = set()
    unique: list[buffers.Buffered] = []
    for item in items:
        if item.event_id not in seen:
            seen.add(item.event_id)
            unique.append(item)
    return unique


def batch_body(items: Sequence[buffers.Buffered]) -> str:
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
    ref: buffers.BufferRef, state: buffers.State | None, batch_size: int, flush_id: str
) -> tuple[str, list[str], list[buffers.Buffered]] | _Busy | None:
    """F2/F3: our pending batch, or a new one claimed as pending; BUSY when another flush owns
    the pending batch; None when nothing is left. ``state`` is the state row as this flush
    last knew it (None: read it)."""
    for _ in range(3):
        if state is None:
            state = buffers.read_state(ref)
        if state.pending_delivery:
            if state.pending_owner not in (None, flush_id):
                return BUSY
            keys = list(state.pending_items)
            return state.pending_delivery, keys, buffers.get_buffered(ref, keys)
        found = buffers.oldest(ref, state.cursor, batch_size)
        items = _take(found, MAX_BATCH_BYTES)
        if not items:
            return None
        keys = [item.item_key for item in items]
        delivery_id = batch_delivery_id(ref.tenant_id, ref.callback_id, keys)
        if buffers.set_pending(ref, delivery_id, keys, flush_id, state.cursor):
            return delivery_id, keys, items
        state = None  # another run of this flush got there first: look again
    raise RuntimeError(f"buffer {ref.key}: pending batch kept changing")


def _deliver(
    tenant_id: str,
    callback_id: str,
    callback_name: str,
    shown_target: str,
    delivery_id: str,
    items: Sequence[buffers.Buffered],
    limits: dict[str, Any] | None = None,
) -> None:
    """F4: the batch's delivery (created once) and its first work message."""
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


def flush(
    tenant_id: str, callback_id: str, callback_name: str, flush_id: str, generation: str = ""
) -> int:
    """Cut and hand over batches until the generation is empty or the budget is spent;
    returns the number of batches. Sends the next flush when items remain."""
    ref = buffers.BufferRef(tenant_id, callback_id, generation)
    state: buffers.State | None = buffers.start(ref, time.time())
    callback = store.get_callback(tenant_id, callback_name)
    live = callback is not None and callback.callback_id == callback_id
    batch_size = int(callback.batch_size) if callback is not None and live else rules.MAX_BATCH_SIZE
    shown = callback.url if callback is not None and live else f"(deleted callback {callback_name})"
    limits = limits_content(callback) if callback is not None and live else {}
    batches = 0
    while batches < FLUSH_MAX_BATCHES:
        cut = _cut_batch(ref, state, batch_size, flush_id)
        if cut is None or isinstance(cut, _Busy):
            return batches
        delivery_id, keys, items = cut
        _deliver(tenant_id, callback_id, callback_name, shown, delivery_id, items, limits)
        if buffers.finish_batch(ref, delivery_id, keys) and ref.by_cursor:
            state = buffers.State(cursor=max(keys))  # what our own write left there
        else:
            state = None
        batches += 1
    cursor = buffers.read_state(ref).cursor if ref.by_cursor else None
    if buffers.oldest(ref, cursor, 1):
        queue.send_now([flush_message(tenant_id, callback_id, callback_name, generation)])
    return batches


def handle_flush(message: dict[str, Any]) -> None:
    flush(
        str(message["tenant_id"]),
        str(message["callback_id"]),
        str(message["callback_name"]),
        str(message.get("flush_id") or ""),
        str(message.get("generation") or ""),
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
