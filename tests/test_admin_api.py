"""Tenants and keys through the admin API."""

from __future__ import annotations

import json


def test_admin_creates_tenant_and_owner_key_that_works(client, admin_headers):
    created = client.http.post(
        "/admin/tenants", headers=admin_headers, body=json.dumps({"name": "Acme"})
    )
    assert created.status_code == 201
    tenant_id = created.json_body["tenant_id"]
    assert len(tenant_id) == 24 and all(c in "0123456789abcdef" for c in tenant_id)
    assert created.json_body["name"] == "Acme"

    key = client.http.post(
        f"/admin/tenants/{tenant_id}/keys",
        headers=admin_headers,
        body=json.dumps({"role": "OWNER"}),
    )
    assert key.status_code == 201
    assert key.json_body["role"] == "OWNER" and key.json_body["tenant_id"] == tenant_id
    secret = key.json_body["key"]
    listed = client.http.get(
        f"/companies/{tenant_id}/campaigns/config/callbacks",
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert listed.status_code == 200 and listed.json_body == []


def test_keys_are_stored_only_as_hashes(client, admin_headers, aws):
    import boto3

    tenant_id = client.http.post(
        "/admin/tenants", headers=admin_headers, body=json.dumps({"name": "Hash"})
    ).json_body["tenant_id"]
    secret = client.http.post(
        f"/admin/tenants/{tenant_id}/keys",
        headers=admin_headers,
        body=json.dumps({"role": "VIEWER"}),
    ).json_body["key"]
    from chalicelib.storage.tenants import ApiKeyModel

    items = boto3.client("dynamodb").scan(TableName=ApiKeyModel.Meta.table_name)["Items"]
    assert items, "the key was stored"
    assert secret not in json.dumps(items)


def test_reseller_mints_keys_for_children_not_strangers(client, make_tenant):
    reseller = make_tenant("RESELLER")
    child = client.http.post(
        "/admin/tenants", headers=reseller.headers, body=json.dumps({"name": "Kid"})
    )
    assert child.status_code == 201
    assert child.json_body["parent_id"] == reseller.tenant_id
    child_id = child.json_body["tenant_id"]
    ok = client.http.post(
        f"/admin/tenants/{child_id}/keys",
        headers=reseller.headers,
        body=json.dumps({"role": "MANAGER"}),
    )
    assert ok.status_code == 201
    escalate = client.http.post(
        f"/admin/tenants/{child_id}/keys",
        headers=reseller.headers,
        body=json.dumps({"role": "ADMIN"}),
    )
    assert escalate.status_code == 403
    stranger = make_tenant("OWNER")
    denied = client.http.post(
        f"/admin/tenants/{stranger.tenant_id}/keys",
        headers=reseller.headers,
        body=json.dumps({"role": "VIEWER"}),
    )
    assert denied.status_code == 403


def test_admin_routes_refuse_missing_bad_and_weak_keys(client, make_tenant, admin_headers):
    owner = make_tenant("OWNER")
    body = json.dumps({"name": "x"})
    assert client.http.post("/admin/tenants", body=body).status_code == 401
    assert (
        client.http.post("/admin/tenants", headers={"Authorization": "junk"}, body=body).status_code
        == 401
    )
    assert client.http.post("/admin/tenants", headers=owner.headers, body=body).status_code == 403
    bad_role = client.http.post(
        f"/admin/tenants/{owner.tenant_id}/keys",
        headers=admin_headers,
        body=json.dumps({"role": "GOD"}),
    )
    assert bad_role.status_code == 400 and bad_role.json_body["field"] == "role"
    assert client.http.post("/admin/tenants", headers=admin_headers, body="{").status_code == 400
    missing = client.http.post(
        f"/admin/tenants/{'b' * 24}/keys",
        headers=admin_headers,
        body=json.dumps({"role": "VIEWER"}),
    )
    assert missing.status_code == 404


def test_owner_may_mint_keys_for_its_own_tenant_but_a_manager_may_not(client, make_tenant):
    owner = make_tenant("OWNER")
    manager = make_tenant("MANAGER", tenant_id=owner.tenant_id)
    url = f"/admin/tenants/{owner.tenant_id}/keys"
    assert (
        client.http.post(
            url, headers=owner.headers, body=json.dumps({"role": "VIEWER"})
        ).status_code
        == 201
    )
    assert (
        client.http.post(
            url, headers=owner.headers, body=json.dumps({"role": "RESELLER"})
        ).status_code
        == 403
    )
    assert (
        client.http.post(
            url, headers=manager.headers, body=json.dumps({"role": "VIEWER"})
        ).status_code
        == 403
    )


def test_health(client):
    response = client.http.get("/health")
    assert response.status_code == 200 and response.json_body["status"] == "ok"
