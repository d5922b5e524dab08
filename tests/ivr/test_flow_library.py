"""Flows in service: which flow a call gets, and edits taken up without a restart."""

from __future__ import annotations

import os
from pathlib import Path

from ctiserver.asterisk.agi.codec import AgiEnvironment
from ctiserver.ivr.library import FlowLibrary
from ctiserver.store.database import Database
from tests.ivr.centre import ivr_centre, write_flows
from tests.polling import until


def flow(name: str, prompt: str = "test/hello", numbers: str = "[]") -> str:
    return f"""
name: {name}
numbers: {numbers}
start: menu
nodes:
  menu:
    type: menu
    prompt: {prompt}
    options: {{"1": bye}}
    timeout: 3
    retries: 3
    default: bye
  bye: {{type: hangup}}
"""


def env(**values: str) -> AgiEnvironment:
    return AgiEnvironment({f"agi_{name}": value for name, value in values.items()})


def touch_later(path: Path, text: str) -> None:
    """Rewrite a file so its modification time surely differs from before."""
    before = path.stat().st_mtime_ns
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


async def test_a_call_gets_its_flow_by_argument_then_dialled_number_then_default(
    tmp_path: Path,
) -> None:
    folder = write_flows(
        tmp_path,
        {
            "bank": flow("银行", numbers='["95588"]'),
            "travel": flow("旅游", numbers='["4008123456"]'),
            "general": flow("总机"),
        },
    )
    library = FlowLibrary(folder, default="general", poll_s=0)
    await library.start()
    try:
        assert set(library.flows) == {"bank", "travel", "general"}
        pick = library.pick
        assert pick(env(request="agi://h/ivr?flow=travel", dnid="95588")).id == "travel"  # type: ignore[union-attr]
        assert pick(env(dnid="95588")).id == "bank"  # type: ignore[union-attr]
        assert pick(env(dnid="unknown", extension="4008123456")).id == "travel"  # type: ignore[union-attr]
        assert pick(env(dnid="12345")).id == "general"  # type: ignore[union-attr]
        assert pick(env(request="agi://h/ivr?flow=nope")) is None
    finally:
        await library.close()


async def test_an_edit_that_fails_its_checks_keeps_the_previous_version(tmp_path: Path) -> None:
    folder = write_flows(tmp_path, {"bank": flow("银行")})
    library = FlowLibrary(folder, poll_s=0)
    await library.start()
    first = library.flows["bank"]
    touch_later(
        folder / "bank.yaml", flow("银行").replace("bye: {type: hangup}", "bye: {type: hangpu}")
    )
    assert await library.refresh() == []
    assert library.flows["bank"] is first
    assert library.problems["bank"] == [
        f'{folder / "bank.yaml"}:13: node "bye":'
        " unknown node type 'hangpu' (did you mean 'hangup'?)"
    ]
    touch_later(folder / "bank.yaml", flow("银行", prompt="test/fixed"))
    assert await library.refresh() == ["bank"]
    assert library.flows["bank"].version != first.version
    assert library.problems == {}
    (folder / "bank.yaml").unlink()
    assert await library.refresh() == ["bank"]
    assert library.flows == {}


async def test_new_calls_get_the_edited_flow_while_a_call_in_progress_keeps_its_own(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    async with ivr_centre(tmp_path, pg_dsn, db, {"line": flow("热线", "test/old")}) as centre:
        old_version = centre.server.flows.flows["line"].version
        first = await centre.call()
        await centre.reaches(first, "menu")
        touch_later(centre.flows / "line.yaml", flow("热线", "test/new"))
        await until(
            lambda: centre.server.flows.flows["line"].version != old_version, "flow reloaded"
        )
        second = await centre.call("13900000000")
        await centre.reaches(second, "menu")
        centre.press(second, "1")
        centre.press(first, "1")
        await first.ended
        await second.ended
        first_record = await centre.record(first)
        second_record = await centre.record(second)
        health = await centre.server.health()
    assert first_record["version"] == old_version
    assert second_record["version"] == health["ivr"]["flows"]["line"] != old_version
    assert all("test/new" not in command for command in centre.sent(first))
    assert any("test/new" in command for command in centre.sent(second))
    assert health["ivr"]["ok"] is True
