"""Publishing events and following their deliveries: the delivery engine's API.

``POST /events`` fans an event out to every matching target of every family; ``GET /events/{id}``
and ``GET /deliveries/{id}`` show where it went and every attempt; failed deliveries are listed
and replayed one by one or by time range.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from chalice import Blueprint, Response

from chalicelib.api.errors import ApiError, json_error
from chalicelib.api.house import Refusals, json_body, quota_refusal
from chalicelib.delivery import ingest, registry
from chalicelib.domain.access import Need, Principal, Role
from chalicelib.domain.retry import Status
from chalicelib.domain.timeutil import BadTimestamp, fmt, parse_zoned
from chalicelib.storage import deliveries, quotas
from chalicelib.storage.deliveries import DeliveryModel

bp = Blueprint(__name__)
log = logging.getLogger("ringback.api")

SELECTIONS = ("SIP", "MVNO")
MAX_PAYLOAD_BYTES = 64 * 1024
REPLAY_LIMIT = 1000
_REFUSALS = Refusals(
    forbidden="this key may not do that for this tenant", not_found="tenant not found"
)
_authorize = _REFUSALS.access


def _principal() -> Principal:
    return _REFUSALS.principal(bp.current_request)


def _invalid(field: str | None, message: str) -> ApiError:
    return json_error(400, "invalid", message, field=field)


def _tenant_for(
    principal: Principal,
    body: dict[str, Any],
    need: Need,
    checked: dict[str, ApiError | None] | None = None,
) -> str:
    """The caller's own tenant, or (ADMIN/RESELLER) the ``tenant_id`` named in the body.

    ``checked`` remembers each tenant's verdict within one request (a batch names its tenant
    up to 100 times; the tenant is read once)."""
    tenant_id = body.get("tenant_id")
    if tenant_id is None:
        if principal.role is Role.ADMIN:
            raise _invalid("tenant_id", "an admin key must name tenant_id")
        tenant_id = principal.tenant_id
    if not isinstance(tenant_id, str):
        raise _invalid("tenant_id", "tenant_id must be a string")
    if checked is None:
        _authorize(principal, tenant_id, need)
        return tenant_id
    if tenant_id not in checked:
        try:
            _authorize(principal, tenant_id, need)
            checked[tenant_id] = None
        except ApiError as exc:
            checked[tenant_id] = exc
    refusal = checked[tenant_id]
    if refusal is not None:
        raise refusal
    return tenant_id


MAX_BATCH = 100


@dataclass(frozen=True)
class _EventInput:
    tenant_id: str
    event_type: str
    campaign_id: str | None
    selection: str | None
    payload: dict[str, Any]


def _event_input(
    principal: Principal, body: dict[str, Any], checked: dict[str, ApiError | None] | None = None
) -> _EventInput:
    """One event's fields, checked; raises the house 400/403/404."""
    tenant_id = _tenant_for(principal, body, Need.WRITE, checked)
    event_type = body.get("event_type")
    if not isinstance(event_type, str) or not event_type.strip() or len(event_type) > 128:
        raise _invalid("event_type", "event_type must be a non-empty string (max 128)")
    campaign_id = body.get("campaign_id")
    if campaign_id is not None and not isinstance(campaign_id, str):
        raise _invalid("campaign_id", "campaign_id must be a string")
    selection = body.get("selection")
    if selection is not None and selection not in SELECTIONS:
        raise _invalid("selection", "selection must be SIP or MVNO")
    payload = body.get("payload", {})
    if not isinstance(payload, dict):
        raise _invalid("payload", "payload must be a JSON object")
    if len(json.dumps(payload)) > MAX_PAYLOAD_BYTES:
        raise _invalid("payload", f"payload is larger than {MAX_PAYLOAD_BYTES} bytes")
    try:
        registry.validate_event(event_type, selection, payload)
    except ValueError as exc:
        field, _, why = str(exc).partition(": ")
        top_level = field in ("selection", "event_type", "campaign_id")
        raise _invalid(
            field if top_level else f"payload.{field}" if why else "payload", str(exc)
        ) from exc
    return _EventInput(tenant_id, event_type, campaign_id, selection, payload)


def _admitted(tenant_id: str, count: int) -> int:
    """The tenant's events-per-second quota, after the checks, before anything is accepted:
    how many of ``count`` events may go on (one update for the whole request); raises the
    family's 429 when none may."""
    try:
        return quotas.admit_events(tenant_id, count)
    except quotas.QuotaExceeded as exc:
        raise quota_refusal(exc) from exc


