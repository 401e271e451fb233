"""``python -m ringback_cli`` is the ``ringback`` command."""

from ringback_cli.main import run

run()
