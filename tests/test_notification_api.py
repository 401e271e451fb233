"""Notification callbacks API (seed: notification-callbacks-update.txt) through the real app.

Every seed failure is asserted byte for byte; "Could not connect" is exercised against real
loopback receivers (pytest-httpserver) that answer, refuse credentials, fail, or are not there.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook
from werkzeug import Request, Response

BASE = "/rest/api/v1.3/notifications"
PASSWORD = "pw-Zq8!never-shown"
CLOSED_URL = "http://127.0.0.1:1/closed"


def envelope(title: str, code: str, detail: str) -> dict[str, Any]:
    return {"type": "", "title": title, "errorCode": code, "detail": detail, "errorDetails": []}


def invalid(detail: str) -> dict[str, Any]:
    return envelope("Invalid request parameters", "INVALID_PARAMETER", detail)


def links(name: str, self_method: str) -> list[dict[str, str]]:
    href = f"{BASE}/callbacks/{name}"
    return [
        {"rel": "self", "href": href, "method": self_method},
        {"rel": "getCallBack", "href": href, "method": "GET"},
        {"rel": "deleteCallBack", "href": href, "method": "DELETE"},
        {"rel": "updateCallBack", "href": href, "method": "PUT"},
    ]


class Receiver:
    """A loopback webhook receiver answering ``status`` (changeable) and recording requests."""

    def __init__(self, httpserver: Any, path: str = "/hook", status: int = 200) -> None:
        self.status = status
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.url = httpserver.url_for(path)
        httpserver.expect_request(path).respond_with_handler(self.handle)

    def handle(self, request: Request) -> Response:
        with self.lock:
            self.requests.append({"headers": dict(request.headers), "body": request.get_data()})
        return Response("ok", status=self.status)


def cb_body(url: str, name: str = "orders_cb", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "url": url,
        "batchSize": 50,
        "authentication": {"type": "B", "data": {"userName": "hook-user", "password": PASSWORD}},
    }
    body.update(overrides)
    return body


class Api:
    """The client plus every response body seen, so tests can check none holds the password."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.seen: list[str] = []

    def call(self, method: str, path: str, headers: dict[str, str], body: Any = None) -> Any:
        raw = body if isinstance(body, str) or body is None else json.dumps(body)
        kwargs = {"headers": headers} if raw is None else {"headers": headers, "body": raw}
        response = getattr(self.client.http, method)(BASE + path, **kwargs)
        self.seen.append(response.body.decode("utf-8", "replace"))
        self.seen.append(json.dumps(dict(response.headers)))
        return response


@pytest.fixture
def api(client: Any) -> Api:
    return Api(client)


@pytest.fixture
def receiver(httpserver: Any) -> Receiver:
    return Receiver(httpserver)


def create(api: Api, tenant: Any, body: dict[str, Any]) -> dict[str, Any]:
    response = api.call("post", "/callbacks", tenant.headers, body)
    assert response.status_code == 201, response.json_body
    return response.json_body


# --- create / read ------------------------------------------------------------------------


def test_create_verifies_the_url_and_returns_the_view_once_with_the_signing_secret(
    api, make_tenant, receiver
):
    owner = make_tenant()
    response = api.call("post", "/callbacks", owner.headers, cb_body(receiver.url))
    assert response.status_code == 201
    view = response.json_body
    secret = view.pop("signing_secret")
    assert secret.startswith("whsec_")
    assert view == {
        "name": "orders_cb",
        "url": receiver.url,
        "backupUrl": None,
        "batchSize": 50,
        "links": links("orders_cb", "POST"),
    }
    assert response.headers["Location"] == f"{BASE}/callbacks/orders_cb"
    # the connection check: a signed POST of an empty batch with the Basic credentials
    [check] = receiver.requests
    expected = base64.b64encode(f"hook-user:{PASSWORD}".encode()).decode()
    assert check["headers"]["Authorization"] == f"Basic {expected}"
    assert check["body"] == b"[]"
    Webhook(secret).verify(check["body"], check["headers"])

    shown = api.call("get", "/callbacks/orders_cb", owner.headers)
    assert shown.status_code == 200
    assert shown.json_body == {**view, "links": links("orders_cb", "GET")}
    listed = api.call("get", "/callbacks", owner.headers)
    assert listed.json_body == [shown.json_body]
    assert all(PASSWORD not in text and "hook-user" not in text for text in api.seen)


