"""Rules of the Scheduled callbacks API: parameter validation, repeat arithmetic, rendering."""

from __future__ import annotations

import calendar
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from dateutil.relativedelta import relativedelta
from defusedxml import ElementTree as SafeET

from chalicelib.domain.scheduled import (
    ERROR_STATUS,
    UNITS,
    Repeat,
    ScheduleError,
    fire_time,
    is_valid_callback_url,
    next_fire,
    parse_create,
    parse_iso_time,
    parse_response_format,
    require_api_key,
)
from chalicelib.domain.scheduled_render import error, render, success

NOW = datetime(2010, 11, 28, 12, 0, 0, tzinfo=UTC)
SEED_URL = (
    "http://callmyapp.com/api/1.0/create/?api_key=123abc"
    "&callback_url=http://apihouse.com/demo-callback-endpoint"
    "&callback_time=2010-11-28T19:55:00%2B01:00"
)
SEED_REPEAT_URL = SEED_URL + (
    "&callback_repeat=1&callback_repeat_interval_unit=minutes&callback_repeat_interval=30"
)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "scheduled-errors.md"


def query(url: str) -> dict[str, str]:
    """What the API layer receives: the URL-decoded query parameters."""
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def base(**changes: str | None) -> dict[str, str]:
    params = {
        "api_key": "123abc",
        "callback_url": "http://apihouse.com/demo-callback-endpoint",
        "callback_time": "2010-11-28T19:55:00+01:00",
    }
    for name, value in changes.items():
        if value is None:
            params.pop(name, None)
        else:
            params[name] = value
    return params


def repeating(**changes: str | None) -> dict[str, str]:
    params = base(
        callback_repeat="1",
        callback_repeat_type="interval",
        callback_repeat_interval_unit="minutes",
        callback_repeat_interval="30",
    )
    for name, value in changes.items():
        if value is None:
            params.pop(name, None)
        else:
            params[name] = value
    return params


def error_key(params: dict[str, str], now: datetime = NOW) -> str:
    with pytest.raises(ScheduleError) as caught:
        parse_create(params, now)
    return caught.value.key


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("key", "status"),
    [
        ("api_key_absent", 401),
        ("api_key_invalid", 401),
        ("callback_not_found", 404),
        ("callback_already_exists", 409),
        ("response_format_invalid", 400),
        ("callback_time_expired", 400),
        ("callback_repeat_interval_invalid", 400),
        ("internal_error", 500),
    ],
)
def test_error_carries_key_and_http_status(key, status):
    exc = ScheduleError(key)
    assert (exc.key, exc.status) == (key, status)
    assert str(exc) == key


def test_unregistered_error_key_needs_an_explicit_status():
    with pytest.raises(ValueError, match="callback_tme_expired"):
        ScheduleError("callback_tme_expired")
    assert ScheduleError("callback_url_misspelt", status=400).status == 400


def test_every_bad_input_key_is_400_and_only_auth_lookup_conflict_internal_differ():
    special = {
        "api_key_absent": 401,
        "api_key_invalid": 401,
        "api_key_forbidden": 403,
        "callback_not_found": 404,
        "method_not_allowed": 405,
        "callback_already_exists": 409,
        "unsupported_media_type": 415,
        "quota_exceeded": 429,
        "internal_error": 500,
    }
    for key, status in ERROR_STATUS.items():
        assert status == special.get(key, 400), key


def test_docs_table_lists_every_error_key_with_its_status():
    rows = re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \|", DOCS.read_text(), flags=re.MULTILINE)
    assert {key: int(status) for key, status in rows} == ERROR_STATUS
    assert len(rows) == len(ERROR_STATUS)


# ------------------------------------------------------------------ response_format, api_key


@pytest.mark.parametrize(
    ("value", "expected"), [(None, "json"), ("", "json"), ("json", "json"), ("xml", "xml")]
)
def test_response_format_values(value, expected):
    params = {} if value is None else {"response_format": value}
    assert parse_response_format(params) == expected


@pytest.mark.parametrize("value", ["JSON", "Xml", "yaml", " json", "json ", "html"])
def test_response_format_is_case_sensitive_and_closed(value):
    with pytest.raises(ScheduleError) as caught:
        parse_response_format({"response_format": value})
    assert (caught.value.key, caught.value.status) == ("response_format_invalid", 400)


@pytest.mark.parametrize("params", [{}, {"api_key": ""}])
def test_api_key_absent(params):
    with pytest.raises(ScheduleError) as caught:
        require_api_key(params)
    assert (caught.value.key, caught.value.status) == ("api_key_absent", 401)
    assert require_api_key({"api_key": "k1"}) == "k1"


# --------------------------------------------------------------------------- seed examples


