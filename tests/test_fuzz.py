"""Fuzzing every operation of ``GET /openapi.json`` with schemathesis, in process.

The app is served through ``devstack.wsgi.ChaliceWsgi`` (Chalice's own local API Gateway) and the
schema is loaded from the app itself, so what is fuzzed is what ``make run`` serves. For each
operation Hypothesis draws positive cases (valid per the document) and negative ones (invalid on
purpose) from a fixed seed; each case is sent with one of several keys (owner, viewer, another
tenant's, none, malformed) and, often, with path parameters of real seeded resources, so success
paths are reached too. Every response must pass: no 5xx, status code documented, content type
documented, body valid against the documented schema (XML bodies parsed with defusedxml),
documented headers present.

No outbound network: names resolve to a fixed public address without DNS and the verify requests
notification callbacks make go to a stub. Figures (cases, seconds) are printed with ``-s``.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from chalicelib.domain.timeutil import fmt, utcnow

SEED = int(os.environ.get("FUZZ_SEED", "20261123"))
_PER_MODE = int(os.environ.get("FUZZ_EXAMPLES", "10"))
EXAMPLES = {GenerationMode.POSITIVE: _PER_MODE, GenerationMode.NEGATIVE: _PER_MODE}
COVERAGE_CASES = int(os.environ.get("FUZZ_COVERAGE_CASES", "30"))
MIN_CASES = 1000
BUDGET_SECONDS = float(os.environ.get("FUZZ_BUDGET_SECONDS", "120"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# Who calls: mostly a key that may act, sometimes one that may not, or none at all.
CALLERS = ("owner",) * 5 + ("query", "viewer", "stranger", "none", "malformed")
ADMIN_CALLERS = ("admin",) * 5 + ("owner", "viewer", "stranger", "none", "malformed")


@schemathesis.deserializer("application/xml")
def _xml(ctx: Any, response: Any) -> Any:
    from chalicelib.api.openapi_schema import parse_xml_document

    return parse_xml_document(response.content)


class _OutOfTime(Exception):
    pass


class _StubResponse:
    """What the bounded sender answers (``safe_http.HttpReply``), without a network."""

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code
        self.headers: dict[str, str] = {}
        self.body_prefix = b""
        self.body_bytes = 0
        self.text = ""

    def close(self) -> None:
        return None


class _NoNetwork:
    """Stands in for the pinned HTTP client: nothing leaves the process. Receivers answer 204,
    or 410 Gone for a path containing ``/gone`` (so disabled targets and failed deliveries
    exist to be shown, enabled and replayed)."""

    def send(self, method: str, url: str, **kwargs: Any) -> _StubResponse:
        return _StubResponse(410 if "/gone" in url else 204)


def _public_answer(host: str, port: int) -> list[str]:
    return ["93.184.215.14"]


@dataclass
class Run:
    seed: int = SEED
    coverage_cases: int = COVERAGE_CASES
    call_kwargs: dict[str, Any] = field(default_factory=dict)
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    per_operation: Counter[str] = field(default_factory=Counter)
    seconds: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.delivery import senders
    from chalicelib.domain import urlsafety

    monkeypatch.setattr(urlsafety, "default_resolver", _public_answer)
    monkeypatch.setattr(senders, "http_client", lambda: _NoNetwork())


@pytest.fixture
def wsgi(aws: Any, offline: None) -> Any:
    from app import app
    from devstack.wsgi import ChaliceWsgi

    return ChaliceWsgi(app)


@dataclass
class Answer:
    """One seeding response, whichever way it was sent (in process or over HTTP)."""

    status_code: int
    text: str
    body: Any


def _call(target: Any, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> Answer:
    """``target`` is the WSGI app (in process) or the base URL of a running stack."""
    if isinstance(target, str):
        import requests

        response = requests.request(
            method,
            target + path,
            headers=headers,
            json=kwargs.get("json"),
            params=kwargs.get("query_string"),
            timeout=30,
        )
        is_json = response.headers.get("Content-Type", "").startswith("application/json")
        return Answer(response.status_code, response.text, response.json() if is_json else {})
    from werkzeug.test import Client

    answer = Client(target).open(path, method=method, headers=headers, **kwargs)
    body = answer.get_json() if answer.is_json else {}
    return Answer(answer.status_code, answer.get_data(as_text=True), body)


def _seed_resources(
    wsgi: Any,
    owner: Any,
    settle: Callable[[], None],
    receiver: str = "http://127.0.0.1:9",
) -> dict[str, list[str]]:
    """Resources of every kind, some after delivery (delivered, gone and disabled, fired), so
    generated paths can name something that exists in each state. ``receiver`` answers 204, or
    410 Gone under ``/gone``; ``settle`` returns once the deliveries and the first scheduled
    callback have run."""
    tenant = owner.tenant_id
    headers = owner.headers

    def ok(response: Answer) -> dict[str, Any]:
        assert response.status_code < 300, (response.status_code, response.text)
        return response.body if isinstance(response.body, dict) else {}

    base = f"/companies/{tenant}/campaigns/config/callbacks"
    registrations = [
        ok(
            _call(
                wsgi,
                "POST",
                base,
                headers,
                json={
                    "event_type": f"fuzz.{path}",
                    "destination_url": f"{receiver}/{path}",
                },
            )
        )["callback_id"]
        for path in ("hook", "gone")
    ]
    events = [
        ok(
            _call(
                wsgi, "POST", "/events", headers, json={"event_type": f"fuzz.{path}", "payload": {}}
            )
        )["event_id"]
        for path in ("hook", "gone")
    ]
    notifications = "/rest/api/v1.3/notifications"
    ok(
        _call(
            wsgi,
            "POST",
            f"{notifications}/callbacks",
            headers,
            json={
                "name": "fuzz-cb",
                "url": f"{receiver}/batch",
                "batchSize": 10,
                "authentication": {"type": "B", "data": {"userName": "u", "password": "p"}},
            },
        )
    )
    ok(
        _call(
            wsgi,
            "POST",
            f"{notifications}/subscriptions",
            headers,
            json={"name": "fuzz-sub", "callbackName": "fuzz-cb", "eventNames": ["EMAIL_BOUNCED"]},
        )
    )
    notifier = ok(
        _call(
            wsgi,
            "POST",
            f"/customer/{tenant}/callnotify",
            headers,
            json={"url": f"{receiver}/call", "method": "POSTJSON", "selection": "ALL"},
        )
    )
    soon = fmt(utcnow() + timedelta(seconds=2))
    scheduled = [
        ok(
            _call(
                wsgi,
                "GET",
                "/api/1.0/create",
                headers,
                query_string={"callback_url": f"{receiver}/s", "callback_time": when},
            )
        )["callback_id"]
        for when in (soon, "2031-01-01T00:00:00Z")
    ]
    settle()  # deliveries delivered / gone, the first scheduled callback fired
    deadline = time.monotonic() + 60
    while True:  # in process, settled at once; a running stack records outcomes as they come
        delivery_ids = [
            d["delivery_id"]
            for event_id in events
            for d in ok(_call(wsgi, "GET", f"/events/{event_id}", headers))["deliveries"]
        ]
        statuses = {
            ok(_call(wsgi, "GET", f"/deliveries/{d}", headers))["status"] for d in delivery_ids
        }
        fired = ok(_call(wsgi, "GET", f"/api/1.0/retrieve/{scheduled[0]}", headers))["callback"]
        gone = ok(_call(wsgi, "GET", f"{base}/{registrations[1]}", headers))
        settled = (
            statuses == {"delivered", "failed"}
            and fired["fired_count"] == 1
            and fired["last_delivery_id"]
            and gone["disabled_reason"]
        )
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert statuses == {"delivered", "failed"}
    assert fired["fired_count"] == 1 and fired["last_delivery_id"]
    assert gone["disabled_reason"]
    return {
        "tenant_id": [tenant],
        "company_id": [tenant],
        "customer_id": [tenant],
        "callback_id": [*registrations, *scheduled],
        "event_id": events,
        "delivery_id": delivery_ids,
        "callback_name": ["fuzz-cb"],
        "name": ["fuzz-sub"],
        "notify_id": [notifier["_id"]],
    }


def _authorize(case: Any, caller: str, keys: dict[str, str]) -> None:
    """Replace whatever credentials the generator made up with the chosen caller's."""
    case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    case.query = {k: v for k, v in (case.query or {}).items() if k != "api_key"}
    if caller == "query":
        case.query["api_key"] = keys["owner"]
    elif caller != "none":
        case.headers["Authorization"] = f"Bearer {keys[caller]}"


