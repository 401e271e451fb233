"""The local stack as separate processes, for the soak: started, killed and restarted.

``combined`` is ``make run`` as a user starts it (API, embedded AWS and worker loops in one
process). ``split`` runs ``devstack.run --no-worker`` (API + embedded AWS, where all state lives)
and ``devstack.run --worker-only`` (the SQS poller, dead-letter poller and sweeper, as the
Lambdas are on AWS), so the worker can be SIGKILLed mid-batch without losing the state: killing
the combined process would take the embedded AWS with it, which is no test of anything.

The caller's ``AWS_*`` variables are dropped; its ``RINGBACK_*`` variables go through, and
``devstack.run`` puts them over the stage's ``.chalice/config.json`` values; the soak's settings
go in as ``--env`` overrides, which win over both.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import requests

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "rbk_soak-admin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _clean_env() -> dict[str, str]:
    # The shell's RINGBACK_* settings go through (devstack.run puts them over the stage's);
    # the soak's own settings are --env overrides, which win over both.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["RINGBACK_ADMIN_KEY"] = ADMIN_KEY
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Stack:
    """One soak run's stack processes; logs go to files under ``log_dir``."""

    def __init__(
        self,
        *,
        split: bool,
        overrides: dict[str, str],
        visibility: int,
        log_dir: Path,
        aws_faults: float | None = None,
        aws_faults_seed: int = 0,
    ) -> None:
        self.split = split
        self.aws_faults = aws_faults
        self._aws_faults_seed = aws_faults_seed
        self._choose_ports()
        self._env_args = [
            arg for name, value in overrides.items() for arg in ("--env", f"{name}={value}")
        ]
        self._visibility = visibility
        self._log_dir = log_dir
        self._logs: list[IO[str]] = []
        self.api: subprocess.Popen[str] | None = None
        self.worker: subprocess.Popen[str] | None = None
        self.workers_started = 0

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[str]:
        log = (self._log_dir / log_name).open("w")
        self._logs.append(log)
        return subprocess.Popen(
            [sys.executable, "-m", "devstack.run", *args, *self._env_args],
            cwd=ROOT,
            env=_clean_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def start(self, tries: int = 3) -> None:
        """Start the stack; a port taken between choosing it and binding it (another process
        may grab a port the moment ``free_port`` lets it go) means new ports and another try."""
        log_name = "api.log" if self.split else "stack.log"
        for attempt in range(1, tries + 1):
            args = [
                "--port",
                str(self.port),
                "--aws-port",
                str(self.aws_port),
                "--visibility-timeout",
                str(self._visibility),
            ]
            if self.split:
                args.append("--no-worker")
            if self.aws_faults is not None:
                args += ["--aws-faults", str(self.aws_faults)]
                args += ["--aws-faults-seed", str(self._aws_faults_seed)]
            self.api = self._spawn(args, log_name)
            try:
                self._wait_healthy(self.api)
                break
            except RuntimeError:
                taken = "Address already in use" in (self._log_dir / log_name).read_text()
                if not taken or attempt == tries:
                    raise
                print(f"  port {self.port} or {self.aws_port} was taken; new ports", flush=True)
                self._choose_ports()
        if self.split:
            self.start_worker()

    def _choose_ports(self) -> None:
        self.port, self.aws_port = free_port(), free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.aws_url = f"http://127.0.0.1:{self.aws_port}"

    def start_worker(self) -> None:
        self.workers_started += 1
        self.worker = self._spawn(
            ["--worker-only", "--aws-url", self.aws_url], f"worker-{self.workers_started}.log"
        )

    def kill_worker(self) -> int:
        """SIGKILL the worker process (no clean-up of any kind); returns its pid."""
        assert self.worker is not None, "split stacks only"
        pid = self.worker.pid
        self.worker.send_signal(signal.SIGKILL)
        self.worker.wait(timeout=10)
        return pid

    def _wait_healthy(self, process: subprocess.Popen[str], timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.base_url}/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"the stack exited; see {self._log_dir}")
            time.sleep(0.2)
        raise RuntimeError(f"the stack did not become ready; see {self._log_dir}")

    def queue_depth(self) -> dict[str, int]:
        """The delivery queue's visible / in-flight / delayed messages (from the embedded AWS)."""
        import boto3

        sqs = boto3.client(
            "sqs",
            endpoint_url=self.aws_url,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )
        url = sqs.get_queue_url(QueueName="ringback-local-deliveries")["QueueUrl"]
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return {
            "visible": int(attrs.get("ApproximateNumberOfMessages", 0)),
            "in_flight": int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
            "delayed": int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
        }

    def fault_stats(self) -> dict[str, object] | None:
        """The embedded AWS's fault counts (devstack/faults.py), or None without faults."""
        if self.aws_faults is None:
            return None
        try:
            found: dict[str, object] = requests.get(
                f"{self.aws_url}/ringback-faults/stats", timeout=10
            ).json()
        except (requests.RequestException, ValueError):
            return None
        return found

    def switch_faults(self, on: bool) -> None:
        """Pause or resume the embedded AWS's faults (no-op without faults)."""
        if self.aws_faults is None:
            return
        action = "resume" if on else "pause"
        requests.post(f"{self.aws_url}/ringback-faults/{action}", timeout=10).raise_for_status()

    def stop(self) -> None:
        for process in (self.worker, self.api):
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for log in self._logs:
            log.close()

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"}
