"""Response bodies of the Scheduled callbacks API, in the seed's JSON and XML shapes.

Handlers build a payload with :func:`success` or :func:`error` and hand it to :func:`render` with
the ``response_format`` the client chose (``scheduled.parse_response_format``). Both formats are
produced from the same mapping, so they cannot disagree.

JSON is compact, keys in the seed's order::

    {"success":1,"api_function":"create","api_call_parameters":{"k":"v"},"callback_id":"..."}
    {"success":0,"error":"callback_time_expired"}

XML is the seed's document. Its ``<response>`` children follow the payload's key order except that
``api_function`` comes first (the seed puts it before ``success`` in XML only). Mapping rules:

* ``api_call_parameters`` (a str -> str mapping, keys are arbitrary client text) becomes
  ``<parameter><key>k</key><value>v</value></parameter>`` per entry, as in the seed.
* Any other mapping (e.g. a ``callback`` object for retrieve) becomes nested elements named after
  its keys, which must therefore be valid XML names.
* A list or tuple becomes one child element per item, named after the list's key without its
  trailing ``s`` (``callbacks`` -> ``<callback>``), or ``<item>`` for a key not ending in ``s``.
* ``None`` and ``""`` are empty elements, booleans ``true``/``false`` (as in JSON), numbers their
  decimal form, datetimes ``YYYY-MM-DDTHH:MM:SSZ`` in UTC (in JSON too).

The XML is built with ``xml.etree.ElementTree``, never by string concatenation, so ``<&>`` in a
value are escaped. Characters XML 1.0 cannot carry at all (most C0 controls, lone surrogates) are
replaced by U+FFFD; a carriage return is written as ``&#13;`` so it survives parsing.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET  # only to *build* XML; anything we parse goes via defusedxml
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

JSON_CONTENT_TYPE = "application/json"
XML_CONTENT_TYPE = "application/xml"
XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
PARAMETERS_KEY = "api_call_parameters"
LIST_ITEM_FALLBACK = "item"

Format = Literal["json", "xml"]


def success(api_function: str, params: Mapping[str, str], **extra: Any) -> dict[str, Any]:
    """A success payload: ``success``, ``api_function``, ``api_call_parameters``, then ``extra``.

    ``params`` must already exclude ``api_key`` (``CreateRequest.api_call_parameters`` does).
    ``extra`` keeps its keyword order, e.g. ``success("create", p, callback_id=cid)``.
    """
    payload: dict[str, Any] = {
        "success": 1,
        "api_function": api_function,
        PARAMETERS_KEY: dict(params),
    }
    payload.update(extra)
    return payload


def error(key: str) -> dict[str, Any]:
    """An error payload: ``{"success": 0, "error": key}``."""
    return {"success": 0, "error": key}


def render(payload: Mapping[str, Any], fmt: Format) -> tuple[str, str]:
    """``(body, content_type)`` of ``payload`` in ``fmt`` (``"json"`` or ``"xml"``)."""
    if fmt == "json":
        return _render_json(payload), JSON_CONTENT_TYPE
    if fmt == "xml":
        return _render_xml(payload), XML_CONTENT_TYPE
    raise ValueError(f"unknown response format {fmt!r}")


# --------------------------------------------------------------------------- values

_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
_NOT_XML_CHAR = re.compile(r"[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_XML_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def _format_datetime(value: datetime) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("datetimes in a response must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _plain(value: Any) -> Any:
    """JSON-ready copy: mappings/lists recursed, datetimes formatted, lone surrogates replaced
    (they cannot be encoded as UTF-8, and the body goes out as UTF-8)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, datetime):
        return _format_datetime(value)
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if value is None or isinstance(value, bool | int | float):
        return value
    raise TypeError(f"cannot render {type(value).__name__} in a response")


def _render_json(payload: Mapping[str, Any]) -> str:
    return json.dumps(_plain(payload), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# --------------------------------------------------------------------------- XML


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return _format_datetime(value)
    if isinstance(value, str | int | float):
        return _NOT_XML_CHAR.sub("\ufffd", str(value))
    raise TypeError(f"cannot render {type(value).__name__} in a response")


def _element(parent: ET.Element, name: str) -> ET.Element:
    if not _XML_NAME.fullmatch(name) or name.lower().startswith("xml"):
        raise ValueError(f"{name!r} is not usable as an XML element name")
    return ET.SubElement(parent, name)


def _list_item_name(key: str) -> str:
    return key[:-1] if len(key) > 1 and key.endswith("s") else LIST_ITEM_FALLBACK


def _append(parent: ET.Element, name: str, value: Any) -> None:
    node = _element(parent, name)
    if name == PARAMETERS_KEY and isinstance(value, Mapping):
        for key, item in value.items():
            parameter = ET.SubElement(node, "parameter")
            ET.SubElement(parameter, "key").text = _text(str(key))
            ET.SubElement(parameter, "value").text = _text(item)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _append(node, str(key), item)
    elif isinstance(value, list | tuple):
        child = _list_item_name(name)
        for item in value:
            _append(node, child, item)
    else:
        node.text = _text(value)


def _render_xml(payload: Mapping[str, Any]) -> str:
    root = ET.Element("response")
    keys = list(payload)
    if "api_function" in keys:
        keys.remove("api_function")
        keys.insert(0, "api_function")
    for key in keys:
        _append(root, key, payload[key])
    ET.indent(root, space="    ")
    body = ET.tostring(root, encoding="unicode", short_empty_elements=False)
    # Indentation only ever adds "\n", so every "\r" here came from a value: keep it parseable.
    return XML_DECLARATION + body.replace("\r", "&#13;")
