"""The ``ringback`` command (Typer + Rich). Every subcommand talks to Ringback over HTTP.

Errors are one line (``Error: HTTP 401 invalid_key: ...``) and exit status 1; a traceback is a
bug. ``--json`` prints the API's own JSON instead of tables, for scripts; ``-q`` prints only the
id (or key) a create returns, for ``TENANT=$(ringback tenants create Acme -q)``.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ringback_cli import __version__
from ringback_cli.client import Client
from ringback_cli.config import config_path, read_profiles, resolve, save_profile
from ringback_cli.errors import CliError
from ringback_cli.render import as_json

HELP = """Operate and receive Ringback callbacks from the terminal.

Talks to any Ringback over HTTP: `--url` / RINGBACK_URL (default
http://127.0.0.1:8000, what `make run` serves), `--key` / RINGBACK_KEY,
or a saved profile (`ringback profile save`).

Start with `ringback listen` in one terminal to see callbacks arrive."""

app = typer.Typer(
    name="ringback",
    help=HELP,
    rich_markup_mode="markdown",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)
tenants_app = typer.Typer(
    help="Create and list tenants (admin or reseller key).", no_args_is_help=True
)
keys_app = typer.Typer(help="Create, list and revoke a tenant's API keys.", no_args_is_help=True)
events_app = typer.Typer(help="Publish events.", no_args_is_help=True)
deliveries_app = typer.Typer(
    help="List deliveries and show one with its attempts.", no_args_is_help=True
)
profile_app = typer.Typer(help="Save or show the URL and key a profile uses.", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")
app.add_typer(events_app, name="events")
app.add_typer(deliveries_app, name="deliveries")
app.add_typer(profile_app, name="profile")

FINAL = {"delivered", "failed", "skipped"}
_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


F = TypeVar("F", bound=Callable[..., Any])


def guarded(function: F) -> F:
    """Any ``CliError`` (API error, unreachable URL, refused key...) becomes one line on stderr
    and exit status 1: never a traceback."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except CliError as exc:
            Console(stderr=True, highlight=False, soft_wrap=True).print(
                f"Error: {exc.message}", markup=False
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


@dataclass
class State:
    url: str | None
    key: str | None
    profile: str | None
    json: bool

    def client(self) -> Client:
        return Client(resolve(self.url, self.key, self.profile))


def _state(ctx: typer.Context, url: str | None = None, key: str | None = None) -> State:
    """The root's options; ``--url``/``--key`` given after the subcommand win."""
    state = ctx.find_root().obj
    assert isinstance(state, State)
    return replace(state, url=url or state.url, key=key or state.key)


UrlHere = Annotated[
    str | None,
    typer.Option("--url", metavar="URL", help="Base URL of the Ringback API.", show_default=False),
]
KeyHere = Annotated[
    str | None, typer.Option("--key", metavar="KEY", help="API key (rbk_...).", show_default=False)
]


def _out(stderr: bool = False) -> Console:
    """Rich output; piped (not a terminal, no COLUMNS) it is 200 wide so that ids and keys are
    never cut to fit 80 columns."""
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, highlight=False, width=200)
    return console


def _err() -> Console:
    return _out(stderr=True)


def _record(values: dict[str, Any], fields: tuple[str, ...]) -> Table:
    """One record as ``name  value`` lines (a create's answer)."""
    table = Table(show_header=False, box=None)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for name in fields:
        value = values.get(name)
        table.add_row(name, "-" if value is None or value == "" else str(value))
    return table


def when(value: str | None) -> str | None:
    """``1h``/``30m``/``2d``/``45s`` ago, ``now``, or an ISO 8601 time with a zone (as given)."""
    if value is None:
        return None
    if value == "now":
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    match = _RELATIVE.match(value)
    if match:
        delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        return (datetime.now(UTC) - delta).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value


def _print_json(value: Any) -> None:
    print(as_json(value))


def _version(value: bool) -> None:
    if value:
        print(f"ringback {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            envvar="RINGBACK_URL",
            metavar="URL",
            help="Base URL of the Ringback API.",
            show_default=False,
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            envvar="RINGBACK_KEY", metavar="KEY", help="API key (rbk_...).", show_default=False
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            envvar="RINGBACK_PROFILE",
            metavar="NAME",
            help="Profile of the profile file to use (default: 'default').",
            show_default=False,
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the API's JSON instead of tables.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    ctx.obj = State(url, key, profile, json_output)


# --------------------------------------------------------------------------- listen


@app.command()
@guarded
def listen(
    ctx: typer.Context,
    port: Annotated[
        int, typer.Option(metavar="PORT", help="HTTP port to receive callbacks on.")
    ] = 9911,
    secret: Annotated[
        list[str] | None,
        typer.Option(
            metavar="WHSEC",
            help="Signing secret (whsec_...) to verify Standard Webhooks signatures with; "
            "repeat it for a rotation's old and new secret.",
            show_default=False,
        ),
    ] = None,
    status: Annotated[
        str,
        typer.Option(
            metavar="STATUS[,STATUS...]",
            help="Status to answer, or a script of statuses, one per request, the last "
            "repeating: 500,500,500,200 shows three retries then success.",
        ),
    ] = "200",
    forward: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="Also send every HTTP request on to this URL (a bare http://host:port keeps "
            "the request's path); its answer goes back unless --status is given.",
            show_default=False,
        ),
    ] = None,
    tcp_port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT",
            help="TCP port for tcp:// call notifiers (default: --port + 1).",
            show_default=False,
        ),
    ] = None,
    udp_port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT",
            help="UDP port for udp:// call notifiers (default: --port).",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(metavar="ADDRESS", help="Address to listen on.")
    ] = "127.0.0.1",
) -> None:
    """Receive callbacks locally and print each one as it arrives.

    Prints method, path, query, headers and the body pretty-printed by its content type
    (JSON, XML, form, text), and whether the Standard Webhooks signature verifies with
    `--secret`. Also listens on TCP and UDP for call notifiers' lines.
    Point a registration at `http://127.0.0.1:9911/anything`. Ctrl-C stops.
    """
    from ringback_cli.listen import Listener, StatusScript, open_servers, parse_statuses

    source = ctx.get_parameter_source("status")
    try:
        script = parse_statuses(status)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--status") from None
    console = _out()
    listener = Listener(
        console=console,
        secrets=tuple(secret or ()),
        statuses=StatusScript(script),
        status_chosen=source is not None and source.name != "DEFAULT",
        forward=forward,
    )
    try:
        servers = open_servers(
            listener,
            host,
            port,
            port + 1 if tcp_port is None else tcp_port,
            port if udp_port is None else udp_port,
        )
    except OSError as exc:
        raise CliError(
            f"cannot listen on {host}, {exc.strerror} (choose others with --port, "
            "--tcp-port, --udp-port)"
        ) from None
    servers.start()
    answers = status if len(script) > 1 else str(script[0])
    console.print(f"[bold]Ringback listener ready[/bold] (answers {answers})")
    for address in servers.addresses:
        console.print(f"  {address}")
    checked = f"checked with {len(secret)} secret(s)" if secret else "not checked (no --secret)"
    console.print(f"  signatures: {checked}")
    if forward:
        console.print(f"  forwarding to {forward}")
    console.print("Ctrl-C to stop.")

    def _stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        servers.stop()
    console.print(f"stopped after {listener.count} request(s)")


