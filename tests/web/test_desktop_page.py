"""The agent desktop page in real headless Chromium (Playwright) against the real server:
sign-in, the desktop websocket, the screen-pop from PostgreSQL, the customer API, calls
placed through the Asterisk emulator and its IVR.

Chromium is Debian's /usr/bin/chromium (Playwright's own download is not used).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, WebSocket, async_playwright, expect

from ctiserver.store.customers import find_customers_by_phone
from ctiserver.store.database import Database
from ctiserver.store.interactions import interaction_for_call
from tests.web.stack import (
    AGENT_LOGIN,
    AGENT_NAME,
    AGENT_PASSWORD,
    CALLER,
    CUSTOMER_NAME,
    CUSTOMER_NOTES,
    HTML_CALLER,
    HTML_NAME,
    HTML_NOTES,
    OLD_NOTES,
    Stack,
    make_stack,
)

CHROMIUM = os.environ.get("CTISERVER_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = Path(os.environ.get("CTISERVER_DESKTOP_SCREENSHOT", "/tmp/desktop.png"))
WAIT_MS = 15_000

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
)


@pytest.fixture
async def stack(tmp_path: Path, pg_dsn: str, db: Database) -> AsyncIterator[Stack]:
    centre = await make_stack(tmp_path, pg_dsn, db)
    try:
        await centre.start()
        yield centre
    finally:
        await centre.stop()
        await centre.emulator.close()


@pytest.fixture
async def browser(stack: Stack) -> AsyncIterator[Browser]:
    """Chromium, closed before the server stops (its pages would only reconnect)."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