def test_create_accepts_backup_url_and_the_seeds_trailing_space_key(api, make_tenant, receiver):
    owner = make_tenant()
    backup = receiver.url + "-backup"
    view = create(api, owner, {**cb_body(receiver.url), "backupUrl ": backup})
    assert view["backupUrl"] == backup


def test_create_with_a_name_or_url_that_exists(api, make_tenant, receiver):
    owner = make_tenant()
    create(api, owner, cb_body(receiver.url))
    same_name = api.call("post", "/callbacks", owner.headers, cb_body(receiver.url + "/2"))
    assert same_name.status_code == 400
    assert same_name.json_body == invalid("CallBack [orders_cb] already exists")
    # the same location spelled differently is the same url
    other = receiver.url.replace("/hook", "/hook/")
    same_url = api.call("post", "/callbacks", owner.headers, cb_body(other, name="second"))
    assert same_url.status_code == 400
    assert same_url.json_body == invalid(f"Callback url {other} ] already exists")
    # another tenant may use the same name and url
    create(api, make_tenant(), cb_body(receiver.url))


@pytest.mark.parametrize(
    ("mutate", "status", "body"),
    [
        (
            lambda b: b["authentication"].update(type="D"),
            400,
            invalid("Only Basic Authentication is supported currently and value should be 'B' "),
        ),
        (lambda b: b.update(batchSize=-1), 400, invalid("Batch Size cannot be less than 0")),
        (lambda b: b.update(name=""), 400, invalid("callback name cannot be empty or null")),
        (lambda b: b.update(name=None), 400, invalid("callback name cannot be empty or null")),
        (lambda b: b.pop("name"), 400, invalid("callback name cannot be empty or null")),
        (lambda b: b.update(url=""), 400, invalid("callback url cannot be empty or null")),
        (lambda b: b.pop("url"), 400, invalid("callback url cannot be empty or null")),
        (
            lambda b: b.pop("authentication"),
            400,
            envelope(
                "Invalid field name",
                "INVALID_FIELD_NAME",
                "The following field names [authentication] are invalid",
            ),
        ),
        (
            lambda b: b.update(authentication={}, colour="red"),
            400,
            envelope(
                "Invalid field name",
                "INVALID_FIELD_NAME",
                "The following field names [colour, authentication] are invalid",
            ),
        ),
        (lambda b: b.update(batchSize=0), 400, invalid("Batch Size must be between 1 and 200")),
        (lambda b: b.update(batchSize=201), 400, invalid("Batch Size must be between 1 and 200")),
        (lambda b: b.pop("batchSize"), 400, invalid("Batch Size cannot be empty or null")),
        (lambda b: b.update(url="ftp://x/"), 400, invalid("Invalid callback url [ftp://x/]")),
        (
            lambda b: b.update(url="http://169.254.169.254/latest"),
            400,
            invalid("Invalid callback url [http://169.254.169.254/latest]"),
        ),
    ],
)
def test_create_failures_have_the_seed_envelope(api, make_tenant, receiver, mutate, status, body):
    owner = make_tenant()
    request = cb_body(receiver.url)
    mutate(request)
    response = api.call("post", "/callbacks", owner.headers, request)
    assert (response.status_code, response.json_body) == (status, body)
    assert receiver.requests == []  # refused before any connection attempt
    assert api.call("get", "/callbacks", owner.headers).json_body == []


@pytest.mark.parametrize("answer", [401, 403, 500, 503, 302])
def test_create_could_not_connect_when_the_receiver_refuses_or_fails(
    api, make_tenant, receiver, answer
):
    owner = make_tenant()
    receiver.status = answer
    response = api.call("post", "/callbacks", owner.headers, cb_body(receiver.url))
    assert response.status_code == 400
    assert response.json_body == invalid(f"Could not connect to callback url [{receiver.url}]")
    assert len(receiver.requests) == 1
    assert api.call("get", "/callbacks", owner.headers).json_body == []


@pytest.mark.parametrize("answer", [200, 204, 400, 404, 405])
def test_any_answer_that_does_not_refuse_the_credentials_connects(
    api, make_tenant, receiver, answer
):
    receiver.status = answer
    create(api, make_tenant(), cb_body(receiver.url))


def test_create_could_not_connect_when_nothing_listens(api, make_tenant):
    owner = make_tenant()
    response = api.call("post", "/callbacks", owner.headers, cb_body(CLOSED_URL))
    assert response.status_code == 400
    assert response.json_body == invalid(f"Could not connect to callback url [{CLOSED_URL}]")


