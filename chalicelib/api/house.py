"""The house JSON style of the admin, events and campaign routes (the other families answer in
their seeds' own envelopes): refusals worded per area, and JSON-object bodies.

The wording is part of the API (the tenant matrix pins it), so each area names its own 403 and
404 texts; the 401 text is shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chalice.app import Request

from chalicelib.api.auth import QUERY_KEY_MESSAGE, Access, Denied, Reason, authenticate, authorize
from chalicelib.api.common import BadBody, json_object
from chalicelib.api.errors import ApiError, json_error
from chalicelib.domain.access import Need, Principal
from chalicelib.storage.quotas import QuotaExceeded

UNAUTHORIZED = "a valid API key is required"


@dataclass(frozen=True)
class Refusals:
    """One area's 401/403/404 answers, and the authentication steps that raise them."""

    forbidden: str
    not_found: str

    def error(self, status: int) -> ApiError:
        if status == 401:
            return json_error(401, "unauthorized", UNAUTHORIZED)
        if status == 403:
            return json_error(403, "forbidden", self.forbidden)
        return json_error(404, "not_found", self.not_found)

    def principal(self, request: Request) -> Principal:
        try:
            return authenticate(request)
        except Denied as exc:
            if exc.reason is Reason.QUERY_KEY:
                raise json_error(401, "unauthorized", QUERY_KEY_MESSAGE) from exc
            raise self.error(exc.status) from exc

    def access(self, principal: Principal, tenant_id: str, need: Need) -> Access:
        try:
            return authorize(principal, tenant_id, need)
        except Denied as exc:
            raise self.error(exc.status) from exc


def json_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object, or the house 400."""
    try:
        return json_object(request)
    except BadBody as exc:
        raise json_error(400, "invalid", str(exc), field=None) from exc


def quota_refusal(exc: QuotaExceeded) -> ApiError:
    """The house 429: ``{"error": "quota_exceeded", "message", "quota", "limit"}`` with
    ``Retry-After``."""
    error = json_error(429, "quota_exceeded", exc.message, quota=exc.quota, limit=exc.limit)
    error.response.headers["Retry-After"] = str(exc.retry_after)
    return error
