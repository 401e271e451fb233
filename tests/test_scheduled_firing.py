"""The scheduler end to end in one process: callbacks created through the API, fired through the
real SQS handlers (the ``worker`` fixture) and the sweeper, received by loopback receivers."""

from __future__ import annotations

import itertools
import time
from datetime import datetime
from types import SimpleNamespace

import pytest
from standardwebhooks.webhooks import Webhook

from tests.scheduled_helpers import Receiver, answer, call, iso_in


def create(client, owner, url, when, **params):
    query = {"api_key": owner.key, "callback_url": url, "callback_time": when, **params}
    response = call(client, "create", query)
    assert response.status_code == 200, response.body
    return answer(response)


def shown(client, owner, callback_id):
    body = answer(call(client, f"retrieve/{callback_id}", {"api_key": owner.key}))
    return body["callback"]


def repeat(kind, unit, interval, count=None):
    params = {
        "callback_repeat": "1",
        "callback_repeat_type": kind,
        "callback_repeat_interval_unit": unit,
        "callback_repeat_interval": str(interval),
    }
    if count is not None:
        params["callback_repeat_count"] = str(count)
    return params


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


# ------------------------------------------------------------------ one firing


def test_one_time_callback_fires_once_on_time_signed(client, make_tenant, worker, httpserver):
    owner = make_tenant()
    receiver = Receiver(httpserver)
    when = iso_in(1.2, 2)
    made = create(client, owner, receiver.url + "?order=42&note=a%26b", when)
    worker.run_until_idle()

    [request] = receiver.requests
    assert request["method"] == "GET" and request["body"] == b""
    assert request["args"] == {"order": "42", "note": "a&b"}  # the URL's own query, as given
    assert request["headers"]["Ringback-Callback-Id"] == made["callback_id"]
    assert request["headers"]["Ringback-Fire-Count"] == "1"
    Webhook(made["signing_secret"]).verify(request["body"], request["headers"], json_parse=False)
    assert 0 <= request["at"] - epoch(when) < 1.0

    callback = shown(client, owner, made["callback_id"])
    assert callback["state"] == "completed" and callback["last_status"] == "delivered"
    assert callback["fired_count"] == 1 and callback["timestamp"] is None
    assert request["headers"]["Webhook-Id"] == callback["last_delivery_id"]
    delivery = client.http.get(
        f"/deliveries/{callback['last_delivery_id']}", headers=owner.headers
    ).json_body
    assert delivery["family"] == "scheduled" and delivery["status"] == "delivered"
    assert [a["status_code"] for a in delivery["attempts"]] == [200]


def test_failing_receiver_is_retried_then_the_callback_fails(
    client, make_tenant, worker, httpserver, monkeypatch
):
    monkeypatch.setenv("RINGBACK_RETRY_SCHEDULE", "1")
    owner = make_tenant()
    receiver = Receiver(httpserver, status=500)
    made = create(client, owner, receiver.url, iso_in(1))
    worker.run_until_idle()
    assert len(receiver.requests) == 2  # first attempt + one retry, same delivery id
    assert len({r["headers"]["Webhook-Id"] for r in receiver.requests}) == 1
    callback = shown(client, owner, made["callback_id"])
    assert (callback["state"], callback["last_status"]) == ("failed", "failed")
    delivery = client.http.get(
        f"/deliveries/{callback['last_delivery_id']}", headers=owner.headers
    ).json_body
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500]


# ------------------------------------------------------------------ repeats


def test_interval_fires_on_the_anchor_grid_despite_a_slow_receiver(
    client, make_tenant, worker, httpserver
):
    owner = make_tenant()
    receiver = Receiver(httpserver, delay=0.6)
    when = iso_in(1)
    made = create(client, owner, receiver.url, when, **repeat("interval", "seconds", 1, count=4))
    worker.run_until_idle()
    assert [r["headers"]["Ringback-Fire-Count"] for r in receiver.requests] == ["1", "2", "3", "4"]
    lags = [r["at"] - (epoch(when) + k) for k, r in enumerate(receiver.requests)]
    # on the grid although each call took 0.6 s (chained calls would drift to 1.8 s by the 4th);
    # the bound leaves room for a loaded machine
    assert all(0 <= lag < 1.0 for lag in lags), lags
    callback = shown(client, owner, made["callback_id"])
    assert (callback["state"], callback["fired_count"]) == ("completed", 4)


