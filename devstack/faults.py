"""AWS failing the way it fails under stress, for the embedded AWS and as a proxy to any endpoint.

On AWS, throttling, 5xx answers and a response lost after the write committed are everyday
events; moto never produces them. ``FaultInjector`` wraps a WSGI app (moto's, or ``Forwarder``,
which relays to another endpoint) and, for a seeded fraction ``rate`` of calls, answers what the
service answers under stress, in its own wire format, so that boto3/botocore parse it exactly as
they parse the real thing (and retry it as they would: retries are never configured away):

- DynamoDB (JSON 1.0): ``ProvisionedThroughputExceededException`` (400), ``ThrottlingException``
  (400), ``InternalServerError`` (500);
- SQS (JSON protocol, query-compatible): ``ServiceUnavailable`` (503), ``InternalError`` (500);
- KMS (JSON 1.1): ``ThrottlingException`` (400);
- any service, for a share of *writes*: **applied, then failed**: the call is passed through and
  commits, then the client gets a 500 instead of the answer. The nasty case: a retried
  conditional write then fails its condition, a retried SendMessage queues a second message.

Calls made with the query protocol (``Action=`` in the query or form body) get the query
protocol's XML error. The service and operation come from ``X-Amz-Target`` (``DynamoDB_20120810.
PutItem``, ``AmazonSQS.SendMessage``, ``TrentService.Decrypt``) or ``Action`` plus the SigV4
credential scope. ``/moto-api/...`` and resource set-up (``Create*``, ``Describe*``, ``List*``,
``GetQueueUrl``...) are never faulted, and the injector starts disabled: the local stack enables
it once its tables, queues and key exist, so start-up never fails.

The draws come from one ``random.Random(seed)`` in call order: the same sequence of calls gets the
same faults. (A multi-threaded stack does not make its calls in a fixed order, so a soak repeats
its fault *mix*, not which call got which fault.)

Counts by service and kind: ``GET /ringback-faults/stats`` on the wrapped app, and printed by the
local stack when it stops; ``POST /ringback-faults/pause`` and ``/resume`` switch the faults.
Standalone proxy::

    python -m devstack.faults --upstream http://127.0.0.1:4566 --port 4567 --rate 0.1 --seed 7

then ``python -m devstack.run --worker-only --aws-url http://127.0.0.1:4567`` runs a worker whose
every AWS call goes through it. The proxy forwards the client's headers unchanged, so it suits
endpoints that do not check the SigV4 host (moto, the embedded AWS), not AWS itself.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import signal
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import requests
from werkzeug.serving import make_server

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

STATS_PATH = "/ringback-faults/stats"
SWITCH_PATHS = {"/ringback-faults/pause": False, "/ringback-faults/resume": True}
"""``POST`` turns the faults off and on (the soak sets up its tenant and registrations with the
faults paused: it measures the delivery path, not its own set-up)."""

TARGET_PREFIXES = {
    "DynamoDB_20120810": "dynamodb",
    "AmazonSQS": "sqs",
    "TrentService": "kms",
}

WRITE_PREFIXES = (
    "Put",
    "Update",
    "Delete",
    "TransactWrite",
    "BatchWrite",
    "Send",
    "ChangeMessageVisibility",
    "ReceiveMessage",  # it hides the messages it returns: a lost answer leaves them invisible
    "Purge",
)
"""Operations that change state: a lost answer to one of them leaves the change behind."""

APPLIED_THEN_FAILED = "applied-then-failed"

CONTROL_PLANE = (
    "Create",
    "Describe",
    "List",
    "GetQueueUrl",
    "GetQueueAttributes",
    "SetQueueAttributes",
    "UpdateTimeToLive",
    "DeleteTable",
    "DeleteQueue",
    "Tag",
    "Untag",
)
"""Resource set-up and inspection (tables, queues, keys): never faulted, so a stack (or a worker
attaching to one) always starts. The faults are about the calls the engine makes on its way."""


@dataclass(frozen=True)
class Fault:
    """One error answer: botocore reads ``code`` from ``__type`` (JSON) or ``Code`` (XML)."""

    kind: str
    status: int
    type_prefix: str  # the namespace AWS puts before '#' in __type ("" for none)
    query_error: str | None = None  # SQS's x-amzn-query-error header (query-compatible JSON)
    message: str = ""
    code: str = ""  # the error code sent, when it is not ``kind`` (applied-then-failed)

    @property
    def wire_code(self) -> str:
        return self.code or self.kind


_DDB = "com.amazonaws.dynamodb.v20120810#"
FAULTS: dict[str, tuple[Fault, ...]] = {
    "dynamodb": (
        Fault(
            "ProvisionedThroughputExceededException",
            400,
            _DDB,
            message="The level of configured provisioned throughput for the table was exceeded.",
        ),
        Fault(
            "ThrottlingException",
            400,
            "com.amazon.coral.availability#",
            message="Rate of requests exceeds the allowed throughput.",
        ),
        Fault("InternalServerError", 500, _DDB, message="Internal server error"),
    ),
    "sqs": (
        Fault(
            "ServiceUnavailable",
            503,
            "com.amazonaws.sqs#",
            "ServiceUnavailable;Receiver",
            "Service is unavailable. Try again later.",
        ),
        Fault(
            "InternalError",
            500,
            "com.amazonaws.sqs#",
            "InternalError;Receiver",
            "We encountered an internal error. Please try again.",
        ),
    ),
    "kms": (Fault("ThrottlingException", 400, "", message="Rate exceeded"),),
}
GENERIC = (Fault("InternalFailure", 500, "", message="Internal failure"),)

AFTER_WRITE: dict[str, Fault] = {
    "dynamodb": Fault("InternalServerError", 500, _DDB, message="Internal server error"),
    "sqs": Fault(
        "InternalError",
        500,
        "com.amazonaws.sqs#",
        "InternalError;Receiver",
        "We encountered an internal error. Please try again.",
    ),
}


@dataclass(frozen=True)
class Call:
    service: str
    operation: str
    query_protocol: bool

    @property
    def is_write(self) -> bool:
        return self.operation.startswith(WRITE_PREFIXES)

    @property
    def is_control_plane(self) -> bool:
        return self.operation.startswith(CONTROL_PLANE)


def _read_body(environ: dict[str, Any]) -> bytes:
    """Read the request body once and put it back, so the wrapped app can read it again."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body: bytes = environ["wsgi.input"].read(length) if length > 0 else b""
    environ["wsgi.input"] = io.BytesIO(body)
    return body


