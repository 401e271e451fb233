"""The campaign overlap guard stays small (issue 12 item 7).

The guard item of a (company, event type) used to keep the range of every registration ever
created; a few thousand create/delete cycles took it past DynamoDB's 400 KB item limit, and
every later create failed. Now each write prunes the ranges that ended before now, and the
overlap check looks only at the part of a new range from now on.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from chalicelib.domain.timeutil import utcnow

REG = "/companies/{}/campaigns/config/callbacks"
CYCLES = 2000
API_CYCLES = 40


def _guard_ranges(company_id: str, event_type: str = "order.paid") -> tuple[dict[str, str], int]:
    """The guard's ranges, and the size of its stored item (its attributes as JSON: roughly
    what DynamoDB counts against the 400 KB limit)."""
    from chalicelib.storage.campaign import guard_key
    from chalicelib.storage.guards import read_guard

    guard = read_guard(guard_key(company_id, event_type))
    assert guard is not None
    ranges = dict(guard.ranges.as_dict()) if guard.ranges else {}
    return ranges, len(json.dumps(guard.serialize()))


def _spec(start: datetime, end: datetime | None) -> Any:
    from chalicelib.domain.campaign import RegistrationInput

    return RegistrationInput(
        event_type="order.paid",
        campaign_id=None,
        destination_url="https://receiver.example/hook",
        destination_method="POST",
        content_type="application/json",
        start=start,
        end=end,
        backup_url=None,
    )


def test_2000_create_delete_cycles_keep_the_guard_small_and_creates_working(
    make_tenant, monkeypatch
):
    """Driven through the storage functions the API calls (create_registration,
    end_registration): 2,000 cycles through the API take several minutes on the embedded AWS.
    About 5 embedded-AWS calls a cycle: ~100 s on an idle 2-core machine."""
    from chalicelib.storage import campaign as store

    # Not under test, and each is a moto call: a fixed "ciphertext" for the signing secret.
    monkeypatch.setattr(store.secrets, "encrypt", lambda plaintext, context: b"not-encrypted")
    company = make_tenant().tenant_id
    future = store.create_registration(
        company, _spec(utcnow() + timedelta(days=400), None), utcnow()
    ).registration  # can still happen: always kept
    ended: list[Any] = []
    largest = 0
    for cycle in range(1, CYCLES + 1):
        now = utcnow()
        created = store.create_registration(company, _spec(now, now + timedelta(days=30)), now)
        assert store.end_registration(company, created.registration.callback_id, utcnow())
        ended.append(created.registration)
        if cycle % 100 == 0:
            ranges, size = _guard_ranges(company)
            assert set(ranges) == {future.callback_id}, cycle  # only what can still be active
            largest = max(largest, size)
        if cycle % 20 == 0:
            # moto copies a whole table on every transaction, so 2,000 rows left in the
            # registrations table would make this loop quadratic; the guard is not touched.
            with store.CampaignRegistrationModel.batch_write() as batch:
                for record in ended:
                    batch.delete(record)
            ended.clear()
    assert largest < 1024  # bytes; unpruned, 2,000 ranges were ~150 KB

    # the rule itself still holds against live and future ranges, past starts included
    now = utcnow()
    live = store.create_registration(company, _spec(now, now + timedelta(days=30)), now)
    try:
        past_start = _spec(now - timedelta(days=900), now + timedelta(days=60))  # before `future`
        store.create_registration(company, past_start, utcnow())
    except store.OverlapConflict as exc:
        assert exc.callback_id == live.registration.callback_id
    else:
        raise AssertionError("an overlapping create was accepted")
    ranges, _ = _guard_ranges(company)
    assert set(ranges) == {future.callback_id, live.registration.callback_id}


def _create(client: Any, owner: Any, **fields: Any) -> Any:
    body = {"event_type": "order.paid", "destination_url": "https://receiver.example/hook"}
    return client.http.post(
        REG.format(owner.tenant_id), headers=owner.headers, body=json.dumps({**body, **fields})
    )


def test_create_delete_cycles_through_the_api_prune_the_guard(client, make_tenant):
    owner = make_tenant()
    for cycle in range(API_CYCLES):
        created = _create(client, owner)
        assert created.status_code == 201, (cycle, created.json_body)
        deleted = client.http.delete(created.json_body["url"], headers=owner.headers)
        assert deleted.status_code == 200, (cycle, deleted.json_body)
        assert deleted.json_body["active"] is False
    ranges, _ = _guard_ranges(owner.tenant_id)
    assert ranges == {}
    live = _create(client, owner)
    assert live.status_code == 201
    clash = _create(client, owner, start_date="2020-01-01T00:00Z")  # past start, open end
    assert clash.status_code == 409
    assert clash.json_body["conflicting_callback_id"] == live.json_body["callback_id"]


def test_a_range_wholly_in_the_past_overlaps_nothing_and_is_not_kept(client, make_tenant):
    owner = make_tenant()
    live = _create(client, owner, start_date="2020-01-01T00:00Z")  # active since 2020
    assert live.status_code == 201
    past = _create(client, owner, start_date="2021-01-01T00:00Z", end_date="2022-01-01T00:00Z")
    assert past.status_code == 201, past.json_body  # it can never be active: nothing to clash
    ranges, _ = _guard_ranges(owner.tenant_id, "order.paid")
    assert set(ranges) == {live.json_body["callback_id"]}


def test_still_open_and_conflict_from_now():
    from chalicelib.domain.campaign import conflict_from_now, encode_range, still_open

    now = "2026-06-01T00:00:00.000Z"
    ranges = {
        "ended": encode_range("2026-01-01T00:00:00.000Z", "2026-05-01T00:00:00.000Z"),
        "ends_now": encode_range("2026-01-01T00:00:00.000Z", now),
        "live": encode_range("2026-05-01T00:00:00.000Z", "2026-07-01T00:00:00.000Z"),
        "future": encode_range("2026-09-01T00:00:00.000Z", None),
    }
    assert set(still_open(ranges, now)) == {"live", "future"}
    # only the part from now on counts: the ended ranges overlap the new one's past, not its future
    assert (
        conflict_from_now(ranges, "2026-02-01T00:00:00.000Z", "2026-06-01T00:00:00.000Z", now)
        is None
    )
    assert conflict_from_now(ranges, "2026-02-01T00:00:00.000Z", None, now) == "future"
    assert (
        conflict_from_now(ranges, "2026-02-01T00:00:00.000Z", "2026-06-15T00:00:00.000Z", now)
        == "live"
    )
    assert (
        conflict_from_now(
            {"future": ranges["future"]},
            "2026-07-01T00:00:00.000Z",
            "2026-09-01T00:00:00.000Z",
            now,
        )
        is None  # half-open ranges: ending where the next starts is no overlap
    )