def _checked_key(key: Any, field: str) -> str | None:
    if key is not None and (not isinstance(key, str) or not key.strip() or len(key) > 255):
        raise _invalid(field, f"{field} must be 1-255 characters")
    return key


def _request(event: _EventInput, key: str | None) -> ingest.EventRequest:
    return ingest.EventRequest(
        event.event_type, event.payload, event.campaign_id, event.selection, key
    )


def _in_progress(exc: ingest.InProgress) -> ApiError:
    return ApiError(
        Response(
            body={
                "error": "in_progress",
                "message": "a request with this Idempotency-Key is still being processed; "
                "retry shortly",
                "event_id": exc.event_id,
            },
            status_code=409,
            headers={"Retry-After": "1"},
        )
    )


@bp.route("/events", methods=["POST"])
def publish_event() -> Response:
    """One event (a JSON object), or a batch of up to ``MAX_BATCH`` (a JSON array)."""
    principal = _principal()
    request = bp.current_request
    batch = _batch_body(request.raw_body)
    if batch is not None:
        return _publish_batch(principal, batch)
    body = json_body(request)
    event = _event_input(principal, body)
    key = _checked_key(request.headers.get("idempotency-key"), "Idempotency-Key")
    _admitted(event.tenant_id, 1)
    (result,) = ingest.publish_many(event.tenant_id, [_request(event, key)])
    if isinstance(result, ingest.InProgress):
        raise _in_progress(result)
    if isinstance(result, Exception):
        raise result
    headers: dict[str, str | list[str]] = {"Idempotent-Replayed": "true"} if result.repeated else {}
    return Response(
        body={"event_id": result.event_id, "deliveries": result.deliveries},
        status_code=202,
        headers=headers,
    )


def _batch_body(raw: str | bytes | None) -> list[Any] | None:
    """The body as a JSON array when it is one (a batch); None for anything else."""
    if isinstance(raw, str):
        raw = raw.encode()
    if not raw or not raw.lstrip().startswith(b"["):
        return None
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, list) else None


def _refused(exc: ApiError) -> dict[str, Any]:
    """A refused event's place in a batch answer: its status, the body a single request would
    have had, and ``retry_after`` (seconds) where that request would have had ``Retry-After``."""
    body = exc.response.body if isinstance(exc.response.body, dict) else {}
    refused: dict[str, Any] = {"status": exc.response.status_code, **body}
    retry_after = (exc.response.headers or {}).get("Retry-After")
    if isinstance(retry_after, str) and retry_after.isdigit():
        refused["retry_after"] = int(retry_after)
    return refused


_NOT_ACCEPTED = {
    "status": 500,
    "error": "internal_error",  # the house 500's code, as a single POST /events answers it
    "message": "internal error: not accepted; retry this event",
}


def _publish_batch(principal: Principal, items: list[Any]) -> Response:
    """Each event is accepted or refused on its own; the answer lists them in order, each with
    the status and body a single ``POST /events`` would have given it. One request for up to
    ``MAX_BATCH`` events: API Gateway's per-request price, the quota update, the registration
    reads of an event type and the writes' round trips are paid once per request."""
    if not items or len(items) > MAX_BATCH:
        raise _invalid(None, f"a batch holds 1 to {MAX_BATCH} events")
    if bp.current_request.headers.get("idempotency-key") is not None:
        # one key for many events would make each a repeat of the first: say so, not guess
        raise _invalid(
            "Idempotency-Key",
            "a batch takes an idempotency_key per event, not an Idempotency-Key header",
        )
    results: list[dict[str, Any] | None] = [None] * len(items)
    by_tenant: dict[str, list[tuple[int, ingest.EventRequest]]] = {}
    checked: dict[str, ApiError | None] = {}
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise _invalid(None, "each event of a batch must be a JSON object")
            event = _event_input(principal, item, checked)
            key = _checked_key(item.get("idempotency_key"), "idempotency_key")
        except ApiError as exc:
            results[index] = _refused(exc)
            continue
        by_tenant.setdefault(event.tenant_id, []).append((index, _request(event, key)))
    for tenant_id, entries in by_tenant.items():
        try:
            admitted = _admitted(tenant_id, len(entries))
            refusal = (
                _refused(quota_refusal(quotas.events_refusal(tenant_id)))
                if entries[admitted:]
                else {}
            )
        except ApiError as exc:
            admitted, refusal = 0, _refused(exc)
        except Exception:  # AWS failed under this tenant's quota: its events are not accepted
            log.exception("the events quota of tenant %s could not be read", tenant_id)
            admitted, refusal = 0, dict(_NOT_ACCEPTED)
        for index, _ in entries[admitted:]:
            results[index] = refusal
        if not admitted:
            continue
        published = ingest.publish_many(tenant_id, [r for _, r in entries[:admitted]])
        for (index, _), outcome in zip(entries[:admitted], published, strict=True):
            results[index] = _outcome(outcome)
    done = [r if r is not None else dict(_NOT_ACCEPTED) for r in results]
    accepted = sum(1 for r in done if r["status"] == 202)
    return Response(
        body={"accepted": accepted, "refused": len(done) - accepted, "results": done},
        status_code=200,
    )


