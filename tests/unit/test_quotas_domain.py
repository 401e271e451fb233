"""Quota rules without AWS: stage defaults, overrides, the PUT merge and the events bucket."""

from __future__ import annotations

import pytest

from chalicelib.domain import quotas as rules


def test_stage_defaults_read_the_environment_and_survive_typos() -> None:
    limits = rules.stage_defaults(
        {
            "RINGBACK_QUOTA_REGISTRATIONS": "12",
            "RINGBACK_QUOTA_EVENTS_PER_SECOND": "lots",  # a typo: the default, not a crash
        }
    )
    assert limits.view() == {
        "registrations": {"campaign": 12, "notification": 12, "callnotify": 12},
        "events_per_second": 100,
        "scheduled_pending": 10000,
    }
    assert rules.stage_defaults({}).view()["events_per_second"] == 100


def test_overrides_sit_on_top_of_the_defaults() -> None:
    defaults = rules.stage_defaults({})
    limits = rules.apply(defaults, {"registrations": {"callnotify": 2}, "scheduled_pending": 0})
    assert limits.registration_limit("callnotify") == 2
    assert limits.registration_limit("campaign") == 1000
    assert limits.scheduled_pending == 0 and limits.events_per_second == 100


def test_a_put_merges_and_null_resets() -> None:
    current = {"registrations": {"campaign": 5, "callnotify": 6}, "events_per_second": 7}
    merged = rules.merge_change(
        current, {"registrations": {"campaign": None, "notification": 9}, "events_per_second": None}
    )
    assert merged == {"registrations": {"callnotify": 6, "notification": 9}}
    assert rules.merge_change(merged, {"registrations": None}) == {}
    assert rules.merge_change({}, {}) == {}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events_per_second": 1.5}, "events_per_second"),
        ({"scheduled_pending": rules.MAX_LIMIT + 1}, "scheduled_pending"),
        ({"registrations": {"campaign": -2}}, "registrations.campaign"),
        ({"registrations": []}, "registrations"),
        ({"rate": 3}, "rate"),
    ],
)
def test_bad_changes_name_their_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(rules.BadQuotas) as caught:
        rules.merge_change({}, body)
    assert caught.value.field == field


def test_the_bucket_window_admits_one_seconds_worth() -> None:
    """Simulate the conditional updates: from a full bucket exactly ``rate`` requests pass at
    one instant, then one more per interval."""
    for rate in (1, 3, 10, 100):
        bucket = rules.Bucket.for_rate(rate)
        now = 1_000_000.0
        tat: float | None = None
        admitted = 0
        for _ in range(rate * 3):
            low, high = now - bucket.lag, now + bucket.lag + 0.5
            if tat is not None and low <= tat <= high:
                tat += bucket.interval
                admitted += 1
            elif tat is None or tat < low:
                tat = low + bucket.interval
                admitted += 1
        assert admitted == rate, rate
        now += bucket.interval  # one interval later: exactly one more
        low, high = now - bucket.lag, now + bucket.lag + 0.5
        assert tat is not None and low <= tat <= high
        assert not low <= tat + bucket.interval <= high