def test_immediate_fires_again_when_the_previous_call_completed(
    client, make_tenant, worker, httpserver
):
    owner = make_tenant()
    receiver = Receiver(httpserver, delay=0.6)
    when = iso_in(1)
    # the interval is mandatory in the seed but means nothing for "immediate"
    made = create(client, owner, receiver.url, when, **repeat("immediate", "hours", 1, count=3))
    worker.run_until_idle()
    times = [r["at"] for r in receiver.requests]
    assert [r["headers"]["Ringback-Fire-Count"] for r in receiver.requests] == ["1", "2", "3"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0.6 <= gap < 1.5 for gap in gaps), gaps  # after completion, not on a grid
    callback = shown(client, owner, made["callback_id"])
    assert (callback["state"], callback["fired_count"]) == ("completed", 3)
    assert callback["last_status"] == "delivered"


def test_410_gone_stops_a_series(client, make_tenant, worker, httpserver):
    owner = make_tenant()
    receiver = Receiver(httpserver, status=410)
    made = create(client, owner, receiver.url, iso_in(1), **repeat("interval", "seconds", 1))
    worker.run_until_idle()
    time.sleep(1.2)
    worker.run_until_idle()
    assert len(receiver.requests) == 1
    callback = shown(client, owner, made["callback_id"])
    assert callback["state"] == "failed" and "410" in callback["failure_reason"]


def test_a_series_whose_receiver_fails_for_the_dead_target_limit_stops(
    client, make_tenant, worker, httpserver, monkeypatch
):
    monkeypatch.setenv("RINGBACK_DEAD_TARGET_SECONDS", "1.5")
    monkeypatch.setenv("RINGBACK_RETRY_SCHEDULE", "1,1,1,1,1")
    owner = make_tenant()
    receiver = Receiver(httpserver, status=500)
    made = create(client, owner, receiver.url, iso_in(1), **repeat("immediate", "seconds", 1))
    deadline = time.monotonic() + 20
    while shown(client, owner, made["callback_id"])["state"] != "failed":
        assert time.monotonic() < deadline, shown(client, owner, made["callback_id"])
        worker.run_until_idle()
        time.sleep(0.2)
    callback = shown(client, owner, made["callback_id"])
    assert "every attempt failed" in callback["failure_reason"]
    # stopped after ~1.5 s of failures, not after the whole retry schedule (6 attempts)
    assert 2 <= len(receiver.requests) < 6


# ------------------------------------------------------------------ cancel


def test_cancel_while_the_firing_is_queued(client, make_tenant, worker, httpserver):
    owner = make_tenant()
    receiver = Receiver(httpserver)
    made = create(client, owner, receiver.url, iso_in(1.5))
    assert worker.outstanding() == 1  # the fire message is on SQS already
    assert call(client, f"delete/{made['callback_id']}", {"api_key": owner.key}).status_code == 200
    worker.run_until_idle()
    assert receiver.requests == []
    callback = shown(client, owner, made["callback_id"])
    assert (callback["state"], callback["fired_count"]) == ("cancelled", 0)


def test_cancel_between_attempts_stops_the_retries(
    client, make_tenant, worker, httpserver, monkeypatch
):
    monkeypatch.setenv("RINGBACK_RETRY_SCHEDULE", "1,1,1")
    owner = make_tenant()
    receiver = Receiver(httpserver, status=500)
    made = create(client, owner, receiver.url, iso_in(1))
    deadline = time.monotonic() + 5
    while not receiver.requests:  # the first attempt failed; a retry is queued
        assert time.monotonic() < deadline
        if worker.poll() == 0:
            time.sleep(0.02)
    assert shown(client, owner, made["callback_id"])["state"] == "firing"
    assert call(client, f"delete/{made['callback_id']}", {"api_key": owner.key}).status_code == 200
    worker.run_until_idle()
    assert len(receiver.requests) == 1  # the queued retry found the callback cancelled
    callback = shown(client, owner, made["callback_id"])
    assert callback["state"] == "cancelled" and callback["last_status"] == "skipped"
    delivery = client.http.get(
        f"/deliveries/{callback['last_delivery_id']}", headers=owner.headers
    ).json_body
    assert delivery["status"] == "skipped" and len(delivery["attempts"]) == 1


def test_cancel_stops_an_interval_series(client, make_tenant, worker, httpserver):
    owner = make_tenant()
    receiver = Receiver(httpserver)
    made = create(client, owner, receiver.url, iso_in(1), **repeat("interval", "seconds", 1))
    deadline = time.monotonic() + 10
    while len(receiver.requests) < 2:
        assert time.monotonic() < deadline
        if worker.poll() == 0:
            time.sleep(0.02)
    assert call(client, f"delete/{made['callback_id']}", {"api_key": owner.key}).status_code == 200
    worker.run_until_idle()
    time.sleep(1.1)
    worker.run_until_idle()
    assert len(receiver.requests) == 2
    assert shown(client, owner, made["callback_id"])["state"] == "cancelled"


