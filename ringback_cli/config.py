"""Where the CLI finds the Ringback it talks to: flag, then environment, then profile file.

``--url``/``RINGBACK_URL`` and ``--key``/``RINGBACK_KEY`` win; otherwise the named profile
(``--profile``/``RINGBACK_PROFILE``, default ``default``) of the profile file is used: a TOML file
``config.toml`` in the user's config directory (``~/.config/ringback`` on Linux,
``RINGBACK_CONFIG`` names another file). The file holds keys, so it is written owner-only.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import typer

from ringback_cli.errors import CliError

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_PROFILE = "default"


def config_path() -> Path:
    named = os.environ.get("RINGBACK_CONFIG")
    if named:
        return Path(named).expanduser()
    return Path(typer.get_app_dir("ringback")) / "config.toml"


def read_profiles(path: Path | None = None) -> dict[str, dict[str, str]]:
    """Every ``[profile]`` table of the file (none if it does not exist)."""
    path = path or config_path()
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"cannot read the profile file {path}: {exc}") from exc
    return {
        name: {k: str(v) for k, v in table.items() if isinstance(v, str | int)}
        for name, table in data.items()
        if isinstance(table, dict)
    }


def save_profile(name: str, url: str | None, key: str | None, path: Path | None = None) -> Path:
    """Set ``url``/``key`` of profile ``name`` (others kept); the file is made owner-only."""
    path = path or config_path()
    profiles = read_profiles(path)
    profile = profiles.setdefault(name, {})
    if url is not None:
        profile["url"] = url
    if key is not None:
        profile["key"] = key
    lines: list[str] = []
    for table, values in profiles.items():
        lines.append(f"[{json.dumps(table)}]")
        lines += [f"{field} = {json.dumps(value)}" for field, value in values.items()]
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write("\n".join(lines))
    os.chmod(path, 0o600)
    return path


@dataclass(frozen=True)
class Target:
    """The Ringback to talk to, and where each part came from (for error messages)."""

    url: str
    key: str | None
    url_from: str
    key_from: str


def resolve(url: str | None, key: str | None, profile: str | None) -> Target:
    """Flag or environment first (click fills both from ``envvar``), then the profile."""
    name = profile or DEFAULT_PROFILE
    stored = read_profiles().get(name, {})
    if profile and profile != DEFAULT_PROFILE and not stored:
        raise CliError(f"no profile {profile!r} in {config_path()}")
    url_from = "--url/RINGBACK_URL"
    if not url:
        url, url_from = stored.get("url"), f"profile {name!r}"
    if not url:
        url, url_from = DEFAULT_URL, "the default"
    key_from = "--key/RINGBACK_KEY"
    if not key:
        key, key_from = stored.get("key"), f"profile {name!r}"
    return Target(url.rstrip("/"), key or None, url_from, key_from)
