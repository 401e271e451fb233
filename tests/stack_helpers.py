"""Start ``devstack.run`` (what ``make run`` runs) as a separate process with a chosen shell
environment, for tests that need their own stack rather than the shared ``local_stack``."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class OwnStack:
    base_url: str
    admin_key: str
    banner: list[str] = field(default_factory=list)

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}", "Content-Type": "application/json"}


@contextmanager
def own_stack(shell: dict[str, str], admin_key: str = "rbk_own-admin") -> Iterator[OwnStack]:
    """The stack as started from a shell holding ``shell`` (plus the admin key); yields once its
    banner is printed. Stopped with Ctrl-C (SIGINT), killed if it takes more than 30 s."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RINGBACK_"))}
    env.update(shell)
    env["RINGBACK_ADMIN_KEY"] = admin_key
    env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack.run", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def drain() -> None:
        # A pipe nobody reads fills up and blocks the stack's logging (and then the stack).
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=drain, daemon=True).start()
    stack = OwnStack(f"http://127.0.0.1:{port}", admin_key)
    try:
        deadline = time.monotonic() + 90
        while not any("Press Ctrl-C" in line for line in stack.banner):
            if time.monotonic() > deadline or (process.poll() is not None and lines.empty()):
                raise RuntimeError("the stack did not start:\n" + "".join(stack.banner))
            try:
                stack.banner.append(lines.get(timeout=1))
            except queue.Empty:
                continue
        yield stack
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
