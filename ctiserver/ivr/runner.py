"""Runs one flow on one call over its FastAGI session, node by node.

Each node's decision (which menu option, whether input is valid, which branch,
what priority) comes from the pure model (flow.py, conditions.py,
expressions.py); this module only does the talking: prompts, keys, and the
hand-offs to the ACD and storage through `IvrServices`. Every node it runs is
appended to the call's `IvrRecord`, which ends with exactly one outcome:
a caller hang-up at any node ends it as ABANDONED at that node.

What each node sends to Asterisk (commands per res_agi; STREAM FILE, GET DATA,
SAY DIGITS, SET/GET VARIABLE, WAIT FOR DIGIT and HANGUP are in transcript 02):
- play: STREAM FILE per file; SAY DIGITS / SAY NUMBER / SAY DATE per variable.
- menu: STREAM FILE with every key as escape digit, then WAIT FOR DIGIT.
- collect: GET DATA (terminator "#", Asterisk's own), else STREAM FILE + WAIT FOR DIGIT.
- language: SET VARIABLE CHANNEL(language) (Asterisk then plays sounds/<lang>/...).
- queue: SET VARIABLE CTI_SURVEY, then the ACD's FastAGI wait (acd/controller.py).
- voicemail: RECORD FILE into the recordings spool, named after the call.
- transfer: SET VARIABLE CTI_TRANSFER; the dialplan dials it once the session ends.
- hangup, survey, callback: prompts, then HANGUP.
"""

from __future__ import annotations

import logging
import time
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Protocol

from ctiserver.asterisk.agi.session import AgiCommandError, AgiHangup, AgiSession
from ctiserver.ivr.conditions import TIER_VARIABLE, choose_branch
from ctiserver.ivr.expressions import interpolate, parse_priority
from ctiserver.ivr.flow import (
    BranchNode,
    CallbackNode,
    CollectNode,
    Flow,
    HangupNode,
    LanguageNode,
    LookupKey,
    LookupNode,
    MenuNode,
    Node,
    PlayNode,
    QueueNode,
    SayKind,
    SayVariable,
    SetNode,
    SurveyNode,
    TransferNode,
    ValidationKind,
    VoicemailNode,
    type_name,
)
from ctiserver.ivr.record import IvrOutcome, IvrRecord, PathStep

log = logging.getLogger(__name__)

ALL_KEYS = "0123456789*#"
# A caller looping through menus for ever is ended here rather than holding a line.
MAX_STEPS = 200
# Channel variables the shipped dialplan reads after the FastAGI session (dialplans/).
SURVEY_VARIABLE = "CTI_SURVEY"
TRANSFER_VARIABLE = "CTI_TRANSFER"
STATE_VARIABLE = "CTI_QUEUE_STATE"


@dataclass(frozen=True, slots=True)
class IvrPrompts:
    """Sounds of the built-in steps (Asterisk core sounds, like acd/prompts.py)."""

    goodbye: str = "vm-goodbye"
    # "the number is" <digits> "press 1 to accept, 2 to change" (callback confirmation)
    callback_number_is: str = "vm-num-i-have"
    callback_confirm: tuple[str, ...] = ("vm-press", "digits/1", "vm-toenternumber")
    callback_enter_number: str = "vm-enter-num-to-call"
    callback_confirmed: str = "auth-thankyou"
    voicemail_intro: str = "vm-intro"
    survey_thanks: str = "auth-thankyou"
    invalid: str = "pbx-invalid"


@dataclass(frozen=True, slots=True)
class CustomerFacts:
    """What a lookup found; each becomes a flow variable of the same name."""

    customer_id: str
    name: str
    tier: str
    language: str = ""
    last_agent: str = ""
    # Whole units of the identified account's balance (by account only); "" unknown.
    balance: str = ""

    def variables(self) -> dict[str, str]:
        return {
            "customer_id": self.customer_id,
            "name": self.name,
            TIER_VARIABLE: self.tier,
            "customer_language": self.language,
            "last_agent": self.last_agent,
            "balance": self.balance,
            "balance_known": "yes" if self.balance else "no",
            "identified": "yes",
        }