# --------------------------------------------------------------------------- tenants


def _tenant_table(rows: list[dict[str, Any]]) -> Table:
    table = Table("tenant_id", "name", "parent_id", "created_at")
    for row in rows:
        table.add_row(
            row.get("tenant_id", ""),
            row.get("name", ""),
            row.get("parent_id") or "",
            row.get("created_at", ""),
        )
    return table


@tenants_app.command("create")
@guarded
def tenants_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The tenant's name.")],
    parent: Annotated[
        str | None,
        typer.Option(
            metavar="TENANT_ID", help="Parent tenant id (a reseller's child).", show_default=False
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the tenant id.")] = False,
    url: UrlHere = None,
    key: KeyHere = None,
) -> None:
    """Create a tenant; its id is the company_id / CUSTOMER_ID of the APIs."""
    state = _state(ctx, url, key)
    body: dict[str, Any] = {"name": name}
    if parent:
        body["parent_id"] = parent
    tenant = state.client().post("/admin/tenants", json=body)
    if quiet:
        print(tenant["tenant_id"])
    elif state.json:
        _print_json(tenant)
    else:
        _out().print(_record(tenant, ("tenant_id", "name", "parent_id", "created_at")))


@tenants_app.command("list")
@guarded
def tenants_list(
    ctx: typer.Context,
    url: UrlHere = None,
    key: KeyHere = None,
) -> None:
    """List tenants: all of them for the admin key, a reseller's children for a reseller key."""
    state = _state(ctx, url, key)
    client = state.client()
    rows: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = client.get("/admin/tenants", params={"cursor": cursor})
        rows += page.get("tenants", [])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    if state.json:
        _print_json({"tenants": rows})
    else:
        _out().print(_tenant_table(rows))
        _out().print(f"{len(rows)} tenant(s)")


# --------------------------------------------------------------------------- keys


@keys_app.command("create")
@guarded
def keys_create(
    ctx: typer.Context,
    tenant_id: Annotated[
        str, typer.Argument(metavar="TENANT_ID", help="The tenant the key acts for.")
    ],
    role: Annotated[
        str, typer.Option(metavar="ROLE", help="VIEWER, MANAGER, OWNER, RESELLER (or ADMIN).")
    ] = "OWNER",
    expires_at: Annotated[
        str | None,
        typer.Option(
            metavar="WHEN",
            help="Expiry, ISO 8601 with a zone (default: never).",
            show_default=False,
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the key.")] = False,
    url: UrlHere = None,
    key: KeyHere = None,
) -> None:
    """Mint an API key. The key is shown this once: keep it."""
    state = _state(ctx, url, key)
    body: dict[str, Any] = {"role": role}
    if expires_at:
        body["expires_at"] = expires_at
    made = state.client().post(f"/admin/tenants/{tenant_id}/keys", json=body)
    if quiet:
        print(made["key"])
    elif state.json:
        _print_json(made)
    else:
        fields = ("key", "key_id", "role", "tenant_id", "created_at", "expires_at")
        _out().print(_record(made, fields))
        _out().print("The key is shown this once: keep it.")


@keys_app.command("list")
@guarded
def keys_list(
    ctx: typer.Context,
    tenant_id: Annotated[
        str, typer.Argument(metavar="TENANT_ID", help="The tenant whose keys to list.")
    ],
    url: UrlHere = None,
    key: KeyHere = None,
) -> None:
    """List a tenant's keys (their ids and prefixes, never the keys themselves)."""
    state = _state(ctx, url, key)
    found = state.client().get(f"/admin/tenants/{tenant_id}/keys")
    if state.json:
        _print_json(found)
        return
    table = Table("key_id", "prefix", "role", "created_at", "last_used", "expires_at", "revoked_at")
    for row in found.get("keys", []):
        table.add_row(
            *(str(row.get(c) or "") for c in ("key_id", "prefix", "role", "created_at")),
            *(str(row.get(c) or "-") for c in ("last_used", "expires_at", "revoked_at")),
        )
    _out().print(table)


@keys_app.command("revoke")
@guarded
def keys_revoke(
    ctx: typer.Context,
    tenant_id: Annotated[str, typer.Argument(metavar="TENANT_ID", help="The key's tenant.")],
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID", help="The key's id (from keys list).")],
    url: UrlHere = None,
    key: KeyHere = None,
) -> None:
    """Revoke a key: it is refused from now on."""
    _state(ctx, url, key).client().delete(f"/admin/tenants/{tenant_id}/keys/{key_id}")
    _out().print(f"revoked key {key_id} of tenant {tenant_id}")


# --------------------------------------------------------------------------- events


def _payload(value: str) -> Any:
    """``@file.json``, ``@-`` (stdin) or inline JSON."""
    if value.startswith("@"):
        source = value[1:]
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text()
        except OSError as exc:
            raise typer.BadParameter(
                f"cannot read {source}: {exc.strerror}", param_hint="--payload"
            ) from None
    else:
        text = value
    try:
        return json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="--payload") from None


TenantOption = Annotated[
    str | None,
    typer.Option(
        "--tenant",
        metavar="TENANT_ID",
        help="Tenant id, when the key may act for several (admin, reseller).",
        show_default=False,
    ),
]


@events_app.command("publish")
@guarded
def events_publish(
    ctx: typer.Context,
    event_type: Annotated[str, typer.Argument(metavar="TYPE", help="The event type.")],
    payload: Annotated[
        str,
        typer.Option(
            metavar="@FILE|JSON", help="The payload: @file.json, @- for stdin, or inline JSON."
        ),
    ] = "{}",
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            metavar="KEY", help="A repeat within 24 h returns the first answer.", show_default=False
        ),
    ] = None,
    campaign_id: Annotated[
        str | None,
        typer.Option(metavar="ID", help="Only registrations of this campaign.", show_default=False),
    ] = None,
    selection: Annotated[
        str | None, typer.Option(help="SIP or MVNO (call notifiers).", show_default=False)
    ] = None,
    tenant: TenantOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the event id.")] = False,
    url: UrlHere = None,
    key: KeyHere = None,
) -> None:
    """Publish an event: every matching registration gets a delivery."""
    state = _state(ctx, url, key)
    body: dict[str, Any] = {"event_type": event_type, "payload": _payload(payload)}
    for name, value in (
        ("campaign_id", campaign_id),
        ("selection", selection),
        ("tenant_id", tenant),
    ):
        if value is not None:
            body[name] = value
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    published = state.client().post("/events", json=body, headers=headers)
    if quiet:
        print(published["event_id"])
    elif state.json:
        _print_json(published)
    else:
        count = published.get("deliveries", 0)
        _out().print(f"event {published['event_id']}: {count} delivery(ies)")
        _out().print("follow them: ringback tail --since 5m", style="dim")