def test_seed_example_url_creates_a_one_shot_callback():
    request = parse_create(query(SEED_URL), NOW)
    assert request.callback_url == "http://apihouse.com/demo-callback-endpoint"
    assert request.callback_time == datetime(2010, 11, 28, 18, 55, tzinfo=UTC)
    assert request.callback_time.utcoffset() == timedelta(0)
    assert request.repeat is None


def test_echoed_parameters_are_as_received_in_order_without_api_key():
    params = query(SEED_URL + "&response_format=xml&custom=%3Cv%3E")
    request = parse_create(params, NOW)
    assert "api_key" not in request.api_call_parameters
    assert list(request.api_call_parameters) == [
        "callback_url",
        "callback_time",
        "response_format",
        "custom",
    ]
    assert request.api_call_parameters["callback_time"] == "2010-11-28T19:55:00+01:00"
    assert request.api_call_parameters["custom"] == "<v>"


def test_seed_repeat_example_lacks_the_type_its_own_table_requires():
    assert error_key(query(SEED_REPEAT_URL)) == "callback_repeat_type_absent"
    fixed = parse_create(query(SEED_REPEAT_URL + "&callback_repeat_type=interval"), NOW)
    assert fixed.repeat == Repeat(type="interval", unit="minutes", interval=30)


# --------------------------------------------------------------------------- callback_url


@pytest.mark.parametrize("params", [base(callback_url=None), base(callback_url="")])
def test_callback_url_absent(params):
    assert error_key(params) == "callback_url_absent"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://apihouse.com/x",
        "javascript:alert(1)",
        "apihouse.com/x",
        "/relative/path",
        "http://",
        "http:///path",
        "http://:80/",
        "http://exa mple.com/",
        "http://example.com/a b",
        "http://example.com/\n",
        "http://example.com:99999/",
        "http://example.com:0/",
        "http://example.com:port/",
        "http://[::1/",
        "http://[::1%25eth0]/",
        "http://a..b/",
        "http://-bad-.com/",
        "http://" + "a" * 64 + ".com/",
        "http://example.com/" + "a" * 2048,
    ],
)
def test_callback_url_invalid(url):
    assert not is_valid_callback_url(url)
    assert error_key(base(callback_url=url)) == "callback_url_invalid"


@pytest.mark.parametrize(
    "url",
    [
        "http://apihouse.com/demo-callback-endpoint",
        "https://x.example/p?q=1&r=2#frag",
        "HTTP://EXAMPLE.COM",
        "http://example.com./",
        "http://[::1]:8080/",
        "http://127.0.0.1/",
        "http://user:pw@example.com/",
        "http://bücher.de/ä",
        "http://_srv.example.com:65535/",
    ],
)
def test_callback_url_valid_syntax(url):
    assert is_valid_callback_url(url)
    assert parse_create(base(callback_url=url), NOW).callback_url == url


# --------------------------------------------------------------------------- callback_time


@pytest.mark.parametrize("params", [base(callback_time=None), base(callback_time="")])
def test_callback_time_absent(params):
    assert error_key(params) == "callback_time_absent"


@pytest.mark.parametrize(
    "value",
    [
        "tomorrow",
        "2010-11-28T19:55:00",  # no zone
        "2010-11-28",  # date alone
        "2010-11-28T19:55:00+25:00",
        "2010-11-28X19:55:00Z",
        "2010-11-28T19:55:00UTC",
        "28/11/2010 19:55Z",
        "2010-11-28T19:55:00+01:00 ",
        "2010-11-28T19:55:00  01:00",  # two spaces: not a lost "+"
        "2010-11-28T19:55:00 01:00:00",
        "9999-12-31T23:59:59-01:00",  # past datetime.max once in UTC
    ],
)
def test_callback_time_invalid(value):
    assert error_key(base(callback_time=value)) == "callback_time_invalid"


@pytest.mark.parametrize(
    ("value", "utc"),
    [
        ("2010-11-28T19:55:00Z", datetime(2010, 11, 28, 19, 55, tzinfo=UTC)),
        ("2010-11-28T19:55:00+01:00", datetime(2010, 11, 28, 18, 55, tzinfo=UTC)),
        ("2010-11-28T19:55:00+0100", datetime(2010, 11, 28, 18, 55, tzinfo=UTC)),
        ("2010-11-28T19:55:00-05:00", datetime(2010, 11, 29, 0, 55, tzinfo=UTC)),
        ("20101128T195500Z", datetime(2010, 11, 28, 19, 55, tzinfo=UTC)),
        ("2010-11-28 19:55:00+01:00", datetime(2010, 11, 28, 18, 55, tzinfo=UTC)),
        ("2010-11-28T19:55:00.987654+01:00", datetime(2010, 11, 28, 18, 55, tzinfo=UTC)),
        # the lenient "+": an unencoded "+" arrives as a space
        ("2010-11-28T19:55:00 01:00", datetime(2010, 11, 28, 18, 55, tzinfo=UTC)),
        ("2010-11-28T19:55:00 0100", datetime(2010, 11, 28, 18, 55, tzinfo=UTC)),
        ("2010-11-28T19:55 01", datetime(2010, 11, 28, 18, 55, tzinfo=UTC)),
        ("2010-11-28 19:55:00 01:00", datetime(2010, 11, 28, 18, 55, tzinfo=UTC)),
    ],
)
def test_callback_time_is_utc_whole_seconds(value, utc):
    assert parse_create(base(callback_time=value), NOW).callback_time == utc


