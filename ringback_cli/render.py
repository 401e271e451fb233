"""Pretty-printing what a receiver gets: bodies by content type, query strings, headers."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from rich.console import RenderableType
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text


def pairs_table(title: str, pairs: list[tuple[str, str]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None, pad_edge=False)
    table.add_column("name", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in pairs:
        table.add_row(name, value)
    return table


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _pretty_xml(body: bytes) -> str:
    from defusedxml import minidom

    pretty = minidom.parseString(body).toprettyxml(indent="  ")
    return "\n".join(line for line in pretty.splitlines() if line.strip())


def body_renderable(body: bytes, content_type: str | None) -> tuple[str, RenderableType]:
    """(what the body was read as, how to show it): JSON, XML, form or text."""
    kind = media_type(content_type)
    if not body:
        return "empty", Text("(no body)", style="dim")
    text = body.decode("utf-8", errors="replace")
    if kind == "application/json" or kind.endswith("+json") or (not kind and text[:1] in "[{"):
        try:
            return "JSON", Syntax(json.dumps(json.loads(body), indent=2), "json", word_wrap=True)
        except ValueError:
            return "invalid JSON", Text(text)
    if kind in ("application/xml", "text/xml") or kind.endswith("+xml"):
        try:
            return "XML", Syntax(_pretty_xml(body), "xml", word_wrap=True)
        except Exception:  # any parse failure: show the raw text
            return "invalid XML", Text(text)
    if kind == "application/x-www-form-urlencoded":
        return "form", pairs_table("form fields", parse_qsl(text, keep_blank_values=True))
    if kind.startswith("text/") or text.isprintable() or "\n" in text:
        return "text", Text(text)
    return f"{len(body)} bytes", Text(body[:256].hex(" "), style="dim")


def line_renderable(line: bytes) -> RenderableType:
    """One TCP line or UDP datagram: JSON when it parses, text otherwise."""
    kind, shown = body_renderable(line.strip(), "application/json")
    return shown if kind == "JSON" else Text(line.decode("utf-8", errors="replace"))


def as_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False)
