"""Test harness: one embedded AWS (locked moto server on loopback) for the session, emptied and
re-provisioned for each test that asks for ``aws``.

The environment is prepared at import time, before any test imports ``app`` or
``chalicelib.storage`` (PynamoDB reads table names and the endpoint when model classes are
created). A leftover ``AWS_ENDPOINT_URL`` or real credentials are never used.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "rbk_test-admin-key"


def _prepare_environment() -> None:
    for name in list(os.environ):
        if name.startswith(("AWS_", "RINGBACK_")):
            del os.environ[name]
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    os.environ.update(config.get("environment_variables", {}))
    os.environ.update(config["stages"]["local"]["environment_variables"])
    import hashlib

    os.environ["RINGBACK_ADMIN_KEY_HASH"] = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()


_prepare_environment()

import logging  # noqa: E402

from devstack.embedded_aws import EmbeddedAws  # noqa: E402

logging.getLogger("werkzeug").setLevel(logging.WARNING)
_EMBEDDED = EmbeddedAws()
os.environ["AWS_ENDPOINT_URL"] = _EMBEDDED.start()


def pytest_unconfigure(config: pytest.Config) -> None:
    _EMBEDDED.stop()


@pytest.fixture
def aws() -> Iterator[EmbeddedAws]:
    """Empty tables, queues and keys, created from the app's own definitions."""
    from devstack import resources

    _EMBEDDED.reset()
    resources.create_all()
    yield _EMBEDDED


@pytest.fixture
def client(aws: EmbeddedAws) -> Iterator[object]:
    from chalice.test import Client

    from app import app

    with Client(app, stage_name="local", project_dir=str(ROOT)) as test_client:
        yield test_client


@dataclass(frozen=True)
class TenantKey:
    tenant_id: str
    key: str
    role: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}


@pytest.fixture
def make_tenant(aws: EmbeddedAws) -> Callable[..., TenantKey]:
    """Create a tenant (optionally a child of ``parent``) and a key with ``role`` for it."""
    from chalicelib.storage import tenants

    def factory(
        role: str = "OWNER", *, parent: str | None = None, tenant_id: str | None = None
    ) -> TenantKey:
        if tenant_id is None:
            tenant_id = tenants.create_tenant(f"tenant-{role.lower()}", parent).tenant_id
        return TenantKey(tenant_id, tenants.create_key(tenant_id, role), role)

    return factory


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"}


class Worker:
    """Runs the dispatcher and sweeper the way the local stack does, until the work is done."""

    def __init__(self) -> None:
        import boto3

        self.sqs = boto3.client("sqs")
        self.work_url = os.environ["RINGBACK_DELIVERY_QUEUE_URL"]
        self.dlq_url = os.environ["RINGBACK_DELIVERY_DLQ_URL"]

    def poll(self) -> int:
        from app import dispatcher
        from devstack.loops import poll_once

        return poll_once(self.work_url, dispatcher)

    def sweep(self, window: float = 60.0) -> dict[str, int]:
        from chalicelib.delivery import engine

        return engine.on_sweep(window=window)

    def outstanding(self) -> int:
        attrs = self.sqs.get_queue_attributes(QueueUrl=self.work_url, AttributeNames=["All"])[
            "Attributes"
        ]
        return sum(
            int(attrs.get(name, 0))
            for name in (
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            )
        )

    def run_until_idle(self, timeout: float = 20.0) -> None:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sweep()
            if self.poll() == 0:
                if self.outstanding() == 0:
                    return
                time.sleep(0.05)
        raise AssertionError(f"work still outstanding after {timeout}s")


@pytest.fixture
def worker(aws: EmbeddedAws, monkeypatch: pytest.MonkeyPatch) -> Worker:
    monkeypatch.setenv("RINGBACK_REPORT_BATCH_FAILURES", "true")
    monkeypatch.setenv("RINGBACK_RETRY_SCHEDULE", "1,1,1,1,1")
    monkeypatch.setenv("RINGBACK_HTTP_TIMEOUT", "2")
    return Worker()


@dataclass
class LocalStack:
    base_url: str
    admin_key: str

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}", "Content-Type": "application/json"}

    def tenant_key(self, role: str = "OWNER") -> TenantKey:
        import requests

        tenant = requests.post(
            f"{self.base_url}/admin/tenants",
            headers=self.admin(),
            json={"name": "stack"},
            timeout=10,
        ).json()["tenant_id"]
        key = requests.post(
            f"{self.base_url}/admin/tenants/{tenant}/keys",
            headers=self.admin(),
            json={"role": role},
            timeout=10,
        ).json()["key"]
        return TenantKey(tenant, key, role)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStack]:
    """``make run`` as a user starts it: a separate process with its own embedded AWS."""
    import signal
    import subprocess
    import sys
    import time

    import requests

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RINGBACK_"))}
    env["RINGBACK_ADMIN_KEY"] = "rbk_stack-admin"
    env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack.run", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []

    def drain() -> None:
        # A pipe nobody reads fills up and blocks the stack's logging (and then the stack).
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)

    import threading

    threading.Thread(target=drain, daemon=True).start()
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base_url}/health", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"local stack exited: {''.join(output)}")
        time.sleep(0.2)
    else:
        process.kill()
        raise RuntimeError("local stack did not become ready")
    yield LocalStack(base_url, env["RINGBACK_ADMIN_KEY"])
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)  # a loaded 2-core machine can take 20 s to stop it
    except subprocess.TimeoutExpired:
        process.kill()
        raise
