"""The wallboard in real headless Chromium (Playwright) against the real server: figures
appear and change as emulated calls arrive and are answered, thresholds colour a tile,
supervisor actions work from the page (listen, whisper, barge, forced states), a
supervisor watches an agent's pop read-only, and an agent is refused.

Chromium is Debian's /usr/bin/chromium (Playwright's own download is not used).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, WebSocket, async_playwright, expect

from ctiserver.auth.passwords import hash_password
from ctiserver.config import WallboardSettings
from ctiserver.sim.phones import PhonePolicy
from ctiserver.store.accounts import create_account
from ctiserver.store.database import Database
from tests.acd.centre import actions_sent, until
from tests.web.stack import (
    AGENT_ID,
    AGENT_LOGIN,
    AGENT_NAME,
    AGENT_PASSWORD,
    CALLER,
    CHEAP,
    CUSTOMER_NAME,
    CUSTOMER_NOTES,
    OLD_NOTES,
    Stack,
    make_stack,
)

CHROMIUM = os.environ.get("CTISERVER_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = Path(os.environ.get("CTISERVER_WALLBOARD_SCREENSHOT", "/tmp/wallboard.png"))
WATCH_SCREENSHOT = Path(os.environ.get("CTISERVER_WATCH_SCREENSHOT", "/tmp/desktop-watch.png"))
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
        assert server.wallboard is not None
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
    supervision = server.supervision
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


# -- watching an agent's desktop (issue #6 item 6) and whisper / barge -------------------

# Commands a watching connection may send (docs/desktop-protocol.md, read-only).
READ_ONLY_TYPES = {"ping", "get_snapshot", "list_callbacks"}


class DesktopFrames:
    """The /ws/desktop traffic of every page of a browser context (JSON both ways)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []

    def attach(self, page: Page) -> None:
        def opened(ws: WebSocket) -> None:
            if "/ws/desktop" in ws.url:
                ws.on("framesent", lambda data: self.sent.append(json.loads(data)))
                ws.on("framereceived", lambda data: self.received.append(json.loads(data)))

        page.on("websocket", opened)

    def commands(self) -> list[str]:
        """The types of what the page sent beyond what a watcher may send."""
        return [f["type"] for f in self.sent if f.get("type") not in READ_ONLY_TYPES]

    def reply_to(self, command_id: str) -> dict[str, Any] | None:
        for frame in self.received:
            if frame.get("re") == command_id:
                return frame
        return None


def has_reply(frames: DesktopFrames, command_id: str) -> bool:
    return frames.reply_to(command_id) is not None


async def connected_wallboard(browser: Browser, stack: Stack) -> Page:
    page = await sign_in(browser, stack, SUPER_LOGIN, SUPER_PASSWORD)
    await expect(page).to_have_url(f"{stack.base}/wallboard", timeout=WAIT_MS)
    await expect(page.locator("#connection")).to_have_attribute(
        "data-status", "connected", timeout=WAIT_MS
    )
    return page


async def open_agent_view(page: Page, agent: str) -> Page:
    """Click the agent's "View" link on the wallboard: their desktop opens in a new tab."""
    link = agent_row(page, agent).locator("a.view")
    await expect(link).to_have_attribute("href", f"/desktop?agent={agent}")
    await expect(link).to_have_attribute("target", "_blank")
    await expect(link).to_contain_text("View")
    async with page.context.expect_page() as opened:
        await link.click()
    view = await opened.value
    await view.wait_for_load_state()
    return view


