"""The Scheduled callbacks API as a client sees it: every parameter rule and error key in JSON and
XML, retrieve/delete/list, roles, tenant isolation, and the duplicate rule under a 50-way race."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from tests.scheduled_helpers import answer, call, iso_in

LOCAL = "http://127.0.0.1:9/demo-callback-endpoint"


def create_params(owner, **changes):
    params = {"api_key": owner.key, "callback_url": LOCAL, "callback_time": iso_in(60, 1)}
    for name, value in changes.items():
        if value is None:
            params.pop(name, None)
        else:
            params[name] = value
    return params


def created(client, owner, **changes):
    response = call(client, "create", create_params(owner, **changes))
    assert response.status_code == 200, response.body
    return answer(response)["callback_id"]


# ------------------------------------------------------------------ create: success shapes


def test_create_answers_the_seed_json_shape(client, make_tenant):
    owner = make_tenant()
    params = create_params(owner, callback_url=LOCAL + "?user=7&x=%26")
    response = call(client, "create", params)
    assert response.status_code == 200
    body = answer(response)
    assert list(body) == [
        "success",
        "api_function",
        "api_call_parameters",
        "callback_id",
        "signing_secret",
    ]
    assert body["success"] == 1 and body["api_function"] == "create"
    echoed = {k: v for k, v in params.items() if k != "api_key"}
    assert body["api_call_parameters"] == echoed  # as received, and never the key
    assert isinstance(body["callback_id"], str) and len(body["callback_id"]) == 24
    assert body["signing_secret"].startswith("whsec_")
    other = answer(call(client, "create", create_params(owner, callback_time=iso_in(61))))
    assert other["signing_secret"] != body["signing_secret"]  # one secret per callback
    shown = answer(call(client, f"retrieve/{body['callback_id']}", {"api_key": owner.key}))
    assert shown["callback"]["callback_url"] == LOCAL + "?user=7&x=%26"


def test_create_answers_the_seed_xml_shape(client, make_tenant):
    owner = make_tenant()
    params = create_params(owner, response_format="xml")
    response = call(client, "create", params)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/xml"
    text = response.body.decode()
    assert text.index("<api_function>create</api_function>") < text.index("<success>1</success>")
    body = answer(response)
    assert list(body)[:4] == ["api_function", "success", "api_call_parameters", "callback_id"]
    assert body["api_call_parameters"] == {k: v for k, v in params.items() if k != "api_key"}
    assert len(body["callback_id"]) == 24


@pytest.mark.parametrize("slash", [True, False])
def test_trailing_slash_and_bare_paths_both_work(client, make_tenant, slash):
    owner = make_tenant()
    response = call(client, "create", create_params(owner), slash=slash)
    assert response.status_code == 200
    callback_id = answer(response)["callback_id"]
    for function in (f"retrieve/{callback_id}", "list", f"delete/{callback_id}"):
        response = call(client, function, {"api_key": owner.key}, slash=slash)
        assert response.status_code == 200, (function, response.body)


def test_create_by_post_form_and_key_in_header(client, make_tenant):
    owner = make_tenant()
    form = create_params(owner)
    response = call(client, "create", method="POST", form=form)
    assert response.status_code == 200 and answer(response)["success"] == 1
    # the key in the query, the rest in the body; a body value wins over the query's
    query = {"api_key": owner.key, "callback_url": "http://127.0.0.1:9/loses"}
    form = {"callback_url": "http://127.0.0.1:9/wins", "callback_time": iso_in(90)}
    body = answer(call(client, "create", query, method="POST", form=form))
    assert body["api_call_parameters"]["callback_url"] == "http://127.0.0.1:9/wins"
    # the shared auth's Authorization header works too
    params = create_params(owner, api_key=None, callback_time=iso_in(120))
    response = call(client, "create", params, headers={"Authorization": f"Bearer {owner.key}"})
    assert response.status_code == 200


def test_seed_repeat_example_without_a_repeat_type_repeats_at_the_interval(client, make_tenant):
    """The seed's own "every 30 minutes" URL has no ``callback_repeat_type``: it is a callback
    repeating at the interval, as a client copying the example expects."""
    owner = make_tenant()
    for index, given_type in enumerate((None, "")):
        seed_repeat = create_params(
            owner,
            callback_repeat="1",
            callback_repeat_interval_unit="minutes",
            callback_repeat_interval="30",
            callback_url=f"http://127.0.0.1:9911/every{index}",
        )
        if given_type is not None:
            seed_repeat["callback_repeat_type"] = given_type
        response = call(client, "create", seed_repeat)
        assert response.status_code == 200, response.body
        shown = answer(
            call(client, f"retrieve/{answer(response)['callback_id']}", {"api_key": owner.key})
        )
        assert shown["callback"]["repeat"] == {
            "type": "interval",
            "interval_unit": "minutes",
            "interval": 30,
            "count": None,
            "until": None,
        }


# ------------------------------------------------------------------ create: every error key

REPEAT = {
    "callback_repeat": "1",
    "callback_repeat_type": "interval",
    "callback_repeat_interval_unit": "minutes",
    "callback_repeat_interval": "30",
}

CREATE_ERRORS = [
    ({"callback_url": None}, "callback_url_absent", 400),
    ({"callback_url": ""}, "callback_url_absent", 400),
    ({"callback_url": "ftp://127.0.0.1/x"}, "callback_url_invalid", 400),
    ({"callback_url": "/relative"}, "callback_url_invalid", 400),
    ({"callback_url": "http://169.254.169.254/latest"}, "callback_url_forbidden", 400),
    ({"callback_url": "http://0.0.0.0:8080/x"}, "callback_url_forbidden", 400),
    ({"callback_time": None}, "callback_time_absent", 400),
    ({"callback_time": "2030-01-01T10:00:00"}, "callback_time_invalid", 400),
    ({"callback_time": "tomorrow"}, "callback_time_invalid", 400),
    ({"callback_time": "2010-11-28T19:55:00+01:00"}, "callback_time_expired", 400),
    ({"callback_repeat": "yes"}, "callback_repeat_invalid", 400),
    ({**REPEAT, "callback_repeat_type": "Interval"}, "callback_repeat_type_invalid", 400),
    (
        {**REPEAT, "callback_repeat_interval_unit": None},
        "callback_repeat_interval_unit_absent",
        400,
    ),
    (
        {**REPEAT, "callback_repeat_interval_unit": "weeks"},
        "callback_repeat_interval_unit_invalid",
        400,
    ),
    ({**REPEAT, "callback_repeat_interval": None}, "callback_repeat_interval_absent", 400),
    ({**REPEAT, "callback_repeat_interval": "0"}, "callback_repeat_interval_invalid", 400),
    ({**REPEAT, "callback_repeat_interval": "-5"}, "callback_repeat_interval_invalid", 400),
    ({**REPEAT, "callback_repeat_count": "two"}, "callback_repeat_count_invalid", 400),
    (
        {**REPEAT, "callback_repeat_until": "2010-01-01T00:00Z"},
        "callback_repeat_until_invalid",
        400,
    ),
    ({"api_key": None}, "api_key_absent", 401),
    ({"api_key": "rbk_not-a-key"}, "api_key_invalid", 401),
]


@pytest.mark.parametrize("fmt", ["json", "xml"])
@pytest.mark.parametrize(("changes", "key", "status"), CREATE_ERRORS)
def test_create_error_keys(client, make_tenant, fmt, changes, key, status):
    owner = make_tenant()
    response = call(client, "create", create_params(owner, response_format=fmt, **changes))
    assert response.status_code == status
    assert response.headers["Content-Type"] == f"application/{fmt}"
    expected = {"success": 0 if fmt == "json" else "0", "error": key}
    assert answer(response) == expected


def test_repeat_parameters_are_ignored_without_callback_repeat(client, make_tenant):
    owner = make_tenant()
    params = create_params(owner, callback_repeat_type="bogus", callback_repeat_interval="x")
    assert call(client, "create", params).status_code == 200


def test_response_format_invalid_is_always_json(client, make_tenant):
    owner = make_tenant()
    for function in ("create", "list", f"retrieve/{'a' * 24}", f"delete/{'a' * 24}"):
        response = call(client, function, create_params(owner, response_format="XML"))
        assert response.status_code == 400
        assert response.headers["Content-Type"] == "application/json"
        assert answer(response) == {"success": 0, "error": "response_format_invalid"}


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_viewer_reads_but_may_not_write(client, make_tenant, fmt):
    owner = make_tenant()
    viewer = make_tenant("VIEWER", tenant_id=owner.tenant_id)
    callback_id = created(client, owner)
    forbidden = {"success": 0 if fmt == "json" else "0", "error": "api_key_forbidden"}
    response = call(client, "create", create_params(viewer, response_format=fmt))
    assert (response.status_code, answer(response)) == (403, forbidden)
    response = call(
        client, f"delete/{callback_id}", {"api_key": viewer.key, "response_format": fmt}
    )
    assert (response.status_code, answer(response)) == (403, forbidden)
    shown = call(client, f"retrieve/{callback_id}", {"api_key": viewer.key, "response_format": fmt})
    assert shown.status_code == 200
    assert call(client, "list", {"api_key": viewer.key}).status_code == 200


def test_admin_key_has_no_account_here(client, make_tenant):
    from tests.conftest import ADMIN_KEY

    response = call(client, "list", {"api_key": ADMIN_KEY})
    assert (response.status_code, answer(response)["error"]) == (403, "api_key_forbidden")


# ------------------------------------------------------------------ duplicates


def test_same_time_and_url_is_refused_until_cancelled(client, make_tenant):
    owner = make_tenant()
    other = make_tenant()
    when = datetime.fromisoformat(iso_in(300))
    first = created(client, owner, callback_time=when.isoformat())
    same_instant = when.astimezone(datetime.fromisoformat("2000-01-01T00:00-05:00").tzinfo)
    for fmt in ("json", "xml"):
        response = call(
            client,
            "create",
            create_params(owner, callback_time=same_instant.isoformat(), response_format=fmt),
        )
        assert response.status_code == 409
        assert answer(response)["error"] == "callback_already_exists"
    # another URL, another second, or another account: not a duplicate
    created(client, owner, callback_time=when.isoformat(), callback_url=LOCAL + "?b")
    created(client, owner, callback_time=iso_in(301))
    created(client, other, callback_time=when.isoformat())
    # a cancelled callback no longer holds its time and URL
    assert call(client, f"delete/{first}", {"api_key": owner.key}).status_code == 200
    created(client, owner, callback_time=when.isoformat())


def test_fifty_concurrent_identical_creates_have_one_winner(aws, make_tenant):
    from chalicelib.domain.scheduled import parse_create
    from chalicelib.storage import scheduled as store

    owner = make_tenant()
    now = datetime.now(UTC)
    request = parse_create(create_params(owner), now)
    barrier = threading.Barrier(50)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt() -> None:
        barrier.wait()
        try:
            store.create(owner.tenant_id, request, now)
            outcome = "created"
        except store.AlreadyExists:
            outcome = "exists"
        except Exception as exc:  # anything else is a failure of the test
            outcome = repr(exc)
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=attempt) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(set(outcomes)) == ["created", "exists"], outcomes
    assert outcomes.count("created") == 1
    stored, _ = store.list_page(owner.tenant_id, None, 100, None)
    assert len(stored) == 1


# ------------------------------------------------------------------ retrieve, delete


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_retrieve_shows_the_callback(client, make_tenant, fmt):
    owner = make_tenant()
    when = iso_in(120, -5)
    params = create_params(
        owner,
        callback_time=when,
        callback_repeat="1",
        callback_repeat_type="immediate",
        callback_repeat_interval_unit="seconds",
        callback_repeat_interval="1",
        callback_repeat_count="3",
    )
    callback_id = answer(call(client, "create", params))["callback_id"]
    response = call(
        client, f"retrieve/{callback_id}", {"api_key": owner.key, "response_format": fmt}
    )
    assert response.status_code == 200
    body = answer(response)
    utc = datetime.fromisoformat(when).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert body["success"] in (1, "1") and body["api_function"] == "retrieve"
    assert body["api_call_parameters"] == {"response_format": fmt}
    assert body["callback_id"] == callback_id
    callback = body["callback"]
    assert callback["callback_url"] == LOCAL
    assert callback["timestamp"] == utc == callback["callback_time"]
    assert callback["state"] == "scheduled"
    assert str(callback["fired_count"]) == "0"
    assert callback["last_status"] is None
    assert callback["repeat"]["type"] == "immediate"
    assert str(callback["repeat"]["count"]) == "3"


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_unknown_malformed_and_foreign_ids_are_not_found(client, make_tenant, fmt):
    owner = make_tenant()
    other = make_tenant()
    foreign = created(client, other)
    for function in ("retrieve", "delete"):
        for callback_id in ("f" * 24, "not-an-id", foreign, ""):
            path = f"{function}/{callback_id}" if callback_id else function
            response = call(client, path, {"api_key": owner.key, "response_format": fmt})
            assert response.status_code == 404, (path, response.body)
            assert answer(response)["error"] == "callback_not_found"
    assert answer(call(client, f"retrieve/{foreign}", {"api_key": other.key}))["success"] == 1


def test_delete_cancels_and_the_record_stays_readable(client, make_tenant):
    owner = make_tenant()
    callback_id = created(client, owner)
    for fmt in ("json", "xml"):
        response = call(
            client, f"delete/{callback_id}", {"api_key": owner.key, "response_format": fmt}
        )
        assert response.status_code == 200  # deleting again is not an error
        body = answer(response)
        assert body["api_function"] == "delete" and body["callback_id"] == callback_id
        assert body["api_call_parameters"] == {"response_format": fmt}
    shown = answer(call(client, f"retrieve/{callback_id}", {"api_key": owner.key}))["callback"]
    assert shown["state"] == "cancelled" and shown["timestamp"] is None


# ------------------------------------------------------------------ list


def _page(client, owner, **params):
    response = call(client, "list", {"api_key": owner.key, **params})
    assert response.status_code == 200, response.body
    return answer(response)


def test_list_pages_oldest_first_with_an_opaque_cursor(client, make_tenant):
    owner = make_tenant()
    ids = [created(client, owner, callback_time=iso_in(100 + i)) for i in range(7)]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        body = _page(client, owner, **params)
        pages += 1
        seen += [c["callback_id"] for c in body["callbacks"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ids and pages == 3
    xml = _page(client, owner, limit="3", response_format="xml")
    assert [c["callback_id"] for c in xml["callbacks"]] == ids[:3]
    assert xml["next_cursor"]


def test_list_filters_by_state_with_paging(client, make_tenant):
    owner = make_tenant()
    ids = [created(client, owner, callback_time=iso_in(200 + i)) for i in range(5)]
    for callback_id in ids[1:4]:
        assert call(client, f"delete/{callback_id}", {"api_key": owner.key}).status_code == 200
    first = _page(client, owner, state="cancelled", limit="2")
    assert [c["callback_id"] for c in first["callbacks"]] == ids[1:3]
    rest = _page(client, owner, state="cancelled", limit="2", cursor=first["next_cursor"])
    assert [c["callback_id"] for c in rest["callbacks"]] == ids[3:4]
    assert rest["next_cursor"] is None
    scheduled = _page(client, owner, state="scheduled")
    assert [c["callback_id"] for c in scheduled["callbacks"]] == [ids[0], ids[4]]
    assert _page(client, owner, state="completed")["callbacks"] == []


def test_list_is_per_account(client, make_tenant):
    owner = make_tenant()
    other = make_tenant()
    mine = created(client, owner)
    created(client, other)
    assert [c["callback_id"] for c in _page(client, owner)["callbacks"]] == [mine]


LIST_ERRORS = [
    ({"state": "Scheduled"}, "state_invalid"),
    ({"state": "pending"}, "state_invalid"),
    ({"limit": "0"}, "limit_invalid"),
    ({"limit": "101"}, "limit_invalid"),
    ({"limit": "ten"}, "limit_invalid"),
    ({"cursor": "nonsense"}, "cursor_invalid"),
    ({"cursor": "!" * 16}, "cursor_invalid"),
]


@pytest.mark.parametrize("fmt", ["json", "xml"])
@pytest.mark.parametrize(("params", "key"), LIST_ERRORS)
def test_list_error_keys(client, make_tenant, fmt, params, key):
    owner = make_tenant()
    response = call(client, "list", {"api_key": owner.key, "response_format": fmt, **params})
    assert response.status_code == 400
    assert answer(response)["error"] == key


# ------------------------------------------------------------------ errors outside the views


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_method_media_type_and_internal_errors_keep_the_shape(
    client, make_tenant, monkeypatch, fmt
):
    owner = make_tenant()
    zero = 0 if fmt == "json" else "0"
    query = {"api_key": owner.key, "response_format": fmt}
    response = call(client, "list", query, method="PUT")
    assert (response.status_code, answer(response)) == (
        405,
        {"success": zero, "error": "method_not_allowed"},
    )
    response = call(
        client, "create", query, method="POST", headers={"Content-Type": "multipart/form-data"}
    )
    assert (response.status_code, answer(response)) == (
        415,
        {"success": zero, "error": "unsupported_media_type"},
    )
    json_body = client.http.post(
        "/api/1.0/create/?api_key=" + owner.key + "&response_format=" + fmt,
        headers={"Content-Type": "application/json"},
        body='{"callback_url": "x"}',
    )
    assert (json_body.status_code, answer(json_body)) == (
        415,
        {"success": zero, "error": "unsupported_media_type"},
    )

    from chalicelib.storage import scheduled as store

    def broken(*args, **kwargs):
        raise RuntimeError("the table is on fire")

    monkeypatch.setattr(store, "list_page", broken)
    response = call(client, "list", query)
    assert response.status_code == 500
    assert answer(response) == {"success": zero, "error": "internal_error"}
    assert b"fire" not in response.body
