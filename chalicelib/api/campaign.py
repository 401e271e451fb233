"""Campaign callback registrations (seed: campaign-callback-registrations.txt).

Errors: validation 400 ``{"error": "invalid", "field": ..., "message": ...}``; overlap 409
naming the conflicting registration; 401/403/404 ``{"error": ..., "message": ...}``.
"""

from __future__ import annotations

import json
from typing import Any

from chalice import Blueprint, Response

from chalicelib.api.auth import Access
from chalicelib.api.common import BadBody, check_destination, json_object
from chalicelib.api.errors import ApiError, json_error
from chalicelib.api.events import MAX_PAYLOAD_BYTES
from chalicelib.api.house import Refusals, json_body, quota_refusal
from chalicelib.delivery import ingest
from chalicelib.domain.access import Need
from chalicelib.domain.campaign import CampaignInvalid, is_active, is_listed, validate_create
from chalicelib.domain.timeutil import fmt, utcnow
from chalicelib.storage import campaign as store
from chalicelib.storage.quotas import QuotaExceeded

bp = Blueprint(__name__)

BASE = "/companies/{company_id}/campaigns/config"

_REFUSALS = Refusals(
    forbidden="this key may not do that for this company", not_found="company not found"
)


def _access(company_id: str, need: Need) -> Access:
    return _REFUSALS.access(_REFUSALS.principal(bp.current_request), company_id, need)


def _not_found(callback_id: str) -> ApiError:
    return json_error(404, "not_found", f"callback registration {callback_id} not found")


def registration_view(record: store.CampaignRegistrationModel) -> dict[str, Any]:
    now = fmt(utcnow())
    return {
        "callback_id": record.callback_id,
        "event_type": record.event_type,
        "campaign_id": record.campaign_id,
        "destination_url": record.destination_url,
        "backup_url": record.backup_url,
        "destination_method": record.destination_method,
        "content_type": record.content_type,
        "start_date": record.start_date,
        "end_date": record.end_date,
        "url": f"/companies/{record.company_id}/campaigns/config/callbacks/{record.callback_id}",
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "active": is_active(record.start_date, record.end_date, bool(record.deleted), now),
        "disabled_reason": record.disabled_reason,
    }


@bp.route(f"{BASE}/callbacks", methods=["GET"])
def list_callbacks(company_id: str) -> list[dict[str, Any]]:
    _access(company_id, Need.READ)
    now = fmt(utcnow())
    return [
        registration_view(r)
        for r in store.list_registrations(company_id)
        if is_listed(r.end_date, bool(r.deleted), now)
    ]


@bp.route(f"{BASE}/callbacks", methods=["POST"])
def create_callback(company_id: str) -> Response:
    _access(company_id, Need.WRITE)
    try:
        body = json_object(bp.current_request)
        spec = validate_create(body, now=utcnow(), url_check=check_destination)
    except BadBody as exc:
        raise json_error(400, "invalid", str(exc), field=None) from exc
    except CampaignInvalid as exc:
        raise json_error(400, "invalid", exc.message, field=exc.field) from exc
    try:
        created = store.create_registration(company_id, spec, utcnow())
    except store.OverlapConflict as exc:
        raise json_error(
            409,
            "overlap",
            f"event type {spec.event_type} already has registration {exc.callback_id} "
            "in an overlapping date range",
            conflicting_callback_id=exc.callback_id,
        ) from exc
    except store.Contended as exc:
        raise json_error(503, "busy", "too many concurrent changes, retry") from exc
    except QuotaExceeded as exc:
        raise quota_refusal(exc) from exc
    view = registration_view(created.registration)
    view["signing_secret"] = created.signing_secret
    return Response(body=view, status_code=201, headers={"Location": view["url"]})


@bp.route(f"{BASE}/callbacks/{{callback_id}}", methods=["GET"])
def get_callback(company_id: str, callback_id: str) -> dict[str, Any]:
    _access(company_id, Need.READ)
    record = store.get_registration(company_id, callback_id)
    if record is None:
        raise _not_found(callback_id)
    return registration_view(record)


@bp.route(f"{BASE}/callbacks/{{callback_id}}", methods=["DELETE"])
def delete_callback(company_id: str, callback_id: str) -> dict[str, Any]:
    _access(company_id, Need.WRITE)
    try:
        record = store.end_registration(company_id, callback_id, utcnow())
    except store.Contended as exc:
        raise json_error(503, "busy", "too many concurrent changes, retry") from exc
    if record is None:
        raise _not_found(callback_id)
    return registration_view(record)


@bp.route(f"{BASE}/callbacks/{{callback_id}}/secret/rotate", methods=["POST"])
def rotate_secret(company_id: str, callback_id: str) -> dict[str, Any]:
    """A new signing secret, shown once; the previous one keeps signing for 24 hours."""
    _access(company_id, Need.OWN)
    now = utcnow()
    try:
        fresh = store.rotate_secret(company_id, callback_id, now)
    except store.Contended as exc:
        raise json_error(503, "busy", "too many concurrent changes, retry") from exc
    if fresh is None:
        raise _not_found(callback_id)
    record = store.get_registration(company_id, callback_id, consistent=True)
    assert record is not None
    return {
        "callback_id": callback_id,
        "signing_secret": fresh,
        "previous_secret_valid_until": record.previous_secret_until,
    }


@bp.route(f"{BASE}/callbacks/{{callback_id}}/enable", methods=["POST"])
def enable_callback(company_id: str, callback_id: str) -> dict[str, Any]:
    """Deliver again to a registration that was disabled (its receiver answered 410 Gone)."""
    _access(company_id, Need.WRITE)
    if store.get_registration(company_id, callback_id) is None:
        raise _not_found(callback_id)
    store.enable(company_id, callback_id)
    record = store.get_registration(company_id, callback_id, consistent=True)
    assert record is not None
    return registration_view(record)


@bp.route(f"{BASE}/callback_events/test", methods=["POST"])
def send_test_event(company_id: str) -> Response:
    """Queue a test event (``callback_type: test``) to the active registrations of an event type."""
    _access(company_id, Need.WRITE)
    body = json_body(bp.current_request)
    event_type = body.get("event_type")
    if not isinstance(event_type, str) or not event_type.strip():
        raise json_error(400, "invalid", "event_type is required", field="event_type")
    campaign_id = body.get("campaign_id")
    if campaign_id is not None and not isinstance(campaign_id, str):
        raise json_error(400, "invalid", "campaign_id must be a string", field="campaign_id")
    payload = body.get("payload", {})
    if not isinstance(payload, dict):
        raise json_error(400, "invalid", "payload must be a JSON object", field="payload")
    if len(json.dumps(payload)) > MAX_PAYLOAD_BYTES:  # the same limit and measure as POST /events
        raise json_error(
            400, "invalid", f"payload is larger than {MAX_PAYLOAD_BYTES} bytes", field="payload"
        )
    published = ingest.publish(
        company_id, event_type, payload, campaign_id=campaign_id, test=True, families=["campaign"]
    )
    if published.deliveries == 0:
        raise json_error(
            404, "not_found", f"no active callback registration for event type {event_type}"
        )
    return Response(
        body={
            "event_id": published.event_id,
            "event_type": event_type,
            "deliveries": published.deliveries,
        },
        status_code=201,
    )
