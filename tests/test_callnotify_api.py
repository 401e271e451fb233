"""Callnotify API (seed callnotify-create.txt) as a client sees it: CRUD, every row of the seed's
error table, URL rules through the API, access levels."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from chalicelib import settings
from chalicelib.domain import urlsafety

BASE = "/customer/{}/callnotify"
VALID = {"url": "http://127.0.0.1:4000/call", "method": "POSTXML1", "selection": "MVNO"}
UNKNOWN_ID = "0123456789abcdef01234567"
UNAUTHORIZED = ("unauthorized", "A valid API key is required")


def _url(tenant_id: str, notify_id: str | None = None) -> str:
    return BASE.format(tenant_id) + (f"/{notify_id}" if notify_id else "")


def _create(client, tenant, body=None, headers=None):
    return client.http.post(
        _url(tenant.tenant_id),
        headers=headers if headers is not None else tenant.headers,
        body=json.dumps(VALID if body is None else body),
    )


def _error(response, status: int, code: str, message: str) -> None:
    assert response.status_code == status, response.body
    assert response.json_body == {"error": code, "message": message}


# --------------------------------------------------------------------------- CRUD


def test_create_returns_the_seed_item_and_a_secret_once(client, make_tenant):
    owner = make_tenant("OWNER")
    response = _create(client, owner, {**VALID, "_id": "52f4fd7734697b2800000001", "x": 1})
    assert response.status_code == 201
    item = response.json_body
    assert set(item) == {"_id", "url", "method", "selection", "signing_secret"}
    assert item["_id"] != "52f4fd7734697b2800000001" and len(item["_id"]) == 24
    assert int(item["_id"], 16) >= 0
    assert {k: item[k] for k in ("url", "method", "selection")} == VALID
    assert item["signing_secret"].startswith("whsec_")
    assert response.headers["Location"] == _url(owner.tenant_id, item["_id"])

    fetched = client.http.get(_url(owner.tenant_id, item["_id"]), headers=owner.headers)
    assert fetched.status_code == 200
    assert fetched.json_body == {"_id": item["_id"], **VALID}  # the secret is never shown again


def test_list_holds_only_this_customers_notifiers(client, make_tenant):
    owner, other = make_tenant("OWNER"), make_tenant("OWNER")
    assert client.http.get(_url(owner.tenant_id), headers=owner.headers).json_body == []
    first = _create(client, owner).json_body["_id"]
    second = _create(client, owner, {**VALID, "url": "tcp://127.0.0.1:5000"}).json_body["_id"]
    _create(client, other)
    listed = client.http.get(_url(owner.tenant_id), headers=owner.headers)
    assert listed.status_code == 200
    assert sorted(i["_id"] for i in listed.json_body) == sorted([first, second])
    assert all(set(i) == {"_id", "url", "method", "selection"} for i in listed.json_body)


@pytest.mark.parametrize("verb", ["post", "put"])
def test_update_is_partial_and_accepts_post_and_put(client, make_tenant, verb):
    owner = make_tenant()
    notify_id = _create(client, owner).json_body["_id"]
    send = getattr(client.http, verb)
    response = send(
        _url(owner.tenant_id, notify_id),
        headers=owner.headers,
        body=json.dumps({"selection": "ALL", "_id": UNKNOWN_ID}),
    )
    assert response.status_code == 200, response.body
    assert response.json_body == {**VALID, "_id": notify_id, "selection": "ALL"}
    response = send(
        _url(owner.tenant_id, notify_id),
        headers=owner.headers,
        body=json.dumps({"url": "udp://127.0.0.1:5060", "method": "GET2"}),
    )
    assert response.json_body == {
        "_id": notify_id,
        "url": "udp://127.0.0.1:5060",
        "method": "GET2",
        "selection": "ALL",
    }
    fetched = client.http.get(_url(owner.tenant_id, notify_id), headers=owner.headers)
    assert fetched.json_body == response.json_body


def test_invalid_update_changes_nothing(client, make_tenant):
    owner = make_tenant()
    notify_id = _create(client, owner).json_body["_id"]
    response = client.http.post(
        _url(owner.tenant_id, notify_id),
        headers=owner.headers,
        body=json.dumps({"selection": "ALL", "method": "POST"}),
    )
    _error(response, 422, "method", "Invalid method")
    fetched = client.http.get(_url(owner.tenant_id, notify_id), headers=owner.headers)
    assert fetched.json_body["selection"] == "MVNO"


def test_delete_then_everything_is_404_not_found(client, make_tenant):
    owner = make_tenant()
    notify_id = _create(client, owner).json_body["_id"]
    item = _url(owner.tenant_id, notify_id)
    deleted = client.http.delete(item, headers=owner.headers)
    assert deleted.status_code == 204
    for response in (
        client.http.get(item, headers=owner.headers),
        client.http.delete(item, headers=owner.headers),
        client.http.post(item, headers=owner.headers, body=json.dumps({"selection": "ALL"})),
        client.http.post(f"{item}/secret/rotate", headers=owner.headers),
    ):
        _error(response, 404, "not_found", "Call notify not found")
    assert client.http.get(_url(owner.tenant_id), headers=owner.headers).json_body == []


# --------------------------------------------------------------------------- secret rotation


def _stored_secret(customer_id: str, notify_id: str) -> bytes:
    from chalicelib.storage.callnotify import CallNotifierModel

    return bytes(CallNotifierModel.get(customer_id, notify_id).secret_enc)


def test_rotate_secret_answers_like_the_familys_other_writes(client, make_tenant, admin_headers):
    reseller = make_tenant("RESELLER")
    owner = make_tenant("OWNER", parent=reseller.tenant_id)
    created = _create(client, owner).json_body
    notify_id = created["_id"]
    rotate = _url(owner.tenant_id, notify_id) + "/secret/rotate"
    at_create = _stored_secret(owner.tenant_id, notify_id)
    for outsider in (make_tenant("OWNER"), make_tenant("RESELLER")):
        response = client.http.post(rotate, headers=outsider.headers)
        _error(response, 403, "access_denied", "Insufficient access level")
    other = make_tenant("OWNER")  # on its own path, with this customer's notifier id
    response = client.http.post(
        _url(other.tenant_id, notify_id) + "/secret/rotate", headers=other.headers
    )
    _error(response, 404, "not_found", "Call notify not found")
    for headers in ({}, {"Authorization": "Bearer rbk_not-a-key"}):
        _error(client.http.post(rotate, headers=headers), 401, *UNAUTHORIZED)
    for missing in (UNKNOWN_ID, "nope"):
        response = client.http.post(
            _url(owner.tenant_id, missing) + "/secret/rotate", headers=owner.headers
        )
        _error(response, 404, "not_found", "Call notify not found")
    response = client.http.post(
        _url(UNKNOWN_ID, notify_id) + "/secret/rotate", headers=admin_headers
    )
    _error(response, 404, "customer", "Customer not found")
    assert _stored_secret(owner.tenant_id, notify_id) == at_create  # no refusal rotated it

    seen = {created["signing_secret"]}
    for headers in (
        make_tenant("VIEWER", tenant_id=owner.tenant_id).headers,  # the seed lets VIEWER write
        make_tenant("MANAGER", tenant_id=owner.tenant_id).headers,
        owner.headers,
        reseller.headers,
        admin_headers,
    ):
        rotated = client.http.post(rotate, headers=headers)
        assert rotated.status_code == 200, rotated.body
        body = rotated.json_body
        assert list(body) == ["_id", "signing_secret", "previous_secret_valid_until"]
        assert body["_id"] == notify_id and body["signing_secret"].startswith("whsec_")
        assert body["signing_secret"] not in seen
        seen.add(body["signing_secret"])
    # a udp (or tcp) notifier has a secret too (it signs once the url becomes http): rotatable
    udp = _create(client, owner, {**VALID, "url": "udp://127.0.0.1:5060"}).json_body["_id"]
    rotated = client.http.post(_url(owner.tenant_id, udp) + "/secret/rotate", headers=owner.headers)
    assert rotated.status_code == 200 and rotated.json_body["_id"] == udp
    listed = client.http.get(_url(owner.tenant_id), headers=owner.headers)
    assert all(set(i) == {"_id", "url", "method", "selection"} for i in listed.json_body)
    assert not any(secret in listed.body.decode() for secret in seen)


def test_a_rotation_from_a_stale_read_loses_and_the_api_answers_busy(
    client, make_tenant, monkeypatch
):
    from datetime import UTC, datetime

    from chalicelib.storage import callnotify as store

    owner = make_tenant()
    notify_id = _create(client, owner).json_body["_id"]
    stale = store.get(owner.tenant_id, notify_id, consistent=True)
    assert stale is not None
    winner = store.rotate_secret(stale, datetime.now(UTC))
    with pytest.raises(store.Changed):  # two rotations from one read: exactly one wins
        store.rotate_secret(stale, datetime.now(UTC))
    record = store.get(owner.tenant_id, notify_id, consistent=True)
    assert record is not None and store.signing_secrets(record)[0] == winner.signing_secret

    def lost(current, now):
        raise store.Changed(current.notify_id)

    monkeypatch.setattr(store, "rotate_secret", lost)
    response = client.http.post(
        _url(owner.tenant_id, notify_id) + "/secret/rotate", headers=owner.headers
    )
    _error(response, 503, "busy", "Too many concurrent changes, retry")


# --------------------------------------------------------------------------- the seed's errors

SEED_ROWS = [
    (403, "access_denied", "Insufficient access level"),
    (404, "customer", "Customer not found"),
    (422, "url", "Invalid URL"),
    (422, "url", "URL protocol is invalid"),
    (422, "url", "Protocol types TCP and UDP only permit host and port"),
    (422, "url", "Protocol types TCP and UDP requires a valid port"),
    (422, "url", "Port is invalid"),
    (422, "url", "URL points to an invalid IP address"),
    (422, "url", "URL points to an invalid hostname"),
    (422, "method", "Invalid method"),
    (422, "selection", "Invalid selection"),
    (500, "internal_error", "Internal server error"),
]


def _public_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake DNS: two public names, one private, everything else unknown."""
    table = {
        "pbx.example.com": ["93.184.216.34"],
        "v6.example.com": ["2606:2800:220:1:248:1893:25c8:1946"],
        "office.example.com": ["192.168.10.5"],
        "localhost": ["127.0.0.1"],
    }

    def resolver(host: str, port: int) -> list[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    monkeypatch.setattr(urlsafety, "default_resolver", resolver)


def _provoke(row, client, make_tenant, monkeypatch):
    """Make the API answer with one row of the seed's table."""
    _status, code, message = row
    owner = make_tenant("OWNER")
    if code == "access_denied":
        return _create(client, make_tenant("OWNER"), headers=owner.headers)
    if code == "customer":
        return client.http.post(
            _url(UNKNOWN_ID), headers=make_tenant("ADMIN").headers, body=json.dumps(VALID)
        )
    if code == "internal_error":
        from chalicelib.storage import callnotify as store

        def broken(*args, **kwargs):
            raise RuntimeError("table is on fire /secret/path.py line 3")

        monkeypatch.setattr(store, "create", broken)
        return _create(client, owner)
    if code == "method":
        return _create(client, owner, {**VALID, "method": "postxml1"})
    if code == "selection":
        return _create(client, owner, {**VALID, "selection": "BOTH"})
    monkeypatch.setattr(settings, "allow_private_targets", lambda: False)
    _public_dns(monkeypatch)
    url = {
        "Invalid URL": "pbx.example.com/call",
        "URL protocol is invalid": "ftp://pbx.example.com/",
        "Protocol types TCP and UDP only permit host and port": "tcp://pbx.example.com:5000/x",
        "Protocol types TCP and UDP requires a valid port": "udp://pbx.example.com",
        "Port is invalid": "http://pbx.example.com:65536/",
        "URL points to an invalid IP address": "http://10.0.0.1/",
        "URL points to an invalid hostname": "http://office.example.com/",
    }[message]
    return _create(client, owner, {**VALID, "url": url})


@pytest.mark.parametrize("row", SEED_ROWS, ids=[f"{r[0]}-{r[1]}-{r[2]}" for r in SEED_ROWS])
def test_every_row_of_the_seed_error_table(client, make_tenant, monkeypatch, row):
    response = _provoke(row, client, make_tenant, monkeypatch)
    _error(response, *row)
    assert "Traceback" not in response.body.decode() and "fire" not in response.body.decode()


def test_unknown_notifier_is_404_not_found_including_malformed_ids(client, make_tenant):
    owner = make_tenant()
    for notify_id in (UNKNOWN_ID, "nope", "0" * 25):
        for verb in ("get", "delete"):
            response = getattr(client.http, verb)(
                _url(owner.tenant_id, notify_id), headers=owner.headers
            )
            _error(response, 404, "not_found", "Call notify not found")


def test_create_requires_each_field_and_checks_them_in_seed_order(client, make_tenant):
    owner = make_tenant()
    _error(_create(client, owner, {}), 422, "url", "Invalid URL")
    _error(_create(client, owner, {**VALID, "url": 42}), 422, "url", "Invalid URL")
    no_method = {"url": VALID["url"], "selection": "SIP"}
    _error(_create(client, owner, no_method), 422, "method", "Invalid method")
    no_selection = {"url": VALID["url"], "method": "GET1"}
    _error(_create(client, owner, no_selection), 422, "selection", "Invalid selection")
    everything_wrong = {"url": "ftp://x/", "method": "x", "selection": "x"}
    _error(_create(client, owner, everything_wrong), 422, "url", "URL protocol is invalid")
    _error(_create(client, owner, [VALID]), 422, "url", "Invalid URL")  # not an object: empty
    too_long = {**VALID, "url": "http://127.0.0.1/" + "a" * 2100}
    _error(_create(client, owner, too_long), 422, "url", "Invalid URL")


def test_broken_json_wrong_verb_and_media_type_come_in_the_family_shape(client, make_tenant):
    owner = make_tenant()
    broken = client.http.post(_url(owner.tenant_id), headers=owner.headers, body="{url:")
    _error(broken, 400, "invalid_body", "The request body is not valid JSON")

    patched = client.http.patch(_url(owner.tenant_id), headers=owner.headers, body="{}")
    assert patched.status_code == 405
    assert set(patched.json_body) == {"error", "message"}
    assert patched.json_body["error"] == "method_not_allowed"

    form = client.http.post(
        _url(owner.tenant_id),
        headers={**owner.headers, "Content-Type": "application/x-www-form-urlencoded"},
        body="url=x",
    )
    assert form.status_code == 415
    assert set(form.json_body) == {"error", "message"}
    assert form.json_body["error"] == "unsupported_media_type"


def test_unexpected_errors_on_every_route_are_500_internal_error(client, make_tenant, monkeypatch):
    from chalicelib.storage import callnotify as store

    owner = make_tenant()
    notify_id = _create(client, owner).json_body["_id"]

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    for name in ("list_for", "get", "update", "delete"):
        monkeypatch.setattr(store, name, broken)
    item = _url(owner.tenant_id, notify_id)
    for response in (
        client.http.get(_url(owner.tenant_id), headers=owner.headers),
        client.http.get(item, headers=owner.headers),
        client.http.put(item, headers=owner.headers, body="{}"),
        client.http.delete(item, headers=owner.headers),
    ):
        _error(response, 500, "internal_error", "Internal server error")


# --------------------------------------------------------------------------- URL rules via the API

PRIVATE_OK = "local stage (private targets allowed)"
PUBLIC_ONLY = "deployed stage (private targets refused)"

# (url, stage, expected message or None for accepted)
URL_TABLE: list[tuple[str, str, str | None]] = [
    ("http://127.0.0.1:4000/call", PRIVATE_OK, None),
    ("https://pbx.example.com/call?token=abc&x=1", PUBLIC_ONLY, None),
    ("HTTP://PBX.example.com:8080/", PUBLIC_ONLY, None),
    ("tcp://127.0.0.1:5000", PRIVATE_OK, None),
    ("udp://[::1]:5060/", PRIVATE_OK, None),
    ("tcp://[2001:4860:4860::8888]:5000", PUBLIC_ONLY, None),
    ("http://v6.example.com/hook", PUBLIC_ONLY, None),
    ("http://localhost:8000/hook", PRIVATE_OK, None),
    ("", PUBLIC_ONLY, "Invalid URL"),
    ("http://", PUBLIC_ONLY, "Invalid URL"),
    ("http://user:pw@pbx.example.com/", PUBLIC_ONLY, "Invalid URL"),
    ("http://pbx.example.com/a b", PUBLIC_ONLY, "Invalid URL"),
    ("http://2001:db8::1/", PUBLIC_ONLY, "Invalid URL"),
    ("sip://pbx.example.com:5060", PUBLIC_ONLY, "URL protocol is invalid"),
    ("ws://127.0.0.1/", PRIVATE_OK, "URL protocol is invalid"),
    (
        "udp://pbx.example.com:5060?x=1",
        PUBLIC_ONLY,
        "Protocol types TCP and UDP only permit host and port",
    ),
    (
        "tcp://user@pbx.example.com:5000",
        PUBLIC_ONLY,
        "Protocol types TCP and UDP only permit host and port",
    ),
    ("tcp://127.0.0.1/path", PRIVATE_OK, "Protocol types TCP and UDP only permit host and port"),
    ("tcp://pbx.example.com", PUBLIC_ONLY, "Protocol types TCP and UDP requires a valid port"),
    ("udp://[2001:4860::1]:", PUBLIC_ONLY, "Protocol types TCP and UDP requires a valid port"),
    ("tcp://127.0.0.1:0", PRIVATE_OK, "Protocol types TCP and UDP requires a valid port"),
    ("https://pbx.example.com:abc/", PUBLIC_ONLY, "Port is invalid"),
    ("udp://pbx.example.com:99999", PUBLIC_ONLY, "Port is invalid"),
    ("http://[2606:4700::1111]:70000/", PUBLIC_ONLY, "Port is invalid"),
    ("http://127.0.0.1:4000/call", PUBLIC_ONLY, "URL points to an invalid IP address"),
    ("http://100.64.123.100:4000/call", PUBLIC_ONLY, "URL points to an invalid IP address"),
    ("tcp://[::1]:5000", PUBLIC_ONLY, "URL points to an invalid IP address"),
    ("http://169.254.169.254/latest", PRIVATE_OK, "URL points to an invalid IP address"),
    ("udp://224.0.0.1:5060", PRIVATE_OK, "URL points to an invalid IP address"),
    ("http://0.0.0.0/", PRIVATE_OK, "URL points to an invalid IP address"),
    ("http://[::]/", PRIVATE_OK, "URL points to an invalid IP address"),
    ("http://0x7f000001/", PUBLIC_ONLY, "URL points to an invalid IP address"),
    ("http://localhost/", PUBLIC_ONLY, "URL points to an invalid hostname"),
    ("http://office.example.com/", PUBLIC_ONLY, "URL points to an invalid hostname"),
    ("http://unknown.example.com/", PUBLIC_ONLY, "URL points to an invalid hostname"),
    ("tcp://bad_name.example.com:5000", PUBLIC_ONLY, "URL points to an invalid hostname"),
    ("http://-pbx.example.com/", PUBLIC_ONLY, "URL points to an invalid hostname"),
]


def test_api_url_table_is_large_and_covers_every_url_message():
    assert len(URL_TABLE) >= 15
    messages = {m for _, _, m in URL_TABLE if m}
    assert messages == {message for _, code, message in SEED_ROWS if code == "url"}
    assert {stage for _, stage, _ in URL_TABLE} == {PRIVATE_OK, PUBLIC_ONLY}


@pytest.mark.parametrize(("url", "stage", "expected"), URL_TABLE)
def test_url_rules_through_create_and_update(
    client, make_tenant, monkeypatch, url, stage, expected
):
    _public_dns(monkeypatch)
    if stage == PUBLIC_ONLY:
        monkeypatch.setattr(settings, "allow_private_targets", lambda: False)
    owner = make_tenant()
    created = _create(client, owner, {**VALID, "url": url})
    if expected is None:
        assert created.status_code == 201, created.body
        assert created.json_body["url"] == url  # stored as submitted
        return
    _error(created, 422, "url", expected)
    # the same rules on update; the stored URL stays as it was
    monkeypatch.setattr(settings, "allow_private_targets", lambda: True)
    notify_id = _create(client, owner).json_body["_id"]
    if stage == PUBLIC_ONLY:
        monkeypatch.setattr(settings, "allow_private_targets", lambda: False)
    updated = client.http.post(
        _url(owner.tenant_id, notify_id), headers=owner.headers, body=json.dumps({"url": url})
    )
    _error(updated, 422, "url", expected)
    kept = client.http.get(_url(owner.tenant_id, notify_id), headers=owner.headers)
    assert kept.json_body["url"] == VALID["url"]


# --------------------------------------------------------------------------- access levels


def _every_operation(client, customer_id: str, headers: dict[str, str], notify_id: str):
    """(name, response) for each operation of the family, run with ``headers``."""
    item = _url(customer_id, notify_id)
    created = client.http.post(_url(customer_id), headers=headers, body=json.dumps(VALID))
    yield "create", created
    yield "list", client.http.get(_url(customer_id), headers=headers)
    yield "get", client.http.get(item, headers=headers)
    yield "update", client.http.post(item, headers=headers, body=json.dumps({"selection": "ALL"}))
    yield "rotate", client.http.post(f"{item}/secret/rotate", headers=headers)
    yield "delete", client.http.delete(item, headers=headers)


@pytest.mark.parametrize("role", ["VIEWER", "MANAGER", "OWNER"])
def test_keys_of_the_customer_may_do_everything_viewer_included(client, make_tenant, role):
    owner = make_tenant("OWNER")
    key = make_tenant(role, tenant_id=owner.tenant_id)
    notify_id = _create(client, owner).json_body["_id"]
    results = dict(_every_operation(client, owner.tenant_id, key.headers, notify_id))
    assert results["create"].status_code == 201  # the seed lists VIEWER among the creators
    assert results["list"].status_code == 200 and len(results["list"].json_body) == 2
    assert results["get"].status_code == 200
    assert results["update"].json_body["selection"] == "ALL"
    assert results["rotate"].status_code == 200
    assert results["delete"].status_code == 204


def test_reseller_of_the_parent_tenant_and_admin_may_do_everything(
    client, make_tenant, admin_headers
):
    reseller = make_tenant("RESELLER")
    customer = make_tenant("OWNER", parent=reseller.tenant_id)
    for headers in (reseller.headers, admin_headers):
        notify_id = _create(client, customer).json_body["_id"]
        results = dict(_every_operation(client, customer.tenant_id, headers, notify_id))
        assert [r.status_code for r in results.values()] == [201, 200, 200, 200, 200, 204]


def test_other_customers_and_foreign_resellers_get_403_access_denied(client, make_tenant):
    reseller = make_tenant("RESELLER")
    customer = make_tenant("OWNER", parent=reseller.tenant_id)
    notify_id = _create(client, customer).json_body["_id"]
    outsiders = [
        make_tenant("OWNER"),  # another customer
        make_tenant("VIEWER", parent=reseller.tenant_id),  # a sibling customer of the reseller
        make_tenant("RESELLER"),  # somebody else's reseller
        make_tenant("OWNER", parent=customer.tenant_id),  # a child of the customer: not a reseller
    ]
    for outsider in outsiders:
        for name, response in _every_operation(
            client, customer.tenant_id, outsider.headers, notify_id
        ):
            assert response.status_code == 403, (outsider.role, name)
            assert response.json_body == {
                "error": "access_denied",
                "message": "Insufficient access level",
            }
    listed = client.http.get(_url(customer.tenant_id), headers=customer.headers).json_body
    assert [i["_id"] for i in listed] == [notify_id]  # nothing was created, changed or deleted
    assert listed[0]["selection"] == "MVNO"


def test_a_reseller_cannot_reach_its_customers_customers(client, make_tenant):
    reseller = make_tenant("RESELLER")
    customer = make_tenant("RESELLER", parent=reseller.tenant_id)
    grandchild = make_tenant("OWNER", parent=customer.tenant_id)
    _error(
        _create(client, grandchild, headers=reseller.headers),
        403,
        "access_denied",
        "Insufficient access level",
    )
    assert _create(client, grandchild, headers=customer.headers).status_code == 201


def test_unknown_customer_is_404_for_admin_and_reseller_403_for_others(
    client, make_tenant, admin_headers
):
    for headers in (admin_headers, make_tenant("RESELLER").headers):
        for customer_id in (UNKNOWN_ID, "not-an-id"):
            response = client.http.get(_url(customer_id), headers=headers)
            _error(response, 404, "customer", "Customer not found")
    for role in ("OWNER", "VIEWER", "MANAGER"):
        response = client.http.get(_url(UNKNOWN_ID), headers=make_tenant(role).headers)
        _error(response, 403, "access_denied", "Insufficient access level")


def test_missing_or_unknown_key_is_401_unauthorized(client, make_tenant):
    owner = make_tenant()
    for headers in (
        {"Content-Type": "application/json"},
        {"Authorization": "Bearer rbk_not-a-key", "Content-Type": "application/json"},
        {"Authorization": "Bearer ", "Content-Type": "application/json"},
    ):
        response = client.http.post(_url(owner.tenant_id), headers=headers, body=json.dumps(VALID))
        _error(response, 401, "unauthorized", "A valid API key is required")
    assert client.http.get(_url(owner.tenant_id), headers=owner.headers).json_body == []


def test_a_key_in_the_query_string_is_refused_with_the_header_to_use(client, make_tenant):
    """Only the scheduled API takes ``?api_key=`` (its seed); here a 401 in this family's body."""
    owner = make_tenant()
    response = client.http.get(f"{_url(owner.tenant_id)}?api_key={owner.key}")
    assert response.status_code == 401
    assert set(response.json_body) == {"error", "message"}
    assert response.json_body["error"] == "unauthorized"
    assert "Authorization header" in response.json_body["message"]


# --------------------------------------------------------------------------- races


def test_concurrent_updates_and_deletes_never_resurrect_a_notifier(aws, make_tenant):
    """50 threads on the storage layer: 25 update, 25 delete the same notifier at once. Exactly
    one delete wins, and no update (conditioned on existence) brings it back."""
    from chalicelib.domain.timeutil import utcnow
    from chalicelib.storage import callnotify as store

    owner = make_tenant()
    notify_id = store.create(owner.tenant_id, dict(VALID), utcnow()).notifier.notify_id
    barrier = threading.Barrier(50)
    deleted: list[bool] = []
    updated: list[bool] = []
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            if index % 2:
                deleted.append(store.delete(owner.tenant_id, notify_id))
            else:
                fields = {"selection": "ALL", "method": "GET1"}
                result = store.update(owner.tenant_id, notify_id, fields, utcnow())
                updated.append(result is not None)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert deleted.count(True) == 1 and len(deleted) == 25
    assert len(updated) == 25
    assert store.get(owner.tenant_id, notify_id, consistent=True) is None
    assert list(store.list_for(owner.tenant_id)) == []