def identify(environ: dict[str, Any], body: bytes) -> Call:
    """Service and operation of an AWS call, from ``X-Amz-Target`` or ``Action``."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        prefix, _, operation = target.partition(".")
        return Call(TARGET_PREFIXES.get(prefix, prefix.lower()), operation, False)
    params = parse_qs(environ.get("QUERY_STRING", ""))
    if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        params.update(parse_qs(body.decode("utf-8", "replace")))
    operation = (params.get("Action") or [""])[0]
    service = ""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if "Credential=" in auth:  # Credential=AKID/20260101/us-east-1/sqs/aws4_request
        scope = auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")
        if len(scope) >= 4:
            service = scope[3]
    return Call(service, operation, bool(operation))


def error_response(call: Call, fault: Fault) -> tuple[str, list[tuple[str, str]], bytes]:
    """The status line, headers and body AWS sends for ``fault`` in ``call``'s protocol."""
    request_id = str(uuid.uuid4())
    reason = {400: "Bad Request", 500: "Internal Server Error", 503: "Service Unavailable"}
    status = f"{fault.status} {reason.get(fault.status, 'Error')}"
    if call.query_protocol:
        sender = "Sender" if fault.status < 500 else "Receiver"
        body = (
            '<?xml version="1.0"?><ErrorResponse xmlns="http://queue.amazonaws.com/doc/'
            f'2012-11-05/"><Error><Type>{sender}</Type><Code>{fault.wire_code}</Code><Message>'
            f"{fault.message}</Message><Detail/></Error><RequestId>{request_id}</RequestId>"
            "</ErrorResponse>"
        ).encode()
        headers = [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)]
    else:
        version = "1.1" if call.service == "kms" else "1.0"
        body = json.dumps(
            {"__type": f"{fault.type_prefix}{fault.wire_code}", "message": fault.message}
        ).encode()
        headers = [("Content-Type", f"application/x-amz-json-{version}")]
        headers.append(("x-amzn-RequestId", request_id))
        if fault.query_error:
            headers.append(("x-amzn-query-error", fault.query_error))
    headers.append(("Content-Length", str(len(body))))
    return status, headers, body


