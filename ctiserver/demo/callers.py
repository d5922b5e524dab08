"""Synthetic callers for the demo: Poisson arrivals on the emulated PSTN trunk, each a
caller who listens to the IVR and reacts to what it plays.

A caller is a persona drawn at arrival: who calls (a sample customer's number, so the
screen-pop shows a profile and history, or an unknown number), which line it dials,
which keys it means to press, how long it will wait in a queue, whether it asks for a
callback and whether it answers the survey. It hears prompts the way a person does:
the emulator publishes every FastAGI command on AMI (`AGIExecStart`, as Asterisk
does), so when `bank/main-menu` starts playing on its channel the caller keys its
choice after a moment of thought; DTMF goes out as the emulated phone sends it
(RFC 4733 on the `pstn` trunk). Keys pressed while nothing listens are lost, as on a
real line, so reacting to prompts is what makes the choices land.

Patience counts from the first sound of the queue (hold music or a position
announcement) and ends at the bridge to an agent (`BridgeEnter`); a caller whose
patience runs out hangs up, which the ACD counts as an abandoned call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from dataclasses import dataclass, field

from ctiserver.acd.prompts import Prompts
from ctiserver.demo.centre import BANK_LINE, TRAVEL_LINE
from ctiserver.demo.customers import SAMPLE_CUSTOMERS, SampleCustomer, luhn_card
from ctiserver.lifecycle import Service
from ctiserver.sim.emulator import AsteriskEmulator
from ctiserver.sim.events import Event
from ctiserver.sim.phones import Call

log = logging.getLogger(__name__)

_QUEUE_PROMPTS = Prompts()
# What a caller hears once it is in a queue (controller.py plays these).
QUEUE_SOUNDS = frozenset(
    {_QUEUE_PROMPTS.you_are_next, _QUEUE_PROMPTS.there_are, _QUEUE_PROMPTS.hold_time}
)
CALLBACK_OFFER = _QUEUE_PROMPTS.callback_offer[0]  # "press" (1 "to call back")


@dataclass(frozen=True, slots=True)
class CallerMix:
    """How the demo's callers behave; shares are probabilities per call."""

    calls_per_minute: float = 3.0
    known_share: float = 0.65  # the caller is a sample customer (a full screen-pop)
    travel_share: float = 0.08  # dials the travel line instead of the bank's
    # Bank line intents (main menu key), relative weights.
    intents: tuple[tuple[str, float], ...] = (
        ("cards", 48.0),
        ("loans", 10.0),
        ("lost_card", 6.0),
        ("balance", 10.0),
        ("callback", 8.0),
        ("agent", 6.0),
    )
    english_share: float = 0.12  # unknown callers choosing English (customers: their language)
    survey_share: float = 0.6  # answers the satisfaction question
    accepts_callback_offer: float = 0.5  # presses 1 when the queue offers a callback
    impatient_share: float = 0.2
    impatient_s: tuple[float, float] = (8.0, 40.0)
    patient_s: tuple[float, float] = (120.0, 420.0)
    think_s: tuple[float, float] = (0.6, 1.6)  # from a prompt starting to the key
    voicemail_s: tuple[float, float] = (4.0, 9.0)  # speaking after the beep
    # Every caller hangs up at the latest this long after the IVR answered.
    max_call_s: float = 1800.0

    def __post_init__(self) -> None:
        if self.calls_per_minute < 0:
            raise ValueError(f"calls per minute must be 0 or more, not {self.calls_per_minute}")


@dataclass(slots=True)
class Persona:
    caller_id: str
    name: str
    line: str  # the dialled number
    language_key: str  # "1" 中文, "2" English
    menu_key: str  # the bank main menu's key, or the travel menu's
    card: str  # what the caller keys when asked for a card number
    patience_s: float
    survey_score: int | None  # None: hangs up when asked
    accepts_callback_offer: bool
    customer: SampleCustomer | None = None

    @property
    def wants_callback(self) -> bool:
        return self.line == BANK_LINE and self.menu_key == "9"