def test_unencoded_plus_in_the_real_query_string_is_read_as_plus():
    url = SEED_URL.replace("%2B", "+")
    params = query(url)
    assert params["callback_time"] == "2010-11-28T19:55:00 01:00"
    request = parse_create(params, NOW)
    assert request.callback_time == datetime(2010, 11, 28, 18, 55, tzinfo=UTC)
    assert request.api_call_parameters["callback_time"] == "2010-11-28T19:55:00 01:00"


def test_parse_iso_time_keeps_the_written_offset():
    parsed = parse_iso_time("2011-01-31T00:30:00+01:00")
    assert parsed.utcoffset() == timedelta(hours=1)
    assert (parsed.day, parsed.hour) == (31, 0)
    with pytest.raises(ValueError):
        parse_iso_time("2011-01-31T00:30:00")


def test_callback_time_in_the_past_is_expired_and_now_is_not():
    moment = datetime(2010, 11, 28, 18, 55, tzinfo=UTC)
    params = base(callback_time="2010-11-28T19:55:00+01:00")
    assert error_key(params, now=moment + timedelta(seconds=1)) == "callback_time_expired"
    assert parse_create(params, moment).callback_time == moment
    assert ScheduleError("callback_time_expired").status == 400


def test_expiry_compares_the_precise_time_before_truncation():
    moment = datetime(2010, 11, 28, 18, 55, 0, 500_000, tzinfo=UTC)
    early = base(callback_time="2010-11-28T18:55:00.400Z")
    late = base(callback_time="2010-11-28T18:55:00.600Z")
    assert error_key(early, now=moment) == "callback_time_expired"
    assert parse_create(late, moment).callback_time == moment.replace(microsecond=0)


def test_now_must_be_aware():
    with pytest.raises(ValueError):
        parse_create(base(), datetime(2010, 1, 1))


# --------------------------------------------------------------------------- repeat parameters


@pytest.mark.parametrize("flag", [None, "", "0"])
def test_repeat_parameters_are_ignored_without_callback_repeat_1(flag):
    params = base(
        callback_repeat=flag,
        callback_repeat_type="bogus",
        callback_repeat_interval_unit="fortnights",
        callback_repeat_interval="-3",
        callback_repeat_count="zero",
        callback_repeat_until="never",
    )
    request = parse_create(params, NOW)
    assert request.repeat is None
    assert request.api_call_parameters["callback_repeat_type"] == "bogus"


@pytest.mark.parametrize("flag", ["2", "true", "01", " 1", "yes", "-1"])
def test_callback_repeat_invalid(flag):
    assert error_key(base(callback_repeat=flag)) == "callback_repeat_invalid"


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"callback_repeat_type": None}, "callback_repeat_type_absent"),
        ({"callback_repeat_type": ""}, "callback_repeat_type_absent"),
        ({"callback_repeat_type": "Interval"}, "callback_repeat_type_invalid"),
        ({"callback_repeat_type": "once"}, "callback_repeat_type_invalid"),
        ({"callback_repeat_interval_unit": None}, "callback_repeat_interval_unit_absent"),
        ({"callback_repeat_interval_unit": ""}, "callback_repeat_interval_unit_absent"),
        ({"callback_repeat_interval_unit": "Minutes"}, "callback_repeat_interval_unit_invalid"),
        ({"callback_repeat_interval_unit": "minute"}, "callback_repeat_interval_unit_invalid"),
        ({"callback_repeat_interval_unit": "weeks"}, "callback_repeat_interval_unit_invalid"),
        ({"callback_repeat_interval": None}, "callback_repeat_interval_absent"),
        ({"callback_repeat_interval": ""}, "callback_repeat_interval_absent"),
        ({"callback_repeat_interval": "0"}, "callback_repeat_interval_invalid"),
        ({"callback_repeat_interval": "000"}, "callback_repeat_interval_invalid"),
        ({"callback_repeat_interval": "-1"}, "callback_repeat_interval_invalid"),
        ({"callback_repeat_interval": "+5"}, "callback_repeat_interval_invalid"),
        ({"callback_repeat_interval": "1.5"}, "callback_repeat_interval_invalid"),
        ({"callback_repeat_interval": "3e2"}, "callback_repeat_interval_invalid"),
        ({"callback_repeat_interval": " 5"}, "callback_repeat_interval_invalid"),
        ({"callback_repeat_interval": "\u00b2"}, "callback_repeat_interval_invalid"),
        ({"callback_repeat_interval": "\u0663"}, "callback_repeat_interval_invalid"),
        ({"callback_repeat_interval": "1" * 19}, "callback_repeat_interval_invalid"),
        ({"callback_repeat_count": "0"}, "callback_repeat_count_invalid"),
        ({"callback_repeat_count": "-2"}, "callback_repeat_count_invalid"),
        ({"callback_repeat_count": "two"}, "callback_repeat_count_invalid"),
        ({"callback_repeat_until": "never"}, "callback_repeat_until_invalid"),
        ({"callback_repeat_until": "2010-12-01T00:00:00"}, "callback_repeat_until_invalid"),
        ({"callback_repeat_until": "2010-11-28T18:55:00Z"}, "callback_repeat_until_invalid"),
        ({"callback_repeat_until": "2010-11-28T10:00:00Z"}, "callback_repeat_until_invalid"),
    ],
)
def test_repeat_rules(changes, key):
    assert error_key(repeating(**changes)) == key