class FaultInjector:
    """WSGI middleware: fails a seeded fraction ``rate`` of AWS calls (see the module doc).

    ``after_write_share`` is the share of faults drawn for a write that let the write through
    before failing the answer; ``kinds``, when given, keeps only those fault kinds (a write
    fault not kept falls back to a kept kind; a call with no kept kind passes). Disabled until
    ``enable()``."""

    def __init__(
        self,
        app: WsgiApp,
        rate: float,
        seed: int = 0,
        *,
        after_write_share: float = 0.5,
        kinds: tuple[str, ...] | None = None,
        enabled: bool = False,
    ) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"the fault rate is a fraction from 0 to 1, got {rate}")
        self.app = app
        self.rate = rate
        self.seed = seed
        self.after_write_share = after_write_share
        self.enabled = enabled
        self.kinds = kinds
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.faults: Counter[tuple[str, str, str]] = Counter()  # (service, operation, kind)

    def enable(self) -> None:
        self.enabled = True

    def disable(self) -> None:
        self.enabled = False

    def reset_counts(self) -> None:
        with self._lock:
            self.calls.clear()
            self.faults.clear()

    def decide(self, call: Call) -> Fault | None:
        """Draw for one call: ``None`` (pass it through) or the fault to answer with."""
        with self._lock:
            self.calls[call.service] += 1
            if self._rng.random() >= self.rate:
                return None
            roll = self._rng.random()
            wanted = self.kinds
            after_write = call.is_write and roll < self.after_write_share
            if after_write and (wanted is None or APPLIED_THEN_FAILED in wanted):
                fault = AFTER_WRITE.get(call.service, GENERIC[0])
                chosen = Fault(
                    APPLIED_THEN_FAILED,
                    fault.status,
                    fault.type_prefix,
                    fault.query_error,
                    fault.message,
                    fault.kind,
                )
            else:
                kinds = [
                    f
                    for f in FAULTS.get(call.service, GENERIC)
                    if wanted is None or f.kind in wanted
                ]
                if not kinds:
                    return None
                chosen = kinds[self._rng.randrange(len(kinds))]
            self.faults[(call.service, call.operation, chosen.kind)] += 1
            return chosen

    def stats(self) -> dict[str, Any]:
        """Calls seen and faults answered, by service and kind (and by operation)."""
        with self._lock:
            by_kind: Counter[str] = Counter()
            by_operation: Counter[str] = Counter()
            for (service, operation, kind), count in self.faults.items():
                by_kind[f"{service} {kind}"] += count
                by_operation[f"{service} {operation} {kind}"] += count
            return {
                "rate": self.rate,
                "seed": self.seed,
                "enabled": self.enabled,
                "calls": dict(self.calls),
                "faults": sum(self.faults.values()),
                "by_kind": dict(sorted(by_kind.items())),
                "by_operation": dict(sorted(by_operation.items())),
            }

    def summary(self) -> str:
        stats = self.stats()
        kinds = ", ".join(f"{k} {v}" for k, v in stats["by_kind"].items()) or "none"
        calls = sum(stats["calls"].values())
        return (
            f"AWS faults (rate {self.rate}, seed {self.seed}): "
            f"{stats['faults']} of {calls} calls: {kinds}"
        )

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in SWITCH_PATHS and environ.get("REQUEST_METHOD") == "POST":
            self.enabled = SWITCH_PATHS[path]
        if path == STATS_PATH or path in SWITCH_PATHS:
            body = json.dumps(self.stats()).encode()
            start_response(
                "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            )
            return [body]
        if not self.enabled or path.startswith("/moto-api"):
            return self.app(environ, start_response)
        call = identify(environ, _read_body(environ))
        if not call.operation or call.is_control_plane:
            return self.app(environ, start_response)
        fault = self.decide(call)
        if fault is None:
            return self.app(environ, start_response)
        if fault.kind == APPLIED_THEN_FAILED:
            result = self.app(environ, lambda *args, **kwargs: lambda data: None)
            try:
                for _ in result:  # produce the whole answer: the write has committed
                    pass
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        status, headers, body = error_response(call, fault)
        start_response(status, headers)
        return [body]


HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-encoding",  # requests decodes the body; the length is recomputed
    "content-length",
}


class Forwarder:
    """A WSGI app relaying every request to ``upstream`` (scheme://host:port) unchanged."""

    def __init__(self, upstream: str, timeout: float = 120.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.timeout = timeout
        self._local = threading.local()

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        session: requests.Session = self._local.session
        return session

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        body = _read_body(environ)
        url = self.upstream + environ.get("PATH_INFO", "")
        if environ.get("QUERY_STRING"):
            url += "?" + environ["QUERY_STRING"]
        headers = {
            key[5:].replace("_", "-").title(): value
            for key, value in environ.items()
            if key.startswith("HTTP_") and key[5:].replace("_", "-").lower() not in HOP_BY_HOP
        }
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        try:
            answer = self._session().request(
                environ["REQUEST_METHOD"], url, data=body, headers=headers, timeout=self.timeout
            )
        except requests.RequestException as exc:
            message = f"upstream {self.upstream} unreachable: {exc}".encode()
            start_response("502 Bad Gateway", [("Content-Length", str(len(message)))])
            return [message]
        content = answer.content
        out = [(k, v) for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP]
        out.append(("Content-Length", str(len(content))))
        start_response(f"{answer.status_code} {answer.reason or ''}".strip(), out)
        return [content]


def main(argv: list[str] | None = None) -> int:
    """``python -m devstack.faults --upstream URL --port N --rate RATE [--seed N]``."""
    import logging

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="the AWS endpoint to forward to")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate", type=float, required=True, help="fraction of calls to fail")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--after-write-share", type=float, default=0.5, help="share of write faults applied first"
    )
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    injector = FaultInjector(
        Forwarder(args.upstream),
        args.rate,
        args.seed,
        after_write_share=args.after_write_share,
        enabled=True,
    )
    server = make_server(args.host, args.port, injector, threaded=True)
    host, port = server.server_address[:2]
    print(f"http://{host!s}:{port}", flush=True)
    print(f"faulty proxy to {args.upstream}: rate {args.rate}, seed {args.seed}", flush=True)

    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        print(injector.summary(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
