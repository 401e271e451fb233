"""What a campaign callback carries, in the registration's method and content type.

The body is one flat object: ``event_id``, ``event_type``, ``callback_type`` (``event``, or
``test`` for the test endpoint), ``event_date``, ``delivery_attempt``, then the event's payload
fields (they cannot override the five above). JSON is sent as is; XML as ``<callback>`` with one
element per field (nested values as JSON text); form and GET flatten the same way.

Every XML body parses (issue 13): payload keys and values may hold characters XML 1.0 cannot
carry at all, not even as character references (most C0 controls, lone surrogates, U+FFFE and
U+FFFF). Each such character becomes U+FFFD, the replacement character, in element text and in
the ``name`` attribute, so a receiver sees that something was there. Markup characters are
escaped by ElementTree as usual. Lone surrogates cannot be encoded as UTF-8 either, so the form
and GET encodings replace them the same way (JSON escapes them as ``\\u`` sequences).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlencode
from xml.etree import ElementTree as ET

_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def xml_safe(text: str) -> str:
    """``text`` with every character XML 1.0 forbids replaced by U+FFFD."""
    return _NOT_XML_CHAR.sub(REPLACEMENT, text)


def _encodable(text: str) -> str:
    """``text`` with lone surrogates (which UTF-8 cannot encode) replaced by U+FFFD."""
    return _LONE_SURROGATE.sub(REPLACEMENT, text)


def fields(content: dict[str, Any], attempt_no: int) -> dict[str, Any]:
    event = content["event"]
    base: dict[str, Any] = {
        "event_id": event["event_id"],
        "event_type": event["event_type"],
        "callback_type": "test" if event.get("test") else "event",
        "event_date": event["received_at"],
        "delivery_attempt": attempt_no,
    }
    if event.get("campaign_id"):
        base["campaign_id"] = event["campaign_id"]
    payload = event.get("payload") or {}
    return {**{k: v for k, v in payload.items() if k not in base}, **base}


def _flat(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def render(
    data: dict[str, Any], method: str, content_type: str
) -> tuple[bytes | None, list[tuple[str, str]] | None, dict[str, str]]:
    """(body, query params, headers) for one attempt."""
    if method == "GET":
        return None, [(_encodable(k), _encodable(_flat(v))) for k, v in data.items()], {}
    if content_type == "application/json":
        body = json.dumps(data, separators=(",", ":")).encode()
    elif content_type in ("application/xml", "text/xml"):
        root = ET.Element("callback")
        for key, value in data.items():
            child = ET.SubElement(root, key if _XML_NAME.match(key) else "field")
            if not _XML_NAME.match(key):
                child.set("name", xml_safe(key))
            child.text = "" if value is None else xml_safe(_flat(value))
        body = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    else:
        body = urlencode([(_encodable(k), _encodable(_flat(v))) for k, v in data.items()]).encode()
    return body, None, {"Content-Type": content_type}
