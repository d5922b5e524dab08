"""Customers: update (fields, phones, accounts), search by name, number and account."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from ctiserver.store.customers import (
    CustomerAccount,
    CustomerFieldError,
    account_balance,
    create_customer,
    get_customer,
    search_customers,
    set_account_balance,
    update_customer,
)
from ctiserver.store.database import Database


async def test_update_changes_only_the_fields_given(db: Database) -> None:
    created = await create_customer(
        db, name="王小明", phones=["13800138000"], grade="gold", language="zh-CN", notes="老客户"
    )
    updated = await update_customer(
        db, created.id, grade="vip", value=Decimal("5000.25"), notes="客户要求回电", language=None
    )
    assert updated is not None
    assert (updated.name, updated.grade, updated.value) == ("王小明", "vip", Decimal("5000.25"))
    assert (updated.notes, updated.language) == ("客户要求回电", None)
    assert updated.phones == created.phones
    assert updated.updated_at >= created.updated_at
    assert await get_customer(db, created.id) == updated


async def test_replacing_accounts_keeps_the_balance_of_those_kept(db: Database) -> None:
    customer = await create_customer(db, name="李四", accounts=[("A-1", "card"), "A-2"])
    await set_account_balance(db, "A-1", Decimal("99.50"), datetime.now(UTC))
    updated = await update_customer(db, customer.id, accounts=["A-1", ("A-3", "loan")])
    assert updated is not None
    # Replacing sets the kind as given: A-1 was given without one.
    assert updated.accounts == (CustomerAccount("A-1", ""), CustomerAccount("A-3", "loan"))
    assert await account_balance(db, "A-1") == Decimal("99.50")
    assert await account_balance(db, "A-2") is None


async def test_replace_and_add_phones(db: Database) -> None:
    customer = await create_customer(
        db, name="张伟", phones=[("13800138000", "mobile"), ("010 1234 5678", "home")]
    )
    replaced = await update_customer(db, customer.id, phones=["+86 138 0013 8000", "13800138000"])
    assert replaced is not None
    assert [(p.digits, p.label) for p in replaced.phones] == [
        ("13800138000", ""),
        ("8613800138000", ""),
    ]
    added = await update_customer(
        db, customer.id, add_phones=[("13800138000", ""), ("021 5555 6666", "office")]
    )
    assert added is not None
    assert [(p.digits, p.label) for p in added.phones] == [
        ("13800138000", ""),
        ("8613800138000", ""),
        ("02155556666", "office"),
    ]
    # Adding a known number without a label keeps its label.
    again = await update_customer(db, customer.id, add_phones=["02155556666"])
    assert again is not None and again.phones[-1].label == "office"


async def test_account_of_another_customer_is_refused_and_nothing_changes(db: Database) -> None:
    first = await create_customer(db, name="王小明", accounts=["A-1"])
    second = await create_customer(db, name="李四", accounts=["B-1"])
    with pytest.raises(CustomerFieldError, match="'A-1' already belongs") as caught:
        await update_customer(db, second.id, name="李四四", add_accounts=["B-2", "A-1"])
    assert caught.value.field == "add_accounts"
    assert await get_customer(db, second.id) == second
    assert await get_customer(db, first.id) == first


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "  "}, "name"),
        ({"grade": "very important"}, "grade"),
        ({"grade": ""}, "grade"),
        ({"preferred_channel": "fax"}, "preferred_channel"),
        ({"language": "中文"}, "language"),
        ({"value": Decimal("1e14")}, "value"),
        ({"value": Decimal("NaN")}, "value"),
        ({"phones": ["unknown"]}, "phones"),
        ({"add_phones": ["123456789012345678901"]}, "add_phones"),
        ({"accounts": [" "]}, "accounts"),
    ],
)
async def test_update_refuses_bad_fields_by_name(
    db: Database, change: dict[str, object], field: str
) -> None:
    customer = await create_customer(db, name="王小明", phones=["13800138000"])
    with pytest.raises(CustomerFieldError) as caught:
        await update_customer(db, customer.id, **change)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert await get_customer(db, customer.id) == customer


async def test_update_of_an_unknown_customer_is_none(db: Database) -> None:
    assert await update_customer(db, 424242, name="nobody") is None


async def test_search_by_name_any_case_and_script(db: Database) -> None:
    alice = await create_customer(db, name="Alice Wong", phones=["13800000001"])
    wang = await create_customer(db, name="王小明", phones=["13800000002"])
    xiaoming = await create_customer(db, name="小明", phones=["13800000003"])
    wang_li = await create_customer(db, name="王立", phones=["13800000004"])
    assert [c.id for c in await search_customers(db, name="ALICE")] == [alice.id]
    assert [c.id for c in await search_customers(db, name="wong")] == [alice.id]
    # Exact name first, then names starting with the text, then the others.
    assert [c.id for c in await search_customers(db, name="小明")] == [xiaoming.id, wang.id]
    assert {c.id for c in await search_customers(db, name="王")} == {wang.id, wang_li.id}
    assert await search_customers(db, name="赵") == []


async def test_search_text_is_literal_not_a_pattern(db: Database) -> None:
    percent = await create_customer(db, name="100% Tea Ltd", phones=["13800000001"])
    await create_customer(db, name="Tea House", phones=["13800000002"])
    assert [c.id for c in await search_customers(db, name="100%")] == [percent.id]
    assert await search_customers(db, name="_ea") == []


async def test_search_by_number_account_and_both(db: Database) -> None:
    husband = await create_customer(db, name="张伟", phones=["+86 10 8888 9999"], accounts=["Z-1"])
    wife = await create_customer(db, name="刘芳", phones=["010 8888 9999"], accounts=["L-1"])
    assert [c.id for c in await search_customers(db, phone="01088889999")] == [wife.id, husband.id]
    assert [c.id for c in await search_customers(db, phone="+86 10 8888 9999")] == [
        husband.id,
        wife.id,
    ]
    assert [c.id for c in await search_customers(db, account=" L-1 ")] == [wife.id]
    assert [c.id for c in await search_customers(db, phone="01088889999", name="张")] == [
        husband.id
    ]
    assert await search_customers(db, phone="01088889999", account="nope") == []
    with pytest.raises(CustomerFieldError) as caught:
        await search_customers(db, phone="anonymous")
    assert caught.value.field == "phone"


async def test_search_limit_and_stable_order(db: Database) -> None:
    made = [await create_customer(db, name="陈", phones=[f"1380000000{i}"]) for i in range(5)]
    first = await search_customers(db, name="陈", limit=3)
    assert [c.id for c in first] == [c.id for c in made[:3]]
    assert [c.id for c in await search_customers(db, name="陈", limit=3)] == [c.id for c in first]
    with pytest.raises(CustomerFieldError):
        await search_customers(db, limit=0)