# --------------------------------------------------------------------------- deliveries


def _last_outcome(delivery: dict[str, Any]) -> str:
    attempts = delivery.get("attempts") or []
    if not attempts:
        return "-"
    last = attempts[-1]
    return str(last.get("status_code") or last.get("error") or "-")


def _deliveries_table(rows: list[dict[str, Any]]) -> Table:
    table = Table("delivery_id", "status", "family", "target", "tries", "last", "created_at")
    table.columns[0].no_wrap = True
    table.columns[3].overflow = "fold"
    for row in rows:
        table.add_row(
            row.get("delivery_id", ""),
            row.get("status", ""),
            row.get("family") or "",
            row.get("target") or "",
            str(len(row.get("attempts") or [])),
            _last_outcome(row),
            row.get("created_at") or "",
        )
    return table


def _pages(client: Client, params: dict[str, Any], limit: int | None = None) -> Any:
    """Every delivery matching ``params``, page by page (``next_cursor``), oldest first."""
    cursor: str | None = None
    seen = 0
    while True:
        page = client.get("/deliveries", params={**params, "cursor": cursor})
        for row in page.get("deliveries", []):
            yield row
            seen += 1
            if limit is not None and seen >= limit:
                return
        cursor = page.get("next_cursor")
        if not cursor:
            return


