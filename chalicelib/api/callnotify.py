"""Callnotify API (seed ``api:customer:callnotify-create``): ``/customer/{CUSTOMER_ID}/callnotify``.

``GET`` lists, ``POST`` creates; ``/customer/{CUSTOMER_ID}/callnotify/{CALL_NOTIFY_ID}`` ``GET``
shows one, ``POST`` (and ``PUT``) updates, ``DELETE`` deletes; ``POST`` on
``.../{CALL_NOTIFY_ID}/secret/rotate`` rotates the signing secret. Items are
``{"_id", "url", "method", "selection"}`` plus ``disabled_reason`` when the receiver answered
410 Gone, and ``signing_secret`` once, in the create response (a new one in each rotate response).

Every error this prefix can produce is ``{"error": CODE, "message": MESSAGE}`` with the seed's
status and code; the family renderer registered below puts Chalice's own 405/415 and unexpected
exceptions (500 ``internal_error``, never a traceback) in that shape too.

Choices where the seed is silent (docs/callnotify-api.md lists them all):

* Access: the seed lets VIEWER create, so every operation of this family needs only
  ``Need.READ`` on the customer (VIEWER, MANAGER, OWNER of the customer; RESELLER of its parent;
  ADMIN). A key of another customer gets 403 ``access_denied``.
* An unknown customer is 404 ``customer`` for ADMIN and for RESELLER keys; others get 403.
* A missing or unknown key is 401 ``unauthorized`` (the seed has no row for it; 403 would tell
  a client with a typo'd key that its key is valid but weak).
* A body that is not valid JSON is 400 ``invalid_body``; valid JSON that is not an object is
  treated as an empty object (so a create reports the missing ``url``).
"""

from __future__ import annotations

import logging
from typing import Any

from chalice import Blueprint, Response

from chalicelib import settings
from chalicelib.api.auth import (
    QUERY_KEY_MESSAGE,
    Access,
    Denied,
    Reason,
    authenticate,
    authorize,
)
from chalicelib.api.common import BadBody, json_object
from chalicelib.api.errors import ApiError, register_family
from chalicelib.domain import callnotify as rules
from chalicelib.domain.access import Need, Role
from chalicelib.domain.callnotify import CallnotifyError
from chalicelib.domain.callnotify_url import CallnotifyUrlError, validate_callnotify_url
from chalicelib.domain.ids import is_id
from chalicelib.domain.timeutil import utcnow
from chalicelib.storage import callnotify as store
from chalicelib.storage import tenants
from chalicelib.storage.quotas import QuotaExceeded

log = logging.getLogger("ringback.api.callnotify")

bp = Blueprint(__name__)

PREFIX = "/customer/"
BASE = "/customer/{customer_id}/callnotify"
ITEM = BASE + "/{notify_id}"
MAX_URL_LENGTH = 2048

UNAUTHORIZED = ("unauthorized", "A valid API key is required")
INVALID_BODY = ("invalid_body", "The request body is not valid JSON")
QUOTA_EXCEEDED = "quota_exceeded"  # 429, with Retry-After

# Every operation of the family needs only READ: the seed lets a VIEWER create (see module doc).
NEED = Need.READ


def _fail(error: CallnotifyError) -> ApiError:
    return ApiError(Response(body=error.body(), status_code=error.status))


def _response(status: int, code: str, message: str) -> ApiError:
    return ApiError(Response(body={"error": code, "message": message}, status_code=status))


def render_error(status: int, code: str, message: str) -> Response:
    """Errors the middleware renders for this prefix (Chalice's 405/415, unexpected crashes)."""
    if status >= 500:
        return Response(body=rules.internal_error().body(), status_code=500)
    return Response(body={"error": code, "message": message}, status_code=status)


register_family(PREFIX, render_error)


# --------------------------------------------------------------------------- access


def _access(customer_id: str) -> Access:
    """Authenticate and authorize for the customer, answering with the family's error rows."""
    request = bp.current_request
    try:
        principal = authenticate(request)
    except Denied as exc:
        if exc.reason is Reason.QUERY_KEY:  # the family's 401, saying where the key goes
            raise _response(401, UNAUTHORIZED[0], QUERY_KEY_MESSAGE) from exc
        raise _response(401, *UNAUTHORIZED) from exc
    try:
        return authorize(principal, customer_id, NEED)
    except Denied as exc:
        if exc.reason is Reason.NO_TENANT:
            raise _fail(rules.customer_not_found()) from exc
        # authorize() hides a missing tenant from resellers too; the brief for this family shows
        # them the seed's "Customer not found" (they manage customers and need to tell a typo
        # from a permission problem). Everyone else cannot probe for existence.
        if principal.role is Role.RESELLER and not _exists(customer_id):
            raise _fail(rules.customer_not_found()) from exc
        raise _fail(rules.access_denied()) from exc


