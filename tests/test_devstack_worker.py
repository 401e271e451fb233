"""The split local stack the soak kills: ``devstack.run --no-worker`` holds the API and the
embedded AWS, ``--worker-only --aws-url`` runs the delivery loops against it; ``--env`` overrides
win over the stage's config.json values; ``--visibility-timeout`` reaches the queue."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import boto3
import pytest
import requests

from devstack.run import parse_overrides

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parent.parent
ADMIN = {"Authorization": "Bearer rbk_split-admin", "Content-Type": "application/json"}
OVERRIDES = ["--env", "RINGBACK_RETRY_SCHEDULE=60", "--env", "RINGBACK_HTTP_TIMEOUT=3"]


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RINGBACK_"))}
    env["RINGBACK_ADMIN_KEY"] = "rbk_split-admin"
    return env


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "devstack.run", *args],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _healthy(base_url: str) -> bool:
    try:
        return requests.get(f"{base_url}/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture
def api_only() -> Iterator[tuple[str, str]]:
    port, aws_port = _port(), _port()
    process = _spawn(
        "--no-worker",
        "--port",
        str(port),
        "--aws-port",
        str(aws_port),
        "--visibility-timeout",
        "7",
        *OVERRIDES,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _healthy(base_url) or process.poll() is not None, 60, "the API")
        assert process.poll() is None, "the --no-worker stack exited"
        yield base_url, f"http://127.0.0.1:{aws_port}"
    finally:
        _stop(process)


def _owner(base_url: str) -> dict[str, str]:
    tenant = requests.post(
        f"{base_url}/admin/tenants", headers=ADMIN, json={"name": "split"}, timeout=10
    ).json()["tenant_id"]
    key = requests.post(
        f"{base_url}/admin/tenants/{tenant}/keys", headers=ADMIN, json={"role": "OWNER"}, timeout=10
    ).json()["key"]
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "tenant": tenant}


def _ts(value: str) -> float:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").timestamp()


def test_worker_runs_in_its_own_process_with_the_overrides(api_only, httpserver):
    base_url, aws_url = api_only
    sqs = boto3.client(
        "sqs",
        endpoint_url=aws_url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    queue_url = sqs.get_queue_url(QueueName="ringback-local-deliveries")["QueueUrl"]
    visibility = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])
    assert visibility["Attributes"]["VisibilityTimeout"] == "7"

    httpserver.expect_request("/hook").respond_with_data("down", status=500)
    owner = _owner(base_url)
    tenant = owner.pop("tenant")
    created = requests.post(
        f"{base_url}/companies/{tenant}/campaigns/config/callbacks",
        headers=owner,
        json={"event_type": "split.test", "destination_url": httpserver.url_for("/hook")},
        timeout=10,
    )
    assert created.status_code == 201
    event = requests.post(
        f"{base_url}/events", headers=owner, json={"event_type": "split.test"}, timeout=10
    ).json()

    time.sleep(1.5)  # no worker: the delivery waits in the queue
    assert httpserver.log == []
    listed = requests.get(f"{base_url}/events/{event['event_id']}", headers=owner, timeout=10)
    delivery = listed.json()["deliveries"][0]
    assert delivery["status"] == "pending"

    worker = _spawn("--worker-only", "--aws-url", aws_url, *OVERRIDES)
    try:

        def retrying() -> dict[str, object] | None:
            record = requests.get(
                f"{base_url}/deliveries/{delivery['delivery_id']}", headers=owner, timeout=10
            ).json()
            return record if record["status"] == "retrying" else None

        record = _wait(retrying, 60, "the worker process to make attempt 1")
    finally:
        _stop(worker)
    assert len(httpserver.log) == 1
    # The override (60 s, +-20 %) beat the stage's own schedule (2 s first).
    wait = _ts(record["next_attempt_at"]) - _ts(record["attempts"][0]["at"])
    assert 45 <= wait <= 75


def test_worker_only_needs_the_embedded_aws_url():
    finished = subprocess.run(
        [sys.executable, "-m", "devstack.run", "--worker-only"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 2
    assert "--aws-url" in finished.stderr


def test_env_overrides_are_name_value_pairs():
    assert parse_overrides(["A=1", "B=x,y=z", "C="]) == {"A": "1", "B": "x,y=z", "C": ""}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_overrides(["RINGBACK_RETRY_SCHEDULE"])