class DeliveryStatus(StrEnum):
    pending = "pending"
    retrying = "retrying"
    delivered = "delivered"
    failed = "failed"
    skipped = "skipped"
    all = "all"


class ReplayStatus(StrEnum):
    failed = "failed"
    skipped = "skipped"


StatusOption = Annotated[DeliveryStatus, typer.Option(help="Which deliveries.")]
SinceOption = Annotated[
    str | None,
    typer.Option(
        metavar="WHEN",
        help="From this time: ISO 8601 with a zone, or 30m / 2h / 1d ago.",
        show_default=False,
    ),
]
UntilOption = Annotated[
    str | None,
    typer.Option(
        metavar="WHEN", help="Up to this time (same forms as --since).", show_default=False
    ),
]


@deliveries_app.command("list")
@guarded
def deliveries_list(
    ctx: typer.Context,
    status: StatusOption = DeliveryStatus.failed,
    since: SinceOption = None,
    until: UntilOption = None,
    family: Annotated[
        str | None,
        typer.Option(help="campaign, notification, scheduled or callnotify.", show_default=False),
    ] = None,
    target: Annotated[
        str | None, typer.Option(metavar="TARGET", help="A target id or URL.", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many rows.", min=1)] = 1000,
    tenant: TenantOption = None,
    url: UrlHere = None,
    key: KeyHere = None,
) -> None:
    """List deliveries, oldest first (failed ones unless --status says otherwise)."""
    state = _state(ctx, url, key)
    params = {
        "status": status.value,
        "since": when(since),
        "until": when(until),
        "family": family,
        "target": target,
        "tenant_id": tenant,
        "limit": min(limit, 1000),
    }
    rows = list(_pages(state.client(), params, limit))
    if state.json:
        _print_json({"deliveries": rows})
        return
    _out().print(_deliveries_table(rows))
    _out().print(
        f"{len(rows)} {'' if status is DeliveryStatus.all else status.value + ' '}delivery(ies)"
    )


@deliveries_app.command("show")
@guarded
def deliveries_show(
    ctx: typer.Context,
    delivery_id: Annotated[str, typer.Argument(metavar="ID", help="The delivery id.")],
    url: UrlHere = None,
    key: KeyHere = None,
) -> None:
    """Show one delivery and every attempt as a table."""
    state = _state(ctx, url, key)
    found = state.client().get(f"/deliveries/{delivery_id}")
    if state.json:
        _print_json(found)
        return
    out = _out()
    summary = Table(show_header=False, box=None)
    summary.add_column(style="bold")
    summary.add_column(overflow="fold")
    for name in (
        "delivery_id", "status", "family", "target", "event_id", "created_at", "next_attempt_at",
        "failure_reason", "replay_of", "replayed_by",
    ):  # fmt: skip
        if found.get(name):
            summary.add_row(name, str(found[name]))
    out.print(summary)
    attempts = Table("#", "at", "url", "status", "error", "ms", title="attempts")
    attempts.columns[2].overflow = "fold"
    for number, attempt in enumerate(found.get("attempts") or [], 1):
        attempts.add_row(
            str(number),
            attempt.get("at", ""),
            attempt.get("url", ""),
            str(attempt.get("status_code", "")),
            attempt.get("error", ""),
            str(attempt.get("duration_ms", "")),
        )
    if found.get("attempts"):
        out.print(attempts)
    else:
        out.print("no attempts yet")


# --------------------------------------------------------------------------- replay


@app.command()
@guarded
def replay(
    ctx: typer.Context,
    since: Annotated[
        str,
        typer.Option(
            metavar="WHEN", help="From this time: ISO 8601 with a zone, or 30m / 2h / 1d ago."
        ),
    ],
    until: Annotated[
        str, typer.Option(metavar="WHEN", help="Up to this time (same forms as --since).")
    ],
    status: Annotated[ReplayStatus, typer.Option(help="Which deliveries.")] = ReplayStatus.failed,
    tenant: TenantOption = None,
    url: UrlHere = None,
    key: KeyHere = None,
) -> None:
    """Replay the failed (or skipped) deliveries of a time range, with a progress bar.

    Each delivery is replayed once: a delivery already replayed is counted, not sent again,
    so an interrupted run (Ctrl-C) can simply be run again to finish.
    """
    state = _state(ctx, url, key)
    client = state.client()
    params = {
        "status": status.value,
        "since": when(since),
        "until": when(until),
        "tenant_id": tenant,
    }
    found = list(_pages(client, params))
    todo = [row for row in found if not row.get("replayed_by")]
    counts = {"replayed": 0, "already replayed": len(found) - len(todo), "refused": 0}
    problems: list[str] = []
    interrupted = False
    err = _err()
    progress = Progress(
        TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=False,
    )  # fmt: skip
    try:
        with progress:
            task = progress.add_task("replay", total=len(todo))
            for row in todo:
                try:
                    client.post(f"/deliveries/{row['delivery_id']}/replay", json={})
                    counts["replayed"] += 1
                except CliError as exc:
                    if "already_replayed" in exc.message:
                        counts["already replayed"] += 1
                    else:
                        counts["refused"] += 1
                        problems.append(f"{row['delivery_id']}: {exc.message}")
                progress.advance(task)
    except KeyboardInterrupt:
        interrupted = True
    done = sum(counts.values())
    left = len(found) - done
    summary = {"matched": len(found), **counts, "left": left, "interrupted": interrupted}
    if state.json:
        _print_json(summary)
    else:
        table = Table("matched", "replayed", "already replayed", "refused", "left", title="replay")
        table.add_row(
            *(
                str(summary[c])
                for c in ("matched", "replayed", "already replayed", "refused", "left")
            )
        )
        _out().print(table)
        for line in problems[:20]:
            _out().print(f"  {line}")
    if interrupted:
        err.print("interrupted: run the same command again to replay the rest")
        raise typer.Exit(130)
    if problems:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- tail


@app.command()
@guarded
def tail(
    ctx: typer.Context,
    since: SinceOption = None,
    interval: Annotated[float, typer.Option(help="Seconds between polls.", min=0.2)] = 2.0,
    family: Annotated[
        str | None,
        typer.Option(help="Only this family (campaign, notification, ...).", show_default=False),
    ] = None,
    tenant: TenantOption = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Stop after this many seconds (default: until Ctrl-C).", show_default=False
        ),
    ] = None,
    url: UrlHere = None,
    key: KeyHere = None,
) -> None:
    """Follow new deliveries and their outcomes as they happen (polls the API; Ctrl-C stops).

    New deliveries come from the list's cursor; each one not yet final is looked at again on
    every poll, so its retries and its end (delivered, failed, skipped) show up too.
    """
    state = _state(ctx, url, key)
    client = state.client()
    out = _out()
    start = when(since) or when("now")
    params: dict[str, Any] = {
        "status": "all",
        "since": start,
        "family": family,
        "tenant_id": tenant,
    }
    cursor: str | None = None
    seen: dict[str, tuple[str, int]] = {}
    open_ids: list[str] = []
    last_created = start
    deadline = None if timeout is None else time.monotonic() + timeout

    def show(row: dict[str, Any], new: bool) -> None:
        attempts = row.get("attempts") or []
        key = (row.get("status", ""), len(attempts))
        if seen.get(row["delivery_id"]) == key:
            return
        seen[row["delivery_id"]] = key
        if state.json:
            print(json.dumps(row), flush=True)
            return
        stamp = time.strftime("%H:%M:%S")
        what = "new" if new else "now"
        detail = f"attempt {len(attempts)}: {_last_outcome(row)}" if attempts else "queued"
        out.print(
            f"{stamp} {row['delivery_id']} {what} [bold]{row.get('status')}[/bold] "
            f"{row.get('family') or ''} -> {row.get('target') or ''} ({detail})"
        )

    if not state.json:
        out.print(f"following deliveries since {start} (Ctrl-C to stop)")
    try:
        while deadline is None or time.monotonic() < deadline:
            query = {**params, "cursor": cursor} if cursor else {**params, "since": last_created}
            page = client.get("/deliveries", params=query)
            for row in page.get("deliveries", []):
                fresh = row["delivery_id"] not in seen
                show(row, fresh)
                last_created = max(last_created or "", row.get("created_at") or "")
                if row.get("status") not in FINAL and row["delivery_id"] not in open_ids:
                    open_ids.append(row["delivery_id"])
            cursor = page.get("next_cursor") or None
            for delivery_id in list(open_ids):
                row = client.get(f"/deliveries/{delivery_id}", params={"tenant_id": None})
                show(row, False)
                if row.get("status") in FINAL:
                    open_ids.remove(delivery_id)
            if cursor and page.get("truncated"):
                continue  # more pages waiting: no sleep
            time.sleep(interval)
    except KeyboardInterrupt:
        pass


