"""IVR flows run over real sockets: emulator -> shipped dialplan -> FastAGI -> flow, with
customers in PostgreSQL and the call record read back from the event log."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from ctiserver.store.call_history import ivr_record
from ctiserver.store.customers import create_customer, set_account_balance
from ctiserver.store.database import Database
from tests.ivr.centre import ivr_centre

CARD = "4111111111111111"  # passes the Luhn check
BAD_CARD = "4111111111111112"

SELF_SERVICE = """
name: 自助测试 Self-service test
numbers: ["95588"]
start: welcome
language: zh
timezone: Asia/Shanghai
nodes:
  welcome:
    type: play
    play: [test/welcome, {say: digits, variable: caller}, {say: date, variable: today}]
    next: who
  who: {type: lookup, by: caller, next: menu, not_found: menu}
  menu:
    type: menu
    prompt: test/menu
    options: {"1": card, "2": english, "3": goodbye}
    timeout: 2
    retries: 2
    invalid_prompt: test/invalid
  english: {type: language, language: en, next: mark}
  mark: {type: set, variable: product, value: "${language}-cards", next: tiers}
  tiers:
    type: branch
    when:
      - tier: [vip]
        next: vip_bye
      - variables: {product: en-cards}
        next: goodbye
    else: goodbye
  card:
    type: collect
    prompt: test/card
    variable: card
    min_digits: 16
    max_digits: 19
    validate: luhn
    retries: 2
    invalid_prompt: test/card-invalid
    next: by_card
  by_card: {type: lookup, by: variable, variable: card, next: say_balance, not_found: goodbye}
  say_balance:
    type: play
    play: [test/balance, {say: number, variable: balance}]
    next: goodbye
  vip_bye: {type: hangup, prompt: test/vip-goodbye}
  goodbye: {type: hangup, prompt: test/goodbye}
"""


def nodes(record: dict[str, object]) -> list[str]:
    path = record["path"]
    assert isinstance(path, list)
    return [step["node"] for step in path]


def step(record: dict[str, object], node: str) -> dict[str, object]:
    path = record["path"]
    assert isinstance(path, list)
    return next(s for s in path if s["node"] == node)


async def test_a_known_vip_chooses_english_and_is_recognised(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    await create_customer(db, name="王小明", phones=["+86 138 0013 8000"], grade="vip")
    async with ivr_centre(tmp_path, pg_dsn, db, {"bank": SELF_SERVICE}) as centre:
        call = await centre.call("13800138000", "王小明")
        await centre.reaches(call, "menu")
        centre.press(call, "2")
        await call.ended
        record = await centre.record(call)
        sent = centre.sent(call)
    assert nodes(record) == ["welcome", "who", "menu", "english", "mark", "tiers", "vip_bye"]
    assert record["outcome"] == "self_served"
    assert record["ended_at_node"] == "vip_bye"
    assert record["flow"] == "bank"
    assert record["dnis"] == "95588"
    assert record["customer"]["name"] == "王小明"  # type: ignore[index]
    assert record["customer"]["tier"] == "vip"  # type: ignore[index]
    assert record["language"] == "en"
    assert record["variables"]["product"] == "en-cards"  # type: ignore[index]
    assert step(record, "menu")["keys"] == "2"
    assert step(record, "who")["result"] == "found"
    assert step(record, "tiers")["result"] == "vip_bye"
    # What Asterisk was asked to do, in order.
    assert sent[0] == "SET VARIABLE CHANNEL(language) zh"
    assert sent[1] == 'STREAM FILE test/welcome ""'
    assert sent[2] == 'SAY DIGITS 13800138000 ""'
    assert sent[3].startswith("SAY DATE ")
    assert "SET VARIABLE CHANNEL(language) en" in sent
    assert sent[-2:] == ['STREAM FILE test/vip-goodbye ""', "HANGUP"]


async def test_a_card_number_is_checked_masked_and_its_balance_read_out(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    await create_customer(db, name="李娜", accounts=[(CARD, "card")])
    await set_account_balance(db, CARD, Decimal("1234.56"), datetime.now(UTC))
    async with ivr_centre(tmp_path, pg_dsn, db, {"bank": SELF_SERVICE}) as centre:
        call = await centre.call("13900000000", "李娜")
        await centre.reaches(call, "menu")
        centre.press(call, "1")
        await centre.reaches(call, "card")
        centre.press(call, BAD_CARD + "#")
        await centre.until_sent(call, "GET DATA test/card", times=2)  # keys during the
        centre.press(call, CARD + "#")  # invalid-input prompt are lost, as on Asterisk
        await call.ended
        record = await centre.record(call)
        sent = centre.sent(call)
        stored = await ivr_record(db, call.uniqueid)
    assert nodes(record) == ["welcome", "who", "menu", "card", "by_card", "say_balance", "goodbye"]
    card = step(record, "card")
    assert card["input"] == "************1112,************1111"  # never the whole number
    assert card["result"] == "valid after 2 tries"
    assert record["variables"]["card"] == "************1111"  # type: ignore[index]
    assert step(record, "who")["result"] == "not_found"
    assert step(record, "by_card")["result"] == "found"
    assert 'SAY NUMBER 1234 ""' in sent
    assert record["outcome"] == "self_served"
    assert stored == record


async def test_no_key_at_a_menu_without_default_ends_the_call_as_no_input(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    async with ivr_centre(tmp_path, pg_dsn, db, {"bank": SELF_SERVICE}) as centre:
        call = await centre.call()
        await call.ended
        record = await centre.record(call)
        sent = centre.sent(call)
    assert record["outcome"] == "no_input"
    assert record["ended_at_node"] == "menu"
    assert step(record, "menu")["keys"] == "--"  # two tries, no key
    assert sent.count("STREAM FILE test/menu 0123456789*#") == 2
    assert sent.count("WAIT FOR DIGIT 2000") == 2
    assert sent[-2:] == ['STREAM FILE vm-goodbye ""', "HANGUP"]


async def test_an_invalid_key_hears_the_invalid_prompt_then_tries_again(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    async with ivr_centre(tmp_path, pg_dsn, db, {"bank": SELF_SERVICE}) as centre:
        call = await centre.call()
        await centre.reaches(call, "menu")
        centre.press(call, "7")
        await centre.until_sent(call, "STREAM FILE test/menu", times=2)
        centre.press(call, "3")
        await call.ended
        record = await centre.record(call)
    assert step(record, "menu")["keys"] == "73"
    assert step(record, "menu")["result"] == "3"
    assert nodes(record)[-1] == "goodbye"


async def test_a_lookup_during_a_database_outage_goes_on_as_not_found(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    await create_customer(db, name="王小明", phones=["13800138000"], grade="vip")
    async with ivr_centre(tmp_path, pg_dsn, db, {"bank": SELF_SERVICE}) as centre:
        broken = await Database.open(pg_dsn)
        await broken.close()
        centre.ivr.database = broken  # every query now fails
        call = await centre.call("13800138000")
        await centre.reaches(call, "menu")
        centre.press(call, "3")
        await call.ended
        record = await centre.record(call)
    assert step(record, "who")["result"] == "error"
    assert record["customer"] == {}
    assert record["outcome"] == "self_served"
