"""Campaign registrations in DynamoDB, and the transaction that holds the overlap rule.

Each (company, event_type) has a guard item holding the date range of every registration that
can still be active (ended ones are pruned) and a version. A create reads the guard with a
consistent read, checks the part of the new range from now on against it, and writes the
registration and the guard's next version in one transaction conditioned on the version it read.
Two concurrent creates cannot both win: the second one's condition fails, it re-reads, and now
sees the first range. A GSI cannot serve this check: it is only eventually consistent.

Every write of the guard (create and delete) rewrites its ranges without those that ended before
now, under the same version condition, so the guard stays as small as the set of live and future
registrations: a company can create and delete registrations forever without the item growing
towards DynamoDB's 400 KB limit. Writers' clocks differ by milliseconds at most; a range pruned
by a writer slightly ahead could have overlapped a new range only in that past sliver.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from pynamodb.attributes import BinaryAttribute, BooleanAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist, TransactWriteError, UpdateError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from chalicelib.domain.campaign import (
    RegistrationInput,
    conflict_from_now,
    encode_range,
    still_open,
)
from chalicelib.domain.ids import new_id
from chalicelib.domain.timeutil import fmt
from chalicelib.storage import quotas, secrets
from chalicelib.storage.base import cancelled_by_condition, make_meta, transaction
from chalicelib.storage.guards import GuardModel, read_guard

_MAX_ATTEMPTS = 200
_QUOTA_INDEX = 2  # in the create transaction: put record (0), update guard (1), count (2)


class ByCompanyEvent(GlobalSecondaryIndex["CampaignRegistrationModel"]):
    """Delivery-time matching: registrations of one company for one event type."""

    class Meta:
        index_name = "by_company_event"
        projection = AllProjection()

    company_event = UnicodeAttribute(hash_key=True)
    start_date = UnicodeAttribute(range_key=True)


class CampaignRegistrationModel(Model):
    Meta = make_meta("campaign_registrations")

    company_id = UnicodeAttribute(hash_key=True)
    callback_id = UnicodeAttribute(range_key=True)
    company_event = UnicodeAttribute()
    event_type = UnicodeAttribute()
    campaign_id = UnicodeAttribute(null=True)
    destination_url = UnicodeAttribute()
    backup_url = UnicodeAttribute(null=True)
    destination_method = UnicodeAttribute()
    content_type = UnicodeAttribute()
    start_date = UnicodeAttribute()
    end_date = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()
    deleted = BooleanAttribute(default=False)
    secret_enc = BinaryAttribute(legacy_encoding=False)
    previous_secret_enc = BinaryAttribute(null=True, legacy_encoding=False)
    previous_secret_until = UnicodeAttribute(null=True)
    disabled_reason = UnicodeAttribute(null=True)

    by_company_event = ByCompanyEvent()


class OverlapConflict(Exception):
    def __init__(self, callback_id: str) -> None:
        super().__init__(f"overlaps registration {callback_id}")
        self.callback_id = callback_id


class Contended(Exception):
    """Too many concurrent writers on one guard; the caller may retry."""


@dataclass(frozen=True)
class Created:
    registration: CampaignRegistrationModel
    signing_secret: str


def guard_key(company_id: str, event_type: str) -> str:
    return f"campaign-range#{company_id}#{event_type}"


def secret_context(company_id: str, callback_id: str) -> dict[str, str]:
    return {"tenant": company_id, "owner": callback_id}


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, min(0.05, 0.002 * (attempt + 1))))


def create_registration(company_id: str, spec: RegistrationInput, now: datetime) -> Created:
    callback_id = new_id()
    start, end = fmt(spec.start), fmt(spec.end) if spec.end else None
    signing_secret = secrets.new_signing_secret()
    record = CampaignRegistrationModel(
        company_id,
        callback_id,
        company_event=f"{company_id}#{spec.event_type}",
        event_type=spec.event_type,
        campaign_id=spec.campaign_id,
        destination_url=spec.destination_url,
        backup_url=spec.backup_url,
        destination_method=spec.destination_method,
        content_type=spec.content_type,
        start_date=start,
        end_date=end,
        created_at=fmt(now),
        updated_at=fmt(now),
        deleted=False,
        secret_enc=secrets.encrypt(signing_secret, secret_context(company_id, callback_id)),
    )
    key = guard_key(company_id, spec.event_type)
    now_s = fmt(now)
    slot = quotas.registration_slot(company_id, "campaign")  # raises QuotaExceeded
    for attempt in range(_MAX_ATTEMPTS):
        guard = read_guard(key)
        ranges = still_open(_ranges_of(guard), now_s)
        conflict = conflict_from_now(ranges, start, end, now_s)
        if conflict is not None:
            raise OverlapConflict(conflict)
        if end is None or end > now_s:  # a range already over never enters the guard
            ranges[callback_id] = encode_range(start, end)
        try:
            _write_with_guard(key, guard, ranges, record, new=True, quota=slot)
        except TransactWriteError as exc:
            if cancelled_by_condition(exc) and get_registration(company_id, callback_id):
                break  # applied, its answer lost: the retry failed against its own write
            if cancelled_by_condition(exc, index=_QUOTA_INDEX):  # the tenant's count is full
                raise slot.exceeded() from exc
            if cancelled_by_condition(exc) or quotas.conflicted(exc):
                _backoff(attempt)
                continue
            raise
        return Created(record, signing_secret)
    else:
        raise Contended(key)
    return Created(record, signing_secret)


def _ranges_of(guard: GuardModel | None) -> dict[str, str]:
    return dict(guard.ranges.as_dict()) if guard and guard.ranges else {}


def _write_with_guard(
    key: str,
    guard: GuardModel | None,
    ranges: dict[str, str],
    record: CampaignRegistrationModel,
    *,
    new: bool,
    quota: quotas.Slot | quotas.Release,
) -> None:
    """Guard, record and the tenant's registration count (+1 on create with its limit as the
    condition, -1 on end), all in one transaction."""
    version = guard.version if guard else 0
    condition = GuardModel.version == version if guard else GuardModel.key.does_not_exist()
    with transaction() as tx:
        tx.update(
            GuardModel(key),
            actions=[GuardModel.version.set(version + 1), GuardModel.ranges.set(ranges)],
            condition=condition,
        )
        if new:
            tx.save(record, condition=CampaignRegistrationModel.callback_id.does_not_exist())
        else:
            tx.update(
                record,
                actions=[
                    CampaignRegistrationModel.start_date.set(record.start_date),
                    CampaignRegistrationModel.end_date.set(record.end_date),
                    CampaignRegistrationModel.updated_at.set(record.updated_at),
                    CampaignRegistrationModel.deleted.set(True),
                ],
                condition=CampaignRegistrationModel.deleted == False,  # noqa: E712
            )
        if isinstance(quota, quotas.Slot):
            tx.update(quota.model, actions=quota.actions, condition=quota.condition)
        else:
            tx.update(quota.model, actions=quota.actions)


def get_registration(
    company_id: str, callback_id: str, *, consistent: bool = False
) -> CampaignRegistrationModel | None:
    try:
        return CampaignRegistrationModel.get(company_id, callback_id, consistent_read=consistent)
    except DoesNotExist:
        return None


def end_registration(
    company_id: str, callback_id: str, now: datetime
) -> CampaignRegistrationModel | None:
    """The seed's DELETE: the range ends now (a future start becomes now too); marks inactive.

    Ending an already deleted registration changes nothing and returns it as it is.
    """
    now_s = fmt(now)
    for attempt in range(_MAX_ATTEMPTS):
        record = get_registration(company_id, callback_id, consistent=True)
        if record is None or record.deleted:
            return record
        key = guard_key(company_id, record.event_type)
        guard = read_guard(key)
        record.start_date = min(record.start_date, now_s)
        record.end_date = now_s if record.end_date is None else min(record.end_date, now_s)
        record.updated_at = now_s
        # The range now ends by ``now``: pruning drops it along with every other ended one.
        ranges = _ranges_of(guard)
        ranges[callback_id] = encode_range(record.start_date, record.end_date)
        ranges = still_open(ranges, now_s)
        try:
            release = quotas.release_registration(company_id, "campaign")
            _write_with_guard(key, guard, ranges, record, new=False, quota=release)
        except TransactWriteError as exc:
            if cancelled_by_condition(exc) or quotas.conflicted(exc):
                _backoff(attempt)
                continue
            raise
        record.deleted = True
        return record
    raise Contended(callback_id)


def list_registrations(company_id: str) -> Iterator[CampaignRegistrationModel]:
    """All of a company's registrations (a Query on its partition, never a Scan)."""
    yield from CampaignRegistrationModel.query(company_id, consistent_read=True)


