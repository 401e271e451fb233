"""``make run``: the whole of Ringback on one laptop, no AWS account.

Starts the embedded AWS (moto, serialised) on loopback, creates every table/queue/key from the
app's own definitions, serves the Chalice API on ``127.0.0.1:$PORT`` and runs the loops that on
AWS are Lambda triggers: an SQS poller feeding the very same dispatcher handler, and a sweep every
second calling the very same scheduler handler. Ctrl-C stops everything.

Options for fault-injection runs (``make soak``, docs/soak.md); ``make run`` uses none of them:

- ``--env NAME=VALUE`` (repeatable) overrides a variable after the stage's values from
  ``.chalice/config.json`` and the shell's ``RINGBACK_*`` variables (which themselves win over
  the stage's: ``RINGBACK_RETRY_SCHEDULE=1,1,1,1,1 make run`` works), e.g.
  ``--env RINGBACK_RETRY_SCHEDULE=1,1,2 --env RINGBACK_HTTP_TIMEOUT=1``. The banner lists every
  setting that differs from the stage's.
- ``--visibility-timeout S`` sets the delivery queue's SQS visibility timeout (default 360 s from
  ``chalicelib/queues.py``), so a killed worker's in-flight messages come back sooner.
- ``--no-worker`` serves the API and the embedded AWS only; ``--worker-only --aws-url URL`` runs
  only the worker, dead-letter and sweep loops against that embedded AWS. Together they are the
  Lambda split of AWS: the worker process can be killed and restarted while the state survives.
- ``--aws-faults RATE [--aws-faults-seed N]`` makes the embedded AWS fail that seeded fraction of
  calls as AWS does under stress (throttling, 5xx, writes applied then failed:
  devstack/faults.py), once the resources exist. For ``--worker-only``, put the fault proxy
  ``python -m devstack.faults --upstream URL`` between the worker and the embedded AWS.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import signal
import socket
import sys
import threading
import time

import requests


def _prepare_env(
    admin_key: str, aws_url: str, overrides: dict[str, str]
) -> dict[str, tuple[str | None, str]]:
    """The stage's settings, with every ``RINGBACK_*`` of the shell and then ``--env`` on top;
    returns the settings that differ from the stage's (``devstack.stage.differences``)."""
    from devstack.stage import FAKE_CREDENTIALS, differences, local_environment

    for name in list(os.environ):
        if name.startswith("AWS_") and name not in ("AWS_ENDPOINT_URL",):
            del os.environ[name]
    os.environ.update(FAKE_CREDENTIALS)
    effective = local_environment(os.environ, overrides)
    os.environ.update(effective)
    os.environ["AWS_ENDPOINT_URL"] = aws_url
    os.environ["RINGBACK_ADMIN_KEY_HASH"] = hashlib.sha256(admin_key.encode()).hexdigest()
    return differences(effective)


def _print_settings(changed: dict[str, tuple[str | None, str]]) -> None:
    from devstack.stage import describe_differences

    lines = describe_differences(changed)
    if not lines:
        print("  settings:   the local stage's (.chalice/config.json)", flush=True)
    for index, line in enumerate(lines):
        print(f"  {'settings:' if index == 0 else '':<12}{line}", flush=True)


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """``["A=1", "B=x,y"]`` -> ``{"A": "1", "B": "x,y"}``; a pair without ``=`` is an error."""
    found: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--env takes NAME=VALUE, got {pair!r}")
        found[name.strip()] = value
    return found


def _set_visibility(seconds: int) -> None:
    import boto3

    boto3.client("sqs").set_queue_attributes(
        QueueUrl=os.environ["RINGBACK_DELIVERY_QUEUE_URL"],
        Attributes={"VisibilityTimeout": str(seconds)},
    )


def _attach_resources() -> None:
    """Export the queue URLs and key id of resources another process created (--worker-only)."""
    import boto3

    from chalicelib.queues import delivery_queue
    from devstack.resources import KMS_ALIAS

    sqs = boto3.client("sqs")
    spec = delivery_queue()
    os.environ["RINGBACK_DELIVERY_QUEUE_URL"] = sqs.get_queue_url(QueueName=spec.name)["QueueUrl"]
    os.environ["RINGBACK_DELIVERY_DLQ_URL"] = sqs.get_queue_url(QueueName=spec.dlq_name)["QueueUrl"]
    os.environ["RINGBACK_KMS_KEY_ID"] = KMS_ALIAS


def _wait_ready(base_url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base_url}/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the API did not become ready at {base_url}")


