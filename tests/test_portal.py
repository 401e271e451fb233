"""Portal sessions over HTTP (``chalice.test.Client``): who may ask for a link, single use,
expiry, the cookie's flags, CSRF and read-only rights on the API's own routes, the CSP.

The real-browser journey is in ``test_portal_browser.py``."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import TenantKey

CAMPAIGN = "/companies/{}/campaigns/config/callbacks"


def _json(response: Any) -> Any:
    return json.loads(response.body) if response.body else None


def _link(client: Any, headers: dict[str, str], **body: Any) -> Any:
    return client.http.post("/portal/sessions", headers=headers, body=json.dumps(body))


def _login(client: Any, url: str) -> Any:
    parts = urlsplit(url)
    return client.http.get(f"{parts.path}?{parts.query}")


def _cookie(response: Any) -> str:
    header = response.headers["Set-Cookie"]
    return header.split(";", 1)[0]


def _session(client: Any, owner: TenantKey, rights: str = "manage") -> tuple[str, str]:
    link = _json(_link(client, owner.headers, rights=rights))["url"]
    cookie = _cookie(_login(client, link))
    info = _json(client.http.get("/portal/session", headers={"Cookie": cookie}))
    return cookie, info["csrf_token"]


def test_an_owner_gets_a_single_use_link_that_becomes_a_cookie_session(client, make_tenant):
    owner = make_tenant("OWNER")
    created = _link(client, owner.headers, rights="manage")
    assert created.status_code == 201
    body = _json(created)
    assert body["tenant_id"] == owner.tenant_id and body["rights"] == "manage"
    assert "/portal/login?token=" in body["url"]

    opened = _login(client, body["url"])
    assert opened.status_code == 303
    assert opened.headers["Location"] == "/portal"  # the token is not carried on
    cookie = opened.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # the local stage serves plain HTTP
    assert body["url"].split("token=")[1] not in cookie

    again = _login(client, body["url"])
    assert again.status_code == 410
    assert "Set-Cookie" not in again.headers


def test_the_cookie_is_secure_outside_the_local_stage(client, make_tenant, monkeypatch):
    owner = make_tenant("OWNER")
    link = _json(_link(client, owner.headers))["url"]
    monkeypatch.setenv("RINGBACK_STAGE", "prod")
    from chalicelib.portal import session

    assert "Secure" in session.cookie_header("x", 10)
    monkeypatch.setenv("RINGBACK_STAGE", "local")
    assert "Secure" not in session.cookie_header("x", 10)
    assert _login(client, link).status_code == 303


def test_an_expired_link_is_refused(client, make_tenant):
    owner = make_tenant("OWNER")
    from chalicelib.storage import portal

    token, _ = portal.create_link(
        owner.tenant_id,
        "read",
        link_seconds=60,
        session_seconds=60,
        created_by="OWNER",
        now=time.time() - 120,
    )
    response = client.http.get(f"/portal/login?token={token}")
    assert response.status_code == 410
    assert "Set-Cookie" not in response.headers


def test_an_unknown_or_session_token_is_not_a_link(client, make_tenant):
    owner = make_tenant("OWNER")
    cookie, _ = _session(client, owner)
    session_token = cookie.split("=", 1)[1]
    assert client.http.get(f"/portal/login?token={session_token}").status_code == 410
    assert client.http.get("/portal/login?token=rbl_nope").status_code == 410
    assert client.http.get("/portal/login").status_code == 410


@pytest.mark.parametrize("role", ["VIEWER", "MANAGER"])
def test_only_owners_resellers_and_admins_may_ask_for_a_link(client, make_tenant, role):
    key = make_tenant(role)
    response = _link(client, key.headers)
    assert response.status_code == 403
    assert _json(response)["error"] == "forbidden"


def test_admin_and_reseller_links_are_limited_to_the_named_tenant(
    client, make_tenant, admin_headers
):
    reseller = make_tenant("RESELLER")
    child = make_tenant("OWNER", parent=reseller.tenant_id)
    other = make_tenant("OWNER")
    assert _link(client, admin_headers).status_code == 400  # admin must name a tenant
    for headers in (admin_headers, reseller.headers):
        made = _link(client, headers, tenant_id=child.tenant_id, rights="read")
        assert made.status_code == 201, made.body
        assert _json(made)["tenant_id"] == child.tenant_id
    assert _link(client, reseller.headers, tenant_id=other.tenant_id).status_code == 403
    assert _link(client, other.headers, tenant_id=child.tenant_id).status_code == 403

    link = _json(_link(client, admin_headers, tenant_id=child.tenant_id, rights="manage"))["url"]
    cookie = _cookie(_login(client, link))
    own = client.http.get(CAMPAIGN.format(child.tenant_id), headers={"Cookie": cookie})
    assert own.status_code == 200
    # An admin's link gives the tenant's rights, never the admin's.
    foreign = client.http.get(CAMPAIGN.format(other.tenant_id), headers={"Cookie": cookie})
    assert foreign.status_code == 403


def test_read_only_may_be_spelled_as_the_issue_does(client, make_tenant):
    owner = make_tenant("OWNER")
    for spelling in ("read-only", "read_only"):
        made = _link(client, owner.headers, rights=spelling)
        assert made.status_code == 201
        assert _json(made)["rights"] == "read"


def test_bad_link_requests_get_the_house_400(client, make_tenant):
    owner = make_tenant("OWNER")
    for body, field in (
        ({"rights": "admin"}, "rights"),
        ({"rights": ["manage"]}, "rights"),
        ({"expires_in": 0}, "expires_in"),
        ({"expires_in": 99999}, "expires_in"),
        ({"tenant_id": 5}, "tenant_id"),
    ):
        response = _link(client, owner.headers, **body)
        assert response.status_code == 400
        assert _json(response)["field"] == field
    assert client.http.post("/portal/sessions", body="{}").status_code == 401


def test_a_session_cannot_mint_links(client, make_tenant):
    owner = make_tenant("OWNER")
    cookie, csrf = _session(client, owner)
    response = client.http.post(
        "/portal/sessions",
        headers={"Cookie": cookie, "X-CSRF-Token": csrf, "Content-Type": "application/json"},
        body="{}",
    )
    assert response.status_code == 401


def _registration() -> str:
    return json.dumps(
        {"event_type": "ack_participant_added", "destination_url": "http://127.0.0.1:9/hook"}
    )


def test_a_manage_session_writes_through_the_api_with_its_csrf_token(client, make_tenant):
    owner = make_tenant("OWNER")
    cookie, csrf = _session(client, owner, "manage")
    path = CAMPAIGN.format(owner.tenant_id)
    headers = {"Cookie": cookie, "Content-Type": "application/json"}
    missing = client.http.post(path, headers=headers, body=_registration())
    assert missing.status_code == 403
    wrong = client.http.post(
        path, headers={**headers, "X-CSRF-Token": "0" * 64}, body=_registration()
    )
    assert wrong.status_code == 403
    made = client.http.post(path, headers={**headers, "X-CSRF-Token": csrf}, body=_registration())
    assert made.status_code == 201, made.body
    listed = _json(client.http.get(path, headers={"Cookie": cookie}))
    assert [r["callback_id"] for r in listed] == [_json(made)["callback_id"]]


def test_a_read_session_reads_but_never_writes(client, make_tenant):
    owner = make_tenant("OWNER")
    cookie, csrf = _session(client, owner, "read")
    headers = {"Cookie": cookie, "X-CSRF-Token": csrf, "Content-Type": "application/json"}
    path = CAMPAIGN.format(owner.tenant_id)
    assert client.http.get(path, headers={"Cookie": cookie}).status_code == 200
    assert client.http.post(path, headers=headers, body=_registration()).status_code == 403
    # Call notifiers let a VIEWER key create; a read-only session still may not.
    notifiers = f"/customer/{owner.tenant_id}/callnotify"
    refused = client.http.post(
        notifiers,
        headers=headers,
        body=json.dumps({"url": "http://127.0.0.1:9/n", "method": "POSTJSON", "selection": "ALL"}),
    )
    assert refused.status_code == 401  # the family answers every authentication refusal so
    assert _json(client.http.get(notifiers, headers={"Cookie": cookie})) == []
    cancel = client.http.post("/portal/api/scheduled/" + "a" * 24 + "/cancel", headers=headers)
    assert cancel.status_code == 403


def test_logout_ends_the_session(client, make_tenant):
    owner = make_tenant("OWNER")
    cookie, csrf = _session(client, owner, "read")
    assert client.http.post("/portal/logout", headers={"Cookie": cookie}).status_code == 403
    out = client.http.post("/portal/logout", headers={"Cookie": cookie, "X-CSRF-Token": csrf})
    assert out.status_code == 204
    assert client.http.get("/portal/session", headers={"Cookie": cookie}).status_code == 401
    path = CAMPAIGN.format(owner.tenant_id)
    assert client.http.get(path, headers={"Cookie": cookie}).status_code == 401


def test_an_expired_session_is_refused(client, make_tenant):
    owner = make_tenant("OWNER")
    from chalicelib.storage import portal

    token, _ = portal.create_link(
        owner.tenant_id, "manage", link_seconds=60, session_seconds=1, created_by="OWNER"
    )
    spent = portal.exchange(token, now=time.time() - 10)
    assert spent is not None
    cookie = f"rb_portal={spent[0]}"
    assert client.http.get("/portal/session", headers={"Cookie": cookie}).status_code == 401
    path = CAMPAIGN.format(owner.tenant_id)
    assert client.http.get(path, headers={"Cookie": cookie}).status_code == 401


def test_pages_carry_a_strict_csp_and_no_inline_script(client, make_tenant):
    owner = make_tenant("OWNER")
    assert client.http.get("/portal").status_code == 401
    cookie, _ = _session(client, owner)
    page = client.http.get("/portal", headers={"Cookie": cookie})
    assert page.status_code == 200
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    text = page.body.decode() if isinstance(page.body, bytes) else page.body
    assert "<script src=" in text
    assert "<script>" not in text and " on" + "click=" not in text and "style=" not in text
    script = client.http.get("/portal/static/portal.js")
    assert script.status_code == 200
    assert script.headers["Content-Type"].startswith("text/javascript")
    source = script.body.decode() if isinstance(script.body, bytes) else script.body
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in source
    assert client.http.get("/portal/static/../app.py").status_code in (403, 404)
    assert client.http.get("/portal/static/nothing.js").status_code == 404


def test_the_link_token_and_session_never_reach_a_log_line(client, make_tenant, capsys):
    from app import app
    from chalicelib import logs

    logs.configure(app.log, "DEBUG")
    capsys.readouterr()
    try:
        _tokens_stay_out_of_logs(client, make_tenant, capsys)
    finally:
        logs.configure(app.log)


def _tokens_stay_out_of_logs(client: Any, make_tenant: Any, capsys: Any) -> None:
    owner = make_tenant("OWNER")
    link = _json(_link(client, owner.headers, rights="manage"))["url"]
    link_token = link.split("token=")[1]
    opened = _login(client, link)
    session_token = _cookie(opened).split("=", 1)[1]
    client.http.get("/portal/session", headers={"Cookie": _cookie(opened)})
    out = capsys.readouterr()
    logged = out.out + out.err
    assert "/portal/login" in logged and "/portal/session" in logged  # the requests are logged
    assert link_token not in logged and session_token not in logged
    from chalicelib import logs

    assert link_token not in logs.redact(f"GET /portal/login?token={link_token} HTTP/1.1")


def test_the_scheduled_timeline_and_cancel_use_the_scheduled_rules(client, make_tenant):
    from datetime import UTC, datetime, timedelta

    owner = make_tenant("OWNER")
    when = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0).isoformat()
    made = client.http.get(
        "/api/1.0/create?"
        + f"api_key={owner.key}&callback_url=http://127.0.0.1:9/s&callback_time={when}"
    )
    assert made.status_code == 200, made.body
    callback_id = _json(made)["callback_id"]
    cookie, csrf = _session(client, owner)
    listed = _json(client.http.get("/portal/api/scheduled", headers={"Cookie": cookie}))
    assert [c["callback_id"] for c in listed["callbacks"]] == [callback_id]
    cancelled = client.http.post(
        f"/portal/api/scheduled/{callback_id}/cancel",
        headers={"Cookie": cookie, "X-CSRF-Token": csrf},
    )
    assert cancelled.status_code == 200
    assert _json(cancelled)["state"] == "cancelled"
    after = _json(client.http.get("/portal/api/scheduled", headers={"Cookie": cookie}))
    assert after["callbacks"] == []
    other = make_tenant("OWNER")
    other_cookie, other_csrf = _session(client, other)
    foreign = client.http.post(
        f"/portal/api/scheduled/{callback_id}/cancel",
        headers={"Cookie": other_cookie, "X-CSRF-Token": other_csrf},
    )
    assert foreign.status_code == 404


def test_a_session_is_confined_to_its_tenant_in_every_family(client, make_tenant):
    """Another tenant's manage session gets what that tenant's own key would: refusals on the
    victim's paths, and only its own data on the own-tenant routes."""
    reseller = make_tenant("RESELLER")
    victim = make_tenant("OWNER", parent=reseller.tenant_id)
    made = client.http.post(
        CAMPAIGN.format(victim.tenant_id), headers=victim.headers, body=_registration()
    )
    assert made.status_code == 201
    victim_callback = _json(made)["callback_id"]
    # the reseller's own session (for its own tenant) does not carry its reseller powers
    for holder in (make_tenant("OWNER"), reseller):
        cookie, csrf = _session(client, holder, "manage")
        read = {"Cookie": cookie}
        write = {**read, "X-CSRF-Token": csrf, "Content-Type": "application/json"}
        victim_paths = (
            ("GET", CAMPAIGN.format(victim.tenant_id), None),
            ("GET", f"{CAMPAIGN.format(victim.tenant_id)}/{victim_callback}", None),
            ("DELETE", f"{CAMPAIGN.format(victim.tenant_id)}/{victim_callback}", None),
            ("POST", CAMPAIGN.format(victim.tenant_id), _registration()),
            ("GET", f"/deliveries?tenant_id={victim.tenant_id}&status=failed", None),
            ("POST", "/events", json.dumps({"tenant_id": victim.tenant_id, "event_type": "x"})),
            ("GET", f"/customer/{victim.tenant_id}/callnotify", None),
        )
        for method, path, body in victim_paths:
            headers = read if method == "GET" else write
            response = client.http.request(method, path, headers=headers, body=body or b"")
            assert response.status_code == 403, (holder.role, method, path, response.body)
        own = client.http.get("/rest/api/v1.3/notifications/callbacks", headers=read)
        assert own.status_code == 200 and _json(own) == []
    still = client.http.get(CAMPAIGN.format(victim.tenant_id), headers=victim.headers)
    assert [r["callback_id"] for r in _json(still)] == [victim_callback]