def registrations_for_event(
    company_id: str, event_type: str
) -> Iterator[CampaignRegistrationModel]:
    """Candidates for an event: one Query on the (company, event_type) index."""
    yield from CampaignRegistrationModel.by_company_event.query(f"{company_id}#{event_type}")


def disable(company_id: str, callback_id: str, reason: str) -> None:
    """Stop delivering to a registration (its receiver said 410 Gone); visible in the API."""
    CampaignRegistrationModel(company_id, callback_id).update(
        actions=[CampaignRegistrationModel.disabled_reason.set(reason)],
        condition=CampaignRegistrationModel.callback_id.exists(),
    )


def enable(company_id: str, callback_id: str) -> None:
    CampaignRegistrationModel(company_id, callback_id).update(
        actions=[CampaignRegistrationModel.disabled_reason.remove()],
        condition=CampaignRegistrationModel.callback_id.exists(),
    )


def rotate_secret(
    company_id: str, callback_id: str, now: datetime, overlap_seconds: int = 24 * 3600
) -> str | None:
    """A new signing secret; the old one keeps signing for ``overlap_seconds``. Raises
    ``Contended`` when a concurrent rotation (or delete) changed the secret first."""
    from datetime import timedelta

    record = get_registration(company_id, callback_id, consistent=True)
    if record is None:
        return None
    fresh = secrets.new_signing_secret()
    try:
        record.update(
            actions=[
                CampaignRegistrationModel.previous_secret_enc.set(record.secret_enc),
                CampaignRegistrationModel.previous_secret_until.set(
                    fmt(now + timedelta(seconds=overlap_seconds))
                ),
                CampaignRegistrationModel.secret_enc.set(
                    secrets.encrypt(fresh, secret_context(company_id, callback_id))
                ),
            ],
            condition=CampaignRegistrationModel.secret_enc == record.secret_enc,
        )
    except UpdateError as exc:
        if exc.cause_response_code == "ConditionalCheckFailedException":
            raise Contended("the signing secret was rotated at the same time") from exc
        raise
    return fresh
