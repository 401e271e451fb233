"""Serve the Chalice app over HTTP the way ``chalice local`` does, inside our process."""

from __future__ import annotations

import os
import threading
from typing import Any

from chalice.config import Config
from chalice.local import (
    ChaliceRequestHandler,
    CustomLocalChalice,
    LocalChalice,
    LocalDevServer,
    ThreadedHTTPServer,
)

from chalicelib import logs
from devstack.stage import stage_environment


def effective_stage_environment() -> dict[str, str]:
    """The stage's variable names with the values in effect in this process (which
    ``devstack.run`` prepared: shell and ``--env`` over the stage), so that nothing serving a
    request can put the stage's own values back over what the user chose."""
    return {name: os.environ.get(name, value) for name, value in stage_environment().items()}


class _Server(ThreadedHTTPServer):
    """``chalice local``'s server with a listen backlog for bursts (its default is 5, so 50
    concurrent clients see connection resets) and threads that never block shutdown."""

    request_queue_size = 256
    daemon_threads = True


class _Handler(ChaliceRequestHandler):
    """Every method reaches the app (which answers 405 in its family's shape), as behind API
    Gateway. ``http.server`` dispatches to ``do_<METHOD>`` and answers a bare 501 when there is
    none: ``chalice local`` defines only the seven usual methods, so TRACE, CONNECT, QUERY or any
    other token never reached the app. Any ``do_*`` name now resolves to the generic handler."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_") and len(name) > 3:
            return self._generic_handle
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        """The access line with keys and ``key=``/``token=``-style query values masked: a
        client may still put its key in a URL (it gets a 401), and the line must not keep it."""
        super().log_message("%s", logs.redact(format % args))


class ApiServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 8000) -> None:
        self._host = host
        self._port = port
        self._server: LocalDevServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        from app import app

        config = Config.create(
            chalice_stage="local",
            app_name="ringback",
            environment_variables=effective_stage_environment(),
        )
        # What chalice.local.create_local_server does, with our server class.
        CustomLocalChalice.__bases__ = (LocalChalice, app.__class__)
        app.__class__ = CustomLocalChalice
        self._server = LocalDevServer(
            app, config, self._host, self._port, handler_cls=_Handler, server_cls=_Server
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="api")
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server.server_close()
