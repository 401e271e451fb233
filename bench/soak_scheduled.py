"""The soak's scheduled callbacks (run 3): created through ``/api/1.0/create/``, all due inside the
run, fired into a loopback receiver that fails like the others, then checked firing by firing.

The mix of 200 by default: half one-time, a quarter ``interval`` (every 15 s, 3 firings), a
quarter ``immediate`` (3 firings, each as soon as the previous one is final). Each callback has a
URL of its own (``/sched-<n>``), so the receiver can tell them apart and the soak can find a
callback whose create answered 5xx and then ``callback_already_exists`` on the retry (the first
create committed; the client never saw its id) by listing the account's callbacks.

Firings expected: 1 per one-time callback, 3 per series. A firing is *sent* when its delivery's
``webhook-id`` reached the receiver; *started* is the callback's ``fired_count``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from bench.soak_receiver import FaultyReceiver, Receipt
from bench.soak_stack import Stack

FINAL_STATES = ("completed", "failed", "cancelled")
FINAL = ("delivered", "failed", "skipped")
INTERVAL_SECONDS = 15
SERIES_FIRINGS = 3

_local = threading.local()


def _session() -> requests.Session:
    if not hasattr(_local, "session"):
        _local.session = requests.Session()
    session: requests.Session = _local.session
    return session


@dataclass
class Planned:
    index: int
    kind: str  # once | interval | immediate
    url: str
    path: str
    callback_time: str
    answers: list[int] = field(default_factory=list)  # HTTP statuses of the create calls
    callback_id: str | None = None
    secret: str | None = None

    @property
    def expected(self) -> int:
        return 1 if self.kind == "once" else SERIES_FIRINGS


def plan(count: int, receiver: FaultyReceiver, *, lead: float, spread: float) -> list[Planned]:
    """``count`` callbacks due from ``lead`` s to ``lead + spread`` s from now."""
    now = datetime.now(UTC).replace(microsecond=0)
    planned = []
    for n in range(count):
        kind = "once" if n % 4 in (0, 2) else ("interval" if n % 4 == 1 else "immediate")
        at = now + timedelta(seconds=lead + spread * n / max(count, 1))
        path = f"sched-{n:04d}"
        planned.append(
            Planned(n, kind, receiver.url(path), path, at.strftime("%Y-%m-%dT%H:%M:%SZ"))
        )
    return planned


def _params(p: Planned) -> dict[str, str]:
    params = {"callback_url": p.url, "callback_time": p.callback_time}
    if p.kind != "once":
        params.update(
            callback_repeat="1",
            callback_repeat_type=p.kind,
            callback_repeat_interval_unit="seconds",
            callback_repeat_interval=str(INTERVAL_SECONDS if p.kind == "interval" else 1),
            callback_repeat_count=str(SERIES_FIRINGS),
        )
    return params


def _create_one(
    stack: Stack, headers: dict[str, str], p: Planned, receiver: FaultyReceiver
) -> None:
    """Create, retrying a 5xx or a dropped connection with the same parameters (the duplicate
    guard makes a committed first try answer ``callback_already_exists``)."""
    for attempt in range(8):
        try:
            answer = _session().get(
                f"{stack.base_url}/api/1.0/create/", params=_params(p), headers=headers, timeout=30
            )
        except requests.RequestException:
            p.answers.append(0)
            time.sleep(min(0.5 * 2**attempt, 4))
            continue
        p.answers.append(answer.status_code)
        if answer.status_code == 200:
            body = answer.json()
            p.callback_id, p.secret = body["callback_id"], body.get("signing_secret")
            if p.secret:
                receiver.trust(p.path, p.secret)  # now: its first firing may come soon
            return
        if answer.status_code == 429:  # over the tenant's quota: wait and try again
            time.sleep(float(answer.headers.get("Retry-After", "1")))
            continue
        if answer.status_code < 500:
            return
        time.sleep(min(0.5 * 2**attempt, 4))


def create_all(
    stack: Stack, headers: dict[str, str], planned: list[Planned], receiver: FaultyReceiver
) -> float:
    started = time.monotonic()
    auth = {"Authorization": headers["Authorization"]}
    with ThreadPoolExecutor(8, thread_name_prefix="sched-create") as pool:
        list(pool.map(lambda p: _create_one(stack, auth, p, receiver), planned))
    return time.monotonic() - started


def list_callbacks(stack: Stack, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Every callback of the account by URL (finds the ones whose create answer was lost)."""
    auth = {"Authorization": headers["Authorization"]}
    found: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    while True:
        params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
        for _ in range(8):
            try:
                answer = _session().get(
                    f"{stack.base_url}/api/1.0/list/", params=params, headers=auth, timeout=30
                )
            except requests.RequestException:
                continue
            if answer.status_code == 200:
                break
            time.sleep(0.5)
        else:
            return found
        body = answer.json()
        for cb in body["callbacks"]:
            found[cb["callback_url"]] = cb
        cursor = body.get("next_cursor")
        if not cursor:
            return found


