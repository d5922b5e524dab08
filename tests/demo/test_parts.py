"""The demo's pure parts: its centre, sample customers, caller personas and wrap-ups."""

from __future__ import annotations

import random
from datetime import UTC, datetime, time

from ctiserver.acd.config import load_acd_config
from ctiserver.demo.bots import BotTimings, wrap_up_for
from ctiserver.demo.callers import CallerMix, draw_persona
from ctiserver.demo.centre import BANK_LINE, TRAVEL_LINE, demo_centre, shipped_file
from ctiserver.demo.customers import SAMPLE_CUSTOMERS, luhn_card, sample_csv
from ctiserver.ivr.flow import Validation, ValidationKind


def luhn_valid(number: str) -> bool:
    return Validation(ValidationKind.LUHN).accepts(number)


def test_the_centre_is_the_example_open_around_the_clock_with_made_up_bots() -> None:
    example = load_acd_config(shipped_file("acd.example.toml"))
    centre = demo_centre(example, 6)
    assert [a.agent_id for a in centre.humans] == ["1001", "1002"]
    assert [a.agent_id for a in centre.bots] == ["1003", "1004", "1005", "1006", "2001", "2002"]
    made_up = centre.config.agent("2001")
    assert made_up.endpoint == "PJSIP/agent2001"
    assert (made_up.skills, made_up.queues) == (example.agent("1003").skills, ("support",))
    for queue in centre.config.queues:
        before = example.queue(queue.name).hours
        if before is None:
            assert queue.hours is None
            continue
        assert queue.hours is not None and queue.hours.timezone == before.timezone
        assert not queue.hours.closed_dates
        assert sorted((s.weekday, s.opens, s.closes) for s in queue.hours.slots) == [
            (day, time(0, 0), time.max) for day in range(7)
        ]
    assert demo_centre(example, 0).bots == ()


def test_sample_customers_have_valid_cards_and_import_as_csv() -> None:
    assert all(luhn_valid(c.card) and len(c.card) == 16 for c in SAMPLE_CUSTOMERS)
    assert len({c.card for c in SAMPLE_CUSTOMERS}) == len(SAMPLE_CUSTOMERS)
    assert len({c.caller_id for c in SAMPLE_CUSTOMERS}) == len(SAMPLE_CUSTOMERS)
    assert {c.grade for c in SAMPLE_CUSTOMERS} == {"vip", "gold", "standard"}
    assert all(c.history for c in SAMPLE_CUSTOMERS)
    text = sample_csv()
    assert text.splitlines()[0].startswith("name,phones,accounts,grade")
    assert "张伟" in text and "John Smith" in text
    assert luhn_valid(luhn_card("4", 123))


def test_personas_follow_the_mix_and_a_seed() -> None:
    mix = CallerMix(known_share=1.0, travel_share=0.0, intents=(("callback", 1.0),))
    persona = draw_persona(random.Random(5), mix)
    assert persona.customer is not None and persona.caller_id == persona.customer.caller_id
    assert (persona.line, persona.menu_key, persona.wants_callback) == (BANK_LINE, "9", True)
    assert persona.language_key == ("2" if persona.customer.language == "en" else "1")
    strangers = CallerMix(known_share=0.0, travel_share=1.0, survey_share=0.0)
    for seed in range(20):
        stranger = draw_persona(random.Random(seed), strangers)
        assert stranger.customer is None and stranger.line == TRAVEL_LINE
        assert stranger.survey_score is None and luhn_valid(stranger.card)
    assert draw_persona(random.Random(9), CallerMix()) == draw_persona(
        random.Random(9), CallerMix()
    )


def test_wrap_ups_follow_what_the_call_was_about() -> None:
    now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    always = BotTimings(resolved_share=1.0)
    never = BotTimings(resolved_share=0.0, follow_up_share=1.0)
    loans = {"queue": "sales", "pop": {"ivr": {"variables": {"product": "loans"}}}}
    assert wrap_up_for(loans, random.Random(1), always, now)["disposition"] == "loan-enquiry"
    lost = {"queue": "support", "pop": {"ivr": {"variables": {"urgency": "5"}}}}
    assert wrap_up_for(lost, random.Random(1), always, now)["disposition"] == "lost-card"
    callback = {"queue": "support", "callback_number": "8613800138000", "pop": {}}
    assert wrap_up_for(callback, random.Random(1), always, now)["disposition"] == "callback-done"
    english = {"queue": "vip", "pop": {"customer": {"language": "en"}}}
    fields = wrap_up_for(english, random.Random(1), never, now)
    assert fields["disposition"] == "vip-service" and fields["resolved"] is False
    assert fields["notes"].startswith("VIP request handled.")
    assert fields["follow_up_at"] is not None and fields["follow_up_at"].endswith("Z")
    assert datetime.fromisoformat(fields["follow_up_at"]) > now
    chinese = wrap_up_for(None, random.Random(1), always, now)
    assert (chinese["disposition"], chinese["resolved"]) == ("card-enquiry", True)
    assert chinese["notes"] == "信用卡业务咨询，已解答。" and chinese["follow_up_at"] is None
