"""Call events delivered to notifiers: every wire format received by a real loopback HTTP
server, a real TCP listener and a real UDP socket; selection routing; retries; 410; skips."""

from __future__ import annotations

import json
import socket
import threading
import time
from urllib.parse import parse_qsl

import pytest
from defusedxml import ElementTree as SafeET
from standardwebhooks.webhooks import Webhook
from werkzeug import Request, Response

BASE = "/customer/{}/callnotify"

# The event of docs/callnotify-formats.md, so the bytes can be compared with the documentation.
DOC_PAYLOAD = {
    "call_id": "a1b2c3d4@10.0.0.1",
    "from": "+4512345678",
    "to": "+4587654321",
    "direction": "in",
    "timestamp": "2016-05-27T11:30:00+02:00",
    "duration": 42,
    "cause": "normal",
    "trunk": "dk-1",
}
DOC_FORM = (
    "event=CALL_END&selection=MVNO&callid=a1b2c3d4%4010.0.0.1&from=%2B4512345678"
    "&to=%2B4587654321&direction=in&timestamp=2016-05-27T09%3A30%3A00Z&duration=42"
    "&cause=normal&trunk=dk-1"
)
DOC_XML_FIELDS = (
    "<event>CALL_END</event><selection>MVNO</selection><callid>a1b2c3d4@10.0.0.1</callid>"
    "<from>+4512345678</from><to>+4587654321</to><direction>in</direction>"
    "<timestamp>2016-05-27T09:30:00Z</timestamp><duration>42</duration><cause>normal</cause>"
    "<trunk>dk-1</trunk>"
)
XML_DECLARATION = "<?xml version='1.0' encoding='utf-8'?>\n"
DOC_JSON_FIELDS = {
    "event": "CALL_END",
    "selection": "MVNO",
    "callid": "a1b2c3d4@10.0.0.1",
    "from": "+4512345678",
    "to": "+4587654321",
    "direction": "in",
    "timestamp": "2016-05-27T09:30:00Z",
    "duration": 42,
    "cause": "normal",
    "trunk": "dk-1",
}


def create(client, tenant, url, method="POSTJSON", selection="ALL"):
    response = client.http.post(
        BASE.format(tenant.tenant_id),
        headers=tenant.headers,
        body=json.dumps({"url": url, "method": method, "selection": selection}),
    )
    assert response.status_code == 201, response.json_body
    return response.json_body


def publish(client, tenant, event_type="CALL_END", selection="MVNO", payload=None, status=202):
    body = {
        "event_type": event_type,
        "selection": selection,
        "payload": DOC_PAYLOAD if payload is None else payload,
    }
    response = client.http.post("/events", headers=tenant.headers, body=json.dumps(body))
    assert response.status_code == status, response.json_body
    return response.json_body


def deliveries_of(client, tenant, event_id):
    event = client.http.get(f"/events/{event_id}", headers=tenant.headers).json_body
    return [
        client.http.get(f"/deliveries/{d['delivery_id']}", headers=tenant.headers).json_body
        for d in event["deliveries"]
    ]


class HttpRecorder:
    """Records every request to ``path`` on the pytest-httpserver; answers from ``script``."""

    def __init__(self, httpserver, path, query="", script=(200,)):
        self.requests: list[dict] = []
        self.script = list(script)
        self.lock = threading.Lock()
        self.url = httpserver.url_for(path) + (f"?{query}" if query else "")
        httpserver.expect_request(path).respond_with_handler(self.handle)

    def handle(self, request: Request) -> Response:
        with self.lock:
            status = self.script[min(len(self.requests), len(self.script) - 1)]
            self.requests.append(
                {
                    "method": request.method,
                    "headers": dict(request.headers),
                    "body": request.get_data(),
                    "query": request.query_string.decode("ascii"),
                }
            )
        return Response("ok", status=status)


class TcpListener:
    """A real TCP listener on loopback: reads each connection to EOF, then closes it."""

    def __init__(self, port: int = 0, *, silent: bool = False) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.received: list[bytes] = []
        self.silent = silent  # hold connections open without answering
        self.held: list[socket.socket] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            if self.silent:
                self.held.append(conn)
                continue
            conn.settimeout(5)
            data = b""
            with conn:
                while chunk := conn.recv(65536):
                    data += chunk
            self.received.append(data)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()
        for conn in self.held:
            conn.close()
        self.sock.close()