def test_interval_whose_first_repeat_passes_year_9999_is_invalid():
    params = repeating(callback_repeat_interval_unit="years", callback_repeat_interval="9000")
    assert error_key(params) == "callback_repeat_interval_invalid"
    params["callback_repeat_interval"] = "7000"
    assert parse_create(params, NOW).repeat is not None


@pytest.mark.parametrize("unit", UNITS)
def test_every_unit_is_accepted(unit):
    repeat = parse_create(repeating(callback_repeat_interval_unit=unit), NOW).repeat
    assert repeat is not None and repeat.unit == unit


def test_full_repeat_with_extensions():
    params = repeating(
        callback_repeat_type="interval",
        callback_repeat_interval_unit="hours",
        callback_repeat_interval="030",
        callback_repeat_count="5",
        callback_repeat_until="2010-12-01T00:00:00 01:00",
    )
    repeat = parse_create(params, NOW).repeat
    assert repeat == Repeat(
        type="interval",
        unit="hours",
        interval=30,
        count=5,
        until=datetime(2010, 11, 30, 23, 0, tzinfo=UTC),
    )


def test_empty_optional_extensions_mean_absent():
    repeat = parse_create(repeating(callback_repeat_count="", callback_repeat_until=""), NOW).repeat
    assert repeat is not None and (repeat.count, repeat.until) == (None, None)


def test_immediate_still_requires_unit_and_interval_as_the_seed_says():
    assert (
        error_key(repeating(callback_repeat_type="immediate", callback_repeat_interval_unit=None))
        == "callback_repeat_interval_unit_absent"
    )
    repeat = parse_create(repeating(callback_repeat_type="immediate"), NOW).repeat
    assert repeat is not None and repeat.type == "immediate"


def test_checks_run_in_the_documented_order():
    """Start with everything wrong; fixing the reported problem reveals the next one in order."""
    params = {
        "response_format": "XML",
        "callback_url": "ftp://x",
        "callback_time": "yesterday",
        "callback_repeat": "2",
        "callback_repeat_type": "sometimes",
        "callback_repeat_interval_unit": "weeks",
        "callback_repeat_interval": "0",
        "callback_repeat_count": "0",
        "callback_repeat_until": "then",
    }
    fixes = [
        ("response_format_invalid", {"response_format": "xml"}),
        ("api_key_absent", {"api_key": "123abc"}),
        ("callback_url_invalid", {"callback_url": "http://apihouse.com/x"}),
        ("callback_time_invalid", {"callback_time": "2010-11-28T11:00:00Z"}),
        ("callback_time_expired", {"callback_time": "2010-11-28T13:00:00Z"}),
        ("callback_repeat_invalid", {"callback_repeat": "1"}),
        ("callback_repeat_type_invalid", {"callback_repeat_type": "interval"}),
        ("callback_repeat_interval_unit_invalid", {"callback_repeat_interval_unit": "days"}),
        ("callback_repeat_interval_invalid", {"callback_repeat_interval": "2"}),
        ("callback_repeat_count_invalid", {"callback_repeat_count": "3"}),
        ("callback_repeat_until_invalid", {"callback_repeat_until": "2011-01-01T00:00Z"}),
    ]
    seen = []
    for expected, fix in fixes:
        seen.append(error_key(params))
        assert seen[-1] == expected, seen
        params.update(fix)
    request = parse_create(params, NOW)
    assert request.repeat == Repeat(
        type="interval",
        unit="days",
        interval=2,
        count=3,
        until=datetime(2011, 1, 1, tzinfo=UTC),
    )


def test_absent_checks_come_before_the_next_parameter():
    assert error_key(base(callback_url=None, callback_time=None)) == "callback_url_absent"
    assert error_key(base(callback_time=None, callback_repeat="x")) == "callback_time_absent"
    assert (
        error_key(repeating(callback_repeat_type=None, callback_repeat_interval_unit=None))
        == "callback_repeat_type_absent"
    )
    assert (
        error_key(repeating(callback_repeat_interval_unit=None, callback_repeat_interval=None))
        == "callback_repeat_interval_unit_absent"
    )


