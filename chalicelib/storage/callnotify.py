"""Call notifiers in DynamoDB: one partition per customer, one item per notifier.

The key is (customer_id, notify_id), so every read the API and the delivery engine make is a
GetItem or a Query on the customer's partition, never a Scan. Every write is conditional on the
item's existence (create: absent; update, delete, disable: present), so a notifier deleted
concurrently with an update is never resurrected by it.

Each notifier has a Standard Webhooks signing secret, KMS-encrypted (``storage/secrets.py``) and
bound to (customer, notifier); the plaintext is returned to the client once, at create, and
once more for each rotation (``rotate_secret``: the old ciphertext moves to
``previous_secret_enc`` and signs alongside until ``previous_secret_until``, 24 h; the update is
conditioned on the ciphertext read, so two concurrent rotations cannot both win).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pynamodb.attributes import BinaryAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist, TransactWriteError, UpdateError
from pynamodb.expressions.update import Action
from pynamodb.models import Model

from chalicelib.domain.ids import is_id, new_id
from chalicelib.domain.timeutil import fmt
from chalicelib.storage import quotas, secrets
from chalicelib.storage.base import cancelled_by_condition, make_meta, transaction

_CONDITION_FAILED = "ConditionalCheckFailedException"
SECRET_OVERLAP_SECONDS = 24 * 3600  # after a rotation the previous signing secret signs this long


class CallNotifierModel(Model):
    Meta = make_meta("callnotify_notifiers")

    customer_id = UnicodeAttribute(hash_key=True)
    notify_id = UnicodeAttribute(range_key=True)
    url = UnicodeAttribute()
    method = UnicodeAttribute()
    selection = UnicodeAttribute()
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()
    secret_enc = BinaryAttribute(legacy_encoding=False)
    previous_secret_enc = BinaryAttribute(null=True, legacy_encoding=False)
    previous_secret_until = UnicodeAttribute(null=True)  # the previous secret signs until then
    disabled_reason = UnicodeAttribute(null=True)


@dataclass(frozen=True)
class Created:
    notifier: CallNotifierModel
    signing_secret: str


@dataclass(frozen=True)
class Rotated:
    signing_secret: str  # the new secret, plaintext: shown once, in the rotate response
    previous_secret_until: str  # the previous secret signs until then


class Changed(Exception):
    """The notifier's secret changed (or the notifier went) since it was read."""


def secret_context(customer_id: str, notify_id: str) -> dict[str, str]:
    """KMS encryption context: a ciphertext copied onto another notifier does not decrypt."""
    return {"tenant": customer_id, "owner": notify_id, "family": "callnotify"}


def signing_secrets(notifier: CallNotifierModel, now: datetime | None = None) -> tuple[str, ...]:
    """The current signing secret, plus the previous one while its overlap lasts."""
    return secrets.signing_set(
        notifier.secret_enc,
        notifier.previous_secret_enc,
        notifier.previous_secret_until,
        secret_context(notifier.customer_id, notifier.notify_id),
        fmt(now or datetime.now(UTC)),
    )


def create(customer_id: str, fields: dict[str, str], now: datetime) -> Created:
    """Store a new notifier with a fresh id and signing secret (``fields``: url, method,
    selection, already validated)."""
    notify_id = new_id()
    secret = secrets.new_signing_secret()
    record = CallNotifierModel(
        customer_id,
        notify_id,
        url=fields["url"],
        method=fields["method"],
        selection=fields["selection"],
        created_at=fmt(now),
        updated_at=fmt(now),
        secret_enc=secrets.encrypt(secret, secret_context(customer_id, notify_id)),
    )
    # A 96-bit random id does not collide in practice; the condition makes sure a collision
    # would fail loudly instead of overwriting another notifier. The tenant's notifier count
    # goes up in the same transaction, on condition it is under the limit.
    slot = quotas.registration_slot(customer_id, "callnotify")  # raises QuotaExceeded

    def write() -> None:
        with transaction() as tx:
            tx.save(record, condition=CallNotifierModel.notify_id.does_not_exist())
            tx.update(slot.model, actions=slot.actions, condition=slot.condition)

    try:
        quotas.retrying_conflicts(write)
    except TransactWriteError as exc:
        if cancelled_by_condition(exc) and get(customer_id, notify_id, consistent=True):
            return Created(record, secret)  # applied, its answer lost: the retry hit itself
        if cancelled_by_condition(exc, index=1):
            raise slot.exceeded() from exc
        raise
    return Created(record, secret)


