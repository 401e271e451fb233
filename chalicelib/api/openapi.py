"""``GET /openapi.json``: the OpenAPI 3.1 document of every route, generated, never hand-written.

Two sources, so the document cannot drift from the code:

* the Chalice route table (``app.routes``) gives every path, method and path parameter;
* the catalogue (``openapi_catalog.CATALOGUE``) gives, per ``(method, path)``, the request and
  response schemas, built from the constants and regexes the handlers validate with, and the
  error statuses, rendered in the family's own error body.

A route without a catalogue entry is an error (``MissingDescription``) and a test walks
``app.routes`` to prove every route has one; the fuzz test (tests/test_fuzz.py) sends generated
requests to every operation and fails on any response the document does not describe.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chalice import Blueprint, Chalice

from chalicelib.api.openapi_schema import JSON, Schema

bp = Blueprint(__name__)

OPENAPI_VERSION = "3.1.0"
TITLE = "Ringback"
VERSION = "1.0.0"
CHALICE_ERROR_STATUSES = (415, 500)
"""Every operation may answer these in its family's body: the error middleware renders Chalice's
own 415 (a Content-Type the route does not accept) and any unexpected exception (500, no
traceback). The fuzz run proves no request actually gets a 500."""

SECURITY_SCHEMES: dict[str, Schema] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer <key> (a tenant key rbk_..., or the admin key)",
    },
    "bareKey": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "Authorization: <key> without the Bearer prefix",
    },
    "queryKey": {
        "type": "apiKey",
        "in": "query",
        "name": "api_key",
        "description": "?api_key=<key>: the scheduled API only (its seed's spelling)",
    },
}
KEYED: list[dict[str, list[str]]] = [{"bearer": []}, {"bareKey": []}]


class MissingDescription(LookupError):
    """A route in ``app.routes`` has no catalogue entry."""


@dataclass(frozen=True)
class Param:
    """A query or header parameter."""

    name: str
    schema: Schema
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Body:
    """A request or response body: one schema, offered under one or more media types."""

    schema: Schema
    description: str = ""
    media_types: tuple[str, ...] = (JSON,)
    headers: Mapping[str, Schema] = field(default_factory=dict)
    media_schemas: Mapping[str, Schema] = field(default_factory=dict)
    """Per media type overrides of ``schema`` (e.g. an XML rendering with its own shape)."""


@dataclass(frozen=True)
class Family:
    """An API family: its tag, how it spells errors and what its path parameters look like."""

    tag: str
    description: str
    errors: Mapping[int, Body]
    """Every error status the family renders, with its body (``errors.register_family``)."""
    path_params: Mapping[str, Schema]
    security: list[dict[str, list[str]]] = field(default_factory=lambda: list(KEYED))


@dataclass(frozen=True)
class Operation:
    """What the catalogue says about one (method, path) of the route table."""

    family: Family
    summary: str
    responses: Mapping[int, Body]
    errors: tuple[int, ...] = ()
    request: Body | None = None
    request_required: bool = False
    query: tuple[Param, ...] = ()
    headers: tuple[Param, ...] = ()
    public: bool = False
    description: str = ""

    def error_statuses(self) -> tuple[int, ...]:
        return tuple(sorted({*self.errors, *CHALICE_ERROR_STATUSES}))


Catalogue = Mapping[tuple[str, str], Operation]


def _content(body: Body) -> dict[str, Any]:
    return {
        media: {"schema": body.media_schemas.get(media, body.schema)} for media in body.media_types
    }


def _response(body: Body, fallback: str) -> dict[str, Any]:
    response: dict[str, Any] = {"description": body.description or fallback}
    if body.media_types:  # an empty tuple: no body (204)
        response["content"] = _content(body)
    if body.headers:
        response["headers"] = {
            name: {"schema": schema, "required": True} for name, schema in body.headers.items()
        }
    return response


def _parameter(param: Param, location: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": param.name,
        "in": location,
        "required": param.required,
        "schema": param.schema,
    }
    if param.description:
        spec["description"] = param.description
    return spec


def _operation_id(family: Family, view_name: str, method: str, shared: bool) -> str:
    base = f"{family.tag}_{view_name}"
    return f"{base}_{method.lower()}" if shared else base


def describe(
    method: str, path: str, view_args: list[str], view_name: str, op: Operation, shared: bool
) -> dict[str, Any]:
    """One OpenAPI operation object."""
    params = []
    for name in view_args:
        schema = op.family.path_params.get(name)
        if schema is None:
            raise MissingDescription(f"{method} {path}: no schema for path parameter {name}")
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    params += [_parameter(p, "query") for p in op.query]
    params += [_parameter(p, "header") for p in op.headers]
    responses: dict[str, Any] = {
        str(status): _response(body, "success") for status, body in sorted(op.responses.items())
    }
    for status in op.error_statuses():
        body = op.family.errors.get(status)
        if body is None:
            raise MissingDescription(f"{op.family.tag} has no error body for status {status}")
        responses[str(status)] = _response(body, f"error ({status})")
    spec: dict[str, Any] = {
        "operationId": _operation_id(op.family, view_name, method, shared),
        "tags": [op.family.tag],
        "summary": op.summary,
        "parameters": params,
        "responses": responses,
        "security": [] if op.public else op.family.security,
    }
    if op.description:
        spec["description"] = op.description
    if op.request is not None:
        spec["requestBody"] = {"required": op.request_required, "content": _content(op.request)}
        if op.request.description:
            spec["requestBody"]["description"] = op.request.description
    return spec


def build_document(app: Chalice, catalogue: Catalogue) -> dict[str, Any]:
    """The whole document for ``app``; raises ``MissingDescription`` for an undescribed route."""
    paths: dict[str, dict[str, Any]] = {}
    tags: dict[str, str] = {}
    for path in sorted(app.routes):
        methods = app.routes[path]
        views = [entry.view_name for entry in methods.values()]
        for method in sorted(methods):
            entry = methods[method]
            op = catalogue.get((method, path))
            if op is None:
                raise MissingDescription(f"{method} {path} has no entry in the OpenAPI catalogue")
            shared = views.count(entry.view_name) > 1
            paths.setdefault(path, {})[method.lower()] = describe(
                method, path, list(entry.view_args), entry.view_name, op, shared
            )
            tags.setdefault(op.family.tag, op.family.description)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": TITLE,
            "version": VERSION,
            "description": "Ringback callback service. Generated from the route table and the "
            "handlers' own validation rules (chalicelib/api/openapi_catalog.py).",
        },
        "tags": [{"name": name, "description": text} for name, text in sorted(tags.items())],
        "paths": paths,
        "components": {"securitySchemes": copy.deepcopy(SECURITY_SCHEMES)},
    }


_cache: dict[int, dict[str, Any]] = {}
_lock = threading.Lock()


def document_for(app: Chalice) -> dict[str, Any]:
    """The app's document, built once per process (the route table does not change at run time)."""
    with _lock:
        found = _cache.get(id(app))
        if found is None:
            from chalicelib.api.openapi_catalog import catalogue

            found = build_document(app, catalogue())
            _cache[id(app)] = found
        return found


@bp.route("/openapi.json", methods=["GET"])
def openapi_json() -> dict[str, Any]:
    return document_for(bp.current_app)