def test_the_stage_can_turn_the_connection_check_off(api, make_tenant, monkeypatch):
    monkeypatch.setenv("RINGBACK_VERIFY_CALLBACKS", "false")
    owner = make_tenant()
    assert create(api, owner, cb_body(CLOSED_URL))["url"] == CLOSED_URL
    # the verify endpoint still checks
    response = api.call("get", "/callbacks/orders_cb/actions/verify", owner.headers)
    assert response.json_body == invalid(f"Could not connect to callback url [{CLOSED_URL}]")


# --- update ---------------------------------------------------------------------------------


def test_update_per_the_seed(api, make_tenant, receiver, httpserver):
    owner = make_tenant()
    create(api, owner, cb_body(receiver.url, backupUrl=receiver.url + "-b"))
    moved = Receiver(httpserver, "/moved")
    # the seed's sample body: url, "backupUrl " (sic), batchSize, authentication
    sample = {
        "name": "orders_cb",
        "url": moved.url,
        "backupUrl ": moved.url + "-backup",
        "batchSize": 1,
        "authentication": {"type": "B", "data": {"userName": "new-user", "password": "n3w"}},
    }
    response = api.call("put", "/callbacks/orders_cb", owner.headers, sample)
    assert response.status_code == 200, response.json_body
    assert response.json_body == {
        "name": "orders_cb",
        "url": moved.url,
        "backupUrl": moved.url + "-backup",
        "batchSize": 1,
        "links": links("orders_cb", "PUT"),
    }
    [check] = moved.requests  # the new url was checked with the new credentials
    assert (
        check["headers"]["Authorization"] == "Basic " + base64.b64encode(b"new-user:n3w").decode()
    )
    # batchSize alone keeps the url and the backup
    only_size = {k: v for k, v in sample.items() if k not in ("url", "backupUrl ")}
    only_size["batchSize"] = 200
    response = api.call("put", "/callbacks/orders_cb", owner.headers, only_size)
    assert response.json_body["url"] == moved.url and response.json_body["batchSize"] == 200
    assert response.json_body["backupUrl"] == moved.url + "-backup"
    # the old url was released in the same transaction: another callback may take it now
    create(api, owner, cb_body(receiver.url, name="reuses_old_url"))


def test_update_failures_have_the_seed_envelope(api, make_tenant, receiver, httpserver):
    owner = make_tenant()
    create(api, owner, cb_body(receiver.url))
    other = Receiver(httpserver, "/other")
    create(api, owner, cb_body(other.url, name="other_cb"))
    good = cb_body(receiver.url)

    def put(name: str, body: dict[str, Any]) -> tuple[int, Any]:
        response = api.call("put", f"/callbacks/{name}", owner.headers, body)
        return response.status_code, response.json_body

    # 404 Callback not found
    assert put("missing_cb", cb_body(receiver.url, name="missing_cb")) == (
        404,
        envelope("Object not found", "OBJECT_NOT_FOUND", "CallBack [missing_cb] not found"),
    )
    # URL already exists
    assert put("orders_cb", {**good, "url": other.url}) == (
        400,
        invalid(f"Callback url {other.url} ] already exists"),
    )
    # Invalid credentials: cannot connect with them
    receiver.status = 401
    assert put("orders_cb", good) == (
        400,
        invalid(f"Could not connect to callback url [{receiver.url}]"),
    )
    receiver.status = 200
    # Invalid authentication
    assert put("orders_cb", {**good, "authentication": {"type": "O", "data": {}}}) == (
        400,
        invalid("Only Basic Authentication is supported currently and value should be 'B' "),
    )
    # Empty batch size (< 0)
    assert put("orders_cb", {**good, "batchSize": -5}) == (
        400,
        invalid("Batch Size cannot be less than 0"),
    )
    # Empty callback name
    assert put("orders_cb", {**good, "name": ""}) == (
        400,
        invalid("callback name cannot be empty or null"),
    )
    # Empty URL
    assert put("orders_cb", {**good, "url": None}) == (
        400,
        invalid("callback url cannot be empty or null"),
    )
    # Empty authentication
    assert put("orders_cb", {k: v for k, v in good.items() if k != "authentication"}) == (
        400,
        envelope(
            "Invalid field name",
            "INVALID_FIELD_NAME",
            "The following field names [authentication] are invalid",
        ),
    )
    # the family's own: neither url nor batchSize, a name that differs from the path
    no_change = {k: v for k, v in good.items() if k not in ("url", "batchSize")}
    assert put("orders_cb", no_change) == (
        400,
        invalid("One of url or batchSize must be specified"),
    )
    assert put("orders_cb", {**good, "name": "other_cb"}) == (
        400,
        invalid("Name [other_cb] in request body does not match [orders_cb] in path"),
    )
    # validation comes before "not found" (the seed's checks first, then storage)
    assert put("missing_cb", {**good, "name": "missing_cb", "batchSize": -1})[0] == 400
    # nothing changed through all that
    shown = api.call("get", "/callbacks/orders_cb", owner.headers).json_body
    assert (shown["url"], shown["batchSize"]) == (receiver.url, 50)