# --------------------------------------------------------------------------- fire_time

MONTHLY = Repeat(type="interval", unit="months", interval=1, count=None, until=None)
YEARLY = Repeat(type="interval", unit="years", interval=1, count=None, until=None)


def every(interval: int, unit: str, **kwargs) -> Repeat:
    return Repeat(type="interval", unit=unit, interval=interval, **kwargs)


@pytest.mark.parametrize(
    ("anchor", "repeat", "k", "expected"),
    [
        (datetime(2011, 1, 31, 9, tzinfo=UTC), MONTHLY, 1, datetime(2011, 2, 28, 9, tzinfo=UTC)),
        (datetime(2012, 1, 31, 9, tzinfo=UTC), MONTHLY, 1, datetime(2012, 2, 29, 9, tzinfo=UTC)),
        (datetime(2011, 1, 31, 9, tzinfo=UTC), MONTHLY, 2, datetime(2011, 3, 31, 9, tzinfo=UTC)),
        (datetime(2011, 1, 31, 9, tzinfo=UTC), MONTHLY, 3, datetime(2011, 4, 30, 9, tzinfo=UTC)),
        (
            datetime(2011, 1, 31, tzinfo=UTC),
            every(2, "months"),
            1,
            datetime(2011, 3, 31, tzinfo=UTC),
        ),
        (datetime(2011, 10, 31, tzinfo=UTC), MONTHLY, 4, datetime(2012, 2, 29, tzinfo=UTC)),
        (datetime(2012, 2, 29, tzinfo=UTC), YEARLY, 1, datetime(2013, 2, 28, tzinfo=UTC)),
        (datetime(2012, 2, 29, tzinfo=UTC), YEARLY, 4, datetime(2016, 2, 29, tzinfo=UTC)),
        (
            datetime(2012, 2, 29, tzinfo=UTC),
            every(12, "months"),
            1,
            datetime(2013, 2, 28, tzinfo=UTC),
        ),
        (
            datetime(2010, 1, 1, tzinfo=UTC),
            every(90, "seconds"),
            3,
            datetime(2010, 1, 1, 0, 4, 30, tzinfo=UTC),
        ),
        (
            datetime(2010, 1, 1, tzinfo=UTC),
            every(30, "minutes"),
            5,
            datetime(2010, 1, 1, 2, 30, tzinfo=UTC),
        ),
        (
            datetime(2010, 1, 1, tzinfo=UTC),
            every(7, "hours"),
            4,
            datetime(2010, 1, 2, 4, tzinfo=UTC),
        ),
        (datetime(2010, 12, 31, tzinfo=UTC), every(1, "days"), 1, datetime(2011, 1, 1, tzinfo=UTC)),
        (datetime(2011, 1, 31, 9, tzinfo=UTC), MONTHLY, 0, datetime(2011, 1, 31, 9, tzinfo=UTC)),
    ],
)
def test_fire_time(anchor, repeat, k, expected):
    result = fire_time(anchor, repeat, k)
    assert result == expected
    assert result.utcoffset() == timedelta(0)


def test_month_arithmetic_follows_the_anchors_own_calendar():
    plus_one = timezone(timedelta(hours=1))
    local_anchor = datetime(2011, 1, 31, 0, 30, tzinfo=plus_one)  # = Jan 30 23:30 UTC
    assert fire_time(local_anchor, MONTHLY, 1) == datetime(2011, 2, 28, 0, 30, tzinfo=plus_one)
    utc_anchor = local_anchor.astimezone(UTC)
    assert fire_time(utc_anchor, MONTHLY, 1) == datetime(2011, 2, 28, 23, 30, tzinfo=UTC)


def test_monthly_series_has_no_drift_over_1000_steps():
    anchor = datetime(2000, 1, 31, 8, 15, tzinfo=UTC)
    stepwise = anchor
    drifted = False
    for k in range(1, 1001):
        result = fire_time(anchor, MONTHLY, k)
        year, month = divmod(anchor.month - 1 + k, 12)
        year, month = anchor.year + year, month + 1
        last_day = calendar.monthrange(year, month)[1]
        assert result == datetime(year, month, min(31, last_day), 8, 15, tzinfo=UTC), k
        stepwise = stepwise + relativedelta(months=1)  # the naive way sticks at the 28th
        drifted = drifted or stepwise != result
    assert drifted


def test_second_series_has_no_drift_over_1000_chained_firings():
    anchor = datetime(2010, 11, 28, 18, 55, 0, tzinfo=UTC)
    repeat = every(7, "seconds")
    fired, completed = 0, None
    for _ in range(1000):
        slot = next_fire(anchor, repeat, fired, completed_at=completed, now=completed or anchor)
        assert slot == anchor + timedelta(seconds=7 * fired)
        fired, completed = fired + 1, slot + timedelta(milliseconds=1500)
    assert fired == 1000


