"""Notification callbacks and subscriptions in DynamoDB, and the transactions behind their rules.

Rules and how DynamoDB holds them (never a read-then-write):

- **Callback name unique per tenant**: the callback item's own key is ``(tenant, name)``; a create
  is a put conditioned on ``attribute_not_exists``. The record is its own name guard: a separate
  guard item would protect exactly the same key a second time.
- **Callback url unique per tenant**: a guard item ``notif-url#<tenant>#<sha256(normalised url)>``
  (hashed: a 2 KB url would not fit a partition key) owned by the callback's id, put with
  ``attribute_not_exists`` in the SAME transaction as the callback. An update that moves a
  callback to a new url puts the new guard and deletes the old one (conditioned on being its
  owner) in the same transaction as the record change, so a url is never held twice nor lost.
- **Updates do not overwrite each other**: every callback change is conditioned on the
  ``version`` it read and bumps it.
- **A callback in use cannot be deleted**: the callback carries ``subscription_count``; every
  subscription create/move/delete adjusts it in the same transaction as the subscription, and a
  callback delete is conditioned on ``subscription_count = 0``. A subscription create racing a
  callback delete: exactly one of them wins.
- **Secrets at rest**: the Basic-auth password and the signing secret are KMS-encrypted
  (``storage/secrets.py``) with the context {tenant, callback id, purpose}; the callback id is
  fresh for every create, so a ciphertext copied to another callback (or to a recreated one
  with the same name) does not decrypt.
- **Secret rotation**: the new signing secret replaces ``secret_enc`` and the old ciphertext
  moves to ``previous_secret_enc`` (signing until ``previous_secret_until``, 24 h) in one
  update conditioned on the ciphertext read, so two concurrent rotations cannot both win.

Buffered events (batching) live in the ``notification_buffer`` table:
``chalicelib/storage/notification_buffer.py``.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pynamodb.attributes import (
    BinaryAttribute,
    ListAttribute,
    NumberAttribute,
    UnicodeAttribute,
)
from pynamodb.exceptions import DoesNotExist, TransactWriteError, UpdateError
from pynamodb.models import Model

from chalicelib.domain.ids import new_id
from chalicelib.domain.notification import CallbackSpec, SubscriptionSpec, normalise_url
from chalicelib.domain.timeutil import fmt
from chalicelib.storage import quotas, secrets
from chalicelib.storage.base import make_meta, transaction
from chalicelib.storage.guards import GuardModel, read_guard

_MAX_ATTEMPTS = 50
SECRET_OVERLAP_SECONDS = 24 * 3600  # after a rotation the previous signing secret signs this long


class NotificationCallbackModel(Model):
    Meta = make_meta("notification_callbacks")

    tenant_id = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute(range_key=True)
    callback_id = UnicodeAttribute()
    url = UnicodeAttribute()
    backup_url = UnicodeAttribute(null=True)
    batch_size = NumberAttribute()
    rate_limit = NumberAttribute(null=True)  # flow control: deliveries per second
    max_in_flight = NumberAttribute(null=True)  # flow control: concurrent deliveries
    user_name = UnicodeAttribute()
    password_enc = BinaryAttribute(legacy_encoding=False)
    secret_enc = BinaryAttribute(legacy_encoding=False)
    previous_secret_enc = BinaryAttribute(null=True, legacy_encoding=False)
    previous_secret_until = UnicodeAttribute(null=True)  # the previous secret signs until then
    version = NumberAttribute(default=1)
    subscription_count = NumberAttribute(default=0)
    disabled_reason = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()


class NotificationSubscriptionModel(Model):
    """One partition per tenant: matching an event is one Query on it (never a Scan)."""

    Meta = make_meta("notification_subscriptions")

    tenant_id = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute(range_key=True)
    callback_name = UnicodeAttribute()
    callback_id = UnicodeAttribute()
    event_names: ListAttribute[str] = ListAttribute(of=UnicodeAttribute)  # type: ignore[arg-type]
    campaign_names: ListAttribute[str] = ListAttribute(of=UnicodeAttribute, default=list)  # type: ignore[arg-type]
    version = NumberAttribute(default=1)
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()


# --- errors -------------------------------------------------------------------------------


class NameTaken(Exception):
    """A callback (or subscription) with this name already exists for the tenant."""


class UrlTaken(Exception):
    """Another callback of the tenant already has this url."""


class NotFound(Exception):
    """The callback (or subscription) does not exist."""


class CallbackMissing(Exception):
    """A subscription names a callback that does not exist."""


class InUse(Exception):
    def __init__(self, subscriptions: list[str]) -> None:
        super().__init__(", ".join(subscriptions))
        self.subscriptions = subscriptions


class Changed(Exception):
    """The record changed between the read and the write; re-read and try again."""


class Contended(Exception):
    """Too many concurrent writers on one record; the client may retry."""


# --- transactions with named operations ---------------------------------------------------


class _Tx:
    """A write transaction whose failed conditions are reported by label.

    PynamoDB sends condition checks, deletes, puts and updates in that order whatever order they
    were added in; this keeps the labels in the same order so cancellation reasons map back.
    """

    _ORDER = ("check", "delete", "put", "update")

    def __init__(self) -> None:
        self._tx = transaction()
        self._labels: dict[str, list[str]] = {kind: [] for kind in self._ORDER}

    def delete(self, label: str, model: Model, condition: Any) -> None:
        self._tx.delete(model, condition=condition)
        self._labels["delete"].append(label)

    def put(self, label: str, model: Model, condition: Any) -> None:
        self._tx.save(model, condition=condition)
        self._labels["put"].append(label)

    def update(self, label: str, model: Model, actions: list[Any], condition: Any) -> None:
        self._tx.update(model, actions=actions, condition=condition)
        self._labels["update"].append(label)

    def commit(self) -> set[str]:
        """Empty set on success; else the labels whose condition failed."""
        try:
            with self._tx:
                pass
        except TransactWriteError as exc:
            labels = [label for kind in self._ORDER for label in self._labels[kind]]
            reasons = list(exc.cancellation_reasons or [])
            failed = {
                label
                for label, reason in zip(labels, reasons, strict=False)
                if reason is not None and getattr(reason, "code", None) == "ConditionalCheckFailed"
            }
            if not failed and exc.cause_response_code != "TransactionCanceledException":
                raise
            return failed or {"?"}  # cancelled for another reason (a conflict): retry
        return set()


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, min(0.05, 0.002 * (attempt + 1))))


# --- callbacks ----------------------------------------------------------------------------


def url_guard_key(tenant_id: str, url: str) -> str:
    digest = hashlib.sha256(normalise_url(url).encode("utf-8")).hexdigest()
    return f"notif-url#{tenant_id}#{digest}"


def secret_context(tenant_id: str, callback_id: str, purpose: str) -> dict[str, str]:
    return {"tenant": tenant_id, "callback": callback_id, "purpose": purpose}


def password_of(record: NotificationCallbackModel) -> str:
    return secrets.decrypt(
        record.password_enc, secret_context(record.tenant_id, record.callback_id, "password")
    )


def signing_secrets_of(
    record: NotificationCallbackModel, now: datetime | None = None
) -> tuple[str, ...]:
    """The current signing secret, plus the previous one while its overlap lasts (a delivery
    and a verify request are signed with each, so a receiver holding either one verifies)."""
    return secrets.signing_set(
        record.secret_enc,
        record.previous_secret_enc,
        record.previous_secret_until,
        secret_context(record.tenant_id, record.callback_id, "signing"),
        fmt(now or datetime.now(UTC)),
    )


def spec_of(record: NotificationCallbackModel, password: str = "") -> CallbackSpec:
    """The record as the domain sees it; the password stays out unless asked for."""
    return CallbackSpec(
        record.name,
        record.url,
        record.backup_url,
        int(record.batch_size),
        record.user_name,
        password,
        float(record.rate_limit) if record.rate_limit is not None else None,
        int(record.max_in_flight) if record.max_in_flight is not None else None,
    )


def get_callback(
    tenant_id: str, name: str, *, consistent: bool = True
) -> NotificationCallbackModel | None:
    try:
        return NotificationCallbackModel.get(tenant_id, name, consistent_read=consistent)
    except DoesNotExist:
        return None


def list_callbacks(tenant_id: str) -> Iterator[NotificationCallbackModel]:
    yield from NotificationCallbackModel.query(tenant_id, consistent_read=True)


def url_owner(tenant_id: str, url: str) -> str | None:
    """The id of the callback holding ``url`` right now (for an early, friendly answer only:
    the transaction is what enforces uniqueness)."""
    guard = read_guard(url_guard_key(tenant_id, url))
    return guard.owner if guard is not None else None


def create_callback(
    tenant_id: str, spec: CallbackSpec, signing_secret: str, now: datetime
) -> NotificationCallbackModel:
    """Callback + url guard in one transaction. Raises NameTaken / UrlTaken."""
    callback_id = new_id()
    record = NotificationCallbackModel(
        tenant_id,
        spec.name,
        callback_id=callback_id,
        url=spec.url,
        backup_url=spec.backup_url,
        batch_size=spec.batch_size,
        rate_limit=spec.rate_limit,
        max_in_flight=spec.max_in_flight,
        user_name=spec.user_name,
        password_enc=secrets.encrypt(
            spec.password, secret_context(tenant_id, callback_id, "password")
        ),
        secret_enc=secrets.encrypt(
            signing_secret, secret_context(tenant_id, callback_id, "signing")
        ),
        version=1,
        subscription_count=0,
        created_at=fmt(now),
        updated_at=fmt(now),
    )
    guard = GuardModel(url_guard_key(tenant_id, spec.url), owner=callback_id, version=1)
    slot = quotas.registration_slot(tenant_id, "notification")  # raises QuotaExceeded
    tx = _Tx()
    tx.put("record", record, NotificationCallbackModel.name.does_not_exist())
    tx.put("url", guard, GuardModel.key.does_not_exist())
    tx.update("quota", slot.model, slot.actions, slot.condition)  # the tenant's count, +1
    failed = tx.commit()
    if failed:
        stored = get_callback(tenant_id, spec.name, consistent=True)
        if stored is not None and stored.callback_id == callback_id:
            return record  # applied, its answer lost: the retry failed against its own write
    if "record" in failed:
        raise NameTaken(spec.name)
    if "url" in failed:
        raise UrlTaken(spec.url)
    if "quota" in failed:
        raise slot.exceeded()
    if failed:
        raise Changed(spec.name)
    return record


def update_callback(
    current: NotificationCallbackModel, spec: CallbackSpec, now: datetime
) -> NotificationCallbackModel:
    """Apply ``spec`` to the callback as it was read. Raises UrlTaken, or Changed when the
    callback changed (or went) since ``current`` was read: re-read and decide again."""
    tenant_id, callback_id = current.tenant_id, current.callback_id
    version = int(current.version)
    password_enc = secrets.encrypt(
        spec.password, secret_context(tenant_id, callback_id, "password")
    )
    actions: list[Any] = [
        NotificationCallbackModel.url.set(spec.url),
        NotificationCallbackModel.batch_size.set(spec.batch_size),
        NotificationCallbackModel.user_name.set(spec.user_name),
        NotificationCallbackModel.password_enc.set(password_enc),
        NotificationCallbackModel.version.set(version + 1),
        NotificationCallbackModel.updated_at.set(fmt(now)),
        # an update is how a client fixes a dead url
        NotificationCallbackModel.disabled_reason.remove(),
        NotificationCallbackModel.backup_url.set(spec.backup_url)
        if spec.backup_url
        else NotificationCallbackModel.backup_url.remove(),
        NotificationCallbackModel.rate_limit.set(spec.rate_limit)
        if spec.rate_limit is not None
        else NotificationCallbackModel.rate_limit.remove(),
        NotificationCallbackModel.max_in_flight.set(spec.max_in_flight)
        if spec.max_in_flight is not None
        else NotificationCallbackModel.max_in_flight.remove(),
    ]
    tx = _Tx()
    tx.update(
        "record",
        NotificationCallbackModel(tenant_id, current.name),
        actions,
        (NotificationCallbackModel.version == version)
        & (NotificationCallbackModel.callback_id == callback_id),
    )
    old_key, new_key = url_guard_key(tenant_id, current.url), url_guard_key(tenant_id, spec.url)
    if new_key != old_key:
        tx.put(
            "url",
            GuardModel(new_key, owner=callback_id, version=1),
            GuardModel.key.does_not_exist(),
        )
        tx.delete("old_url", GuardModel(old_key), GuardModel.owner == callback_id)
    failed = tx.commit()
    if "record" in failed or "?" in failed:
        raise Changed(current.name)
    if "url" in failed:
        raise UrlTaken(spec.url)
    if failed:
        raise Changed(current.name)
    fresh = get_callback(tenant_id, current.name)
    if fresh is None:
        raise Changed(current.name)
    return fresh


@dataclass(frozen=True)
class Rotated:
    signing_secret: str  # the new secret, plaintext: shown once, in the rotate response
    previous_secret_until: str  # the previous secret signs until then


def rotate_secret(
    current: NotificationCallbackModel,
    now: datetime,
    overlap_seconds: int = SECRET_OVERLAP_SECONDS,
) -> Rotated:
    """A new signing secret for the callback as it was read; the old one becomes the previous
    secret, signing alongside for ``overlap_seconds`` (a previous one still in its overlap is
    dropped). The Basic-auth password is not touched.

    Conditioned on the ciphertext read (and the callback id), so of two concurrent rotations
    exactly one wins; the other raises Changed (as does a callback deleted or re-created since
    ``current`` was read: the caller re-reads to tell which)."""
    tenant_id, callback_id = current.tenant_id, current.callback_id
    fresh = secrets.new_signing_secret()
    until = fmt(now + timedelta(seconds=overlap_seconds))
    try:
        NotificationCallbackModel(tenant_id, current.name).update(
            actions=[
                NotificationCallbackModel.previous_secret_enc.set(current.secret_enc),
                NotificationCallbackModel.previous_secret_until.set(until),
                NotificationCallbackModel.secret_enc.set(
                    secrets.encrypt(fresh, secret_context(tenant_id, callback_id, "signing"))
                ),
            ],
            condition=(NotificationCallbackModel.callback_id == callback_id)
            & (NotificationCallbackModel.secret_enc == current.secret_enc),
        )
    except UpdateError as exc:
        if exc.cause_response_code == "ConditionalCheckFailedException":
            raise Changed(current.name) from exc
        raise
    return Rotated(fresh, until)


def delete_callback(tenant_id: str, name: str) -> None:
    """Callback and its url guard, only while no subscription uses it (count == 0).

    Raises NotFound or InUse (naming the subscriptions)."""
    for attempt in range(_MAX_ATTEMPTS):
        current = get_callback(tenant_id, name)
        if current is None:
            raise NotFound(name)
        if int(current.subscription_count) > 0:
            raise InUse(subscription_names(tenant_id, name))
        tx = _Tx()
        tx.delete(
            "record",
            NotificationCallbackModel(tenant_id, name),
            (NotificationCallbackModel.version == int(current.version))
            & (NotificationCallbackModel.subscription_count == 0),
        )
        tx.delete(
            "url",
            GuardModel(url_guard_key(tenant_id, current.url)),
            GuardModel.owner == current.callback_id,
        )
        release = quotas.release_registration(tenant_id, "notification")  # the count, -1
        tx.update("quota", release.model, release.actions, None)
        if not tx.commit():
            return
        _backoff(attempt)
    raise Contended(name)


def disable(tenant_id: str, name: str, callback_id: str, reason: str) -> None:
    """Stop delivering (the receiver answered 410 Gone) until the client updates the callback."""
    try:
        NotificationCallbackModel(tenant_id, name).update(
            actions=[NotificationCallbackModel.disabled_reason.set(reason)],
            condition=NotificationCallbackModel.callback_id == callback_id,
        )
    except UpdateError as exc:
        if exc.cause_response_code != "ConditionalCheckFailedException":
            raise


# --- subscriptions ------------------------------------------------------------------------


def subscription_spec(record: NotificationSubscriptionModel) -> SubscriptionSpec:
    return SubscriptionSpec(
        record.name,
        record.callback_name,
        tuple(record.event_names or ()),
        tuple(record.campaign_names or ()),
    )


def get_subscription(tenant_id: str, name: str) -> NotificationSubscriptionModel | None:
    try:
        return NotificationSubscriptionModel.get(tenant_id, name, consistent_read=True)
    except DoesNotExist:
        return None


def list_subscriptions(tenant_id: str) -> Iterator[NotificationSubscriptionModel]:
    """The tenant's subscriptions: one consistent Query, so a subscription created a moment
    ago already receives the next event."""
    yield from NotificationSubscriptionModel.query(tenant_id, consistent_read=True)


def subscriptions_of(tenant_id: str, callback_name: str) -> list[NotificationSubscriptionModel]:
    return [s for s in list_subscriptions(tenant_id) if s.callback_name == callback_name]


def subscription_names(tenant_id: str, callback_name: str) -> list[str]:
    return [s.name for s in subscriptions_of(tenant_id, callback_name)]


def _count(
    tx: _Tx, label: str, tenant_id: str, callback: NotificationCallbackModel, delta: int
) -> None:
    tx.update(
        label,
        NotificationCallbackModel(tenant_id, callback.name),
        [NotificationCallbackModel.subscription_count.add(delta)],
        NotificationCallbackModel.callback_id == callback.callback_id,
    )


def create_subscription(
    tenant_id: str, spec: SubscriptionSpec, now: datetime
) -> NotificationSubscriptionModel:
    """Subscription + its callback's count in one transaction.

    Raises NameTaken (checked first) or CallbackMissing."""
    for attempt in range(_MAX_ATTEMPTS):
        callback = get_callback(tenant_id, spec.callback_name)
        if callback is None:
            if get_subscription(tenant_id, spec.name) is not None:
                raise NameTaken(spec.name)
            raise CallbackMissing(spec.callback_name)
        record = NotificationSubscriptionModel(
            tenant_id,
            spec.name,
            callback_name=spec.callback_name,
            callback_id=callback.callback_id,
            event_names=list(spec.event_names),
            campaign_names=list(spec.campaign_names),
            version=1,
            created_at=fmt(now),
            updated_at=fmt(now),
        )
        tx = _Tx()
        tx.put("record", record, NotificationSubscriptionModel.name.does_not_exist())
        _count(tx, "callback", tenant_id, callback, 1)
        failed = tx.commit()
        if not failed:
            return record
        if "record" in failed:
            raise NameTaken(spec.name)
        _backoff(attempt)  # the callback was deleted or recreated meanwhile: look again
    raise Contended(spec.name)


def update_subscription(
    current: NotificationSubscriptionModel, spec: SubscriptionSpec, now: datetime
) -> NotificationSubscriptionModel:
    """Apply ``spec``; moving to another callback moves one count between the two callbacks.

    Raises CallbackMissing, or Changed when the subscription changed or went since read."""
    tenant_id = current.tenant_id
    callback_id = current.callback_id
    target: NotificationCallbackModel | None = None
    if spec.callback_name != current.callback_name:
        target = get_callback(tenant_id, spec.callback_name)
        if target is None:
            raise CallbackMissing(spec.callback_name)
        callback_id = target.callback_id
    version = int(current.version)
    tx = _Tx()
    tx.update(
        "record",
        NotificationSubscriptionModel(tenant_id, current.name),
        [
            NotificationSubscriptionModel.callback_name.set(spec.callback_name),
            NotificationSubscriptionModel.callback_id.set(callback_id),
            NotificationSubscriptionModel.event_names.set(list(spec.event_names)),
            NotificationSubscriptionModel.campaign_names.set(list(spec.campaign_names)),
            NotificationSubscriptionModel.version.set(version + 1),
            NotificationSubscriptionModel.updated_at.set(fmt(now)),
        ],
        NotificationSubscriptionModel.version == version,
    )
    if target is not None:
        old = NotificationCallbackModel(
            tenant_id, current.callback_name, callback_id=current.callback_id
        )
        _count(tx, "old_callback", tenant_id, old, -1)
        _count(tx, "callback", tenant_id, target, 1)
    failed = tx.commit()
    if failed:
        raise Changed(current.name)
    fresh = get_subscription(tenant_id, current.name)
    if fresh is None:
        raise Changed(current.name)
    return fresh


def delete_subscription(tenant_id: str, name: str) -> None:
    """Raises NotFound. The callback's count drops in the same transaction."""
    for attempt in range(_MAX_ATTEMPTS):
        current = get_subscription(tenant_id, name)
        if current is None:
            raise NotFound(name)
        tx = _Tx()
        tx.delete(
            "record",
            NotificationSubscriptionModel(tenant_id, name),
            NotificationSubscriptionModel.version == int(current.version),
        )
        old = NotificationCallbackModel(
            tenant_id, current.callback_name, callback_id=current.callback_id
        )
        _count(tx, "callback", tenant_id, old, -1)
        if not tx.commit():
            return
        _backoff(attempt)
    raise Contended(name)
