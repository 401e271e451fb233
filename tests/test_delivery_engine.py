"""The delivery engine end to end: real HTTP receivers on loopback, the real SQS handler."""

from __future__ import annotations

import json
import threading
import time

import pytest
from standardwebhooks.webhooks import Webhook
from werkzeug import Request, Response

REG = "/companies/{}/campaigns/config/callbacks"


def register(client, tenant, url, **fields):
    body = {"event_type": "order.paid", "destination_url": url, **fields}
    response = client.http.post(
        REG.format(tenant.tenant_id), headers=tenant.headers, body=json.dumps(body)
    )
    assert response.status_code == 201, response.json_body
    return response.json_body


def publish(client, tenant, event_type="order.paid", headers=None, **fields):
    body = {"event_type": event_type, "payload": {"order": 42, "note": "<hi & bye>"}, **fields}
    response = client.http.post(
        "/events", headers={**tenant.headers, **(headers or {})}, body=json.dumps(body)
    )
    assert response.status_code == 202, response.json_body
    return response.json_body


class Receiver:
    """Answers with a scripted sequence of (status, headers, delay) and records every request."""

    def __init__(self, httpserver, path="/hook", script=((200, {}, 0),)):
        self.requests: list[dict] = []
        self.times: list[float] = []
        self.script = list(script)
        self.lock = threading.Lock()
        self.url = httpserver.url_for(path)
        httpserver.expect_request(path).respond_with_handler(self.handle)

    def handle(self, request: Request) -> Response:
        with self.lock:
            index = len(self.requests)
            self.requests.append(
                {
                    "method": request.method,
                    "headers": dict(request.headers),
                    "body": request.get_data(),
                    "args": dict(request.args),
                }
            )
            self.times.append(time.monotonic())
            status, headers, delay = self.script[min(index, len(self.script) - 1)]
        if delay:
            time.sleep(delay)
        return Response("ok", status=status, headers=headers)


def test_success_is_signed_and_logged(client, make_tenant, worker, httpserver):
    owner = make_tenant()
    receiver = Receiver(httpserver)
    reg = register(client, owner, receiver.url)
    published = publish(client, owner)
    assert published["deliveries"] == 1
    worker.run_until_idle()

    assert len(receiver.requests) == 1
    sent = receiver.requests[0]
    body = json.loads(sent["body"])
    assert body["event_id"] == published["event_id"]
    assert body["event_type"] == "order.paid"
    assert body["callback_type"] == "event"
    assert body["delivery_attempt"] == 1
    assert body["order"] == 42 and body["note"] == "<hi & bye>"
    assert sent["headers"]["Content-Type"] == "application/json"
    # verified with the standardwebhooks package, not our own code
    Webhook(reg["signing_secret"]).verify(sent["body"], sent["headers"])

    event = client.http.get(f"/events/{published['event_id']}", headers=owner.headers).json_body
    assert [d["status"] for d in event["deliveries"]] == ["delivered"]
    assert sent["headers"]["Webhook-Id"] == event["deliveries"][0]["delivery_id"]
    delivery = client.http.get(
        f"/deliveries/{event['deliveries'][0]['delivery_id']}", headers=owner.headers
    ).json_body
    assert delivery["status"] == "delivered"
    [attempt] = delivery["attempts"]
    assert attempt["status_code"] == 200 and attempt["url"] == receiver.url
    assert attempt["duration_ms"] >= 0 and "error" not in attempt


def test_500_then_success_retries_with_the_same_webhook_id(client, make_tenant, worker, httpserver):
    owner = make_tenant()
    receiver = Receiver(httpserver, script=[(500, {}, 0), (200, {}, 0)])
    reg = register(client, owner, receiver.url)
    publish(client, owner)
    worker.run_until_idle()
    assert len(receiver.requests) == 2
    ids = {r["headers"]["Webhook-Id"] for r in receiver.requests}
    assert len(ids) == 1
    assert [json.loads(r["body"])["delivery_attempt"] for r in receiver.requests] == [1, 2]
    for request in receiver.requests:
        Webhook(reg["signing_secret"]).verify(request["body"], request["headers"])
    assert receiver.times[1] - receiver.times[0] >= 0.7  # the 1 s schedule, -20 % jitter


def _only_delivery(client, owner, event_id):
    event = client.http.get(f"/events/{event_id}", headers=owner.headers).json_body
    [entry] = event["deliveries"]
    return client.http.get(f"/deliveries/{entry['delivery_id']}", headers=owner.headers).json_body