def test_monthly_chained_next_fire_matches_fire_time_for_1000_steps():
    anchor = datetime(2004, 1, 31, tzinfo=UTC)
    fired, completed = 0, None
    for k in range(1000):
        slot = next_fire(anchor, MONTHLY, fired, completed_at=completed, now=completed or anchor)
        assert slot == fire_time(anchor, MONTHLY, k)
        fired, completed = fired + 1, slot + timedelta(seconds=2)


def test_fire_time_rejects_bad_input():
    anchor = datetime(2010, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError):
        fire_time(datetime(2010, 1, 1), MONTHLY, 1)
    with pytest.raises(ValueError):
        fire_time(anchor, MONTHLY, -1)
    with pytest.raises(OverflowError):
        fire_time(anchor, YEARLY, 8000)
    with pytest.raises(OverflowError):
        fire_time(anchor, every(1, "days"), 10**9)


# --------------------------------------------------------------------------- next_fire

HOURLY = every(1, "hours")
T0 = datetime(2010, 11, 28, 18, 0, tzinfo=UTC)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def test_one_shot_fires_once_even_when_late():
    assert next_fire(T0, None, 0, completed_at=None, now=at(5)) == T0
    assert next_fire(T0, None, 1, completed_at=at(0.01), now=at(5)) is None


def test_interval_series_fires_each_slot_in_turn():
    assert next_fire(T0, HOURLY, 0, completed_at=None, now=at(-1)) == T0
    assert next_fire(T0, HOURLY, 1, completed_at=at(0.01), now=at(0.01)) == at(1)
    assert next_fire(T0, HOURLY, 2, completed_at=at(1.01), now=at(1.01)) == at(2)


def test_slot_missed_by_less_than_one_interval_fires_late():
    assert next_fire(T0, HOURLY, 2, completed_at=at(1.01), now=at(2.5)) == at(2)


def test_catch_up_after_an_outage_skips_to_the_first_future_slot():
    # two firings done, then the service was down until 10:30 past the anchor
    after_outage = next_fire(T0, HOURLY, 2, completed_at=at(1.01), now=at(10.5))
    assert after_outage == at(11)
    # that firing happens; the next one is the following slot, not a replay of slot 11
    assert next_fire(T0, HOURLY, 3, completed_at=at(11.01), now=at(11.01)) == at(12)
    # and a slot missed by a few minutes is still fired late, although fired_count (4) now
    # lags the slot index (12)
    assert next_fire(T0, HOURLY, 4, completed_at=at(12.01), now=at(13.1)) == at(13)


def test_exactly_one_interval_behind_counts_as_behind():
    assert next_fire(T0, HOURLY, 2, completed_at=at(1.01), now=at(3)) == at(3)


def test_first_firing_after_an_outage_is_skipped_forward_too():
    assert next_fire(T0, HOURLY, 0, completed_at=None, now=at(4.2)) == at(5)


def test_slots_that_elapse_during_a_long_call_are_skipped():
    repeat = every(10, "seconds")
    anchor = T0
    completed = anchor + timedelta(seconds=10 + 12)  # slot 1's call ran past slot 2
    assert next_fire(
        anchor, repeat, 2, completed_at=completed, now=completed
    ) == anchor + timedelta(seconds=30)


def test_outage_on_a_one_second_series_is_computed_not_iterated():
    repeat = every(1, "seconds")
    now = T0 + timedelta(days=3650, microseconds=1)
    assert next_fire(T0, repeat, 5, completed_at=at(0.001), now=now) == T0 + timedelta(
        days=3650, seconds=1
    )


def test_outage_on_a_monthly_series_lands_on_the_right_month_end():
    anchor = datetime(2011, 1, 31, 9, tzinfo=UTC)
    now = datetime(2013, 2, 10, tzinfo=UTC)
    result = next_fire(
        anchor, MONTHLY, 3, completed_at=datetime(2011, 3, 31, 9, 1, tzinfo=UTC), now=now
    )
    assert result == datetime(2013, 2, 28, 9, tzinfo=UTC)


def test_count_limits_firings_not_slots():
    repeat = every(1, "hours", count=3)
    assert next_fire(T0, repeat, 2, completed_at=at(1.01), now=at(1.01)) == at(2)
    assert next_fire(T0, repeat, 3, completed_at=at(2.01), now=at(2.01)) is None
    # a skip after an outage does not use up the count
    assert next_fire(T0, repeat, 1, completed_at=at(0.01), now=at(9.5)) == at(10)


def test_until_is_inclusive():
    repeat = every(1, "hours", until=at(2))
    assert next_fire(T0, repeat, 2, completed_at=at(1.01), now=at(1.01)) == at(2)
    assert next_fire(T0, repeat, 3, completed_at=at(2.01), now=at(2.01)) is None
    assert next_fire(T0, repeat, 1, completed_at=at(0.01), now=at(5.5)) is None


