"""``python -m infra.backfill``: deliveries written before the sparse ``by_event_key`` index are
listed by their event again after the backfill; nothing else changes, and a second run does
nothing."""

from __future__ import annotations

import json


def _old_release_event(tenant_id: str, event_id: str, delivery_ids: list[str]) -> None:
    """An event and its deliveries as the previous release wrote them: the record lists none,
    the deliveries carry no ``event_key``."""
    from chalicelib.storage import deliveries
    from chalicelib.storage.deliveries import EventModel, NewDelivery

    EventModel(
        event_id,
        tenant_id=tenant_id,
        event_type="order.paid",
        received_at="2026-11-29T10:00:00Z",
        payload=json.dumps({}),
        delivery_count=len(delivery_ids),
        fanned_out=True,
    ).save()
    for delivery_id in delivery_ids:
        record = deliveries.build(
            NewDelivery(delivery_id, tenant_id, event_id, "campaign", "t", "https://x.test/", {}),
            "2026-11-29T10:00:00Z",
            event_index=False,
        )
        record.save()


def test_old_deliveries_are_listed_by_their_event_after_the_backfill(aws, client, make_tenant):
    from chalicelib.delivery import ingest
    from chalicelib.storage import deliveries
    from infra import backfill
    from tests.test_delivery_engine import register

    owner = make_tenant()
    _old_release_event(owner.tenant_id, "e" * 24, ["d1" + "0" * 22, "d2" + "0" * 22])
    register(client, owner, "https://receiver.test/hook")
    fresh = ingest.publish(owner.tenant_id, "order.paid", {})  # this release: listed on its record
    [fresh_delivery] = deliveries.event_page(fresh.event_id).records
    event = client.http.get(f"/events/{'e' * 24}", headers=owner.headers).json_body
    assert event["deliveries"] == []  # what an upgraded stage shows before the backfill

    report = backfill.backfill_event_keys()
    assert (report.indexed, report.listed_on_event) == (2, 1)
    event = client.http.get(f"/events/{'e' * 24}", headers=owner.headers).json_body
    assert sorted(d["delivery_id"] for d in event["deliveries"]) == [
        "d1" + "0" * 22,
        "d2" + "0" * 22,
    ]
    assert deliveries.get(fresh_delivery.delivery_id).event_key is None  # left alone
    again = backfill.backfill_event_keys()
    assert again.indexed == 0 and again.already_indexed == 2
