"""The portal in a real headless Chromium (Debian's ``chromium`` driven by Playwright for Python)
over ``make run``'s stack: a magic link, a campaign registration created in the page, events
published through the API, deliveries, retries to the backup URL, a replay; read-only sessions,
spent and expired links, escaping, and no console error on any page.

Screenshots go to ``$PORTAL_SCREENSHOTS`` (default: the test's temporary directory);
``docs/portal.png`` is one of them. The tests skip, saying why, only when Chromium cannot be
started at all (``.ci/run`` installs it, so in CI they run).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import LocalStack, TenantKey

pytestmark = pytest.mark.stack

CHROMIUM = os.environ.get("RINGBACK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
XSS = "<img src=x onerror=alert(1)>"
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:  # pragma: no cover - requirements-dev pins it
        pytest.skip(f"playwright is not installed: {exc}")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
        except Error as exc:
            pytest.skip(f"Chromium at {CHROMIUM} cannot start: {exc}")
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get("PORTAL_SCREENSHOTS")
    target = Path(wanted) if wanted else tmp_path_factory.mktemp("portal-screenshots")
    target.mkdir(parents=True, exist_ok=True)
    return target


class Receiver:
    """A loopback receiver whose answer the test switches between 200 and 500."""

    def __init__(self) -> None:
        self.failing = False
        self.hits: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                receiver.hits.append(self.path)
                if self.path.startswith("/gone"):
                    self.send_response(410)
                else:
                    self.send_response(500 if receiver.failing else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_POST = do_PUT = do_GET = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.stop()


def _link(stack: LocalStack, owner: TenantKey, rights: str, **extra: Any) -> str:
    response = requests.post(
        f"{stack.base_url}/portal/sessions",
        headers=owner.headers,
        json={"rights": rights, **extra},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["url"])


class Page:
    """A browser page that records console errors, failed requests and dialogs."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on(
            "response",
            lambda r: (
                self.errors.append(f"HTTP {r.status} {r.request.method} {r.url}")
                if r.status >= 400
                else None
            ),
        )

        def on_dialog(dialog: Any) -> None:
            self.dialogs.append(dialog.message)
            dialog.dismiss()

        self.page.on("dialog", on_dialog)

    def close(self) -> None:
        self.context.close()


def _show_deliveries(page: Any, status: str, delivery_id: str) -> None:
    """Filter the deliveries page until the delivery shows up in that status (the worker runs
    in the stack's own loops)."""
    page.goto(page.url.split("#")[0] + "#deliveries")
    page.wait_for_selector("#delivery-filter")
    page.select_option("#delivery-filter select[name=status]", status)
    row = page.locator(f"tr[data-delivery-id='{delivery_id}']")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        page.click("#delivery-filter button[type=submit]")
        page.wait_for_load_state("networkidle")
        if row.count():
            return
        time.sleep(0.5)
    raise AssertionError(f"delivery {delivery_id} never listed as {status}")


