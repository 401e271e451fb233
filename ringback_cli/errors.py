"""The one error type the CLI shows to its user (as one line, never a traceback)."""

from __future__ import annotations


class CliError(Exception):
    """Shown as one line, ``Error: <message>``, with exit status 1 (``main.guarded``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