class Frames:
    """The desktop's websocket traffic as the browser sees it (JSON both ways)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []

    def attach(self, page: Page) -> None:
        def opened(ws: WebSocket) -> None:
            if ws.url.endswith("/ws/desktop"):
                ws.on("framesent", lambda data: self.sent.append(json.loads(data)))
                ws.on("framereceived", lambda data: self.received.append(json.loads(data)))

        page.on("websocket", opened)

    def sent_of(self, kind: str) -> list[dict[str, Any]]:
        return [frame for frame in self.sent if frame.get("type") == kind]


async def signed_in_desktop(browser: Browser, stack: Stack, frames: Frames | None = None) -> Page:
    """A page that opened /desktop, was sent to the sign-in page, signed in and came back."""
    page = await browser.new_page(viewport={"width": 1400, "height": 1100}, locale="zh-CN")
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    if frames is not None:
        frames.attach(page)
    await page.goto(f"{stack.base}/desktop")
    await expect(page).to_have_url(f"{stack.base}/login?next=/desktop")
    await page.fill("input[name=login]", AGENT_LOGIN)
    await page.fill("input[name=password]", AGENT_PASSWORD)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{stack.base}/desktop", timeout=WAIT_MS)
    await expect(page.locator("#connection")).to_have_attribute(
        "data-status", "connected", timeout=WAIT_MS
    )
    await expect(page.locator("#agent-state")).not_to_have_attribute("data-state", "unknown")
    assert errors == [], errors
    return page


async def agent_is(page: Page, state: str) -> None:
    await expect(page.locator("#agent-state")).to_have_attribute(
        "data-state", state, timeout=WAIT_MS
    )


async def test_sign_in_take_a_call_wrap_up_and_see_it_on_the_next_call(
    browser: Browser, stack: Stack, db: Database
) -> None:
    frames = Frames()
    page = await signed_in_desktop(browser, stack, frames)
    await expect(page.locator("#who")).to_contain_text(AGENT_NAME)
    await agent_is(page, "logged_out")
    await expect(page.locator("#queue-rows tr[data-queue=support]")).to_contain_text("客户服务")

    await page.click("#btn-ready")
    await agent_is(page, "available")

    call = await stack.call()
    # The pop is on the page while the agent's phone still rings.
    await agent_is(page, "reserved")
    await expect(page.locator("#call-stage")).to_have_attribute("data-stage", "offered")
    await expect(page.locator("#cust-name")).to_have_text(CUSTOMER_NAME, timeout=WAIT_MS)
    await expect(page.locator("#pop")).to_have_attribute("data-complete", "true")
    await expect(page.locator("#cust-grade")).to_have_text("vip")
    await expect(page.locator("#cust-notes")).to_have_text(CUSTOMER_NOTES)
    await expect(page.locator("#cust-numbers")).to_contain_text("+86 138 0013 8000")
    await expect(page.locator("#call-caller")).to_have_text(CALLER)
    history = page.locator("#history-rows tr")
    await expect(history).to_have_count(1)
    await expect(history.first).to_contain_text(OLD_NOTES)
    await expect(history.first).to_contain_text("billing-question")
    await expect(history.first).to_contain_text("否")  # not resolved
    # An agent sees that a recording exists, not a link to it.
    assert await page.locator("#history-rows a").count() == 0
    await expect(page.locator("#reason-text")).to_have_text("follow-up on billing-question")
    await expect(page.locator("#reason-rule")).to_contain_text("unresolved")
    await expect(page.locator("#ivr")).to_be_visible()
    await expect(page.locator("#ivr-path")).to_contain_text("menu")
    await expect(page.locator("#ivr-path")).to_contain_text("2")
    await expect(page.locator("#call-waited")).to_contain_text("Waited")
    offers = [f for f in frames.received if f["type"] == "offer"]
    assert offers and offers[-1]["call_id"] == call.uniqueid

    # The phone answers: the same pop stays, now with the call's controls.
    await agent_is(page, "on_call")
    await expect(page.locator("#call-stage")).to_have_attribute("data-stage", "answered")
    await expect(page.locator("#cust-name")).to_have_text(CUSTOMER_NAME)
    await expect(page.locator("#call-controls")).to_be_visible()
    await page.screenshot(path=str(SCREENSHOT), full_page=True)

    stack.caller_hangs_up(call)
    await expect(page.locator("#call-stage")).to_have_attribute(
        "data-stage", "ended", timeout=WAIT_MS
    )
    wrap = page.locator("#wrap-up")
    await expect(wrap).to_be_visible()
    await expect(wrap).to_have_attribute("data-call-id", call.uniqueid)
    await page.fill("#wrap-disposition", "billing-fixed")
    await page.fill("#wrap-notes", "已为客户更正账单。谢谢！")
    await page.check("#wrap-resolved")
    await page.click("#btn-wrap")
    await expect(page.locator("#notice")).to_contain_text("Wrap-up saved", timeout=WAIT_MS)
    await expect(wrap).to_be_hidden()
    [sent] = frames.sent_of("wrap_up")
    assert sent["call_id"] == call.uniqueid and sent["resolved"] is True
    assert sent["follow_up_at"] is None
    await agent_is(page, "available")

    second = await stack.call()
    await expect(page.locator("#pop")).to_have_attribute(
        "data-call-id", second.uniqueid, timeout=WAIT_MS
    )
    await expect(page.locator("#pop")).to_have_attribute("data-complete", "true")
    newest = page.locator("#history-rows tr").first
    await expect(newest).to_contain_text("已为客户更正账单。谢谢！")
    await expect(newest).to_contain_text("billing-fixed")
    await expect(newest).to_contain_text("是")  # resolved
    await expect(page.locator("#history-rows tr")).to_have_count(2)
    await expect(page.locator("#reason-rule")).to_contain_text("repeat")
    stored = await interaction_for_call(db, call.uniqueid)
    assert stored is not None and stored.notes == "已为客户更正账单。谢谢！"
    assert stored.customer_id == stack.customer_id
    stack.caller_hangs_up(second)


async def test_keyboard_shortcuts_and_errors_that_keep_the_call(
    browser: Browser, stack: Stack
) -> None:
    frames = Frames()
    page = await signed_in_desktop(browser, stack, frames)
    await agent_is(page, "logged_out")
    await page.keyboard.press("Alt+KeyR")
    await agent_is(page, "available")

    await page.select_option("#reason-code", "lunch")
    await page.keyboard.press("Alt+KeyN")
    await agent_is(page, "not_ready")
    await expect(page.locator("#agent-reason")).to_contain_text("午餐")
    assert frames.sent_of("not_ready")[-1]["reason"] == "lunch"
    # The shortcuts work while typing in a field too.
    await page.focus("#dial-number")
    await page.keyboard.press("Alt+KeyR")
    await agent_is(page, "available")

    call = await stack.call()
    await agent_is(page, "on_call")
    await expect(page.locator("#cust-name")).to_have_text(CUSTOMER_NAME)
    # A transfer the server refuses: the error shows, the call and its pop stay.
    await page.select_option("#transfer-kind", "queue")
    await page.fill("#transfer-to", "no-such-queue")
    await page.click("#btn-transfer")
    await expect(page.locator("#errors .error-item")).to_have_count(1, timeout=WAIT_MS)
    await expect(page.locator("#errors")).to_contain_text("transfer")
    await agent_is(page, "on_call")
    await expect(page.locator("#cust-name")).to_have_text(CUSTOMER_NAME)
    await expect(page.locator("#call-stage")).to_have_attribute("data-stage", "answered")

    await page.keyboard.press("Alt+KeyH")
    await expect(page.locator("#call-stage")).to_have_attribute(
        "data-stage", "ended", timeout=WAIT_MS
    )
    [hang_up] = frames.sent_of("hang_up")
    assert hang_up["call_id"] == call.uniqueid
    await expect(page.locator("#wrap-up")).to_be_visible()
    await page.keyboard.press("Alt+KeyW")
    await expect(page.locator("#wrap-notes")).to_be_focused()


async def test_connection_status_follows_the_server_away_and_back(
    browser: Browser, stack: Stack
) -> None:
    page = await signed_in_desktop(browser, stack)
    await page.click("#btn-ready")
    await agent_is(page, "available")
    status = page.locator("#connection")
    await expect(status).to_contain_text("Connected")

    await stack.stop()
    await expect(status).to_have_attribute("data-status", "disconnected", timeout=WAIT_MS)
    await expect(status).to_contain_text("retrying in")
    # What the page knew stays on screen; commands wait for the connection.
    await agent_is(page, "available")
    await expect(page.locator("#btn-not-ready")).to_be_disabled()

    await stack.start()
    # Backoff 1, 2, 4, 8 s (+ jitter): back within the fourth try at the latest.
    await expect(status).to_have_attribute("data-status", "connected", timeout=30_000)
    await expect(status).to_contain_text("Connected")
    # The snapshot after the reconnect: the agent is still available (the ACD's state).
    await agent_is(page, "available")
    await expect(page.locator("#btn-not-ready")).to_be_enabled()
    await page.keyboard.press("Alt+KeyN")
    await agent_is(page, "not_ready")


async def test_html_in_customer_data_is_shown_as_text(browser: Browser, stack: Stack) -> None:
    page = await signed_in_desktop(browser, stack)
    await page.click("#btn-ready")
    await agent_is(page, "available")
    await stack.call(HTML_CALLER, "李四")
    await expect(page.locator("#cust-name")).to_have_text(HTML_NAME, timeout=WAIT_MS)
    await expect(page.locator("#cust-notes")).to_have_text(HTML_NOTES)
    assert await page.locator("#pop img, #pop script, #pop b").count() == 0
    assert await page.evaluate("window.__xss") is None


async def test_an_unknown_caller_becomes_a_customer_from_the_pop(
    browser: Browser, stack: Stack, db: Database
) -> None:
    page = await signed_in_desktop(browser, stack)
    await page.click("#btn-ready")
    await agent_is(page, "available")
    await stack.call("02155550000", "")
    panel = page.locator("#unknown")
    await expect(panel).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("#unknown-number")).to_have_text("02155550000")
    await page.fill("#new-name", "赵六")
    await page.fill("#new-notes", "新客户")
    await page.click("#create-customer button[type=submit]")
    await expect(page.locator("#cust-name")).to_have_text("赵六", timeout=WAIT_MS)
    await expect(panel).to_be_hidden()
    [created] = await find_customers_by_phone(db, "02155550000")
    assert (created.name, created.notes) == ("赵六", "新客户")


async def test_a_page_without_a_session_goes_to_sign_in(browser: Browser, stack: Stack) -> None:
    page = await browser.new_page()
    response = await page.goto(f"{stack.base}/static/desktop.js")
    assert response is not None
    await expect(page).to_have_url(f"{stack.base}/login?next=/static/desktop.js")
    await expect(page.locator("input[name=login]")).to_be_visible()
