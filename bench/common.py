"""Shared set-up for the benchmarks: an embedded AWS in this process, resources, a receiver.

Benchmarks print figures; they are not tests and assert nothing. Timings over moto are not AWS
timings: moto serialises every call and its cost grows with table size.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_ADMIN_KEY = "rbk_bench-admin"


def start_embedded_aws(faults: float = 0.0, seed: int = 1) -> str:
    """Prepare the environment like the local stack and start an embedded AWS in a process of
    its own: AWS is not in the Lambda's process either, and moto's CPU then runs on the other
    core instead of competing with the engine's threads for this process's GIL."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "RINGBACK_")):
            del os.environ[name]
    from devstack.stage import FAKE_CREDENTIALS, stage_environment

    os.environ.update(FAKE_CREDENTIALS)
    os.environ.update(stage_environment("local"))
    os.environ["RINGBACK_TABLE_PREFIX"] = "ringback-bench-"
    os.environ["RINGBACK_ADMIN_KEY_HASH"] = hashlib.sha256(BENCH_ADMIN_KEY.encode()).hexdigest()
    os.environ["RINGBACK_REPORT_BATCH_FAILURES"] = "true"
    fault_args = ["--faults", str(faults), "--seed", str(seed)] if faults else []
    aws = subprocess.Popen(
        [sys.executable, "-m", "devstack.embedded_aws", "--port", "0", *fault_args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    atexit.register(aws.terminate)
    assert aws.stdout is not None
    os.environ["AWS_ENDPOINT_URL"] = aws.stdout.readline().strip()
    from devstack import resources

    resources.create_all()
    return os.environ["AWS_ENDPOINT_URL"]


class Receiver:
    """A threaded loopback HTTP receiver that answers 200 after ``delay`` seconds."""

    def __init__(self, delay: float = 0.0) -> None:
        self.count = 0
        self.bodies: list[bytes] = []
        self.keep_bodies = False
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = (
                -1
            )  # one send per response: no Nagle/delayed-ACK stall between header and body

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if delay:
                    time.sleep(delay)
                with lock:
                    outer.count += 1
                    if outer.keep_bodies:
                        outer.bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                self.wfile.flush()

            do_POST = do_GET = do_PUT = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 256
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def stop(self) -> None:
        self.server.shutdown()


def receive_all(limit: int) -> list[dict[str, Any]]:
    """Take up to ``limit`` work messages off the queue as SQS event records."""
    import boto3

    from devstack.loops import sqs_event

    sqs = boto3.client("sqs")
    url = os.environ["RINGBACK_DELIVERY_QUEUE_URL"]
    records: list[dict[str, Any]] = []
    while len(records) < limit:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            break
        records.extend(sqs_event(got, "arn:aws:sqs:us-east-1:123456789012:bench")["Records"])
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
            ],
        )
    return records


class AwsCallMeter:
    """Counts the AWS calls this process makes and the wall time spent waiting on them.

    Wall time is the union of the calls' intervals: ten threads waiting on moto at once count
    once, so ``elapsed - waited`` is what the engine itself (and HTTP) took.
    """

    def __init__(self) -> None:
        import botocore.client

        self.calls: dict[str, int] = {}
        self._intervals: list[tuple[float, float]] = []
        self._lock = threading.Lock()
        original = botocore.client.BaseClient._make_api_call
        meter = self

        def metered(client: Any, operation: str, params: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(client, operation, params)
            finally:
                with meter._lock:
                    meter.calls[operation] = meter.calls.get(operation, 0) + 1
                    meter._intervals.append((started, time.perf_counter()))

        botocore.client.BaseClient._make_api_call = metered  # type: ignore[method-assign]

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self._intervals.clear()

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    @property
    def waited(self) -> float:
        covered, end = 0.0, float("-inf")
        for start, stop in sorted(self._intervals):
            if stop <= end:
                continue
            covered += stop - max(start, end)
            end = stop
        return covered


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def show(title: str, figures: dict[str, Any]) -> None:
    print(f"\n== {title}")
    for key, value in figures.items():
        print(f"  {key}: {value}")
    print("  json:", json.dumps(figures))