class UdpSocket:
    """A real UDP socket on loopback, recording every datagram."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.url = f"udp://127.0.0.1:{self.port}"
        self.received: list[bytes] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                data, _ = self.sock.recvfrom(65536)
            except (TimeoutError, OSError):
                continue
            self.received.append(data)

    def wait_for(self, count: int, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def tcp_listener():
    listeners: list[TcpListener] = []

    def start(port: int = 0, **kwargs) -> TcpListener:
        listener = TcpListener(port, **kwargs)
        listeners.append(listener)
        return listener

    yield start
    for listener in listeners:
        listener.stop()


@pytest.fixture
def udp_socket():
    sock = UdpSocket()
    yield sock
    sock.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- HTTP wire formats


def test_every_http_method_puts_the_documented_bytes_on_the_wire(
    client, make_tenant, worker, httpserver
):
    owner = make_tenant()
    recorders = {
        method: HttpRecorder(httpserver, f"/{method.lower()}", query="key=s3cret")
        for method in ("POSTARGS", "POSTXML1", "POSTXML2", "POSTJSON", "GET1", "GET2")
    }
    notifiers = {
        method: create(client, owner, recorder.url, method=method, selection="MVNO")
        for method, recorder in recorders.items()
    }
    published = publish(client, owner)
    assert published["deliveries"] == 6
    worker.run_until_idle()

    event_id = published["event_id"]
    sent = {}
    for method, recorder in recorders.items():
        assert len(recorder.requests) == 1, method
        sent[method] = recorder.requests[0]
        # every HTTP method is signed (Standard Webhooks), verified with the reference package
        Webhook(notifiers[method]["signing_secret"]).verify(
            sent[method]["body"], sent[method]["headers"], json_parse=False
        )

    def additional(method):
        return (
            f"customerid={owner.tenant_id}&notifyid={notifiers[method]['_id']}"
            f"&eventid={event_id}&attempt=1"
        )

    def additional_xml(method):
        return (
            f"<customerid>{owner.tenant_id}</customerid>"
            f"<notifyid>{notifiers[method]['_id']}</notifyid>"
            f"<eventid>{event_id}</eventid><attempt>1</attempt>"
        )

    form = sent["POSTARGS"]
    assert form["method"] == "POST" and form["query"] == "key=s3cret"
    assert form["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert form["body"].decode() == DOC_FORM

    for method, extra in (("POSTXML1", ""), ("POSTXML2", additional_xml("POSTXML2"))):
        request = sent[method]
        assert request["method"] == "POST" and request["query"] == "key=s3cret"
        assert request["headers"]["Content-Type"] == "application/xml; charset=utf-8"
        expected = f"{XML_DECLARATION}<callevent>{DOC_XML_FIELDS}{extra}</callevent>"
        assert request["body"].decode("utf-8") == expected
        assert SafeET.fromstring(request["body"]).tag == "callevent"  # well-formed

    posted_json = sent["POSTJSON"]
    assert posted_json["method"] == "POST"
    assert posted_json["headers"]["Content-Type"] == "application/json"
    assert json.loads(posted_json["body"]) == {**DOC_JSON_FIELDS, "eventid": event_id}
    assert list(json.loads(posted_json["body"])) == [*DOC_JSON_FIELDS, "eventid"]  # wire order

    get1, get2 = sent["GET1"], sent["GET2"]
    assert get1["method"] == get2["method"] == "GET"
    assert get1["body"] == get2["body"] == b""
    assert "Content-Type" not in get1["headers"]
    assert get1["query"] == f"key=s3cret&{DOC_FORM}"  # the URL's own args first, kept
    assert get2["query"] == f"key=s3cret&{DOC_FORM}&{additional('GET2')}"

    logged = deliveries_of(client, owner, event_id)
    assert {d["status"] for d in logged} == {"delivered"}
    assert all(d["family"] == "callnotify" for d in logged)


def test_markup_and_unicode_survive_every_format(client, make_tenant, worker, httpserver):
    owner = make_tenant()
    xml = HttpRecorder(httpserver, "/xml")
    form = HttpRecorder(httpserver, "/form")
    get = HttpRecorder(httpserver, "/get")
    create(client, owner, xml.url, method="POSTXML2")
    create(client, owner, form.url, method="POSTARGS")
    create(client, owner, get.url, method="GET1")
    tricky = '<b>Søren & "Ærø"</b> \' ]]>'
    payload = {**DOC_PAYLOAD, "cause": tricky, "from": ""}
    publish(client, owner, payload=payload)
    worker.run_until_idle()
    root = SafeET.fromstring(xml.requests[0]["body"])
    assert root.findtext("cause") == tricky and root.findtext("from") == ""
    assert (
        dict(parse_qsl(form.requests[0]["body"].decode(), keep_blank_values=True))["cause"]
        == tricky
    )
    query = dict(parse_qsl(get.requests[0]["query"], keep_blank_values=True))
    assert query["cause"] == tricky and query["from"] == ""


def test_retried_http_attempts_carry_the_attempt_number_and_the_same_event_id(
    client, make_tenant, worker, httpserver
):
    owner = make_tenant()
    recorder = HttpRecorder(httpserver, "/flaky", script=(500, 503, 200))
    notifier = create(client, owner, recorder.url, method="GET2")
    published = publish(
        client,
        owner,
        event_type="CALL_START",
        selection="SIP",
        payload={k: v for k, v in DOC_PAYLOAD.items() if k not in ("duration", "cause")},
    )
    worker.run_until_idle()
    queries = [dict(parse_qsl(r["query"])) for r in recorder.requests]
    assert [q["attempt"] for q in queries] == ["1", "2", "3"]
    assert {q["eventid"] for q in queries} == {published["event_id"]}
    assert {q["notifyid"] for q in queries} == {notifier["_id"]}
    assert all("duration" not in q and "cause" not in q for q in queries)
    ids = {r["headers"]["Webhook-Id"] for r in recorder.requests}
    assert len(ids) == 1  # the same webhook-id on every attempt
    [delivery] = deliveries_of(client, owner, published["event_id"])
    assert [a.get("status_code") for a in delivery["attempts"]] == [500, 503, 200]
    assert delivery["status"] == "delivered"


# --------------------------------------------------------------------------- TCP and UDP


def _stream_line(owner, notifier, event_id, attempt=1) -> bytes:
    fields = {
        **DOC_JSON_FIELDS,
        "customerid": owner.tenant_id,
        "notifyid": notifier["_id"],
        "eventid": event_id,
        "attempt": attempt,
    }
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def test_tcp_listener_and_udp_socket_receive_one_json_line(
    client, make_tenant, worker, tcp_listener, udp_socket
):
    owner = make_tenant()
    tcp = tcp_listener()
    tcp_notifier = create(client, owner, tcp.url, method="POSTXML1", selection="MVNO")
    udp_notifier = create(client, owner, udp_socket.url, method="GET1", selection="ALL")
    published = publish(client, owner)
    worker.run_until_idle()
    udp_socket.wait_for(1)

    event_id = published["event_id"]
    assert tcp.received == [_stream_line(owner, tcp_notifier, event_id)]  # method is ignored
    assert udp_socket.received == [_stream_line(owner, udp_notifier, event_id)]
    logged = {d["target"]: d for d in deliveries_of(client, owner, event_id)}
    assert logged[tcp.url]["status"] == logged[udp_socket.url]["status"] == "delivered"
    assert logged[tcp.url]["attempts"][0]["url"] == tcp.url
    assert "status_code" not in logged[tcp.url]["attempts"][0]


def test_tcp_retries_until_the_listener_accepts(client, make_tenant, worker, tcp_listener):
    owner = make_tenant()
    port = _free_port()  # nothing listens yet: the first attempt is refused
    notifier = create(client, owner, f"tcp://127.0.0.1:{port}")
    published = publish(client, owner)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        worker.poll()
        [delivery] = deliveries_of(client, owner, published["event_id"])
        if delivery["attempts"]:
            break
    assert delivery["status"] == "retrying"
    assert delivery["attempts"][0]["error"].startswith("connection error")

    listener = tcp_listener(port)
    worker.run_until_idle()
    [delivery] = deliveries_of(client, owner, published["event_id"])
    assert delivery["status"] == "delivered"
    assert len(delivery["attempts"]) == 2
    assert listener.received == [_stream_line(owner, notifier, published["event_id"], attempt=2)]


def test_tcp_listener_that_never_answers_times_out_and_fails(
    client, make_tenant, worker, tcp_listener, monkeypatch
):
    monkeypatch.setenv("RINGBACK_HTTP_TIMEOUT", "0.5")
    monkeypatch.setenv("RINGBACK_RETRY_SCHEDULE", "1")
    owner = make_tenant()
    listener = tcp_listener(silent=True)
    create(client, owner, listener.url)
    published = publish(client, owner)
    worker.run_until_idle()
    [delivery] = deliveries_of(client, owner, published["event_id"])
    assert delivery["status"] == "failed"
    assert [a["error"] for a in delivery["attempts"]] == ["timeout", "timeout"]


def test_udp_is_best_effort_a_sent_datagram_counts(client, make_tenant, worker):
    owner = make_tenant()
    create(client, owner, f"udp://127.0.0.1:{_free_port()}")  # nobody listens
    published = publish(client, owner)
    worker.run_until_idle()
    [delivery] = deliveries_of(client, owner, published["event_id"])
    assert delivery["status"] == "delivered" and len(delivery["attempts"]) == 1


# --------------------------------------------------------------------------- routing


def test_selection_routing_sip_mvno_all(client, make_tenant, worker, tcp_listener):
    owner, other = make_tenant(), make_tenant()
    listeners = {selection: tcp_listener() for selection in ("SIP", "MVNO", "ALL")}
    for selection, listener in listeners.items():
        create(client, owner, listener.url, selection=selection)
    foreign = tcp_listener()
    create(client, other, foreign.url, selection="ALL")

    start = {k: v for k, v in DOC_PAYLOAD.items() if k not in ("duration", "cause")}
    sip = publish(client, owner, event_type="CALL_ANSWER", selection="SIP", payload=start)
    mvno = publish(client, owner, event_type="CALL_START", selection="MVNO", payload=start)
    assert sip["deliveries"] == 2 and mvno["deliveries"] == 2
    not_a_call = client.http.post(
        "/events",
        headers=owner.headers,
        body=json.dumps({"event_type": "order.paid", "selection": "SIP", "payload": {}}),
    )
    assert not_a_call.status_code == 202 and not_a_call.json_body["deliveries"] == 0
    worker.run_until_idle()

    def seen(listener):
        return sorted(json.loads(line)["selection"] for line in listener.received)

    assert seen(listeners["SIP"]) == ["SIP"]
    assert seen(listeners["MVNO"]) == ["MVNO"]
    assert seen(listeners["ALL"]) == ["MVNO", "SIP"]
    assert foreign.received == []


# --------------------------------------------------------------------------- lifecycle


def test_410_disables_the_notifier_until_it_is_updated(client, make_tenant, worker, httpserver):
    owner = make_tenant()
    recorder = HttpRecorder(httpserver, "/gone", script=(410, 200))
    notifier = create(client, owner, recorder.url)
    item = f"{BASE.format(owner.tenant_id)}/{notifier['_id']}"
    publish(client, owner)
    worker.run_until_idle()
    assert len(recorder.requests) == 1
    shown = client.http.get(item, headers=owner.headers).json_body
    assert "410" in shown["disabled_reason"]
    assert publish(client, owner)["deliveries"] == 0

    updated = client.http.post(item, headers=owner.headers, body="{}")
    assert updated.status_code == 200 and "disabled_reason" not in updated.json_body
    assert publish(client, owner)["deliveries"] == 1
    worker.run_until_idle()
    assert len(recorder.requests) == 2


def test_a_rotated_secret_signs_alongside_the_previous_one(client, make_tenant, worker, httpserver):
    from datetime import UTC, datetime, timedelta

    from chalicelib.storage import callnotify as store

    owner = make_tenant()
    recorder = HttpRecorder(httpserver, "/rotated")
    notifier = create(client, owner, recorder.url)
    original = notifier["signing_secret"]
    item = f"{BASE.format(owner.tenant_id)}/{notifier['_id']}"
    before = datetime.now(UTC).replace(microsecond=0)
    rotated = client.http.post(f"{item}/secret/rotate", headers=owner.headers)
    assert rotated.status_code == 200, rotated.body
    fresh = rotated.json_body["signing_secret"]
    assert fresh.startswith("whsec_") and fresh != original
    assert rotated.json_body["_id"] == notifier["_id"]
    until = datetime.strptime(
        rotated.json_body["previous_secret_valid_until"], "%Y-%m-%dT%H:%M:%SZ"
    ).replace(tzinfo=UTC)
    assert timedelta(hours=24) <= until - before <= timedelta(hours=24, seconds=5)

    publish(client, owner)
    worker.run_until_idle()
    [request] = recorder.requests
    for secret in (fresh, original):  # a receiver holding either secret accepts it
        Webhook(secret).verify(request["body"], request["headers"], json_parse=False)
    record = store.get(owner.tenant_id, notifier["_id"], consistent=True)
    assert record is not None
    assert store.signing_secrets(record) == (fresh, original)
    assert store.signing_secrets(record, until + timedelta(seconds=1)) == (fresh,)

    # neither secret (nor anything about the previous one) is shown again
    for path in (item, BASE.format(owner.tenant_id)):
        shown = client.http.get(path, headers=owner.headers)
        assert shown.status_code == 200
        text = shown.body.decode()
        assert fresh not in text and original not in text and "secret" not in text
    assert set(client.http.get(item, headers=owner.headers).json_body) == {
        "_id",
        "url",
        "method",
        "selection",
    }


def test_a_notifier_deleted_before_sending_makes_the_delivery_skipped(
    client, make_tenant, worker, tcp_listener
):
    owner = make_tenant()
    listener = tcp_listener()
    notifier = create(client, owner, listener.url)
    published = publish(client, owner)
    deleted = client.http.delete(
        f"{BASE.format(owner.tenant_id)}/{notifier['_id']}", headers=owner.headers
    )
    assert deleted.status_code == 204
    worker.run_until_idle()
    [delivery] = deliveries_of(client, owner, published["event_id"])
    assert delivery["status"] == "skipped" and delivery["attempts"] == []
    assert listener.received == []


def test_an_update_between_publish_and_send_is_followed(
    client, make_tenant, worker, tcp_listener, httpserver
):
    owner = make_tenant()
    old, recorder = tcp_listener(), HttpRecorder(httpserver, "/new")
    notifier = create(client, owner, old.url)
    publish(client, owner)
    client.http.put(
        f"{BASE.format(owner.tenant_id)}/{notifier['_id']}",
        headers=owner.headers,
        body=json.dumps({"url": recorder.url, "method": "POSTXML1"}),
    )
    worker.run_until_idle()
    assert old.received == []
    assert recorder.requests[0]["body"].decode().startswith(XML_DECLARATION + "<callevent>")


# --------------------------------------------------------------------------- event validation


@pytest.mark.parametrize(
    ("event_type", "selection", "payload", "field"),
    [
        ("CALL_START", None, {**DOC_PAYLOAD}, "selection"),
        ("CALL_END", "MVNO", {k: v for k, v in DOC_PAYLOAD.items() if k != "call_id"}, "call_id"),
        ("CALL_END", "MVNO", {k: v for k, v in DOC_PAYLOAD.items() if k != "cause"}, "cause"),
        ("CALL_END", "SIP", {**DOC_PAYLOAD, "duration": "42"}, "duration"),
        ("CALL_ANSWER", "SIP", {**DOC_PAYLOAD}, "duration"),
        ("CALL_START", "SIP", {**DOC_PAYLOAD, "direction": "sideways"}, "direction"),
        ("CALL_END", "SIP", {**DOC_PAYLOAD, "timestamp": "2016-05-27 11:30"}, "timestamp"),
        ("CALL_END", "SIP", {**DOC_PAYLOAD, "trunk": 7}, "trunk"),
        ("CALL_END", "SIP", {**DOC_PAYLOAD, "eventid": "x"}, "eventid"),
        ("CALL_END", "SIP", {**DOC_PAYLOAD, "note": "bell\x07"}, "note"),
    ],
)
def test_post_events_refuses_call_events_that_could_never_be_rendered(
    client, make_tenant, tcp_listener, event_type, selection, payload, field
):
    owner = make_tenant()
    create(client, owner, tcp_listener().url)
    body = {"event_type": event_type, "payload": payload}
    if selection:
        body["selection"] = selection
    response = client.http.post("/events", headers=owner.headers, body=json.dumps(body))
    assert response.status_code == 400, response.json_body
    assert response.json_body["error"] == "invalid"
    assert response.json_body["message"].startswith(f"{field}: ")
    listed = client.http.get("/deliveries?status=pending", headers=owner.headers).json_body
    assert listed["deliveries"] == []


def test_tcp_tries_the_next_address_when_the_first_refuses(
    client, make_tenant, worker, tcp_listener, monkeypatch
):
    """A name with two answers (say IPv6 and IPv4) where only the second one listens: the
    attempt connects to the second, as the HTTP sender does, instead of failing."""
    from chalicelib.domain import urlsafety

    monkeypatch.setattr(
        urlsafety, "default_resolver", lambda host, port: ["127.0.0.2", "127.0.0.1"]
    )
    owner = make_tenant()
    listener = tcp_listener()  # bound to 127.0.0.1 only: 127.0.0.2 refuses
    notifier = create(client, owner, f"tcp://pbx.example.com:{listener.port}")
    published = publish(client, owner)
    worker.run_until_idle()
    [delivery] = deliveries_of(client, owner, published["event_id"])
    assert delivery["status"] == "delivered" and len(delivery["attempts"]) == 1
    assert listener.received == [_stream_line(owner, notifier, published["event_id"])]
