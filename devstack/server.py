"""Serve the Chalice app over HTTP the way ``chalice local`` does, inside our process."""

from __future__ import annotations

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


class _Server(ThreadedHTTPServer):
    """``chalice local``'s server with a listen backlog for bursts (its default is 5, so 50
    concurrent clients see connection resets) and threads that never block shutdown."""

    request_queue_size = 256
    daemon_threads = True


class _Handler(ChaliceRequestHandler):
    """Every method reaches the app (which answers 405 in its family's shape), as behind API
    Gateway; ``chalice local`` itself answers TRACE and CONNECT with a bare 501."""

    do_TRACE = do_CONNECT = ChaliceRequestHandler._generic_handle

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
            environment_variables=stage_environment("local"),
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
