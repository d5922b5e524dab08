"""A caller hanging up at any node closes the IVR record with the right outcome and node.

Nodes that talk to the caller are left while they play or wait; nodes that wait on
something else (a look-up, a channel variable) get the hang-up during that wait.
`branch` and `set` have no wait at all (no await: nothing can arrive during them),
so a hang-up is noticed at the node before or after them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from ctiserver.asterisk.agi.session import AgiSession
from ctiserver.ivr.flow import LookupKey
from ctiserver.ivr.runner import CustomerFacts
from ctiserver.sim.phones import Call
from ctiserver.store.database import Database
from tests.ivr.centre import IvrCentre, ivr_centre
from tests.polling import until

EVERY_NODE = """
name: 每种节点 Every node type
start: play
timezone: Asia/Shanghai
nodes:
  play: {type: play, play: [test/intro], next: language}
  language: {type: language, language: yue, next: set}
  set: {type: set, variable: x, value: "1", next: lookup}
  lookup: {type: lookup, by: caller, next: branch, not_found: branch}
  branch:
    type: branch
    when: [{variables: {x: "1"}, next: menu}]
    else: menu
  menu:
    type: menu
    prompt: test/menu
    options: {"1": collect, "2": queue, "3": callback, "4": voicemail, "5": survey,
              "6": transfer, "7": hangup}
    timeout: 5
    retries: 3
  collect: {type: collect, prompt: test/number, variable: n, max_digits: 4, next: hangup}
  queue: {type: queue, queue: support}
  callback: {type: callback, queue: support}
  voicemail: {type: voicemail, queue: support, prompt: test/leave-message}
  survey: {type: survey, prompt: test/rate, variable: score}
  transfer: {type: transfer, destination: "4008889999"}
  hangup: {type: hangup, prompt: test/goodbye}
"""

MENU_KEY = {
    "collect": "1",
    "queue": "2",
    "callback": "3",
    "voicemail": "4",
    "survey": "5",
    "transfer": "6",
    "hangup": "7",
}


def hang_up_during_set_variable(
    centre: IvrCentre, call: Call, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller hangs up while Asterisk handles SET VARIABLE `name` (our wait)."""
    original = AgiSession.set_variable

    async def set_variable(session: AgiSession, variable: str, value: str) -> None:
        if variable == name:
            centre.hang_up(call)
            await session.wait_hangup(5)
        await original(session, variable, value)

    monkeypatch.setattr(AgiSession, "set_variable", set_variable)


def hang_up_during_lookup(centre: IvrCentre, call: Call, monkeypatch: pytest.MonkeyPatch) -> None:
    original: Callable[[LookupKey, str], Awaitable[CustomerFacts | None]] = centre.ivr.find_customer

    async def find_customer(by: LookupKey, value: str) -> CustomerFacts | None:
        centre.hang_up(call)
        await until(lambda: centre.ivr.active[call.uniqueid].session.hung_up, "HANGUP seen")
        return await original(by, value)

    monkeypatch.setattr(centre.ivr, "find_customer", find_customer)


@pytest.mark.parametrize(
    ("node", "outcome"),
    [
        ("play", "abandoned"),
        ("language", "abandoned"),
        ("lookup", "abandoned"),
        ("menu", "abandoned"),
        ("collect", "abandoned"),
        ("callback", "abandoned"),
        ("survey", "abandoned"),
        ("transfer", "abandoned"),
        ("hangup", "self_served"),  # it was playing its goodbye: the flow's designed end
        ("queue", "queued"),  # the IVR's part ended at the hand-off; the ACD has the rest
    ],
)
async def test_hanging_up_at_a_node_ends_the_record_there(
    node: str,
    outcome: str,
    tmp_path: Path,
    pg_dsn: str,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with ivr_centre(tmp_path, pg_dsn, db, {"every": EVERY_NODE}) as centre:
        call = await centre.call()
        if node == "language":
            hang_up_during_set_variable(centre, call, "CHANNEL(language)", monkeypatch)
        elif node == "transfer":
            hang_up_during_set_variable(centre, call, "CTI_TRANSFER", monkeypatch)
        elif node == "lookup":
            hang_up_during_lookup(centre, call, monkeypatch)
        if node in MENU_KEY:
            await centre.reaches(call, "menu")
            centre.press(call, MENU_KEY[node])
        if node not in ("language", "transfer", "lookup"):
            await centre.reaches(call, node)
            centre.hang_up(call)
        await call.ended
        record = await centre.record(call)
        acd_events = await centre.events(call, "acd.")
        ivr_events = await centre.events(call)
    assert (record["outcome"], record["ended_at_node"]) == (outcome, node)
    assert record["path"][-1]["node"] == node
    kinds = [event["type"] for event in ivr_events]
    assert kinds[0] == "ivr.started" and kinds[-1] == "ivr.ended"
    if node == "survey":
        survey = next(e for e in ivr_events if e["type"] == "ivr.survey")
        assert survey["payload"]["score"] is None  # asked, not answered
    if node == "queue":
        left = next(e for e in acd_events if e["type"] == "acd.call_left")
        assert left["payload"]["outcome"] == "abandoned"


async def test_a_message_is_kept_when_the_caller_hangs_up_while_recording(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    async with ivr_centre(tmp_path, pg_dsn, db, {"every": EVERY_NODE}) as centre:
        call = await centre.call()
        await centre.reaches(call, "menu")
        centre.press(call, "4")
        await centre.until_sent(call, "RECORD FILE")
        centre.hang_up(call)
        await call.ended
        record = await centre.record(call)
        events = await centre.events(call)
        sent = centre.sent(call)
    assert (record["outcome"], record["ended_at_node"]) == ("voicemail", "voicemail")
    message: dict[str, Any] = next(e for e in events if e["type"] == "ivr.voicemail")["payload"]
    assert message["file"] == f"/var/spool/asterisk/monitor/cti-vm-{call.uniqueid}.wav"
    assert message["queue"] == "support"
    recorded = next(c for c in sent if c.startswith("RECORD FILE"))
    assert recorded == (
        f"RECORD FILE /var/spool/asterisk/monitor/cti-vm-{call.uniqueid} wav # 120000 BEEP s=5"
    )


async def test_hanging_up_while_the_voicemail_prompt_plays_leaves_no_message(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    async with ivr_centre(tmp_path, pg_dsn, db, {"every": EVERY_NODE}) as centre:
        call = await centre.call()
        await centre.reaches(call, "menu")
        centre.press(call, "4")
        await centre.until_sent(call, "STREAM FILE test/leave-message")
        centre.hang_up(call)
        await call.ended
        record = await centre.record(call)
        events = await centre.events(call)
    assert (record["outcome"], record["ended_at_node"]) == ("abandoned", "voicemail")
    assert "ivr.voicemail" not in [e["type"] for e in events]
