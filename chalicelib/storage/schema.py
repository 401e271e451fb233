"""Every table the app uses, in one list: the local stack and tests create them from here,
and the infra template is generated from it."""

from __future__ import annotations

from pynamodb.models import Model

from chalicelib.storage.callnotify import CallNotifierModel
from chalicelib.storage.campaign import CampaignRegistrationModel
from chalicelib.storage.deliveries import DeliveryModel, EventModel
from chalicelib.storage.due import DueItemModel
from chalicelib.storage.guards import GuardModel
from chalicelib.storage.notification import (
    NotificationCallbackModel,
    NotificationSubscriptionModel,
)
from chalicelib.storage.notification_buffer import NotificationBufferModel
from chalicelib.storage.portal import PortalTokenModel
from chalicelib.storage.quotas import QuotaModel
from chalicelib.storage.scheduled import ScheduledCallbackModel
from chalicelib.storage.tenants import ApiKeyModel, TenantModel

ALL_MODELS: list[type[Model]] = [
    TenantModel,
    ApiKeyModel,
    GuardModel,
    CampaignRegistrationModel,
    EventModel,
    DeliveryModel,
    DueItemModel,
    NotificationCallbackModel,
    NotificationSubscriptionModel,
    NotificationBufferModel,
    ScheduledCallbackModel,
    CallNotifierModel,
    PortalTokenModel,
    QuotaModel,
]

TTL_ATTRIBUTES: dict[str, str] = {
    model.Meta.table_name: "expires_at"
    for model in (
        GuardModel,
        EventModel,
        DeliveryModel,
        ScheduledCallbackModel,
        PortalTokenModel,
        NotificationBufferModel,
    )
}
"""Tables whose items DynamoDB deletes once ``expires_at`` (epoch seconds) has passed: guards
(idempotency keys, fan-out chunks), portal links and sessions, buffered notification events
(a flush moves past them instead of deleting each), and, after the stage's retention
period (``RINGBACK_RETENTION_DAYS``), events, deliveries with their attempts and finished
scheduled callbacks. The embedded AWS never deletes them; readers treat expired items as gone."""