def test_immediate_repeat_fires_when_the_previous_call_completed():
    repeat = Repeat(type="immediate", unit="seconds", interval=1, count=3, until=None)
    assert next_fire(T0, repeat, 0, completed_at=None, now=at(-1)) == T0
    done = T0 + timedelta(seconds=4, milliseconds=250)
    assert next_fire(T0, repeat, 1, completed_at=done, now=done) == done
    assert next_fire(T0, repeat, 3, completed_at=done, now=done) is None
    with pytest.raises(ValueError):
        next_fire(T0, repeat, 1, completed_at=None, now=done)


def test_immediate_repeat_respects_until():
    repeat = Repeat(type="immediate", unit="seconds", interval=1, count=None, until=at(1))
    assert next_fire(T0, repeat, 5, completed_at=at(1), now=at(1)) == at(1)
    assert next_fire(T0, repeat, 6, completed_at=at(1.001), now=at(1.001)) is None


def test_series_past_year_9999_is_finished():
    anchor = datetime(9997, 6, 1, tzinfo=UTC)
    assert next_fire(anchor, YEARLY, 2, completed_at=None, now=anchor) == datetime(
        9999, 6, 1, tzinfo=UTC
    )
    assert next_fire(anchor, YEARLY, 3, completed_at=None, now=anchor) is None


def test_next_fire_rejects_bad_input():
    with pytest.raises(ValueError):
        next_fire(T0, HOURLY, -1, completed_at=None, now=T0)
    with pytest.raises(ValueError):
        next_fire(T0, HOURLY, 1, completed_at=None, now=datetime(2010, 1, 1))


# --------------------------------------------------------------------------- rendering


def test_json_success_is_compact_in_seed_order():
    payload = success(
        "create", {"callback_url": "http://a/", "callback_time": "t"}, callback_id="c1"
    )
    body, content_type = render(payload, "json")
    assert content_type == "application/json"
    assert body == (
        '{"success":1,"api_function":"create",'
        '"api_call_parameters":{"callback_url":"http://a/","callback_time":"t"},'
        '"callback_id":"c1"}'
    )


def test_json_error_shape():
    body, _ = render(error("callback_time_expired"), "json")
    assert body == '{"success":0,"error":"callback_time_expired"}'


def test_create_from_seed_url_renders_without_api_key():
    request = parse_create(query(SEED_URL), NOW)
    body, _ = render(success("create", request.api_call_parameters, callback_id="x9"), "json")
    decoded = json.loads(body)
    assert list(decoded) == ["success", "api_function", "api_call_parameters", "callback_id"]
    assert "123abc" not in body
    assert decoded["api_call_parameters"]["callback_time"] == "2010-11-28T19:55:00+01:00"


def parse_xml(body: str):
    assert body.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<response>')
    return SafeET.fromstring(body.encode("utf-8"))


def test_xml_success_has_the_seed_structure_and_escapes_values():
    nasty = "a<b>&\"c'd"
    params = {"callback_url": "http://a/?x=1&y=2", "k<&>": nasty}
    body, content_type = render(success("create", params, callback_id=nasty), "xml")
    assert content_type == "application/xml"
    root = parse_xml(body)
    assert root.tag == "response"
    assert [child.tag for child in root] == [
        "api_function",
        "success",
        "api_call_parameters",
        "callback_id",
    ]
    assert root.findtext("api_function") == "create"
    assert root.findtext("success") == "1"
    pairs = [
        (parameter.findtext("key"), parameter.findtext("value"))
        for parameter in root.find("api_call_parameters")
    ]
    assert pairs == list(params.items())
    assert all(parameter.tag == "parameter" for parameter in root.find("api_call_parameters"))
    assert root.findtext("callback_id") == nasty
    assert "a<b>" not in body and "&amp;" in body


def test_xml_error_has_the_seed_structure():
    root = parse_xml(render(error("api_key_invalid"), "xml")[0])
    assert [(child.tag, child.text) for child in root] == [
        ("success", "0"),
        ("error", "api_key_invalid"),
    ]


def test_same_payload_in_both_formats_agrees():
    payload = success("create", {"a": "1", "b": "<2>"}, callback_id="id-1")
    as_json = json.loads(render(payload, "json")[0])
    root = parse_xml(render(payload, "xml")[0])
    assert root.findtext("callback_id") == as_json["callback_id"]
    xml_params = {p.findtext("key"): p.findtext("value") for p in root.find("api_call_parameters")}
    assert xml_params == as_json["api_call_parameters"]