def test_the_page_creates_scheduled_callbacks_with_the_scheduled_rules(client, make_tenant):
    owner = make_tenant("OWNER")
    cookie, csrf = _session(client, owner)
    headers = {"Cookie": cookie, "X-CSRF-Token": csrf, "Content-Type": "application/json"}
    from datetime import UTC, datetime, timedelta

    later = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0).isoformat()
    body = {"callback_url": "http://127.0.0.1:9/s", "callback_time": later}
    made = client.http.post("/portal/api/scheduled", headers=headers, body=json.dumps(body))
    assert made.status_code == 201, made.body
    view = _json(made)
    assert view["state"] == "scheduled" and view["signing_secret"].startswith("whsec_")
    retrieved = client.http.get(f"/api/1.0/retrieve/{view['callback_id']}?api_key={owner.key}")
    assert _json(retrieved)["callback"]["callback_url"] == "http://127.0.0.1:9/s"
    again = client.http.post("/portal/api/scheduled", headers=headers, body=json.dumps(body))
    assert again.status_code == 409
    past = {"callback_url": "http://127.0.0.1:9/s", "callback_time": "2020-01-01T00:00:00Z"}
    expired = client.http.post("/portal/api/scheduled", headers=headers, body=json.dumps(past))
    assert expired.status_code == 400
    assert _json(expired)["error"] == "callback_time_expired"
    read_cookie, read_csrf = _session(client, owner, "read")
    refused = client.http.post(
        "/portal/api/scheduled",
        headers={**headers, "Cookie": read_cookie, "X-CSRF-Token": read_csrf},
        body=json.dumps({**body, "callback_url": "http://127.0.0.1:9/t"}),
    )
    assert refused.status_code == 403


