"""``GET /openapi.json``: a valid OpenAPI 3.1 document that covers the route table exactly and
takes its enums from the validators (the fuzz run, tests/test_fuzz.py, checks the rest)."""

from __future__ import annotations

import json
import re

import pytest
from chalice import Blueprint, Chalice
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from chalicelib.api import openapi
from chalicelib.api.openapi_catalog import catalogue
from chalicelib.api.openapi_schema import parse_xml_document, xml_shape


@pytest.fixture
def document(client):
    response = client.http.get("/openapi.json")
    assert response.status_code == 200
    return json.loads(response.body)


def _routes():
    from app import app

    return {(m, path): entry for path, ms in app.routes.items() for m, entry in ms.items()}


def test_the_served_document_is_valid_openapi_3_1(document):
    assert document["openapi"].startswith("3.1.")
    validate(document, cls=OpenAPIV31SpecValidator)


def test_no_key_is_needed_to_read_it(client):
    assert client.http.get("/openapi.json").status_code == 200
    assert client.http.get("/health").status_code == 200


def test_every_route_is_in_the_document_with_its_path_parameters(document):
    routes = _routes()
    documented = {
        (method.upper(), path): spec
        for path, item in document["paths"].items()
        for method, spec in item.items()
    }
    assert set(documented) == set(routes)
    for key, entry in routes.items():
        spec = documented[key]
        path_params = [p["name"] for p in spec["parameters"] if p["in"] == "path"]
        assert path_params == list(entry.view_args), key
        assert spec["responses"], key
        assert "500" in spec["responses"] and "415" in spec["responses"], key


def test_every_route_has_a_catalogue_entry_and_no_entry_is_stale():
    routes = _routes()
    described = catalogue()
    assert sorted(set(routes) - set(described)) == [], "routes without an OpenAPI description"
    assert sorted(set(described) - set(routes)) == [], "descriptions of routes that do not exist"


def test_a_route_without_a_description_fails_the_build():
    app = Chalice(app_name="scratch")
    bp = Blueprint(__name__)

    @bp.route("/health", methods=["GET"])
    def health() -> dict[str, str]:
        return {}

    @bp.route("/undescribed/{thing}", methods=["PUT"])
    def undescribed(thing: str) -> dict[str, str]:
        return {}

    app.register_blueprint(bp)
    with pytest.raises(openapi.MissingDescription, match=re.escape("PUT /undescribed/{thing}")):
        openapi.build_document(app, catalogue())


def test_documented_request_media_types_are_ones_the_route_accepts():
    routes = _routes()
    for key, op in catalogue().items():
        if op.request is not None:
            assert set(op.request.media_types) <= set(routes[key].content_types), key


def test_error_bodies_are_each_familys_own_shape(document):
    paths = document["paths"]

    def schema(path, method, status, media="application/json"):
        return paths[path][method]["responses"][status]["content"][media]["schema"]

    campaign = schema("/companies/{company_id}/campaigns/config/callbacks", "post", "409")
    assert set(campaign["required"]) == {"error", "message"}
    notification = schema("/rest/api/v1.3/notifications/callbacks", "post", "400")
    assert notification["required"] == ["type", "title", "errorCode", "detail", "errorDetails"]
    assert set(notification["properties"]["errorCode"]["enum"]) == {
        "INVALID_PARAMETER",
        "INVALID_FIELD_NAME",
    }
    callnotify = schema("/customer/{customer_id}/callnotify", "post", "422")
    assert set(callnotify["properties"]["error"]["enum"]) == {
        "method",
        "selection",
        "url",
        "rate_limit",
        "max_in_flight",
    }
    scheduled = schema("/api/1.0/create", "get", "409")
    assert scheduled["properties"]["success"] == {"const": 0}
    assert scheduled["properties"]["error"]["enum"] == ["callback_already_exists"]
    assert "application/xml" in paths["/api/1.0/create"]["get"]["responses"]["409"]["content"]


def test_enums_are_the_validators_own_tuples(document):
    from chalicelib.domain import callnotify, campaign, notification, scheduled
    from chalicelib.domain.access import Role

    paths = document["paths"]

    def body(path, method):
        content = paths[path][method]["requestBody"]["content"]
        return next(iter(content.values()))["schema"]["properties"]

    create = body("/companies/{company_id}/campaigns/config/callbacks", "post")
    assert create["destination_method"]["enum"] == list(campaign.METHODS)
    assert create["content_type"]["enum"] == list(campaign.CONTENT_TYPES)
    sub = body("/rest/api/v1.3/notifications/subscriptions", "post")
    assert sub["eventNames"]["items"]["enum"] == list(notification.EVENT_NAMES)
    callback = body("/rest/api/v1.3/notifications/callbacks", "post")
    assert callback["batchSize"]["maximum"] == notification.MAX_BATCH_SIZE
    notifier = body("/customer/{customer_id}/callnotify", "post")
    assert notifier["method"]["enum"] == list(callnotify.METHODS)
    assert notifier["selection"]["enum"] == list(callnotify.SELECTIONS)
    keys = body("/admin/tenants/{tenant_id}/keys", "post")
    assert keys["role"]["enum"] == list(Role.__members__)
    query = {p["name"]: p["schema"] for p in paths["/api/1.0/create"]["get"]["parameters"]}
    assert query["callback_repeat_interval_unit"]["enum"] == list(scheduled.UNITS)
    assert query["callback_repeat_type"]["enum"] == list(scheduled.REPEAT_TYPES)


def test_xml_renderings_are_checked_against_the_json_schema_seen_as_xml():
    from chalicelib.domain import scheduled_render as render

    error_schema = {
        "type": "object",
        "properties": {"success": {"const": 0}, "error": {"enum": ["callback_not_found"]}},
        "required": ["success", "error"],
        "additionalProperties": False,
    }
    shape = Draft202012Validator(xml_shape(error_schema))
    good, _ = render.render(render.error("callback_not_found"), "xml")
    assert shape.is_valid(parse_xml_document(good))
    wrong, _ = render.render(render.error("api_key_absent"), "xml")
    assert not shape.is_valid(parse_xml_document(wrong))

    listing = {
        "type": "object",
        "properties": {
            "api_call_parameters": {"type": "object", "additionalProperties": {"type": "string"}},
            "callbacks": {"type": "array", "items": {"type": "integer"}},
        },
        "required": ["api_call_parameters", "callbacks"],
    }
    validator = Draft202012Validator(xml_shape(listing))
    for params, items in (({}, []), ({"a": "1"}, [1]), ({"a": "1", "b": "2"}, [1, 2])):
        text, _ = render.render({"api_call_parameters": params, "callbacks": items}, "xml")
        assert validator.is_valid(parse_xml_document(text)), text
    text, _ = render.render({"api_call_parameters": {}, "callbacks": ["x"]}, "xml")
    assert not validator.is_valid(parse_xml_document(text))


def test_the_document_is_built_once_per_process(client):
    from app import app

    assert openapi.document_for(app) is openapi.document_for(app)
