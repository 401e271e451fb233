"""Scheduler benchmarks (issue 5). Run: ``python -m bench.scheduler`` (``--help`` for sizes).

(a) fire lag: the local stack (``python -m devstack.run`` in a subprocess, as ``make run``
    starts it) schedules 500 callbacks spread over 60 s through the HTTP API; a loopback
    receiver notes when each arrives. Lag = arrival - callback_time. Targets: p99 < 1 s,
    p50 < 200 ms. ``--split`` runs the same stack as two processes (API + embedded AWS, and the
    worker/sweep loops: the Lambda split, ``--no-worker`` / ``--worker-only``).
(b) sweep cost: 100,000 firings scheduled over the next 30 days and 100 due within the minute,
    as due items in an embedded AWS in this process (written straight into the table in
    batches); one sweep must read only what is due (target <= 200 items read).

Figures over moto are not AWS figures: every AWS call is serialised in one Python process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from bench.common import show, start_embedded_aws

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "rbk_bench-scheduler-admin"


# --------------------------------------------------------------------------- (a) fire lag


class ArrivalReceiver:
    """Notes the arrival time of every request, by ``Ringback-Callback-Id``."""

    def __init__(self) -> None:
        self.arrivals: dict[str, list[float]] = {}
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                at = time.time()
                with lock:
                    outer.arrivals.setdefault(self.headers["Ringback-Callback-Id"], []).append(at)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 256
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/due"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_stack(split: bool) -> tuple[str, list[subprocess.Popen[bytes]]]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RINGBACK_"))}
    env["RINGBACK_ADMIN_KEY"] = ADMIN_KEY
    log = open(os.devnull, "wb")  # noqa: SIM115 - lives as long as the processes
    args = [sys.executable, "-m", "devstack.run", "--port", str(port)]
    aws_port = _free_port()
    if split:
        args += ["--no-worker", "--aws-port", str(aws_port)]
    processes = [subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=log)]
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.2)
    else:
        raise RuntimeError("the local stack did not start")
    if split:
        worker = [
            sys.executable,
            "-m",
            "devstack.run",
            "--worker-only",
            "--aws-url",
            f"http://127.0.0.1:{aws_port}",
        ]
        processes.append(subprocess.Popen(worker, cwd=ROOT, env=env, stdout=log, stderr=log))
    return base, processes


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in reversed(processes):
        process.send_signal(signal.SIGINT)
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _owner_key(base: str) -> str:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    tenant = requests.post(
        f"{base}/admin/tenants", headers=admin, json={"name": "bench"}, timeout=10
    )
    tenant_id = tenant.json()["tenant_id"]
    key = requests.post(
        f"{base}/admin/tenants/{tenant_id}/keys", headers=admin, json={"role": "OWNER"}, timeout=10
    )
    return str(key.json()["key"])


def _percentile(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def bench_fire_lag(count: int, spread: int, split: bool) -> dict[str, Any]:
    receiver = ArrivalReceiver()
    base, processes = _start_stack(split)
    try:
        key = _owner_key(base)
        session = requests.Session()
        # Creating takes a while on moto (and competes with firing): start the window after
        # the last create should be done; fire times in creation order, so the earliest are made
        # first. A create that comes too late for its time is counted, not fatal.
        lead = 10 + math.ceil(count * 0.2)
        first = math.ceil(time.time()) + lead
        slots = [first + (i * spread) // count for i in range(count)]

        def create(i: int) -> tuple[str, float] | None:
            when = datetime.fromtimestamp(slots[i], UTC).isoformat()
            response = session.get(
                f"{base}/api/1.0/create/",
                params={
                    "api_key": key,
                    "callback_url": f"{receiver.url}?n={i}",
                    "callback_time": when,
                },
                timeout=30,
            )
            if response.status_code == 400 and "expired" in response.text:
                return None
            response.raise_for_status()
            return response.json()["callback_id"], float(slots[i])

        started = time.time()
        with ThreadPoolExecutor(max_workers=4) as pool:
            made = list(pool.map(create, range(count)))
        scheduled = dict(entry for entry in made if entry is not None)
        created_s = time.time() - started
        too_late = count - len(scheduled)
        deadline = first + spread + 30
        while time.time() < deadline and len(receiver.arrivals) < count:
            time.sleep(0.2)
        time.sleep(2)  # room for a duplicate to arrive
    finally:
        _stop(processes)
    lags = sorted(
        receiver.arrivals[cid][0] - due
        for cid, due in scheduled.items()
        if cid in receiver.arrivals
    )
    return {
        "stack": "two processes (API+AWS | worker)" if split else "one process (make run)",
        "callbacks": count,
        "spread_s": spread,
        "created_in_s": round(created_s, 1),
        "created_too_late": too_late,
        "arrived": len(lags),
        "duplicates": sum(1 for times in receiver.arrivals.values() if len(times) > 1),
        "early": sum(1 for lag in lags if lag < 0),
        "lag_p50_ms": round(1000 * _percentile(lags, 0.50)) if lags else None,
        "lag_p99_ms": round(1000 * _percentile(lags, 0.99)) if lags else None,
        "lag_max_ms": round(1000 * lags[-1]) if lags else None,
        "targets": "p99 < 1000 ms, p50 < 200 ms",
    }


# --------------------------------------------------------------------------- (b) sweep cost


def bench_sweep(future: int, due_now: int) -> dict[str, Any]:
    start_embedded_aws()
    from chalicelib.delivery import sweeper
    from chalicelib.storage import due
    from chalicelib.storage.due import DueItemModel
    from chalicelib.storage.scheduled import fire_item_id, fire_message

    now = time.time()
    rng = random.Random(7)

    def item(i: int, due_at: float) -> DueItemModel:
        callback_id = f"{i:024x}"
        item_id = fire_item_id(callback_id, 0)
        message = {**fire_message("0" * 24, callback_id, 0, None), "due_at": due_at}
        return DueItemModel(
            f"{due.minute_of(due_at)}#{due.shard_of(item_id)}",
            f"{int(due_at * 1000):015d}#{item_id}",
            due_at=due_at,
            message=json.dumps(message, separators=(",", ":"), sort_keys=True),
        )

    started = time.time()
    written = 0
    with DueItemModel.batch_write() as batch:
        for i in range(future):  # 2 minutes to 30 days ahead: beyond any sweep window
            batch.save(item(i, now + rng.uniform(120, 30 * 86400)))
            written += 1
            if written % 20000 == 0:
                print(f"  {written} written, {time.time() - started:.0f} s", flush=True)
        for i in range(due_now):  # due within the coming minute
            batch.save(item(future + i, now + rng.uniform(1, 55)))
    write_s = time.time() - started
    sweep_started = time.perf_counter()
    report = sweeper.sweep(now=now)
    sweep_ms = (time.perf_counter() - sweep_started) * 1000
    again = sweeper.sweep(now=now + 1)
    return {
        "future_items": future,
        "due_items": due_now,
        "write_s": round(write_s, 1),
        "first_sweep": {
            "queried_buckets": report.queried_buckets,
            "items_read": report.items_read,
            "handed_over": report.handed_over,
            "ms": round(sweep_ms),
        },
        "next_sweep": {
            "queried_buckets": again.queried_buckets,
            "items_read": again.items_read,
            "handed_over": again.handed_over,
        },
        "target": "items_read <= 200",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--callbacks", type=int, default=500)
    parser.add_argument("--spread", type=int, default=60, help="seconds the fire times cover")
    parser.add_argument("--split", action="store_true", help="also run the two-process stack")
    parser.add_argument("--future", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=100)
    parser.add_argument("--skip-lag", action="store_true")
    parser.add_argument("--skip-sweep", action="store_true")
    args = parser.parse_args(argv)
    if not args.skip_lag:
        show("fire lag, local stack", bench_fire_lag(args.callbacks, args.spread, split=False))
        if args.split:
            show("fire lag, split stack", bench_fire_lag(args.callbacks, args.spread, split=True))
    if not args.skip_sweep:
        show("sweep cost", bench_sweep(args.future, args.due))
    return 0


if __name__ == "__main__":
    sys.exit(main())