def _portal_link(base_url: str) -> str:
    """A single-use manage link into the portal for a fresh ``demo`` tenant (the admin has no
    tenant of its own; ``POST /portal/sessions`` with the admin key and a ``tenant_id`` makes
    links for any other). Valid for an hour, as a local convenience."""
    from chalicelib.storage import portal, tenants

    try:
        tenant = tenants.create_tenant("demo", None)
        token, _ = portal.create_link(
            tenant.tenant_id,
            "manage",
            link_seconds=3600,
            session_seconds=8 * 3600,
            created_by="ADMIN",
        )
    except Exception as exc:  # e.g. --aws-faults failing the writes: the stack still runs
        return f"(no demo link: {type(exc).__name__}; POST /portal/sessions makes one)"
    return (
        f"{base_url}/portal/login?token={token}\n"
        f"              (tenant demo {tenant.tenant_id}, manage rights, single use, 60 min)"
    )


def _reserve_port(port: int) -> socket.socket:
    """Hold the API's port from the start. Until the API binds it, this process makes AWS calls
    whose client sockets take ports from the same ephemeral range the callers' free-port helpers
    pick from; a client socket left half-closed on the API's port would make its bind fail."""
    reserved = socket.socket()
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reserved.bind(("127.0.0.1", port))
    return reserved


def _wait_for_signal() -> None:
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    stop.wait()
    print("stopping...", flush=True)


def _worker_only(aws_url: str, overrides: dict[str, str]) -> int:
    changed = _prepare_env("rbk_admin_" + secrets.token_urlsafe(24), aws_url, overrides)
    _attach_resources()

    from devstack.loops import Loops

    loops = Loops()
    loops.start()
    print(f"Ringback worker ready (pid {os.getpid()}) on {aws_url}", flush=True)
    _print_settings(changed)
    _wait_for_signal()
    loops.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument(
        "--aws-port", type=int, default=int(os.environ.get("RINGBACK_AWS_PORT", "0"))
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="override a variable"
    )
    parser.add_argument("--visibility-timeout", type=int, metavar="SECONDS")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--no-worker", action="store_true", help="API and embedded AWS only")
    mode.add_argument("--worker-only", action="store_true", help="loops only, needs --aws-url")
    parser.add_argument("--aws-url", help="the embedded AWS of a --no-worker process")
    parser.add_argument(
        "--aws-faults", type=float, metavar="RATE", help="fail this share of AWS calls"
    )
    parser.add_argument("--aws-faults-seed", type=int, default=0, metavar="N")
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.env)
    except ValueError as exc:
        parser.error(str(exc))
    if args.worker_only:
        if not args.aws_url:
            parser.error("--worker-only needs --aws-url")
        if args.aws_faults is not None:
            parser.error(
                "--aws-faults belongs to the process holding the embedded AWS; for a "
                "worker use the proxy: python -m devstack.faults --upstream URL --rate R"
            )
        return _worker_only(args.aws_url, overrides)

    try:
        reserved = _reserve_port(args.port)
    except OSError as exc:
        parser.error(f"port {args.port} is not free ({exc.strerror}); choose another: PORT=8001")

    from devstack.embedded_aws import EmbeddedAws

    admin_key = os.environ.get("RINGBACK_ADMIN_KEY") or "rbk_admin_" + secrets.token_urlsafe(24)
    aws = EmbeddedAws(port=args.aws_port, faults=args.aws_faults, faults_seed=args.aws_faults_seed)
    aws_url = aws.start()
    changed = _prepare_env(admin_key, aws_url, overrides)

    from devstack import resources

    resources.create_all()
    if args.visibility_timeout is not None:
        _set_visibility(args.visibility_timeout)
    aws.enable_faults()

    from devstack.loops import Loops
    from devstack.server import ApiServer

    api = ApiServer(port=args.port)
    reserved.close()
    api.start()
    loops = Loops()
    if not args.no_worker:
        loops.start()
    base_url = f"http://127.0.0.1:{args.port}"
    _wait_ready(base_url)
    print(f"Ringback local stack ready\n  API:        {base_url}\n  admin key:  {admin_key}")
    print(f"  portal:     {_portal_link(base_url)}")
    _print_settings(changed)
    print(f"  embedded AWS: {aws_url}\nPress Ctrl-C to stop.", flush=True)
    if args.aws_faults is not None:
        print(
            f"  AWS faults: {args.aws_faults} (seed {args.aws_faults_seed}), counts at "
            f"{aws_url}/ringback-faults/stats",
            flush=True,
        )
    if args.no_worker:
        print(f"  no worker: start one with --worker-only --aws-url {aws_url}", flush=True)

    _wait_for_signal()
    loops.stop()
    api.stop()
    aws.stop()
    if aws.fault_summary():
        print(aws.fault_summary(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