# --- verify ---------------------------------------------------------------------------------


def test_verify_both_spellings(api, make_tenant, receiver):
    owner = make_tenant()
    view = create(api, owner, cb_body(receiver.url))
    for path in ("/callbacks/orders_cb/actions/verify", "/callbacks/orders_cb?action=verify"):
        response = api.call("get", path, owner.headers)
        assert response.status_code == 200
        assert response.json_body == {"status": "Successfully verified [orders_cb] "}
    assert len(receiver.requests) == 3  # create + two verifies, each with the stored credentials
    for request in receiver.requests:
        assert request["headers"]["Authorization"].startswith("Basic ")
        Webhook(view["signing_secret"]).verify(request["body"], request["headers"])
    receiver.status = 403
    for path in ("/callbacks/orders_cb/actions/verify", "/callbacks/orders_cb?action=verify"):
        response = api.call("get", path, owner.headers)
        assert response.status_code == 400
        assert response.json_body == invalid(f"Could not connect to callback url [{receiver.url}]")
    bad = api.call("get", "/callbacks/orders_cb?action=ping", owner.headers)
    assert (bad.status_code, bad.json_body) == (400, invalid("Invalid action [ping]"))
    missing = api.call("get", "/callbacks/nope/actions/verify", owner.headers)
    assert missing.status_code == 404
    assert missing.json_body == envelope(
        "Object not found", "OBJECT_NOT_FOUND", "CallBack [nope] not found"
    )


# --- delete ---------------------------------------------------------------------------------


def test_delete_refused_while_subscriptions_use_the_callback(api, make_tenant, receiver):
    owner = make_tenant()
    create(api, owner, cb_body(receiver.url))
    for name in ("bounces", "optouts"):
        sub = {"name": name, "callbackName": "orders_cb", "eventNames": ["EMAIL_BOUNCED"]}
        assert api.call("post", "/subscriptions", owner.headers, sub).status_code == 201
    refused = api.call("delete", "/callbacks/orders_cb", owner.headers)
    assert refused.status_code == 400
    assert refused.json_body == invalid(
        "CallBack [orders_cb] is used by subscriptions [bounces, optouts]"
    )
    for name in ("bounces", "optouts"):
        gone = api.call("delete", f"/subscriptions/{name}", owner.headers)
        assert gone.status_code == 200
        assert gone.json_body == {
            "message": f"Subscription [{name}] deleted successfully",
            "status": True,
        }
    deleted = api.call("delete", "/callbacks/orders_cb", owner.headers)
    assert deleted.status_code == 200
    assert deleted.json_body == {
        "message": "CallBack [orders_cb] deleted successfully",
        "status": True,
    }
    again = api.call("delete", "/callbacks/orders_cb", owner.headers)
    assert again.status_code == 404
    assert again.json_body == envelope(
        "Object not found", "OBJECT_NOT_FOUND", "CallBack [orders_cb] not found"
    )
    # name and url are free again
    create(api, owner, cb_body(receiver.url))


# --- subscriptions ----------------------------------------------------------------------------


def sub_links(name: str, callback: str, self_method: str) -> list[dict[str, str]]:
    href = f"{BASE}/subscriptions/{name}"
    return [
        {"rel": "self", "href": href, "method": self_method},
        {"rel": "getSubscription", "href": href, "method": "GET"},
        {"rel": "updateSubscription", "href": href, "method": "PUT"},
        {"rel": "deleteSubscription", "href": href, "method": "DELETE"},
        {"rel": "getCallBack", "href": f"{BASE}/callbacks/{callback}", "method": "GET"},
    ]


