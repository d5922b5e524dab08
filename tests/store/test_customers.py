"""Customers: several phones, Chinese text, lookups by caller id and by account number."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ctiserver.store.customers import (
    CustomerAccount,
    CustomerPhone,
    add_customer_phone,
    create_customer,
    find_customer_by_account,
    find_customers_by_phone,
    get_customer,
    normalize_phone,
)
from ctiserver.store.database import Database


@pytest.mark.parametrize(
    ("raw", "digits"),
    [
        ("+86 138-0013-8000", "8613800138000"),
        ("0086 138 0013 8000", "8613800138000"),
        ("(010) 1234 5678", "01012345678"),
        ("+1 (415) 555-0100", "14155550100"),
        ("1001", "1001"),
        ("anonymous", ""),
        ("", ""),
    ],
)
def test_normalize_phone(raw: str, digits: str) -> None:
    assert normalize_phone(raw) == digits


async def test_customer_with_several_phones_and_chinese_text_round_trips(db: Database) -> None:
    created = await create_customer(
        db,
        name="王小明",
        phones=[("+86 138 0013 8000", "手机"), ("010-1234-5678", "home")],
        accounts=[("6222 0000 1111", "card"), "A-778899"],
        grade="vip",
        value=Decimal("128000.50"),
        churn_risk=Decimal("0.35"),
        language="zh-CN",
        preferred_channel="phone",
        notes="客户很满意",
    )
    loaded = await get_customer(db, created.id)
    assert loaded == created
    assert loaded.name == "王小明"
    assert loaded.notes == "客户很满意"
    assert (loaded.grade, loaded.value, loaded.churn_risk) == (
        "vip",
        Decimal("128000.50"),
        Decimal("0.350"),
    )
    assert (loaded.language, loaded.preferred_channel) == ("zh-CN", "phone")
    assert loaded.phones == (
        CustomerPhone("+86 138 0013 8000", "8613800138000", "手机"),
        CustomerPhone("010-1234-5678", "01012345678", "home"),
    )
    assert loaded.accounts == (
        CustomerAccount("6222 0000 1111", "card"),
        CustomerAccount("A-778899"),
    )
    assert loaded.created_at.tzinfo is not None
    # Stored as UTF-8 text, not escaped: what other tools will read too.
    assert await db.fetchval("SELECT octet_length(name) FROM customers") == len("王小明".encode())


@pytest.mark.parametrize(
    "caller_id", ["+8613800138000", "008613800138000", "13800138000", "8613800138000"]
)
async def test_find_by_phone_matches_every_form_of_the_number(db: Database, caller_id: str) -> None:
    customer = await create_customer(
        db, name="王小明", phones=["+86 138 0013 8000", "010 1234 5678"]
    )
    await create_customer(db, name="李四", phones=["13900139000"])
    assert [c.id for c in await find_customers_by_phone(db, caller_id)] == [customer.id]


async def test_find_by_second_phone_and_landline_forms(db: Database) -> None:
    customer = await create_customer(db, name="王小明", phones=["13800138000", "010-1234-5678"])
    for caller_id in ("01012345678", "+86 10 1234 5678", "861012345678"):
        assert [c.id for c in await find_customers_by_phone(db, caller_id)] == [customer.id]


async def test_shared_number_finds_every_customer_exact_match_first(db: Database) -> None:
    husband = await create_customer(db, name="张伟", phones=["+86 10 8888 9999"])
    wife = await create_customer(db, name="刘芳", phones=["010 8888 9999"])
    found = await find_customers_by_phone(db, "01088889999")
    assert [c.id for c in found] == [wife.id, husband.id]


async def test_unknown_and_anonymous_callers_match_nobody(db: Database) -> None:
    await create_customer(db, name="王小明", phones=["13800138000"])
    assert await find_customers_by_phone(db, "13900000000") == []
    assert await find_customers_by_phone(db, "anonymous") == []
    assert await find_customers_by_phone(db, "") == []


async def test_find_by_account_number(db: Database) -> None:
    customer = await create_customer(db, name="王小明", accounts=["A-1001", "A-1002"])
    await create_customer(db, name="李四", accounts=["B-2001"])
    found = await find_customer_by_account(db, " A-1002 ")
    assert found is not None and found.id == customer.id
    assert await find_customer_by_account(db, "A-9999") is None


async def test_account_number_belongs_to_one_customer(db: Database) -> None:
    await create_customer(db, name="王小明", accounts=["A-1001"])
    with pytest.raises(ValueError, match="'A-1001' already belongs"):
        await create_customer(db, name="李四", phones=["13900139000"], accounts=["A-1001"])
    # Nothing of the refused customer was kept.
    assert await db.fetchval("SELECT count(*) FROM customers") == 1
    assert await find_customers_by_phone(db, "13900139000") == []


async def test_bad_input_is_refused_with_the_value(db: Database) -> None:
    with pytest.raises(ValueError, match="name must not be empty"):
        await create_customer(db, name="  ")
    with pytest.raises(ValueError, match="'unknown' has no digits"):
        await create_customer(db, name="王小明", phones=["unknown"])


async def test_add_phone_and_duplicate_phones_collapse(db: Database) -> None:
    customer = await create_customer(db, name="王小明", phones=["13800138000", "+86 138 0013 8000"])
    assert len(customer.phones) == 2  # different digits: national and international forms
    again = await create_customer(db, name="李四", phones=["13900139000", "139 0013 9000"])
    assert len(again.phones) == 1
    phone = await add_customer_phone(db, customer.id, "021 5555 6666", "office")
    assert phone == CustomerPhone("021 5555 6666", "02155556666", "office")
    relabelled = await add_customer_phone(db, customer.id, "02155556666", "work")
    assert relabelled.label == "work"
    loaded = await get_customer(db, customer.id)
    assert loaded is not None and len(loaded.phones) == 3


async def test_create_inside_a_callers_transaction(db: Database) -> None:
    async with db.transaction() as conn:
        customer = await create_customer(conn, name="王小明", phones=["13800138000"])
        assert [c.id for c in await find_customers_by_phone(conn, "13800138000")] == [customer.id]
    assert await get_customer(db, customer.id) == customer