def _outcome(outcome: ingest.Published | Exception) -> dict[str, Any]:
    if isinstance(outcome, ingest.InProgress):
        return _refused(_in_progress(outcome))
    if isinstance(outcome, Exception):
        # This event is not accepted (AWS failed under it); the others stand. Retrying it
        # with its idempotency_key finishes it if it got halfway.
        return dict(_NOT_ACCEPTED)
    result: dict[str, Any] = {
        "status": 202,
        "event_id": outcome.event_id,
        "deliveries": outcome.deliveries,
    }
    if outcome.repeated:
        result["idempotent_replayed"] = True
    return result


def _visible_event(principal: Principal, event_id: str) -> deliveries.EventModel:
    event = deliveries.get_event(event_id) if len(event_id) <= 64 else None
    if event is None:
        raise json_error(404, "not_found", f"event {event_id} not found")
    _authorize(principal, event.tenant_id, Need.READ)
    return event


EVENT_PAGE = 100


@bp.route("/events/{event_id}", methods=["GET"])
def get_event(event_id: str) -> dict[str, Any]:
    """The event and its deliveries, a page at a time (``?cursor=`` from ``next_cursor``)."""
    event = _visible_event(_principal(), event_id)
    query = dict(bp.current_request.query_params or {})
    cursor = query.get("cursor")
    try:
        page = deliveries.event_page(event.event_id, limit=EVENT_PAGE, cursor=cursor, event=event)
    except deliveries.BadCursor as exc:
        raise _invalid("cursor", str(exc)) from exc
    records, next_cursor = page.records, page.next_cursor
    view: dict[str, Any] = {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "received_at": event.received_at,
        "deliveries": [
            {"delivery_id": r.delivery_id, "target": r.target, "status": r.status} for r in records
        ],
        "next_cursor": next_cursor,
    }
    if event.delivery_count is not None:
        view["delivery_count"] = int(event.delivery_count)
    return view


def attempt_view(attempt: Any) -> dict[str, Any]:
    view: dict[str, Any] = {"at": attempt.at, "url": attempt.url}
    if attempt.status_code is not None:
        view["status_code"] = int(attempt.status_code)
    if attempt.error:
        view["error"] = attempt.error
    view["duration_ms"] = int(attempt.duration_ms)
    if getattr(attempt, "response", None):
        view["response"] = attempt.response
    return view


