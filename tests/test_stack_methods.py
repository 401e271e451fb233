"""Any HTTP method, over ``make run``'s own HTTP server, gets the family's answer.

``http.server`` answers a bare ``501 Not Implemented`` for a method its handler has no
``do_<METHOD>`` for, before the app is asked; behind API Gateway the app answers. Every route of
the app, asked with methods it has no route for (``QUERY`` among them), must get its family's
405 body."""

from __future__ import annotations

import json
import re

import pytest
import requests

from app import app
from chalicelib.api.errors import renderer_for

pytestmark = pytest.mark.stack

METHODS = ("QUERY", "TRACE", "CONNECT", "PROPFIND", "LINK", "BREW")


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "0123456789abcdef01234567", path)


def test_every_route_answers_unknown_methods_with_its_familys_405(local_stack):
    checked = 0
    for path, routes in sorted(app.routes.items()):
        rendered = renderer_for(path)(405, "method_not_allowed", "").body
        expected = json.loads(rendered) if isinstance(rendered, str) else rendered
        for method in METHODS:
            if method in routes:
                continue
            response = requests.request(
                method, local_stack.base_url + _concrete(path), timeout=10, data=b"{}"
            )
            assert response.status_code == 405, (method, path, response.text)
            body = response.json()
            # the family's own shape: the same fields, the same code where it names one
            assert set(body) == set(expected), (method, path, body)
            for name in ("error", "errorCode", "success", "title"):
                if name in expected:
                    assert body[name] == expected[name], (method, path, body)
            checked += 1
    assert checked >= len(app.routes) * len(METHODS) - 10
