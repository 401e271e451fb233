"""Local settings obey the shell: a ``RINGBACK_*`` variable set where ``make run`` starts wins
over the local stage's value in ``.chalice/config.json``; ``--env`` wins over both; the banner
lists what differs from the stage."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
import requests

from devstack.stage import (
    describe_differences,
    differences,
    local_environment,
    shell_settings,
    stage_environment,
)
from tests.stack_helpers import own_stack

STAGE = stage_environment("local")


def test_the_shell_wins_over_the_stage_and_overrides_win_over_both():
    shell = {
        "RINGBACK_RETRY_SCHEDULE": "1,1,1,1,1",
        "RINGBACK_HTTP_TIMEOUT": "3",
        "RINGBACK_NEW_THING": "x",
        "PATH": "/usr/bin",  # not a setting: never copied
    }
    merged = local_environment(shell, {"RINGBACK_HTTP_TIMEOUT": "7"})
    assert merged["RINGBACK_RETRY_SCHEDULE"] == "1,1,1,1,1"
    assert merged["RINGBACK_HTTP_TIMEOUT"] == "7"
    assert merged["RINGBACK_NEW_THING"] == "x"
    assert "PATH" not in merged
    # what the shell does not set keeps the stage's value
    assert merged["RINGBACK_TABLE_PREFIX"] == STAGE["RINGBACK_TABLE_PREFIX"]


def test_without_a_shell_setting_the_stage_is_the_environment():
    assert local_environment({"HOME": "/root"}) == STAGE
    assert differences(local_environment({})) == {}


def test_only_ringback_variables_count_as_shell_settings():
    assert shell_settings({"RINGBACK_A": "1", "ringback_b": "2", "XRINGBACK_C": "3"}) == {
        "RINGBACK_A": "1"
    }
    # the ringback command's own variables say which Ringback to talk to: not settings
    client = {"RINGBACK_URL": "http://x", "RINGBACK_KEY": "rbk_x", "RINGBACK_PROFILE": "p"}
    assert shell_settings(client) == {}


def test_differences_name_the_stage_value_and_hide_secrets():
    merged = local_environment(
        {"RINGBACK_RETRY_SCHEDULE": "1,1,1,1,1", "RINGBACK_ADMIN_KEY": "rbk_secret"}
    )
    changed = differences(merged)
    assert changed == {
        "RINGBACK_ADMIN_KEY": (None, "rbk_secret"),
        "RINGBACK_RETRY_SCHEDULE": (STAGE["RINGBACK_RETRY_SCHEDULE"], "1,1,1,1,1"),
    }
    lines = describe_differences(changed)
    assert lines == [
        "RINGBACK_ADMIN_KEY=(set) (stage: unset)",
        f"RINGBACK_RETRY_SCHEDULE=1,1,1,1,1 (stage: {STAGE['RINGBACK_RETRY_SCHEDULE']})",
    ]
    assert not any("rbk_secret" in line for line in lines)


def _ts(value: str) -> float:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").timestamp()


@pytest.mark.stack
def test_make_run_takes_the_shells_settings_and_says_so(httpserver):
    """``RINGBACK_RETRY_SCHEDULE=60 RINGBACK_STAGE=... make run``: the banner lists both, the
    API reports the stage, and a failed delivery waits the shell's 60 s, not the stage's 2 s."""
    shell = {"RINGBACK_RETRY_SCHEDULE": "60", "RINGBACK_STAGE": "local-from-shell"}
    with own_stack(shell, admin_key="rbk_shell-admin") as stack:
        text = "".join(stack.banner)
        assert "RINGBACK_RETRY_SCHEDULE=60 (stage: 2,4,8,16,32)" in text
        assert "RINGBACK_STAGE=local-from-shell (stage: local)" in text
        assert "rbk_shell-admin" in text  # the admin key line, as before
        assert "RINGBACK_ADMIN_KEY=(set)" in text

        base = stack.base_url
        assert requests.get(f"{base}/health", timeout=5).json()["stage"] == "local-from-shell"

        admin = {"Authorization": "Bearer rbk_shell-admin", "Content-Type": "application/json"}
        tenant = requests.post(
            f"{base}/admin/tenants", headers=admin, json={"name": "shell"}, timeout=10
        ).json()["tenant_id"]
        key = requests.post(
            f"{base}/admin/tenants/{tenant}/keys", headers=admin, json={"role": "OWNER"}, timeout=10
        ).json()["key"]
        owner = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        httpserver.expect_request("/down").respond_with_data("down", status=500)
        created = requests.post(
            f"{base}/companies/{tenant}/campaigns/config/callbacks",
            headers=owner,
            json={"event_type": "shell.test", "destination_url": httpserver.url_for("/down")},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        event = requests.post(
            f"{base}/events", headers=owner, json={"event_type": "shell.test"}, timeout=10
        ).json()
        shown = requests.get(f"{base}/events/{event['event_id']}", headers=owner, timeout=10)
        delivery_id = shown.json()["deliveries"][0]["delivery_id"]
        record: dict[str, object] = {}
        deadline = time.monotonic() + 60
        while record.get("status") != "retrying":
            assert time.monotonic() < deadline, record
            time.sleep(0.2)
            record = requests.get(
                f"{base}/deliveries/{delivery_id}", headers=owner, timeout=10
            ).json()
        attempts = record["attempts"]
        assert isinstance(attempts, list)
        wait = _ts(str(record["next_attempt_at"])) - _ts(attempts[0]["at"])
        assert 45 <= wait <= 75  # the shell's 60 s (+-20 % jitter), not the stage's 2 s
