"""Flows against Asterisk 22's recorded FastAGI replies (transcripts 02, 02b, 03a, 03b).

The recorded IVR scripts sent more than a flow does (GET FULL VARIABLE,
VERBOSE...), so these replays accept the flow's commands as a subsequence
of the recorded ones, byte for byte, and answer each with what Asterisk
wrote after it. What they prove: the menu, collect, play (say digits) and
hangup nodes send commands Asterisk accepted, read its real replies (a key
as an ASCII code with endpos, GET DATA digits, result=-1 on a hang-up), and
close the call record as the call really went.
"""

from __future__ import annotations

import pytest

from ctiserver.asterisk.agi.server import FastAgiServer
from ctiserver.asterisk.agi.session import AgiSession
from ctiserver.ivr.flow import LookupKey
from ctiserver.ivr.loader import parse_flow
from ctiserver.ivr.record import IvrOutcome, IvrRecord
from ctiserver.ivr.runner import CustomerFacts, FlowRun, QueueHandoff
from ctiserver.sim.transcript import scenario
from tests.agi_replay.harness import replay_as_subsequence

# Digits the recorded caller pressed: "1" at the greeting, then 1234 as the account.
ACCOUNT_FLOW = """
name: Recorded IVR
start: greeting
nodes:
  greeting:
    type: menu
    prompt: demo-congrats
    options: {"1": account}
    timeout: 5
  account:
    type: collect
    prompt: vm-enter-num-to-call
    variable: account
    min_digits: 4
    max_digits: 4
    terminator: "#"
    next: read_back
  read_back:
    type: play
    play: [{say: digits, variable: account}]
    next: bye
  bye: {type: hangup}
"""

CONGRATS_FLOW = """
name: Greeting then beep
start: greeting
nodes:
  greeting: {type: play, play: [demo-congrats], next: beep}
  beep: {type: play, play: [beep], next: bye}
  bye: {type: hangup}
"""

ACCOUNT_ONLY_FLOW = """
name: Account number
start: account
nodes:
  account:
    type: collect
    prompt: vm-enter-num-to-call
    variable: account
    min_digits: 4
    max_digits: 4
    terminator: "#"
    next: bye
  bye: {type: hangup}
"""


class NoServices:
    """A flow of talking nodes only: nothing beyond the call is asked for."""

    def __init__(self) -> None:
        self.journal_kinds: list[str] = []

    async def find_customer(self, by: LookupKey, value: str) -> CustomerFacts | None:
        raise AssertionError("no look-up in these flows")

    async def to_queue(self, session: AgiSession, handoff: QueueHandoff) -> None:
        raise AssertionError("no queue in these flows")

    async def to_callback(self, session: AgiSession, handoff: QueueHandoff, number: str) -> bool:
        raise AssertionError("no callback in these flows")

    def voicemail_file(self, call_id: str) -> str:
        raise AssertionError("no voicemail in these flows")

    def journal(self, kind: str, record: IvrRecord, payload: dict[str, object]) -> None:
        self.journal_kinds.append(kind)


async def run_recorded(name: str, flow_text: str) -> tuple[IvrRecord, list[bytes], list[str]]:
    flow = parse_flow(flow_text, f"{name}.yaml")
    services = NoServices()
    records: list[IvrRecord] = []

    async def handler(session: AgiSession) -> None:
        # The recorded GET DATA waited 10 s for the account number.
        run = FlowRun(flow, "recorded", "v1", session, services, input_timeout_ms=10000)
        records.append(await run.run())

    connection = scenario(name).agi_connections()[1]
    server = FastAgiServer("127.0.0.1", 0, drain_timeout=5.0)
    server.route("ivr", handler)
    async with server:
        result = await replay_as_subsequence("127.0.0.1", server.port, connection)
    assert result.ok, result.errors
    assert result.half_closed
    assert len(records) == 1
    return records[0], result.sent, services.journal_kinds


@pytest.mark.parametrize("name", ["02_ivr_dtmf_rfc4733", "02b_ivr_dtmf_sip_info"])
async def test_the_recorded_caller_picks_1_and_keys_an_account(name: str) -> None:
    record, sent, journal = await run_recorded(name, ACCOUNT_FLOW)

    assert sent == [
        b"STREAM FILE demo-congrats 0123456789*#\n",
        b"GET DATA vm-enter-num-to-call 10000 4\n",
        b'SAY DIGITS 1234 ""\n',
        b"HANGUP\n",
    ]
    path = [(s.node, s.keys, s.input, s.result) for s in record.path]
    assert path == [
        ("greeting", "1", "", "1"),
        ("account", "", "1234", "valid"),
        ("read_back", "", "", ""),
        ("bye", "", "", ""),
    ]
    assert record.variables["account"] == "1234"
    assert (record.outcome, record.ended_at_node) == (IvrOutcome.SELF_SERVED, "bye")
    assert journal == ["started", "ended"]


async def test_a_hang_up_during_a_prompt_ends_the_record_at_that_node() -> None:
    record, sent, journal = await run_recorded("03a_hangup_during_stream_file", CONGRATS_FLOW)

    # 200 result=-1 endpos=24000: the caller left; nothing more is sent.
    assert sent == [b'STREAM FILE demo-congrats ""\n']
    assert [s.node for s in record.path] == ["greeting"]
    assert (record.outcome, record.ended_at_node) == (IvrOutcome.ABANDONED, "greeting")
    assert journal == ["started", "ended"]


async def test_a_hang_up_while_keying_ends_the_record_at_the_collect_node() -> None:
    record, sent, _ = await run_recorded("03b_hangup_during_get_data", ACCOUNT_ONLY_FLOW)

    assert sent == [b"GET DATA vm-enter-num-to-call 10000 4\n"]
    assert (record.outcome, record.ended_at_node) == (IvrOutcome.ABANDONED, "account")
    assert "account" not in record.variables
