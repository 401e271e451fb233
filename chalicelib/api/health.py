"""Liveness for load balancers and the local stack's readiness wait."""

from __future__ import annotations

from typing import Any

from chalice import Blueprint

from chalicelib import settings

bp = Blueprint(__name__)


@bp.route("/health", methods=["GET"])
def health() -> dict[str, Any]:
    snap = settings.snapshot()
    return {"status": "ok", "stage": snap.stage}
