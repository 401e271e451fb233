"""Scheduled callbacks over the running local stack (``make run`` in a subprocess, real HTTP,
its own worker and once-a-second sweep): 100 callbacks 2-10 s ahead arrive once each, on time."""

from __future__ import annotations

import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from werkzeug import Request, Response

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "rbk_scheduled-stack-admin"
COUNT = 100
ON_TIME = 1.5  # seconds after the scheduled second


@dataclass(frozen=True)
class Stack:
    base_url: str

    def owner_key(self) -> str:
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        tenant = requests.post(
            f"{self.base_url}/admin/tenants", headers=admin, json={"name": "sched"}, timeout=10
        ).json()["tenant_id"]
        key = requests.post(
            f"{self.base_url}/admin/tenants/{tenant}/keys",
            headers=admin,
            json={"role": "OWNER"},
            timeout=10,
        ).json()["key"]
        return str(key)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """``python -m devstack.run`` in its own process, its output going to a file (a pipe nobody
    reads fills up with the stack's log lines and then blocks the stack)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RINGBACK_"))}
    env["RINGBACK_ADMIN_KEY"] = ADMIN_KEY
    log_path = tmp_path_factory.mktemp("stack") / "stack.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "devstack.run", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "the local stack did not become ready"
            try:
                if requests.get(f"{base_url}/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        yield Stack(base_url)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_hundred_callbacks_arrive_once_and_on_time(stack, httpserver):
    key = stack.owner_key()
    arrivals: dict[str, list[float]] = {}
    lock = threading.Lock()

    def receive(request: Request) -> Response:
        at = time.time()
        with lock:
            arrivals.setdefault(request.headers["Ringback-Callback-Id"], []).append(at)
        return Response("ok")

    httpserver.expect_request("/due").respond_with_handler(receive)
    url = httpserver.url_for("/due")
    start = math.floor(time.time())

    def create(i: int) -> tuple[str, float]:
        due = math.ceil(time.time()) + 2 + i % 9  # 2-10 s after the moment it is created
        response = requests.get(
            f"{stack.base_url}/api/1.0/create/",
            params={
                "api_key": key,
                "callback_url": f"{url}?n={i}",
                "callback_time": datetime.fromtimestamp(due, UTC).isoformat(),
            },
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return response.json()["callback_id"], float(due)

    with ThreadPoolExecutor(max_workers=2) as pool:
        scheduled = dict(pool.map(create, range(COUNT)))
    created_in = time.time() - start

    deadline = max(scheduled.values()) + ON_TIME + 3
    while time.time() < deadline:
        with lock:
            if len(arrivals) == COUNT:
                break
        time.sleep(0.05)
    time.sleep(1.0)  # long enough for a duplicate to show up

    lags = sorted(arrivals[cid][0] - due for cid, due in scheduled.items() if cid in arrivals)
    figures = (
        f"{COUNT} callbacks, created in {created_in:.1f} s; lag p50 {statistics.median(lags):.3f} s"
        f", p99 {lags[int(0.99 * (len(lags) - 1))]:.3f} s, max {lags[-1]:.3f} s"
        if lags
        else "nothing arrived"
    )
    print(figures)
    assert set(arrivals) == set(scheduled), figures
    assert all(len(times) == 1 for times in arrivals.values()), "a callback arrived twice"
    assert lags[0] >= 0, f"a callback arrived early: {figures}"
    assert lags[-1] <= ON_TIME, figures

    listed = requests.get(
        f"{stack.base_url}/api/1.0/list/",
        params={"api_key": key, "state": "completed", "limit": "100"},
        timeout=10,
    ).json()
    assert {c["callback_id"] for c in listed["callbacks"]} == set(scheduled)
