"""``make soak``: 1,000 events against the running local stack, receivers failing 30 % of the time,
then the same with the worker process SIGKILLed mid-batch. Nothing may be lost.

Run 1 (``faults``) starts the stack as ``make run`` does (one process). Run 2 (``kill``) starts it
split (``devstack.run --no-worker`` + ``--worker-only``), SIGKILLs the worker while receivers
are answering (twice by default) and starts a new one each time. Both runs: create a tenant and
key through the admin API, register campaign callbacks for five event types (three with a
``backup_url``) at two loopback receivers (``bench/soak_receiver.py``), publish the events through
``POST /events`` from a thread pool (a unique ``soak_id`` and ``Idempotency-Key`` each), poll
``GET /events/{id}`` until every delivery is final or the deadline passes, then read every
``GET /deliveries/{id}`` and compare it with what the receivers saw.

Definitions (docs/soak.md):

- *lost*: an accepted delivery that at the end is neither delivered, failed, skipped nor
  retrying, i.e. its record is missing from its event or still ``pending`` after the deadline;
- *duplicate send*: a receiver processed (meant to answer 2xx) the same ``webhook-id`` again;
- *backup switch*: a delivery whose attempts 1-3 failed at the primary URL and whose attempt 4
  went to the backup URL. Any other pattern (backup before attempt 4, primary after it, an
  attempt after a success) is a *violation*.

Exit status 1 when anything is lost, a rule is violated, a delivery is marked delivered that no
receiver answered, or a send follows a recorded success. Duplicates are reported, not failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from bench import soak_scheduled
from bench.soak_receiver import FaultyReceiver, Receipt
from bench.soak_stack import Stack

FINAL = ("delivered", "failed", "skipped")

# (event type, content type, has a backup URL)
EVENT_TYPES: tuple[tuple[str, str, bool], ...] = (
    ("soak.call.started", "application/json", True),
    ("soak.call.ended", "application/json", True),
    ("soak.sms.received", "application/x-www-form-urlencoded", False),
    ("soak.voicemail", "application/xml", True),
    ("soak.recording", "application/json", False),
)


@dataclass(frozen=True)
class Options:
    events: int
    fail_rate: float
    schedule: str
    http_timeout: float
    visibility: int
    deadline: float
    publishers: int
    kills: tuple[float, ...]
    seed: int
    reconcile_grace: float = 60.0
    aws_faults: float = 0.10
    aws_faults_seed: int = 12
    scheduled: int = 200


@dataclass(frozen=True)
class Registration:
    event_type: str
    primary: str
    backup: str | None


@dataclass
class Tenant:
    tenant_id: str
    headers: dict[str, str]
    registrations: dict[str, Registration] = field(default_factory=dict)


@dataclass(frozen=True)
class Accepted:
    event_id: str
    event_type: str
    deliveries: int  # as the 202 said
    after_5xx: bool = False  # accepted on a retry after a 5xx or a dropped connection
    soak_id: str = ""


EXPECTED_PER_EVENT = 1
"""One registration per event type (the campaign overlap rule allows no more): every event must
end with exactly one delivery, whatever its 202 said."""


_local = threading.local()


def _session() -> requests.Session:
    if not hasattr(_local, "session"):
        _local.session = requests.Session()
    session: requests.Session = _local.session
    return session


# ------------------------------------------------------------------------------------- set-up


def create_tenant(stack: Stack) -> Tenant:
    admin = stack.admin_headers()
    made = requests.post(
        f"{stack.base_url}/admin/tenants", headers=admin, json={"name": "soak"}, timeout=30
    )
    made.raise_for_status()
    tenant_id = made.json()["tenant_id"]
    key = requests.post(
        f"{stack.base_url}/admin/tenants/{tenant_id}/keys",
        headers=admin,
        json={"role": "OWNER"},
        timeout=30,
    )
    key.raise_for_status()
    headers = {"Authorization": f"Bearer {key.json()['key']}", "Content-Type": "application/json"}
    return Tenant(tenant_id, headers)


def register(stack: Stack, tenant: Tenant, primary: FaultyReceiver, backup: FaultyReceiver) -> None:
    base = f"{stack.base_url}/companies/{tenant.tenant_id}/campaigns/config/callbacks"
    for event_type, content_type, with_backup in EVENT_TYPES:
        body: dict[str, Any] = {
            "event_type": event_type,
            "destination_url": primary.url(event_type),
            "content_type": content_type,
        }
        if with_backup:
            body["backup_url"] = backup.url(event_type)
        created = requests.post(base, headers=tenant.headers, json=body, timeout=30)
        created.raise_for_status()
        secret = created.json()["signing_secret"]
        primary.trust(event_type, secret)
        backup.trust(event_type, secret)
        tenant.registrations[event_type] = Registration(
            event_type, primary.url(event_type), body.get("backup_url")
        )


# ------------------------------------------------------------------------------------- publish


@dataclass
class Published:
    accepted: list[Accepted]
    refused: list[str]
    client_retries: int
    seconds: float
    refusals: dict[str, list[int]] = field(default_factory=dict)  # soak id -> answers


def _publish_one(
    stack: Stack, tenant: Tenant, run: str, n: int
) -> tuple[Accepted | None, int, list[int]]:
    """One event; retried (same Idempotency-Key, so never twice) on a connection error or 5xx,
    with a growing pause (0.5 s to 4 s, 8 tries): what a careful publisher does."""
    event_type = EVENT_TYPES[n % len(EVENT_TYPES)][0]
    soak_id = f"{run}-{n:05d}"
    body = {"event_type": event_type, "payload": {"soak_id": soak_id, "n": n}}
    headers = {**tenant.headers, "Idempotency-Key": soak_id}
    answers: list[int] = []
    for attempt in range(8):
        try:
            answer = _session().post(
                f"{stack.base_url}/events", headers=headers, json=body, timeout=30
            )
        except requests.RequestException:
            answers.append(0)
            time.sleep(min(0.5 * 2**attempt, 4.0))
            continue
        answers.append(answer.status_code)
        if answer.status_code == 202:
            data = answer.json()
            after_5xx = any(a == 0 or a >= 500 for a in answers)  # a 429 wait is not one
            accepted = Accepted(
                data["event_id"], event_type, int(data["deliveries"]), after_5xx, soak_id
            )
            return accepted, len(answers) - 1, answers
        if answer.status_code == 429:  # over the tenant's events-per-second quota: wait
            time.sleep(float(answer.headers.get("Retry-After", "1")))
            continue
        if answer.status_code < 500:
            return None, len(answers) - 1, answers
        time.sleep(min(0.5 * 2**attempt, 4.0))
    return None, len(answers) - 1, answers


def publish_all(stack: Stack, tenant: Tenant, run: str, options: Options) -> Published:
    started = time.monotonic()
    accepted: list[Accepted] = []
    refused: list[str] = []
    refusals: dict[str, list[int]] = {}
    retries = 0
    with ThreadPoolExecutor(options.publishers, thread_name_prefix="publish") as pool:
        results = pool.map(lambda n: _publish_one(stack, tenant, run, n), range(options.events))
        for n, (outcome, tries, answers) in enumerate(results):
            retries += tries
            if outcome is None:
                refused.append(f"{run}-{n:05d}")
                refusals[f"{run}-{n:05d}"] = answers
            else:
                accepted.append(outcome)
    return Published(accepted, refused, retries, time.monotonic() - started, refusals)


# ------------------------------------------------------------------------------------- wait


@dataclass
class Waited:
    deliveries: dict[str, list[dict[str, Any]]]  # event id -> [{delivery_id, status, ...}]
    seconds: float
    rounds: int
    not_final_events: int


def _event_state(stack: Stack, tenant: Tenant, event_id: str) -> list[dict[str, Any]] | None:
    try:
        answer = _session().get(
            f"{stack.base_url}/events/{event_id}", headers=tenant.headers, timeout=30
        )
    except requests.RequestException:
        return None
    if answer.status_code != 200:
        return None
    found: list[dict[str, Any]] = answer.json()["deliveries"]
    return found


def wait_final(stack: Stack, tenant: Tenant, accepted: list[Accepted], deadline: float) -> Waited:
    """Poll the events whose deliveries are not all final yet, until none is or time is up."""
    started = time.monotonic()
    expected = {a.event_id: EXPECTED_PER_EVENT for a in accepted}
    seen: dict[str, list[dict[str, Any]]] = {}
    open_ids = set(expected)
    rounds = 0
    with ThreadPoolExecutor(8, thread_name_prefix="poll") as pool:
        while open_ids:
            rounds += 1
            ids = sorted(open_ids)
            for event_id, state in zip(
                ids, pool.map(lambda e: _event_state(stack, tenant, e), ids), strict=True
            ):
                if state is None:
                    continue
                seen[event_id] = state
                if len(state) >= expected[event_id] and all(d["status"] in FINAL for d in state):
                    open_ids.discard(event_id)
            if not open_ids or time.monotonic() - started > deadline:
                break
            time.sleep(2.0)
    return Waited(seen, time.monotonic() - started, rounds, len(open_ids))


def fetch_deliveries(stack: Stack, tenant: Tenant, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    def one(delivery_id: str) -> tuple[str, dict[str, Any] | None]:
        for _ in range(3):
            try:
                answer = _session().get(
                    f"{stack.base_url}/deliveries/{delivery_id}", headers=tenant.headers, timeout=30
                )
            except requests.RequestException:
                continue
            if answer.status_code == 200:
                return delivery_id, answer.json()
        return delivery_id, None

    with ThreadPoolExecutor(8, thread_name_prefix="fetch") as pool:
        return {k: v for k, v in pool.map(one, sorted(ids)) if v is not None}


# ------------------------------------------------------------------------------------- kill


@dataclass(frozen=True)
class Kill:
    at_receipts: int
    receiver_requests_open: int
    queue: dict[str, int]
    pid: int
    seconds_into_run: float


class Killer(threading.Thread):
    """SIGKILLs the worker when the receivers have seen each fraction of the expected
    deliveries and at least one request is open at a receiver (a send is in flight)."""

    def __init__(
        self,
        stack: Stack,
        receivers: list[FaultyReceiver],
        total: int,
        fractions: tuple[float, ...],
    ) -> None:
        super().__init__(name="killer", daemon=True)
        self.kills: list[Kill] = []
        self._stack = stack
        self._receivers = receivers
        self._thresholds = [int(total * f) for f in fractions]
        self._began = time.monotonic()
        self._stop_event = threading.Event()

    def _receipts(self) -> int:
        return sum(len(r.receipts) for r in self._receivers)

    def _open(self) -> int:
        return sum(r.in_flight for r in self._receivers)

    def run(self) -> None:
        for threshold in self._thresholds:
            while not self._stop_event.is_set() and self._receipts() < threshold:
                time.sleep(0.01)
            waited = time.monotonic()
            while not self._stop_event.is_set() and self._open() == 0:
                if time.monotonic() - waited > 5:
                    break
                time.sleep(0.002)
            if self._stop_event.is_set():
                return
            receipts, open_requests = self._receipts(), self._open()
            pid = self._stack.kill_worker()
            queue = self._stack.queue_depth()
            self.kills.append(
                Kill(receipts, open_requests, queue, pid, time.monotonic() - self._began)
            )
            print(
                f"  SIGKILL worker pid {pid} after {receipts} receiver requests, "
                f"{open_requests} open at the receivers; queue {queue}",
                flush=True,
            )
            if self._stop_event.wait(1.0):
                return  # the run is over: nothing to restart
            self._stack.start_worker()

    def stop(self) -> None:
        self._stop_event.set()


# ------------------------------------------------------------------------------------- analysis


def _ok(attempt: dict[str, Any]) -> bool:
    code = attempt.get("status_code")
    return isinstance(code, int) and 200 <= code < 300


def check_attempts(reg: Registration, record: dict[str, Any]) -> tuple[bool, bool]:
    """(switched to backup after exactly 3 primary failures, rule broken)."""
    attempts = record["attempts"]
    broken = False
    for index, attempt in enumerate(attempts):
        expected_url = reg.backup if (reg.backup and index >= 3) else reg.primary
        if attempt["url"] != expected_url:
            broken = True
        if _ok(attempt) and index != len(attempts) - 1:
            broken = True  # an attempt after a success
    if record["status"] == "delivered" and not (attempts and _ok(attempts[-1])):
        broken = True
    switched = (
        reg.backup is not None
        and len(attempts) >= 4
        and all(a["url"] == reg.primary and not _ok(a) for a in attempts[:3])
        and attempts[3]["url"] == reg.backup
    )
    return switched, broken


@dataclass
class Figures:
    run: str
    events_published: int
    events_accepted: int
    events_refused: int
    publish_client_retries: int
    publish_seconds: float
    deliveries_expected: int
    delivered: int = 0
    failed: int = 0
    skipped: int = 0
    failure_reasons: dict[str, int] = field(default_factory=dict)
    retrying_at_end: int = 0
    pending_at_end: int = 0
    missing: int = 0
    lost: int = 0
    stuck: int = 0
    accepted_after_5xx: int = 0
    lost_after_5xx: int = 0
    wrong_delivery_count_in_202: int = 0
    aws_faults: dict[str, Any] | None = None
    scheduled: dict[str, Any] | None = None
    evidence: list[dict[str, Any]] = field(default_factory=list)
    attempts_recorded: int = 0
    attempt_outcomes: dict[str, int] = field(default_factory=dict)
    receiver_requests: int = 0
    receiver_behaviours: dict[str, int] = field(default_factory=dict)
    deliveries_with_backup: int = 0
    backup_switches: int = 0
    backup_rule_violations: int = 0
    duplicate_sends: int = 0
    duplicate_deliveries: int = 0
    duplicates_by_cause: dict[str, int] = field(default_factory=dict)
    delivered_without_receipt: int = 0
    bad_signatures: int = 0
    receiver_crashes: int = 0
    unknown_webhook_ids: int = 0
    drain_seconds: float = 0.0
    total_seconds: float = 0.0
    kills: list[dict[str, Any]] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return (
            self.lost == 0
            and self.stuck == 0
            and self.backup_rule_violations == 0
            and self.delivered_without_receipt == 0
            and self.duplicates_by_cause.get("after a recorded success", 0) == 0
        )


def _duplicates(receipts: list[Receipt], record: dict[str, Any] | None) -> tuple[int, Counter[str]]:
    """Extra processed sends of one delivery, with why each happened (from the receiver's own
    record: ``webhook-id``, the attempt number in the body, what it answered)."""
    causes: Counter[str] = Counter()
    recorded = {i + 1: a for i, a in enumerate(record["attempts"])} if record else {}
    previous: Receipt | None = None
    extra = 0
    for receipt in sorted(receipts, key=lambda r: r.at):
        if not receipt.processed:
            continue
        if previous is not None:
            extra += 1
            earlier = recorded.get(previous.attempt)
            sends_of_previous = sum(1 for r in receipts if r.attempt == previous.attempt)
            if previous.attempt == receipt.attempt:
                causes["same attempt sent again (its outcome was never recorded)"] += 1
            elif earlier is None:
                causes["earlier attempt never recorded"] += 1
            elif _ok(earlier):
                causes["after a recorded success"] += 1
            elif previous.behaviour == "timeout" or earlier.get("error") == "timeout":
                # the receiver answered after the sender's timeout (a "slow" answer can, on a
                # loaded machine): an answer not heard
                causes["retry after a failed attempt (answer not heard)"] += 1
            elif sends_of_previous > 1:
                # the earlier attempt went out twice (the second send failed)
                causes["same attempt sent again (its outcome was never recorded)"] += 1
            else:
                causes["genuine duplicate: new attempt after a 2xx answer recorded as failed"] += 1
        previous = receipt
    return extra, causes


def analyse(
    run: str,
    tenant: Tenant,
    published: Published,
    waited: Waited,
    records: dict[str, dict[str, Any]],
    receipts: list[Receipt],
) -> Figures:
    figures = Figures(
        run=run,
        events_published=len(published.accepted) + len(published.refused),
        events_accepted=len(published.accepted),
        events_refused=len(published.refused),
        publish_client_retries=published.client_retries,
        publish_seconds=round(published.seconds, 1),
        deliveries_expected=EXPECTED_PER_EVENT * len(published.accepted),
        drain_seconds=round(waited.seconds, 1),
    )
    for soak_id, answers in sorted(published.refusals.items()):
        figures.evidence.append(
            {"what": "event never accepted", "soak_id": soak_id, "answers": answers}
        )
    by_webhook: dict[str, list[Receipt]] = defaultdict(list)
    for receipt in receipts:
        by_webhook[receipt.webhook_id].append(receipt)
    figures.receiver_requests = len(receipts)
    figures.receiver_behaviours = dict(Counter(r.behaviour for r in receipts))
    figures.bad_signatures = sum(1 for r in receipts if not r.signature_ok)
    causes: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    known: set[str] = set()
    for event in published.accepted:
        listed = waited.deliveries.get(event.event_id, [])
        missing = max(0, EXPECTED_PER_EVENT - len(listed))
        figures.missing += missing
        figures.accepted_after_5xx += 1 if event.after_5xx else 0
        figures.wrong_delivery_count_in_202 += event.deliveries != EXPECTED_PER_EVENT
        if missing:
            figures.lost_after_5xx += missing if event.after_5xx else 0
            figures.evidence.append(
                {
                    "what": "event accepted with its delivery missing",
                    "event_id": event.event_id,
                    "soak_id": event.soak_id,
                    "deliveries_in_202": event.deliveries,
                    "accepted_after_5xx": event.after_5xx,
                }
            )
        reg = tenant.registrations[event.event_type]
        for entry in listed:
            delivery_id = entry["delivery_id"]
            known.add(delivery_id)
            record = records.get(delivery_id)
            status = record["status"] if record else entry["status"]
            if status == "delivered":
                figures.delivered += 1
            elif status == "failed":
                figures.failed += 1
                reasons[str(record.get("failure_reason") if record else None)] += 1
            elif status == "skipped":
                figures.skipped += 1
            elif status == "retrying":
                figures.retrying_at_end += 1
            else:
                figures.pending_at_end += 1
            if status not in FINAL:
                figures.evidence.append(
                    {
                        "what": "delivery not final at the deadline",
                        "delivery_id": delivery_id,
                        "event_id": event.event_id,
                        "status": status,
                        "attempts": len(record["attempts"]) if record else None,
                        "next_attempt_at": (record or {}).get("next_attempt_at"),
                        "accepted_after_5xx": event.after_5xx,
                    }
                )
            mine = by_webhook.get(delivery_id, [])
            extra, why = _duplicates(mine, record)
            figures.duplicate_sends += extra
            figures.duplicate_deliveries += 1 if extra else 0
            causes.update(why)
            if record is None:
                continue
            figures.attempts_recorded += len(record["attempts"])
            outcomes.update(
                f"HTTP {a['status_code']}" if a.get("status_code") else str(a.get("error"))
                for a in record["attempts"]
            )
            if reg.backup:
                figures.deliveries_with_backup += 1
            switched, broken = check_attempts(reg, record)
            figures.backup_switches += 1 if switched else 0
            figures.backup_rule_violations += 1 if broken else 0
            if status == "delivered":
                last = len(record["attempts"])
                if not any(r.attempt == last and r.behaviour in ("ok", "slow") for r in mine):
                    figures.delivered_without_receipt += 1
    for delivery_id, mine in by_webhook.items():
        record = records.get(delivery_id)
        _, why = _duplicates(mine, record)
        odd = {c: n for c, n in why.items() if not c.startswith("retry after a failed")}
        if odd:
            figures.evidence.append(
                {
                    "what": "duplicate send",
                    "delivery_id": delivery_id,
                    "causes": odd,
                    "status": (record or {}).get("status"),
                    "attempts_recorded": len(record["attempts"]) if record else None,
                    "receipts": [
                        (r.attempt, r.behaviour) for r in sorted(mine, key=lambda r: r.at)
                    ],
                }
            )
    figures.lost = figures.missing + figures.events_refused
    figures.stuck = figures.pending_at_end + figures.retrying_at_end
    figures.duplicates_by_cause = dict(causes)
    figures.attempt_outcomes = dict(outcomes.most_common())
    figures.failure_reasons = dict(reasons)
    figures.unknown_webhook_ids = sum(1 for w in by_webhook if w not in known)
    return figures


# ------------------------------------------------------------------------------------- runs


RUNS = ("faults", "kill", "aws")
TITLES = {
    "faults": "run 1: receivers failing at random",
    "kill": "run 2: receivers failing at random, worker killed and restarted",
    "aws": "run 3: receivers failing, AWS calls failing, worker killed, scheduled callbacks",
}


def soak_run(run: str, *, options: Options, log_dir: Path) -> Figures:
    """One run: ``faults`` (one process), ``kill`` (split, worker killed), ``aws`` (split,
    worker killed, the embedded AWS failing ``options.aws_faults`` of its calls, scheduled
    callbacks on top of the events)."""
    started = time.monotonic()
    split = run in ("kill", "aws")
    with_aws = run == "aws"
    overrides = {
        "RINGBACK_RETRY_SCHEDULE": options.schedule,
        "RINGBACK_HTTP_TIMEOUT": str(options.http_timeout),
        "RINGBACK_RECONCILE_GRACE_SECONDS": str(options.reconcile_grace),
    }
    primary = FaultyReceiver(
        "primary",
        fail_rate=options.fail_rate,
        late_after=options.http_timeout + 0.5,
        seed=options.seed,
    )
    backup = FaultyReceiver(
        "backup",
        fail_rate=options.fail_rate,
        late_after=options.http_timeout + 0.5,
        seed=options.seed + 1,
    )
    sched_rx = FaultyReceiver(
        "scheduled",
        fail_rate=options.fail_rate,
        late_after=options.http_timeout + 0.5,
        seed=options.seed + 2,
    )
    stack = Stack(
        split=split,
        overrides=overrides,
        visibility=options.visibility,
        log_dir=log_dir,
        aws_faults=options.aws_faults if with_aws else None,
        aws_faults_seed=options.aws_faults_seed,
    )
    killer: Killer | None = None
    planned: list[soak_scheduled.Planned] = []
    sched_figures: soak_scheduled.ScheduledFigures | None = None
    fault_stats: dict[str, Any] | None = None
    try:
        stack.start()
        # Set-up with the AWS faults paused: a registration whose create is applied then failed
        # answers 409 to its own write (its signing secret is then never seen); run 3's
        # scheduled creates measure that path instead.
        stack.switch_faults(False)
        tenant = create_tenant(stack)
        register(stack, tenant, primary, backup)
        stack.switch_faults(True)
        print(
            f"  stack up, tenant and 5 callbacks registered in {time.monotonic() - started:.1f} s"
        )
        creating: threading.Thread | None = None
        create_seconds: list[float] = []
        if with_aws and options.scheduled:
            planned = soak_scheduled.plan(options.scheduled, sched_rx, lead=45.0, spread=90.0)
            creating = threading.Thread(
                target=lambda: create_seconds.append(
                    soak_scheduled.create_all(stack, tenant.headers, planned, sched_rx)
                ),
                name="sched-create",
            )
            creating.start()
        if split and options.kills:
            killer = Killer(stack, [primary, backup], options.events, options.kills)
            killer.start()
        published = publish_all(stack, tenant, run, options)
        print(
            f"  published {len(published.accepted)} events in {published.seconds:.1f} s; "
            "waiting for every delivery to be final",
            flush=True,
        )
        if creating is not None:
            creating.join()
            made = sum(1 for p in planned if p.callback_id)
            print(
                f"  created {made} of {len(planned)} scheduled callbacks in "
                f"{create_seconds[0] if create_seconds else 0:.1f} s",
                flush=True,
            )
        waited = wait_final(stack, tenant, published.accepted, options.deadline)
        print(f"  drained in {waited.seconds:.1f} s ({waited.rounds} polling rounds)", flush=True)
        states: dict[str, dict[str, Any]] = {}
        listed: dict[str, dict[str, Any]] = {}
        sched_wait = 0.0
        if planned:
            listed = soak_scheduled.list_callbacks(stack, tenant.headers)
            ids = sorted(
                {p.callback_id for p in planned if p.callback_id}
                | {cb["callback_id"] for cb in listed.values()}
            )
            states, sched_wait = soak_scheduled.wait_final(
                stack, tenant.headers, ids, options.deadline
            )
            print(f"  scheduled callbacks final after {sched_wait:.1f} s more", flush=True)
        if killer is not None:
            killer.stop()
            killer.join(timeout=30)
        ids = [d["delivery_id"] for state in waited.deliveries.values() for d in state]
        sched_receipts = sched_rx.snapshot()
        firing_ids = sorted({r.webhook_id for r in sched_receipts if r.webhook_id})
        fetched = time.monotonic()
        records = fetch_deliveries(stack, tenant, ids)
        firing_records = fetch_deliveries(stack, tenant, firing_ids) if firing_ids else {}
        print(
            f"  read {len(records)} + {len(firing_records)} delivery records in "
            f"{time.monotonic() - fetched:.1f} s",
            flush=True,
        )
        receipts = primary.snapshot() + backup.snapshot()
        crashes = primary.crashes + backup.crashes + sched_rx.crashes
        fault_stats = stack.fault_stats()
        if planned:
            sched_figures = soak_scheduled.analyse(
                planned, listed, states, sched_receipts, firing_records
            )
            sched_figures.create_seconds = round(create_seconds[0] if create_seconds else 0, 1)
            sched_figures.wait_seconds = round(sched_wait, 1)
    finally:
        if killer is not None:
            killer.stop()
            killer.join(timeout=30)  # never leave it starting a worker after the stop
        stack.stop()
        primary.stop()
        backup.stop()
        sched_rx.stop()
    figures = analyse(run, tenant, published, waited, records, receipts)
    figures.total_seconds = round(time.monotonic() - started, 1)
    figures.receiver_crashes = crashes
    figures.aws_faults = fault_stats
    if sched_figures is not None:
        figures.lost += sched_figures.lost_firings
        figures.stuck += sched_figures.stuck_callbacks + sched_figures.stuck_firings
        figures.evidence += sched_figures.evidence
        sched_figures.evidence = []
        figures.scheduled = sched_figures.__dict__
    if killer is not None:
        figures.kills = [k.__dict__ for k in killer.kills]
    (log_dir / "evidence.json").write_text(json.dumps(figures.evidence, indent=1))
    return figures


def show(figures: Figures, title: str) -> None:
    rows: list[tuple[str, Any]] = [
        ("events published", figures.events_published),
        ("events accepted (202)", figures.events_accepted),
        ("events never accepted (count as lost)", figures.events_refused),
        ("publish client retries", figures.publish_client_retries),
        ("events accepted on a retry after a 5xx", figures.accepted_after_5xx),
        ("  of which lost their delivery", figures.lost_after_5xx),
        ("202 answers with a wrong deliveries count", figures.wrong_delivery_count_in_202),
        ("publish time (s)", figures.publish_seconds),
        ("deliveries expected", figures.deliveries_expected),
        ("delivered", figures.delivered),
        ("failed (dead-lettered)", figures.failed),
        ("  by reason", figures.failure_reasons),
        ("skipped", figures.skipped),
        ("LOST (must be 0)", figures.lost),
        ("  of which missing delivery records", figures.missing),
        ("STUCK: not final at the deadline (must be 0)", figures.stuck),
        ("  deliveries still pending", figures.pending_at_end),
        ("  deliveries still retrying", figures.retrying_at_end),
        ("attempts recorded", figures.attempts_recorded),
        ("  by outcome", figures.attempt_outcomes),
        ("requests seen by receivers", figures.receiver_requests),
        ("  by behaviour", figures.receiver_behaviours),
        ("deliveries to registrations with backup_url", figures.deliveries_with_backup),
        ("backup-URL switches after exactly 3 primary failures", figures.backup_switches),
        ("backup/attempt rule violations (must be 0)", figures.backup_rule_violations),
        ("duplicate sends seen by receivers", figures.duplicate_sends),
        ("  deliveries with a duplicate", figures.duplicate_deliveries),
        ("  by cause", figures.duplicates_by_cause),
        ("delivered with no 2xx at a receiver (must be 0)", figures.delivered_without_receipt),
        ("bad signatures", figures.bad_signatures),
        ("receiver crashes (a soak bug if not 0)", figures.receiver_crashes),
        ("unknown webhook-ids", figures.unknown_webhook_ids),
        ("drain time after publishing (s)", figures.drain_seconds),
        ("run time (s)", figures.total_seconds),
    ]
    if figures.kills:
        rows.append(("worker kills", len(figures.kills)))
    if figures.aws_faults:
        rows.append(("AWS faults injected", figures.aws_faults.get("faults")))
        rows.append(("  of AWS calls", sum(figures.aws_faults.get("calls", {}).values())))
        rows.append(("  by kind", figures.aws_faults.get("by_kind")))
    sched = figures.scheduled
    if sched:
        rows += [
            (
                "scheduled callbacks planned / created",
                (sched["callbacks_planned"], sched["callbacks_created"]),
            ),
            ("  creates retried after a 5xx", sched["create_5xx_retried"]),
            (
                "  created but answer lost (found by list)",
                sched["create_answer_lost_found_by_list"],
            ),
            ("  never created (answers)", sched["create_refused"]),
            (
                "scheduled firings expected / started / sent",
                (sched["firings_expected"], sched["firings_started"], sched["firings_sent"]),
            ),
            ("  firing deliveries by status", sched["firing_statuses"]),
            ("  callbacks by state", sched["states"]),
            ("  lost firings (in LOST)", sched["lost_firings"]),
            (
                "  stuck callbacks / firings (in STUCK)",
                (sched["stuck_callbacks"], sched["stuck_firings"]),
            ),
            ("  early firings (before due - 1 s)", sched["early_firings"]),
            ("  requests at the scheduled receiver", sched["requests"]),
            ("  duplicate sends", sched["duplicate_sends"]),
            ("    by cause", sched["duplicates_by_cause"]),
            ("  bad signatures", sched["bad_signatures"]),
            ("  requests unverifiable (secret never received)", sched["unverifiable_requests"]),
        ]
    print(f"\n== {title}")
    for name, value in rows:
        print(f"  {name:<54} {value}")
    if figures.evidence:
        print(f"  evidence ({len(figures.evidence)}; first 25):")
        for item in figures.evidence[:25]:
            print("    ", json.dumps(item, sort_keys=True))
    print("  json:", json.dumps(figures.__dict__, sort_keys=True), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--fail-rate", type=float, default=0.30)
    parser.add_argument("--schedule", default="1,1,2,2", help="RINGBACK_RETRY_SCHEDULE")
    parser.add_argument("--http-timeout", type=float, default=1.0)
    parser.add_argument(
        "--visibility", type=int, default=40, help="SQS visibility timeout of the work queue (s)"
    )
    parser.add_argument("--deadline", type=float, default=300.0, help="drain bound per run (s)")
    parser.add_argument("--publishers", type=int, default=16)
    parser.add_argument(
        "--kills", default="0.25,0.6", help="kill the worker at these fractions of the receipts"
    )
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument(
        "--reconcile-grace",
        type=float,
        default=60.0,
        help="RINGBACK_RECONCILE_GRACE_SECONDS of the stack (above the 31 s lease and 40 s "
        "visibility)",
    )
    parser.add_argument(
        "--aws-faults", type=float, default=0.10, help="run 3: share of AWS calls that fail"
    )
    parser.add_argument("--aws-faults-seed", type=int, default=12)
    parser.add_argument(
        "--scheduled", type=int, default=200, help="run 3: scheduled callbacks created"
    )
    parser.add_argument(
        "--runs",
        default="all",
        help="all, both (= faults,kill) or a comma list of faults, kill, aws",
    )
    args = parser.parse_args(argv)
    wanted = {"all": RUNS, "both": ("faults", "kill")}.get(args.runs) or tuple(
        r.strip() for r in args.runs.split(",") if r.strip()
    )
    unknown = [r for r in wanted if r not in RUNS]
    if unknown:
        parser.error(f"unknown run(s) {unknown}; choose from {', '.join(RUNS)}")
    options = Options(
        events=args.events,
        fail_rate=args.fail_rate,
        schedule=args.schedule,
        http_timeout=args.http_timeout,
        visibility=args.visibility,
        deadline=args.deadline,
        publishers=args.publishers,
        kills=tuple(float(f) for f in args.kills.split(",") if f.strip()),
        seed=args.seed,
        reconcile_grace=args.reconcile_grace,
        aws_faults=args.aws_faults,
        aws_faults_seed=args.aws_faults_seed,
        scheduled=args.scheduled,
    )
    log_dir = Path(tempfile.mkdtemp(prefix="ringback-soak-"))
    print(
        f"soak: {options.events} events, receivers failing {options.fail_rate:.0%}, retry "
        f"schedule {options.schedule} s, HTTP timeout {options.http_timeout} s, visibility "
        f"{options.visibility} s, reconcile grace {options.reconcile_grace:g} s; "
        f"run 3 adds {options.aws_faults:.0%} AWS faults (seed "
        f"{options.aws_faults_seed}) and {options.scheduled} scheduled callbacks; stack logs "
        f"in {log_dir}",
        flush=True,
    )
    results: list[Figures] = []
    for number, run in enumerate(RUNS, start=1):
        if run not in wanted:
            continue
        print(f"\n-- run {number}: {run}", flush=True)
        run_dir = log_dir / f"run{number}"
        run_dir.mkdir()
        figures = soak_run(run, options=options, log_dir=run_dir)
        show(figures, TITLES[run])
        results.append(figures)
    print("\n== verdict")
    for figures in results:
        verdict = "OK" if figures.healthy else "BROKEN"
        print(
            f"  {figures.run:<7} lost {figures.lost}, stuck {figures.stuck}, violations "
            f"{figures.backup_rule_violations}, duplicates {figures.duplicate_sends} -> {verdict}"
        )
    return 0 if all(f.healthy for f in results) else 1


if __name__ == "__main__":
    sys.exit(main())