def test_timeouts_and_refused_connections_are_logged_failures(
    client, make_tenant, worker, httpserver, monkeypatch
):
    monkeypatch.setenv("RINGBACK_HTTP_TIMEOUT", "0.5")
    monkeypatch.setenv("RINGBACK_RETRY_SCHEDULE", "1")
    owner = make_tenant()
    slow = Receiver(httpserver, "/slow", script=[(200, {}, 1.5)])
    register(client, owner, slow.url)
    register(client, owner, "http://127.0.0.1:1/closed", event_type="other")
    first = publish(client, owner)
    second = publish(client, owner, event_type="other")
    worker.run_until_idle()

    timed_out = _only_delivery(client, owner, first["event_id"])
    assert timed_out["status"] == "failed"
    assert [a["error"] for a in timed_out["attempts"]] == ["timeout", "timeout"]
    refused = _only_delivery(client, owner, second["event_id"])
    assert refused["status"] == "failed"
    assert len(refused["attempts"]) == 2
    assert all(a["error"].startswith("connection error") for a in refused["attempts"])
    assert all("status_code" not in a for a in refused["attempts"])


def test_410_stops_retrying_and_disables_the_registration(client, make_tenant, worker, httpserver):
    owner = make_tenant()
    receiver = Receiver(httpserver, script=[(410, {}, 0)])
    reg = register(client, owner, receiver.url)
    first = publish(client, owner)
    worker.run_until_idle()
    assert len(receiver.requests) == 1
    delivery = _only_delivery(client, owner, first["event_id"])
    assert delivery["status"] == "failed" and "410" in delivery["failure_reason"]
    shown = client.http.get(reg["url"], headers=owner.headers).json_body
    assert "410" in shown["disabled_reason"]
    assert publish(client, owner)["deliveries"] == 0  # a gone target is not matched

    enabled = client.http.post(reg["url"] + "/enable", headers=owner.headers)
    assert enabled.status_code == 200 and enabled.json_body["disabled_reason"] is None
    assert publish(client, owner)["deliveries"] == 1


def test_retry_after_is_honoured_within_twice_the_schedule(client, make_tenant, worker, httpserver):
    owner = make_tenant()
    receiver = Receiver(
        httpserver,
        script=[(503, {"Retry-After": "2"}, 0), (429, {"Retry-After": "3600"}, 0), (200, {}, 0)],
    )
    register(client, owner, receiver.url)
    publish(client, owner)
    worker.run_until_idle()
    assert len(receiver.requests) == 3
    assert receiver.times[1] - receiver.times[0] >= 1.9  # Retry-After 2 s over a 1 s schedule
    assert receiver.times[2] - receiver.times[1] <= 2.6  # 3600 s capped at 2x the 1 s schedule


def test_backup_url_after_exactly_three_primary_failures(client, make_tenant, worker, httpserver):
    owner = make_tenant()
    primary = Receiver(httpserver, "/primary", script=[(500, {}, 0)])
    backup = Receiver(httpserver, "/backup", script=[(500, {}, 0), (200, {}, 0)])
    register(client, owner, primary.url, backup_url=backup.url)
    event = publish(client, owner)
    worker.run_until_idle()
    assert len(primary.requests) == 3
    assert len(backup.requests) == 2
    delivery = _only_delivery(client, owner, event["event_id"])
    assert [a["url"] for a in delivery["attempts"]] == [primary.url] * 3 + [backup.url] * 2
    assert delivery["status"] == "delivered"


def test_exhausted_schedule_dead_letters_then_replay_delivers(
    client, make_tenant, worker, httpserver, monkeypatch
):
    monkeypatch.setenv("RINGBACK_RETRY_SCHEDULE", "1,1")
    owner = make_tenant()
    receiver = Receiver(httpserver, script=[(500, {}, 0), (500, {}, 0), (500, {}, 0), (200, {}, 0)])
    register(client, owner, receiver.url)
    event = publish(client, owner)
    worker.run_until_idle()
    failed = _only_delivery(client, owner, event["event_id"])
    assert failed["status"] == "failed" and len(failed["attempts"]) == 3
    listed = client.http.get("/deliveries?status=failed", headers=owner.headers).json_body
    assert [d["delivery_id"] for d in listed["deliveries"]] == [failed["delivery_id"]]

    replay = client.http.post(f"/deliveries/{failed['delivery_id']}/replay", headers=owner.headers)
    assert replay.status_code == 202
    worker.run_until_idle()
    fresh = client.http.get(
        f"/deliveries/{replay.json_body['delivery_id']}", headers=owner.headers
    ).json_body
    assert fresh["status"] == "delivered" and fresh["replay_of"] == failed["delivery_id"]
    assert len(receiver.requests) == 4
    again = client.http.post(f"/deliveries/{failed['delivery_id']}/replay", headers=owner.headers)
    assert again.status_code == 409  # one replay per delivery: replay the replay instead
    viewer = make_tenant("VIEWER", tenant_id=owner.tenant_id)
    assert (
        client.http.post(
            f"/deliveries/{fresh['delivery_id']}/replay", headers=viewer.headers
        ).status_code
        == 403
    )


