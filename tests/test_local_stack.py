"""The README walkthrough against the real local stack (``make run``), over real HTTP."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from standardwebhooks.webhooks import Webhook

pytestmark = pytest.mark.stack


def test_walkthrough_register_publish_receive(local_stack, httpserver):
    owner = local_stack.tenant_key()
    received = []
    httpserver.expect_request("/hook").respond_with_handler(
        lambda request: received.append((request.get_data(), dict(request.headers))) or _ok()
    )
    base = f"{local_stack.base_url}/companies/{owner.tenant_id}/campaigns/config/callbacks"
    created = requests.post(
        base,
        headers=owner.headers,
        json={
            "event_type": "ack_participant_added",
            "destination_url": httpserver.url_for("/hook"),
        },
        timeout=10,
    )
    assert created.status_code == 201
    secret = created.json()["signing_secret"]
    listed = requests.get(base, headers=owner.headers, timeout=10).json()
    assert [r["callback_id"] for r in listed] == [created.json()["callback_id"]]

    event = requests.post(
        f"{local_stack.base_url}/events",
        headers=owner.headers,
        json={"event_type": "ack_participant_added", "payload": {"participant": "p-1"}},
        timeout=10,
    )
    assert event.status_code == 202
    deadline = time.monotonic() + 10
    while not received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(received) == 1
    body, headers = received[0]
    assert json.loads(body)["participant"] == "p-1"
    Webhook(secret).verify(body, headers)
    status = requests.get(
        f"{local_stack.base_url}/events/{event.json()['event_id']}",
        headers=owner.headers,
        timeout=10,
    ).json()
    assert status["deliveries"][0]["status"] == "delivered"


def _ok():
    from werkzeug import Response

    return Response("ok")


def test_concurrent_overlapping_creates_over_http_have_one_winner(local_stack):
    owner = local_stack.tenant_key()
    url = f"{local_stack.base_url}/companies/{owner.tenant_id}/campaigns/config/callbacks"

    def create(i: int) -> int:
        body = {
            "event_type": "raced",
            "destination_url": "http://127.0.0.1:9/x",
            "start_date": f"2031-01-01T{i % 24:02d}:00Z",
        }
        return requests.post(url, headers=owner.headers, json=body, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(create, range(50)))
    assert statuses.count(201) == 1
    assert statuses.count(409) == 49


def test_make_run_on_a_taken_port_says_so_at_once():
    import socket
    import subprocess
    import sys

    from tests.conftest import ROOT

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "devstack.run", "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert f"port {port} is not free" in result.stderr
