"""Creates whose write AWS applied and then answered with an error (issue 12, "the nasty case").

The SDK retries such a call, and the retry of a conditional write fails its condition against
the write it already made. Found by the soak's third run: a scheduled create answered 409
``callback_already_exists`` to its own first request. Every create must recognise its own
committed write and answer as for a fresh create, with the object stored once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest


@pytest.fixture
def applied_then_retried(monkeypatch) -> Iterator[list[str]]:
    """The next call of each operation named in the returned list is applied, then made again
    (as botocore's retry of a call whose answer was a 500): the caller sees the second answer."""
    from pynamodb.connection.base import Connection

    real = Connection._make_api_call
    armed: list[str] = []
    fired: list[str] = []

    def call(self, operation_name, operation_kwargs):
        if operation_name in armed:
            armed.remove(operation_name)
            fired.append(operation_name)
            real(self, operation_name, operation_kwargs)  # applied; the answer is lost
        return real(self, operation_name, operation_kwargs)

    monkeypatch.setattr(Connection, "_make_api_call", call)
    yield armed
    assert not armed, f"never called: {armed}"


def test_scheduled_create(client, make_tenant, applied_then_retried):
    from tests.scheduled_helpers import iso_in
    from tests.test_scheduled_firing import create

    owner = make_tenant()
    applied_then_retried.append("TransactWriteItems")
    made = create(client, owner, "http://127.0.0.1:9/x", iso_in(3600))
    assert made["callback_id"]
    listed = client.http.get(f"/api/1.0/list/?api_key={owner.key}")
    assert listed.body.count(made["callback_id"].encode()) >= 1


def test_campaign_create(client, make_tenant, applied_then_retried):
    owner = make_tenant()
    url = f"/companies/{owner.tenant_id}/campaigns/config/callbacks"
    applied_then_retried.append("TransactWriteItems")
    body = {"event_type": "order.paid", "destination_url": "http://127.0.0.1:9/x"}
    response = client.http.post(url, headers=owner.headers, body=json.dumps(body))
    assert response.status_code == 201, response.json_body
    listed = client.http.get(url, headers=owner.headers).json_body
    assert [r["callback_id"] for r in listed] == [response.json_body["callback_id"]]


def test_callnotify_create(client, make_tenant, applied_then_retried):
    owner = make_tenant()
    applied_then_retried.append("PutItem")
    body = {"url": "http://127.0.0.1:4000/call", "method": "POSTXML1", "selection": "MVNO"}
    response = client.http.post(
        f"/customer/{owner.tenant_id}/callnotify", headers=owner.headers, body=json.dumps(body)
    )
    assert response.status_code in (200, 201), response.json_body


def test_tenant_and_key_creates(client, admin_headers, applied_then_retried):
    applied_then_retried.append("PutItem")
    tenant = client.http.post(
        "/admin/tenants", headers=admin_headers, body=json.dumps({"name": "Acme"})
    )
    assert tenant.status_code == 201, tenant.json_body
    applied_then_retried.append("PutItem")
    key = client.http.post(
        f"/admin/tenants/{tenant.json_body['tenant_id']}/keys",
        headers=admin_headers,
        body=json.dumps({"role": "OWNER"}),
    )
    assert key.status_code == 201, key.json_body
    me = client.http.get(
        f"/admin/tenants/{tenant.json_body['tenant_id']}",
        headers={"Authorization": f"Bearer {key.json_body['key']}"},
    )
    assert me.status_code == 200


def test_notification_callback_create(aws, applied_then_retried):
    from chalicelib.domain.notification import CallbackSpec
    from chalicelib.domain.timeutil import utcnow
    from chalicelib.storage import notification as store

    applied_then_retried.append("TransactWriteItems")
    spec = CallbackSpec("orders_cb", "http://127.0.0.1:9/x", None, 10, "u", "p4ssword!")
    record = store.create_callback("a" * 24, spec, "whsec_" + "A" * 32, utcnow())
    assert store.get_callback("a" * 24, "orders_cb").callback_id == record.callback_id