def _retrieve(stack: Stack, auth: dict[str, str], callback_id: str) -> dict[str, Any] | None:
    try:
        answer = _session().get(
            f"{stack.base_url}/api/1.0/retrieve/{callback_id}/", headers=auth, timeout=30
        )
    except requests.RequestException:
        return None
    if answer.status_code != 200:
        return None
    found: dict[str, Any] = answer.json()["callback"]
    return found


def wait_final(
    stack: Stack, headers: dict[str, str], ids: list[str], deadline: float
) -> tuple[dict[str, dict[str, Any]], float]:
    """Poll every callback until all are final (completed/failed/cancelled) or time is up."""
    started = time.monotonic()
    auth = {"Authorization": headers["Authorization"]}
    seen: dict[str, dict[str, Any]] = {}
    open_ids = set(ids)
    with ThreadPoolExecutor(8, thread_name_prefix="sched-poll") as pool:
        while open_ids:
            batch = sorted(open_ids)
            for cb_id, state in zip(
                batch, pool.map(lambda c: _retrieve(stack, auth, c), batch), strict=True
            ):
                if state is None:
                    continue
                seen[cb_id] = state
                if state["state"] in FINAL_STATES:
                    open_ids.discard(cb_id)
            if not open_ids or time.monotonic() - started > deadline:
                break
            time.sleep(2.0)
    return seen, time.monotonic() - started


@dataclass
class ScheduledFigures:
    callbacks_planned: int = 0
    callbacks_created: int = 0
    create_5xx_retried: int = 0
    create_answer_lost_found_by_list: int = 0
    create_refused: dict[str, int] = field(default_factory=dict)
    create_seconds: float = 0.0
    firings_expected: int = 0
    firings_started: int = 0  # sum of fired_count
    firings_sent: int = 0  # distinct webhook-ids at the receiver
    firing_statuses: dict[str, int] = field(default_factory=dict)
    states: dict[str, int] = field(default_factory=dict)
    stuck_callbacks: int = 0  # not completed/failed/cancelled at the deadline
    stuck_firings: int = 0  # a firing's delivery not final at the deadline
    lost_firings: int = 0  # final series that started fewer firings than planned, or none made
    lost_callbacks: int = 0  # never created
    early_firings: int = 0  # a first request before the firing's due time
    requests: int = 0
    duplicate_sends: int = 0
    duplicates_by_cause: dict[str, int] = field(default_factory=dict)
    bad_signatures: int = 0
    unverifiable_requests: int = 0  # the callback's signing_secret never reached the client
    wait_seconds: float = 0.0
    evidence: list[dict[str, Any]] = field(default_factory=list)