# --------------------------------------------------------------------------- profile


@profile_app.command("save")
@guarded
def profile_save(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Profile name.")] = "default",
) -> None:
    """Save --url and --key (given before the command) as a profile.

    Example: `ringback --url http://127.0.0.1:8000 --key rbk_... profile save`
    """
    state = _state(ctx)
    if not state.url and not state.key:
        raise CliError("nothing to save: give --url and/or --key before 'profile save'")
    path = save_profile(name, state.url, state.key)
    _out().print(f"saved profile {name!r} in {path}")


@profile_app.command("show")
@guarded
def profile_show(ctx: typer.Context) -> None:
    """Show the profiles of the profile file (keys masked) and what is in effect."""
    state = _state(ctx)
    table = Table("profile", "url", "key", title=str(config_path()))
    for name, values in read_profiles().items():
        key = values.get("key", "")
        table.add_row(name, values.get("url", ""), (key[:8] + "...") if key else "")
    out = _out()
    out.print(table)
    target = resolve(state.url, state.key, state.profile)
    masked = (target.key[:8] + "...") if target.key else "none"
    out.print(
        f"in effect: {target.url} (from {target.url_from}), key {masked} (from {target.key_from})"
    )


def run() -> None:
    """Console-script entry point: Click's own errors and ours as one line, never a traceback."""
    try:
        app(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