def test_subscription_lifecycle(api, make_tenant, receiver, httpserver):
    owner = make_tenant()
    create(api, owner, cb_body(receiver.url))
    create(api, owner, cb_body(Receiver(httpserver, "/two").url, name="second_cb"))
    # the aliases callBackName / eventTypes are accepted
    body = {
        "name": "bounces",
        "callBackName": "orders_cb",
        "eventTypes": ["EMAIL_BOUNCED", "SMS_FAILED"],
        "filters": {"campaignNames": ["spring"]},
    }
    created = api.call("post", "/subscriptions", owner.headers, body)
    assert created.status_code == 201
    view = {
        "name": "bounces",
        "callbackName": "orders_cb",
        "eventNames": ["EMAIL_BOUNCED", "SMS_FAILED"],
        "filters": {"campaignNames": ["spring"]},
    }
    assert created.json_body == {**view, "links": sub_links("bounces", "orders_cb", "POST")}
    got = api.call("get", "/subscriptions/bounces", owner.headers).json_body
    assert got == {**view, "links": sub_links("bounces", "orders_cb", "GET")}
    assert api.call("get", "/subscriptions", owner.headers).json_body == [got]
    assert api.call("get", "/callbacks/orders_cb/subscriptions", owner.headers).json_body == [got]
    assert api.call("get", "/callbacks/second_cb/subscriptions", owner.headers).json_body == []
    # under a callback's path the callback comes from the path
    nested = api.call(
        "post",
        "/callbacks/second_cb/subscriptions",
        owner.headers,
        {"name": "clicks", "eventNames": ["EMAIL_CLICKED"]},
    )
    assert nested.status_code == 201 and nested.json_body["callbackName"] == "second_cb"

    # move "bounces" to the second callback: the first is then free to delete
    moved = api.call("put", "/subscriptions/bounces", owner.headers, {"callbackName": "second_cb"})
    assert moved.status_code == 200
    assert moved.json_body["callbackName"] == "second_cb"
    assert moved.json_body["eventNames"] == ["EMAIL_BOUNCED", "SMS_FAILED"]
    assert moved.json_body["links"][0] == {
        "rel": "self",
        "href": f"{BASE}/subscriptions/bounces",
        "method": "PUT",
    }
    cleared = api.call("put", "/subscriptions/bounces", owner.headers, {"filters": None})
    assert cleared.json_body["filters"] == {"campaignNames": []}
    assert api.call("delete", "/callbacks/orders_cb", owner.headers).status_code == 200
    refused = api.call("delete", "/callbacks/second_cb", owner.headers)
    assert refused.json_body == invalid(
        "CallBack [second_cb] is used by subscriptions [bounces, clicks]"
    )


def test_subscription_failures(api, make_tenant, receiver):
    owner = make_tenant()
    create(api, owner, cb_body(receiver.url))
    good = {"name": "bounces", "callbackName": "orders_cb", "eventNames": ["EMAIL_BOUNCED"]}
    assert api.call("post", "/subscriptions", owner.headers, good).status_code == 201

    def post(body: dict[str, Any]) -> tuple[int, Any]:
        response = api.call("post", "/subscriptions", owner.headers, body)
        return response.status_code, response.json_body

    assert post({**good, "name": "x", "eventNames": ["EMAIL_OPENED", "EMAIL_BOUNCED"]}) == (
        400,
        invalid("Invalid event name [EMAIL_OPENED]"),
    )
    assert post(good) == (400, invalid("Subscription [bounces] already exists"))
    assert post({**good, "name": "x", "callbackName": "nope"}) == (
        404,
        envelope("Object not found", "OBJECT_NOT_FOUND", "CallBack [nope] not found"),
    )
    assert post({**good, "name": "x", "eventNames": []}) == (
        400,
        invalid("eventNames cannot be empty or null"),
    )
    assert post({**good, "name": ""}) == (400, invalid("subscription name cannot be empty or null"))
    missing = api.call("get", "/subscriptions/nope", owner.headers)
    assert (missing.status_code, missing.json_body) == (
        404,
        envelope("Object not found", "OBJECT_NOT_FOUND", "Subscription [nope] not found"),
    )
    assert (
        api.call(
            "put", "/subscriptions/nope", owner.headers, {"eventNames": ["SMS_FAILED"]}
        ).status_code
        == 404
    )
    assert api.call("delete", "/subscriptions/nope", owner.headers).status_code == 404
    to_missing = api.call("put", "/subscriptions/bounces", owner.headers, {"callbackName": "nope"})
    assert to_missing.json_body == envelope(
        "Object not found", "OBJECT_NOT_FOUND", "CallBack [nope] not found"
    )
    nothing = api.call("put", "/subscriptions/bounces", owner.headers, {})
    assert nothing.json_body == invalid(
        "One of callbackName, eventNames or filters must be specified"
    )
    assert api.call("get", "/callbacks/nope/subscriptions", owner.headers).status_code == 404


