"""What each operation costs on AWS (issue 16). Run: ``python -m bench.cost`` (also ``make bench``).

Every operation class runs over the embedded AWS through the public entry points only: HTTP
requests through ``chalice.test.Client`` (API Gateway + the API Lambda), the dispatcher exactly
as the local stack's poller calls it (``devstack.loops.poll_once(queue, app.dispatcher)``: the
receive and delete are the SQS event source's requests, billed to the account on AWS), and the
app's schedule handlers. ``bench.awscalls`` counts every botocore request by service and API and
computes DynamoDB's request units from item sizes. Each request class is then priced at
us-east-1 on-demand list prices (``PRICES`` below, one table, dated, sources named).

What is counted per operation: API Gateway REST requests and Lambda invocations (one per HTTP
request, per dispatcher batch, per schedule run), DynamoDB write/read request units, SQS requests
(per 64 KB chunk), KMS requests, EventBridge events. Lambda GB-seconds use the memory configured
in ``.chalice/config.json`` (stage ``prod``; Chalice's default 128 MB when none is set) and a
*modelled* duration (``LAMBDA_MODEL``): moto's timings are not AWS timings.

Deliveries run as a warm worker sees them (registrations and secrets already cached, one
warm-up round first, not counted) and in batches of ``BATCH`` deliveries, as SQS hands them to
the dispatcher under load; figures are per delivery. The retry schedule is compressed to
1 s waits (same number of attempts as the default schedule): the requests are the same
except that, on AWS, waits beyond SQS's 15-minute delay limit park in the due-items table and
cost what a far-ahead scheduled firing costs (class f).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from bench.awscalls import AwsCalls, Tally, dollars

ROOT = Path(__file__).resolve().parent.parent

# ----------------------------------------------------------------------------- the price table
# us-east-1, on-demand list prices. Taken 2026-11-30 from the figures of issue 16, which are the
# prices published on these pages in 2025-2026 (DynamoDB after the November 2024 halving); the
# bench does not fetch them. Re-check the pages before quoting a figure.
PRICES_TAKEN = "2026-11-30"
PRICE_SOURCES = (
    "https://aws.amazon.com/dynamodb/pricing/on-demand/",
    "https://aws.amazon.com/sqs/pricing/",
    "https://aws.amazon.com/lambda/pricing/",
    "https://aws.amazon.com/api-gateway/pricing/",
    "https://aws.amazon.com/kms/pricing/",
    "https://aws.amazon.com/eventbridge/pricing/",
    "https://upstash.com/pricing/qstash",
)
PRICES = {
    "dynamodb_write_unit": 0.625 / 1e6,  # per write request unit (1 KB)
    "dynamodb_read_unit": 0.125 / 1e6,  # per read request unit (4 KB strongly consistent)
    "sqs_request": 0.40 / 1e6,  # standard queue, per request, each 64 KB chunk billed as one
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_second": 0.0000166667,  # x86 (arm64: 0.0000133334)
    "apigw_rest_request": 3.50 / 1e6,  # REST API, first 333 M/month (HTTP APIs: 1.00/M)
    "kms_request": 0.03 / 1e4,
    "eventbridge_event": 1.00 / 1e6,  # custom events put on a bus, per 64 KB chunk
    "eventbridge_api_destination": 0.20 / 1e6,  # per API-destination invocation
    "eventbridge_scheduler_invocation": 1.00 / 1e6,  # EventBridge Scheduler, after free tier
    "qstash_message": 1.00 / 1e5,  # pay-as-you-go
}
# Competitors, per delivery (one event in, one HTTP call out).
EVENTBRIDGE_PER_DELIVERY = PRICES["eventbridge_event"] + PRICES["eventbridge_api_destination"]
QSTASH_PER_DELIVERY = PRICES["qstash_message"]

# Lambda billed duration is modelled, not measured (moto is not AWS): a fixed part per
# invocation, plus a typical in-region round trip per AWS request made in it (taken as
# sequential: pessimistic for the dispatcher's parallel sends), plus the receiver's answer time
# for a dispatcher batch that made HTTP calls.
LAMBDA_MODEL = {"base_ms": 5.0, "per_aws_request_ms": 8.0, "target_answer_ms": 100.0}
BATCH = 10  # deliveries per dispatcher batch (SQS batch size of the dispatcher)
RETRIES = "1,1,1,1,1,1,1"
NOTIFY_AUTH = {"type": "B", "data": {"userName": "cost", "password": "cost-bench-pw"}}
CALL_EVENT = {
    "event_type": "CALL_END",
    "selection": "MVNO",
    "payload": {
        "call_id": "a1b2c3d4@10.0.0.1",
        "from": "+4512345678",
        "to": "+4587654321",
        "direction": "in",
        "timestamp": "2016-05-27T11:30:00+02:00",
        "duration": 42,
        "cause": "normal",
    },
}  # the default schedule's 7 retries, compressed to 1 s each


@functools.cache
def lambda_memory_mb(function: str, stage: str = "prod") -> int:
    """The memory Chalice deploys ``function`` with (per function, stage, top level, else 128)."""
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    stage_config = config.get("stages", {}).get(stage, {})
    for scope in (
        stage_config.get("lambda_functions", {}).get(function, {}),
        config.get("lambda_functions", {}).get(function, {}),
        stage_config,
        config,
    ):
        if "lambda_memory_size" in scope:
            return int(scope["lambda_memory_size"])
    return 128


# ----------------------------------------------------------------------------- the receiver


class Receiver:
    """Loopback targets: ``/ok`` answers 200, ``/down`` and ``/down-backup`` 500, ``/flaky?k=K`` 500
    for the first ``flaky_failures`` requests of each K, then 200."""

    def __init__(self, flaky_failures: int = 2) -> None:
        self.lock = threading.Lock()
        self.hits: dict[str, int] = {}
        self.seen: dict[str, int] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                parts = urlsplit(self.path)
                with outer.lock:
                    outer.hits[parts.path] = outer.hits.get(parts.path, 0) + 1
                    status = 500 if parts.path in ("/down", "/down-backup") else 200
                    if parts.path == "/flaky":
                        k = parse_qs(parts.query).get("k", [""])[0]
                        outer.seen[k] = outer.seen.get(k, 0) + 1
                        status = 500 if outer.seen[k] <= flaky_failures else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_POST = do_GET = do_PUT = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def sent(self) -> int:
        with self.lock:
            return sum(self.hits.values())


# ----------------------------------------------------------------------------- one operation


def _kind(record: dict[str, Any]) -> str:
    """The work kind of an SQS record (``deliver``, or a family's own kind such as a queued
    fan-out chunk)."""
    try:
        return str(json.loads(record["body"]).get("kind", ""))
    except (ValueError, AttributeError):
        return ""


@dataclass
class Row:
    name: str
    per: int
    tally: Tally
    api_requests: int = 0
    invocations: dict[str, int] = field(default_factory=dict)
    gb_seconds: float = 0.0
    note: str = ""
    discard: bool = False  # measured, but the operation turned out not to exist

    def lambda_requests(self) -> int:
        return sum(self.invocations.values())

    def dollars_total(self) -> float:
        t = self.tally
        return (
            t.wru * PRICES["dynamodb_write_unit"]
            + t.rru * PRICES["dynamodb_read_unit"]
            + t.billed("sqs") * PRICES["sqs_request"]
            + t.count("kms") * PRICES["kms_request"]
            + t.billed("events") * PRICES["eventbridge_event"]
            + self.api_requests * PRICES["apigw_rest_request"]
            + self.lambda_requests() * PRICES["lambda_request"]
            + self.gb_seconds * PRICES["lambda_gb_second"]
        )

    def per_op(self) -> float:
        return self.dollars_total() / self.per

    def breakdown(self) -> dict[str, float]:
        """$ per operation by what is billed."""
        t, n = self.tally, self.per
        return {
            "dynamodb": (
                t.wru * PRICES["dynamodb_write_unit"] + t.rru * PRICES["dynamodb_read_unit"]
            )
            / n,
            "sqs": t.billed("sqs") * PRICES["sqs_request"] / n,
            "kms": t.count("kms") * PRICES["kms_request"] / n,
            "apigw": self.api_requests * PRICES["apigw_rest_request"] / n,
            "lambda": (
                self.lambda_requests() * PRICES["lambda_request"]
                + self.gb_seconds * PRICES["lambda_gb_second"]
            )
            / n,
        }

    def figures(self) -> dict[str, Any]:
        t, n = self.tally, self.per
        return {
            "per": n,
            "aws_requests": round(t.total / n, 2),
            "by_api": {k: round(v / n, 2) for k, v in sorted(t.by_api().items())},
            "dynamodb_wru": round(t.wru / n, 2),
            "dynamodb_rru": round(t.rru / n, 2),
            "sqs_billed": round(t.billed("sqs") / n, 2),
            "apigw_requests": round(self.api_requests / n, 3),
            "lambda_invocations": {k: round(v / n, 3) for k, v in self.invocations.items()},
            "usd_per_million": round(self.per_op() * 1e6, 3),
        }


class Bench:
    """The embedded AWS, the app, a tenant, the meter, and a way to run one operation."""

    def __init__(self) -> None:
        from bench.common import BENCH_ADMIN_KEY, start_embedded_aws

        start_embedded_aws()
        os.environ["RINGBACK_RETRY_SCHEDULE"] = RETRIES
        os.environ["RINGBACK_HTTP_TIMEOUT"] = "5"
        os.environ["RINGBACK_REPORT_BATCH_FAILURES"] = "true"
        from chalice.test import Client

        import app as app_module

        self.app = app_module.app
        self.dispatcher = app_module.dispatcher
        self.client = Client(self.app, stage_name="local", project_dir=str(ROOT))
        self.meter = AwsCalls.install()
        self.receiver = Receiver()
        self.admin = {"Authorization": f"Bearer {BENCH_ADMIN_KEY}"}
        self.rows: list[Row] = []
        self._purged_at = -1e9
        self._row: Row | None = None
        import boto3

        self.sqs = boto3.client("sqs")
        self.work_url = os.environ["RINGBACK_DELIVERY_QUEUE_URL"]
        tenant = self.http("POST", "/admin/tenants", {"name": "cost"}, headers=self.admin)
        self.tenant_id = str(tenant["tenant_id"])
        key = self.http(
            "POST", f"/admin/tenants/{self.tenant_id}/keys", {"role": "OWNER"}, headers=self.admin
        )
        self.key = str(key["key"])
        self.headers = {"Authorization": f"Bearer {self.key}"}

    # -- entry points, each counted as API Gateway / Lambda requests when inside ``measure``

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        sent = {"Content-Type": "application/json", **(headers or self.headers)}
        started = self.meter_mark()
        response = self.client.http.request(
            method, path, headers=sent, body=b"" if body is None else json.dumps(body).encode()
        )
        self.invoked("api_handler", started)
        if self._row is not None:
            self._row.api_requests += 1
        return response

    def http(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        response = self.request(method, path, body, headers)
        if response.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.body!r}")
        return response.json_body

    def poll(self, skip_deliveries: bool = False) -> int:
        """One dispatcher invocation as the local stack's poller makes it (SQS receive, the
        handler, the batch delete). An empty receive is the poller's idle cost, not the
        operation's: it is dropped. ``skip_deliveries`` hands the dispatcher only the records
        that are not ``deliver`` work (a queued fan-out's chunks) and leaves the rest on the
        queue (reported as batch item failures), so a publish is measured without its
        deliveries. Returns how many records the dispatcher ran."""
        from devstack.loops import poll_once

        ran = {"records": 0}

        def handler(event: dict[str, Any], context: Any) -> Any:
            records = event["Records"]
            if skip_deliveries:
                records = [r for r in records if _kind(r) != "deliver"]
                left = [r for r in event["Records"] if _kind(r) == "deliver"]
            else:
                left = []
            ran["records"] = len(records)
            result = self.dispatcher({**event, "Records": records}, context) if records else {}
            failures = list((result or {}).get("batchItemFailures", []))
            failures += [{"itemIdentifier": r["messageId"]} for r in left]
            return {"batchItemFailures": failures}

        started, sent = self.meter_mark(), self.receiver.sent()
        got = poll_once(self.work_url, handler, max_messages=BATCH)
        if self._row is not None:
            if got == 0 or ran["records"] == 0:
                self.meter.drop_last(self._row.tally, "sqs", "ReceiveMessage")
            else:
                self.invoked("dispatcher", started, http=self.receiver.sent() > sent)
        return ran["records"] if skip_deliveries else got

    def outstanding(self) -> int:
        with self.meter.paused():
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

    def drain(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.poll() == 0:
                if self.outstanding() == 0:
                    return
                time.sleep(0.1)
        raise RuntimeError(f"work still outstanding after {timeout} s")

    def purge(self) -> None:
        """Drop queued work an operation left behind (not measured). SQS allows one PurgeQueue
        a minute; receiving and deleting a deep queue on moto is far slower than waiting."""
        with self.meter.paused():
            if not self.outstanding():
                return
            wait = self._purged_at + 61 - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.sqs.purge_queue(QueueUrl=self.work_url)
            self._purged_at = time.monotonic()

    def meter_mark(self) -> int:
        return self._row.tally.total if self._row is not None else 0

    def invoked(self, function: str, started_at: int, http: bool = False) -> None:
        row = self._row
        if row is None:
            return
        row.invocations[function] = row.invocations.get(function, 0) + 1
        calls = row.tally.total - started_at
        ms = LAMBDA_MODEL["base_ms"] + LAMBDA_MODEL["per_aws_request_ms"] * calls
        if http:
            ms += LAMBDA_MODEL["target_answer_ms"]
        billed_s = math.ceil(ms) / 1000
        row.gb_seconds += billed_s * lambda_memory_mb(function) / 1024

    @contextlib.contextmanager
    def measure(self, name: str, per: int, note: str = "") -> Iterator[Row]:
        began = time.monotonic()
        with self.meter.tally() as tally:
            row = Row(name, per, tally, note=note)
            self._row = row
            try:
                yield row
            finally:
                self._row = None
        if row.discard:
            return
        self.rows.append(row)
        print(
            f"  measured {name}: {tally.total / per:.1f} AWS requests, ${row.per_op() * 1e6:.2f}/M"
            f" ({time.monotonic() - began:.0f} s over moto)",
            flush=True,
        )

    # -- set-up helpers (not measured)

    def register(self, event_type: str, url: str, backup: str | None = None) -> str:
        body: dict[str, Any] = {"event_type": event_type, "destination_url": url}
        if backup:
            body["backup_url"] = backup
        made = self.http("POST", f"/companies/{self.tenant_id}/campaigns/config/callbacks", body)
        return str(made.get("callback_id", ""))

    def publish(self, event_type: str, n: int = 0) -> dict[str, Any]:
        return dict(self.http("POST", "/events", {"event_type": event_type, "payload": {"n": n}}))


# ----------------------------------------------------------------------------- the classes


def deliveries(b: Bench) -> dict[str, Any]:
    """a) publish to 1 and 10 targets; b) c) d) deliveries."""
    r = b.receiver.base
    b.register("cost.ok", f"{r}/ok")
    for i in range(BATCH):
        b.register(f"cost.flaky{i}", f"{r}/flaky?k={i}")
    b.register("cost.down", f"{r}/down", backup=f"{r}/down-backup")
    # one event type has one campaign registration at a time: 10 targets are 10 call notifiers
    for i in range(10):
        b.http(
            "POST",
            f"/customer/{b.tenant_id}/callnotify",
            {"url": f"{r}/ok?t={i}", "method": "POSTJSON", "selection": "ALL"},
        )
    # warm-up round: every registration used once (secrets decrypted, health known)
    b.publish("cost.ok")
    for i in range(BATCH):
        b.publish(f"cost.flaky{i}")
    b.publish("cost.down")
    b.http("POST", "/events", CALL_EVENT)
    b.drain()
    b.receiver.seen.clear()

    with b.measure("a) publish, 1 target", BATCH):
        for i in range(BATCH):
            b.publish("cost.ok", i)
    with b.measure("b) delivery, 1st attempt ok", BATCH):
        b.drain()
    with b.measure("a) publish, 10 targets", 5, note="call event, 10 call notifiers"):
        for _ in range(5):
            b.http("POST", "/events", CALL_EVENT)
    b.purge()

    for i in range(BATCH):
        b.publish(f"cost.flaky{i}", i)
    with b.measure("c) delivery, ok on 3rd attempt", BATCH):
        b.drain()
    for i in range(BATCH):
        b.publish("cost.down", i)
    before = dict(b.receiver.hits)
    with b.measure("d) delivery, failed (backup URL too)", BATCH) as row:
        b.drain(timeout=120)
    down = (b.receiver.hits.get("/down", 0) - before.get("/down", 0)) / BATCH
    backup = (b.receiver.hits.get("/down-backup", 0) - before.get("/down-backup", 0)) / BATCH
    row.note = f"{down:g} attempts at the URL, then {backup:g} at the backup URL, all 500"
    return {"failed_class_attempts": {"primary": down, "backup": backup}}


def batched_ingest(b: Bench) -> str:
    """POST /events with a JSON array of 100 events, if the API takes it (a 4xx: it does not)."""
    events = [{"event_type": "cost.ok", "payload": {"n": i}} for i in range(100)]
    with b.measure("a) publish, 1 target, batches of 100", 100) as row:
        response = b.request("POST", "/events", events)
    b.purge()
    if response.status_code >= 300:
        row.discard = True
        return f"batched ingest: not available (POST /events with an array: {response.status_code})"
    return "batched ingest: available (100 events per POST /events)"


def notification_batch(b: Bench, events: int = 200) -> dict[str, Any]:
    """e) ``events`` notification events buffered and delivered as batches of up to 200."""
    base = "/rest/api/v1.3/notifications"
    b.http(
        "POST",
        f"{base}/callbacks",
        {
            "name": "costcb",
            "url": f"{b.receiver.base}/notify",
            "batchSize": 200,
            "authentication": NOTIFY_AUTH,
        },
    )
    b.http(
        "POST",
        f"{base}/subscriptions",
        {"name": "costsub", "callbackName": "costcb", "eventNames": ["EMAIL_BOUNCED"]},
    )
    before = b.receiver.hits.get("/notify", 0)
    with b.measure(f"e) notification batch of {events} events", 1) as row:
        for i in range(events):
            b.http("POST", "/events", {"event_type": "EMAIL_BOUNCED", "payload": {"riid": i}})
        b.drain()
    posts = b.receiver.hits.get("/notify", 0) - before
    row.note = f"{events} POST /events + delivery; {posts} batch POSTs at the default window"
    return {"notification_batches_delivered": posts}


def registrations(b: Bench) -> None:
    """g) a registration create in each family."""
    r = b.receiver.base
    n = 5
    with b.measure("g) create: campaign registration", n):
        for i in range(n):
            b.register(f"cost.g{i}", f"{r}/ok?g={i}")
    with b.measure("g) create: notification callback", n, note="incl. its URL check"):
        for i in range(n):
            b.http(
                "POST",
                "/rest/api/v1.3/notifications/callbacks",
                {
                    "name": f"g{i}",
                    "url": f"{r}/notify?g={i}",
                    "batchSize": 10,
                    "authentication": NOTIFY_AUTH,
                },
            )
    with b.measure("g) create: notification subscription", n):
        for i in range(n):
            b.http(
                "POST",
                "/rest/api/v1.3/notifications/subscriptions",
                {"name": f"gs{i}", "callbackName": f"g{i}", "eventNames": ["SMS_FAILED"]},
            )
    with b.measure("g) create: call notifier", n):
        for i in range(n):
            b.http(
                "POST",
                f"/customer/{b.tenant_id}/callnotify",
                {"url": f"{r}/call?g={i}", "method": "POSTJSON", "selection": "SIP"},
            )


def scheduled_create(b: Bench, count: int, seconds_ahead: float) -> float:
    """``count`` one-time callbacks through ``GET /api/1.0/create/``, all due at one second."""
    moment = math.ceil(time.time() + seconds_ahead)
    when = datetime.fromtimestamp(moment, UTC).isoformat()
    for i in range(count):
        query = urlencode(
            {"api_key": b.key, "callback_url": f"{b.receiver.base}/ok?s={i}", "callback_time": when}
        )
        response = b.request("GET", f"/api/1.0/create/?{query}", headers={})
        if response.status_code >= 300:
            raise RuntimeError(f"scheduled create: {response.status_code} {response.body!r}")
    return float(moment)


def session_reads(b: Bench) -> None:
    """i) the API reads of a typical session: list + one + deliveries."""
    event = b.publish("cost.ok", 99)
    b.drain()
    callbacks = b.http("GET", f"/companies/{b.tenant_id}/campaigns/config/callbacks")
    if isinstance(callbacks, dict):
        callbacks = callbacks.get("callbacks") or callbacks.get("items") or []
    first = (callbacks or [{}])[0]
    callback_id = first.get("callback_id") if isinstance(first, dict) else None
    with b.measure("i) API session: list + one + deliveries", 1) as row:
        b.http("GET", f"/companies/{b.tenant_id}/campaigns/config/callbacks")
        if callback_id:
            b.http("GET", f"/companies/{b.tenant_id}/campaigns/config/callbacks/{callback_id}")
        seen = b.http("GET", f"/events/{event['event_id']}")
        b.http("GET", "/deliveries?status=delivered")
        found = seen.get("deliveries") or []
        if found and isinstance(found[0], dict) and found[0].get("delivery_id"):
            b.http("GET", f"/deliveries/{found[0]['delivery_id']}")
    row.note = f"{row.api_requests} GET requests"


def idle_minute(b: Bench) -> Row:
    """h) every schedule handler of the app, run once with nothing due, scaled to a minute."""
    from chalice.app import Rate

    from devstack.loops import schedule_event

    b.drain()
    handlers = []
    for source in b.app.event_sources:
        rate = getattr(source, "schedule_expression", None)
        if rate is None:
            continue
        per_minute = 1.0
        if isinstance(rate, Rate):
            unit_minutes = {Rate.MINUTES: 1, Rate.HOURS: 60, Rate.DAYS: 1440}.get(rate.unit, 1)
            per_minute = 1 / (rate.value * unit_minutes)
        handlers.append((source.name, per_minute))
    for name, _ in handlers:  # the first run of a process primes its cursors
        b.app.handler_map[name](schedule_event(), None)
    with b.measure(
        "h) idle minute: " + ", ".join(n for n, _ in handlers), 1, note="per minute, 0 due"
    ) as row:
        for name, per_minute in handlers:
            runs = max(1, round(per_minute))
            for _ in range(runs):
                started = b.meter_mark()
                b.app.handler_map[name](schedule_event(), None)
                b.invoked(name, started)
    return row


@contextlib.contextmanager
def clock_ahead(seconds: float) -> Iterator[None]:
    """Run this process ``seconds`` in the future (``time.time`` only): a callback scheduled
    20 minutes ahead then fires now, through the due-items table and the sweep, as on AWS."""
    real = time.time
    time.time = lambda: real() + seconds  # type: ignore[assignment]
    try:
        yield
    finally:
        time.time = real  # type: ignore[assignment]


def scheduled(b: Bench) -> None:
    """g) scheduled create (near and far); f) its firing, near (SQS delay) and far (due table)."""
    scheduled_create(b, 1, 1)  # warm-up (not measured): the firing path's first run
    time.sleep(1.5)
    b.drain()
    with b.measure("g) create: scheduled callback, 20 min ahead", BATCH):
        far = scheduled_create(b, BATCH, 20 * 60 + 30)
    with b.measure("g) create: scheduled callback, 3 s ahead", BATCH):
        scheduled_create(b, BATCH, 3)
    time.sleep(3)
    with b.measure("f) scheduled firing, within 15 min (SQS delay)", BATCH):
        b.drain()
    from devstack.loops import schedule_event

    def run_sweep() -> None:
        started = b.meter_mark()
        b.app.handler_map["sweeper"](schedule_event(), None)
        b.invoked("sweeper", started)

    with clock_ahead(far - time.time() - 70):
        run_sweep()  # moves the sweep's cursor to this (future) minute: what a live sweep sees
    with (
        clock_ahead(far - time.time() - 3),
        b.measure(
            "f) scheduled firing, later (due table + sweep)", BATCH, note="incl. one sweep run"
        ),
    ):
        run_sweep()
        b.drain()


def fan_out_1000(b: Bench) -> None:
    """a) an event matching 1,000 targets: a second tenant with 1,000 call notifiers (written
    straight to the table: through the API they would take minutes on moto)."""
    from chalicelib.storage import callnotify

    tenant = b.http("POST", "/admin/tenants", {"name": "cost-fanout"}, headers=b.admin)
    tenant_id = str(tenant["tenant_id"])
    key = b.http("POST", f"/admin/tenants/{tenant_id}/keys", {"role": "OWNER"}, headers=b.admin)[
        "key"
    ]
    began = time.monotonic()
    with b.meter.paused():
        # One notifier made properly, 999 copies of it batch-written: publishing reads them and
        # never decrypts their secrets, and 1,000 creates would take minutes on moto.
        fields = {"url": f"{b.receiver.base}/ok?f=0", "method": "POSTJSON", "selection": "ALL"}
        first = callnotify.create(tenant_id, fields, datetime.now(UTC)).notifier
        values = {
            k: v
            for k, v in first.attribute_values.items()
            if k not in ("customer_id", "notify_id", "url")
        }
        with callnotify.CallNotifierModel.batch_write() as batch:
            for i in range(1, 1000):
                batch.save(
                    callnotify.CallNotifierModel(
                        tenant_id, f"{i:024x}", url=f"{b.receiver.base}/ok?f={i}", **values
                    )
                )
    print(f"  (1,000 call notifiers written in {time.monotonic() - began:.0f} s)", flush=True)
    with b.measure("a) publish, 1000 targets", 1, note="call event, 1000 call notifiers"):
        b.http("POST", "/events", CALL_EVENT, headers={"Authorization": f"Bearer {key}"})
        # A large fan-out may be queued in chunks that the dispatcher writes out: part of the
        # publish. Run those (not the deliveries they queue) until a poll finds none.
        for _ in range(200):
            if b.poll(skip_deliveries=True) == 0:
                break
    b.purge()


# ----------------------------------------------------------------------------- report


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'operation':<48} {'AWS req':>8} {'DDB':>5} {'SQS':>5} {'KMS':>4} "
        f"{'WRU':>6} {'RRU':>6} {'APIGW':>5} {'λ inv':>6} {'$/M ops':>9}"
    )
    print("\n" + header)
    print("-" * len(header))
    for row in rows:
        t, n = row.tally, row.per
        print(
            f"{row.name:<48} {t.total / n:>8.2f} {t.count('dynamodb') / n:>5.1f} "
            f"{t.count('sqs') / n:>5.1f} {t.count('kms') / n:>4.1f} {t.wru / n:>6.2f} "
            f"{t.rru / n:>6.2f} {row.api_requests / n:>5.2f} {row.lambda_requests() / n:>6.2f} "
            f"{dollars(row.per_op() * 1e6):>9}"
        )
    print("\nrequests by API, per operation:")
    for row in rows:
        units: dict[str, float] = {}
        for call in row.tally.calls:
            api = f"{call.service}.{call.operation}"
            units[api] = units.get(api, 0.0) + call.wru
        apis = ", ".join(
            f"{k} {v / row.per:g}" + (f" ({units[k] / row.per:g} WRU)" if units.get(k) else "")
            for k, v in sorted(row.tally.by_api().items())
        )
        note = f" ({row.note})" if row.note else ""
        print(f"  {row.name}{note}: {apis}")


def print_prices() -> None:
    print(f"\nprices: us-east-1 on-demand list prices, taken {PRICES_TAKEN}")
    for name, value in PRICES.items():
        print(f"  {name}: ${value * 1e6:g} per million")
    print("  sources: " + ", ".join(PRICE_SOURCES))
    for function in ("api_handler", "dispatcher", "sweeper"):
        print(f"  lambda memory {function}: {lambda_memory_mb(function)} MB (.chalice/config.json)")
    print(f"  lambda duration model: {LAMBDA_MODEL}")


def delivery_lines(rows: list[Row], batched: bool) -> list[str]:
    by = {row.name: row for row in rows}

    def per(name: str) -> float:
        return by[name].per_op() if name in by else float("nan")

    def split(*names: str) -> str:
        parts: dict[str, float] = {}
        for name in names:
            if name in by:
                for kind, value in by[name].breakdown().items():
                    parts[kind] = parts.get(kind, 0.0) + value
        return " + ".join(f"{k} {v * 1e6:.2f}" for k, v in parts.items() if v)

    single = per("a) publish, 1 target")
    batch = per("a) publish, 1 target, batches of 100") if batched else None
    lines = []
    classes = [
        ("first-try delivery", "b) delivery, 1st attempt ok"),
        ("ok on 3rd attempt", "c) delivery, ok on 3rd attempt"),
        ("failed, with backup URL", "d) delivery, failed (backup URL too)"),
    ]
    eb, qs = EVENTBRIDGE_PER_DELIVERY * 1e6, QSTASH_PER_DELIVERY * 1e6
    for label, name in classes:
        one = (single + per(name)) * 1e6
        text = f"{label:<26} ${one:6.2f}/M deliveries (1 event/request)"
        text += f", ${(batch + per(name)) * 1e6:6.2f}/M (batches of 100)" if batch else ""
        lines.append(text + f"  vs EventBridge ${eb:.2f}/M, QStash ${qs:.2f}/M")
        lines.append(f"{'':<28}= {split('a) publish, 1 target', name)}")
    notify = next((r for r in rows if r.name.startswith("e) notification")), None)
    if notify is not None:
        events = int(notify.name.split("of ")[1].split()[0])
        value = notify.per_op() / events * 1e6
        lines.append(
            f"{'notification event':<26} ${value:6.2f}/M events (batched, 1 event/request)"
            f"  vs EventBridge ${eb:.2f}/M, QStash ${qs:.2f}/M"
        )
        parts = {k: v / events for k, v in notify.breakdown().items()}
        lines.append(
            f"{'':<28}= " + " + ".join(f"{k} {v * 1e6:.2f}" for k, v in parts.items() if v)
        )
    far = by.get("f) scheduled firing, later (due table + sweep)")
    create = by.get("g) create: scheduled callback, 20 min ahead")
    if far and create:
        value = (far.per_op() + create.per_op()) * 1e6
        lines.append(
            f"{'scheduled one-time':<26} ${value:6.2f}/M callbacks (create + firing)"
            f"  vs QStash ${qs:.2f}/M, EventBridge Scheduler "
            f"${PRICES['eventbridge_scheduler_invocation'] * 1e6:.2f}/M + its target"
        )
        lines.append(f"{'':<28}= {split(far.name, create.name)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="also print every row as JSON")
    parser.add_argument("--skip-fanout-1000", action="store_true")
    parser.add_argument(
        "--only",
        help="comma-separated sections: deliveries, batched, notification, creates, reads, "
        "idle, scheduled, fanout1000",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    b = Bench()
    print(f"embedded AWS up; retry schedule {RETRIES}; batches of {BATCH}", flush=True)
    facts: dict[str, Any] = {}
    batched = "batched ingest: not tried"
    only = set(args.only.split(",")) if args.only else None
    failed: list[str] = []

    def section(name: str, run: Callable[[], Any]) -> Any:
        """One section; a failure (an API that changed under the bench) is reported, and the
        other sections still run."""
        if not (only is None or name in only):
            return None
        try:
            return run()
        except Exception:
            traceback.print_exc()
            print(f"  section {name} FAILED; the others go on", flush=True)
            failed.append(name)
            with contextlib.suppress(Exception):
                b.purge()
            return None

    facts.update(section("deliveries", lambda: deliveries(b)) or {})
    batched = section("batched", lambda: batched_ingest(b)) or batched
    facts.update(section("notification", lambda: notification_batch(b)) or {})
    section("creates", lambda: registrations(b))
    section("reads", lambda: session_reads(b))
    section("idle", lambda: idle_minute(b))
    section("scheduled", lambda: scheduled(b))
    if not args.skip_fanout_1000:
        section("fanout1000", lambda: fan_out_1000(b))
    print_table(b.rows)
    print(f"\n  {facts}")
    print_prices()
    print("\n$/M deliveries, all-in (publish + delivery):")
    print("  " + batched)
    for line in delivery_lines(b.rows, batched.startswith("batched ingest: available")):
        print("  " + line)
    idle = next((r for r in b.rows if r.name.startswith("h)")), None)
    if idle is not None:
        month = idle.per_op() * 60 * 24 * 30
        print(
            f"  idle: ${month:.4f}/month for the schedule handlers; the SQS event-source "
            "pollers add their own empty long polls (not counted here)"
        )
    if args.json:
        for row in b.rows:
            print("  json:", json.dumps({"operation": row.name, **row.figures()}))
    print(f"\n(bench took {time.monotonic() - started:.0f} s)")
    if failed:
        print(f"sections that failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