async def test_a_supervisor_watches_an_agents_pop_read_only(browser: Browser, stack: Stack) -> None:
    server = stack.server
    assert server is not None and server.acd is not None
    page = await connected_wallboard(browser, stack)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    server.acd.login(AGENT_ID)
    await expect(agent_row(page, AGENT_ID).locator(".state")).to_have_attribute(
        "data-state", "available", timeout=WAIT_MS
    )
    frames = DesktopFrames()
    page.context.on("page", frames.attach)
    page.context.on("page", lambda p: p.on("pageerror", lambda e: errors.append(str(e))))

    view = await open_agent_view(page, AGENT_ID)
    assert view.url == f"{stack.base}/desktop?agent={AGENT_ID}"
    await expect(view.locator("#connection")).to_have_attribute(
        "data-status", "connected", timeout=WAIT_MS
    )
    # Clearly a read-only watch of that agent: the name in the header and a banner.
    await expect(view.locator("#watch-title")).to_be_visible()
    await expect(view.locator("#watch-title")).to_contain_text(f"{AGENT_NAME} ({AGENT_ID})")
    await expect(view.locator("#read-only-banner")).to_be_visible()
    await expect(view.locator("#read-only-banner")).to_contain_text(AGENT_NAME)
    await expect(view.locator("#agent-title")).to_contain_text("Agent state")
    await expect(view.locator("#who")).to_contain_text("陈主管")
    assert "Watching" in await view.title()
    await expect(view.locator("#agent-state")).to_have_attribute("data-state", "available")
    # The agent's controls are gone, and disabled besides.
    for hidden in ("#state-controls", "#dialer", "footer"):
        await expect(view.locator(hidden)).to_be_hidden()
    for button in ("#btn-ready", "#btn-not-ready", "#btn-logout", "#btn-dial"):
        await expect(view.locator(button)).to_be_disabled()
    snapshot = next(f for f in frames.received if f["type"] == "snapshot")
    assert snapshot["read_only"] is True and snapshot["agent"]["id"] == AGENT_ID

    # A known customer calls: the watcher sees the pop while the agent's phone rings...
    call = await stack.call()
    await expect(view.locator("#agent-state")).to_have_attribute(
        "data-state", "reserved", timeout=WAIT_MS
    )
    await expect(view.locator("#call-stage")).to_have_attribute("data-stage", "offered")
    await expect(view.locator("#cust-name")).to_have_text(CUSTOMER_NAME, timeout=WAIT_MS)
    await expect(view.locator("#cust-notes")).to_have_text(CUSTOMER_NOTES)
    await expect(view.locator("#call-caller")).to_have_text(CALLER)
    history = view.locator("#history-rows tr")
    await expect(history).to_have_count(1)
    await expect(history.first).to_contain_text(OLD_NOTES)
    await expect(history.first).to_contain_text("billing-question")
    # ...and, a supervisor, may play the recording (an agent sees only that one exists).
    recording = view.locator("#history-rows a")
    await expect(recording).to_have_count(1)
    href = await recording.get_attribute("href")
    assert href is not None and href.startswith("/api/interactions/"), href
    assert href.endswith("/recording"), href

    # ...and while they talk; no call controls for the watcher.
    await expect(view.locator("#agent-state")).to_have_attribute(
        "data-state", "on_call", timeout=WAIT_MS
    )
    await expect(view.locator("#call-stage")).to_have_attribute("data-stage", "answered")
    await expect(view.locator("#cust-name")).to_have_text(CUSTOMER_NAME)
    await expect(view.locator("#call-controls")).to_be_hidden()
    await expect(view.locator("#cust-numbers .dial-number")).to_be_hidden()
    for button in ("#btn-hold", "#btn-unhold", "#btn-transfer", "#btn-hang-up"):
        await expect(view.locator(button)).to_be_disabled()
    # The shortcuts do nothing either: nothing but read-only frames left the page.
    for key in ("Alt+KeyH", "Alt+KeyN", "Alt+KeyR"):
        await view.keyboard.press(key)
    await view.wait_for_timeout(300)
    assert frames.commands() == [], frames.sent

    # The server refuses them too, sent on the watching socket itself.
    refused: dict[str, dict[str, Any]] = {}
    for kind, fields in (
        ("ready", {}),
        ("not_ready", {"reason": "lunch"}),
        ("logout", {}),
        ("hold", {"call_id": call.uniqueid}),
        ("hang_up", {"call_id": call.uniqueid}),
        ("transfer", {"call_id": call.uniqueid, "target": {"kind": "queue", "to": "support"}}),
        ("dial", {"number": "13900000000"}),
    ):
        command_id = await view.evaluate(
            "([kind, fields]) => window.ctiDesktop.connection.send(kind, fields)", [kind, fields]
        )
        assert isinstance(command_id, str), kind
        await until(partial(has_reply, frames, command_id), f"reply to {kind}")
        reply = frames.reply_to(command_id)
        assert reply is not None
        refused[kind] = reply
    assert {k: (r["type"], r["code"]) for k, r in refused.items()} == {
        k: ("error", "read_only") for k in refused
    }, refused
    assert server.acd.agent_state(AGENT_ID) == "on_call"
    assert actions_sent(stack.emulator, "Hangup") == []
    await expect(view.locator("#call-stage")).to_have_attribute("data-stage", "answered")
    await expect(view.locator("#errors")).to_contain_text("read-only")
    await view.screenshot(path=str(WATCH_SCREENSHOT), full_page=True)

    # The caller hangs up: the watcher sees the wrap-up, not its form.
    stack.caller_hangs_up(call)
    await expect(view.locator("#call-stage")).to_have_attribute(
        "data-stage", "ended", timeout=WAIT_MS
    )
    await expect(view.locator("#wrap-up")).to_be_visible()
    await expect(view.locator("#wrap-watch-note")).to_be_visible()
    await expect(view.locator("#wrap-form")).to_be_hidden()
    assert frames.commands() == [t for t in frames.commands() if t in refused]
    assert errors == [], errors