def test_event_list(api, make_tenant):
    owner = make_tenant("VIEWER")
    response = api.call("get", "/eventList", owner.headers)
    assert response.status_code == 200
    names = [e["name"] for e in response.json_body["events"]]
    assert len(names) == 26 and names[0] == "EMAIL_BOUNCED" and names[-1] == "WEBPUSH_CLICKED"
    assert {"name": "SMS_MO_FW_FAILED", "channelType": "SMS"} in response.json_body["events"]


# --- auth, envelope everywhere ------------------------------------------------------------------


def test_auth_bare_or_bearer_roles_and_isolation(api, make_tenant, receiver):
    owner = make_tenant()
    create(api, owner, cb_body(receiver.url))
    bare = {"Authorization": owner.key, "Content-Type": "application/json"}
    assert api.call("get", "/callbacks/orders_cb", bare).status_code == 200
    for headers in ({}, {"Authorization": "Bearer rbk_nope"}):
        response = api.call("get", "/callbacks", headers)
        assert (response.status_code, response.json_body) == (
            401,
            envelope("Unauthorized", "UNAUTHORIZED", "Authorization token is missing or invalid"),
        )
    viewer = make_tenant("VIEWER", tenant_id=owner.tenant_id)
    assert api.call("get", "/callbacks/orders_cb", viewer.headers).status_code == 200
    refused = api.call("delete", "/callbacks/orders_cb", viewer.headers)
    assert (refused.status_code, refused.json_body) == (
        403,
        envelope("Forbidden", "FORBIDDEN", "Not authorized to access this resource"),
    )
    stranger = make_tenant()
    assert api.call("get", "/callbacks", stranger.headers).json_body == []
    assert api.call("get", "/callbacks/orders_cb", stranger.headers).status_code == 404


def test_rotate_secret_is_for_owners_of_an_existing_callback(
    api, make_tenant, receiver, admin_headers
):
    from chalicelib.storage.notification import NotificationCallbackModel

    owner = make_tenant()
    created = create(api, owner, cb_body(receiver.url))

    def stored() -> bytes:
        return bytes(NotificationCallbackModel.get(owner.tenant_id, "orders_cb").secret_enc)

    at_create = stored()
    forbidden = envelope("Forbidden", "FORBIDDEN", "Not authorized to access this resource")
    rotate = "/callbacks/orders_cb/secret/rotate"
    for role in ("VIEWER", "MANAGER"):
        refused = api.call("post", rotate, make_tenant(role, tenant_id=owner.tenant_id).headers)
        assert (refused.status_code, refused.json_body) == (403, forbidden), role
    refused = api.call("post", rotate, admin_headers)  # the admin key has no tenant here
    assert (refused.status_code, refused.json_body) == (403, forbidden)
    for headers in ({}, {"Authorization": "rbk_nope"}):
        response = api.call("post", rotate, headers)
        assert (response.status_code, response.json_body) == (
            401,
            envelope("Unauthorized", "UNAUTHORIZED", "Authorization token is missing or invalid"),
        )
    not_found = envelope("Object not found", "OBJECT_NOT_FOUND", "CallBack [orders_cb] not found")
    for stranger in (make_tenant(), make_tenant("RESELLER")):  # their own tenant has no such name
        response = api.call("post", rotate, stranger.headers)
        assert (response.status_code, response.json_body) == (404, not_found)
    for name in ("no_such_cb", "x" * 101, "-bad"):
        response = api.call("post", f"/callbacks/{name}/secret/rotate", owner.headers)
        assert (response.status_code, response.json_body) == (
            404,
            envelope("Object not found", "OBJECT_NOT_FOUND", f"CallBack [{name}] not found"),
        )
    assert stored() == at_create  # no refusal rotated anything

    rotated = api.call("post", rotate, owner.headers)
    assert rotated.status_code == 200
    assert rotated.json_body["signing_secret"] != created["signing_secret"]
    assert stored() != at_create
    # the Basic credentials are untouched: the verify request still carries them
    assert api.call("get", "/callbacks/orders_cb/actions/verify", owner.headers).status_code == 200
    expected = base64.b64encode(f"hook-user:{PASSWORD}".encode()).decode()
    assert receiver.requests[-1]["headers"]["Authorization"] == f"Basic {expected}"
    assert all(PASSWORD not in text for text in api.seen)