def test_range_replay_replays_each_failed_delivery_once(
    client, make_tenant, worker, httpserver, monkeypatch
):
    monkeypatch.setenv("RINGBACK_RETRY_SCHEDULE", "")
    monkeypatch.setenv("RINGBACK_RETRY_SCHEDULE", "1")
    owner = make_tenant()
    receiver = Receiver(httpserver, script=[(500, {}, 0)] * 4 + [(200, {}, 0)])
    register(client, owner, receiver.url)
    publish(client, owner)
    publish(client, owner)
    worker.run_until_idle()
    body = json.dumps(
        {"since": "2000-01-01T00:00Z", "until": "2100-01-01T00:00Z", "status": "failed"}
    )
    first = client.http.post("/deliveries/replay", headers=owner.headers, body=body)
    assert first.status_code == 202 and first.json_body["replayed"] == 2
    second = client.http.post("/deliveries/replay", headers=owner.headers, body=body)
    assert second.json_body["replayed"] == 0
    worker.run_until_idle()
    assert len(receiver.requests) == 6


def test_duplicate_sqs_message_sends_once(client, make_tenant, worker, httpserver):
    from app import dispatcher
    from devstack.loops import sqs_event

    owner = make_tenant()
    receiver = Receiver(httpserver)
    register(client, owner, receiver.url)
    publish(client, owner)
    messages = worker.sqs.receive_message(QueueUrl=worker.work_url, MaxNumberOfMessages=10)[
        "Messages"
    ]
    event = sqs_event(messages, "arn:aws:sqs:us-east-1:123456789012:q")
    dispatcher(event, None)
    dispatcher(event, None)  # SQS delivered it again
    duplicate = sqs_event(messages, "arn:aws:sqs:us-east-1:123456789012:q")
    dispatcher({"Records": duplicate["Records"] * 3}, None)  # and several times in one batch
    assert len(receiver.requests) == 1


def test_worker_exception_mid_batch_is_redelivered_and_nothing_lost(
    client, make_tenant, worker, httpserver, monkeypatch
):
    from chalicelib.delivery import campaign

    worker.sqs.set_queue_attributes(QueueUrl=worker.work_url, Attributes={"VisibilityTimeout": "1"})
    owner = make_tenant()
    receiver = Receiver(httpserver)
    for event_type in ("a", "b", "c"):
        register(client, owner, receiver.url, event_type=event_type)
    events = [publish(client, owner, event_type=t)["event_id"] for t in ("a", "b", "c")]
    original = campaign.CampaignFamily.prepare
    crashed = []

    def flaky(self, delivery, attempt_no, use_backup):
        if delivery.event_id == events[1] and not crashed:
            crashed.append(delivery.delivery_id)
            raise RuntimeError("worker died mid-batch")
        return original(self, delivery, attempt_no, use_backup)

    monkeypatch.setattr(campaign.CampaignFamily, "prepare", flaky)
    worker.run_until_idle()
    assert crashed, "the fault was injected"
    assert len(receiver.requests) == 3
    for event_id in events:
        assert _only_delivery(client, owner, event_id)["status"] == "delivered"


def test_idempotency_key_returns_the_first_event(client, make_tenant, worker, httpserver):
    owner = make_tenant()
    receiver = Receiver(httpserver)
    register(client, owner, receiver.url)
    first = publish(client, owner, headers={"Idempotency-Key": "order-42"})
    second = publish(client, owner, headers={"Idempotency-Key": "order-42"})
    other = publish(client, owner, headers={"Idempotency-Key": "order-43"})
    assert first == second
    assert other["event_id"] != first["event_id"]
    worker.run_until_idle()
    assert len(receiver.requests) == 2


