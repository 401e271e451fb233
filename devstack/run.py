"""``make run``: the whole of Ringback on one laptop, no AWS account.

Starts the embedded AWS (moto, serialised) on loopback, creates every table/queue/key from the
app's own definitions, serves the Chalice API on ``127.0.0.1:$PORT`` and runs the loops that on
AWS are Lambda triggers: an SQS poller feeding the very same dispatcher handler, and a sweep every
second calling the very same scheduler handler. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import signal
import sys
import threading
import time

import requests


def _prepare_env(admin_key: str, aws_url: str) -> None:
    from devstack.stage import FAKE_CREDENTIALS, stage_environment

    for name in list(os.environ):
        if name.startswith("AWS_") and name not in ("AWS_ENDPOINT_URL",):
            del os.environ[name]
    os.environ.update(FAKE_CREDENTIALS)
    os.environ.update(stage_environment("local"))
    os.environ["AWS_ENDPOINT_URL"] = aws_url
    os.environ["RINGBACK_ADMIN_KEY_HASH"] = hashlib.sha256(admin_key.encode()).hexdigest()


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument(
        "--aws-port", type=int, default=int(os.environ.get("RINGBACK_AWS_PORT", "0"))
    )
    args = parser.parse_args(argv)

    from devstack.embedded_aws import EmbeddedAws

    admin_key = os.environ.get("RINGBACK_ADMIN_KEY") or "rbk_admin_" + secrets.token_urlsafe(24)
    aws = EmbeddedAws(port=args.aws_port)
    aws_url = aws.start()
    _prepare_env(admin_key, aws_url)

    from devstack import resources

    resources.create_all()

    from devstack.loops import Loops
    from devstack.server import ApiServer

    api = ApiServer(port=args.port)
    api.start()
    loops = Loops()
    loops.start()
    base_url = f"http://127.0.0.1:{args.port}"
    _wait_ready(base_url)
    print(f"Ringback local stack ready\n  API:        {base_url}\n  admin key:  {admin_key}")
    print(f"  embedded AWS: {aws_url}\nPress Ctrl-C to stop.", flush=True)

    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    stop.wait()
    print("stopping...", flush=True)
    loops.stop()
    api.stop()
    aws.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
