"""The embedded AWS for laptops and tests: moto's server on loopback, one request at a time.

moto is not safe under concurrent requests (a conditional transaction raced by 50 threads can
have two winners, and the server answers 500s while a dict changes under it). DynamoDB itself is,
so we serialise moto's WSGI app behind a lock: every rule our code relies on then holds here
exactly as it does on AWS. The lock is held until the whole response body is produced.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import requests
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

from devstack.faults import FaultInjector

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def serialised(app: WsgiApp) -> WsgiApp:
    lock = threading.Lock()

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with lock:
            captured: list[Any] = []
            chunks: list[bytes] = []

            def capture(
                status: str, headers: list[Any], exc_info: Any = None
            ) -> Callable[[bytes], None]:
                captured[:] = [status, headers, exc_info]
                return chunks.append

            result = app(environ, capture)
            try:
                chunks.extend(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        start_response(*captured)
        return chunks

    return wsgi


class EmbeddedAws:
    """A moto server on ``host:port`` (port 0 picks a free one) with serialised requests."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        faults: float | None = None,
        faults_seed: int = 0,
    ) -> None:
        self._host = host
        self._port = port
        self.faults: FaultInjector | None = None
        self._faults_rate = faults
        self._faults_seed = faults_seed
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per AWS call is noise
        app = serialised(DomainDispatcherApplication(create_backend_app))
        if self._faults_rate is not None:
            # Outside the lock: a faulted call does not wait for moto (an applied-then-failed
            # one takes the lock inside, as any call does).
            self.faults = FaultInjector(app, self._faults_rate, self._faults_seed)
            app = self.faults
        self._server = make_server(
            self._host,
            self._port,
            app,
            threaded=True,
            request_handler=MotoRequestHandler,
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="moto")
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def enable_faults(self) -> None:
        """Start failing calls (``faults=RATE``): after the resources exist, so set-up is clean."""
        if self.faults is not None:
            self.faults.enable()

    def fault_summary(self) -> str | None:
        return self.faults.summary() if self.faults is not None else None

    def reset(self) -> None:
        """Forget every resource (tests start each case from empty tables)."""
        requests.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def main(argv: list[str] | None = None) -> int:
    """``python -m devstack.embedded_aws [--port N] [--faults RATE --seed N]``: an embedded AWS
    in a process of its own, printing its URL on the first line (benchmarks use it so that moto's
    CPU is not theirs). With ``--faults`` a seeded fraction of data calls fail from the start
    (resource set-up never does, devstack/faults.py); counts at ``/ringback-faults/stats``."""
    import argparse
    import time

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--faults", type=float, metavar="RATE", help="fraction of calls to fail")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    args = parser.parse_args(argv)
    aws = EmbeddedAws(args.host, args.port, faults=args.faults, faults_seed=args.seed)
    print(aws.start(), flush=True)
    aws.enable_faults()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        aws.stop()
        summary = aws.fault_summary()
        if summary:
            print(summary, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