_MENU_KEYS = {
    "cards": "2",
    "loans": "3",
    "lost_card": "4",
    "balance": "1",
    "callback": "9",
    "agent": "0",
}


def draw_persona(
    rng: random.Random,
    mix: CallerMix,
    customers: tuple[SampleCustomer, ...] = SAMPLE_CUSTOMERS,
) -> Persona:
    customer = rng.choice(customers) if customers and rng.random() < mix.known_share else None
    if customer is not None:
        caller_id, name = customer.caller_id, customer.name
        english = customer.language == "en"
        card = customer.card
    else:
        caller_id = f"+861{rng.choice('35789')}{rng.randrange(10**9):09d}"
        name = ""
        english = rng.random() < mix.english_share
        # A card of another bank: the look-up finds nobody, the call goes on to an agent.
        card = luhn_card("4" + str(rng.randrange(10**5)).zfill(5), rng.randrange(10**9))
    low, high = mix.impatient_s if rng.random() < mix.impatient_share else mix.patient_s
    intents, weights = zip(*mix.intents, strict=True)
    if rng.random() < mix.travel_share:
        line, menu_key = TRAVEL_LINE, rng.choice("1123")
    else:
        line = BANK_LINE
        menu_key = _MENU_KEYS[rng.choices(intents, weights)[0]]
    return Persona(
        caller_id=caller_id,
        name=name,
        line=line,
        language_key="2" if english else "1",
        menu_key=menu_key,
        card=card,
        patience_s=rng.uniform(low, high),
        survey_score=rng.choice((3, 4, 4, 5, 5, 5)) if rng.random() < mix.survey_share else None,
        accepts_callback_offer=rng.random() < mix.accepts_callback_offer,
        customer=customer,
    )


@dataclass
class CallerStats:
    """What the callers did, by their own account (the server's figures are the metrics')."""

    placed: int = 0
    ended: int = 0
    connected: int = 0  # bridged to an agent
    gave_up: int = 0  # hung up in a queue when patience ran out
    callbacks_asked: int = 0  # confirmed a callback in the IVR or took the queue's offer
    surveys_answered: int = 0
    by_line: Counter[str] = field(default_factory=Counter)


@dataclass(eq=False)
class _Caller:
    call: Call
    persona: Persona
    waiting: bool = False
    connected: bool = False
    gave_up: bool = False
    heard: Counter[str] = field(default_factory=Counter)


