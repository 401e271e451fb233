"""Call notifier rules and wire formats, as a subscriber or API client would observe them."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import pytest
from defusedxml import ElementTree as SafeET

from chalicelib.domain.callnotify import (
    CALL_EVENT_TYPES,
    METHODS,
    SELECTIONS,
    CallEvent,
    CallnotifyError,
    access_denied,
    customer_not_found,
    internal_error,
    invalid_method,
    invalid_selection,
    not_found,
    parse_call_event,
    render_http,
    render_stream,
    selection_matches,
    url_error,
    validate_notifier_fields,
)

CUSTOMER = "52f4fd7734697b2800000000"
NOTIFIER = "52f4fd7734697b2800000001"
EVENT_ID = "ev-0001"
IDS: dict[str, Any] = {
    "customer_id": CUSTOMER,
    "notifier_id": NOTIFIER,
    "event_id": EVENT_ID,
    "attempt": 3,
}

BASIC_END = [
    ("event", "CALL_END"),
    ("selection", "MVNO"),
    ("callid", "a1b2c3"),
    ("from", "+4512345678"),
    ("to", "+4587654321"),
    ("direction", "in"),
    ("timestamp", "2016-05-27T09:30:00Z"),
    ("duration", "42"),
    ("cause", "normal"),
]
ADDITIONAL = [
    ("customerid", CUSTOMER),
    ("notifyid", NOTIFIER),
    ("eventid", EVENT_ID),
    ("attempt", "3"),
]


def end_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "call_id": "a1b2c3",
        "from": "+4512345678",
        "to": "+4587654321",
        "direction": "in",
        "timestamp": "2016-05-27T11:30:00+02:00",
        "duration": 42,
        "cause": "normal",
    }
    payload.update(overrides)
    return payload


def start_payload(**overrides: Any) -> dict[str, Any]:
    payload = end_payload()
    del payload["duration"], payload["cause"]
    payload.update(overrides)
    return payload


@pytest.fixture
def end_event() -> CallEvent:
    return parse_call_event("CALL_END", "MVNO", end_payload())


def xml_fields(body: bytes) -> tuple[str, list[tuple[str, str]]]:
    root = SafeET.fromstring(body)
    for child in root:
        assert len(child) == 0, "the format is flat: no nested elements"
    return root.tag, [(child.tag, child.text or "") for child in root]


# ------------------------------------------------------------------------------- constants


def test_constants_are_the_seed_spellings() -> None:
    assert METHODS == ("POSTARGS", "POSTXML1", "POSTXML2", "POSTJSON", "GET1", "GET2")
    assert SELECTIONS == ("SIP", "MVNO", "ALL")
    assert CALL_EVENT_TYPES == ("CALL_START", "CALL_ANSWER", "CALL_END")


# ---------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("factory", "status", "code", "message"),
    [
        (access_denied, 403, "access_denied", "Insufficient access level"),
        (customer_not_found, 404, "customer", "Customer not found"),
        (not_found, 404, "not_found", "Call notify not found"),
        (invalid_method, 422, "method", "Invalid method"),
        (invalid_selection, 422, "selection", "Invalid selection"),
    ],
)
def test_error_rows(
    factory: Callable[[], CallnotifyError], status: int, code: str, message: str
) -> None:
    err = factory()
    assert issubclass(type(err), ValueError)
    assert (err.status, err.code, err.message) == (status, code, message)
    assert err.body() == {"error": code, "message": message}
    assert str(err) == message


def test_url_error_wraps_the_url_module_message() -> None:
    err = url_error("Port is invalid")
    assert err.status == 422
    assert err.body() == {"error": "url", "message": "Port is invalid"}


def test_internal_error_is_generic() -> None:
    err = internal_error()
    assert err.status == 500
    assert err.body()["error"] == "internal_error"
    assert "Traceback" not in err.message
    assert err.message.strip()


def test_error_factories_return_fresh_instances() -> None:
    assert invalid_method() is not invalid_method()


# ------------------------------------------------------------------------------ validation


def test_create_returns_clean_fields_and_drops_id_and_unknown() -> None:
    body = {
        "_id": "52f4fd7734697b2800000009",
        "url": "http://100.64.123.100:4000/call",
        "method": "POSTXML1",
        "selection": "MVNO",
        "colour": "blue",
    }
    assert validate_notifier_fields(body, partial=False) == {
        "url": "http://100.64.123.100:4000/call",
        "method": "POSTXML1",
        "selection": "MVNO",
    }


def test_url_is_passed_through_unjudged() -> None:
    body = {"url": "  not even a url  ", "method": "GET1", "selection": "ALL"}
    assert validate_notifier_fields(body, partial=False)["url"] == "  not even a url  "


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("selection", SELECTIONS)
def test_every_method_and_selection_is_accepted(method: str, selection: str) -> None:
    body = {"url": "http://h/", "method": method, "selection": selection}
    assert validate_notifier_fields(body, partial=False)["method"] == method


@pytest.mark.parametrize(
    ("missing", "code", "message"),
    [
        ("url", "url", "Invalid URL"),
        ("method", "method", "Invalid method"),
        ("selection", "selection", "Invalid selection"),
    ],
)
def test_create_requires_every_field(missing: str, code: str, message: str) -> None:
    body = {"url": "http://h/", "method": "GET1", "selection": "SIP"}
    del body[missing]
    with pytest.raises(CallnotifyError) as caught:
        validate_notifier_fields(body, partial=False)
    assert caught.value.status == 422
    assert caught.value.body() == {"error": code, "message": message}


@pytest.mark.parametrize(
    "bad", ["postjson", "PostJson", " POSTJSON", "POSTJSON ", "POST", "", 1, None]
)
def test_method_is_exact_and_case_sensitive(bad: Any) -> None:
    with pytest.raises(CallnotifyError) as caught:
        validate_notifier_fields(
            {"url": "http://h/", "method": bad, "selection": "ALL"}, partial=False
        )
    assert caught.value.body() == {"error": "method", "message": "Invalid method"}


@pytest.mark.parametrize("bad", ["all", "Sip", "BOTH", "", ["SIP"], None])
def test_selection_is_exact_and_case_sensitive(bad: Any) -> None:
    with pytest.raises(CallnotifyError) as caught:
        validate_notifier_fields(
            {"url": "http://h/", "method": "GET1", "selection": bad}, partial=False
        )
    assert caught.value.body() == {"error": "selection", "message": "Invalid selection"}


@pytest.mark.parametrize("bad", [None, 42, {"host": "h"}, ["http://h/"]])
def test_non_string_url_is_invalid_url(bad: Any) -> None:
    with pytest.raises(CallnotifyError) as caught:
        validate_notifier_fields({"url": bad, "method": "GET1", "selection": "ALL"}, partial=False)
    assert caught.value.body() == {"error": "url", "message": "Invalid URL"}


def test_fields_are_checked_in_seed_order() -> None:
    with pytest.raises(CallnotifyError) as caught:
        validate_notifier_fields({"method": "x", "selection": "y"}, partial=False)
    assert caught.value.code == "url"
    with pytest.raises(CallnotifyError) as caught:
        validate_notifier_fields({"url": "u", "method": "x", "selection": "y"}, partial=False)
    assert caught.value.code == "method"


def test_update_accepts_any_subset() -> None:
    assert validate_notifier_fields({}, partial=True) == {}
    assert validate_notifier_fields({"_id": "x", "selection": "SIP"}, partial=True) == {
        "selection": "SIP"
    }
    assert validate_notifier_fields({"method": "GET2"}, partial=True) == {"method": "GET2"}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"method": "get1"}, "method"),
        ({"method": None}, "method"),
        ({"selection": None}, "selection"),
        ({"selection": "none"}, "selection"),
        ({"url": None}, "url"),
    ],
)
def test_update_still_validates_present_fields(body: dict[str, Any], code: str) -> None:
    with pytest.raises(CallnotifyError) as caught:
        validate_notifier_fields(body, partial=True)
    assert caught.value.code == code
    assert caught.value.status == 422


def test_non_mapping_body_is_treated_as_empty() -> None:
    with pytest.raises(CallnotifyError) as caught:
        validate_notifier_fields(["url"], partial=False)  # type: ignore[arg-type]
    assert caught.value.code == "url"
    assert validate_notifier_fields(["url"], partial=True) == {}  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- selection


@pytest.mark.parametrize(
    ("notifier", "event", "expected"),
    [
        ("ALL", "SIP", True),
        ("ALL", "MVNO", True),
        ("SIP", "SIP", True),
        ("SIP", "MVNO", False),
        ("MVNO", "MVNO", True),
        ("MVNO", "SIP", False),
        ("ALL", "ALL", False),
        ("all", "SIP", False),
        ("sip", "SIP", False),
        ("", "SIP", False),
    ],
)
def test_selection_matches(notifier: str, event: str, expected: bool) -> None:
    assert selection_matches(notifier, event) is expected


# ------------------------------------------------------------------------------ call events


def test_parse_call_end(end_event: CallEvent) -> None:
    assert end_event.event_type == "CALL_END"
    assert end_event.selection == "MVNO"
    assert end_event.call_id == "a1b2c3"
    assert end_event.from_ == "+4512345678"
    assert end_event.to == "+4587654321"
    assert end_event.direction == "in"
    assert end_event.timestamp == datetime(2016, 5, 27, 9, 30, tzinfo=UTC)
    assert end_event.duration == 42
    assert end_event.cause == "normal"
    assert end_event.extra == ()


@pytest.mark.parametrize("event_type", ["CALL_START", "CALL_ANSWER"])
def test_parse_non_end_events_have_no_duration_or_cause(event_type: str) -> None:
    event = parse_call_event(event_type, "SIP", start_payload(direction="out"))
    assert (event.duration, event.cause, event.direction) == (None, None, "out")


def test_extra_string_fields_are_kept_sorted() -> None:
    event = parse_call_event("CALL_START", "SIP", start_payload(zone="dk", Trunk="t1"))
    assert event.extra == (("Trunk", "t1"), ("zone", "dk"))


def test_as_published_round_trips(end_event: CallEvent) -> None:
    event = parse_call_event("CALL_END", "MVNO", end_payload(trunk="t1"))
    published = event.as_published()
    again = parse_call_event(published["event_type"], published["selection"], published["payload"])
    assert again == event
    assert published["payload"]["timestamp"] == "2016-05-27T09:30:00Z"


def test_call_event_is_immutable(end_event: CallEvent) -> None:
    with pytest.raises(AttributeError):
        end_event.call_id = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("event_type", "selection", "payload", "field"),
    [
        ("CALL_RING", "SIP", end_payload(), "event_type"),
        ("call_end", "SIP", end_payload(), "event_type"),
        ("CALL_END", "ALL", end_payload(), "selection"),
        ("CALL_END", "sip", end_payload(), "selection"),
        ("CALL_END", "SIP", None, "payload"),
        ("CALL_END", "SIP", end_payload(call_id=""), "call_id"),
        ("CALL_END", "SIP", end_payload(call_id=7), "call_id"),
        ("CALL_END", "SIP", end_payload(**{"from": None}), "from"),
        ("CALL_END", "SIP", end_payload(to=4587654321), "to"),
        ("CALL_END", "SIP", end_payload(direction="IN"), "direction"),
        ("CALL_END", "SIP", end_payload(direction="inbound"), "direction"),
        ("CALL_END", "SIP", end_payload(timestamp="yesterday"), "timestamp"),
        ("CALL_END", "SIP", end_payload(timestamp="2016-05-27T09:30:00"), "timestamp"),
        ("CALL_END", "SIP", end_payload(timestamp=1464341400), "timestamp"),
        ("CALL_END", "SIP", end_payload(duration="42"), "duration"),
        ("CALL_END", "SIP", end_payload(duration=4.2), "duration"),
        ("CALL_END", "SIP", end_payload(duration=True), "duration"),
        ("CALL_END", "SIP", end_payload(duration=-1), "duration"),
        ("CALL_END", "SIP", start_payload(cause="normal"), "duration"),
        ("CALL_END", "SIP", end_payload(cause=None), "cause"),
        ("CALL_START", "SIP", start_payload(duration=0), "duration"),
        ("CALL_ANSWER", "SIP", start_payload(cause="x"), "cause"),
        ("CALL_END", "SIP", end_payload(trunk=5), "trunk"),
        ("CALL_END", "SIP", end_payload(**{"bad name": "x"}), "bad name"),
        ("CALL_END", "SIP", end_payload(callid="dup"), "callid"),
        ("CALL_END", "SIP", end_payload(EventID="dup"), "EventID"),
        ("CALL_END", "SIP", end_payload(xmlns="x"), "xmlns"),
        ("CALL_END", "SIP", end_payload(call_id="a\x00b"), "call_id"),
        ("CALL_END", "SIP", end_payload(cause="x\x1b[31m"), "cause"),
        ("CALL_END", "SIP", end_payload(call_id="x" * 1025), "call_id"),
    ],
)
def test_parse_rejects_naming_the_field(
    event_type: str, selection: str, payload: Any, field: str
) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        parse_call_event(event_type, selection, payload)


def test_too_many_extra_fields() -> None:
    extras = {f"x{i}": "v" for i in range(33)}
    with pytest.raises(ValueError, match=r"^payload:"):
        parse_call_event("CALL_START", "SIP", start_payload(**extras))
    assert (
        len(
            parse_call_event(
                "CALL_START", "SIP", start_payload(**dict(list(extras.items())[:32]))
            ).extra
        )
        == 32
    )


def test_withheld_numbers_and_empty_cause_are_allowed() -> None:
    event = parse_call_event("CALL_END", "SIP", end_payload(**{"from": "", "cause": ""}))
    assert (event.from_, event.cause) == ("", "")


# ----------------------------------------------------------------------------- wire formats


def test_postargs(end_event: CallEvent) -> None:
    r = render_http("POSTARGS", end_event, **IDS)
    assert (r.http_method, r.query, r.content_type) == (
        "POST",
        [],
        "application/x-www-form-urlencoded",
    )
    assert r.body is not None
    assert parse_qsl(r.body.decode("ascii"), keep_blank_values=True) == BASIC_END
    assert r.body.startswith(b"event=CALL_END&selection=MVNO&callid=a1b2c3&from=%2B4512345678&")


def test_postxml1(end_event: CallEvent) -> None:
    r = render_http("POSTXML1", end_event, **IDS)
    assert (r.http_method, r.query, r.content_type) == (
        "POST",
        [],
        "application/xml; charset=utf-8",
    )
    assert r.body is not None
    assert r.body.startswith(b"<?xml version='1.0' encoding='utf-8'?>\n<callevent>")
    assert xml_fields(r.body) == ("callevent", BASIC_END)


def test_postxml2(end_event: CallEvent) -> None:
    r = render_http("POSTXML2", end_event, **IDS)
    assert (r.http_method, r.query, r.content_type) == (
        "POST",
        [],
        "application/xml; charset=utf-8",
    )
    assert r.body is not None
    assert xml_fields(r.body) == ("callevent", BASIC_END + ADDITIONAL)


def test_postjson(end_event: CallEvent) -> None:
    r = render_http("POSTJSON", end_event, **IDS)
    assert (r.http_method, r.query, r.content_type) == ("POST", [], "application/json")
    assert r.body is not None
    decoded = json.loads(r.body)
    expected: dict[str, Any] = dict(BASIC_END)
    expected["duration"] = 42
    expected["eventid"] = EVENT_ID
    assert decoded == expected
    assert list(decoded) == [name for name, _ in BASIC_END] + ["eventid"]
    assert "customerid" not in decoded and "attempt" not in decoded


def test_get1(end_event: CallEvent) -> None:
    r = render_http("GET1", end_event, **IDS)
    assert r == type(r)("GET", BASIC_END, None, None)


def test_get2(end_event: CallEvent) -> None:
    r = render_http("GET2", end_event, **IDS)
    assert r == type(r)("GET", BASIC_END + ADDITIONAL, None, None)


def test_start_event_has_no_duration_or_cause_on_the_wire() -> None:
    event = parse_call_event("CALL_START", "SIP", start_payload())
    names = [name for name, _ in render_http("GET1", event, **IDS).query]
    assert names == ["event", "selection", "callid", "from", "to", "direction", "timestamp"]
    body = render_http("POSTJSON", event, **IDS).body
    assert body is not None
    assert "duration" not in json.loads(body)
    assert "cause" not in json.loads(render_stream(event, **IDS))


def test_extra_fields_follow_the_basic_fields_everywhere() -> None:
    event = parse_call_event("CALL_START", "SIP", start_payload(zone="dk", trunk="t1"))
    for method in ("GET1", "GET2"):
        query = render_http(method, event, **IDS).query
        assert query[7:9] == [("trunk", "t1"), ("zone", "dk")]
    xml = render_http("POSTXML1", event, **IDS).body
    assert xml is not None
    assert xml_fields(xml)[1][7:] == [("trunk", "t1"), ("zone", "dk")]
    form = render_http("POSTARGS", event, **IDS).body
    assert form is not None
    assert parse_qsl(form.decode())[7:] == [("trunk", "t1"), ("zone", "dk")]
    assert json.loads(render_stream(event, **IDS))["zone"] == "dk"


NASTY = "<&>\"' Søren Ærø 電話 😀"


def test_xml_escapes_markup_and_keeps_non_ascii() -> None:
    event = parse_call_event("CALL_END", "SIP", end_payload(cause=NASTY, note=NASTY))
    body = render_http("POSTXML2", event, **IDS).body
    assert body is not None
    assert b"<cause>&lt;&amp;&gt;\"' S\xc3\xb8ren" in body
    assert NASTY.encode("utf-8")[3:] in body  # the non-ASCII part is raw UTF-8, not entities
    fields = dict(xml_fields(body)[1])
    assert fields["cause"] == NASTY
    assert fields["note"] == NASTY


def test_form_body_escapes_and_encodes_utf8() -> None:
    event = parse_call_event("CALL_END", "SIP", end_payload(cause=NASTY + "&x=1", note="a b+c"))
    body = render_http("POSTARGS", event, **IDS).body
    assert body is not None
    body.decode("ascii")  # percent-encoded throughout
    fields = dict(parse_qsl(body.decode("ascii"), encoding="utf-8"))
    assert fields["cause"] == NASTY + "&x=1"
    assert fields["note"] == "a b+c"
    assert "x" not in fields


def test_get_query_values_are_raw_strings_for_the_url_builder() -> None:
    event = parse_call_event("CALL_END", "SIP", end_payload(cause=NASTY))
    assert dict(render_http("GET2", event, **IDS).query)["cause"] == NASTY


def test_json_keeps_unicode() -> None:
    event = parse_call_event("CALL_END", "SIP", end_payload(cause=NASTY))
    body = render_http("POSTJSON", event, **IDS).body
    assert body is not None
    assert json.loads(body.decode("utf-8"))["cause"] == NASTY


def test_stream_is_one_compact_json_line(end_event: CallEvent) -> None:
    line = render_stream(end_event, **IDS)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert b": " not in line and b", " not in line
    decoded = json.loads(line)
    expected: dict[str, Any] = dict(BASIC_END + ADDITIONAL)
    expected["duration"] = 42
    expected["attempt"] = 3
    assert decoded == expected
    assert list(decoded) == [name for name, _ in BASIC_END + ADDITIONAL]


def test_stream_newlines_in_values_do_not_break_framing() -> None:
    event = parse_call_event("CALL_END", "SIP", end_payload(cause="line1\nline2\r\n"))
    line = render_stream(event, **IDS)
    assert line.count(b"\n") == 1
    assert json.loads(line)["cause"] == "line1\nline2\r\n"


def test_rendering_is_deterministic(end_event: CallEvent) -> None:
    for method in METHODS:
        assert render_http(method, end_event, **IDS) == render_http(method, end_event, **IDS)


def test_unknown_method_cannot_be_rendered(end_event: CallEvent) -> None:
    with pytest.raises(ValueError, match=r"^method:"):
        render_http("postjson", end_event, **IDS)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"attempt": 0}, "attempt"),
        ({"attempt": True}, "attempt"),
        ({"event_id": ""}, "event_id"),
        ({"customer_id": None}, "customer_id"),
        ({"notifier_id": "a\x00"}, "notifier_id"),
    ],
)
def test_additional_data_is_checked(
    end_event: CallEvent, override: dict[str, Any], field: str
) -> None:
    ids = {**IDS, **override}
    with pytest.raises(ValueError, match=f"^{field}:"):
        render_http("GET2", end_event, **ids)
    with pytest.raises(ValueError, match=f"^{field}:"):
        render_stream(end_event, **ids)