def test_test_endpoint_sends_a_test_callback(client, make_tenant, worker, httpserver):
    owner = make_tenant()
    receiver = Receiver(httpserver)
    register(client, owner, receiver.url, destination_method="PUT", content_type="application/xml")
    url = f"/companies/{owner.tenant_id}/campaigns/config/callback_events/test"
    missing = client.http.post(url, headers=owner.headers, body=json.dumps({"event_type": "nope"}))
    assert missing.status_code == 404
    sent = client.http.post(
        url, headers=owner.headers, body=json.dumps({"event_type": "order.paid"})
    )
    assert sent.status_code == 201 and sent.json_body["deliveries"] == 1
    worker.run_until_idle()
    [request] = receiver.requests
    assert request["method"] == "PUT"
    assert request["headers"]["Content-Type"] == "application/xml"
    assert b"<callback_type>test</callback_type>" in request["body"]


def test_get_registrations_send_query_arguments(client, make_tenant, worker, httpserver):
    owner = make_tenant()
    receiver = Receiver(httpserver)
    register(client, owner, receiver.url + "?token=abc", destination_method="GET")
    publish(client, owner)
    worker.run_until_idle()
    [request] = receiver.requests
    assert request["method"] == "GET" and request["body"] == b""
    assert request["args"]["token"] == "abc"
    assert request["args"]["event_type"] == "order.paid" and request["args"]["order"] == "42"


def test_rotated_secret_signs_alongside_the_previous_one(client, make_tenant, worker, httpserver):
    owner = make_tenant()
    manager = make_tenant("MANAGER", tenant_id=owner.tenant_id)
    receiver = Receiver(httpserver)
    reg = register(client, owner, receiver.url)
    assert (
        client.http.post(reg["url"] + "/secret/rotate", headers=manager.headers).status_code == 403
    )
    rotated = client.http.post(reg["url"] + "/secret/rotate", headers=owner.headers)
    assert rotated.status_code == 200
    fresh = rotated.json_body["signing_secret"]
    assert fresh != reg["signing_secret"]
    publish(client, owner)
    worker.run_until_idle()
    [request] = receiver.requests
    Webhook(fresh).verify(request["body"], request["headers"])
    Webhook(reg["signing_secret"]).verify(request["body"], request["headers"])


def test_a_rotation_that_loses_a_race_answers_busy(client, make_tenant, monkeypatch):
    from chalicelib.storage import campaign as store

    owner = make_tenant()
    reg = register(client, owner, "http://127.0.0.1:9/hook")
    stale = store.get_registration(owner.tenant_id, reg["callback_id"], consistent=True)
    assert client.http.post(reg["url"] + "/secret/rotate", headers=owner.headers).status_code == 200
    # a second rotation that read the registration before the first one wrote: it must lose
    monkeypatch.setattr(store, "get_registration", lambda *args, **kwargs: stale)
    busy = client.http.post(reg["url"] + "/secret/rotate", headers=owner.headers)
    assert (busy.status_code, busy.json_body) == (
        503,
        {"error": "busy", "message": "too many concurrent changes, retry"},
    )


def test_dead_lettered_message_marks_the_delivery_failed(client, make_tenant, worker, httpserver):
    from app import dead_letters
    from devstack.loops import sqs_event

    owner = make_tenant()
    receiver = Receiver(httpserver)
    register(client, owner, receiver.url)
    event = publish(client, owner)
    messages = worker.sqs.receive_message(QueueUrl=worker.work_url, MaxNumberOfMessages=10)[
        "Messages"
    ]
    dead_letters(sqs_event(messages, "arn:aws:sqs:us-east-1:123456789012:dlq"), None)
    delivery = _only_delivery(client, owner, event["event_id"])
    assert delivery["status"] == "failed" and "dead-lettered" in delivery["failure_reason"]
    assert (
        client.http.post(
            f"/deliveries/{delivery['delivery_id']}/replay", headers=owner.headers
        ).status_code
        == 202
    )


def test_events_api_validation_and_isolation(client, make_tenant, worker):
    owner = make_tenant()
    viewer = make_tenant("VIEWER", tenant_id=owner.tenant_id)
    other = make_tenant()
    bad = [
        ({"payload": {}}, "event_type"),
        ({"event_type": "x", "payload": []}, "payload"),
        ({"event_type": "x", "selection": "PSTN"}, "selection"),
        ({"event_type": "x", "campaign_id": 5}, "campaign_id"),
    ]
    for body, field in bad:
        response = client.http.post("/events", headers=owner.headers, body=json.dumps(body))
        assert response.status_code == 400 and response.json_body["field"] == field
    assert client.http.post("/events", headers=owner.headers, body="{oops").status_code == 400
    assert (
        client.http.post(
            "/events", headers=viewer.headers, body=json.dumps({"event_type": "x"})
        ).status_code
        == 403
    )
    assert client.http.post("/events", body=json.dumps({"event_type": "x"})).status_code == 401
    event = publish(client, owner, event_type="x")
    assert client.http.get(f"/events/{event['event_id']}", headers=other.headers).status_code == 403
    assert client.http.get(f"/events/{'0' * 24}", headers=owner.headers).status_code == 404
    assert client.http.get(f"/deliveries/{'0' * 24}", headers=owner.headers).status_code == 404