class SyntheticCallers(Service):
    """Places persona callers at a Poisson rate and plays their part until closed."""

    def __init__(
        self,
        emulator: AsteriskEmulator,
        mix: CallerMix,
        rng: random.Random,
        customers: tuple[SampleCustomer, ...] = SAMPLE_CUSTOMERS,
    ) -> None:
        self.emulator = emulator
        self.mix = mix
        self.rng = rng
        self.customers = customers
        self.stats = CallerStats()
        self._callers: dict[str, _Caller] = {}  # caller channel Uniqueid -> caller
        self._arrivals: asyncio.Task[None] | None = None

    @property
    def on_the_line(self) -> int:
        return len(self._callers)

    async def start(self) -> None:
        self.emulator.add_listener(self._on_event)
        self._arrivals = asyncio.create_task(self._arrive(), name="demo-callers")

    async def stop_arrivals(self) -> None:
        """No new callers; those on the line carry on."""
        task, self._arrivals = self._arrivals, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def hang_up_all(self) -> None:
        """Every caller still on the line hangs up (the demo is ending)."""
        for caller in list(self._callers.values()):
            self.emulator.hangup(caller.call.name)

    async def close(self) -> None:
        await self.stop_arrivals()
        self.emulator.remove_listener(self._on_event)
        self._callers.clear()

    # -- arrivals -------------------------------------------------------------------------

    async def _arrive(self) -> None:
        rate = self.mix.calls_per_minute / 60.0
        if rate <= 0:
            return
        # The first caller dials at once (something to watch from the start); then
        # exponential gaps, a Poisson process.
        while True:
            await self.place(draw_persona(self.rng, self.mix, self.customers))
            await self.emulator.clock.sleep(self.rng.expovariate(rate))

    async def place(self, persona: Persona) -> Call:
        call = await self.emulator.place_call(
            persona.caller_id,
            persona.name,
            exten=persona.line,
            hangup_after=self.mix.max_call_s,
        )
        self._callers[call.uniqueid] = _Caller(call, persona)
        self.stats.placed += 1
        self.stats.by_line[persona.line] += 1
        log.debug("demo caller %s dials %s (%s)", persona.caller_id, persona.line, persona)
        return call

    # -- what the callers hear -------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if event.name not in ("AGIExecStart", "BridgeEnter", "Hangup"):
            return
        caller = self._callers.get(event.get("Uniqueid") or "")
        if caller is None:
            return
        if event.name == "Hangup":
            self._ended(caller)
        elif event.name == "BridgeEnter":
            if not caller.connected:
                caller.connected = True
                self.stats.connected += 1
        else:
            self._heard(caller, event.get("Command") or "")

    def _ended(self, caller: _Caller) -> None:
        self._callers.pop(caller.call.uniqueid, None)
        self.stats.ended += 1
        if caller.gave_up:
            self.stats.gave_up += 1

    def _heard(self, caller: _Caller, command: str) -> None:
        words = command.split()
        verb = " ".join(words[:2]).upper()
        target = words[2].strip('"') if len(words) > 2 else ""
        persona = caller.persona
        if (verb == "SET MUSIC" and target.upper() == "ON") or target in QUEUE_SOUNDS:
            self._start_waiting(caller)
            return
        if verb == "RECORD FILE":  # a voicemail: say something, then hang up
            self._hang_up_after(caller, self.rng.uniform(*self.mix.voicemail_s))
            return
        if verb not in ("STREAM FILE", "GET DATA"):
            return
        caller.heard[target] += 1
        first = caller.heard[target] == 1
        if target in ("bank/choose-language",):
            self._key(caller, persona.language_key)
        elif target in ("bank/main-menu", "travel/main-menu"):
            self._key(caller, persona.menu_key)
        elif target == "bank/enter-card-number" and caller.heard[target] <= 2:
            self._key(caller, persona.card + "#")
        elif target == "travel/enter-booking-number" and first:
            self._key(caller, f"20{self.rng.randrange(10**6):06d}#")
        elif target == "bank/after-balance" and first and self.rng.random() < 0.3:
            self._key(caller, "0")  # and now an agent, please
        elif target == "travel/closed":
            self._key(caller, "1")  # leave a message
        elif target == CALLBACK_OFFER and first:
            # The IVR's callback confirmation ("press 1 to accept") or the queue's offer.
            if persona.wants_callback or (caller.waiting and persona.accepts_callback_offer):
                self.stats.callbacks_asked += 1
                self._key(caller, "1")
        elif target.endswith("/rate-1-to-5") and first:
            if persona.survey_score is None:
                self._hang_up_after(caller, self._think())
            else:
                self.stats.surveys_answered += 1
                self._key(caller, str(persona.survey_score))

    def _start_waiting(self, caller: _Caller) -> None:
        if caller.waiting or caller.connected:
            return
        caller.waiting = True
        clock = self.emulator.clock
        caller.call.channel.add_timer(
            clock.call_later(caller.persona.patience_s, self._lose_patience, caller)
        )

    def _lose_patience(self, caller: _Caller) -> None:
        if caller.connected or caller.call.channel.gone:
            return
        caller.gave_up = True
        self.emulator.hangup(caller.call.name)

    def _think(self) -> float:
        return self.rng.uniform(*self.mix.think_s)

    def _key(self, caller: _Caller, digits: str) -> None:
        self.emulator.send_dtmf(caller.call.name, digits, self._think())

    def _hang_up_after(self, caller: _Caller, seconds: float) -> None:
        clock = self.emulator.clock
        caller.call.channel.add_timer(
            clock.call_later(seconds, self.emulator.hangup, caller.call.name)
        )
