"""``GET /``: a small index for whoever opens the service's address first.

Behind API Gateway the bare root answered ``{"message": "Missing Authentication Token"}``, which
tells a newcomer nothing. The index names the service and its version, the API families with the
base path each one lives under, and where to go next (the OpenAPI document, the health check).
It is public and the same for every caller: it holds no tenant data.
"""

from __future__ import annotations

from typing import Any

from chalice import Blueprint

from chalicelib.api import callnotify, campaign, scheduled
from chalicelib.api.openapi import TITLE, VERSION
from chalicelib.domain import notification

bp = Blueprint(__name__)

SERVICE = "ringback"
# (family, base path, what lives there): the base paths are the blueprints' own constants.
FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("admin", "/admin/tenants", "tenants and API keys"),
    ("campaign", f"{campaign.BASE}/callbacks", "campaign callback registrations"),
    ("events", "/events", "publish events; each event's deliveries"),
    ("deliveries", "/deliveries", "deliveries, their attempts, replays"),
    ("scheduled", scheduled.PREFIX, "scheduled callbacks (CallMyApp style, JSON or XML)"),
    ("notification", notification.API_BASE_PATH, "notification callbacks and subscriptions"),
    ("callnotify", callnotify.BASE, "call notifiers"),
)


def index() -> dict[str, Any]:
    """The landing body (also what the OpenAPI catalogue describes)."""
    return {
        "service": SERVICE,
        "name": TITLE,
        "version": VERSION,
        "families": [
            {"name": name, "base_path": base, "description": text} for name, base, text in FAMILIES
        ],
        "links": {"openapi": "/openapi.json", "health": "/health"},
    }


@bp.route("/", methods=["GET"])
def landing() -> dict[str, Any]:
    return index()