@dataclass(frozen=True, slots=True)
class QueueHandoff:
    """What the queue step asks of the ACD."""

    queue: str
    priority: int
    skills: Mapping[str, int] = field(default_factory=dict)
    attributes: Mapping[str, str] = field(default_factory=dict)
    preferred_agent: str | None = None
    tier: str | None = None  # the customer's grade, when a lookup found it


class IvrServices(Protocol):
    """What a flow needs beyond the call itself (the IVR service provides it)."""

    async def find_customer(self, by: LookupKey, value: str) -> CustomerFacts | None:
        """A customer by calling number or account number; None when nobody matches."""

    async def to_queue(self, session: AgiSession, handoff: QueueHandoff) -> None:
        """Hold the caller in the ACD until its stay ends."""

    async def to_callback(self, session: AgiSession, handoff: QueueHandoff, number: str) -> bool:
        """Keep a callback in `handoff.queue`; False when the queue refused it."""

    def voicemail_file(self, call_id: str) -> str:
        """Where a message for this call is recorded (no extension)."""

    def journal(self, kind: str, record: IvrRecord, payload: dict[str, object]) -> None:
        """Write an `ivr.<kind>` event for the call."""


def masked(digits: str) -> str:
    """Card numbers stay out of paths and screen-pops: all but the last four hidden."""
    return "*" * max(0, len(digits) - 4) + digits[-4:]


