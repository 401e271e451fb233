"""JSON Schema building blocks for the OpenAPI document (OpenAPI 3.1 = JSON Schema 2020-12).

Small constructors so that the route catalogue (``openapi_catalog``) reads like the handlers'
rules: an enum is built from the tuple the validator checks against, a pattern from the regex the
validator matches with, a timestamp from the ``strftime`` format the views write with. Nothing here
knows about routes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

Schema = dict[str, Any]

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
XML = "application/xml"


def string(
    *,
    min_length: int | None = None,
    max_length: int | None = None,
    pattern: str | None = None,
    fmt: str | None = None,
    description: str | None = None,
) -> Schema:
    schema: Schema = {"type": "string"}
    if min_length is not None:
        schema["minLength"] = min_length
    if max_length is not None:
        schema["maxLength"] = max_length
    if pattern is not None:
        schema["pattern"] = pattern
    if fmt is not None:
        schema["format"] = fmt
    if description is not None:
        schema["description"] = description
    return schema


def integer(*, minimum: int | None = None, maximum: int | None = None) -> Schema:
    schema: Schema = {"type": "integer"}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


def boolean() -> Schema:
    return {"type": "boolean"}


def const(value: Any) -> Schema:
    return {"const": value}


def enum(values: Iterable[Any], *, description: str | None = None) -> Schema:
    listed = list(dict.fromkeys(values))
    schema: Schema = {"enum": listed}
    if all(isinstance(v, str) for v in listed):
        schema["type"] = "string"
    if description is not None:
        schema["description"] = description
    return schema


def nullable(schema: Schema) -> Schema:
    """``schema`` or JSON ``null`` (3.1 spelling: a type list, or anyOf when there is no type)."""
    kind = schema.get("type")
    if isinstance(kind, str) and "enum" not in schema and "const" not in schema:
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def array(items: Schema, *, max_items: int | None = None, min_items: int | None = None) -> Schema:
    schema: Schema = {"type": "array", "items": items}
    if max_items is not None:
        schema["maxItems"] = max_items
    if min_items is not None:
        schema["minItems"] = min_items
    return schema


def obj(
    properties: Mapping[str, Schema],
    *,
    required: Iterable[str] | None = None,
    closed: bool = True,
    description: str | None = None,
) -> Schema:
    """An object. ``required`` defaults to every property (views always write every key);
    ``closed`` forbids unknown keys (a response that grew a field breaks its schema, so a leaked
    secret or an internal attribute cannot slip out unnoticed)."""
    schema: Schema = {
        "type": "object",
        "properties": dict(properties),
        "required": list(properties if required is None else required),
    }
    if closed:
        schema["additionalProperties"] = False
    if description is not None:
        schema["description"] = description
    return schema


def any_object(description: str | None = None) -> Schema:
    schema: Schema = {"type": "object"}
    if description is not None:
        schema["description"] = description
    return schema


def one_of(*schemas: Schema) -> Schema:
    return {"oneOf": list(schemas)}


def regex(compiled: re.Pattern[str]) -> str:
    """The validator's own regex as an ECMA-262-compatible pattern string.

    Python's ``\\Z``/``\\A`` have no ECMA spelling; the validators here use ``^...$`` with
    ``match`` (anchored at the start), so the pattern is used as is, anchored on both ends.
    """
    source = compiled.pattern
    if not source.startswith("^"):
        source = "^" + source
    if not source.endswith("$"):
        source = source + "$"
    return source


def url_pattern(schemes: Iterable[str]) -> str:
    """``scheme://host...`` for the given schemes (matched case-insensitively, as the URL
    validators do), no whitespace anywhere and no credentials or fragment. The validators check
    more (hosts, ports, SSRF); this is the syntax a client can check before sending."""
    spelled = [
        "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else _ecma_escape(c) for c in scheme)
        for scheme in schemes
    ]
    return f"^(?:{'|'.join(spelled)})://[^\\s/?#@]+(?:[/?][^\\s#]*)?$"


_STRFTIME = {
    "%Y": r"\d{4}",
    "%m": r"\d{2}",
    "%d": r"\d{2}",
    "%H": r"\d{2}",
    "%M": r"\d{2}",
    "%S": r"\d{2}",
}


_ECMA_SPECIAL = frozenset(".^$*+?()[]{}|\\/")


def _ecma_escape(text: str) -> str:
    """Escape only ECMA-262 syntax characters (``re.escape`` also escapes ``-``, which is an
    invalid identity escape in unicode-mode ECMA regexes)."""
    return "".join("\\" + c if c in _ECMA_SPECIAL else c for c in text)


def prefix_pattern(prefix: str) -> str:
    """Strings starting with ``prefix`` (taken literally)."""
    return "^" + _ecma_escape(prefix)


def strftime_pattern(fmt: str) -> str:
    """A regex matching what ``datetime.strftime(fmt)`` writes (numeric directives only)."""
    out = []
    for token in re.split(r"(%[A-Za-z])", fmt):
        if not token:
            continue
        if token.startswith("%"):
            out.append(_STRFTIME[token])
        else:
            out.append(_ecma_escape(token))
    return "^" + "".join(out) + "$"


# --------------------------------------------------------------------------- XML renderings
#
# The scheduled API answers in XML on request (domain/scheduled_render.py). An XML document has
# no types, so its schema is the JSON schema seen through ``xml_value``: scalars become their
# text, a list becomes an element holding one child per item (a single child is not a list), a
# mapping of parameters becomes <parameter><key/><value/></parameter> children.


def xml_value(element: Any) -> Any:
    """An element as plain data: children by tag (repeated tags -> list), a leaf -> its text."""
    children = list(element)
    if not children:
        return element.text or ""
    value: dict[str, Any] = {}
    for child in children:
        item = xml_value(child)
        if child.tag in value:
            previous = value[child.tag]
            value[child.tag] = [*previous, item] if isinstance(previous, list) else [previous, item]
        else:
            value[child.tag] = item
    return value


def parse_xml_document(text: str | bytes) -> Any:
    """Parse with defusedxml (no DTDs, no entities) and return the root's ``xml_value``."""
    from defusedxml import ElementTree as SafeET

    return xml_value(SafeET.fromstring(text, forbid_dtd=True))


