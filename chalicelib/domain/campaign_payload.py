"""What a campaign callback carries, in the registration's method and content type.

The body is one flat object: ``event_id``, ``event_type``, ``callback_type`` (``event``, or
``test`` for the test endpoint), ``event_date``, ``delivery_attempt``, then the event's payload
fields (they cannot override the five above). JSON is sent as is; XML as ``<callback>`` with one
element per field (nested values as JSON text); form and GET flatten the same way.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlencode
from xml.etree import ElementTree as ET

_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


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
        return None, [(k, _flat(v)) for k, v in data.items()], {}
    if content_type == "application/json":
        body = json.dumps(data, separators=(",", ":")).encode()
    elif content_type in ("application/xml", "text/xml"):
        root = ET.Element("callback")
        for key, value in data.items():
            child = ET.SubElement(root, key if _XML_NAME.match(key) else "field")
            if not _XML_NAME.match(key):
                child.set("name", key)
            child.text = "" if value is None else _flat(value)
        body = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    else:
        body = urlencode([(k, _flat(v)) for k, v in data.items()]).encode()
    return body, None, {"Content-Type": content_type}
