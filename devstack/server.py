"""Serve the Chalice app over HTTP the way ``chalice local`` does, inside our process."""

from __future__ import annotations

import threading

from chalice.config import Config
from chalice.local import LocalDevServer, create_local_server

from devstack.stage import stage_environment


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
        self._server = create_local_server(app, config, self._host, self._port)
        self._server.server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="api")
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server.server_close()