def _delivery_of(stack: LocalStack, owner: TenantKey, event_id: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        event = requests.get(
            f"{stack.base_url}/events/{event_id}", headers=owner.headers, timeout=10
        ).json()
        if event.get("deliveries"):
            return str(event["deliveries"][0]["delivery_id"])
        time.sleep(0.3)
    raise AssertionError(f"event {event_id} was never fanned out")


def _delivery(stack: LocalStack, owner: TenantKey, delivery_id: str) -> dict[str, Any]:
    response = requests.get(
        f"{stack.base_url}/deliveries/{delivery_id}", headers=owner.headers, timeout=10
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def _wait_status(stack: LocalStack, owner: TenantKey, delivery_id: str, status: str) -> None:
    deadline = time.monotonic() + 150
    while _delivery(stack, owner, delivery_id)["status"] != status:
        assert time.monotonic() < deadline, f"{delivery_id} never became {status}"
        time.sleep(0.5)


def _wait_replayed(stack: LocalStack, owner: TenantKey, delivery_id: str) -> str:
    deadline = time.monotonic() + 30
    while not _delivery(stack, owner, delivery_id)["replayed_by"]:
        assert time.monotonic() < deadline, f"{delivery_id} was never replayed"
        time.sleep(0.3)
    return str(_delivery(stack, owner, delivery_id)["replayed_by"])


def _publish(stack: LocalStack, owner: TenantKey, event_type: str) -> str:
    response = requests.post(
        f"{stack.base_url}/events",
        headers=owner.headers,
        json={"event_type": event_type, "payload": {"order": "o-1"}},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return _delivery_of(stack, owner, response.json()["event_id"])


def test_the_portal_journey(
    local_stack: LocalStack, browser: Any, receiver: Receiver, shots: Path
) -> None:
    owner = local_stack.tenant_key("OWNER")
    event_type = f"portal.journey.{time.monotonic_ns()}"
    tab = Page(browser)
    page = tab.page

    # 1. open a magic link: a cookie session, and the token is gone from the address bar
    link = _link(local_stack, owner, "manage")
    page.goto(link)
    page.wait_for_selector("#campaign-create")
    assert page.url == f"{local_stack.base_url}/portal#registrations" or page.url.endswith(
        "/portal"
    )
    assert "token" not in page.url
    cookies = {c["name"]: c for c in tab.context.cookies()}
    assert cookies["rb_portal"]["httpOnly"] is True
    assert cookies["rb_portal"]["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # not readable by script

    # 2. create a campaign registration pointing at the loopback receiver
    form = page.locator("#campaign-create")
    form.locator("input[name=event_type]").fill(event_type)
    form.locator("input[name=destination_url]").fill(f"{receiver.url}/primary")
    form.locator("input[name=backup_url]").fill(f"{receiver.url}/backup")
    form.locator("button[type=submit]").click()
    secret = page.locator("[data-testid=secret-value]")
    secret.wait_for(timeout=WAIT_MS)
    assert secret.inner_text().startswith("whsec_")
    row = page.locator("#campaign-list tbody tr", has_text=event_type)
    assert row.count() == 1
    page.screenshot(path=str(shots / "registrations.png"), full_page=True)

    # 3. publish an event through the API; 4. see it delivered in the portal
    delivered = _publish(local_stack, owner, event_type)
    _show_deliveries(page, "delivered", delivered)
    page.click(f"tr[data-delivery-id='{delivered}']")
    card = page.locator("[data-testid=delivery]")
    card.wait_for()
    assert card.get_attribute("data-status") == "delivered"
    first = card.locator("ol.timeline li").first
    assert "[primary]" in first.inner_text() and "HTTP 200" in first.inner_text()

    # 5. the receiver fails: retries, then the backup URL, in the attempts timeline
    receiver.failing = True
    failing = _publish(local_stack, owner, event_type)
    also_failing = _publish(local_stack, owner, event_type)  # for the range replay below
    _show_deliveries(page, "retrying", failing)
    page.click(f"tr[data-delivery-id='{failing}']")
    # the detail refreshes itself until the delivery is final (2,4,8,16,32 s locally)
    page.wait_for_selector("[data-testid=delivery][data-status=failed]", timeout=150_000)
    attempts = page.locator("[data-testid=delivery] ol.timeline li")
    texts = [attempts.nth(i).inner_text() for i in range(attempts.count())]
    assert len(texts) >= 4, texts
    assert all("[primary]" in t and "HTTP 500" in t for t in texts[:3]), texts
    assert any("[backup]" in t and "/backup" in t for t in texts[3:]), texts
    page.screenshot(path=str(shots / "deliveries.png"), full_page=True)

    # 6. replay, and see it delivered
    _wait_status(local_stack, owner, also_failing, "failed")  # before the receiver recovers
    receiver.failing = False
    page.locator("[data-testid=delivery] button", has_text="Replay").click()
    page.wait_for_selector("[data-testid=delivery][data-status=delivered]", timeout=60_000)
    replay = page.locator("[data-testid=delivery]")
    assert "Replay of" in replay.inner_text()
    assert "HTTP 200" in replay.locator("ol.timeline li").first.inner_text()
    page.screenshot(path=str(shots / "replayed.png"), full_page=True)

    # a filtered range: every failed delivery not yet replayed, with a progress bar
    _show_deliveries(page, "failed", also_failing)
    page.get_by_role(
        "button", name="Replay every failed/skipped delivery matching the filter"
    ).click()
    page.wait_for_selector("#replay-progress:has-text('1 / 1')")
    assert page.get_attribute("[data-testid=replay-bar]", "value") == "1"
    page.wait_for_selector("#flash .msg:has-text('Replayed 1 of 1')")
    replayed_by = _wait_replayed(local_stack, owner, also_failing)
    _wait_status(local_stack, owner, replayed_by, "delivered")

    # every page once more, for console errors and screenshots
    for name in ("registrations", "scheduled", "health", "deliveries"):
        page.goto(f"{local_stack.base_url}/portal#{name}")
        page.wait_for_selector("main[aria-busy=false]")
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(shots / f"page-{name}.png"), full_page=True)
    page.goto(f"{local_stack.base_url}/portal#health")
    page.wait_for_selector("#health")
    assert page.locator("table#health tbody tr", has_text=f"{receiver.url}/primary").count() == 1
    assert tab.errors == [], tab.errors
    assert tab.dialogs == []
    if os.environ.get("PORTAL_SCREENSHOTS"):
        shutil.copy(shots / "deliveries.png", shots / "portal.png")
    tab.close()


def test_names_render_as_text(local_stack: LocalStack, browser: Any) -> None:
    owner = local_stack.tenant_key("OWNER")
    made = requests.post(
        f"{local_stack.base_url}/companies/{owner.tenant_id}/campaigns/config/callbacks",
        headers=owner.headers,
        json={
            "event_type": "xss.check",
            "campaign_id": XSS,
            "destination_url": "http://127.0.0.1:9/%3Cimg%20src=x%20onerror=alert(1)%3E",
        },
        timeout=10,
    )
    assert made.status_code == 201, made.text
    tab = Page(browser)
    tab.page.goto(_link(local_stack, owner, "read"))
    tab.page.wait_for_selector("#campaign-list")
    cell = tab.page.locator("#campaign-list td.name")
    assert cell.inner_text() == XSS
    assert tab.page.locator("#campaign-list img").count() == 0
    assert tab.dialogs == [] and tab.errors == []
    tab.close()


def test_a_read_only_session_cannot_write(local_stack: LocalStack, browser: Any) -> None:
    owner = local_stack.tenant_key("OWNER")
    tab = Page(browser)
    page = tab.page
    page.goto(_link(local_stack, owner, "read"))
    page.wait_for_selector("#campaign-create")
    assert "read-only" in page.inner_text("#who")
    assert page.locator("#campaign-create button[type=submit]").is_disabled()
    assert tab.errors == []
    # Even a hand-made request with the session's own CSRF token is refused.
    status = page.evaluate(
        """async (path) => {
            const s = await (await fetch('/portal/session')).json();
            const r = await fetch(path, {method: 'POST', headers: {
                'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf_token},
                body: JSON.stringify({event_type: 'ro.check',
                                      destination_url: 'http://127.0.0.1:9/ro'})});
            return r.status;
        }""",
        f"/companies/{owner.tenant_id}/campaigns/config/callbacks",
    )
    assert status == 403
    listed = requests.get(
        f"{local_stack.base_url}/companies/{owner.tenant_id}/campaigns/config/callbacks",
        headers=owner.headers,
        timeout=10,
    ).json()
    assert listed == []
    tab.close()


def test_a_used_or_expired_link_is_refused(local_stack: LocalStack, browser: Any) -> None:
    owner = local_stack.tenant_key("OWNER")
    link = _link(local_stack, owner, "read")
    first = Page(browser)
    first.page.goto(link)
    first.page.wait_for_selector("#campaign-create")
    first.close()

    second = Page(browser)
    response = second.page.goto(link)
    assert response is not None and response.status == 410
    assert "cannot be used" in second.page.inner_text("body")
    assert second.context.cookies() == []
    # the portal itself, without a session
    response = second.page.goto(f"{local_stack.base_url}/portal")
    assert response is not None and response.status == 401

    expiring = _link(local_stack, owner, "read", expires_in=1)
    time.sleep(1.5)
    response = second.page.goto(expiring)
    assert response is not None and response.status == 410
    assert second.context.cookies() == []
    second.close()


def test_registrations_are_edited_tested_rotated_and_ended(
    local_stack: LocalStack, browser: Any, receiver: Receiver, shots: Path
) -> None:
    owner = local_stack.tenant_key("OWNER")
    base = f"{local_stack.base_url}/companies/{owner.tenant_id}/campaigns/config/callbacks"
    made = requests.post(
        base,
        headers=owner.headers,
        json={"event_type": "edit.check", "destination_url": f"{receiver.url}/old"},
        timeout=10,
    )
    assert made.status_code == 201, made.text
    old_id = made.json()["callback_id"]
    tab = Page(browser)
    page = tab.page
    page.goto(_link(local_stack, owner, "manage"))
    row = page.locator(f"tr[data-callback-id='{old_id}']")
    row.wait_for()

    row.locator("button", has_text="Edit").click()
    page.fill("#campaign-create input[name=destination_url]", f"{receiver.url}/new")
    page.locator("#campaign-create button[type=submit]").click()
    page.locator("[data-testid=secret-value]").wait_for()
    assert page.locator(f"tr[data-callback-id='{old_id}']").count() == 0
    edited = page.locator("#campaign-list tbody tr", has_text=f"{receiver.url}/new")
    assert edited.count() == 1
    listed = requests.get(base, headers=owner.headers, timeout=10).json()
    assert [r["destination_url"] for r in listed] == [f"{receiver.url}/new"]

    edited.locator("button", has_text="Send test event").click()
    page.wait_for_selector("#flash .msg:has-text('Test event')")
    edited.locator("button", has_text="Rotate secret").click()
    page.wait_for_selector("[data-testid=secret-value]")
    assert page.inner_text("[data-testid=secret-value]").startswith("whsec_")
    page.screenshot(path=str(shots / "registrations-edited.png"), full_page=True)

    edited.get_by_role("button", name="End", exact=True).click()
    page.wait_for_selector("#flash .msg:has-text('ended')")
    assert requests.get(base, headers=owner.headers, timeout=10).json() == []
    assert tab.errors == [] and tab.dialogs == []
    tab.close()


def test_scheduled_callbacks_are_created_and_cancelled_on_the_timeline(
    local_stack: LocalStack, browser: Any, shots: Path
) -> None:
    owner = local_stack.tenant_key("OWNER")
    tab = Page(browser)
    page = tab.page
    page.goto(_link(local_stack, owner, "manage"))
    page.wait_for_selector("#campaign-create")
    page.goto(f"{local_stack.base_url}/portal#scheduled")
    form = page.locator("#scheduled-create")
    form.wait_for()
    for n in (1, 2):
        form.locator("input[name=callback_url]").fill(f"http://127.0.0.1:9/scheduled/{n}")
        form.locator("button[type=submit]").click()
        page.wait_for_selector(f"table#scheduled tr:has-text('/scheduled/{n}')")
        form = page.locator("#scheduled-create")
    assert page.inner_text("[data-testid=secret-value]").startswith("whsec_")
    assert page.locator("svg.chart circle").count() == 2
    page.screenshot(path=str(shots / "scheduled.png"), full_page=True)
    page.locator("table#scheduled tr", has_text="/scheduled/1").get_by_role(
        "button", name="Cancel"
    ).click()
    page.wait_for_selector("#flash .msg:has-text('cancelled')")
    assert page.locator("table#scheduled tr", has_text="/scheduled/1").count() == 0
    assert page.locator("table#scheduled tr", has_text="/scheduled/2").count() == 1
    listed = requests.get(
        f"{local_stack.base_url}/api/1.0/list?api_key={owner.key}&state=cancelled", timeout=10
    ).json()
    assert [c["callback_url"] for c in listed["callbacks"]] == ["http://127.0.0.1:9/scheduled/1"]
    assert tab.errors == [] and tab.dialogs == []
    tab.close()


def test_notification_callbacks_and_call_notifiers_in_their_own_terms(
    local_stack: LocalStack, browser: Any, receiver: Receiver, shots: Path
) -> None:
    owner = local_stack.tenant_key("OWNER")
    tab = Page(browser)
    page = tab.page
    page.goto(_link(local_stack, owner, "manage"))

    # notification callback: create (verified against the receiver), subscribe, edit, delete
    form = page.locator("#notification-create")
    form.wait_for()
    form.locator("input[name=name]").fill("portal_cb")
    form.locator("input[name=url]").fill(f"{receiver.url}/notify")
    form.locator("input[name=userName]").fill("user")
    form.locator("input[name=password]").fill("pw-portal-1")
    form.locator("button[type=submit]").click()
    row = page.locator("tr[data-callback-name='portal_cb']")
    row.wait_for()
    assert page.inner_text("[data-testid=secret-value]").startswith("whsec_")
    assert "pw-portal-1" not in page.content()
    sub = page.locator("#subscription-create")
    sub.locator("input[name=name]").fill("portal_sub")
    sub.locator("input[name=eventNames]").fill("SMS_FAILED, EMAIL_BOUNCED")
    sub.locator("button[type=submit]").click()
    page.wait_for_selector("li[data-subscription='portal_sub']")
    assert "SMS_FAILED, EMAIL_BOUNCED" in page.inner_text("li[data-subscription='portal_sub']")
    page.locator("tr[data-callback-name='portal_cb']").get_by_role("button", name="Edit").click()
    form = page.locator("#notification-create")
    form.locator("input[name=url]").fill(f"{receiver.url}/notify2")
    form.locator("input[name=userName]").fill("user")
    form.locator("input[name=password]").fill("pw-portal-2")
    form.locator("button[type=submit]").click()
    page.wait_for_selector(f"tr[data-callback-name='portal_cb']:has-text('{receiver.url}/notify2')")

    # call notifier: create, edit, delete
    cn = page.locator("#callnotify-create")
    cn.locator("input[name=url]").fill(f"{receiver.url}/call")
    cn.locator("button[type=submit]").click()
    notifier = page.locator("#callnotify-list tr[data-notify-id]")
    notifier.wait_for()
    notify_id = notifier.get_attribute("data-notify-id")
    notifier.get_by_role("button", name="Edit").click()
    page.locator("#callnotify-create select[name=selection]").select_option("MVNO")
    page.locator("#callnotify-create button[type=submit]").click()
    page.wait_for_selector(f"tr[data-notify-id='{notify_id}']:has-text('MVNO')")
    page.screenshot(path=str(shots / "registrations-families.png"), full_page=True)

    page.locator("li[data-subscription='portal_sub']").get_by_role(
        "button", name="Unsubscribe"
    ).click()
    page.wait_for_selector("#flash .msg:has-text('portal_sub deleted')")
    page.locator("tr[data-callback-name='portal_cb']").get_by_role("button", name="Delete").click()
    page.wait_for_selector("#flash .msg:has-text('Callback deleted')")
    page.locator(f"tr[data-notify-id='{notify_id}']").get_by_role("button", name="Delete").click()
    page.wait_for_selector("#flash .msg:has-text('Notifier deleted')")
    callbacks = requests.get(
        f"{local_stack.base_url}/rest/api/v1.3/notifications/callbacks",
        headers={"Authorization": owner.key},
        timeout=10,
    ).json()
    assert callbacks == []
    notifiers = requests.get(
        f"{local_stack.base_url}/customer/{owner.tenant_id}/callnotify",
        headers=owner.headers,
        timeout=10,
    ).json()
    assert notifiers == []
    assert tab.errors == [] and tab.dialogs == []
    tab.close()


def test_a_disabled_registration_shows_why_and_is_re_enabled(
    local_stack: LocalStack, browser: Any, receiver: Receiver
) -> None:
    owner = local_stack.tenant_key("OWNER")
    base = f"{local_stack.base_url}/companies/{owner.tenant_id}/campaigns/config/callbacks"
    made = requests.post(
        base,
        headers=owner.headers,
        json={"event_type": "gone.check", "destination_url": f"{receiver.url}/gone"},
        timeout=10,
    )
    assert made.status_code == 201, made.text
    callback_id = made.json()["callback_id"]
    _publish(local_stack, owner, "gone.check")
    deadline = time.monotonic() + 60
    while not requests.get(f"{base}/{callback_id}", headers=owner.headers, timeout=10).json()[
        "disabled_reason"
    ]:
        assert time.monotonic() < deadline, "the 410 never disabled the registration"
        time.sleep(0.5)
    tab = Page(browser)
    page = tab.page
    page.goto(_link(local_stack, owner, "manage"))
    row = page.locator(f"tr[data-callback-id='{callback_id}']")
    row.wait_for()
    assert "disabled:" in row.inner_text() and "410" in row.inner_text()
    row.get_by_role("button", name="Re-enable").click()
    page.wait_for_selector("#flash .msg:has-text('re-enabled')")
    row = page.locator(f"tr[data-callback-id='{callback_id}']")
    assert "disabled:" not in row.inner_text()
    after = requests.get(f"{base}/{callback_id}", headers=owner.headers, timeout=10).json()
    assert after["disabled_reason"] is None
    assert tab.errors == [] and tab.dialogs == []
    tab.close()