@pytest.mark.parametrize("campaign_id, expected", [(None, 1), ("c-1", 2), ("c-2", 1)])
def test_campaign_scoped_registrations_match_their_campaign_only(
    client, make_tenant, worker, campaign_id, expected
):
    owner = make_tenant()
    register(client, owner, "http://127.0.0.1:9/any")
    register(client, owner, "http://127.0.0.1:9/c1", event_type="order.paid.c1", campaign_id="c-1")
    # one event type per registration because ranges of one type may not overlap; match on prefix
    fields = {"campaign_id": campaign_id} if campaign_id else {}
    assert publish(client, owner, **fields)["deliveries"] == 1
    scoped = publish(client, owner, event_type="order.paid.c1", **fields)["deliveries"]
    assert 1 + scoped == expected


def test_a_target_failing_every_attempt_for_the_limit_is_disabled(
    client, make_tenant, worker, httpserver, monkeypatch
):
    monkeypatch.setenv("RINGBACK_DEAD_TARGET_SECONDS", "1.5")
    monkeypatch.setenv("RINGBACK_RETRY_SCHEDULE", "1,1,1,1,1")
    owner = make_tenant()
    receiver = Receiver(httpserver, script=[(500, {}, 0)])
    reg = register(client, owner, receiver.url)
    event = publish(client, owner)
    worker.run_until_idle()
    shown = client.http.get(reg["url"], headers=owner.headers).json_body
    assert "every attempt failed" in shown["disabled_reason"]
    delivery = _only_delivery(client, owner, event["event_id"])
    # disabled after ~1.5 s of failures: the remaining attempts are skipped, not lost
    assert delivery["status"] == "skipped"
    assert 2 <= len(delivery["attempts"]) < 6
    assert len(receiver.requests) == len(delivery["attempts"])
    assert publish(client, owner)["deliveries"] == 0
    client.http.post(reg["url"] + "/enable", headers=owner.headers)
    assert publish(client, owner)["deliveries"] == 1


def test_a_re_enabled_target_starts_a_new_failure_run(
    client, make_tenant, worker, httpserver, monkeypatch
):
    monkeypatch.setenv("RINGBACK_DEAD_TARGET_SECONDS", "1.5")
    monkeypatch.setenv("RINGBACK_RETRY_SCHEDULE", "1,1,1,1,1")
    owner = make_tenant()
    receiver = Receiver(httpserver, script=[(500, {}, 0)])
    reg = register(client, owner, receiver.url)
    publish(client, owner)
    worker.run_until_idle()
    assert (
        "every attempt failed"
        in client.http.get(reg["url"], headers=owner.headers).json_body["disabled_reason"]
    )
    # the receiver is fixed: after one more failure it answers 200
    receiver.script = [(500, {}, 0)] * (len(receiver.requests) + 1) + [(200, {}, 0)]
    client.http.post(reg["url"] + "/enable", headers=owner.headers)
    event = publish(client, owner)
    worker.run_until_idle()
    delivery = _only_delivery(client, owner, event["event_id"])
    assert delivery["status"] == "delivered"
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 200]
    assert client.http.get(reg["url"], headers=owner.headers).json_body["disabled_reason"] is None


def test_a_success_resets_the_failure_run(client, make_tenant, worker, httpserver, monkeypatch):
    monkeypatch.setenv("RINGBACK_DEAD_TARGET_SECONDS", "2.5")
    monkeypatch.setenv("RINGBACK_RETRY_SCHEDULE", "1,1,1,1")
    owner = make_tenant()
    receiver = Receiver(
        httpserver,
        script=[(500, {}, 0), (500, {}, 0), (200, {}, 0), (500, {}, 0), (500, {}, 0), (200, {}, 0)],
    )
    reg = register(client, owner, receiver.url)
    first = publish(client, owner)
    worker.run_until_idle()
    second = publish(client, owner)
    worker.run_until_idle()
    assert _only_delivery(client, owner, first["event_id"])["status"] == "delivered"
    assert _only_delivery(client, owner, second["event_id"])["status"] == "delivered"
    assert client.http.get(reg["url"], headers=owner.headers).json_body["disabled_reason"] is None
