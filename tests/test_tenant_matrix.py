"""Tenant matrix: every route of the app, called by every kind of caller that must not reach a
tenant's data, through ``chalice.test.Client`` with real ids created in setup.

For each route the table below (``ROUTES``) says how to build a valid request against the
*victim* tenant (a child of reseller ``parent``), which family answers, what it needs (read,
write, owner) and whether the tenant comes from the path/body (``path``) or from the key
(``own``: notification and scheduled keys act only on their own tenant). ``test_the_table_covers_
every_route`` fails when a route is added without a row, so no route escapes the matrix.

Callers (``ACTORS``):

* ``owner`` of the victim: the control; its request must succeed (so every refusal below is a
  refusal of a request that is otherwise valid), and it runs after the refusals, on the same
  resource, so a refused DELETE that deleted anyway is caught. All refusals run first (phase 1)
  and the victim's state, as its owner reads it, must be the same before and after them.
* ``viewer`` of the victim where the route writes: refused (callnotify lets a VIEWER write, per
  its seed: allowed there).
* ``other``: a key of another tenant, on the victim's path (refused) and, for path-scoped
  resources, on its own path with the victim's resource ids (``other_own_path``: not found).
* ``stranger``: a RESELLER whose children do not include the victim: refused.
* ``parent``: the victim's RESELLER: allowed where the tenant is in the path; on own-tenant
  families it acts on its own tenant and must not see the child's data.
* ``admin``: allowed where the tenant is named; own-tenant families refuse it (no tenant).
* ``missing`` and three ``malformed`` keys: 401 in the family's body.

Finally every response body and header of the whole matrix is searched for every secret
created (API keys, signing secrets, Basic-auth passwords: none may ever come back, except in
the one response that minted it), and every response to a caller outside the victim's side
for the victim's ids, URLs and names that the caller did not send itself.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets as pysecrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from werkzeug import Request, Response

from tests.conftest import ADMIN_KEY, TenantKey

CAMPAIGN = "/companies/{}/campaigns/config"
NOTIF = "/rest/api/v1.3/notifications"
SCHED = "/api/1.0"
CALLNOTIFY = "/customer/{}/callnotify"

HOUSE, NOTIFICATION, SCHEDULED, CALLNOTIFY_FAMILY, PUBLIC = (
    "house",
    "notification",
    "scheduled",
    "callnotify",
    "public",
)
READ, WRITE, OWN = "read", "write", "own"
PATH, SELF = "path", "own"


def iso_in(seconds: int) -> str:
    """A zoned ISO 8601 time ``seconds`` from now (scheduled callbacks' ``callback_time``)."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0).isoformat()


MALFORMED_KEYS = (
    "rbk_" + pysecrets.token_urlsafe(32),  # well formed, belongs to nobody
    "x" * 300,  # longer than any key
    "Basic dXNlcjpwYXNzd29yZA==",  # another scheme's credentials
)


# --------------------------------------------------------------------------- the world


@dataclass
class World:
    """The victim's resources (real ids from the API) and everything the matrix must not leak."""

    client: Any
    receiver: str  # base URL of the loopback receiver
    parent: TenantKey
    victim: TenantKey
    viewer: TenantKey
    other: TenantKey
    stranger: TenantKey
    ids: dict[str, str] = field(default_factory=dict)
    markers: set[str] = field(default_factory=set)  # victim data others must never see
    secrets: dict[str, int] = field(default_factory=dict)  # secret -> response that minted it
    consumed: dict[str, str] = field(default_factory=dict)  # route -> its dedicated resource
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def n(self) -> int:
        return next(self.counter)

    def secret(self, value: str, origin: int = -1) -> None:
        self.secrets.setdefault(value, origin)

    def marker(self, *values: str) -> None:
        self.markers.update(v for v in values if v)

    # --- API calls with the victim's owner key, for setup and fresh resources ---------------

    def call(self, method: str, path: str, body: Any = None, headers: Any = None) -> Any:
        sent = headers if headers is not None else self.victim.headers
        raw = b"" if body is None else json.dumps(body).encode()
        return self.client.http.request(method, path, headers=sent, body=raw)

    def campaign_reg(self, event_type: str, path: str) -> str:
        url = self.receiver + path
        response = self.call(
            "POST",
            CAMPAIGN.format(self.victim.tenant_id) + "/callbacks",
            {"event_type": event_type, "destination_url": url},
        )
        assert response.status_code == 201, response.json_body
        self.secret(response.json_body["signing_secret"])
        self.marker(response.json_body["callback_id"], url)
        return str(response.json_body["callback_id"])

    def notifier(self) -> str:
        url = f"{self.receiver}/victim/callnotify/{self.n()}"
        response = self.call(
            "POST",
            CALLNOTIFY.format(self.victim.tenant_id),
            {"url": url, "method": "POSTJSON", "selection": "MVNO"},
        )
        assert response.status_code == 201, response.json_body
        self.secret(response.json_body["signing_secret"])
        self.marker(response.json_body["_id"], url)
        return str(response.json_body["_id"])

    def notification_callback(self, name: str) -> str:
        url = f"{self.receiver}/victim/notify/{name}"
        password = "pw-victim-" + pysecrets.token_urlsafe(12)
        self.secret(password)
        self.marker(name, url)
        response = self.call(
            "POST", NOTIF + "/callbacks", notification_body(name, url, password, "victim-user")
        )
        assert response.status_code == 201, response.json_body
        self.secret(response.json_body["signing_secret"])
        return name

    def subscription(self, name: str) -> str:
        self.marker(name)
        body = {"name": name, "callbackName": self.ids["notif_cb"], "eventNames": ["SMS_FAILED"]}
        response = self.call("POST", NOTIF + "/subscriptions", body)
        assert response.status_code == 201, response.json_body
        return name

    def api_key(self) -> str:
        """A fresh VIEWER key of the victim (to revoke); the key itself is a secret."""
        response = self.call(
            "POST", f"/admin/tenants/{self.victim.tenant_id}/keys", {"role": "VIEWER"}
        )
        assert response.status_code == 201, response.json_body
        self.secret(response.json_body["key"])
        self.marker(response.json_body["key_id"])
        return str(response.json_body["key_id"])

    def scheduled(self) -> str:
        url = f"{self.receiver}/victim/scheduled/{self.n()}"
        params = {"api_key": self.victim.key, "callback_url": url, "callback_time": iso_in(3600)}
        response = self.client.http.get(f"{SCHED}/create/?{urlencode(params)}")
        body = json.loads(response.body)
        assert response.status_code == 200 and body["success"] == 1, body
        self.secret(body["signing_secret"])
        self.marker(body["callback_id"], url)
        return str(body["callback_id"])

    def dedicated(self, route: str, fresh: bool, make: Callable[[], str]) -> str:
        """The resource a consuming route (DELETE) works on: one per route, kept across the
        refusals so the control proves they left it alone; ``fresh`` makes another."""
        if fresh or route not in self.consumed:
            self.consumed[route] = make()
        return self.consumed[route]


def notification_body(name: str, url: str, password: str, user: str) -> dict[str, Any]:
    return {
        "name": name,
        "url": url,
        "batchSize": 10,
        "authentication": {"type": "B", "data": {"userName": user, "password": password}},
    }


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Req:
    method: str
    path: str  # with its query string
    body: Any = None  # JSON-encoded unless ``form``
    form: dict[str, str] | None = None

    def raw(self) -> bytes:
        if self.form is not None:
            return urlencode(self.form).encode()
        return b"" if self.body is None else json.dumps(self.body).encode()

    def text(self) -> str:
        """What the caller sent (path and body): a response may echo that, never more."""
        from urllib.parse import unquote_plus

        return unquote_plus(self.path) + " " + self.raw().decode()


Build = Callable[[World, bool, str], Req]
"""(world, fresh, tenant addressed) -> request. ``tenant`` is the victim unless a probe
addresses the caller's own tenant with the victim's resource ids."""


@dataclass(frozen=True)
class Route:
    family: str
    need: str
    scope: str  # PATH: tenant from path/body/record; SELF: the key's own tenant
    build: Build
    ok: int  # the victim's own key gets this
    foreign: int | None = None  # SELF scope: what a key of another tenant gets
    own_path: int | None = None  # PATH scope: another tenant on its own path with victim ids
    consumes: bool = False
    overrides: dict[str, int] = field(default_factory=dict)  # actor -> status
    # actor -> status for a caller outside the victim's side that still succeeds (a reseller
    # listing its own children): its response is searched for the victim's data
    outsiders: dict[str, int] = field(default_factory=dict)


def _cb(w: World, key: str) -> str:
    return w.ids[key]


def campaign_routes() -> dict[tuple[str, str], Route]:
    base = CAMPAIGN.format("{company_id}")

    def create(w: World, fresh: bool, t: str) -> Req:
        body = {"event_type": f"matrix.{w.n()}", "destination_url": w.receiver + "/probe/camp"}
        return Req("POST", CAMPAIGN.format(t) + "/callbacks", body)

    def delete(w: World, fresh: bool, t: str) -> Req:
        cb = w.dedicated(
            "campaign-delete", fresh, lambda: w.campaign_reg(f"del.{w.n()}", "/victim/del")
        )
        return Req("DELETE", f"{CAMPAIGN.format(t)}/callbacks/{cb}")

    return {
        ("GET", f"{base}/callbacks"): Route(
            HOUSE, READ, PATH, lambda w, f, t: Req("GET", f"{CAMPAIGN.format(t)}/callbacks"), 200
        ),
        ("POST", f"{base}/callbacks"): Route(HOUSE, WRITE, PATH, create, 201),
        ("GET", f"{base}/callbacks/{{callback_id}}"): Route(
            HOUSE,
            READ,
            PATH,
            lambda w, f, t: Req("GET", f"{CAMPAIGN.format(t)}/callbacks/{_cb(w, 'reg_paid')}"),
            200,
            own_path=404,
        ),
        ("DELETE", f"{base}/callbacks/{{callback_id}}"): Route(
            HOUSE, WRITE, PATH, delete, 200, own_path=404, consumes=True
        ),
        ("POST", f"{base}/callbacks/{{callback_id}}/enable"): Route(
            HOUSE,
            WRITE,
            PATH,
            lambda w, f, t: Req(
                "POST", f"{CAMPAIGN.format(t)}/callbacks/{_cb(w, 'reg_gone')}/enable"
            ),
            200,
            own_path=404,
        ),
        ("POST", f"{base}/callbacks/{{callback_id}}/secret/rotate"): Route(
            HOUSE,
            OWN,
            PATH,
            lambda w, f, t: Req(
                "POST", f"{CAMPAIGN.format(t)}/callbacks/{_cb(w, 'reg_paid')}/secret/rotate"
            ),
            200,
            own_path=404,
        ),
        ("POST", f"{base}/callback_events/test"): Route(
            HOUSE,
            WRITE,
            PATH,
            lambda w, f, t: Req(
                "POST", f"{CAMPAIGN.format(t)}/callback_events/test", {"event_type": "order.paid"}
            ),
            201,
            own_path=404,  # the other tenant has no registration for it
        ),
    }


def event_routes() -> dict[tuple[str, str], Route]:
    def publish(w: World, fresh: bool, t: str) -> Req:
        return Req("POST", "/events", {"tenant_id": t, "event_type": "order.paid"})

    def replay_range(w: World, fresh: bool, t: str) -> Req:
        return Req("POST", "/deliveries/replay", {"tenant_id": t, "status": "failed"})

    return {
        ("POST", "/events"): Route(HOUSE, WRITE, PATH, publish, 202, own_path=202),
        ("GET", "/events/{event_id}"): Route(
            HOUSE, READ, PATH, lambda w, f, t: Req("GET", f"/events/{w.ids['event']}"), 200
        ),
        ("GET", "/deliveries"): Route(
            HOUSE,
            READ,
            PATH,
            lambda w, f, t: Req("GET", f"/deliveries?tenant_id={t}&status=failed"),
            200,
            own_path=200,
        ),
        ("GET", "/deliveries/{delivery_id}"): Route(
            HOUSE, READ, PATH, lambda w, f, t: Req("GET", f"/deliveries/{w.ids['delivery']}"), 200
        ),
        ("POST", "/deliveries/{delivery_id}/replay"): Route(
            HOUSE,
            WRITE,
            PATH,
            lambda w, f, t: Req("POST", f"/deliveries/{w.ids['delivery']}/replay"),
            202,
        ),
        ("POST", "/deliveries/replay"): Route(HOUSE, WRITE, PATH, replay_range, 202, own_path=202),
    }


def admin_routes() -> dict[tuple[str, str], Route]:
    def new_child(w: World, fresh: bool, t: str) -> Req:
        # a tenant under the victim's reseller: only that reseller (and ADMIN) may
        return Req("POST", "/admin/tenants", {"name": "kid", "parent_id": w.parent.tenant_id})

    def revoke(w: World, fresh: bool, t: str) -> Req:
        key_id = w.dedicated("key-revoke", fresh, w.api_key)
        return Req("DELETE", f"/admin/tenants/{t}/keys/{key_id}")

    return {
        ("GET", "/admin/tenants"): Route(
            HOUSE,
            READ,
            PATH,
            lambda w, f, t: Req("GET", "/admin/tenants"),
            200,  # the victim's reseller sees it among its children, the admin among all
            overrides={"owner": 403},  # tenant keys list no tenants
            outsiders={"stranger": 200},  # a reseller lists its own children, not the victim
        ),
        ("GET", "/admin/tenants/{tenant_id}/keys"): Route(
            HOUSE,
            OWN,
            PATH,
            lambda w, f, t: Req("GET", f"/admin/tenants/{t}/keys"),
            200,
            own_path=200,
        ),
        ("DELETE", "/admin/tenants/{tenant_id}/keys/{key_id}"): Route(
            HOUSE, OWN, PATH, revoke, 204, own_path=404, consumes=True
        ),
        ("GET", "/admin/tenants/{tenant_id}/quotas"): Route(
            HOUSE,
            READ,
            PATH,
            lambda w, f, t: Req("GET", f"/admin/tenants/{t}/quotas"),
            200,
            own_path=200,
        ),
        ("PUT", "/admin/tenants/{tenant_id}/quotas"): Route(
            HOUSE,
            WRITE,
            PATH,
            lambda w, f, t: Req("PUT", f"/admin/tenants/{t}/quotas", {"events_per_second": 500}),
            200,
            overrides={"owner": 403, "parent": 403},  # only the operator changes quotas
        ),
        ("POST", "/admin/tenants"): Route(
            HOUSE,
            WRITE,
            PATH,
            new_child,
            201,
            overrides={"owner": 403},  # tenant keys never create tenants
        ),
        ("GET", "/admin/tenants/{tenant_id}"): Route(
            HOUSE, READ, PATH, lambda w, f, t: Req("GET", f"/admin/tenants/{t}"), 200, own_path=200
        ),
        ("POST", "/admin/tenants/{tenant_id}/keys"): Route(
            HOUSE,
            OWN,
            PATH,
            lambda w, f, t: Req("POST", f"/admin/tenants/{t}/keys", {"role": "VIEWER"}),
            201,
            own_path=201,
        ),
    }


def callnotify_routes() -> dict[tuple[str, str], Route]:
    base = CALLNOTIFY.format("{customer_id}")

    def item(method: str, body: Any = None) -> Build:
        return lambda w, f, t: Req(method, f"{CALLNOTIFY.format(t)}/{w.ids['notifier']}", body)

    def create(w: World, fresh: bool, t: str) -> Req:
        body = {"url": f"{w.receiver}/probe/cn/{w.n()}", "method": "POSTJSON", "selection": "SIP"}
        return Req("POST", CALLNOTIFY.format(t), body)

    def delete(w: World, fresh: bool, t: str) -> Req:
        notify_id = w.dedicated("callnotify-delete", fresh, w.notifier)
        return Req("DELETE", f"{CALLNOTIFY.format(t)}/{notify_id}")

    fam = CALLNOTIFY_FAMILY
    return {
        ("GET", base): Route(
            fam, READ, PATH, lambda w, f, t: Req("GET", CALLNOTIFY.format(t)), 200, own_path=200
        ),
        ("POST", base): Route(fam, WRITE, PATH, create, 201, own_path=201),
        ("GET", f"{base}/{{notify_id}}"): Route(fam, READ, PATH, item("GET"), 200, own_path=404),
        ("POST", f"{base}/{{notify_id}}"): Route(
            fam, WRITE, PATH, item("POST", {"selection": "ALL"}), 200, own_path=404
        ),
        ("PUT", f"{base}/{{notify_id}}"): Route(
            fam, WRITE, PATH, item("PUT", {"selection": "MVNO"}), 200, own_path=404
        ),
        ("DELETE", f"{base}/{{notify_id}}"): Route(
            fam, WRITE, PATH, delete, 204, own_path=404, consumes=True
        ),
        # the family's own access rule: every key of the customer, VIEWER included
        ("POST", f"{base}/{{notify_id}}/secret/rotate"): Route(
            fam,
            WRITE,
            PATH,
            lambda w, f, t: Req(
                "POST", f"{CALLNOTIFY.format(t)}/{w.ids['notifier']}/secret/rotate"
            ),
            200,
            own_path=404,
        ),
    }


def notification_routes() -> dict[tuple[str, str], Route]:
    def create(w: World, fresh: bool, t: str) -> Req:
        n, password = w.n(), "pw-probe-" + pysecrets.token_urlsafe(8)
        w.secret(password)  # the caller's own: never echoed back either
        body = notification_body(f"probe_cb_{n}", f"{w.receiver}/probe/nt/{n}", password, "u")
        return Req("POST", NOTIF + "/callbacks", body)

    def update(w: World, fresh: bool, t: str) -> Req:
        password = "pw-update-" + pysecrets.token_urlsafe(8)
        w.secret(password)  # stored for the victim when the update succeeds
        name = w.ids["notif_cb"]
        return Req(
            "PUT",
            f"{NOTIF}/callbacks/{name}",
            notification_body(name, f"{w.receiver}/victim/notify/{name}", password, "victim-user"),
        )

    def delete(w: World, fresh: bool, t: str) -> Req:
        name = w.dedicated(
            "notif-delete", fresh, lambda: w.notification_callback(f"victim_del_{w.n()}")
        )
        return Req("DELETE", f"{NOTIF}/callbacks/{name}")

    def sub_create(w: World, fresh: bool, t: str) -> Req:
        body = {
            "name": f"probe_sub_{w.n()}",
            "callbackName": w.ids["notif_cb"],
            "eventNames": ["EMAIL_BOUNCED"],
        }
        return Req("POST", NOTIF + "/subscriptions", body)

    def cb_sub_create(w: World, fresh: bool, t: str) -> Req:
        body = {"name": f"probe_sub_{w.n()}", "eventNames": ["EMAIL_FAILED"]}
        return Req("POST", f"{NOTIF}/callbacks/{w.ids['notif_cb']}/subscriptions", body)

    def sub_delete(w: World, fresh: bool, t: str) -> Req:
        name = w.dedicated("sub-delete", fresh, lambda: w.subscription(f"victim_sub_{w.n()}"))
        return Req("DELETE", f"{NOTIF}/subscriptions/{name}")

    def get(path: str) -> Build:
        return lambda w, f, t: Req("GET", NOTIF + path.format(**w.ids))

    fam = NOTIFICATION
    return {
        ("POST", f"{NOTIF}/callbacks"): Route(fam, WRITE, SELF, create, 201, foreign=201),
        ("GET", f"{NOTIF}/callbacks"): Route(fam, READ, SELF, get("/callbacks"), 200, foreign=200),
        ("GET", f"{NOTIF}/callbacks/{{callback_name}}"): Route(
            fam, READ, SELF, get("/callbacks/{notif_cb}"), 200, foreign=404
        ),
        ("PUT", f"{NOTIF}/callbacks/{{callback_name}}"): Route(
            fam, WRITE, SELF, update, 200, foreign=404
        ),
        ("DELETE", f"{NOTIF}/callbacks/{{callback_name}}"): Route(
            fam, WRITE, SELF, delete, 200, foreign=404, consumes=True
        ),
        ("POST", f"{NOTIF}/callbacks/{{callback_name}}/secret/rotate"): Route(
            fam,
            OWN,
            SELF,
            lambda w, f, t: Req("POST", f"{NOTIF}/callbacks/{w.ids['notif_cb']}/secret/rotate"),
            200,
            foreign=404,
        ),
        ("GET", f"{NOTIF}/callbacks/{{callback_name}}/actions/verify"): Route(
            fam, READ, SELF, get("/callbacks/{notif_cb}/actions/verify"), 200, foreign=404
        ),
        ("POST", f"{NOTIF}/callbacks/{{callback_name}}/subscriptions"): Route(
            fam, WRITE, SELF, cb_sub_create, 201, foreign=404
        ),
        ("GET", f"{NOTIF}/callbacks/{{callback_name}}/subscriptions"): Route(
            fam, READ, SELF, get("/callbacks/{notif_cb}/subscriptions"), 200, foreign=404
        ),
        ("GET", f"{NOTIF}/eventList"): Route(fam, READ, SELF, get("/eventList"), 200, foreign=200),
        ("POST", f"{NOTIF}/subscriptions"): Route(fam, WRITE, SELF, sub_create, 201, foreign=404),
        ("GET", f"{NOTIF}/subscriptions"): Route(
            fam, READ, SELF, get("/subscriptions"), 200, foreign=200
        ),
        ("GET", f"{NOTIF}/subscriptions/{{name}}"): Route(
            fam, READ, SELF, get("/subscriptions/{notif_sub}"), 200, foreign=404
        ),
        ("PUT", f"{NOTIF}/subscriptions/{{name}}"): Route(
            fam,
            WRITE,
            SELF,
            lambda w, f, t: Req(
                "PUT", f"{NOTIF}/subscriptions/{w.ids['notif_sub']}", {"eventNames": ["SMS_FAILED"]}
            ),
            200,
            foreign=404,
        ),
        ("DELETE", f"{NOTIF}/subscriptions/{{name}}"): Route(
            fam, WRITE, SELF, sub_delete, 200, foreign=404, consumes=True
        ),
    }


def scheduled_routes() -> dict[tuple[str, str], Route]:
    def create_get(w: World, fresh: bool, t: str) -> Req:
        params = {"callback_url": f"{w.receiver}/probe/sc/{w.n()}", "callback_time": iso_in(3600)}
        return Req("GET", f"{SCHED}/create/?{urlencode(params)}")

    def create_post(w: World, fresh: bool, t: str) -> Req:
        form = {"callback_url": f"{w.receiver}/probe/sc/{w.n()}", "callback_time": iso_in(3600)}
        return Req("POST", f"{SCHED}/create/", form=form)

    def delete(w: World, fresh: bool, t: str) -> Req:
        return Req("GET", f"{SCHED}/delete/{w.dedicated('sched-delete', fresh, w.scheduled)}/")

    fam = SCHEDULED
    return {
        ("GET", f"{SCHED}/create"): Route(fam, WRITE, SELF, create_get, 200, foreign=200),
        ("POST", f"{SCHED}/create"): Route(fam, WRITE, SELF, create_post, 200, foreign=200),
        ("GET", f"{SCHED}/retrieve/{{callback_id}}"): Route(
            fam,
            READ,
            SELF,
            lambda w, f, t: Req("GET", f"{SCHED}/retrieve/{w.ids['scheduled']}/"),
            200,
            foreign=404,
        ),
        ("GET", f"{SCHED}/delete/{{callback_id}}"): Route(
            fam, WRITE, SELF, delete, 200, foreign=404, consumes=True
        ),
        ("GET", f"{SCHED}/list"): Route(
            fam, READ, SELF, lambda w, f, t: Req("GET", f"{SCHED}/list/"), 200, foreign=200
        ),
        # without an id: "not found" for any valid key, after the key checks
        ("GET", f"{SCHED}/retrieve"): Route(
            fam, READ, SELF, lambda w, f, t: Req("GET", f"{SCHED}/retrieve/"), 404, foreign=404
        ),
        ("GET", f"{SCHED}/delete"): Route(
            fam, WRITE, SELF, lambda w, f, t: Req("GET", f"{SCHED}/delete/"), 404, foreign=404
        ),
    }


def public_routes() -> dict[tuple[str, str], Route]:
    """No key needed, no tenant data: every caller gets the same answer."""
    return {
        ("GET", "/health"): Route(PUBLIC, READ, SELF, lambda w, f, t: Req("GET", "/health"), 200),
        ("GET", "/openapi.json"): Route(
            PUBLIC, READ, SELF, lambda w, f, t: Req("GET", "/openapi.json"), 200
        ),
    }


ROUTES: dict[tuple[str, str], Route] = {
    **campaign_routes(),
    **event_routes(),
    **admin_routes(),
    **callnotify_routes(),
    **notification_routes(),
    **scheduled_routes(),
    **public_routes(),
}


def app_routes() -> set[tuple[str, str]]:
    from app import app

    return {(method, path) for path, methods in app.routes.items() for method in methods}


def test_the_table_covers_every_route() -> None:
    """A route without a row here would escape the matrix: add it to ``ROUTES``."""
    routes = app_routes()
    assert not routes - set(ROUTES), (
        f"routes missing from the matrix: {sorted(routes - set(ROUTES))}"
    )
    assert not set(ROUTES) - routes, (
        f"rows for routes that no longer exist: {sorted(set(ROUTES) - routes)}"
    )


# --------------------------------------------------------------------------- expectations


@dataclass(frozen=True)
class Expect:
    status: int
    code: str | None = None  # the family's error code for a refusal
    victim_side: bool = False  # a caller allowed to see the victim's data


_CODES = {
    HOUSE: {401: "unauthorized", 403: "forbidden", 404: "not_found"},
    NOTIFICATION: {401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "OBJECT_NOT_FOUND"},
    CALLNOTIFY_FAMILY: {401: "unauthorized", 403: "access_denied", 404: "not_found"},
    SCHEDULED: {401: "api_key_invalid", 403: "api_key_forbidden", 404: "callback_not_found"},
}


def refused(route: Route, status: int, actor: str) -> Expect:
    if route.family == SCHEDULED and actor == "missing":
        return Expect(status, "api_key_absent")
    return Expect(status, _CODES.get(route.family, {}).get(status))


def outcome(route: Route, status: int, actor: str, victim_side: bool) -> Expect:
    return Expect(status, None, victim_side) if status < 400 else refused(route, status, actor)


def expectation(route: Route, actor: str) -> Expect | None:
    """What ``actor`` must get on ``route``; None: the probe does not apply."""
    if route.family == PUBLIC:
        return Expect(route.ok)
    if actor in ("missing", "malformed"):
        return refused(route, 401, actor)
    if actor in route.overrides:
        return outcome(route, route.overrides[actor], actor, True)
    if actor in route.outsiders:
        return outcome(route, route.outsiders[actor], actor, False)
    if actor == "owner":
        return Expect(route.ok, None, True)
    if actor == "viewer":
        if route.need == READ:
            return None
        if route.family == CALLNOTIFY_FAMILY:  # the seed lets a VIEWER write
            return Expect(route.ok, None, True)
        return refused(route, 403, actor)
    if route.scope == SELF:  # the key's own tenant: others, resellers see only their own
        if actor == "other_own_path":  # no tenant in these paths: same as "other"
            return None
        if actor == "admin":  # the admin key has no tenant of its own here
            return refused(route, 403, actor)
        assert route.foreign is not None
        return outcome(route, route.foreign, actor, False)
    if actor == "other_own_path":
        return None if route.own_path is None else outcome(route, route.own_path, actor, False)
    if actor in ("other", "stranger"):
        return refused(route, 403, actor)
    if actor in ("parent", "admin"):
        return Expect(route.ok, None, True)
    raise AssertionError(actor)


REFUSING_FIRST = ("missing", "malformed", "other", "other_own_path", "stranger", "viewer")
ALLOWED_AFTER = ("owner", "parent", "admin")  # phase 2 runs every victim-side probe


# --------------------------------------------------------------------------- running


@dataclass
class Seen:
    label: str
    sent: str
    status: int
    text: str  # body and headers, as the caller received them
    victim_side: bool


def _with_key(route: Route, req: Req, key: str | None) -> tuple[str, dict[str, str]]:
    headers: dict[str, str] = {}
    if req.form is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif req.body is not None:
        headers["Content-Type"] = "application/json"
    path = req.path
    if key is None:
        return path, headers
    if route.family == SCHEDULED:  # the seed's api_key query parameter
        return path + ("&" if "?" in path else "?") + "api_key=" + quote(key, safe=""), headers
    if route.family == NOTIFICATION:  # the seed's bare Authorization: <AUTH_TOKEN>
        headers["Authorization"] = key
    else:
        headers["Authorization"] = f"Bearer {key}"
    return path, headers


def _body_of(response: Any) -> Any:
    try:
        return json.loads(response.body) if response.body else None
    except ValueError:
        return None


def _family_shape(route: Route, body: Any, expect: Expect) -> str | None:
    """Why ``body`` is not the family's refusal with ``expect.code``, or None."""
    if route.family in (HOUSE, CALLNOTIFY_FAMILY):
        ok = isinstance(body, dict) and set(body) == {"error", "message"}
        ok = ok and body["error"] == expect.code and isinstance(body["message"], str)
    elif route.family == NOTIFICATION:
        keys = ["type", "title", "errorCode", "detail", "errorDetails"]
        ok = isinstance(body, dict) and list(body) == keys and body["errorCode"] == expect.code
    elif route.family == SCHEDULED:
        ok = body == {"success": 0, "error": expect.code}
    else:
        ok = True
    return None if ok else f"not the {route.family} refusal {expect.code!r}: {body!r}"


def _keys(world: World) -> dict[str, str | None]:
    return {
        "owner": world.victim.key,
        "viewer": world.viewer.key,
        "other": world.other.key,
        "other_own_path": world.other.key,
        "stranger": world.stranger.key,
        "parent": world.parent.key,
        "admin": ADMIN_KEY,
        "missing": None,
    }


def probes_of(world: World, route: Route) -> list[tuple[str, str | None, Expect]]:
    keys = _keys(world)
    found: list[tuple[str, str | None, Expect]] = []
    for actor in REFUSING_FIRST + ALLOWED_AFTER:
        expect = expectation(route, actor)
        if expect is None:
            continue
        if actor == "malformed":
            found += [("malformed", bad, expect) for bad in MALFORMED_KEYS]
        else:
            found.append((actor, keys[actor], expect))
    return found


def snapshot(world: World) -> dict[str, Any]:
    """Everything of the victim's that a refused request could have changed, as its owner
    sees it."""
    t, owner = world.victim.tenant_id, world.victim.headers
    bare = {"Authorization": world.victim.key}
    urls = [
        (f"{CAMPAIGN.format(t)}/callbacks", owner),
        (f"/events/{world.ids['event']}", owner),
        (f"/deliveries/{world.ids['delivery']}", owner),
        (f"/deliveries?tenant_id={t}&status=failed", owner),
        (f"/deliveries?tenant_id={t}&status=pending", owner),
        (CALLNOTIFY.format(t), owner),
        (f"{NOTIF}/callbacks", bare),
        (f"{NOTIF}/subscriptions", bare),
        (f"{SCHED}/list/?api_key={quote(world.victim.key)}", {}),
    ]
    state = {}
    for url, headers in urls:
        response = world.client.http.get(url, headers=headers)
        assert response.status_code == 200, (url, response.body)
        state[url] = json.loads(response.body)
    # the victim's keys, without last_used (refused callers' keys are used, rightly)
    keys = world.client.http.get(f"/admin/tenants/{t}/keys", headers=owner)
    assert keys.status_code == 200, keys.body
    state["keys"] = [(k["key_id"], k["revoked_at"]) for k in json.loads(keys.body)["keys"]]
    quotas = world.client.http.get(f"/admin/tenants/{t}/quotas", headers=owner)
    state["quotas"] = json.loads(quotas.body)["quotas"]
    return state


def run_matrix(world: World) -> tuple[list[str], list[Seen]]:
    """Phase 1: every probe from outside the victim's side (refusals, other tenants acting in
    their own scope), with the victim's state compared before and after. Phase 2: the victim's
    side (owner, allowed viewer, parent reseller, admin), which must succeed; a consuming
    route's first success uses the very resource phase 1 was tried on."""
    problems: list[str] = []
    seen: list[Seen] = []
    successes: dict[tuple[str, str], int] = {}
    for route in ROUTES.values():  # dedicated resources exist before the first snapshot
        route.build(world, False, world.victim.tenant_id)
    before = snapshot(world)
    for victim_side in (False, True):
        for (method, template), route in ROUTES.items():
            for actor, key, expect in probes_of(world, route):
                if expect.victim_side != victim_side:
                    continue
                tenant = (
                    world.other.tenant_id if actor == "other_own_path" else world.victim.tenant_id
                )
                done = successes.get((method, template), 0)
                req = route.build(
                    world, route.consumes and expect.status < 400 and done > 0, tenant
                )
                path, headers = _with_key(route, req, key)
                response = world.client.http.request(
                    req.method, path, headers=headers, body=req.raw()
                )
                label = f"{method} {template} as {actor}"
                body = _body_of(response)
                status = response.status_code
                if expect.status < 400 and status < 400:
                    successes[(method, template)] = done + 1
                if status != expect.status:
                    problems.append(
                        f"{label}: {status} (expected {expect.status}) {response.body[:300]!r}"
                    )
                elif expect.code is not None:
                    why = _family_shape(route, body, expect)
                    if why:
                        problems.append(f"{label}: {why}")
                text = (
                    response.body.decode("utf-8", "replace")
                    + " "
                    + json.dumps(dict(response.headers))
                )
                index = len(seen)
                seen.append(Seen(label, req.text(), status, text, expect.victim_side))
                _harvest(world, body, index)
        if not victim_side:
            after = snapshot(world)
            for url in before:
                if before[url] != after[url]:
                    problems.append(f"refused callers changed the victim's {url}: {after[url]}")
    return problems, seen


def _harvest(world: World, body: Any, index: int) -> None:
    """Secrets a response minted (a new key, a rotated signing secret): no other may show them."""
    if not isinstance(body, dict):
        return
    for name in ("signing_secret", "key"):
        value = body.get(name)
        if isinstance(value, str) and value.startswith(("whsec_", "rbk_")):
            world.secret(value, index)


def leaks(world: World, seen: list[Seen]) -> list[str]:
    found = []
    for index, item in enumerate(seen):
        for secret, origin in world.secrets.items():
            if origin != index and secret in item.text:
                found.append(f"{item.label}: a stored secret ({secret[:8]}...) in the response")
        if item.victim_side:
            continue
        for marker in world.markers:
            if marker not in item.sent and marker in item.text:
                found.append(f"{item.label}: the victim's {marker!r} in the response")
    return found


# --------------------------------------------------------------------------- setup


def _receiver(httpserver: Any) -> str:
    def handle(request: Request) -> Response:
        gone = request.path.endswith("/gone")
        return Response("gone" if gone else "ok", status=410 if gone else 200)

    httpserver.expect_request(re.compile(r"^/.*$")).respond_with_handler(handle)
    return str(httpserver.url_for("")).rstrip("/")


@pytest.fixture
def world(client: Any, make_tenant: Any, worker: Any, httpserver: Any) -> World:
    parent = make_tenant("RESELLER")
    victim = make_tenant("OWNER", parent=parent.tenant_id)
    w = World(
        client=client,
        receiver=_receiver(httpserver),
        parent=parent,
        victim=victim,
        viewer=make_tenant("VIEWER", tenant_id=victim.tenant_id),
        other=make_tenant("OWNER"),
        stranger=make_tenant("RESELLER"),
    )
    for key in (parent.key, victim.key, w.viewer.key, w.other.key, w.stranger.key, ADMIN_KEY):
        w.secret(key)
    w.marker(victim.tenant_id)
    make_tenant("OWNER", parent=w.stranger.tenant_id)  # the stranger has children, not this one
    # campaign: one registration to test-fire, one whose receiver answers 410 Gone
    w.ids["reg_paid"] = w.campaign_reg("order.paid", "/victim/campaign-paid")
    w.ids["reg_gone"] = w.campaign_reg("order.gone", "/victim/gone")
    published = w.call("POST", "/events", {"event_type": "order.gone", "payload": {"n": 1}})
    assert published.status_code == 202, published.json_body
    w.ids["event"] = published.json_body["event_id"]
    worker.run_until_idle()
    event = w.call("GET", f"/events/{w.ids['event']}").json_body
    [delivery] = event["deliveries"]
    assert delivery["status"] == "failed", delivery  # replayable; the registration is disabled
    from chalicelib.delivery.ingest import replay_id_for

    w.ids["delivery"] = delivery["delivery_id"]
    w.marker(w.ids["event"], w.ids["delivery"], replay_id_for(w.ids["delivery"]))
    # callnotify, notification (callback + subscription), scheduled
    w.ids["notifier"] = w.notifier()
    w.ids["notif_cb"] = w.notification_callback("victim_cb_main")
    w.ids["notif_sub"] = w.subscription("victim_sub_main")
    w.ids["scheduled"] = w.scheduled()
    w.marker("victim-user")
    return w


def test_every_route_refuses_every_caller_outside_the_tenant(world: World) -> None:
    problems, seen = run_matrix(world)
    assert not problems, "\n".join(problems)
    found = leaks(world, seen)
    assert not found, "\n".join(found)
    # the matrix really ran: every route, every applicable caller
    assert len({item.label.split(" as ")[0] for item in seen}) == len(ROUTES)
    assert sum(1 for item in seen if item.status in (401, 403)) > 3 * len(ROUTES)
