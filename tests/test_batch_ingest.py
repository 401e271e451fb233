"""POST /events with a JSON array: up to 100 events in one request, each accepted or refused on
its own, answered in order (issue 16: API Gateway's per-request price paid once per batch)."""

from __future__ import annotations

import json

from tests.test_delivery_engine import Receiver, register


def post(client, tenant, body, headers=None):
    return client.http.post(
        "/events", headers={**tenant.headers, **(headers or {})}, body=json.dumps(body)
    )


def test_a_batch_is_accepted_event_by_event_in_order(client, make_tenant, worker, httpserver):
    owner = make_tenant()
    other = make_tenant()
    receiver = Receiver(httpserver)
    register(client, owner, receiver.url)
    batch = [
        {"event_type": "order.paid", "payload": {"n": 1}, "idempotency_key": "a"},
        {"event_type": "", "payload": {}},
        {"event_type": "order.paid", "payload": {"n": 2}},
        "not an object",
        {"event_type": "order.paid", "tenant_id": other.tenant_id},
        {"event_type": "order.paid", "payload": {"n": 1}, "idempotency_key": "a"},
    ]
    response = post(client, owner, batch)
    assert response.status_code == 200, response.json_body
    body = response.json_body
    assert (body["accepted"], body["refused"]) == (3, 3)
    statuses = [r["status"] for r in body["results"]]
    assert statuses == [202, 400, 202, 400, 403, 202]
    first, empty, second, _, foreign, repeat = body["results"]
    assert first["deliveries"] == 1 and second["deliveries"] == 1
    assert empty["error"] == "invalid" and empty["field"] == "event_type"
    assert foreign["error"] == "forbidden"
    # the same idempotency key inside one batch is the same event
    assert repeat["event_id"] == first["event_id"] and repeat["idempotent_replayed"] is True
    worker.run_until_idle()
    assert sorted(json.loads(r["body"])["n"] for r in receiver.requests) == [1, 2]


def test_a_batch_holds_one_to_a_hundred_events(client, make_tenant):
    owner = make_tenant()
    assert post(client, owner, []).status_code == 400
    too_many = [{"event_type": "x"}] * 101
    response = post(client, owner, too_many)
    assert response.status_code == 400 and "100" in response.json_body["message"]
    assert post(client, owner, [{"event_type": "x"}] * 100).status_code == 200


def test_a_single_event_still_answers_202(client, make_tenant):
    owner = make_tenant()
    response = post(client, owner, {"event_type": "x"})
    assert response.status_code == 202 and set(response.json_body) == {"event_id", "deliveries"}


def test_a_batch_of_events_to_one_target_is_listed_delivered_and_replayable(
    client, make_tenant, worker, httpserver
):
    """Each event of a batch lists its own delivery; a replay of one is listed with it."""
    owner = make_tenant()
    receiver = Receiver(httpserver)
    gone = Receiver(httpserver, path="/gone", script=((410, {}, 0),))
    register(client, owner, receiver.url)
    register(client, owner, gone.url, event_type="order.gone")
    batch = [{"event_type": "order.paid", "payload": {"n": n}} for n in range(11)]
    batch.insert(7, {"event_type": "order.gone", "payload": {}})
    body = post(client, owner, batch).json_body
    assert body["accepted"] == 12
    worker.run_until_idle()
    assert len(receiver.requests) == 11 and len(gone.requests) == 1
    paid = client.http.get(f"/events/{body['results'][0]['event_id']}", headers=owner.headers)
    assert [d["status"] for d in paid.json_body["deliveries"]] == ["delivered"]
    event_id = body["results"][7]["event_id"]
    event = client.http.get(f"/events/{event_id}", headers=owner.headers).json_body
    [delivery] = event["deliveries"]
    assert delivery["status"] == "failed" and event["next_cursor"] is None
    replayed = client.http.post(
        f"/deliveries/{delivery['delivery_id']}/replay", headers=owner.headers
    )
    assert replayed.status_code in (200, 201, 202), replayed.json_body
    worker.run_until_idle()
    listed = client.http.get(f"/events/{event_id}", headers=owner.headers).json_body
    assert len(listed["deliveries"]) == 2
    assert delivery["delivery_id"] in {d["delivery_id"] for d in listed["deliveries"]}


def test_a_batch_refuses_an_idempotency_key_header(client, make_tenant):
    """One key for many events would make each a repeat of the first: the batch says where
    keys go instead of guessing."""
    owner = make_tenant()
    batch = [{"event_type": "order.paid"}, {"event_type": "order.paid"}]
    response = post(client, owner, batch, headers={"Idempotency-Key": "k-1"})
    assert response.status_code == 400
    assert response.json_body["error"] == "invalid"
    assert response.json_body["field"] == "Idempotency-Key"
    assert "idempotency_key" in response.json_body["message"]
