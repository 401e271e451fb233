"""API keys have a lifecycle: listed (never shown), revoked, expiring, ``last_used``; keys in the
query string only where the scheduled family's seed wants them; tenants listed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY

CAMPAIGN = "/companies/{}/campaigns/config/callbacks"


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def _mint(client: Any, tenant_id: str, by: dict[str, str], **body: Any) -> Any:
    return client.http.post(f"/admin/tenants/{tenant_id}/keys", headers=by, body=json.dumps(body))


def _keys(client: Any, tenant_id: str, by: dict[str, str]) -> Any:
    return client.http.get(f"/admin/tenants/{tenant_id}/keys", headers=by)


def _works(client: Any, tenant_id: str, key: str) -> int:
    return int(client.http.get(CAMPAIGN.format(tenant_id), headers=_bearer(key)).status_code)


def test_a_listing_shows_every_key_but_never_the_key(client, make_tenant):
    owner = make_tenant("OWNER")
    minted = _mint(client, owner.tenant_id, owner.headers, role="VIEWER")
    assert minted.status_code == 201
    body = minted.json_body
    assert set(body) == {"key", "key_id", "role", "tenant_id", "created_at", "expires_at"}
    assert body["expires_at"] is None and len(body["key_id"]) == 24

    listed = _keys(client, owner.tenant_id, owner.headers)
    assert listed.status_code == 200
    rows = listed.json_body["keys"]
    assert sorted(r["role"] for r in rows) == ["OWNER", "VIEWER"]
    assert [r["created_at"] for r in rows] == sorted(r["created_at"] for r in rows)  # oldest first
    fields = {"key_id", "prefix", "role", "created_at", "last_used", "expires_at", "revoked_at"}
    assert all(set(r) == fields for r in rows)
    viewer = next(r for r in rows if r["key_id"] == body["key_id"])
    assert body["key"].startswith(viewer["prefix"]) and len(viewer["prefix"]) <= 8
    text = listed.body.decode()
    assert body["key"] not in text and owner.key not in text
    from chalicelib import settings

    assert settings.hash_key(owner.key) not in text  # nor a hash


def test_a_revoked_key_is_refused_at_once(client, make_tenant):
    owner = make_tenant("OWNER")
    minted = _mint(client, owner.tenant_id, owner.headers, role="MANAGER").json_body
    assert _works(client, owner.tenant_id, minted["key"]) == 200
    gone = client.http.delete(
        f"/admin/tenants/{owner.tenant_id}/keys/{minted['key_id']}", headers=owner.headers
    )
    assert gone.status_code == 204
    refused = client.http.get(CAMPAIGN.format(owner.tenant_id), headers=_bearer(minted["key"]))
    assert refused.status_code == 401 and refused.json_body["error"] == "unauthorized"
    again = client.http.delete(
        f"/admin/tenants/{owner.tenant_id}/keys/{minted['key_id']}", headers=owner.headers
    )
    assert again.status_code == 204  # idempotent
    [row] = [
        r
        for r in _keys(client, owner.tenant_id, owner.headers).json_body["keys"]
        if r["key_id"] == minted["key_id"]
    ]
    assert row["revoked_at"] is not None
    assert _works(client, owner.tenant_id, owner.key) == 200  # the others still work


def test_revoking_an_unknown_key_is_not_found(client, make_tenant):
    owner = make_tenant("OWNER")
    for key_id in ("0" * 24, "nothex", "a" * 200):
        response = client.http.delete(
            f"/admin/tenants/{owner.tenant_id}/keys/{key_id}", headers=owner.headers
        )
        assert response.status_code == 404 and response.json_body["error"] == "not_found"


def test_who_manages_whose_keys(client, make_tenant, admin_headers):
    reseller = make_tenant("RESELLER")
    child = make_tenant("OWNER", parent=reseller.tenant_id)
    stranger = make_tenant("OWNER")
    manager = make_tenant("MANAGER", tenant_id=child.tenant_id)
    key_id = _mint(client, child.tenant_id, child.headers, role="VIEWER").json_body["key_id"]
    path = f"/admin/tenants/{child.tenant_id}/keys"
    for who, status in (
        (child, 200),
        (reseller, 200),
        (stranger, 403),
        (manager, 403),
    ):
        assert _keys(client, child.tenant_id, who.headers).status_code == status, who.role
    assert _keys(client, child.tenant_id, admin_headers).status_code == 200
    refused = client.http.delete(f"{path}/{key_id}", headers=stranger.headers)
    assert refused.status_code == 403 and refused.json_body["error"] == "forbidden"
    assert client.http.delete(f"{path}/{key_id}", headers=reseller.headers).status_code == 204
    # an OWNER cannot revoke a key it could not have minted (its reseller's key)
    reseller_key_id = _keys(client, reseller.tenant_id, reseller.headers).json_body["keys"][0][
        "key_id"
    ]
    owner_of_reseller = make_tenant("OWNER", tenant_id=reseller.tenant_id)
    refused = client.http.delete(
        f"/admin/tenants/{reseller.tenant_id}/keys/{reseller_key_id}",
        headers=owner_of_reseller.headers,
    )
    assert refused.status_code == 403
    assert _works(client, reseller.tenant_id, reseller.key) == 200
    assert (
        client.http.delete(
            f"/admin/tenants/{reseller.tenant_id}/keys/{reseller_key_id}", headers=admin_headers
        ).status_code
        == 204
    )
    assert _works(client, reseller.tenant_id, reseller.key) == 401


def test_a_key_expires(client, make_tenant, monkeypatch):
    owner = make_tenant("OWNER")
    soon = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    minted = _mint(
        client, owner.tenant_id, owner.headers, role="VIEWER", expires_at=soon.isoformat()
    )
    assert minted.status_code == 201
    assert minted.json_body["expires_at"] == soon.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert _works(client, owner.tenant_id, minted.json_body["key"]) == 200
    from chalicelib.api import auth

    later = soon + timedelta(seconds=1)
    monkeypatch.setattr(auth, "utcnow", lambda: later)
    assert _works(client, owner.tenant_id, minted.json_body["key"]) == 401
    assert _works(client, owner.tenant_id, owner.key) == 200


@pytest.mark.parametrize(
    "expires_at", ["2001-01-01T00:00:00Z", "tomorrow", "2030-01-01T00:00:00", 12]
)
def test_a_bad_expiry_is_refused(client, make_tenant, expires_at):
    owner = make_tenant("OWNER")
    response = _mint(client, owner.tenant_id, owner.headers, role="VIEWER", expires_at=expires_at)
    assert response.status_code == 400 and response.json_body["field"] == "expires_at"


def test_last_used_is_written_at_most_once_a_minute(client, make_tenant, monkeypatch):
    from chalicelib.api import auth
    from chalicelib.storage import tenants

    owner = make_tenant("OWNER")
    writes: list[str] = []
    real_touch = tenants.touch

    def counting(record: Any, now: datetime) -> bool:
        wrote = real_touch(record, now)
        if wrote:
            writes.append(record.key_id)
        return wrote

    monkeypatch.setattr(tenants, "touch", counting)
    start = datetime(2030, 1, 1, tzinfo=UTC)
    for offset in (0, 5, 30, 59):
        monkeypatch.setattr(auth, "utcnow", lambda o=offset: start + timedelta(seconds=o))
        assert _works(client, owner.tenant_id, owner.key) == 200
    assert len(writes) == 1
    monkeypatch.setattr(auth, "utcnow", lambda: start + timedelta(seconds=61))
    assert _works(client, owner.tenant_id, owner.key) == 200
    assert len(writes) == 2
    [row] = _keys(client, owner.tenant_id, owner.headers).json_body["keys"]
    assert row["last_used"] == "2030-01-01T00:01:01Z"


def test_a_key_in_the_query_string_is_refused_outside_the_scheduled_family(client, make_tenant):
    owner = make_tenant("OWNER")
    t = owner.tenant_id
    for path in (CAMPAIGN.format(t), f"/admin/tenants/{t}", f"/customer/{t}/callnotify"):
        response = client.http.get(f"{path}?api_key={owner.key}")
        assert response.status_code == 401, path
        assert "Authorization header" in response.json_body["message"]
        assert response.json_body["error"] == "unauthorized"
        # refused even with a valid header beside it: the key has leaked into a URL
        both = client.http.get(f"{path}?api_key={owner.key}", headers=_bearer(owner.key))
        assert both.status_code == 401, path
    notif = client.http.get(f"/rest/api/v1.3/notifications/callbacks?api_key={owner.key}")
    assert notif.status_code == 401 and notif.json_body["errorCode"] == "UNAUTHORIZED"
    assert "Authorization header" in notif.json_body["detail"]
    # the scheduled family's seed takes it there
    listed = client.http.get(f"/api/1.0/list/?api_key={owner.key}")
    assert listed.status_code == 200 and json.loads(listed.body)["success"] == 1


def test_tenants_are_listed_and_paged(client, make_tenant, admin_headers):
    reseller = make_tenant("RESELLER")
    children = [make_tenant("OWNER", parent=reseller.tenant_id).tenant_id for _ in range(3)]
    others = [make_tenant("OWNER").tenant_id for _ in range(2)]
    seen: list[str] = []
    cursor = None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.http.get(f"/admin/tenants{query}", headers=reseller.headers)
        assert page.status_code == 200, page.body
        seen += [t["tenant_id"] for t in page.json_body["tenants"]]
        cursor = page.json_body["next_cursor"]
        if cursor is None:
            break
    # its children only, each once (oldest first: these share a creation second)
    assert sorted(seen) == sorted(children) and len(seen) == len(children)
    everyone = client.http.get("/admin/tenants?limit=1000", headers=admin_headers).json_body
    listed = {t["tenant_id"] for t in everyone["tenants"]}
    assert set(children + others + [reseller.tenant_id]) <= listed
    assert everyone["next_cursor"] is None
    owner = make_tenant("OWNER")
    assert client.http.get("/admin/tenants", headers=owner.headers).status_code == 403
    bad = client.http.get("/admin/tenants?cursor=abc", headers=reseller.headers)
    assert bad.status_code == 400 and bad.json_body["field"] == "cursor"
    for limit in ("0", "1001", "x", "\u00b2"):
        bad = client.http.get(f"/admin/tenants?limit={limit}", headers=reseller.headers)
        assert bad.status_code == 400 and bad.json_body["field"] == "limit", limit
    # the admin's cursor is no use to a reseller
    first = client.http.get("/admin/tenants?limit=1", headers=admin_headers).json_body
    stolen = client.http.get(
        f"/admin/tenants?cursor={first['next_cursor']}", headers=reseller.headers
    )
    assert stolen.status_code == 400


def test_the_admin_key_is_not_a_listed_key(client, admin_headers):
    assert ADMIN_KEY not in client.http.get("/admin/tenants", headers=admin_headers).body.decode()
