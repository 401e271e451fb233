"""Notification callbacks family: what a client of /rest/api/v1.3/notifications would see."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from chalicelib.domain.notification import (
    EVENT_NAMES,
    CallbackSpec,
    NotificationError,
    SubscriptionSpec,
    callback_view,
    event_list_view,
    event_object,
    is_valid_url,
    normalise_url,
    parse_json_body,
    subscription_matches,
    subscription_view,
    validate_create,
    validate_subscription,
    validate_update,
)

BASE = "/rest/api/v1.3/notifications"
AUTH = {"type": "B", "data": {"userName": "hook-user", "password": "s3cret-pw"}}


def envelope(title: str, code: str, detail: str) -> dict[str, Any]:
    return {"type": "", "title": title, "errorCode": code, "detail": detail, "errorDetails": []}


def bad_param(detail: str) -> dict[str, Any]:
    return envelope("Invalid request parameters", "INVALID_PARAMETER", detail)


def bad_fields(listed: str) -> dict[str, Any]:
    return envelope(
        "Invalid field name",
        "INVALID_FIELD_NAME",
        f"The following field names [{listed}] are invalid",
    )


def create_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "orders_cb",
        "url": "https://hooks.example.test/primary",
        "batchSize": 50,
        "authentication": copy.deepcopy(AUTH),
    }
    body.update(overrides)
    return body


CURRENT = CallbackSpec(
    name="orders_cb",
    url="https://hooks.example.test/primary",
    backup_url="https://hooks.example.test/backup",
    batch_size=50,
    user_name="old-user",
    password="old-pw",
)


def update_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "orders_cb", "authentication": copy.deepcopy(AUTH)}
    body.update(overrides)
    return body


def raised(fn: Any, *args: Any, **kwargs: Any) -> NotificationError:
    with pytest.raises(NotificationError) as info:
        fn(*args, **kwargs)
    return info.value


# --- the envelope and the seed's texts, verbatim -------------------------------------------


def test_envelope_keys_are_in_seed_order():
    body = NotificationError.not_found("x").body()
    assert list(body) == ["type", "title", "errorCode", "detail", "errorDetails"]
    assert json.dumps(body) == (
        '{"type": "", "title": "Object not found", "errorCode": "OBJECT_NOT_FOUND", '
        '"detail": "CallBack [x] not found", "errorDetails": []}'
    )


def test_each_body_call_returns_a_fresh_error_details_list():
    err = NotificationError.empty_url()
    err.body()["errorDetails"].append("leak")
    assert err.body()["errorDetails"] == []


@pytest.mark.parametrize(
    ("err", "status", "body"),
    [
        (
            NotificationError.not_found("cb1"),
            404,
            envelope("Object not found", "OBJECT_NOT_FOUND", "CallBack [cb1] not found"),
        ),
        (
            NotificationError.url_exists("https://a.test/x"),
            400,
            bad_param("Callback url https://a.test/x ] already exists"),
        ),
        (
            NotificationError.could_not_connect("https://a.test/x"),
            400,
            bad_param("Could not connect to callback url [https://a.test/x]"),
        ),
        (
            NotificationError.only_basic(),
            400,
            bad_param("Only Basic Authentication is supported currently and value should be 'B' "),
        ),
        (
            NotificationError.batch_size_negative(),
            400,
            bad_param("Batch Size cannot be less than 0"),
        ),
        (NotificationError.empty_name(), 400, bad_param("callback name cannot be empty or null")),
        (NotificationError.empty_url(), 400, bad_param("callback url cannot be empty or null")),
        (NotificationError.invalid_field_names(["a", "b"]), 400, bad_fields("a, b")),
    ],
)
def test_seed_failures_are_verbatim(err, status, body):
    assert err.status == status
    assert err.body() == body


def test_only_basic_keeps_the_seeds_trailing_space():
    assert NotificationError.only_basic().body()["detail"].endswith("'B' ")


def test_invalid_field_names_drops_repeats_and_keeps_order():
    err = NotificationError.invalid_field_names(["zeta", "alpha", "zeta"])
    assert err.body() == bad_fields("zeta, alpha")


@pytest.mark.parametrize(
    ("err", "status", "title", "code", "detail"),
    [
        (
            NotificationError.subscription_not_found("s1"),
            404,
            "Object not found",
            "OBJECT_NOT_FOUND",
            "Subscription [s1] not found",
        ),
        (
            NotificationError.unauthorized(),
            401,
            "Unauthorized",
            "UNAUTHORIZED",
            "Authorization token is missing or invalid",
        ),
        (
            NotificationError.forbidden(),
            403,
            "Forbidden",
            "FORBIDDEN",
            "Not authorized to access this resource",
        ),
        (
            NotificationError.internal_error(),
            500,
            "Internal server error",
            "INTERNAL_SERVER_ERROR",
            "An unexpected error occurred",
        ),
        (
            NotificationError.callback_in_use("cb1", ["s1", "s2"]),
            400,
            "Invalid request parameters",
            "INVALID_PARAMETER",
            "CallBack [cb1] is used by subscriptions [s1, s2]",
        ),
        (
            NotificationError.callback_exists("cb1"),
            400,
            "Invalid request parameters",
            "INVALID_PARAMETER",
            "CallBack [cb1] already exists",
        ),
        (
            NotificationError.subscription_exists("s1"),
            400,
            "Invalid request parameters",
            "INVALID_PARAMETER",
            "Subscription [s1] already exists",
        ),
    ],
)
def test_family_failures_use_the_same_envelope(err, status, title, code, detail):
    assert err.status == status
    assert err.body() == envelope(title, code, detail)


# --- JSON body parsing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (None, "Request body is required"),
        (b"", "Request body is required"),
        ("   ", "Request body is required"),
        (b'{"name": ', "Request body is not valid JSON"),
        (b"\xff\xfe{}", "Request body is not valid JSON"),
        ('{"batchSize": NaN}', "Request body is not valid JSON"),
        ("[1, 2]", "Request body must be a JSON object"),
        ('"text"', "Request body must be a JSON object"),
    ],
)
def test_bad_bodies_get_the_envelope(raw, detail):
    err = raised(parse_json_body, raw)
    assert err.status == 400
    assert err.body() == bad_param(detail)


def test_good_body_parses_from_bytes_and_text():
    assert parse_json_body(b'{"name": "cb"}') == {"name": "cb"}
    assert parse_json_body('{"name": "cb"}') == {"name": "cb"}


def test_validators_refuse_non_object_bodies():
    assert raised(validate_create, ["x"]).body() == bad_param("Request body must be a JSON object")
    err = raised(validate_update, "orders_cb", None, CURRENT)
    assert err.body()["detail"] == "Request body must be a JSON object"


# --- create -----------------------------------------------------------------------------------


def test_create_returns_the_spec():
    spec = validate_create(create_body(backupUrl="https://hooks.example.test/backup"))
    assert spec == CallbackSpec(
        name="orders_cb",
        url="https://hooks.example.test/primary",
        backup_url="https://hooks.example.test/backup",
        batch_size=50,
        user_name="hook-user",
        password="s3cret-pw",
    )


def test_create_backup_is_optional():
    assert validate_create(create_body()).backup_url is None


def test_create_accepts_the_seeds_backup_key_with_trailing_space():
    spec = validate_create(create_body(**{"backupUrl ": "https://other.example.test/b"}))
    assert spec.backup_url == "https://other.example.test/b"


def test_create_refuses_both_backup_spellings():
    body = create_body(backupUrl="https://b.test/1", **{"backupUrl ": "https://b.test/2"})
    assert raised(validate_create, body).body() == bad_param(
        "Fields [backupUrl] and [backupUrl ] cannot both be specified"
    )


@pytest.mark.parametrize("name", [None, "", "   "])
def test_create_empty_name(name):
    body = create_body(name=name)
    assert raised(validate_create, body).body() == bad_param(
        "callback name cannot be empty or null"
    )


def test_create_missing_name():
    body = create_body()
    del body["name"]
    assert raised(validate_create, body).body() == bad_param(
        "callback name cannot be empty or null"
    )


@pytest.mark.parametrize(
    ("name", "shown"), [("a/b", "a/b"), (" cb", " cb"), (7, "7"), ("x" * 101, "x" * 101)]
)
def test_create_invalid_name(name, shown):
    assert raised(validate_create, create_body(name=name)).body() == bad_param(
        f"Invalid callback name [{shown}]"
    )


@pytest.mark.parametrize("url", [None, "", "  "])
def test_create_empty_url(url):
    assert raised(validate_create, create_body(url=url)).body() == bad_param(
        "callback url cannot be empty or null"
    )


def test_create_missing_url():
    body = create_body()
    del body["url"]
    assert raised(validate_create, body).body() == bad_param("callback url cannot be empty or null")


@pytest.mark.parametrize(
    "url",
    [
        "hooks.example.test/x",
        "ftp://hooks.example.test/x",
        "https:///nohost",
        "https://user:pw@hooks.example.test/x",
        "https://hooks.example.test/x#frag",
        "https://hooks.example.test:99999/x",
        "https://hooks.example.test:0/x",
        "https://hooks.example.test/a b",
        "https://[::1/x",
        "/relative/path",
    ],
)
def test_create_invalid_url(url):
    assert raised(validate_create, create_body(url=url)).body() == bad_param(
        f"Invalid callback url [{url}]"
    )


def test_create_url_too_long():
    url = "https://hooks.example.test/" + "a" * 2048
    assert (
        raised(validate_create, create_body(url=url))
        .body()["detail"]
        .startswith("Invalid callback url [")
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.test",
        "HTTPS://Hooks.Example.Test:8443/path?x=1",
        "https://10.0.0.5/x",
        "https://[::1]:8080/x",
    ],
)
def test_valid_urls_are_accepted(url):
    assert is_valid_url(url)
    assert validate_create(create_body(url=url)).url == url


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        (-1, "Batch Size cannot be less than 0"),
        (-500, "Batch Size cannot be less than 0"),
        (0, "Batch Size must be between 1 and 200"),
        (201, "Batch Size must be between 1 and 200"),
        (None, "Batch Size cannot be empty or null"),
        ("10", "Batch Size must be an integer"),
        (10.0, "Batch Size must be an integer"),
        (-1.5, "Batch Size must be an integer"),
        (True, "Batch Size must be an integer"),
    ],
)
def test_create_batch_size_rules(value, detail):
    assert raised(validate_create, create_body(batchSize=value)).body() == bad_param(detail)


@pytest.mark.parametrize("value", [1, 200])
def test_create_batch_size_bounds_are_inclusive(value):
    assert validate_create(create_body(batchSize=value)).batch_size == value


def test_create_missing_batch_size():
    body = create_body()
    del body["batchSize"]
    assert raised(validate_create, body).body() == bad_param("Batch Size cannot be empty or null")


@pytest.mark.parametrize(
    "auth",
    [None, {}, "B", {"type": ""}, {"type": None, "data": AUTH["data"]}, {"data": AUTH["data"]}],
)
def test_create_empty_authentication_names_the_field(auth):
    assert raised(validate_create, create_body(authentication=auth)).body() == bad_fields(
        "authentication"
    )


def test_create_missing_authentication_names_the_field():
    body = create_body()
    del body["authentication"]
    assert raised(validate_create, body).body() == bad_fields("authentication")


@pytest.mark.parametrize("auth_type", ["b", "O", "Basic", 1])
def test_create_non_basic_authentication(auth_type):
    body = create_body(authentication={"type": auth_type, "data": AUTH["data"]})
    assert raised(validate_create, body).body() == bad_param(
        "Only Basic Authentication is supported currently and value should be 'B' "
    )


@pytest.mark.parametrize(
    ("data", "listed"),
    [
        (None, "authentication.data"),
        ({}, "authentication.data.userName, authentication.data.password"),
        ({"userName": "u"}, "authentication.data.password"),
        ({"userName": "", "password": "p"}, "authentication.data.userName"),
    ],
)
def test_create_incomplete_credentials(data, listed):
    body = create_body(authentication={"type": "B", "data": data})
    assert raised(validate_create, body).body() == bad_fields(listed)


def test_create_user_name_with_colon_is_refused():
    body = create_body(authentication={"type": "B", "data": {"userName": "a:b", "password": "p"}})
    assert raised(validate_create, body).body() == bad_param(
        "authentication userName cannot contain ':'"
    )


def test_create_unknown_fields_are_listed_in_body_order():
    body = create_body(batchsize=5, links=[])
    assert raised(validate_create, body).body() == bad_fields("batchsize, links")


def test_create_unknown_fields_and_missing_authentication_in_one_error():
    body = create_body(colour="red")
    del body["authentication"]
    assert raised(validate_create, body).body() == bad_fields("colour, authentication")


@pytest.mark.parametrize(
    "backup",
    [
        "https://hooks.example.test/primary",
        "HTTPS://HOOKS.example.test/primary",
        "https://hooks.example.test:443/primary",
        "https://hooks.example.test/primary/",
    ],
)
def test_create_backup_at_the_same_location_is_refused(backup):
    assert raised(validate_create, create_body(backupUrl=backup)).body() == bad_param(
        "Callback backupUrl cannot be the same location as url"
    )


@pytest.mark.parametrize(
    "backup",
    [
        "https://hooks.example.test/primary2",
        "https://hooks.example.test/PRIMARY",
        "http://hooks.example.test/primary",
        "https://hooks.example.test:8443/primary",
        "https://hooks.example.test/primary?alt=1",
    ],
)
def test_create_backup_on_the_same_domain_is_fine(backup):
    assert validate_create(create_body(backupUrl=backup)).backup_url == backup


def test_create_invalid_backup_url():
    assert raised(validate_create, create_body(backupUrl="not a url")).body() == bad_param(
        "Invalid callback backupUrl [not a url]"
    )


@pytest.mark.parametrize("backup", [None, ""])
def test_create_null_or_empty_backup_means_none(backup):
    assert validate_create(create_body(backupUrl=backup)).backup_url is None


def test_normalise_url():
    assert normalise_url("HTTP://Example.TEST:80") == "http://example.test/"
    assert (
        normalise_url("https://example.test:8443/A/b/?q=1") == "https://example.test:8443/A/b?q=1"
    )
    assert normalise_url("https://[::1]:443/x") == "https://[::1]/x"


# --- check order on create ----------------------------------------------------------------------


def test_create_check_order():
    """Fix one failure at a time: each step reveals the next check in the documented order."""
    body: dict[str, Any] = {
        "name": "",
        "url": "",
        "batchSize": -1,
        "backupUrl": "nope",
        "authentication": {"type": "X"},
        "extra": 1,
    }
    seen = []
    fixes = [
        ("extra", None),
        ("name", "orders_cb"),
        ("authentication", copy.deepcopy(AUTH)),
        ("url", "https://hooks.example.test/p"),
        ("batchSize", 10),
        ("backupUrl", "https://hooks.example.test/p/"),
        ("backupUrl", "https://hooks.example.test/b"),
    ]
    for key, value in fixes:
        seen.append(raised(validate_create, body).body()["detail"])
        if value is None:
            del body[key]
        else:
            body[key] = value
    assert seen == [
        "The following field names [extra] are invalid",
        "callback name cannot be empty or null",
        "Only Basic Authentication is supported currently and value should be 'B' ",
        "callback url cannot be empty or null",
        "Batch Size cannot be less than 0",
        "Invalid callback backupUrl [nope]",
        "Callback backupUrl cannot be the same location as url",
    ]
    assert validate_create(body).backup_url == "https://hooks.example.test/b"


def test_conflicting_spellings_are_checked_before_everything():
    body = {"backupUrl": "x", "backupUrl ": "y"}
    assert raised(validate_create, body).body()["detail"] == (
        "Fields [backupUrl] and [backupUrl ] cannot both be specified"
    )


# --- update -------------------------------------------------------------------------------------


def test_update_url_only_keeps_batch_size_and_backup():
    spec = validate_update("orders_cb", update_body(url="https://new.example.test/h"), CURRENT)
    assert spec == CallbackSpec(
        name="orders_cb",
        url="https://new.example.test/h",
        backup_url="https://hooks.example.test/backup",
        batch_size=50,
        user_name="hook-user",
        password="s3cret-pw",
    )


def test_update_batch_size_only_keeps_url():
    spec = validate_update("orders_cb", update_body(batchSize=7), CURRENT)
    assert (spec.url, spec.batch_size) == (CURRENT.url, 7)


def test_update_replaces_credentials():
    spec = validate_update("orders_cb", update_body(batchSize=7), CURRENT)
    assert (spec.user_name, spec.password) == ("hook-user", "s3cret-pw")


def test_update_the_seeds_sample_body_with_trailing_space_backup_key():
    body = update_body(
        url="https://hooks.example.test/v2",
        batchSize=1,
        **{"backupUrl ": "https://hooks.example.test/v2-backup"},
    )
    spec = validate_update("orders_cb", body, CURRENT)
    assert spec.backup_url == "https://hooks.example.test/v2-backup"
    assert spec.batch_size == 1


@pytest.mark.parametrize("backup", [None, ""])
def test_update_null_or_empty_backup_removes_it(backup):
    spec = validate_update("orders_cb", update_body(batchSize=5, backupUrl=backup), CURRENT)
    assert spec.backup_url is None


def test_update_neither_url_nor_batch_size():
    err = raised(validate_update, "orders_cb", update_body(), CURRENT)
    assert err.body() == bad_param("One of url or batchSize must be specified")


def test_update_backup_only_is_not_enough():
    err = raised(validate_update, "orders_cb", update_body(backupUrl="https://x.test/b"), CURRENT)
    assert err.body()["detail"] == "One of url or batchSize must be specified"


@pytest.mark.parametrize("auth", [None, {}, {"type": ""}])
def test_update_empty_authentication(auth):
    err = raised(
        validate_update, "orders_cb", update_body(batchSize=5, authentication=auth), CURRENT
    )
    assert err.body() == bad_fields("authentication")


def test_update_missing_authentication():
    body = update_body(batchSize=5)
    del body["authentication"]
    assert raised(validate_update, "orders_cb", body, CURRENT).body() == bad_fields(
        "authentication"
    )


def test_update_non_basic_authentication():
    body = update_body(batchSize=5, authentication={"type": "O", "data": {}})
    assert raised(validate_update, "orders_cb", body, CURRENT).body() == bad_param(
        "Only Basic Authentication is supported currently and value should be 'B' "
    )


@pytest.mark.parametrize("name", [None, "", " "])
def test_update_empty_name(name):
    err = raised(validate_update, "orders_cb", update_body(name=name, batchSize=5), CURRENT)
    assert err.body() == bad_param("callback name cannot be empty or null")


def test_update_name_must_match_path():
    err = raised(validate_update, "orders_cb", update_body(name="other_cb", batchSize=5), CURRENT)
    assert err.body() == bad_param(
        "Name [other_cb] in request body does not match [orders_cb] in path"
    )


@pytest.mark.parametrize("url", [None, "", "   "])
def test_update_empty_url_when_given(url):
    err = raised(validate_update, "orders_cb", update_body(url=url, batchSize=5), CURRENT)
    assert err.body() == bad_param("callback url cannot be empty or null")


def test_update_invalid_url():
    err = raised(validate_update, "orders_cb", update_body(url="ftp://x.test/"), CURRENT)
    assert err.body() == bad_param("Invalid callback url [ftp://x.test/]")


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        (-3, "Batch Size cannot be less than 0"),
        (0, "Batch Size must be between 1 and 200"),
        (1000, "Batch Size must be between 1 and 200"),
        (None, "Batch Size cannot be empty or null"),
        ("5", "Batch Size must be an integer"),
    ],
)
def test_update_batch_size_rules(value, detail):
    err = raised(validate_update, "orders_cb", update_body(batchSize=value), CURRENT)
    assert err.body() == bad_param(detail)


def test_update_new_url_may_not_land_on_the_kept_backup():
    body = update_body(url="https://HOOKS.example.test/backup/")
    err = raised(validate_update, "orders_cb", body, CURRENT)
    assert err.body() == bad_param("Callback backupUrl cannot be the same location as url")


def test_update_new_backup_may_not_equal_the_kept_url():
    body = update_body(batchSize=5, backupUrl="https://hooks.example.test:443/primary")
    err = raised(validate_update, "orders_cb", body, CURRENT)
    assert err.body()["detail"] == "Callback backupUrl cannot be the same location as url"


def test_update_check_order():
    body: dict[str, Any] = {
        "name": "wrong",
        "url": "",
        "batchSize": -1,
        "authentication": {"type": "X"},
        "bogus": True,
    }
    seen = []
    fixes = [
        ("bogus", None),
        ("name", "orders_cb"),
        ("authentication", copy.deepcopy(AUTH)),
        ("url", "https://hooks.example.test/new"),
        ("batchSize", 3),
    ]
    for key, value in fixes:
        seen.append(raised(validate_update, "orders_cb", body, CURRENT).body()["detail"])
        if value is None:
            del body[key]
        else:
            body[key] = value
    assert seen == [
        "The following field names [bogus] are invalid",
        "Name [wrong] in request body does not match [orders_cb] in path",
        "Only Basic Authentication is supported currently and value should be 'B' ",
        "callback url cannot be empty or null",
        "Batch Size cannot be less than 0",
    ]
    assert validate_update("orders_cb", body, CURRENT).batch_size == 3


def test_update_empty_name_comes_before_authentication():
    body = {"name": "", "authentication": {"type": "X"}, "batchSize": 5}
    assert raised(validate_update, "orders_cb", body, CURRENT).body()["detail"] == (
        "callback name cannot be empty or null"
    )


def test_update_missing_change_is_reported_after_authentication():
    body = {"name": "orders_cb", "authentication": {"type": "X"}}
    assert (
        raised(validate_update, "orders_cb", body, CURRENT)
        .body()["detail"]
        .startswith("Only Basic Authentication")
    )


# --- views never leak credentials ---------------------------------------------------------------


def test_callback_view_shape_and_links():
    spec = validate_create(create_body(backupUrl="https://hooks.example.test/b"))
    href = f"{BASE}/callbacks/orders_cb"
    assert callback_view(spec, BASE) == {
        "name": "orders_cb",
        "url": "https://hooks.example.test/primary",
        "backupUrl": "https://hooks.example.test/b",
        "batchSize": 50,
        "links": [
            {"rel": "self", "href": href, "method": "PUT"},
            {"rel": "getCallBack", "href": href, "method": "GET"},
            {"rel": "deleteCallBack", "href": href, "method": "DELETE"},
            {"rel": "updateCallBack", "href": href, "method": "PUT"},
        ],
    }


@pytest.mark.parametrize("self_method", ["PUT", "GET", "POST"])
def test_callback_view_links_begin_with_the_seeds_three_in_its_order(self_method):
    rels = [link["rel"] for link in callback_view(CURRENT, BASE, self_method=self_method)["links"]]
    assert rels[:3] == ["self", "getCallBack", "deleteCallBack"]
    assert "updateCallBack" in rels[3:]


def test_callback_view_self_method_and_base_path():
    view = callback_view(CURRENT, "/prefix/", self_method="GET")
    assert view["links"][0] == {
        "rel": "self",
        "href": "/prefix/callbacks/orders_cb",
        "method": "GET",
    }


def test_callback_view_without_backup_shows_null():
    assert callback_view(validate_create(create_body()))["backupUrl"] is None


def test_views_and_repr_never_contain_credentials():
    spec = validate_create(create_body())
    text = json.dumps(callback_view(spec, BASE)) + repr(spec)
    assert "s3cret-pw" not in text
    assert "hook-user" not in json.dumps(callback_view(spec, BASE))
    assert "password" not in json.dumps(callback_view(spec, BASE))
    assert "userName" not in json.dumps(callback_view(spec, BASE))


# --- events -------------------------------------------------------------------------------------


def test_event_names_are_the_26_listed():
    assert len(EVENT_NAMES) == len(set(EVENT_NAMES)) == 26
    assert {"EMAIL_OPTOUT", "SMS_MO_FW_FAILED", "WEBPUSH_CLICKED", "MMS_FAILED"} <= set(EVENT_NAMES)


def test_event_list_view():
    view = event_list_view()
    assert [e["name"] for e in view["events"]] == list(EVENT_NAMES)
    by_name = {e["name"]: e["channelType"] for e in view["events"]}
    assert by_name["WEBPUSH_OPT_IN"] == "WEBPUSH"
    assert by_name["PUSH_OPT_IN"] == "PUSH"
    assert by_name["SMS_MO_FW_FAILED"] == "SMS"
    assert by_name["EMAIL_COMPLAINT"] == "EMAIL"
    assert by_name["MMS_SKIPPED"] == "MMS"


def test_event_object_fills_missing_fields_with_null_and_drops_extras():
    obj = event_object(
        "evt-1",
        "EMAIL_BOUNCED",
        {"riid": 42, "campaignName": "spring", "internalSecret": "x", "channelType": "EMAIL"},
    )
    assert list(obj) == [
        "campaignId",
        "riid",
        "failureReason",
        "customerId",
        "recipient",
        "failureType",
        "channelType",
        "campaignName",
        "optionalData",
        "eventId",
        "eventType",
    ]
    assert obj["riid"] == 42
    assert obj["campaignName"] == "spring"
    assert obj["campaignId"] is None and obj["optionalData"] is None
    assert (obj["eventId"], obj["eventType"]) == ("evt-1", "EMAIL_BOUNCED")
    assert "internalSecret" not in obj


def test_event_object_payload_cannot_override_id_or_type():
    obj = event_object("evt-1", "SMS_FAILED", {"eventId": "forged", "eventType": "EMAIL_FAILED"})
    assert (obj["eventId"], obj["eventType"]) == ("evt-1", "SMS_FAILED")


def test_event_object_batch_is_a_json_array():
    batch = [event_object(f"e{i}", "PUSH_FAILED", {"riid": i}) for i in range(3)]
    assert [o["riid"] for o in json.loads(json.dumps(batch))] == [0, 1, 2]


def test_event_object_refuses_unknown_event_type():
    with pytest.raises(ValueError):
        event_object("e", "EMAIL_OPENED", {})


# --- subscriptions ------------------------------------------------------------------------------


def sub_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "bounces",
        "callbackName": "orders_cb",
        "eventNames": ["EMAIL_BOUNCED", "EMAIL_FAILED"],
        "filters": {"campaignNames": ["spring"]},
    }
    body.update(overrides)
    return body


SUB = SubscriptionSpec("bounces", "orders_cb", ("EMAIL_BOUNCED",), ("spring",))


def test_subscription_create():
    assert validate_subscription(sub_body(), partial=False) == SubscriptionSpec(
        "bounces", "orders_cb", ("EMAIL_BOUNCED", "EMAIL_FAILED"), ("spring",)
    )


def test_subscription_aliases():
    body = sub_body()
    body["callBackName"] = body.pop("callbackName")
    body["eventTypes"] = body.pop("eventNames")
    spec = validate_subscription(body, partial=False)
    assert (spec.callback_name, spec.event_names) == (
        "orders_cb",
        ("EMAIL_BOUNCED", "EMAIL_FAILED"),
    )


@pytest.mark.parametrize(
    ("canonical", "alias"), [("callbackName", "callBackName"), ("eventNames", "eventTypes")]
)
def test_subscription_both_spellings_refused(canonical, alias):
    body = sub_body(**{alias: sub_body()[canonical]})
    assert raised(validate_subscription, body, partial=False).body() == bad_param(
        f"Fields [{canonical}] and [{alias}] cannot both be specified"
    )


def test_subscription_filters_optional_and_duplicates_collapse():
    body = sub_body(eventNames=["SMS_FAILED", "SMS_FAILED"])
    del body["filters"]
    spec = validate_subscription(body, partial=False)
    assert spec.event_names == ("SMS_FAILED",)
    assert spec.campaign_names == ()


@pytest.mark.parametrize("filters", [None, {}, {"campaignNames": None}, {"campaignNames": []}])
def test_subscription_empty_filter(filters):
    assert validate_subscription(sub_body(filters=filters), partial=False).campaign_names == ()


@pytest.mark.parametrize(
    "filters",
    [[], "spring", {"campaignNames": "spring"}, {"campaignNames": [""]}, {"campaignNames": [3]}],
)
def test_subscription_bad_filter(filters):
    assert raised(
        validate_subscription, sub_body(filters=filters), partial=False
    ).body() == bad_param("filters.campaignNames must be a list of non-empty campaign names")


def test_subscription_unknown_event_names_listed():
    body = sub_body(eventNames=["EMAIL_BOUNCED", "EMAIL_OPENED", "email_failed"])
    assert raised(validate_subscription, body, partial=False).body() == bad_param(
        "Invalid event name [EMAIL_OPENED, email_failed]"
    )


@pytest.mark.parametrize("events", [None, [], ""])
def test_subscription_empty_event_names(events):
    assert raised(
        validate_subscription, sub_body(eventNames=events), partial=False
    ).body() == bad_param("eventNames cannot be empty or null")


def test_subscription_event_names_must_be_a_list():
    err = raised(validate_subscription, sub_body(eventNames="EMAIL_BOUNCED"), partial=False)
    assert err.body() == bad_param("Invalid event name [EMAIL_BOUNCED]")


@pytest.mark.parametrize("name", [None, "", "  "])
def test_subscription_empty_name(name):
    assert raised(validate_subscription, sub_body(name=name), partial=False).body() == bad_param(
        "subscription name cannot be empty or null"
    )


def test_subscription_invalid_name():
    assert raised(validate_subscription, sub_body(name="a b"), partial=False).body() == bad_param(
        "Invalid subscription name [a b]"
    )


def test_subscription_empty_callback_name():
    assert raised(
        validate_subscription, sub_body(callbackName=""), partial=False
    ).body() == bad_param("callback name cannot be empty or null")


def test_subscription_unknown_fields():
    body = sub_body(extra=1, filters={"campaignNames": [], "campaignIds": [1]})
    assert raised(validate_subscription, body, partial=False).body() == bad_fields(
        "extra, filters.campaignIds"
    )


def test_subscription_create_under_a_callback_path():
    body = sub_body()
    del body["callbackName"]
    spec = validate_subscription(body, partial=False, callback_name="orders_cb")
    assert spec.callback_name == "orders_cb"
    err = raised(
        validate_subscription, sub_body(callbackName="x"), partial=False, callback_name="orders_cb"
    )
    assert err.body() == bad_param("Name [x] in request body does not match [orders_cb] in path")


def test_subscription_partial_keeps_missing_fields():
    spec = validate_subscription({"eventNames": ["SMS_FAILED"]}, partial=True, current=SUB)
    assert spec == SubscriptionSpec("bounces", "orders_cb", ("SMS_FAILED",), ("spring",))


def test_subscription_partial_filters_replace_whole_filter():
    spec = validate_subscription({"filters": None}, partial=True, current=SUB, path_name="bounces")
    assert spec == SubscriptionSpec("bounces", "orders_cb", ("EMAIL_BOUNCED",), ())


def test_subscription_partial_name_must_match():
    err = raised(
        validate_subscription,
        {"name": "other", "callbackName": "cb2"},
        partial=True,
        current=SUB,
        path_name="bounces",
    )
    assert err.body() == bad_param("Name [other] in request body does not match [bounces] in path")


def test_subscription_partial_needs_a_change():
    err = raised(validate_subscription, {"name": "bounces"}, partial=True, current=SUB)
    assert err.body() == bad_param("One of callbackName, eventNames or filters must be specified")


def test_subscription_partial_without_current_is_a_programming_error():
    with pytest.raises(ValueError):
        validate_subscription({"eventNames": ["SMS_FAILED"]}, partial=True)


def test_subscription_view():
    view = subscription_view(SUB, BASE)
    assert view["name"] == "bounces"
    assert view["callbackName"] == "orders_cb"
    assert view["eventNames"] == ["EMAIL_BOUNCED"]
    assert view["filters"] == {"campaignNames": ["spring"]}
    rels = {link["rel"]: (link["href"], link["method"]) for link in view["links"]}
    assert rels["getSubscription"] == (f"{BASE}/subscriptions/bounces", "GET")
    assert rels["deleteSubscription"] == (f"{BASE}/subscriptions/bounces", "DELETE")
    assert rels["getCallBack"] == (f"{BASE}/callbacks/orders_cb", "GET")


def test_subscription_view_round_trips_through_validation():
    view = subscription_view(SUB)
    del view["links"]
    assert validate_subscription(view, partial=False) == SUB


@pytest.mark.parametrize(
    ("spec", "event", "campaign", "expected"),
    [
        (SUB, "EMAIL_BOUNCED", "spring", True),
        (SUB, "EMAIL_BOUNCED", "autumn", False),
        (SUB, "EMAIL_BOUNCED", None, False),
        (SUB, "EMAIL_FAILED", "spring", False),
        (SubscriptionSpec("all", "cb", ("SMS_FAILED",), ()), "SMS_FAILED", "any", True),
        (SubscriptionSpec("all", "cb", ("SMS_FAILED",), ()), "SMS_FAILED", None, True),
        (SubscriptionSpec("all", "cb", ("SMS_FAILED",), ()), "SMS_SKIPPED", None, False),
        (SubscriptionSpec("c", "cb", ("SMS_FAILED",), ("Spring",)), "SMS_FAILED", "spring", False),
    ],
)
def test_subscription_matches(spec, event, campaign, expected):
    assert subscription_matches(spec, event, campaign) is expected