async def test_an_agent_cannot_watch_another_agent(browser: Browser, stack: Stack) -> None:
    page = await browser.new_page(locale="zh-CN")
    await page.goto(f"{stack.base}/desktop?agent=1002")
    await expect(page).to_have_url(f"{stack.base}/login?next=/desktop?agent%3D1002")
    await page.fill("input[name=login]", AGENT_LOGIN)
    await page.fill("input[name=password]", AGENT_PASSWORD)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{stack.base}/desktop?agent=1002", timeout=WAIT_MS)
    await expect(page.locator("#connection")).to_have_attribute(
        "data-status", "forbidden", timeout=WAIT_MS
    )
    await expect(page.locator("#errors")).to_contain_text("only supervisors")
    # Nothing of agent 1002 reached the page.
    await expect(page.locator("#agent-state")).to_have_attribute("data-state", "unknown")
    assert await page.evaluate("window.ctiDesktop.model.agent") is None
    # The socket itself, for another agent and for the agent's own id (`?agent=` is watching).
    for watched in ("1002", AGENT_ID):
        result = await page.evaluate(
            """(agent) => new Promise((resolve) => {
                const ws = new WebSocket(`ws://${location.host}/ws/desktop?agent=${agent}`);
                const got = [];
                ws.onopen = () => ws.send(JSON.stringify({type: "ready", v: 1, id: "x1"}));
                ws.onmessage = (event) => got.push(event.data);
                ws.onclose = (event) => resolve({code: event.code, reason: event.reason, got});
            })""",
            watched,
        )
        assert result["code"] == 4403, result
        assert "only supervisors" in result["reason"], result
        assert result["got"] == [], result
    server = stack.server
    assert server is not None and server.acd is not None
    assert server.acd.agent_state("1002") == "logged_out"


def spy_originates(stack: Stack) -> list[dict[str, str]]:
    return [
        o for o in actions_sent(stack.emulator, "Originate") if o.get("Application") == "ChanSpy"
    ]


async def test_whisper_and_barge_from_the_wallboard(browser: Browser, stack: Stack) -> None:
    server = stack.server
    assert server is not None and server.acd is not None
    supervision = server.supervision  # the wallboard's own (checked by the fixture)
    assert supervision is not None
    page = await connected_wallboard(browser, stack)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    server.acd.login(AGENT_ID)
    call = await stack.call()
    row = agent_row(page, AGENT_ID)
    await expect(row.locator(".state")).to_have_attribute("data-state", "on_call", timeout=WAIT_MS)

    def spying(mode: str) -> bool:
        info = supervision.spy_of(SUPER_LOGIN)
        return info is not None and info.mode == mode and info.answered and info.spying

    # Whisper: the supervisor's phone rings and answers; ChanSpy with "w" (coach the agent).
    await row.locator('button[data-action="whisper"]').click()
    await expect(page.locator("#notice")).to_contain_text("Whisper", timeout=WAIT_MS)
    await until(lambda: spying("whisper"), "whispering")
    [whisper] = spy_originates(stack)
    assert whisper["Channel"] == f"PJSIP/{SUPER_LOGIN}"
    assert whisper["Data"] == f"PJSIP/agent{AGENT_ID},qw"
    info = supervision.spy_of(SUPER_LOGIN)
    assert info is not None and info.agent_id == AGENT_ID and info.call_id == call.uniqueid

    # Barge: the whisper leg ends, a new ChanSpy with "B" (talk to both sides).
    await row.locator('button[data-action="barge"]').click()
    await expect(page.locator("#notice")).to_contain_text("Barge", timeout=WAIT_MS)
    await until(lambda: spying("barge"), "barging")
    originates = spy_originates(stack)
    assert [o["Data"] for o in originates] == [
        f"PJSIP/agent{AGENT_ID},qw",
        f"PJSIP/agent{AGENT_ID},qB",
    ]
    assert {o["Channel"] for o in originates} == {f"PJSIP/{SUPER_LOGIN}"}
    assert all(o["Application"] == "ChanSpy" for o in originates)

    await page.locator("#stop-listening").click()
    await until(lambda: not supervision.spies(), "spy stopped")
    # The call went on through it all.
    assert server.acd.agent_state(AGENT_ID) == "on_call"
    stack.caller_hangs_up(call)
    await expect(row.locator(".state")).not_to_have_attribute(
        "data-state", "on_call", timeout=WAIT_MS
    )
    assert errors == [], errors
