"""Bugs the fuzz run (tests/test_fuzz.py) found, pinned as plain tests through the API."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chalicelib.domain.timeutil import BadTimestamp, fmt, parse_stored, parse_zoned


def _callbacks(tenant_id: str) -> str:
    return f"/companies/{tenant_id}/campaigns/config/callbacks"


def test_years_before_1000_are_written_with_four_digits():
    moment = datetime(422, 3, 9, 5, 31, 37, tzinfo=UTC)
    assert fmt(moment) == "0422-03-09T05:31:37Z"
    assert parse_stored(fmt(moment)) == moment
    assert fmt(moment) < fmt(datetime(2026, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+05:30", "9999-12-31T23:59:59-01:00"])
def test_instants_outside_the_utc_range_are_bad_timestamps_not_crashes(value):
    with pytest.raises(BadTimestamp):
        parse_zoned(value)


def test_a_registration_in_year_422_neither_blocks_nor_lists_as_future(client, make_tenant):
    owner = make_tenant("OWNER")
    ancient = client.http.post(
        _callbacks(owner.tenant_id),
        headers=owner.headers,
        body=b'{"event_type": "old", "destination_url": "http://127.0.0.1:9/a",'
        b' "start_date": "0422-03-09T11:01:37+05:30", "end_date": "0445-12-11T13:18:16Z"}',
    )
    assert ancient.status_code == 201
    assert ancient.json_body["start_date"] == "0422-03-09T05:31:37Z"
    assert ancient.json_body["end_date"] == "0445-12-11T13:18:16Z"
    assert ancient.json_body["active"] is False

    current = client.http.post(
        _callbacks(owner.tenant_id),
        headers=owner.headers,
        body=b'{"event_type": "old", "destination_url": "http://127.0.0.1:9/b"}',
    )
    assert current.status_code == 201, current.json_body  # was 409: "445-..." sorted after now

    listed = client.http.get(_callbacks(owner.tenant_id), headers=owner.headers).json_body
    assert [r["callback_id"] for r in listed] == [current.json_body["callback_id"]]


def test_a_start_date_before_year_1_in_utc_is_a_400_not_a_500(client, make_tenant):
    owner = make_tenant("OWNER")
    response = client.http.post(
        _callbacks(owner.tenant_id),
        headers=owner.headers,
        body=b'{"event_type": "x", "destination_url": "http://127.0.0.1:9/a",'
        b' "start_date": "0001-01-01T00:00:00+05:30"}',
    )
    assert response.status_code == 400
    assert response.json_body["field"] == "start_date"
