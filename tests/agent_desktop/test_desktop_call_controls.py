"""Call controls from the desktop end to end: commands over a real websocket, through the
hub and CallControls, to the Asterisk emulator running the shipped dialplan; what the
desktops are told (acks, refusals, call_progress, agent_state, wrap_up) and the result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ctiserver.acd.model import AgentState
from ctiserver.sim.phones import Call
from ctiserver.store.database import Database
from ctiserver.store.interactions import interaction_for_call, interactions_for_call
from tests.acd.centre import actions_sent, until
from tests.agent_desktop.test_desktop_socket import Desktops, Socket, desktops, seed_customer


async def logged_in(d: Desktops, agent_id: str) -> Socket:
    desk = await d.open(agent_id)
    await desk.next("snapshot")
    await desk.send("ready")
    assert (await desk.next("agent_state"))["state"] == "available"
    return desk


async def answered(d: Desktops, desk: Socket, caller: str = "13800138000") -> Call:
    """A call placed and answered by the desk's agent; the caller's Call."""
    call = await d.centre.emulator.place_call(caller)
    await desk.next(
        "call_progress", lambda m: m["call_id"] == call.uniqueid and m["stage"] == "answered"
    )
    return call


def progress(call_id: str, stage: str) -> Any:
    return lambda m: m["call_id"] == call_id and m["stage"] == stage


async def refused(desk: Socket, ident: str) -> dict[str, Any]:
    return await desk.next("error", lambda m: m["re"] == ident)


async def acked(desk: Socket, ident: str) -> dict[str, Any]:
    return await desk.next("ack", lambda m: m["re"] == ident)


def ended_sent(messages: list[dict[str, Any]], call_id: str) -> int:
    return sum(
        1
        for m in messages
        if m["type"] == "call_progress" and m["call_id"] == call_id and m["stage"] == "ended"
    )


async def test_hold_unhold_and_hang_up_from_the_desktop(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    async with desktops(tmp_path, pg_dsn, db, talk_time=None) as d:
        desk = await logged_in(d, "1001")
        other = await logged_in(d, "1002")
        await other.send("not_ready", reason="break")
        await other.next("agent_state")
        call = await answered(d, desk)
        cid = call.uniqueid
        leg = d.centre.acd.calls[cid].leg
        assert leg is not None and leg.channel is not None

        # Not their call: another agent, an unknown id; nothing reaches Asterisk.
        await other.send("hold", id="x1", call_id=cid)
        assert (await refused(other, "x1"))["code"] == "not_your_call"
        await desk.send("hang_up", id="x2", call_id="1234.5")
        error = await refused(desk, "x2")
        assert (error["code"], error["for"]) == ("not_your_call", "hang_up")
        await desk.send("unhold", id="u0", call_id=cid)
        assert (await refused(desk, "u0"))["code"] == "not_on_hold"
        assert actions_sent(d.centre.emulator, "Redirect") == []

        await desk.send("hold", id="h1", call_id=cid)
        assert (await acked(desk, "h1"))["detail"] == {"call_id": cid}
        held = await desk.next("call_progress", progress(cid, "on_hold"))
        assert held["detail"] == {"by": "cti"}
        await until(lambda: call.channel.context == "cti-held", "caller on music")
        await desk.send("hold", id="h2", call_id=cid)
        error = await refused(desk, "h2")
        assert (error["code"], error["for"]) == ("already_on_hold", "hold")
        # A reload during the hold shows it.
        again = await d.open("1001")
        [shown] = (await again.next("snapshot"))["calls"]
        assert (shown["call_id"], shown["on_hold"], shown["stage"]) == (cid, True, "on_hold")
        assert d.centre.acd.agent_state("1001") is AgentState.ON_CALL

        await desk.send("unhold", id="u1", call_id=cid)
        await acked(desk, "u1")
        resumed = await desk.next("call_progress", progress(cid, "resumed"))
        assert resumed["detail"] == {"by": "cti"}
        await again.next("call_progress", progress(cid, "resumed"))
        await until(lambda: call.channel.bridge is not None, "bridged again")

        # A hold made on the phone is shown, and only the phone can resume it.
        d.centre.emulator.hold(leg.channel)
        phone_held = await desk.next("call_progress", progress(cid, "on_hold"))
        assert phone_held["detail"] == {"by": "phone"}
        await desk.send("unhold", id="u2", call_id=cid)
        assert (await refused(desk, "u2"))["code"] == "held_by_phone"
        d.centre.emulator.hold(leg.channel, hold=False)
        await desk.next("call_progress", progress(cid, "resumed"))

        await desk.send("hang_up", id="e1", call_id=cid)
        assert (await acked(desk, "e1"))["detail"] == {"call_id": cid}
        ended = await desk.next("call_progress", progress(cid, "ended"))
        assert ended["detail"]["talk_s"] > 0
        state = await desk.next("agent_state", lambda m: m["state"] == "wrap_up")
        assert state["call_id"] == cid
        assert (await desk.next("wrap_up"))["call_id"] == cid
        await call.ended
        [hangup, *_] = actions_sent(d.centre.emulator, "Hangup")
        assert hangup["Channel"] == leg.channel
        # The ACD and the call controls both saw the end: the desktop is told once.
        assert ended_sent(await desk.settle(), cid) == 0
        await desk.send("hang_up", id="e2", call_id=cid)
        assert (await refused(desk, "e2"))["code"] == "not_your_call"
        await d.centre.agent_reaches("1001", AgentState.AVAILABLE)  # wrap-up timer
        for socket in (desk, other, again):
            await socket.ws.close()


async def test_blind_transfer_to_a_queue_and_to_an_agent(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    async with desktops(tmp_path, pg_dsn, db, talk_time=None) as d:
        one = await logged_in(d, "1001")
        two = await logged_in(d, "1002")
        await two.send("not_ready", reason="break")
        await two.next("agent_state")
        call = await answered(d, one)
        cid = call.uniqueid

        # To a queue: a new wait there; 1002 gets the offer of the same call.
        await two.send("ready")
        await two.next("agent_state", lambda m: m["state"] == "available")
        await one.send("transfer", id="t1", call_id=cid, target={"kind": "queue", "to": "support"})
        assert (await acked(one, "t1"))["detail"] == {"call_id": cid}
        moved = await one.next("call_progress", progress(cid, "transferred"))
        assert moved["detail"] == {"kind": "queue", "to": "support"}
        await one.next("call_progress", progress(cid, "ended"))
        await one.next("agent_state", lambda m: m["state"] == "wrap_up")
        offer = await two.next("offer", lambda m: m["call_id"] == cid)
        assert offer["caller"] == "13800138000"
        await two.next("call_progress", progress(cid, "answered"))
        await d.centre.agent_reaches("1002", AgentState.ON_CALL)
        [redirect] = actions_sent(d.centre.emulator, "Redirect")
        assert (redirect["Channel"], redirect["Context"]) == (call.name, "cti-transfer-queue")
        # The first agent still wraps the call up: it was theirs.
        await one.send(
            "wrap_up", id="w1", call_id=cid, disposition="transferred", notes="",
            resolved=False, follow_up_at=None,
        )  # fmt: skip
        await acked(one, "w1")
        await d.centre.agent_reaches("1001", AgentState.AVAILABLE)

        # To an agent: 1002 passes it back to 1001, who must be available.
        await one.send("not_ready", reason="lunch")
        await one.next("agent_state", lambda m: m["state"] == "not_ready")
        to_one = {"kind": "agent", "to": "1001"}
        await two.send("transfer", id="t2", call_id=cid, target=to_one)
        error = await refused(two, "t2")
        assert (error["code"], error["field"]) == ("target_unavailable", "target.to")
        await two.send("transfer", id="t3", call_id=cid, target={"kind": "agent", "to": "9999"})
        assert (await refused(two, "t3"))["code"] == "unknown_target"
        await one.send("ready")
        await one.next("agent_state", lambda m: m["state"] == "available")
        await two.send("transfer", id="t4", call_id=cid, target=to_one)
        await acked(two, "t4")
        moved = await two.next("call_progress", progress(cid, "transferred"))
        assert moved["detail"] == {"kind": "agent", "to": "1001"}
        await two.next("agent_state", lambda m: m["state"] == "wrap_up")
        # 1001's phone rings for it (no ACD offer): not ready "transfer", then on the call.
        reserved = await one.next("agent_state", lambda m: m["state"] == "not_ready")
        assert reserved["reason"] == "transfer"
        ringing = await one.next(
            "call_progress", lambda m: progress(cid, "ringing")(m) and m["detail"] != {}
        )
        assert ringing["detail"] == {"caller": "13800138000"}
        on_call = await one.next("agent_state", lambda m: m["state"] == "on_call")
        assert on_call["call_id"] == cid
        taken = await one.next(
            "call_progress", lambda m: progress(cid, "answered")(m) and m["detail"] != {}
        )
        assert taken["detail"] == {"transferred": True}
        await one.send("get_snapshot")
        [shown] = (await one.next("snapshot"))["calls"]
        assert (shown["call_id"], shown["stage"], shown["caller"]) == (
            cid,
            "answered",
            "13800138000",
        )

        await one.send("hang_up", id="e1", call_id=cid)
        await acked(one, "e1")
        await one.next("call_progress", progress(cid, "ended"))
        await one.next("agent_state", lambda m: m["state"] == "wrap_up")
        await call.ended
        assert ended_sent(await one.settle(), cid) == 0
        redirects = actions_sent(d.centre.emulator, "Redirect")
        assert (redirects[-1]["Context"], redirects[-1]["Exten"]) == (
            "cti-transfer-agent",
            "agent1001",
        )
        await one.ws.close()
        await two.ws.close()


async def test_blind_transfer_to_a_number_and_its_refusals(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    async with desktops(tmp_path, pg_dsn, db, talk_time=None) as d:
        desk = await logged_in(d, "1001")
        call = await answered(d, desk)
        cid = call.uniqueid
        for ident, target, code in (
            ("r1", {"kind": "number", "to": "1002"}, "bad_number"),
            ("r2", {"kind": "queue", "to": "nowhere"}, "unknown_target"),
            ("r3", {"kind": "agent", "to": "1001"}, "unknown_target"),
        ):
            await desk.send("transfer", id=ident, call_id=cid, target=target)
            error = await refused(desk, ident)
            assert (error["code"], error["field"], error["for"]) == (code, "target.to", "transfer")
        assert actions_sent(d.centre.emulator, "Redirect") == []
        to = {"kind": "number", "to": "+86 138 0013 8000"}
        await desk.send("transfer", id="t1", call_id=cid, target=to)
        await acked(desk, "t1")
        moved = await desk.next("call_progress", progress(cid, "transferred"))
        assert moved["detail"] == {"kind": "number", "to": "8613800138000"}
        await desk.next("call_progress", progress(cid, "ended"))
        await desk.next("agent_state", lambda m: m["state"] == "wrap_up")
        [redirect] = actions_sent(d.centre.emulator, "Redirect")
        assert (redirect["Context"], redirect["Exten"]) == ("cti-transfer", "8613800138000")
        # The trunk answers the number: the caller talks to it, the agent is free.
        await until(lambda: call.channel.bridge is not None, "bridged to the number")
        await d.centre.agent_reaches("1001", AgentState.AVAILABLE)
        d.centre.emulator.hangup(call.name)
        await call.ended
        await desk.ws.close()


async def test_click_to_dial_from_the_desktop(tmp_path: Path, pg_dsn: str, db: Database) -> None:
    async with desktops(tmp_path, pg_dsn, db, talk_time=None) as d:
        desk = await d.open("1001")
        await desk.next("snapshot")
        await desk.send("dial", id="d0", number="5559999")
        error = await refused(desk, "d0")
        assert (error["code"], error["for"]) == ("illegal_state", "dial")  # logged out
        await desk.send("ready")
        await desk.next("agent_state")

        await desk.send("dial", id="d1", number="+1 555-9999")
        on_call = await desk.next("agent_state", lambda m: m["state"] == "on_call")
        assert on_call["reason"] == "outbound call"
        cid = on_call["call_id"]
        dialling = await desk.next("call_progress", progress(cid, "ringing"))
        assert dialling["detail"] == {"direction": "outbound", "number": "15559999"}
        # The ack carries the call id the call controls gave the call.
        assert (await acked(desk, "d1"))["detail"] == {"call_id": cid}
        [originate] = actions_sent(d.centre.emulator, "Originate")
        assert (originate["Channel"], originate["ChannelId"]) == ("PJSIP/agent1001", cid)
        customer = await desk.next(
            "call_progress",
            lambda m: progress(cid, "ringing")(m) and m["detail"].get("party") == "customer",
        )
        assert customer["detail"] == {"party": "customer", "number": "15559999"}
        picked_up = await desk.next("call_progress", progress(cid, "answered"))
        assert picked_up["detail"] == {"party": "customer", "number": "15559999"}
        await desk.send("get_snapshot")
        [shown] = (await desk.next("snapshot"))["calls"]
        assert (shown["call_id"], shown["stage"], shown["caller"]) == (cid, "answered", "15559999")

        await desk.send("dial", id="d2", number="5550000")
        error = await refused(desk, "d2")
        assert (error["code"], error["for"]) == ("illegal_state", "dial")  # on a call
        await desk.send("dial", id="d3", number="call me")
        assert (await refused(desk, "d3"))["code"] == "bad_value"  # the parser's
        await desk.send("hold", id="h1", call_id=cid)
        await desk.next("call_progress", progress(cid, "on_hold"))
        await desk.send("unhold", id="u1", call_id=cid)
        await desk.next("call_progress", progress(cid, "resumed"))
        await desk.send("hang_up", id="e1", call_id=cid)
        await acked(desk, "e1")
        await desk.next("call_progress", progress(cid, "ended"))
        assert (await desk.next("wrap_up"))["call_id"] == cid
        await d.centre.agent_reaches("1001", AgentState.WRAP_UP)
        assert ended_sent(await desk.settle(), cid) == 0

        await desk.send(
            "wrap_up", id="w1", call_id=cid, disposition="sale", notes="回访成功",
            resolved=True, follow_up_at=None,
        )  # fmt: skip
        await acked(desk, "w1")
        await until(lambda: d.service.hub.pending_wrap_ups == 0, "wrap-up written")
        stored = await interaction_for_call(db, cid)
        assert stored is not None
        assert (stored.direction, stored.address, stored.agent_login) == (
            "outbound",
            "15559999",
            "1001",
        )
        assert await d.centre.emulator.wait_idle()
        await desk.ws.close()


async def test_dial_when_the_agent_phone_does_not_answer(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    async with desktops(tmp_path, pg_dsn, db, talk_time=None) as d:
        desk = await logged_in(d, "1001")
        d.centre.emulator.unregister("agent1001")
        await desk.send("dial", id="d1", number="5559999")
        error = await refused(desk, "d1")
        assert (error["code"], error["for"]) == ("no_answer", "dial")
        cid = (await desk.next("agent_state", lambda m: m["state"] == "on_call"))["call_id"]
        await desk.next("call_progress", progress(cid, "ended"))
        assert (await desk.next("agent_state", lambda m: m["call_id"] == cid))["state"] == "wrap_up"
        await desk.ws.close()


async def test_both_agents_of_a_transferred_call_keep_their_wrap_up(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    customer_id = await seed_customer(db)
    async with desktops(tmp_path, pg_dsn, db, talk_time=None) as d:
        one = await logged_in(d, "1001")
        two = await logged_in(d, "1002")
        await two.send("not_ready", reason="break")
        await two.next("agent_state", lambda m: m["state"] == "not_ready")
        call = await answered(d, one)
        cid = call.uniqueid
        await two.send("ready")
        await two.next("agent_state", lambda m: m["state"] == "available")
        await one.send("transfer", id="t1", call_id=cid, target={"kind": "queue", "to": "support"})
        await acked(one, "t1")
        await one.next("agent_state", lambda m: m["state"] == "wrap_up")
        await two.next("call_progress", progress(cid, "answered"))
        await one.send(
            "wrap_up", id="w1", call_id=cid, disposition="transferred", notes="转给李华处理账单",
            resolved=False, follow_up_at=None,
        )  # fmt: skip
        await acked(one, "w1")
        await two.send("hang_up", id="e2", call_id=cid)
        await acked(two, "e2")
        await two.next("agent_state", lambda m: m["state"] == "wrap_up")
        await two.send(
            "wrap_up", id="w2", call_id=cid, disposition="billing-fixed", notes="账单已更正",
            resolved=True, follow_up_at=None,
        )  # fmt: skip
        await acked(two, "w2")
        await call.ended
        await until(lambda: d.service.hub.pending_wrap_ups == 0, "wrap-ups written")

        parts = await interactions_for_call(db, cid)
        assert [(i.agent_login, i.disposition, i.notes, i.resolved) for i in parts] == [
            ("1001", "transferred", "转给李华处理账单", False),
            ("1002", "billing-fixed", "账单已更正", True),
        ]
        assert {i.customer_id for i in parts} == {customer_id}

        # The customer calls again: the pop shows both parts of the transferred call.
        await d.centre.agent_reaches("1002", AgentState.AVAILABLE)
        await one.send("not_ready", reason="break")
        await one.next("agent_state", lambda m: m["state"] == "not_ready")
        second = await d.centre.emulator.place_call("13800138000")
        offer = await two.next(
            "offer", lambda m: m["call_id"] == second.uniqueid and m["pop"]["complete"]
        )
        shown = [(i["agent"], i["notes"]) for i in offer["pop"]["interactions"]]
        assert shown[:2] == [("1002", "账单已更正"), ("1001", "转给李华处理账单")]
        await one.ws.close()
        await two.ws.close()
