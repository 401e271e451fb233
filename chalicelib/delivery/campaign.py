"""The campaign registrations family in the delivery engine."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

from chalicelib.delivery import registry
from chalicelib.delivery.registry import HttpOutbound, Outbound, PublishedEvent, Skip, Target
from chalicelib.domain import campaign_payload, flow
from chalicelib.domain.campaign import is_active
from chalicelib.domain.timeutil import fmt
from chalicelib.storage import campaign as store
from chalicelib.storage import read_cache, secrets
from chalicelib.storage.deliveries import DeliveryModel


def signing_secrets(reg: store.CampaignRegistrationModel) -> tuple[str, ...]:
    """The current secret, plus the previous one while its 24 h overlap lasts."""
    return secrets.signing_set(
        reg.secret_enc,
        reg.previous_secret_enc,
        reg.previous_secret_until,
        store.secret_context(reg.company_id, reg.callback_id),
        fmt(datetime.now(UTC)),
    )


def limits_content(reg: store.CampaignRegistrationModel) -> dict[str, object]:
    """The registration's flow-control limits, copied into each delivery's content."""
    rate = float(reg.rate_limit) if reg.rate_limit is not None else None
    most = int(reg.max_in_flight) if reg.max_in_flight is not None else None
    return flow.to_content(flow.Limits(rate, most))


class CampaignFamily:
    name = "campaign"

    def match(self, event: PublishedEvent) -> Sequence[Target]:
        at = event.received_at
        return [
            Target(self.name, reg.callback_id, reg.destination_url, limits_content(reg))
            for reg in read_cache.once(
                ("campaign", event.tenant_id, event.event_type),
                lambda: list(store.registrations_for_event(event.tenant_id, event.event_type)),
            )
            if is_active(reg.start_date, reg.end_date, bool(reg.deleted), at)
            and not reg.disabled_reason
            and (not reg.campaign_id or reg.campaign_id == event.campaign_id)
        ]

    def prepare(self, delivery: DeliveryModel, attempt_no: int, use_backup: bool) -> Outbound:
        reg = store.get_registration(delivery.tenant_id, delivery.target_id)
        if reg is None:
            return Skip("the registration no longer exists")
        if reg.disabled_reason:
            return Skip(f"the registration is disabled: {reg.disabled_reason}")
        url = reg.backup_url if use_backup and reg.backup_url else reg.destination_url
        data = campaign_payload.fields(json.loads(delivery.content), attempt_no)
        body, params, headers = campaign_payload.render(
            data, reg.destination_method, reg.content_type
        )
        return HttpOutbound(
            method=reg.destination_method,
            url=url,
            headers=headers,
            body=body,
            params=params,
            signing_secrets=signing_secrets(reg),
        )

    def target_gone(self, delivery: DeliveryModel, reason: str) -> None:
        store.disable(delivery.tenant_id, delivery.target_id, reason)

    def limits(self, delivery: DeliveryModel) -> flow.Limits | None:
        return flow.from_content(json.loads(delivery.content))


registry.register_family(CampaignFamily())