class FlowRun:
    """One call through one version of one flow."""

    def __init__(
        self,
        flow: Flow,
        flow_id: str,
        version: str,
        session: AgiSession,
        services: IvrServices,
        *,
        prompts: IvrPrompts | None = None,
        clock: Callable[[], float] = time.time,
        input_timeout_ms: int = 5000,
    ) -> None:
        self.flow = flow
        self.flow_id = flow_id
        self.session = session
        self.services = services
        self.prompts = prompts or IvrPrompts()
        self.clock = clock
        self.input_timeout_ms = input_timeout_ms
        self.zone = zoneinfo.ZoneInfo(flow.timezone) if flow.timezone else UTC
        env = session.env
        started = clock()
        self.record = IvrRecord(
            call_id=env.uniqueid,
            flow=flow_id,
            version=version,
            caller=env.callerid,
            dnis=env.dnid if env.dnid not in ("", "unknown") else env.extension,
            started_at=started,
            language=flow.language,
        )
        self.variables: dict[str, str] = {
            "caller": env.callerid,
            "dnis": self.record.dnis,
            "today": self._local(started).date().isoformat(),
        }
        if flow.language:
            self.variables["language"] = flow.language
        self.secret: set[str] = set()  # variables shown masked (card numbers)
        self.node: Node = flow.entry
        self._reported = False
        # The survey the caller meets after the agent hangs up (queue node's `survey`).
        self.survey_node: SurveyNode | None = None

    def _local(self, at: float) -> datetime:
        return datetime.fromtimestamp(at, self.zone)

    def _step(
        self, node: Node, *, result: str = "", detail: dict[str, str] | None = None
    ) -> PathStep:
        step = PathStep(node.id, type_name(node), self.clock(), label=node.label, result=result)
        if detail:
            step.detail = detail
        return self.record.step(step)

    def _end(self, outcome: IvrOutcome) -> None:
        self.record.end(outcome, self.clock(), self.node.id)

    def shown_variables(self) -> dict[str, str]:
        return {
            name: masked(value) if name in self.secret else value
            for name, value in self.variables.items()
        }

    async def run(self) -> IvrRecord:
        """Run the flow until it ends; never raises for a caller hang-up."""
        self.services.journal("started", self.record, {"caller": self.record.caller})
        try:
            if self.flow.language:
                await self.session.set_variable("CHANNEL(language)", self.flow.language)
            for _ in range(MAX_STEPS):
                target = await self._run(self.node)
                if self.session.hung_up and self.record.outcome is None:
                    # Noticed during a node that talks to no one (a look-up, a
                    # variable): the call ends here, not at the next prompt.
                    raise AgiHangup(f"caller left during node {self.node.id!r}")
                if target is None:
                    break
                self.node = self.flow.nodes[target]
            else:
                log.warning(
                    "IVR %s: call %s looped %d steps", self.flow_id, self.record.call_id, MAX_STEPS
                )
                await self._give_up()
        except AgiHangup:
            self._end(IvrOutcome.ABANDONED)
        except Exception:
            log.exception(
                "IVR %s: call %s failed at node %r", self.flow_id, self.record.call_id, self.node.id
            )
            self._end(IvrOutcome.FAILED)
            await self._to_fallback()
        finally:
            if self.record.outcome is None:  # cancelled: ctiserver is stopping
                self._end(IvrOutcome.FAILED)
            self._report_end()
        return self.record

    def _report_end(self) -> None:
        if not self._reported:
            self._reported = True
            self.record.variables = self.shown_variables()
            self.services.journal("ended", self.record, self.record.as_dict())

    async def _to_fallback(self) -> None:
        """Our failure must not strand the caller: the dialplan's fallback takes over."""
        try:
            await self.session.set_variable(STATE_VARIABLE, "fallback")
        except Exception:
            log.debug("could not hand call %s to the fallback", self.record.call_id)

    async def _run(self, node: Node) -> str | None:
        """Run one node: the id of the next node, or None when the flow is over."""
        match node:
            case PlayNode():
                return await self._play(node)
            case MenuNode():
                return await self._menu(node)
            case CollectNode():
                return await self._collect(node)
            case LookupNode():
                return await self._lookup(node)
            case BranchNode():
                target = choose_branch(node, self.variables, self._local(self.clock()))
                self._step(node, result=target)
                return target
            case SetNode():
                self.variables[node.variable] = interpolate(node.value, self.variables)
                self._step(node, result=f"{node.variable}={self.variables[node.variable]}")
                return node.next
            case LanguageNode():
                self._step(node, result=node.language)
                await self.session.set_variable("CHANNEL(language)", node.language)
                self.variables["language"] = self.record.language = node.language
                return node.next
            case QueueNode():
                await self._queue(node)
            case CallbackNode():
                await self._callback(node)
            case VoicemailNode():
                await self._voicemail(node)
            case SurveyNode():
                self._step(node)
                await ask_survey(self.session, node, self.prompts, self._survey_answered)
                self._end(IvrOutcome.SELF_SERVED)
                await self.session.hangup()
            case TransferNode():
                self._step(node, result=node.destination)
                await self.session.set_variable(TRANSFER_VARIABLE, node.destination)
                if not self.session.hung_up:
                    self._end(IvrOutcome.TRANSFERRED)
            case HangupNode():
                self._step(node)
                self._end(IvrOutcome.SELF_SERVED)
                if node.prompt:
                    await self.session.stream_file(node.prompt, "")
                await self.session.hangup()
        return None

    # -- talking nodes ---------------------------------------------------------------------

    async def _play(self, node: PlayNode) -> str:
        self._step(node)
        for item in node.items:
            if isinstance(item, SayVariable):
                await self._say(item)
            else:
                await self.session.stream_file(item, "")
        return node.next

    async def _say(self, item: SayVariable) -> None:
        value = self.variables.get(item.variable, "").strip()
        if item.kind is SayKind.DIGITS:
            digits = "".join(ch for ch in value if ch.isdigit())
            if digits:
                await self.session.say_digits(digits)
        elif item.kind is SayKind.NUMBER:
            try:
                await self.session.say_number(int(value))
            except ValueError:
                log.warning(
                    "IVR %s: %s=%r is not a number; not said", self.flow_id, item.variable, value
                )
        else:
            when = self._epoch_of(value)
            if when is not None:
                await self.session.say_date(when)

    def _epoch_of(self, value: str) -> int | None:
        """An ISO date (midnight in the flow's zone) or seconds since the epoch."""
        if value.isdigit():
            return int(value)
        try:
            day = date.fromisoformat(value)
        except ValueError:
            log.warning("IVR %s: %r is not a date; not said", self.flow_id, value)
            return None
        return int(datetime(day.year, day.month, day.day, tzinfo=self.zone).timestamp())

    async def _menu(self, node: MenuNode) -> str | None:
        step = self._step(node)
        timeout_ms = int(node.timeout_s * 1000)
        for _ in range(node.retries):
            key, _ = await self.session.stream_file(node.prompt, ALL_KEYS)
            if key is None:
                key = await self.session.wait_for_digit(timeout_ms)
            if key is None:
                step.keys += "-"  # no key within the timeout
                continue
            step.keys += key
            if key in node.options:
                step.result = key
                return node.options[key]
            await self.session.stream_file(node.invalid_prompt or self.prompts.invalid, "")
        step.result = "default" if node.default else "no valid key"
        if node.default:
            return node.default
        await self._give_up()
        return None

    async def _collect(self, node: CollectNode) -> str | None:
        step = self._step(node)
        secret = node.validation is not None and node.validation.kind is ValidationKind.LUHN
        for attempt in range(node.retries):
            digits = await self._read_digits(node)
            shown = masked(digits) if secret else digits
            step.input = shown if not step.input else f"{step.input},{shown}"
            valid = node.min_digits <= len(digits) <= node.max_digits and (
                node.validation is None or node.validation.accepts(digits)
            )
            if valid:
                self.variables[node.variable] = digits
                if secret:
                    self.secret.add(node.variable)
                step.result = "valid" if attempt == 0 else f"valid after {attempt + 1} tries"
                return node.next
            if attempt + 1 < node.retries or node.on_invalid:
                await self.session.stream_file(node.invalid_prompt or self.prompts.invalid, "")
        step.result = "invalid"
        if node.on_invalid:
            return node.on_invalid
        await self._give_up()
        return None

    async def _read_digits(self, node: CollectNode) -> str:
        if node.terminator == "#":  # GET DATA's own terminator (app_getdata)
            return (
                await self.session.get_data(node.prompt, self.input_timeout_ms, node.max_digits)
                or ""
            )
        key, _ = await self.session.stream_file(node.prompt, ALL_KEYS)
        digits = ""
        while len(digits) < node.max_digits:
            if key is None:
                key = await self.session.wait_for_digit(self.input_timeout_ms)
            if key is None or (node.terminator and key == node.terminator):
                break
            digits += key
            key = None
        return digits

    async def _lookup(self, node: LookupNode) -> str:
        step = self._step(node)
        value = (
            self.variables.get("caller", "")
            if node.by is LookupKey.CALLER
            else self.variables.get(node.variable, "")
        )
        try:
            facts = await self.services.find_customer(node.by, value) if value else None
        except Exception:
            # The caller is served without a profile rather than not at all.
            log.exception("IVR %s: customer lookup failed; going on as not found", self.flow_id)
            step.result = "error"
            return node.not_found
        if facts is None:
            step.result = "not_found"
            return node.not_found
        self.variables.update(facts.variables())
        self.record.customer = {
            "id": facts.customer_id,
            "name": facts.name,
            "tier": facts.tier,
        }
        step.result = "found"
        step.detail = {"customer_id": facts.customer_id, "tier": facts.tier}
        return node.next

    # -- nodes that end the flow -----------------------------------------------------------

    def _handoff(self, queue: str, node: QueueNode | None = None) -> QueueHandoff:
        if node is None:
            priority = 0
        elif isinstance(node.priority, int):
            priority = node.priority
        else:
            priority = parse_priority(node.priority).evaluate(self.variables)
        return QueueHandoff(
            queue=queue,
            priority=priority,
            skills=dict(node.skills) if node else {},
            attributes=(
                {
                    name: interpolate(value, self.variables)
                    for name, value in node.attributes.items()
                }
                if node
                else {}
            ),
            preferred_agent=(
                self.variables.get(node.preferred_agent) or None
                if node and node.preferred_agent
                else None
            ),
            tier=self.variables.get(TIER_VARIABLE) or None,
        )

    async def _queue(self, node: QueueNode) -> None:
        handoff = self._handoff(node.queue, node)
        self._step(node, result=node.queue, detail={"priority": str(handoff.priority)})
        if node.survey:
            survey = self.flow.nodes[node.survey]
            assert isinstance(survey, SurveyNode)  # the loader checks it
            self.survey_node = survey
            await self.session.set_variable(SURVEY_VARIABLE, f"{self.flow_id}/{node.survey}")
        self._end(IvrOutcome.QUEUED)
        self._report_end()  # the screen-pop needs the path while the caller waits
        await self.services.to_queue(self.session, handoff)

    async def _callback(self, node: CallbackNode) -> None:
        step = self._step(node)
        source = self.variables.get(node.number, "") if node.number else self.variables["caller"]
        number = "".join(ch for ch in source if ch.isdigit())
        if len(number) >= 3:
            await self.session.stream_file(self.prompts.callback_number_is, "")
            await self.session.say_digits(number)
            key = None
            for prompt in self.prompts.callback_confirm:
                key, _ = await self.session.stream_file(prompt, "12")
                if key:
                    break
            key = key or await self.session.wait_for_digit(self.input_timeout_ms)
            if key == "2":
                number = ""
        for _ in range(2):
            if len(number) >= 3:
                break
            number = (
                await self.session.get_data(
                    self.prompts.callback_enter_number, self.input_timeout_ms, 20
                )
                or ""
            )
        if len(number) < 3:
            step.result = "no number"
            await self._give_up()
            return
        step.input = number
        if not await self.services.to_callback(self.session, self._handoff(node.queue), number):
            step.result = "refused"
            self._end(IvrOutcome.FAILED)
            await self._to_fallback()
            return
        step.result = "kept"
        self._end(IvrOutcome.CALLBACK)
        await self.session.stream_file(self.prompts.callback_confirmed, "")
        await self.session.hangup()

    async def _voicemail(self, node: VoicemailNode) -> None:
        step = self._step(node, result=node.queue or node.mailbox)
        file = self.services.voicemail_file(self.record.call_id)
        await self.session.stream_file(node.prompt or self.prompts.voicemail_intro, "")
        samples: int | None = None
        hung_up = False
        try:
            _, samples = await self.session.record_file(
                file, "wav", "#", 120_000, beep=True, silence=5
            )
        except AgiHangup as exc:
            # Most callers hang up after speaking: the message is kept all the same.
            hung_up = True
            samples = exc.response.endpos if exc.response is not None else None
        except AgiCommandError as exc:
            log.error(
                "IVR %s: voicemail of %s not recorded: %s", self.flow_id, self.record.call_id, exc
            )
            step.result = "not recorded"
            self._end(IvrOutcome.FAILED)
            await self._to_fallback()
            return
        self._end(IvrOutcome.VOICEMAIL)
        self.services.journal(
            "voicemail",
            self.record,
            {
                "file": f"{file}.wav",
                "samples": samples,
                "queue": node.queue,
                "mailbox": node.mailbox,
            },
        )
        if not hung_up:
            await self.session.stream_file(self.prompts.goodbye, "")
            await self.session.hangup()

    def _survey_answered(self, node: SurveyNode, score: int | None) -> None:
        if score is not None:
            self.variables[node.variable] = str(score)
        self.services.journal(
            "survey",
            self.record,
            {"node": node.id, "score": score, "scale": node.scale, "question": node.prompt},
        )

    async def _give_up(self) -> None:
        """Out of tries with nowhere to go: say goodbye and end the call."""
        self._end(IvrOutcome.NO_INPUT)
        await self.session.stream_file(self.prompts.goodbye, "")
        await self.session.hangup()


async def ask_survey(
    session: AgiSession,
    node: SurveyNode,
    prompts: IvrPrompts,
    answered: Callable[[SurveyNode, int | None], None],
    *,
    tries: int = 2,
    timeout_ms: int = 5000,
) -> int | None:
    """Ask the question until a key 1..scale comes (or `tries` run out); report the score.

    A hang-up before an answer is reported as no score and then raised.
    """
    keys = "".join(str(n) for n in range(1, node.scale + 1))
    score: int | None = None
    try:
        for _ in range(tries):
            key, _ = await session.stream_file(node.prompt, ALL_KEYS)
            key = key or await session.wait_for_digit(timeout_ms)
            if key is not None and key in keys:
                score = int(key)
                break
    finally:
        answered(node, score)
    if score is not None:
        await session.stream_file(prompts.survey_thanks, "")
    return score