def test_a_rotation_from_a_stale_read_loses_and_the_api_answers_busy(
    api, make_tenant, receiver, monkeypatch
):
    from datetime import UTC, datetime

    from chalicelib.storage import notification as store

    owner = make_tenant()
    create(api, owner, cb_body(receiver.url))
    stale = store.get_callback(owner.tenant_id, "orders_cb")
    assert stale is not None
    winner = store.rotate_secret(stale, datetime.now(UTC))
    with pytest.raises(store.Changed):  # two rotations from one read: exactly one wins
        store.rotate_secret(stale, datetime.now(UTC))
    record = store.get_callback(owner.tenant_id, "orders_cb")
    assert record is not None and store.signing_secrets_of(record)[0] == winner.signing_secret

    def lost(current: Any, now: Any) -> Any:
        raise store.Changed(current.name)

    monkeypatch.setattr(store, "rotate_secret", lost)
    busy = api.call("post", "/callbacks/orders_cb/secret/rotate", owner.headers)
    assert (busy.status_code, busy.json_body) == (
        503,
        envelope("Service unavailable", "SERVICE_UNAVAILABLE", "Too many concurrent changes"),
    )


def test_every_failure_is_the_envelope(api, make_tenant, monkeypatch):
    from chalicelib.storage import notification as store

    owner = make_tenant()
    not_allowed = api.call("patch", "/callbacks", owner.headers, {})
    assert not_allowed.status_code == 405
    assert not_allowed.json_body == envelope(
        "Method not allowed", "METHOD_NOT_ALLOWED", "The method is not allowed here"
    )
    wrong_type = api.call(
        "post", "/callbacks", {**owner.headers, "Content-Type": "text/plain"}, "{}"
    )
    assert wrong_type.status_code == 415
    assert wrong_type.json_body["errorCode"] == "UNSUPPORTED_MEDIA_TYPE"
    for raw, detail in (
        ("{oops", "Request body is not valid JSON"),
        ("", "Request body is required"),
        ("[1]", "Request body must be a JSON object"),
    ):
        response = api.call("post", "/callbacks", owner.headers, raw)
        assert (response.status_code, response.json_body) == (400, invalid(detail))

    def boom(tenant_id: str) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(store, "list_callbacks", boom)
    crashed = api.call("get", "/callbacks", owner.headers)
    assert crashed.status_code == 500
    assert crashed.json_body == envelope(
        "Internal server error", "INTERNAL_SERVER_ERROR", "An unexpected error occurred"
    )
    assert "secret internals" not in crashed.body.decode()


def test_password_is_encrypted_at_rest(api, make_tenant, receiver):
    import boto3

    from chalicelib.storage.notification import NotificationCallbackModel

    owner = make_tenant()
    create(api, owner, cb_body(receiver.url))
    items = boto3.client("dynamodb").scan(TableName=NotificationCallbackModel.Meta.table_name)
    raw = json.dumps(items["Items"], default=str)
    assert PASSWORD not in raw
    assert base64.b64encode(PASSWORD.encode()).decode() not in raw
    assert "password_enc" in raw


# --- races (storage layer, 50 threads) ----------------------------------------------------------


def _race(calls: list[Callable[[], Any]]) -> list[str]:
    from chalicelib.storage import notification as store

    def run(call: Callable[[], Any]) -> str:
        try:
            call()
        except store.NameTaken:
            return "name"
        except store.UrlTaken:
            return "url"
        return "won"

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def _spec(name: str, url: str) -> Any:
    from chalicelib.domain.notification import CallbackSpec

    return CallbackSpec(name, url, None, 10, "u", PASSWORD)


def test_fifty_creates_with_one_name_have_one_winner(api, make_tenant):
    from datetime import UTC, datetime

    from chalicelib.storage import notification as store

    owner = make_tenant()
    now = datetime.now(UTC)
    calls = [
        (
            lambda i=i: store.create_callback(
                owner.tenant_id, _spec("same", f"http://h/{i}"), "whsec_AAAA", now
            )
        )
        for i in range(50)
    ]
    outcomes = _race(calls)
    assert outcomes.count("won") == 1 and outcomes.count("name") == 49
    assert len(api.call("get", "/callbacks", owner.headers).json_body) == 1


def test_fifty_creates_with_one_url_have_one_winner(api, make_tenant):
    from datetime import UTC, datetime

    from chalicelib.storage import notification as store

    owner = make_tenant()
    now = datetime.now(UTC)
    # one location, spelled in several ways
    spellings = ["http://h.example/hook", "HTTP://H.example:80/hook/", "http://h.example/hook/"]
    calls = [
        (
            lambda i=i: store.create_callback(
                owner.tenant_id, _spec(f"cb{i}", spellings[i % 3]), "whsec_AAAA", now
            )
        )
        for i in range(50)
    ]
    outcomes = _race(calls)
    assert outcomes.count("won") == 1 and outcomes.count("url") == 49
    assert len(api.call("get", "/callbacks", owner.headers).json_body) == 1


