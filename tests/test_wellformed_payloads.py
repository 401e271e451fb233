"""Well-formed payloads (issue 13 item 6): every campaign XML body parses, whatever the payload
held, and the campaign test-event endpoint has POST /events's payload size limit."""

from __future__ import annotations

import json
import threading
from typing import Any
from urllib.parse import parse_qsl

import pytest
from defusedxml import ElementTree as ET
from werkzeug import Request, Response

from chalicelib.api.events import MAX_PAYLOAD_BYTES
from chalicelib.domain import campaign_payload

REG = "/companies/{}/campaigns/config/callbacks"
TEST_EVENT = "/companies/{}/campaigns/config/callback_events/test"
R = "\ufffd"

# Characters XML 1.0 cannot carry, not even as character references, next to ones it can.
NASTY_VALUE = "a\x00b\x01c\x08d\x0be\x0cf\x1fg\ud800h\udc80i\ufffej\uffffk"
NASTY_VALUE_SEEN = f"a{R}b{R}c{R}d{R}e{R}f{R}g{R}h{R}i{R}j{R}k"
KEPT = 'tab\there, line\nbreak, <markup> & "quotes" ]]> \U0001f600 \ufffd \ud7ff \ue000'
NASTY_KEY = "key\x01with\ud83d\ufffe"
NASTY_KEY_SEEN = f"key{R}with{R}{R}"


def _event_fields(payload: dict[str, Any]) -> dict[str, Any]:
    content = {
        "event": {
            "event_id": "evt_1",
            "event_type": "order.paid",
            "received_at": "2026-11-30T03:00:00.000Z",
            "payload": payload,
        }
    }
    return campaign_payload.fields(content, 1)


@pytest.mark.parametrize("content_type", ["application/xml", "text/xml"])
def test_xml_bodies_parse_with_forbidden_characters_in_keys_and_values(content_type):
    payload = {
        "note": NASTY_VALUE,
        "kept": KEPT,
        NASTY_KEY: NASTY_VALUE,
        "nested": {"deep": "\x02\ud800"},
        "list": ["\uffff", 1],
    }
    body, params, headers = campaign_payload.render(_event_fields(payload), "POST", content_type)
    assert params is None and headers == {"Content-Type": content_type}
    assert body is not None
    root = ET.fromstring(body)  # raises on any character XML 1.0 forbids
    assert root.findtext("note") == NASTY_VALUE_SEEN
    assert root.findtext("kept") == KEPT  # what XML can carry arrives unchanged
    [odd] = root.findall("field")
    assert odd.get("name") == NASTY_KEY_SEEN and odd.text == NASTY_VALUE_SEEN
    assert json.loads(root.findtext("nested") or "") == {"deep": "\x02\ud800"}  # JSON-escaped
    assert json.loads(root.findtext("list") or "") == ["\uffff", 1]
    assert root.findtext("event_id") == "evt_1"


def test_form_and_get_encodings_survive_lone_surrogates():
    data = _event_fields({"note": "x\ud800y", "k\udc00": "v"})
    form, _, _ = campaign_payload.render(data, "POST", "application/x-www-form-urlencoded")
    assert form is not None
    decoded = dict(parse_qsl(form.decode(), keep_blank_values=True))
    assert decoded["note"] == f"x{R}y" and decoded[f"k{R}"] == "v"
    _, params, _ = campaign_payload.render(data, "GET", "application/json")
    assert params is not None
    assert dict(params)["note"] == f"x{R}y"


class XmlReceiver:
    def __init__(self, httpserver: Any) -> None:
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()
        self.url = httpserver.url_for("/xml")
        httpserver.expect_request("/xml").respond_with_handler(self.handle)

    def handle(self, request: Request) -> Response:
        with self.lock:
            self.bodies.append(request.get_data())
        return Response("ok", status=200)


def test_a_published_event_with_forbidden_characters_arrives_as_parseable_xml(
    client, make_tenant, worker, httpserver
):
    owner = make_tenant()
    receiver = XmlReceiver(httpserver)
    created = client.http.post(
        REG.format(owner.tenant_id),
        headers=owner.headers,
        body=json.dumps(
            {
                "event_type": "order.paid",
                "destination_url": receiver.url,
                "content_type": "application/xml",
            }
        ),
    )
    assert created.status_code == 201, created.json_body
    # json.dumps writes the forbidden characters as \u escapes, as a publisher's JSON would.
    payload = {"note": NASTY_VALUE, "kept": KEPT, NASTY_KEY: "v\x1b"}
    published = client.http.post(
        "/events",
        headers=owner.headers,
        body=json.dumps({"event_type": "order.paid", "payload": payload}),
    )
    assert published.status_code == 202, published.json_body
    tested = client.http.post(
        TEST_EVENT.format(owner.tenant_id),
        headers=owner.headers,
        body=json.dumps({"event_type": "order.paid", "payload": payload}),
    )
    assert tested.status_code == 201, tested.json_body
    worker.run_until_idle()

    assert len(receiver.bodies) == 2
    for body in receiver.bodies:
        root = ET.fromstring(body)
        assert root.findtext("note") == NASTY_VALUE_SEEN
        assert root.findtext("kept") == KEPT
        [odd] = root.findall("field")
        assert (odd.get("name"), odd.text) == (NASTY_KEY_SEEN, f"v{R}")
    assert sorted(ET.fromstring(b).findtext("callback_type") for b in receiver.bodies) == [
        "event",
        "test",
    ]


def test_the_test_event_endpoint_refuses_a_payload_over_the_events_limit(
    client, make_tenant, httpserver
):
    owner = make_tenant()
    receiver = XmlReceiver(httpserver)
    client.http.post(
        REG.format(owner.tenant_id),
        headers=owner.headers,
        body=json.dumps({"event_type": "order.paid", "destination_url": receiver.url}),
    )
    overhead = len(json.dumps({"blob": ""}))
    at_limit = {"blob": "x" * (MAX_PAYLOAD_BYTES - overhead)}
    over_limit = {"blob": "x" * (MAX_PAYLOAD_BYTES - overhead + 1)}

    def send(path: str, payload: dict[str, Any]) -> Any:
        body = json.dumps({"event_type": "order.paid", "payload": payload})
        return client.http.post(path, headers=owner.headers, body=body)

    refused = send(TEST_EVENT.format(owner.tenant_id), over_limit)
    assert refused.status_code == 400
    assert refused.json_body == {
        "error": "invalid",
        "message": f"payload is larger than {MAX_PAYLOAD_BYTES} bytes",
        "field": "payload",
    }
    # POST /events draws the line at the same place, with the same answer
    assert send("/events", over_limit).json_body == refused.json_body
    assert send(TEST_EVENT.format(owner.tenant_id), at_limit).status_code == 201
    assert send("/events", at_limit).status_code == 202
