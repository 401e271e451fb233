"""The local stack's environment, built from the same ``.chalice/config.json`` a deploy uses.

On AWS the stage's variables are the Lambda's whole environment. Locally there is also the shell
that starts ``make run`` (or the soak, or a benchmark), and what a user sets there must win:
``RINGBACK_RETRY_SCHEDULE=1,1,1,1,1 make run`` means exactly that, not the stage's ``2,4,8,16,32``.
:func:`local_environment` is that merge; :func:`differences` is what ``make run`` prints so the
user sees which settings took effect.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "RINGBACK_"
# Shown as set, never echoed: the admin key is printed once in the banner on purpose, its hash
# and anything else secret-looking is nobody's business in a terminal scroll-back.
_SECRET_WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "HASH")
# The ``ringback`` command's own variables (which Ringback to talk to): not service settings.
CLIENT_ONLY = frozenset({"RINGBACK_URL", "RINGBACK_KEY", "RINGBACK_PROFILE", "RINGBACK_CONFIG"})


def stage_environment(stage: str = "local") -> dict[str, str]:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    env: dict[str, str] = dict(config.get("environment_variables", {}))
    env.update(config["stages"][stage].get("environment_variables", {}))
    return env


def shell_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``RINGBACK_*`` variables of ``environ`` (the shell's, taken before anything else),
    except the ``ringback`` command's own (``CLIENT_ONLY``)."""
    return {
        name: value
        for name, value in environ.items()
        if name.startswith(PREFIX) and name not in CLIENT_ONLY
    }


def local_environment(
    shell: Mapping[str, str],
    overrides: Mapping[str, str] | None = None,
    stage: str = "local",
) -> dict[str, str]:
    """The stage's variables, then every ``RINGBACK_*`` of ``shell`` on top, then ``overrides``
    (``devstack.run --env``, the soak's settings) on top of both."""
    env = stage_environment(stage)
    env.update(shell_settings(shell))
    env.update(overrides or {})
    return env


def differences(
    effective: Mapping[str, str], stage: str = "local"
) -> dict[str, tuple[str | None, str]]:
    """``name -> (stage's value or None, value in effect)`` for every ``RINGBACK_*`` setting that
    is not what the stage says, sorted by name."""
    staged = stage_environment(stage)
    return {
        name: (staged.get(name), effective[name])
        for name in sorted(effective)
        if name.startswith(PREFIX) and staged.get(name) != effective[name]
    }


def describe_differences(changes: Mapping[str, tuple[str | None, str]]) -> list[str]:
    """One line per changed setting, secrets masked: ``NAME=value (stage: old)``."""
    lines = []
    for name, (staged, value) in changes.items():
        shown = "(set)" if any(word in name for word in _SECRET_WORDS) else value
        lines.append(f"{name}={shown} (stage: {staged if staged is not None else 'unset'})")
    return lines


FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_SESSION_TOKEN": "local",
    "AWS_DEFAULT_REGION": "us-east-1",
}