_EMPTY = {"const": ""}


def _scalar_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _one_or_many(item: Schema) -> Schema:
    return {"anyOf": [item, {"type": "array", "items": item, "minItems": 2}]}


def xml_shape(schema: Schema, key: str = "") -> Schema:
    """The schema ``xml_value`` of the XML rendering of a value valid against ``schema`` meets.

    ``key`` is the element's name: a list's items are named after it (``callbacks`` ->
    ``callback``), as scheduled_render writes them.
    """
    if "const" in schema:
        return {"const": _scalar_text(schema["const"])}
    if "enum" in schema:
        return {"enum": [_scalar_text(v) for v in schema["enum"]]}
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            return {"anyOf": [xml_shape(s, key) for s in schema[combinator]]}
    kind = schema.get("type")
    if isinstance(kind, list):
        return {"anyOf": [xml_shape({**schema, "type": k}, key) for k in kind]}
    if kind == "null":
        return dict(_EMPTY)
    if kind == "boolean":
        return {"enum": ["true", "false"]}
    if kind in ("integer", "number"):
        return {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"}
    if kind == "string":
        return {k: v for k, v in schema.items() if k in ("type", "pattern", "maxLength")}
    if kind == "array":
        item_name = key[:-1] if len(key) > 1 and key.endswith("s") else "item"
        items = xml_shape(schema.get("items", {}), item_name)
        holder: Schema = {
            "type": "object",
            "properties": {item_name: _one_or_many(items)},
            "required": [item_name],
            "additionalProperties": False,
        }
        return {"anyOf": [dict(_EMPTY), holder]}
    if kind == "object" and "properties" not in schema:
        if "additionalProperties" in schema:  # a str -> str map: <parameter> children
            pair: Schema = {
                "type": "object",
                "properties": {"key": {"type": "string"}, "value": {"type": "string"}},
                "required": ["key", "value"],
            }
            params: Schema = {
                "type": "object",
                "properties": {"parameter": _one_or_many(pair)},
                "required": ["parameter"],
                "additionalProperties": False,
            }
            return {"anyOf": [dict(_EMPTY), params]}
        return {}
    if kind == "object":
        shaped: Schema = {
            "type": "object",
            "properties": {name: xml_shape(s, name) for name, s in schema["properties"].items()},
            "required": list(schema.get("required", [])),
        }
        if schema.get("additionalProperties") is False:
            shaped["additionalProperties"] = False
        return shaped
    return {}
