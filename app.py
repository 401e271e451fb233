"""Ringback: the Chalice app. It only wires blueprints and event handlers (code: chalicelib)."""

from __future__ import annotations

from chalice import Chalice

from chalicelib.api import admin, campaign, health
from chalicelib.api.errors import error_middleware

app = Chalice(app_name="ringback")
app.debug = False  # never a traceback in a response, whatever the stage
app.register_middleware(error_middleware, "http")

app.register_blueprint(health.bp)
app.register_blueprint(admin.bp)
app.register_blueprint(campaign.bp)