def _exists(customer_id: str) -> bool:
    return is_id(customer_id) and tenants.get_tenant(customer_id) is not None


# --------------------------------------------------------------------------- bodies


def _body() -> dict[str, Any]:
    try:
        return json_object(bp.current_request)
    except BadBody as exc:
        if "object" in str(exc):
            return {}  # valid JSON, not an object: treated as empty (domain rule)
        raise _response(400, *INVALID_BODY) from exc


def _validated(body: dict[str, Any], *, partial: bool) -> dict[str, str]:
    """The seed's checks in table order: url (shape, then rules), method, selection."""
    url = body.get("url")
    if isinstance(url, str):
        if len(url) > MAX_URL_LENGTH:
            raise _fail(rules.url_error(rules.INVALID_URL_MESSAGE))
        try:
            validate_callnotify_url(url, allow_private=settings.allow_private_targets())
        except CallnotifyUrlError as exc:
            raise _fail(rules.url_error(exc.message)) from exc
    try:
        return rules.validate_notifier_fields(body, partial=partial)
    except CallnotifyError as exc:
        raise _fail(exc) from exc


def notifier_view(record: store.CallNotifierModel) -> dict[str, Any]:
    """The seed's item; properties holding no value are omitted."""
    view: dict[str, Any] = {
        "_id": record.notify_id,
        "url": record.url,
        "method": record.method,
        "selection": record.selection,
    }
    if record.disabled_reason:
        view["disabled_reason"] = record.disabled_reason
    return view


def _item_url(customer_id: str, notify_id: str) -> str:
    return f"/customer/{customer_id}/callnotify/{notify_id}"


# --------------------------------------------------------------------------- routes


@bp.route(BASE, methods=["GET"])
def list_notifiers(customer_id: str) -> list[dict[str, Any]]:
    access = _access(customer_id)
    return [notifier_view(r) for r in store.list_for(access.tenant.tenant_id)]


@bp.route(BASE, methods=["POST"])
def create_notifier(customer_id: str) -> Response:
    access = _access(customer_id)
    fields = _validated(_body(), partial=False)
    try:
        created = store.create(access.tenant.tenant_id, fields, utcnow())
    except QuotaExceeded as exc:  # the tenant's notifier quota
        refusal = _response(429, QUOTA_EXCEEDED, exc.message)
        refusal.response.headers["Retry-After"] = str(exc.retry_after)
        raise refusal from exc
    view = notifier_view(created.notifier)
    view["signing_secret"] = created.signing_secret
    return Response(
        body=view,
        status_code=201,
        headers={"Location": _item_url(customer_id, created.notifier.notify_id)},
    )


def _not_found() -> ApiError:
    return _fail(rules.not_found())


@bp.route(ITEM, methods=["GET"])
def get_notifier(customer_id: str, notify_id: str) -> dict[str, Any]:
    access = _access(customer_id)
    record = store.get(access.tenant.tenant_id, notify_id)
    if record is None:
        raise _not_found()
    return notifier_view(record)


@bp.route(ITEM, methods=["POST", "PUT"])
def update_notifier(customer_id: str, notify_id: str) -> dict[str, Any]:
    access = _access(customer_id)
    if store.get(access.tenant.tenant_id, notify_id) is None:
        raise _not_found()  # before validation: a wrong id is the first thing to fix
    fields = _validated(_body(), partial=True)
    record = store.update(access.tenant.tenant_id, notify_id, fields, utcnow())
    if record is None:  # deleted between the read above and the conditional update
        raise _not_found()
    return notifier_view(record)


@bp.route(f"{ITEM}/secret/rotate", methods=["POST"])
def rotate_secret(customer_id: str, notify_id: str) -> dict[str, Any]:
    """A new signing secret, shown once; the previous one keeps signing for 24 hours.

    Same access as every other operation of the family (``NEED``). Allowed for tcp/udp
    notifiers too: they have a secret, which signs once their url becomes http(s). No body is
    read."""
    access = _access(customer_id)
    tenant_id = access.tenant.tenant_id
    record = store.get(tenant_id, notify_id, consistent=True)
    if record is None:
        raise _not_found()
    try:
        rotated = store.rotate_secret(record, utcnow())
    except store.Changed as exc:
        if store.get(tenant_id, notify_id, consistent=True) is None:
            raise _not_found() from exc  # deleted meanwhile
        raise _fail(rules.busy()) from exc  # a concurrent rotation won
    log.info("call notifier %s: signing secret rotated for customer %s", notify_id, tenant_id)
    return {
        "_id": notify_id,
        "signing_secret": rotated.signing_secret,
        "previous_secret_valid_until": rotated.previous_secret_until,
    }


@bp.route(ITEM, methods=["DELETE"])
def delete_notifier(customer_id: str, notify_id: str) -> Response:
    access = _access(customer_id)
    if not store.delete(access.tenant.tenant_id, notify_id):
        raise _not_found()
    return Response(body="", status_code=204)