def get(customer_id: str, notify_id: str, *, consistent: bool = False) -> CallNotifierModel | None:
    if not is_id(notify_id):
        return None
    try:
        return CallNotifierModel.get(customer_id, notify_id, consistent_read=consistent)
    except DoesNotExist:
        return None


def list_for(customer_id: str, *, consistent: bool = True) -> Iterator[CallNotifierModel]:
    """A customer's notifiers, oldest id order (a Query on the customer's partition)."""
    yield from CallNotifierModel.query(customer_id, consistent_read=consistent)


def update(
    customer_id: str, notify_id: str, fields: dict[str, str], now: datetime
) -> CallNotifierModel | None:
    """Apply ``fields`` (any of url, method, selection) and re-enable the notifier.

    Conditional on the notifier existing, so an update racing a delete never re-creates it;
    returns None when it does not exist. Updating a notifier that was disabled (its receiver
    answered 410 Gone) enables it again: the client has looked at it.
    """
    if not is_id(notify_id):
        return None
    record = CallNotifierModel(customer_id, notify_id)
    attributes = {
        "url": CallNotifierModel.url,
        "method": CallNotifierModel.method,
        "selection": CallNotifierModel.selection,
    }
    actions: list[Action] = [
        attributes[name].set(value) for name, value in fields.items() if name in attributes
    ]
    actions.append(CallNotifierModel.updated_at.set(fmt(now)))
    actions.append(CallNotifierModel.disabled_reason.remove())
    try:
        record.update(actions=actions, condition=CallNotifierModel.notify_id.exists())
    except UpdateError as exc:
        if exc.cause_response_code == _CONDITION_FAILED:
            return None
        raise
    return record


def rotate_secret(
    current: CallNotifierModel, now: datetime, overlap_seconds: int = SECRET_OVERLAP_SECONDS
) -> Rotated:
    """A new signing secret for the notifier as it was read; the old one signs alongside for
    ``overlap_seconds`` (a previous one still in its overlap is dropped). Any protocol: a
    tcp/udp notifier's secret signs nothing until its url becomes http(s), but it has one.

    Raises Changed when the secret was rotated concurrently or the notifier was deleted since
    ``current`` was read (the update is conditioned on the ciphertext read)."""
    customer_id, notify_id = current.customer_id, current.notify_id
    fresh = secrets.new_signing_secret()
    until = fmt(now + timedelta(seconds=overlap_seconds))
    try:
        CallNotifierModel(customer_id, notify_id).update(
            actions=[
                CallNotifierModel.previous_secret_enc.set(current.secret_enc),
                CallNotifierModel.previous_secret_until.set(until),
                CallNotifierModel.secret_enc.set(
                    secrets.encrypt(fresh, secret_context(customer_id, notify_id))
                ),
            ],
            condition=CallNotifierModel.secret_enc == current.secret_enc,
        )
    except UpdateError as exc:
        if exc.cause_response_code == _CONDITION_FAILED:
            raise Changed(notify_id) from exc
        raise
    return Rotated(fresh, until)


def delete(customer_id: str, notify_id: str) -> bool:
    """Delete a notifier; False when there was none (conditional, so exactly one caller wins)."""
    if not is_id(notify_id):
        return False
    release = quotas.release_registration(customer_id, "callnotify")

    def write() -> None:
        with transaction() as tx:  # the tenant's notifier count goes down with the delete
            tx.delete(
                CallNotifierModel(customer_id, notify_id),
                condition=CallNotifierModel.notify_id.exists(),
            )
            tx.update(release.model, actions=release.actions)

    try:
        quotas.retrying_conflicts(write)
    except TransactWriteError as exc:
        if cancelled_by_condition(exc, index=0):
            return False
        raise
    return True


def disable(customer_id: str, notify_id: str, reason: str) -> bool:
    """Stop delivering to a notifier whose receiver answered 410 Gone; False if it is gone."""
    try:
        CallNotifierModel(customer_id, notify_id).update(
            actions=[CallNotifierModel.disabled_reason.set(reason)],
            condition=CallNotifierModel.notify_id.exists(),
        )
    except UpdateError as exc:
        if exc.cause_response_code == _CONDITION_FAILED:
            return False
        raise
    return True
