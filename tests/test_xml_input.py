"""No route takes XML input, and XML sent anyway is refused unparsed (issue 8's XXE clause).

Ringback writes XML (scheduled ``response_format=xml``, callnotify POSTXML1/2, campaign
``application/xml`` deliveries) but reads none: every body-taking route accepts JSON (and the
scheduled create a form). An XXE or entity-expansion payload therefore never reaches a parser:
with an XML Content-Type it is a 415, labelled as JSON it is a 400, always in the family's own
error body and never echoing an expanded entity. Anything parsed from XML in this codebase (the
tests' receivers, the OpenAPI XML checks) goes through defusedxml, proven last below.
"""

from __future__ import annotations

import json

import pytest
from defusedxml import DTDForbidden, EntitiesForbidden
from jsonschema import Draft202012Validator

from chalicelib.api.openapi_schema import parse_xml_document

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<r><name>&xxe;</name><url>&xxe;</url></r>"""
LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<lolz>&lol3;</lolz>"""
PAYLOADS = {"xxe": XXE, "billion-laughs": LAUGHS}


def _body_routes() -> list[tuple[str, str]]:
    from app import app

    return sorted(
        (method, path)
        for path, methods in app.routes.items()
        for method in methods
        if method in ("POST", "PUT")
    )


def _fill(path: str, tenant_id: str) -> str:
    for name in ("company_id", "customer_id", "tenant_id"):
        path = path.replace("{" + name + "}", tenant_id)
    for name in ("callback_id", "notify_id", "delivery_id"):
        path = path.replace("{" + name + "}", "0" * 24)
    return path.replace("{callback_name}", "cb").replace("{name}", "sub")


def test_no_route_documents_an_xml_request_body():
    from chalicelib.api.openapi_catalog import catalogue

    for key, op in catalogue().items():
        if op.request is not None:
            assert not any("xml" in media for media in op.request.media_types), key


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
@pytest.mark.parametrize("content_type", ["application/xml", "text/xml", "application/json"])
def test_xml_bodies_are_refused_unparsed_on_every_route(client, make_tenant, payload, content_type):
    from app import app
    from chalicelib.api.openapi import document_for

    document = document_for(app)
    owner = make_tenant("OWNER")
    headers = {"Authorization": f"Bearer {owner.key}", "Content-Type": content_type}
    for method, path in _body_routes():
        response = client.http.request(
            method, _fill(path, owner.tenant_id), headers=headers, body=PAYLOADS[payload]
        )
        label = f"{method} {path} ({content_type})"
        assert 400 <= response.status_code < 500, (label, response.status_code, response.body)
        text = response.body.decode("utf-8", "replace")
        assert "root:" not in text and "lollol" not in text, label
        documented = document["paths"][path][method.lower()]["responses"]
        assert str(response.status_code) in documented, (label, response.status_code)
        schema = documented[str(response.status_code)]["content"]["application/json"]["schema"]
        assert Draft202012Validator(schema).is_valid(json.loads(text)), (label, text)


def test_what_we_do_parse_as_xml_refuses_entities_and_dtds():
    with pytest.raises((DTDForbidden, EntitiesForbidden)):
        parse_xml_document(XXE)
    with pytest.raises((DTDForbidden, EntitiesForbidden)):
        parse_xml_document(LAUGHS)
    assert parse_xml_document(b"<response><success>1</success></response>") == {"success": "1"}
