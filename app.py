"""Ringback: the Chalice app. It only wires blueprints and event handlers (code: chalicelib)."""

from __future__ import annotations

from typing import Any

from chalice import Chalice, Rate
from chalice.app import CloudWatchEvent, SQSEvent

from chalicelib import logs
from chalicelib.api import admin, campaign, events, health
from chalicelib.api import callnotify as callnotify_api
from chalicelib.api import notification as notification_api
from chalicelib.api import openapi as openapi_api
from chalicelib.api import scheduled as scheduled_api
from chalicelib.api.errors import error_middleware
from chalicelib.delivery import engine
from chalicelib.queues import delivery_queue

app = Chalice(app_name="ringback")
app.debug = False  # never a traceback in a response, whatever the stage
logs.configure(app.log)  # JSON lines for app.log and every ringback.* module logger
app.register_middleware(error_middleware, "http")

app.register_blueprint(health.bp)
app.register_blueprint(admin.bp)
app.register_blueprint(campaign.bp)
app.register_blueprint(events.bp)
app.register_blueprint(scheduled_api.bp)
app.register_blueprint(notification_api.bp)
app.register_blueprint(callnotify_api.bp)
app.register_blueprint(openapi_api.bp)

_QUEUE = delivery_queue()


@app.on_sqs_message(queue=_QUEUE.name, batch_size=10, name="dispatcher")
def dispatcher(event: SQSEvent) -> dict[str, Any]:
    return engine.on_work_batch([record.to_dict() for record in event])


@app.on_sqs_message(queue=_QUEUE.dlq_name, batch_size=10, name="dead_letters")
def dead_letters(event: SQSEvent) -> None:
    engine.on_dead_letters([record.to_dict() for record in event])


@app.schedule(Rate(1, unit=Rate.MINUTES), name="sweeper")
def sweeper(event: CloudWatchEvent) -> dict[str, int]:
    return engine.on_sweep(window=60.0)


@app.schedule(Rate(1, unit=Rate.MINUTES), name="reconciler")
def reconciler(event: CloudWatchEvent) -> dict[str, int]:
    return engine.on_reconcile()
