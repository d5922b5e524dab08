"""The wallboard in real headless Chromium (Playwright) against the real server: figures
appear and change as emulated calls arrive and are answered, thresholds colour a tile,
supervisor actions work from the page, and an agent is refused.

Chromium is Debian's /usr/bin/chromium (Playwright's own download is not used).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from ctiserver.auth.passwords import hash_password
from ctiserver.config import WallboardSettings
from ctiserver.sim.phones import PhonePolicy
from ctiserver.store.accounts import create_account
from ctiserver.store.database import Database
from tests.acd.centre import until
from tests.web.stack import AGENT_ID, AGENT_LOGIN, AGENT_PASSWORD, CHEAP, Stack, make_stack

CHROMIUM = os.environ.get("CTISERVER_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = Path(os.environ.get("CTISERVER_WALLBOARD_SCREENSHOT", "/tmp/wallboard.png"))
WAIT_MS = 15_000
SUPER_LOGIN = "super"
SUPER_PASSWORD = "super-pass-9001"
THRESHOLDS = """
[queues.support]
waiting = { warn = 1, alarm = 3 }
"""

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
)


@pytest.fixture
async def stack(tmp_path: Path, pg_dsn: str, db: Database) -> AsyncIterator[Stack]:
    centre = await make_stack(tmp_path, pg_dsn, db)
    thresholds = tmp_path / "wallboard.toml"
    thresholds.write_text(THRESHOLDS, encoding="utf-8")
    centre.settings = dataclasses.replace(
        centre.settings, wallboard=WallboardSettings(thresholds=str(thresholds))
    )
    await create_account(
        db,
        SUPER_LOGIN,
        role="supervisor",
        password_hash=await hash_password(SUPER_PASSWORD, CHEAP),
        name="陈主管",
    )
    centre.emulator.add_supervisor_phone(SUPER_LOGIN, PhonePolicy(ring_time=2.0, talk_time=None))
    try:
        await centre.start()
        server = centre.server
        assert server is not None and server.supervision is not None
        assert server.wallboard.supervision is server.supervision
        yield centre
    finally:
        await centre.stop()
        await centre.emulator.close()


@pytest.fixture
async def browser(stack: Stack) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


async def sign_in(browser: Browser, stack: Stack, login: str, password: str) -> Page:
    page = await browser.new_page(viewport={"width": 1920, "height": 1080}, locale="zh-CN")
    await page.goto(f"{stack.base}/wallboard")
    await expect(page).to_have_url(f"{stack.base}/login?next=/wallboard")
    await page.fill("input[name=login]", login)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    return page


def figure(page: Page, queue: str, name: str) -> Any:
    return page.locator(f'.tile[data-queue="{queue}"] .fig[data-figure="{name}"]')


def agent_row(page: Page, agent: str) -> Any:
    return page.locator(f'#agents tr[data-agent="{agent}"]')


async def test_figures_follow_calls_and_supervisor_actions_work(
    browser: Browser, stack: Stack
) -> None:
    server = stack.server
    assert server is not None and server.acd is not None
    page = await sign_in(browser, stack, SUPER_LOGIN, SUPER_PASSWORD)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await expect(page).to_have_url(f"{stack.base}/wallboard", timeout=WAIT_MS)
    await expect(page.locator("#connection")).to_have_attribute(
        "data-status", "connected", timeout=WAIT_MS
    )
    await expect(page.locator("#who")).to_contain_text("陈主管")
    tile = page.locator('.tile[data-queue="support"]')
    await expect(figure(page, "support", "waiting").locator(".value")).to_have_text("0")
    await expect(tile).not_to_have_attribute("data-level", "warn")
    await expect(agent_row(page, AGENT_ID).locator(".state")).to_have_attribute(
        "data-state", "logged_out"
    )

    # A caller goes through the IVR into the queue; nobody is ready: one call waiting.
    call = await stack.call()
    waiting = figure(page, "support", "waiting")
    await expect(waiting.locator(".value")).to_have_text("1", timeout=WAIT_MS)
    await expect(waiting).to_have_attribute("data-level", "warn")
    await expect(tile).to_have_attribute("data-level", "warn")
    await expect(page.locator("#centre-waiting")).to_have_text("1")
    longest = figure(page, "support", "longest_wait_s").locator(".value")
    await expect(longest).not_to_have_text("0s", timeout=WAIT_MS)
    await expect(figure(page, "support", "offered").locator(".value")).to_have_text(
        "1/0", timeout=WAIT_MS
    )
    # The interval chart got its bar (recomputed every few seconds).
    await expect(page.locator('#chart rect.bar[data-offered="1"]')).to_have_count(
        1, timeout=WAIT_MS
    )

    # The agent logs in (ready): the call is offered, rings and is answered.
    server.acd.login(AGENT_ID)
    row = agent_row(page, AGENT_ID)
    await expect(row.locator(".state")).to_have_attribute("data-state", "on_call", timeout=WAIT_MS)
    await expect(waiting.locator(".value")).to_have_text("0", timeout=WAIT_MS)
    await expect(waiting).to_have_attribute("data-level", "ok")
    await expect(figure(page, "support", "offered").locator(".value")).to_have_text(
        "1/1", timeout=WAIT_MS
    )
    await expect(figure(page, "support", "asa_s").locator(".value")).not_to_have_text("–")
    await expect(row.locator("td").nth(4)).to_contain_text("support")

    # Supervisor: listen to the call from the agent table (the supervisor's phone answers).
    await row.locator('button[data-action="listen"]').click()
    await expect(page.locator("#notice")).to_contain_text("1001", timeout=WAIT_MS)
    supervision = server.wallboard.supervision
    assert supervision is not None
    await until(lambda: any(s.agent_id == AGENT_ID for s in supervision.spies()), "spy")
    await page.locator("#stop-listening").click()
    await until(lambda: not supervision.spies(), "spy stopped")

    # The caller hangs up: the agent wraps up and the call counts as handled.
    stack.caller_hangs_up(call)
    await expect(row.locator(".state")).not_to_have_attribute(
        "data-state", "on_call", timeout=WAIT_MS
    )
    await expect(row.locator("td").nth(5)).to_have_text("1", timeout=WAIT_MS)
    await expect(page.locator("#chart circle.sl-dot")).to_have_count(1, timeout=WAIT_MS)
    await page.screenshot(path=str(SCREENSHOT), full_page=True)

    # Force the agent not ready, then log them out, from the page.
    if server.acd.agent_state(AGENT_ID) == "wrap_up":
        server.acd.end_wrap_up(AGENT_ID)
    await expect(row.locator('button[data-action="force_not_ready"]')).to_be_visible(
        timeout=WAIT_MS
    )
    await page.select_option("#reason", index=0)
    reason = await page.locator("#reason").input_value()
    await row.locator('button[data-action="force_not_ready"]').click()
    await expect(row.locator(".state")).to_have_attribute(
        "data-state", "not_ready", timeout=WAIT_MS
    )
    await expect(row.locator("td").nth(3)).to_have_text(reason)
    await row.locator('button[data-action="force_logout"]').click()
    await expect(row.locator(".state")).to_have_attribute(
        "data-state", "logged_out", timeout=WAIT_MS
    )
    assert errors == [], errors


async def test_an_agent_is_refused(browser: Browser, stack: Stack) -> None:
    page = await sign_in(browser, stack, AGENT_LOGIN, AGENT_PASSWORD)
    await expect(page).to_have_url(f"{stack.base}/wallboard", timeout=WAIT_MS)
    assert "supervisor" in (await page.content())
    response = await page.goto(f"{stack.base}/wallboard")
    assert response is not None and response.status == 403
    # The socket too, even from a page of the same origin, and so no supervisor action.
    await page.goto(f"{stack.base}/desktop")
    result = await page.evaluate(
        """() => new Promise((resolve) => {
            const ws = new WebSocket(`ws://${location.host}/ws/wallboard`);
            const got = [];
            ws.onopen = () => ws.send(JSON.stringify({type: "force_logout", agent: "1002"}));
            ws.onmessage = (event) => got.push(event.data);
            ws.onclose = (event) => resolve({code: event.code, reason: event.reason, got});
        })"""
    )
    assert result["code"] == 4403, result
    assert result["got"] == [], result