def _send(case: Any, caller: str, run: Run, keys: dict[str, str], label: str) -> None:
    """Send one case as ``caller`` and check the response against the document."""
    _authorize(case, caller, keys)
    started = time.monotonic()
    response = case.call(**run.call_kwargs)
    run.seconds[case.operation.label] += time.monotonic() - started
    run.cases += 1
    run.statuses[response.status_code] += 1
    run.per_operation[case.operation.label] += 1
    try:
        case.validate_response(response, checks=CHECKS)
    except (AssertionError, BaseExceptionGroup) as exc:
        body = response.text[:300] if response.text else ""
        run.failures.append(
            f"{case.operation.label} [{label}] -> {response.status_code} {body}\n"
            f"  {case.as_curl_command()}\n  {str(exc)[:1500]}"
        )


def _callers(operation: Any) -> tuple[str, ...]:
    return ADMIN_CALLERS if operation.path.startswith("/admin") else CALLERS


def _fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    examples: int,
    run: Run,
    known: dict[str, list[str]],
    keys: dict[str, str],
    deadline: float,
) -> None:
    """Hypothesis-generated cases (fixed seed): path parameters often name real resources."""

    @seed(run.seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def one(case: Any, data: Any) -> None:
        if time.monotonic() > deadline:
            raise _OutOfTime
        for name in list(case.path_parameters or {}):
            if known.get(name) and data.draw(st.integers(0, 2), label=f"known {name}"):
                case.path_parameters[name] = data.draw(st.sampled_from(known[name]))
        caller = data.draw(st.sampled_from(_callers(operation)), label="caller")
        _send(case, caller, run, keys, mode.value)

    try:
        one()
    except Unsatisfiable:
        # Nothing to make invalid (no parameters, no body): only positive cases exist.
        assert mode is GenerationMode.NEGATIVE, operation.label


def _cover_operation(
    schema: Any,
    operation: Any,
    run: Run,
    known: dict[str, list[str]],
    keys: dict[str, str],
    deadline: float,
) -> None:
    """schemathesis' coverage cases (deterministic boundary and invalid values), the first
    ``run.coverage_cases``; callers and known resources are taken in turn."""
    cases = schema.iter_coverage_cases(
        operation,
        generation_modes=list(EXAMPLES),
        generation_config=schema.config.generation_for(operation=operation),
    )
    callers = _callers(operation)
    for index, case in enumerate(itertools.islice(cases, run.coverage_cases)):
        if time.monotonic() > deadline:
            raise _OutOfTime
        for name in list(case.path_parameters or {}):
            if known.get(name) and index % 3:
                case.path_parameters[name] = known[name][index % len(known[name])]
        _send(case, callers[index % len(callers)], run, keys, "coverage")


def _keys(make_tenant: Callable[..., Any], owner: Any, admin_key: str) -> dict[str, str]:
    return {
        "owner": owner.key,
        "viewer": make_tenant("VIEWER", tenant_id=owner.tenant_id).key,
        "stranger": make_tenant("OWNER").key,
        "admin": admin_key,
        "malformed": "rbk_" + "\u00e9" * 3 + "not-a-key",
    }


def _fuzz(
    schema: Any,
    known: dict[str, list[str]],
    keys: dict[str, str],
    run: Run,
    budget: float,
    min_cases: int,
    where: str,
) -> None:
    """Every operation's coverage cases first, then the Hypothesis rounds: if the time budget
    runs out, every operation has still been exercised. Fails on any failing case."""
    operations = [result.ok() for result in schema.get_all_operations()]
    started = time.monotonic()
    deadline = started + budget
    stopped_at: str | None = None
    try:
        for operation in operations:
            stopped_at = f"coverage of {operation.label}"
            _cover_operation(schema, operation, run, known, keys, deadline)
        for operation in operations:
            for mode, examples in EXAMPLES.items():
                stopped_at = f"{mode.value} cases of {operation.label}"
                _fuzz_operation(operation, mode, examples, run, known, keys, deadline)
        stopped_at = None
    except _OutOfTime:
        pass
    elapsed = time.monotonic() - started
    print(
        f"\nfuzz ({where}): {len(operations)} operations, {run.cases} cases in {elapsed:.1f}s "
        f"(seed {run.seed}); statuses {dict(sorted(run.statuses.items()))}; slowest "
        + ", ".join(f"{label} {secs:.1f}s" for label, secs in run.seconds.most_common(3))
        + (f"; time budget ({budget:.0f}s) reached at {stopped_at}" if stopped_at else "")
    )
    assert not run.failures, f"{len(run.failures)} failing cases:\n\n" + "\n\n".join(
        run.failures[:25]
    )
    assert run.cases >= min_cases, f"only {run.cases} cases within {budget}s"
    missed = [op.label for op in operations if run.per_operation[op.label] == 0]
    assert not missed, f"operations never exercised: {missed}"


def test_fuzz_every_operation_of_the_openapi_document(wsgi, make_tenant, admin_headers, worker):
    owner = make_tenant("OWNER")
    keys = _keys(make_tenant, owner, admin_headers["Authorization"].removeprefix("Bearer "))

    def settle() -> None:
        time.sleep(2.2)
        worker.run_until_idle()

    known = _seed_resources(wsgi, owner, settle)
    schema = schemathesis.openapi.from_wsgi("/openapi.json", wsgi)
    _fuzz(schema, known, keys, Run(), BUDGET_SECONDS, MIN_CASES, "in process")


# --------------------------------------------------------------------------- over make run

STACK_SEED = int(os.environ.get("FUZZ_STACK_SEED", "4242"))
STACK_BUDGET_SECONDS = float(os.environ.get("FUZZ_STACK_BUDGET_SECONDS", "60"))
STACK_COVERAGE_CASES = int(os.environ.get("FUZZ_STACK_COVERAGE_CASES", "12"))
STACK_MIN_CASES = 200


@pytest.fixture(scope="module")
def fuzz_stack() -> Iterator[Any]:
    """A stack of its own, started from a shell with a short HTTP timeout: the fuzz registers
    targets at made-up hosts, and deliveries to them must not hold the stack's shutdown."""
    from tests.stack_helpers import own_stack

    with own_stack({"RINGBACK_HTTP_TIMEOUT": "2"}, admin_key="rbk_fuzz-admin") as stack:
        yield stack


@pytest.mark.stack
def test_fuzz_over_the_running_local_stack(fuzz_stack, httpserver):
    """The same document and checks over real HTTP against ``make run`` (its HTTP server, not
    only the app behind it: that is where a bare 501 for ``QUERY`` came from), with a second
    seed and a time budget. Receivers are a local HTTP server (204; 410 Gone under ``/gone``)."""
    import requests

    from tests.conftest import TenantKey

    for path in ("/hook", "/batch", "/call", "/s"):
        httpserver.expect_request(path).respond_with_data("", status=204)
    httpserver.expect_request("/gone").respond_with_data("", status=410)
    receiver = httpserver.url_for("").rstrip("/")
    base_url = fuzz_stack.base_url

    def tenant_key(role: str = "OWNER", *, tenant_id: str | None = None) -> TenantKey:
        if tenant_id is None:
            tenant_id = requests.post(
                f"{base_url}/admin/tenants",
                headers=fuzz_stack.admin(),
                json={"name": "fuzz"},
                timeout=10,
            ).json()["tenant_id"]
        key = requests.post(
            f"{base_url}/admin/tenants/{tenant_id}/keys",
            headers=fuzz_stack.admin(),
            json={"role": role},
            timeout=10,
        ).json()["key"]
        return TenantKey(tenant_id, key, role)

    owner = tenant_key("OWNER")
    keys = _keys(tenant_key, owner, fuzz_stack.admin_key)
    known = _seed_resources(base_url, owner, lambda: None, receiver)
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=30)
    run = Run(seed=STACK_SEED, coverage_cases=STACK_COVERAGE_CASES, call_kwargs={"timeout": 30})
    _fuzz(schema, known, keys, run, STACK_BUDGET_SECONDS, STACK_MIN_CASES, "over make run")
