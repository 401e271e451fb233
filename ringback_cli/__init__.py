"""``ringback``: the command line for Ringback operators and receivers.

A top-level package of its own (not under ``chalicelib``) so that ``chalice package`` never
bundles it into the Lambda: it is a client, it talks to any Ringback over HTTP.
"""

__version__ = "1.0.0"
