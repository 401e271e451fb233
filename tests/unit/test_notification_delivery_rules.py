"""Pure rules added for the notification API and delivery: verify outcome, publish-time payload
checks, delete/verify bodies."""

from __future__ import annotations

import pytest

from chalicelib.domain.notification import (
    check_event_payload,
    connection_verified,
    deleted_view,
    is_valid_name,
    verified_view,
)


@pytest.mark.parametrize("status", [200, 201, 204, 299, 400, 404, 405, 409, 422, 429])
def test_answers_that_prove_url_and_credentials(status: int) -> None:
    assert connection_verified(status)


@pytest.mark.parametrize("status", [100, 301, 302, 307, 401, 403, 407, 500, 502, 503])
def test_answers_that_do_not(status: int) -> None:
    assert not connection_verified(status)


def test_bodies() -> None:
    assert deleted_view("CallBack", "cb") == {
        "message": "CallBack [cb] deleted successfully",
        "status": True,
    }
    assert verified_view("cb") == {"status": "Successfully verified [cb] "}


def test_names() -> None:
    assert is_valid_name("orders_cb.v2-1")
    assert not is_valid_name("-x") and not is_valid_name("a/b") and not is_valid_name(5)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"campaignId": 1.5}, "campaignId"),
        ({"riid": True}, "riid"),
        ({"campaignName": 7}, "campaignName"),
        ({"campaignName": ""}, "campaignName"),
        ({"failureReason": 1}, "failureReason"),
        ({"channelType": "SMS"}, "channelType"),
        ({"optionalData": "x" * 33_000}, "optionalData"),
    ],
)
def test_payloads_refused_for_listed_events(payload: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        check_event_payload("EMAIL_BOUNCED", payload)


def test_payloads_accepted() -> None:
    check_event_payload(
        "SMS_FAILED",
        {
            "campaignId": "c-1",
            "riid": 5,
            "campaignName": "spring",
            "channelType": "SMS",
            "optionalData": {"any": ["json"]},
            "unknown": object(),  # dropped at delivery, not checked
        },
    )
    check_event_payload("order.paid", {"campaignName": 7})  # not a notification event