def test_dead_lettered_fire_message_is_redriven_then_marks_the_callback_failed(
    client, make_tenant, worker
):
    """A firing that never started is put back on the queue a few times (AWS throttling some
    receives must not end a series); only a message that keeps failing stops it."""
    from app import dead_letters
    from chalicelib.delivery.scheduled import FIRE_REDRIVES
    from devstack.loops import sqs_event

    owner = make_tenant()
    made = create(client, owner, "http://127.0.0.1:9/x", iso_in(1))
    time.sleep(1.1)
    for redrive in range(FIRE_REDRIVES + 1):
        messages = worker.sqs.receive_message(QueueUrl=worker.work_url, MaxNumberOfMessages=10)[
            "Messages"
        ]
        assert len(messages) == 1 and '"kind":"fire"' in messages[0]["Body"]
        worker.sqs.delete_message(
            QueueUrl=worker.work_url, ReceiptHandle=messages[0]["ReceiptHandle"]
        )
        assert shown(client, owner, made["callback_id"])["state"] == "scheduled", redrive
        dead_letters(sqs_event(messages, "arn:aws:sqs:us-east-1:123456789012:dlq"), None)
    callback = shown(client, owner, made["callback_id"])
    assert callback["state"] == "failed" and "dead-lettered" in callback["failure_reason"]


# ------------------------------------------------------------------ far future: due items


def travel_and_fire(worker, monkeypatch, due_at: float) -> dict[str, int]:
    """Be at ``due_at``: sweep as of half a second before it, then run the worker with its clock
    moved there too (it re-queues messages that arrive early). The sweeper's cursor is reset
    first: it would otherwise walk every minute bucket between two simulated months."""
    from chalicelib.delivery import sweeper
    from chalicelib.delivery import worker as worker_module
    from chalicelib.storage.guards import GuardModel

    real_time = time.time
    GuardModel(sweeper.CURSOR_KEY).delete()
    report = sweeper.sweep(now=due_at - 0.5)
    shift = due_at - real_time()
    monkeypatch.setattr(
        worker_module, "time", SimpleNamespace(time=lambda: real_time() + shift, sleep=time.sleep)
    )
    worker.run_until_idle()
    return {"items_read": report.items_read, "handed_over": report.handed_over}


def test_a_firing_beyond_sqs_delay_waits_in_due_items_for_the_sweeper(
    client, make_tenant, worker, httpserver, monkeypatch
):
    from chalicelib.delivery import sweeper

    owner = make_tenant()
    receiver = Receiver(httpserver)
    when = iso_in(20 * 60)
    made = create(client, owner, receiver.url, when)
    assert worker.outstanding() == 0  # not on SQS: 20 minutes is beyond its 15-minute delay
    early = sweeper.sweep(now=epoch(when) - 10 * 60)
    assert early.handed_over == 0 and early.items_read == 0
    assert travel_and_fire(worker, monkeypatch, epoch(when)) == {"items_read": 1, "handed_over": 1}
    [request] = receiver.requests
    assert request["headers"]["Ringback-Callback-Id"] == made["callback_id"]
    assert shown(client, owner, made["callback_id"])["state"] == "completed"


@pytest.mark.parametrize(
    ("anchor", "expected"),
    [
        # leap year, UTC: Jan 31 -> Feb 29 -> Mar 31 (never "stuck" on the 29th)
        (
            "2032-01-31T12:00:00Z",
            ["2032-01-31T12:00:00Z", "2032-02-29T12:00:00Z", "2032-03-31T12:00:00Z"],
        ),
        # the client's calendar at its offset: Jan 31 23:30 -05:00 -> Feb 28 -> Mar 31
        (
            "2031-01-31T23:30:00-05:00",
            ["2031-02-01T04:30:00Z", "2031-03-01T04:30:00Z", "2031-04-01T04:30:00Z"],
        ),
    ],
)
def test_monthly_series_keeps_month_ends_through_api_and_scheduler(
    client, make_tenant, worker, httpserver, monkeypatch, anchor, expected
):
    owner = make_tenant()
    receiver = Receiver(httpserver)
    made = create(client, owner, receiver.url, anchor, **repeat("interval", "months", 1, count=3))
    timestamps = []
    for k in range(3):
        callback = shown(client, owner, made["callback_id"])
        timestamps.append(callback["timestamp"])
        travel_and_fire(worker, monkeypatch, epoch(callback["timestamp"].replace("Z", "+00:00")))
        assert len(receiver.requests) == k + 1
    assert timestamps == expected
    assert [r["headers"]["Ringback-Fire-Count"] for r in receiver.requests] == ["1", "2", "3"]
    callback = shown(client, owner, made["callback_id"])
    assert (callback["state"], callback["fired_count"], callback["timestamp"]) == (
        "completed",
        3,
        None,
    )
