"""Scheduled callbacks API (seed: scheduled-callback-create.txt): ``/api/1.0/create/``,
``/api/1.0/retrieve/{id}/``, ``/api/1.0/delete/{id}/`` and ``/api/1.0/list/``.

A query-string API in the CallMyApp style: parameters in the query (``create`` also takes them
as an ``application/x-www-form-urlencoded`` POST body), the key in ``api_key``, answers in the
seed's ``{"success": 1|0, ...}`` shape as JSON or XML (``response_format``), with an HTTP status
that still means something (400/401/403/404/409). Every error this prefix can produce, including
Chalice's own 405/415 and unexpected exceptions, comes out in that shape (``register_family``).

Chalice routes may not end in ``/``; the local gateway (``chalice local``, ``chalice.test``) and
API Gateway strip one trailing slash before matching, so the seed's ``/api/1.0/create/`` and the
bare ``/api/1.0/create`` reach the same view.

Roles: ``create`` and ``delete`` need a key that writes (MANAGER, OWNER, RESELLER); ``retrieve``
and ``list`` any key of the account (VIEWER too). A callback always belongs to the account of
the key that created it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from chalice import Blueprint, Response
from chalice.app import Request

from chalicelib import settings
from chalicelib.api import errors
from chalicelib.api.auth import Denied, Reason, authorize, extract_key, principal_for_key
from chalicelib.api.common import check_destination
from chalicelib.api.errors import ApiError
from chalicelib.delivery import scheduled as scheduler
from chalicelib.domain import scheduled as rules
from chalicelib.domain import scheduled_render as render
from chalicelib.domain.access import Need
from chalicelib.domain.ids import is_id
from chalicelib.domain.timeutil import utcnow
from chalicelib.domain.urlsafety import InvalidUrl, UnsafeDestination
from chalicelib.storage import scheduled as store
from chalicelib.storage.quotas import QuotaExceeded

log = logging.getLogger("ringback.api.scheduled")

bp = Blueprint(__name__)

PREFIX = "/api/1.0"
FORM = "application/x-www-form-urlencoded"
GET_TYPES = ["application/json", FORM]
POST_TYPES = [FORM, "application/json"]


# --------------------------------------------------------------------------- responses


def _respond(payload: Mapping[str, Any], fmt: render.Format, status: int = 200) -> Response:
    body, content_type = render.render(payload, fmt)
    return Response(body=body, status_code=status, headers={"Content-Type": content_type})


def _error(key: str, fmt: render.Format, status: int | None = None) -> ApiError:
    code = status if status is not None else rules.ERROR_STATUS.get(key, 500)
    return ApiError(_respond(render.error(key), fmt, code))


def _fail(exc: rules.ScheduleError, fmt: render.Format) -> ApiError:
    if exc.key == "response_format_invalid":
        fmt = "json"  # the requested format is the thing that is wrong
    return _error(exc.key, fmt, exc.status)


def _requested_format(request: Request | None) -> render.Format:
    """The caller's ``response_format`` if it is valid, else JSON; never raises (used while
    rendering an error that may have happened anywhere)."""
    if request is None:
        return "json"
    for source in (_params, lambda r: dict(r.query_params or {})):
        try:
            return rules.parse_response_format(source(request))
        except Exception:  # noqa: S112 - a body we cannot read: try the query alone
            continue
    return "json"


def family_renderer(status: int, code: str, message: str) -> Response:
    """Errors the middleware renders for this prefix: Chalice's 405/415 and anything
    unexpected (``internal_error``, details only in the log)."""
    try:
        request: Request | None = bp.current_request
    except Exception:
        request = None
    key = code if code in rules.ERROR_STATUS else "internal_error"
    if status >= 500:
        key = "internal_error"
    return _respond(render.error(key), _requested_format(request), status)


errors.register_family(PREFIX, family_renderer)


# --------------------------------------------------------------------------- request


def _params(request: Request) -> dict[str, str]:
    """Query parameters, then (POST) the form body's, a body value winning over the query's;
    a repeated parameter keeps its last value. Order is kept (it is echoed back)."""
    params: dict[str, str] = {}
    query: Mapping[str, str] = request.query_params or {}
    for name in query:
        params[name] = query[name]
    if request.method == "POST":
        raw = request.raw_body or b""
        content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if content_type == FORM:
            text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
            for name, value in parse_qsl(text, keep_blank_values=True):
                params.pop(name, None)
                params[name] = value
        elif raw.strip():
            raise rules.ScheduleError("unsupported_media_type")
    return params


def _start(need: Need) -> tuple[dict[str, str], render.Format, str]:
    """Parameters, response format and the caller's tenant, checked in the documented order:
    ``response_format``, then the key (absent, invalid, forbidden)."""
    request = bp.current_request
    fmt: render.Format = "json"
    try:
        params = _params(request)
        fmt = rules.parse_response_format(params)
    except rules.ScheduleError as exc:
        raise _fail(exc, _requested_format(request)) from exc
    key = params.get("api_key") or extract_key(request, allow_query=True)
    try:
        principal = principal_for_key(key)
    except Denied as exc:
        absent = exc.reason is Reason.MISSING
        raise _error("api_key_absent" if absent else "api_key_invalid", fmt) from exc
    try:
        authorize(principal, principal.tenant_id, need)
    except Denied as exc:
        raise _error("api_key_forbidden", fmt) from exc
    if key is not None:
        params.setdefault("api_key", key)
    return params, fmt, principal.tenant_id


def _echo(params: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in params.items() if name != "api_key"}


def _callback_id(value: str, fmt: render.Format) -> str:
    if not is_id(value):
        raise _error("callback_not_found", fmt)
    return value


# --------------------------------------------------------------------------- views


def repeat_view(record: store.ScheduledCallbackModel) -> dict[str, Any] | None:
    repeat = record.repeat
    if repeat is None:
        return None
    return {
        "type": repeat.type,
        "interval_unit": repeat.unit,
        "interval": repeat.interval,
        "count": repeat.count,
        "until": repeat.until,
    }


def callback_view(record: store.ScheduledCallbackModel) -> dict[str, Any]:
    fired = int(record.fired_count)
    return {
        "callback_id": record.callback_id,
        "callback_url": record.callback_url,
        "callback_time": record.callback_time,
        "timestamp": record.next_fire_at,
        "state": record.state,
        "repeat": repeat_view(record),
        "fired_count": fired,
        "last_fired_at": record.last_fired_at,
        "last_status": record.last_status,
        "last_delivery_id": scheduler.delivery_id_for(record.callback_id, fired - 1)
        if fired
        else None,
        "failure_reason": record.failure_reason,
        "created_at": record.created_at,
        **limits_view(record),
    }


def limits_view(record: store.ScheduledCallbackModel) -> dict[str, Any]:
    """``rate_limit``/``max_in_flight``, shown only when the callback has them (the view of a
    callback without limits stays as it was)."""
    shown: dict[str, Any] = {}
    if record.rate_limit is not None:
        shown["rate_limit"] = float(record.rate_limit)
    if record.max_in_flight is not None:
        shown["max_in_flight"] = int(record.max_in_flight)
    return shown


# --------------------------------------------------------------------------- create


def _create() -> Response:
    params, fmt, tenant_id = _start(Need.WRITE)
    now = utcnow()
    try:
        request = rules.parse_create(params, now, min_repeat_seconds=settings.min_repeat_seconds())
    except rules.ScheduleError as exc:
        raise _fail(exc, fmt) from exc
    try:
        check_destination(request.callback_url)
    except InvalidUrl as exc:
        raise _error("callback_url_invalid", fmt) from exc
    except UnsafeDestination as exc:
        raise _error("callback_url_forbidden", fmt) from exc
    try:
        created = store.create(tenant_id, request, now)
    except store.AlreadyExists as exc:
        raise _error("callback_already_exists", fmt) from exc
    except QuotaExceeded as exc:  # the tenant's pending-callbacks quota
        refusal = _error("quota_exceeded", fmt)
        refusal.response.headers["Retry-After"] = str(exc.retry_after)
        raise refusal from exc
    try:
        scheduler.hand_over(created.outbox)
    except Exception:  # stored: the reconciler sends it once it is overdue
        log.exception(
            "callback %s: first firing left to the reconciler", created.record.callback_id
        )
    payload = render.success(
        "create",
        request.api_call_parameters,
        callback_id=created.record.callback_id,
        signing_secret=created.signing_secret,
    )
    return _respond(payload, fmt)


@bp.route(f"{PREFIX}/create", methods=["GET"], content_types=GET_TYPES)
def create_get() -> Response:
    return _create()


@bp.route(f"{PREFIX}/create", methods=["POST"], content_types=POST_TYPES)
def create_post() -> Response:
    return _create()


# --------------------------------------------------------------------------- retrieve, delete


@bp.route(f"{PREFIX}/retrieve/{{callback_id}}", methods=["GET"], content_types=GET_TYPES)
def retrieve(callback_id: str) -> Response:
    params, fmt, tenant_id = _start(Need.READ)
    record = store.get(tenant_id, _callback_id(callback_id, fmt), consistent=True)
    if record is None:
        raise _error("callback_not_found", fmt)
    payload = render.success(
        "retrieve", _echo(params), callback_id=record.callback_id, callback=callback_view(record)
    )
    return _respond(payload, fmt)


@bp.route(f"{PREFIX}/delete/{{callback_id}}", methods=["GET"], content_types=GET_TYPES)
def delete(callback_id: str) -> Response:
    params, fmt, tenant_id = _start(Need.WRITE)
    record = store.cancel(tenant_id, _callback_id(callback_id, fmt), utcnow())
    if record is None:
        raise _error("callback_not_found", fmt)
    payload = render.success("delete", _echo(params), callback_id=record.callback_id)
    return _respond(payload, fmt)


@bp.route(f"{PREFIX}/retrieve", methods=["GET"], content_types=GET_TYPES)
def retrieve_without_id() -> Response:
    _, fmt, _ = _start(Need.READ)
    raise _error("callback_not_found", fmt)


@bp.route(f"{PREFIX}/delete", methods=["GET"], content_types=GET_TYPES)
def delete_without_id() -> Response:
    _, fmt, _ = _start(Need.WRITE)
    raise _error("callback_not_found", fmt)


# --------------------------------------------------------------------------- list


@bp.route(f"{PREFIX}/list", methods=["GET"], content_types=GET_TYPES)
def list_callbacks() -> Response:
    params, fmt, tenant_id = _start(Need.READ)
    try:
        wanted = rules.parse_list(params)
    except rules.ScheduleError as exc:
        raise _fail(exc, fmt) from exc
    records, last = store.list_page(tenant_id, wanted.state, wanted.limit, wanted.after)
    payload = render.success(
        "list",
        wanted.api_call_parameters,
        callbacks=[callback_view(record) for record in records],
        next_cursor=rules.encode_cursor(last) if last else None,
    )
    return _respond(payload, fmt)