def test_nested_objects_and_lists_render_as_elements():
    when = datetime(2010, 11, 28, 19, 55, tzinfo=timezone(timedelta(hours=1)))
    callback = {"callback_id": "c1", "callback_time": when, "repeat": None, "active": True}
    payload = success(
        "list", {"state": "scheduled"}, callbacks=[callback, {"callback_id": "c2"}], total=2
    )
    decoded = json.loads(render(payload, "json")[0])
    assert decoded["callbacks"][0] == {
        "callback_id": "c1",
        "callback_time": "2010-11-28T18:55:00Z",
        "repeat": None,
        "active": True,
    }
    root = parse_xml(render(payload, "xml")[0])
    items = root.find("callbacks")
    assert [item.tag for item in items] == ["callback", "callback"]
    assert [child.tag for child in items[0]] == ["callback_id", "callback_time", "repeat", "active"]
    assert items[0].findtext("callback_time") == "2010-11-28T18:55:00Z"
    assert items[0].findtext("repeat") == ""
    assert items[0].findtext("active") == "true"
    assert items[1].findtext("callback_id") == "c2"
    assert root.findtext("total") == "2"


def test_retrieve_object_and_list_without_plural_key():
    payload = success("retrieve", {}, callback={"callback_id": "c1", "history": []}, data=[1, 2])
    root = parse_xml(render(payload, "xml")[0])
    assert root.find("callback").findtext("callback_id") == "c1"
    assert list(root.find("callback").find("history")) == []
    assert [(item.tag, item.text) for item in root.find("data")] == [("item", "1"), ("item", "2")]
    assert list(root.find("api_call_parameters")) == []


def test_xml_survives_control_characters_and_keeps_carriage_returns():
    params = {"note": "line1\r\nline2\x01end\ud800"}
    root = parse_xml(render(success("create", params), "xml")[0])
    assert root.find("api_call_parameters")[0].findtext("value") == "line1\r\nline2\ufffdend\ufffd"
    body = render(success("create", params), "json")[0]
    assert json.loads(body)["api_call_parameters"]["note"] == "line1\r\nline2\x01end\ufffd"
    body.encode("utf-8")


def test_success_builder_copies_params():
    params = {"a": "1"}
    payload = success("create", params, callback_id="c")
    params["b"] = "2"
    assert payload["api_call_parameters"] == {"a": "1"}
    assert list(payload) == ["success", "api_function", "api_call_parameters", "callback_id"]


def test_render_refuses_what_it_cannot_represent():
    with pytest.raises(ValueError):
        render(error("internal_error"), "yaml")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        render({"success": 1, "bad name": "x"}, "xml")
    with pytest.raises(TypeError):
        render({"success": 1, "obj": object()}, "json")
    with pytest.raises(ValueError):
        render({"success": 1, "when": datetime(2010, 1, 1)}, "json")


# ------------------------------------------------------------------ list parameters, anchor


def test_list_parameters_and_cursor_round_trip():
    from chalicelib.domain.scheduled import decode_cursor, encode_cursor, parse_list

    callback_id = "1a2080d743f2688609bac8b0"
    cursor = encode_cursor(callback_id)
    assert len(cursor) == 16 and callback_id not in cursor
    assert decode_cursor(cursor) == callback_id
    wanted = parse_list({"api_key": "k", "state": "failed", "limit": "7", "cursor": cursor})
    assert (wanted.state, wanted.limit, wanted.after) == ("failed", 7, callback_id)
    assert wanted.api_call_parameters == {"state": "failed", "limit": "7", "cursor": cursor}
    assert parse_list({"api_key": "k", "state": "", "limit": ""}).limit == 50
    for params, key in [
        ({"state": "FAILED"}, "state_invalid"),
        ({"limit": "100"}, None),
        ({"limit": "101"}, "limit_invalid"),
        ({"cursor": cursor[:-1]}, "cursor_invalid"),
    ]:
        if key is None:
            parse_list({"api_key": "k", **params})
            continue
        with pytest.raises(ScheduleError) as caught:
            parse_list({"api_key": "k", **params})
        assert caught.value.key == key


def test_create_keeps_the_clients_offset_for_calendar_repeats():
    from chalicelib.domain.scheduled import anchor_at

    params = base(
        callback_time="2011-01-31T23:30:00-05:00",
        callback_repeat="1",
        callback_repeat_type="interval",
        callback_repeat_interval_unit="months",
        callback_repeat_interval="1",
    )
    request = parse_create(params, datetime(2011, 1, 1, tzinfo=UTC))
    assert request.callback_time == datetime(2011, 2, 1, 4, 30, tzinfo=UTC)
    assert request.offset_seconds == -5 * 3600
    anchor = anchor_at(request.callback_time, request.offset_seconds)
    assert request.repeat is not None
    # Feb 28 23:30 at -05:00 (the client's month end), not Mar 1 04:30Z + 1 month
    assert fire_time(anchor, request.repeat, 1) == datetime(2011, 3, 1, 4, 30, tzinfo=UTC)
    assert fire_time(anchor, request.repeat, 2) == datetime(2011, 4, 1, 4, 30, tzinfo=UTC)