def test_health_counts_finished_deliveries_per_target(client, make_tenant, worker, httpserver):
    owner = make_tenant("OWNER")
    httpserver.expect_request("/ok").respond_with_data("ok")
    httpserver.expect_request("/bad").respond_with_data("no", status=500)
    for path in ("/ok", "/bad"):
        made = client.http.post(
            CAMPAIGN.format(owner.tenant_id),
            headers=owner.headers,
            body=json.dumps(
                {
                    "event_type": f"health{path.replace('/', '.')}",
                    "destination_url": httpserver.url_for(path),
                }
            ),
        )
        assert made.status_code == 201, made.body
    for event_type, times in (("health.ok", 2), ("health.bad", 1)):
        for _ in range(times):
            published = client.http.post(
                "/events", headers=owner.headers, body=json.dumps({"event_type": event_type})
            )
            assert published.status_code == 202
    worker.run_until_idle(timeout=60)
    cookie, _ = _session(client, owner, "read")
    health = _json(client.http.get("/portal/api/health", headers={"Cookie": cookie}))
    by_target = {t["target"]: t for t in health["targets"]}
    ok = by_target[httpserver.url_for("/ok")]
    bad = by_target[httpserver.url_for("/bad")]
    assert ok["24h"] == {"delivered": 2, "failed": 0, "skipped": 0, "success_rate": 1.0}
    assert bad["7d"] == {"delivered": 0, "failed": 1, "skipped": 0, "success_rate": 0.0}
    assert health["capped"] is False