def _due(cb: dict[str, Any], fire_count: int) -> float | None:
    """Due time of firing ``fire_count`` (1-based) of an interval or one-time callback."""
    first = datetime.strptime(cb["callback_time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    repeat = cb.get("repeat")
    if repeat and repeat.get("type") == "immediate" and fire_count > 1:
        return None
    step = INTERVAL_SECONDS if repeat and repeat.get("type") == "interval" else 0
    return first.timestamp() + step * (fire_count - 1)


def analyse(
    planned: list[Planned],
    listed: dict[str, dict[str, Any]],
    states: dict[str, dict[str, Any]],
    receipts: list[Receipt],
    records: dict[str, dict[str, Any]],
) -> ScheduledFigures:
    figures = ScheduledFigures(callbacks_planned=len(planned))
    refused: Counter[str] = Counter()
    by_callback: dict[str, list[Receipt]] = {}
    for receipt in receipts:
        by_callback.setdefault(receipt.callback_id, []).append(receipt)
    figures.requests = len(receipts)
    with_secret = {p.path for p in planned if p.secret}
    figures.bad_signatures = sum(
        1 for r in receipts if r.path in with_secret and not r.signature_ok
    )
    figures.unverifiable_requests = sum(1 for r in receipts if r.path not in with_secret)
    for r in receipts:
        if r.path in with_secret and not r.signature_ok:
            figures.evidence.append(
                {"what": "bad signature", "path": r.path, "callback_id": r.callback_id}
            )
    causes: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    state_counts: Counter[str] = Counter()
    for p in planned:
        figures.firings_expected += p.expected
        if any(code >= 500 or code == 0 for code in p.answers):
            figures.create_5xx_retried += 1
        cb_id = p.callback_id or (listed.get(p.url) or {}).get("callback_id")
        if p.callback_id is None and cb_id is not None:
            figures.create_answer_lost_found_by_list += 1
            figures.evidence.append(
                {
                    "what": "callback created but the client was never told (answers to its "
                    "creates; 409 = callback_already_exists for its own write)",
                    "callback_id": cb_id,
                    "answers": p.answers,
                }
            )
        if cb_id is None:
            figures.lost_callbacks += 1
            figures.lost_firings += p.expected
            refused[str(p.answers[-1] if p.answers else None)] += 1
            figures.evidence.append({"what": "callback never created", "answers": p.answers})
            continue
        figures.callbacks_created += 1
        state = states.get(cb_id)
        mine = by_callback.get(cb_id, [])
        firings = {r.webhook_id for r in mine}
        figures.firings_sent += len(firings)
        if state is None:
            figures.stuck_callbacks += 1
            figures.evidence.append({"what": "callback unreadable", "callback_id": cb_id})
            continue
        state_counts[state["state"]] += 1
        figures.firings_started += int(state["fired_count"])
        final = state["state"] in FINAL_STATES
        if not final:
            figures.stuck_callbacks += 1
            figures.evidence.append(
                {"what": "callback not final at the deadline", "kind": p.kind, **_brief(state)}
            )
        elif int(state["fired_count"]) < p.expected or len(firings) < p.expected:
            missing = p.expected - min(int(state["fired_count"]), len(firings))
            figures.lost_firings += missing
            figures.evidence.append(
                {
                    "what": "series final with firings missing",
                    "kind": p.kind,
                    "firings_sent": len(firings),
                    **_brief(state),
                }
            )
        for webhook_id in sorted(firings):
            record = records.get(webhook_id)
            status = record["status"] if record else "unreadable"
            statuses[status] += 1
            if status not in FINAL:
                figures.stuck_firings += 1
                figures.evidence.append(
                    {
                        "what": "firing delivery not final at the deadline",
                        "callback_id": cb_id,
                        "delivery_id": webhook_id,
                        "status": status,
                        "attempts": len(record["attempts"]) if record else None,
                    }
                )
            sends = sorted((r for r in mine if r.webhook_id == webhook_id), key=lambda r: r.at)
            first = sends[0]
            due = _due(state, first.fire_count)
            if due is not None and first.at < due - 1.0:
                figures.early_firings += 1
            previous: Receipt | None = None
            for receipt in sends:
                if not receipt.processed:
                    continue
                if previous is not None:
                    figures.duplicate_sends += 1
                    if previous.behaviour == "timeout":
                        causes["retry after a failed attempt (answer not heard)"] += 1
                    else:
                        causes["genuine duplicate: sent again after a 2xx answer"] += 1
                        figures.evidence.append(
                            {
                                "what": "firing sent again after the receiver answered 2xx",
                                "callback_id": cb_id,
                                "delivery_id": webhook_id,
                                "status": status,
                                "attempts_recorded": len(record["attempts"]) if record else None,
                                "sends": len(sends),
                            }
                        )
                previous = receipt
    figures.create_refused = dict(refused)
    figures.firing_statuses = dict(statuses)
    figures.states = dict(state_counts)
    figures.duplicates_by_cause = dict(causes)
    return figures


def _brief(state: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "callback_id",
        "state",
        "fired_count",
        "timestamp",
        "last_status",
        "last_delivery_id",
        "failure_reason",
    )
    return {k: state.get(k) for k in keys}
