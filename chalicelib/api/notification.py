"""Notification callbacks API (seed: notification-callbacks-update.txt), under
``/rest/api/v1.3/notifications``.

Callbacks (webhook url + Basic credentials + batch size), subscriptions (which events of which
campaigns go to which callback) and the event list. Every failure, including auth, unexpected
errors and Chalice's own 405/415, is the seed's envelope
``{"type": "", "title", "errorCode", "detail", "errorDetails": []}`` (the renderer registered
below covers what escapes the views). Rules and texts live in ``chalicelib/domain/notification``;
uniqueness and "in use" are DynamoDB conditions in ``chalicelib/storage/notification``.

"Could not connect" is real: create, update and verify send a signed ``POST`` of an empty batch
(``[]``) with the Basic credentials to the url through the pinned client, and
``domain.notification.connection_verified`` judges the answer. ``RINGBACK_VERIFY_CALLBACKS=false``
turns the check off for create and update (verify always checks).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import requests
from chalice import Blueprint, Response

from chalicelib import settings
from chalicelib.api.auth import QUERY_KEY_MESSAGE, Denied, Reason, authenticate, authorize
from chalicelib.api.common import check_destination
from chalicelib.api.errors import ApiError, register_family
from chalicelib.delivery import senders
from chalicelib.delivery.notification import basic_authorization
from chalicelib.domain import notification as rules
from chalicelib.domain.access import Need
from chalicelib.domain.ids import new_id
from chalicelib.domain.notification import CallbackSpec, NotificationError, SubscriptionSpec
from chalicelib.domain.signing import signature_headers
from chalicelib.domain.timeutil import utcnow
from chalicelib.domain.urlsafety import InvalidUrl, UnsafeDestination
from chalicelib.storage import notification as store
from chalicelib.storage import secrets
from chalicelib.storage.quotas import QuotaExceeded

log = logging.getLogger("ringback.api.notification")

bp = Blueprint(__name__)

BASE = rules.API_BASE_PATH
VERIFY_TIMEOUT_CAP = 5.0  # seconds: the API answers well inside API Gateway's 29 s
_MAX_CHANGE_ATTEMPTS = 20
_T = TypeVar("_T")
_P = ParamSpec("_P")


# --- errors, auth, bodies -------------------------------------------------------------------


def _fail(error: NotificationError) -> ApiError:
    return ApiError(Response(body=error.body(), status_code=error.status))


def render_error(status: int, code: str, message: str) -> Response:
    """Family renderer for whatever escapes a view (and Chalice's own 4xx/5xx answers)."""
    if status == 405:
        error = NotificationError.method_not_allowed()
    elif status == 415:
        error = NotificationError.unsupported_media_type()
    elif status == 401:
        error = NotificationError.unauthorized()
    elif status == 403:
        error = NotificationError.forbidden()
    elif 400 <= status < 500:
        error = NotificationError(
            status, "Invalid request parameters", "INVALID_PARAMETER", message
        )
    else:
        error = NotificationError.internal_error()
    return Response(body=error.body(), status_code=error.status)


register_family(BASE, render_error)


def _tenant(need: Need) -> str:
    """The caller's own tenant: a tenant key acts on its tenant (the paths carry no tenant)."""
    try:
        principal = authenticate(bp.current_request)
        authorize(principal, principal.tenant_id, need)
    except Denied as exc:
        if exc.reason is Reason.QUERY_KEY:  # the family's 401, saying where the key goes
            refusal = NotificationError(401, "Unauthorized", "UNAUTHORIZED", QUERY_KEY_MESSAGE)
            raise _fail(refusal) from exc
        raise _fail(
            NotificationError.unauthorized() if exc.status == 401 else NotificationError.forbidden()
        ) from exc
    return principal.tenant_id


def _body() -> dict[str, Any]:
    try:
        return rules.parse_json_body(bp.current_request.raw_body)
    except NotificationError as exc:
        raise _fail(exc) from exc


def _checked(func: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Run a domain rule; its NotificationError becomes the response."""
    try:
        return func(*args, **kwargs)
    except NotificationError as exc:
        raise _fail(exc) from exc


def _query() -> dict[str, str]:
    return dict(bp.current_request.query_params or {})


def verify_enabled() -> bool:
    """``RINGBACK_VERIFY_CALLBACKS`` (default true): create/update connect to the url first."""
    return os.environ.get("RINGBACK_VERIFY_CALLBACKS", "true").strip().lower() != "false"


# --- destination checks -------------------------------------------------------------------


def _check_destinations(spec: CallbackSpec) -> None:
    """SSRF rules for this stage, on both urls (refused = the family's invalid-url error)."""
    for field_name, url in (("url", spec.url), ("backupUrl", spec.backup_url)):
        if url is None:
            continue
        try:
            check_destination(url)
        except (InvalidUrl, UnsafeDestination) as exc:
            raise _fail(NotificationError.invalid_url(field_name, url)) from exc


def connects(url: str, user_name: str, password: str, signing_secrets: Sequence[str]) -> bool:
    """POST ``[]`` with the credentials (signed like a delivery: with the current secret, and
    the previous one during a rotation's overlap); see ``connection_verified``."""
    body = b"[]"
    headers = {
        "Content-Type": "application/json",
        "Authorization": basic_authorization(user_name, password),
        "User-Agent": "Ringback/1.0",
        **signature_headers(signing_secrets, f"verify_{new_id()}", int(time.time()), body),
    }
    # One overall deadline, with the response read bounded, as for deliveries (issue 13): a
    # receiver trickling its answer or streaming without end cannot hold the API request.
    timeout = min(settings.http_timeout(), VERIFY_TIMEOUT_CAP)
    try:
        reply = senders.http_client().send(
            "POST",
            url,
            headers=headers,
            body=body,
            timeout=timeout,
            allow_private=settings.allow_private_targets(),
        )
    except (InvalidUrl, UnsafeDestination, requests.RequestException) as exc:
        log.info("verify of %s: no response (%s)", url, type(exc).__name__)
        return False
    log.info("verify of %s: HTTP %s", url, reply.status_code)
    return rules.connection_verified(reply.status_code)


def _require_connection(spec: CallbackSpec, signing_secrets: Sequence[str]) -> None:
    if verify_enabled() and not connects(spec.url, spec.user_name, spec.password, signing_secrets):
        raise _fail(NotificationError.could_not_connect(spec.url))


# --- callbacks ----------------------------------------------------------------------------


def _view(record: store.NotificationCallbackModel, self_method: str) -> dict[str, Any]:
    view = rules.callback_view(store.spec_of(record), BASE, self_method=self_method)
    if record.disabled_reason:
        view["disabledReason"] = record.disabled_reason
    return view


def _url_taken(tenant_id: str, url: str, own_id: str | None) -> bool:
    owner = store.url_owner(tenant_id, url)
    return owner is not None and owner != own_id


def _existing(tenant_id: str, name: str) -> store.NotificationCallbackModel:
    record = store.get_callback(tenant_id, name) if rules.is_valid_name(name) else None
    if record is None:
        raise _fail(NotificationError.not_found(name))
    return record


@bp.route(f"{BASE}/callbacks", methods=["POST"])
def create_callback() -> Response:
    tenant_id = _tenant(Need.WRITE)
    body = _body()
    spec = _checked(rules.validate_create, body)
    _check_destinations(spec)
    if store.get_callback(tenant_id, spec.name) is not None:
        raise _fail(NotificationError.callback_exists(spec.name))
    if _url_taken(tenant_id, spec.url, None):
        raise _fail(NotificationError.url_exists(spec.url))
    signing_secret = secrets.new_signing_secret()
    _require_connection(spec, (signing_secret,))
    try:
        record = store.create_callback(tenant_id, spec, signing_secret, utcnow())
    except store.NameTaken as exc:
        raise _fail(NotificationError.callback_exists(spec.name)) from exc
    except store.UrlTaken as exc:
        raise _fail(NotificationError.url_exists(spec.url)) from exc
    except store.Changed as exc:
        raise _fail(NotificationError.busy()) from exc
    except QuotaExceeded as exc:
        refusal = _fail(NotificationError.quota_exceeded(exc.message))
        refusal.response.headers["Retry-After"] = str(exc.retry_after)
        raise refusal from exc
    log.info("notification callback %s created for tenant %s", spec.name, tenant_id)
    view = _view(record, "POST")
    view["signing_secret"] = signing_secret  # shown once, like campaign registrations
    return Response(
        body=view, status_code=201, headers={"Location": rules.callback_path(spec.name, BASE)}
    )


@bp.route(f"{BASE}/callbacks", methods=["GET"])
def list_callbacks() -> list[dict[str, Any]]:
    tenant_id = _tenant(Need.READ)
    return [_view(record, "GET") for record in store.list_callbacks(tenant_id)]


def _verify(tenant_id: str, name: str) -> dict[str, Any]:
    record = _existing(tenant_id, name)
    password = store.password_of(record)
    if not connects(record.url, record.user_name, password, store.signing_secrets_of(record)):
        raise _fail(NotificationError.could_not_connect(record.url))
    return rules.verified_view(name)


@bp.route(f"{BASE}/callbacks/{{callback_name}}", methods=["GET"])
def get_callback(callback_name: str) -> dict[str, Any]:
    tenant_id = _tenant(Need.READ)
    action = _query().get("action")
    if action is not None:
        if action != "verify":
            raise _fail(NotificationError.invalid_action(action))
        return _verify(tenant_id, callback_name)
    return _view(_existing(tenant_id, callback_name), "GET")


@bp.route(f"{BASE}/callbacks/{{callback_name}}/actions/verify", methods=["GET"])
def verify_callback(callback_name: str) -> dict[str, Any]:
    tenant_id = _tenant(Need.READ)
    return _verify(tenant_id, callback_name)


_PLACEHOLDER_URL = "https://placeholder.invalid/"


def _validated_update(
    name: str, body: dict[str, Any], current: CallbackSpec | None
) -> CallbackSpec:
    """The seed's rules first; a missing callback is reported only after them (404)."""
    base = current or CallbackSpec(name, _PLACEHOLDER_URL, None, rules.MIN_BATCH_SIZE, "-", "-")
    spec = _checked(rules.validate_update, name, body, base)
    if current is None:
        raise _fail(NotificationError.not_found(name))
    return spec


@bp.route(f"{BASE}/callbacks/{{callback_name}}", methods=["PUT"])
def update_callback(callback_name: str) -> dict[str, Any]:
    tenant_id = _tenant(Need.WRITE)
    body = _body()
    verified: tuple[str, str, str] | None = None
    for _ in range(_MAX_CHANGE_ATTEMPTS):
        record = store.get_callback(tenant_id, callback_name)
        spec = _validated_update(callback_name, body, store.spec_of(record) if record else None)
        assert record is not None
        _check_destinations(spec)
        if _url_taken(tenant_id, spec.url, record.callback_id):
            raise _fail(NotificationError.url_exists(spec.url))
        attempt = (spec.url, spec.user_name, spec.password)
        if verified != attempt:  # once per url + credentials, not once per retry
            _require_connection(spec, store.signing_secrets_of(record))
            verified = attempt
        try:
            updated = store.update_callback(record, spec, utcnow())
        except store.UrlTaken as exc:
            raise _fail(NotificationError.url_exists(spec.url)) from exc
        except store.Changed:
            continue  # changed (or deleted) since read: decide again on what is there now
        log.info("notification callback %s updated for tenant %s", callback_name, tenant_id)
        return _view(updated, "PUT")
    raise _fail(NotificationError.busy())


@bp.route(f"{BASE}/callbacks/{{callback_name}}/secret/rotate", methods=["POST"])
def rotate_secret(callback_name: str) -> dict[str, Any]:
    """A new signing secret, shown once; the previous one keeps signing for 24 hours.

    OWNER keys only (like campaign's rotation); the Basic-auth password is not changed (PUT
    replaces it). No body is read."""
    tenant_id = _tenant(Need.OWN)
    record = _existing(tenant_id, callback_name)
    try:
        rotated = store.rotate_secret(record, utcnow())
    except store.Changed as exc:
        again = store.get_callback(tenant_id, callback_name)
        if again is None or again.callback_id != record.callback_id:
            raise _fail(NotificationError.not_found(callback_name)) from exc
        raise _fail(NotificationError.busy()) from exc  # a concurrent rotation won
    log.info(
        "notification callback %s: signing secret rotated for tenant %s", callback_name, tenant_id
    )
    return rules.secret_rotated_view(
        callback_name, rotated.signing_secret, rotated.previous_secret_until
    )


@bp.route(f"{BASE}/callbacks/{{callback_name}}", methods=["DELETE"])
def delete_callback(callback_name: str) -> dict[str, Any]:
    tenant_id = _tenant(Need.WRITE)
    _existing(tenant_id, callback_name)
    try:
        store.delete_callback(tenant_id, callback_name)
    except store.NotFound as exc:
        raise _fail(NotificationError.not_found(callback_name)) from exc
    except store.InUse as exc:
        raise _fail(NotificationError.callback_in_use(callback_name, exc.subscriptions)) from exc
    except store.Contended as exc:
        raise _fail(NotificationError.busy()) from exc
    log.info("notification callback %s deleted for tenant %s", callback_name, tenant_id)
    return rules.deleted_view("CallBack", callback_name)


# --- subscriptions ------------------------------------------------------------------------


def _sub_view(record: store.NotificationSubscriptionModel, self_method: str) -> dict[str, Any]:
    return rules.subscription_view(store.subscription_spec(record), BASE, self_method=self_method)


def _create_subscription(tenant_id: str, spec: SubscriptionSpec) -> Response:
    try:
        record = store.create_subscription(tenant_id, spec, utcnow())
    except store.NameTaken as exc:
        raise _fail(NotificationError.subscription_exists(spec.name)) from exc
    except store.CallbackMissing as exc:
        raise _fail(NotificationError.not_found(spec.callback_name)) from exc
    except store.Contended as exc:
        raise _fail(NotificationError.busy()) from exc
    return Response(
        body=_sub_view(record, "POST"),
        status_code=201,
        headers={"Location": rules.subscription_path(spec.name, BASE)},
    )


@bp.route(f"{BASE}/subscriptions", methods=["POST"])
def create_subscription() -> Response:
    tenant_id = _tenant(Need.WRITE)
    body = _body()
    spec = _checked(rules.validate_subscription, body, partial=False)
    return _create_subscription(tenant_id, spec)


@bp.route(f"{BASE}/callbacks/{{callback_name}}/subscriptions", methods=["POST"])
def create_callback_subscription(callback_name: str) -> Response:
    tenant_id = _tenant(Need.WRITE)
    body = _body()
    spec = _checked(rules.validate_subscription, body, partial=False, callback_name=callback_name)
    return _create_subscription(tenant_id, spec)


@bp.route(f"{BASE}/subscriptions", methods=["GET"])
def list_subscriptions() -> list[dict[str, Any]]:
    tenant_id = _tenant(Need.READ)
    return [_sub_view(record, "GET") for record in store.list_subscriptions(tenant_id)]


@bp.route(f"{BASE}/callbacks/{{callback_name}}/subscriptions", methods=["GET"])
def list_callback_subscriptions(callback_name: str) -> list[dict[str, Any]]:
    tenant_id = _tenant(Need.READ)
    _existing(tenant_id, callback_name)
    return [_sub_view(r, "GET") for r in store.subscriptions_of(tenant_id, callback_name)]


def _existing_subscription(tenant_id: str, name: str) -> store.NotificationSubscriptionModel:
    record = store.get_subscription(tenant_id, name) if rules.is_valid_name(name) else None
    if record is None:
        raise _fail(NotificationError.subscription_not_found(name))
    return record


@bp.route(f"{BASE}/subscriptions/{{name}}", methods=["GET"])
def get_subscription(name: str) -> dict[str, Any]:
    tenant_id = _tenant(Need.READ)
    return _sub_view(_existing_subscription(tenant_id, name), "GET")


_PLACEHOLDER_SUB = ("-", (rules.EVENT_NAMES[0],), ())


@bp.route(f"{BASE}/subscriptions/{{name}}", methods=["PUT"])
def update_subscription(name: str) -> dict[str, Any]:
    tenant_id = _tenant(Need.WRITE)
    body = _body()
    for _ in range(_MAX_CHANGE_ATTEMPTS):
        record = store.get_subscription(tenant_id, name) if rules.is_valid_name(name) else None
        current = (
            store.subscription_spec(record)
            if record is not None
            else SubscriptionSpec(name, *_PLACEHOLDER_SUB)
        )
        spec = _checked(
            rules.validate_subscription, body, partial=True, current=current, path_name=name
        )
        if record is None:
            raise _fail(NotificationError.subscription_not_found(name))
        try:
            updated = store.update_subscription(record, spec, utcnow())
        except store.CallbackMissing as exc:
            raise _fail(NotificationError.not_found(spec.callback_name)) from exc
        except store.Changed:
            continue
        return _sub_view(updated, "PUT")
    raise _fail(NotificationError.busy())


@bp.route(f"{BASE}/subscriptions/{{name}}", methods=["DELETE"])
def delete_subscription(name: str) -> dict[str, Any]:
    tenant_id = _tenant(Need.WRITE)
    _existing_subscription(tenant_id, name)
    try:
        store.delete_subscription(tenant_id, name)
    except store.NotFound as exc:
        raise _fail(NotificationError.subscription_not_found(name)) from exc
    except store.Contended as exc:
        raise _fail(NotificationError.busy()) from exc
    return rules.deleted_view("Subscription", name)


# --- event list ---------------------------------------------------------------------------


@bp.route(f"{BASE}/eventList", methods=["GET"])
def event_list() -> dict[str, Any]:
    _tenant(Need.READ)
    return rules.event_list_view()
