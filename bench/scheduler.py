"""Scheduler benchmarks (issues 5 and 16). Run: ``python -m bench.scheduler`` (``--help``).

(a) capacity (the default): the highest sustained firing rate at which p99 fire lag stays under
    1 s. Against the local stack (``python -m devstack.run`` in a subprocess, as ``make run``
    starts it), step the rate up (2, 4, 6, 8, 10, 14, 20, 28, 40 /s): for each step, create all its
    callbacks through the HTTP API first, due after the last create is done, ``--step-seconds``
    of them at that rate (``rate`` callbacks due at each whole second); then measure, with
    nothing else running, until they have arrived. Stops at the first step that misses (p99 >=
    1 s or a callback lost) or when ``--budget`` seconds are spent. Next to it, the AWS calls a
    firing and a create cost, counted by ``bench.cost`` (same hook) in a process of its own.
(a') ``--spread-run``: the older fire-lag run (issue 5): the local stack schedules 500
    callbacks spread over 60 s through the HTTP API while it fires them; a loopback receiver
    notes when each arrives. Lag = arrival - callback_time. Creates and firings compete there,
    so its lag says more about the machine than about the scheduler. ``--split`` runs the same
    stack as two processes (API + embedded AWS, and the worker/sweep loops: the Lambda split).
(b) sweep cost: ``--future`` firings (default 5,000; 100,000 in the first sitting) scheduled
    over the next 30 days and ``--due`` (100) due within the minute, as due items in an
    embedded AWS in this process (written straight into the table in batches); one sweep must
    read only what is due (target <= 200 items read).

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


# --------------------------------------------------------------------------- (a) capacity


def _create_at(
    session: requests.Session, base: str, key: str, url: str, at: int
) -> tuple[str, float] | None:
    """One one-time callback due at the whole second ``at``; None if it came too late."""
    response = session.get(
        f"{base}/api/1.0/create/",
        params={
            "api_key": key,
            "callback_url": url,
            "callback_time": datetime.fromtimestamp(at, UTC).isoformat(),
        },
        timeout=30,
    )
    if response.status_code == 400 and "expired" in response.text:
        return None
    response.raise_for_status()
    return response.json()["callback_id"], float(at)


def _step(
    base: str,
    key: str,
    receiver: ArrivalReceiver,
    rate: int,
    seconds: int,
    creates_per_s: float,
) -> dict[str, Any]:
    """Create ``rate * seconds`` callbacks (``rate`` due at each whole second of a window that
    starts after the creates are done), then wait for them with nothing else running."""
    count = rate * seconds
    session = requests.Session()
    lead = 3 + math.ceil(1.5 * count / creates_per_s)
    first = math.ceil(time.time()) + lead
    slots = [first + i // rate for i in range(count)]
    started = time.time()

    def create(i: int) -> tuple[str, float] | None:  # distinct URLs: an identical create is a 409
        return _create_at(session, base, key, f"{receiver.url}?rate={rate}&n={i}", slots[i])

    with ThreadPoolExecutor(max_workers=4) as pool:
        made = list(pool.map(create, range(count)))
    created_s = time.time() - started
    scheduled = dict(entry for entry in made if entry is not None)
    created_after_window_start = time.time() > first
    deadline = first + seconds + 15
    while time.time() < deadline and sum(1 for c in scheduled if c in receiver.arrivals) < len(
        scheduled
    ):
        time.sleep(0.1)
    lags = sorted(
        receiver.arrivals[cid][0] - due
        for cid, due in scheduled.items()
        if cid in receiver.arrivals
    )
    p99 = _percentile(lags, 0.99) if lags else float("inf")
    missing = len(scheduled) - len(lags)
    return {
        "rate_per_s": rate,
        "callbacks": count,
        "created_in_s": round(created_s, 1),
        "creates_per_s": round(count / created_s, 1) if created_s else None,
        "creates_overlapped_window": created_after_window_start,
        "created_too_late": count - len(scheduled),
        "arrived": len(lags),
        "missing": missing,
        "duplicates": sum(1 for cid in scheduled if len(receiver.arrivals.get(cid, [])) > 1),
        "lag_p50_ms": round(1000 * _percentile(lags, 0.50)) if lags else None,
        "lag_p99_ms": round(1000 * p99) if lags else None,
        "lag_max_ms": round(1000 * lags[-1]) if lags else None,
        "ok": bool(lags) and p99 < 1.0 and missing == 0 and count == len(scheduled),
    }


def bench_capacity(rates: list[int], seconds: int, budget: float, split: bool) -> dict[str, Any]:
    receiver = ArrivalReceiver()
    base, processes = _start_stack(split)
    steps: list[dict[str, Any]] = []
    began = time.monotonic()
    try:
        key = _owner_key(base)
        creates_per_s = 8.0  # a first guess; each step measures it for the next
        for rate in rates:
            if time.monotonic() - began > budget:
                steps.append({"rate_per_s": rate, "skipped": "time budget spent"})
                break
            step = _step(base, key, receiver, rate, seconds, creates_per_s)
            steps.append(step)
            print(f"  step {rate}/s: {step}", flush=True)
            creates_per_s = max(1.0, float(step["creates_per_s"] or creates_per_s))
            if not step["ok"]:
                break
    finally:
        _stop(processes)
    passed = [s["rate_per_s"] for s in steps if s.get("ok")]
    return {
        "stack": "two processes (API+AWS | worker)" if split else "one process (make run)",
        "step_seconds": seconds,
        "capacity_callbacks_per_s": max(passed) if passed else 0,
        "first_miss": next((s["rate_per_s"] for s in steps if s.get("ok") is False), None),
        "criterion": "p99 lag < 1 s, none lost, creates done before the window",
        "took_s": round(time.monotonic() - began),
        "steps": steps,
    }


def aws_calls_per_firing() -> dict[str, Any]:
    """The AWS requests of one create and one firing, counted by ``bench.cost`` (the same
    botocore hook) in a process of its own (it starts its own embedded AWS)."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.cost", "--only", "scheduled", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    rows = [
        json.loads(line.split("json:", 1)[1])
        for line in out.stdout.splitlines()
        if line.startswith("  json:")
    ]
    found = {}
    for row in rows:
        found[row["operation"]] = {
            "aws_requests": row["aws_requests"],
            "by_api": row["by_api"],
            "usd_per_million": row["usd_per_million"],
        }
    if not found:
        return {"error": (out.stderr or out.stdout)[-500:]}
    return found


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
    parser.add_argument(
        "--rates", default="2,4,6,8,10,14,20,28,40", help="capacity steps, callbacks/s"
    )
    parser.add_argument("--step-seconds", type=int, default=8)
    parser.add_argument("--budget", type=float, default=150, help="seconds for the steps")
    parser.add_argument("--spread-run", action="store_true", help="also the issue-5 lag run")
    parser.add_argument("--callbacks", type=int, default=500)
    parser.add_argument("--spread", type=int, default=60, help="seconds the fire times cover")
    parser.add_argument("--split", action="store_true", help="also run the two-process stack")
    parser.add_argument("--future", type=int, default=5_000)
    parser.add_argument("--due", type=int, default=100)
    parser.add_argument("--skip-lag", action="store_true", help="skip the capacity run")
    parser.add_argument("--skip-calls", action="store_true")
    parser.add_argument("--skip-sweep", action="store_true")
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} cores; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", flush=True)
    if not args.skip_lag:
        rates = [int(r) for r in args.rates.split(",")]
        show(
            "capacity, local stack",
            bench_capacity(rates, args.step_seconds, args.budget, split=False),
        )
        if args.split:
            show(
                "capacity, split stack",
                bench_capacity(rates, args.step_seconds, args.budget, split=True),
            )
    if args.spread_run:
        show("fire lag, local stack", bench_fire_lag(args.callbacks, args.spread, split=False))
    if not args.skip_calls:
        show("AWS requests per scheduled create and firing (bench.cost)", aws_calls_per_firing())
    if not args.skip_sweep:
        show("sweep cost", bench_sweep(args.future, args.due))
    return 0


if __name__ == "__main__":
    sys.exit(main())