def test_make_run_prints_a_working_manage_link_for_a_demo_tenant(client):
    from devstack.run import _portal_link

    printed = _portal_link("http://127.0.0.1:8000")
    url, _, note = printed.partition("\n")
    assert url.startswith("http://127.0.0.1:8000/portal/login?token=rbl_")
    assert "manage" in note and "demo" in note
    opened = _login(client, url)
    assert opened.status_code == 303
    info = _json(client.http.get("/portal/session", headers={"Cookie": _cookie(opened)}))
    assert info["rights"] == "manage" and info["tenant_id"] in note


def test_a_session_never_reaches_tenants_or_keys(client, make_tenant):
    owner = make_tenant("OWNER")
    cookie, csrf = _session(client, owner, "manage")
    headers = {"Cookie": cookie, "X-CSRF-Token": csrf, "Content-Type": "application/json"}
    minted = client.http.post(
        f"/admin/tenants/{owner.tenant_id}/keys", headers=headers, body='{"role": "OWNER"}'
    )
    assert minted.status_code == 403
    assert "key" not in _json(minted)
    read = client.http.get(f"/admin/tenants/{owner.tenant_id}", headers={"Cookie": cookie})
    assert read.status_code == 403
    # the owner's key still may
    assert (
        client.http.get(f"/admin/tenants/{owner.tenant_id}", headers=owner.headers).status_code
        == 200
    )