def delivery_view(record: DeliveryModel) -> dict[str, Any]:
    return {
        "delivery_id": record.delivery_id,
        "event_id": record.event_id,
        "family": record.family,
        "status": record.status,
        "target": record.target,
        "attempts": [attempt_view(a) for a in record.attempts or []],
        "next_attempt_at": record.next_attempt_at,
        "failure_reason": record.failure_reason,
        "replay_of": record.replay_of,
        "replayed_by": record.replayed_by,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def _visible_delivery(principal: Principal, delivery_id: str, need: Need) -> DeliveryModel:
    record = deliveries.get(delivery_id) if len(delivery_id) <= 64 else None
    if record is None or deliveries.is_expired(record):
        raise json_error(404, "not_found", f"delivery {delivery_id} not found")
    _authorize(principal, record.tenant_id, need)
    return record


@bp.route("/deliveries/{delivery_id}", methods=["GET"])
def get_delivery(delivery_id: str) -> dict[str, Any]:
    return delivery_view(_visible_delivery(_principal(), delivery_id, Need.READ))


REPLAYABLE = (Status.FAILED.value, Status.SKIPPED.value)


@bp.route("/deliveries/{delivery_id}/replay", methods=["POST"])
def replay_delivery(delivery_id: str) -> Response:
    record = _visible_delivery(_principal(), delivery_id, Need.WRITE)
    if record.status not in REPLAYABLE:
        raise json_error(
            409,
            "not_replayable",
            f"delivery {delivery_id} is {record.status}; only failed or skipped ones replay",
        )
    if record.replayed_by:
        replay = deliveries.get(record.replayed_by)
        if replay is not None and (int(replay.attempt_count) > 0 or replay.status != "pending"):
            raise json_error(
                409,
                "already_replayed",
                f"delivery {delivery_id} was replayed as {record.replayed_by}; replay that one",
                replayed_by=record.replayed_by,
            )
    fresh = ingest.replay(record)
    return Response(body={"delivery_id": fresh, "replay_of": delivery_id}, status_code=202)


def _status(body_or_query: dict[str, Any], allow_all: bool = False) -> Status | None:
    status_name = body_or_query.get("status", Status.FAILED.value)
    names = [s.value for s in Status]
    if allow_all and status_name == ALL_STATUSES:
        return None
    if status_name not in names:
        allowed = ", ".join(names + ([ALL_STATUSES] if allow_all else []))
        raise _invalid("status", f"status must be one of {allowed}")
    return Status(status_name)


def _bounds(body_or_query: dict[str, Any]) -> tuple[str | None, str | None]:
    bounds: list[str | None] = []
    for field in ("since", "until"):
        value = body_or_query.get(field)
        if value is None:
            bounds.append(None)
            continue
        try:
            bounds.append(fmt(parse_zoned(value)))
        except BadTimestamp as exc:
            raise _invalid(field, f"{field} must be ISO 8601 with a zone") from exc
    return bounds[0], bounds[1]


def _range(body_or_query: dict[str, Any]) -> tuple[Status, str | None, str | None]:
    status = _status(body_or_query)
    assert status is not None
    since, until = _bounds(body_or_query)
    return status, since, until


ALL_STATUSES = "all"


def _limit(query: dict[str, Any]) -> int:
    raw = query.get("limit")
    if raw is None:
        return REPLAY_LIMIT
    if not str(raw).isdigit() or not 1 <= int(raw) <= REPLAY_LIMIT:
        raise _invalid("limit", f"limit must be an integer from 1 to {REPLAY_LIMIT}")
    return int(raw)


@bp.route("/deliveries", methods=["GET"])
def list_deliveries() -> dict[str, Any]:
    """A tenant's deliveries, oldest first: in one status (default ``failed``, the dead
    letters) or ``status=all``; filtered by ``family``, ``target`` (id or URL) and time; paged
    with ``limit`` and ``cursor`` (from ``next_cursor``)."""
    principal = _principal()
    query = dict(bp.current_request.query_params or {})
    tenant_id = _tenant_for(principal, query, Need.READ)
    status = _status(query, allow_all=True)
    since, until = _bounds(query)
    limit = _limit(query)
    for field in ("family", "target", "cursor"):
        value = query.get(field)
        if value is not None and (not value or len(value) > 2048):
            raise _invalid(field, f"{field} must be 1-2048 characters")
    try:
        page = deliveries.list_page(
            tenant_id,
            status=status,
            since=since,
            until=until,
            family=query.get("family"),
            target=query.get("target"),
            limit=limit,
            cursor=query.get("cursor"),
        )
    except deliveries.BadCursor as exc:
        raise _invalid("cursor", str(exc)) from exc
    return {
        "deliveries": [delivery_view(record) for record in page.records],
        "truncated": page.next_cursor is not None,
        "next_cursor": page.next_cursor,
    }


@bp.route("/deliveries/replay", methods=["POST"])
def replay_range() -> Response:
    principal = _principal()
    body = json_body(bp.current_request)
    tenant_id = _tenant_for(principal, body, Need.WRITE)
    status, since, until = _range(body)
    if status.value not in REPLAYABLE:
        raise _invalid("status", "only failed or skipped deliveries can be replayed")
    replayed = []
    for record in deliveries.in_status(tenant_id, status, since, until):
        if not record.replayed_by:
            replayed.append({"delivery_id": ingest.replay(record), "replay_of": record.delivery_id})
        if len(replayed) >= REPLAY_LIMIT:
            break
    return Response(
        body={
            "replayed": len(replayed),
            "deliveries": replayed,
            "truncated": len(replayed) >= REPLAY_LIMIT,
        },
        status_code=202,
    )