def test_fifty_updates_to_one_url_have_one_winner_and_losers_keep_theirs(api, make_tenant):
    from datetime import UTC, datetime

    from chalicelib.storage import notification as store

    owner = make_tenant()
    now = datetime.now(UTC)
    records = [
        store.create_callback(owner.tenant_id, _spec(f"cb{i}", f"http://h/{i}"), "whsec_AAAA", now)
        for i in range(50)
    ]
    target = "http://h/wanted"
    calls = [(lambda r=r: store.update_callback(r, _spec(r.name, target), now)) for r in records]
    outcomes = _race(calls)
    assert outcomes.count("won") == 1 and outcomes.count("url") == 49
    listed = {v["name"]: v["url"] for v in api.call("get", "/callbacks", owner.headers).json_body}
    [winner] = [name for name, url in listed.items() if url == target]
    winner_index = int(winner[2:])
    assert all(listed[f"cb{i}"] == f"http://h/{i}" for i in range(50) if i != winner_index)
    # the winner's old url was released with the move; nobody else's was
    store.create_callback(
        owner.tenant_id, _spec("reuse", f"http://h/{winner_index}"), "whsec_AAAA", now
    )
    loser = (winner_index + 1) % 50
    with pytest.raises(store.UrlTaken):
        store.create_callback(
            owner.tenant_id, _spec("steal", f"http://h/{loser}"), "whsec_AAAA", now
        )


def test_creates_and_updates_racing_for_one_url(api, make_tenant):
    from datetime import UTC, datetime

    from chalicelib.storage import notification as store

    owner = make_tenant()
    now = datetime.now(UTC)
    records = [
        store.create_callback(owner.tenant_id, _spec(f"old{i}", f"http://h/{i}"), "whsec_AAAA", now)
        for i in range(25)
    ]
    target = "http://h/contested"
    calls: list[Callable[[], Any]] = [
        (lambda r=r: store.update_callback(r, _spec(r.name, target), now)) for r in records
    ]
    calls += [
        (
            lambda i=i: store.create_callback(
                owner.tenant_id, _spec(f"new{i}", target), "whsec_AAAA", now
            )
        )
        for i in range(25)
    ]
    outcomes = _race(calls)
    assert outcomes.count("won") == 1 and outcomes.count("url") == 49
    urls = [v["url"] for v in api.call("get", "/callbacks", owner.headers).json_body]
    assert urls.count(target) == 1


def test_subscribe_racing_a_delete_leaves_no_orphan(api, make_tenant):
    """Either the delete wins (no subscription) or a subscription wins (callback stays)."""
    from datetime import UTC, datetime

    from chalicelib.domain.notification import SubscriptionSpec
    from chalicelib.storage import notification as store

    owner = make_tenant()
    now = datetime.now(UTC)
    for trial in range(5):
        store.create_callback(owner.tenant_id, _spec("cb", f"http://h/{trial}"), "whsec_AAAA", now)

        def subscribe(i: int, trial: int = trial) -> str:
            spec = SubscriptionSpec(f"s{trial}-{i}", "cb", ("EMAIL_BOUNCED",), ())
            try:
                store.create_subscription(owner.tenant_id, spec, now)
            except store.CallbackMissing:
                return "missing"
            return "subscribed"

        def delete() -> str:
            try:
                store.delete_callback(owner.tenant_id, "cb")
            except store.InUse:
                return "in use"
            return "deleted"

        with ThreadPoolExecutor(max_workers=10) as pool:
            futures = [pool.submit(subscribe, i) for i in range(9)]
            deleted = pool.submit(delete).result()
            subscribed = [f.result() for f in futures].count("subscribed")
        callback = store.get_callback(owner.tenant_id, "cb")
        subs = store.subscriptions_of(owner.tenant_id, "cb")
        assert len(subs) == subscribed
        if deleted == "deleted":
            assert callback is None and subscribed == 0
        else:
            assert callback is not None and subscribed >= 1
            assert int(callback.subscription_count) == subscribed
            for sub in subs:
                store.delete_subscription(owner.tenant_id, sub.name)
            store.delete_callback(owner.tenant_id, "cb")
