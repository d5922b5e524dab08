"""CSV import: BOM and Chinese text, upsert by account then phone + name, bad lines reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctiserver.store.customer_import import ImportFileError, import_customers_csv
from ctiserver.store.customers import (
    create_customer,
    find_customer_by_account,
    search_customers,
)
from ctiserver.store.database import Database

GOOD = (
    "name,phones,accounts,grade,value,language,preferred_channel,notes\r\n"
    "王小明,+86 138 0013 8000;010-1234-5678,6222-0001,vip,128000.50,zh-CN,phone,客户很满意\r\n"
    '李四,13900139000,,standard,"1,234.50",yue,sms,"多行备注\r\n第二行"\r\n'
    "Alice Wong,,A-77,gold,,en,,\r\n"
)


async def test_utf8_with_bom_creates_then_reimport_changes_nothing(db: Database) -> None:
    data = "\ufeff".encode() + GOOD.encode("utf-8")
    report = await import_customers_csv(db, data)
    assert (report.created, report.updated, report.unchanged, report.skipped) == (3, 0, 0, [])
    [wang] = await search_customers(db, name="小明")
    assert (wang.grade, str(wang.value), wang.language, wang.preferred_channel) == (
        "vip",
        "128000.50",
        "zh-CN",
        "phone",
    )
    assert [p.digits for p in wang.phones] == ["8613800138000", "01012345678"]
    assert [a.number for a in wang.accounts] == ["6222-0001"]
    assert wang.notes == "客户很满意"
    [li] = await search_customers(db, phone="13900139000")
    assert (li.notes, str(li.value)) == ("多行备注\r\n第二行", "1234.50")

    again = await import_customers_csv(db, data)
    assert (again.created, again.updated, again.unchanged, again.skipped) == (0, 0, 3, [])
    assert await db.fetchval("SELECT count(*) FROM customers") == 3


async def test_known_customers_are_updated_by_account_then_by_phone_and_name(
    db: Database,
) -> None:
    by_account = await create_customer(db, name="王小明", accounts=["A-1"], grade="standard")
    by_phone = await create_customer(db, name="李四", phones=["13900139000"], notes="旧备注")
    text = (
        "accounts,name,grade,phones,notes\n"
        "A-1,王晓明,vip,13800138000,\n"  # the account decides: name corrected, phone added
        "A-2,李四,,139 0013 9000,新备注\n"  # same number and name: the account is added
        ",刘芳,,13900139000,\n"  # same number, another name: a shared line, a new customer
    )
    report = await import_customers_csv(db, text)
    assert (report.created, report.updated, report.unchanged, report.skipped) == (1, 2, 0, [])
    first = await find_customer_by_account(db, "A-1")
    assert first is not None and first.id == by_account.id
    assert (first.name, first.grade, [p.digits for p in first.phones]) == (
        "王晓明",
        "vip",
        ["13800138000"],
    )
    second = await find_customer_by_account(db, "A-2")
    assert second is not None and second.id == by_phone.id
    # An empty cell keeps what the customer has.
    assert (second.notes, second.grade) == ("新备注", "standard")
    assert [c.name for c in await search_customers(db, phone="13900139000")] == ["刘芳", "李四"]


async def test_bad_lines_are_reported_and_good_ones_kept(db: Database) -> None:
    await create_customer(db, name="甲", accounts=["X-1"])
    await create_customer(db, name="乙", accounts=["Y-1"])
    text = (
        "name,phones,accounts,grade,value,language,preferred_channel\n"
        "好一,13800000001,,,,,\n"  # 2
        ",13800000002,,,,,\n"  # 3: no name
        "坏二,unknown,,,,,\n"  # 4: phone without digits
        "坏三,13800000003,,very important,,,\n"  # 5: grade with a space
        "坏四,13800000004,,,lots,,\n"  # 6: value
        "坏五,13800000005,,,,,fax\n"  # 7: channel
        "坏六,,,,,,\n"  # 8: nothing to find them by
        "坏七,,X-1;Y-1,,,,\n"  # 9: accounts of two customers
        "坏八,13800000006,,,,,,extra\n"  # 10: too many cells
        "\n"  # 11: blank, ignored
        "好二,13800000007,,,,\n"  # 12: a cell short is fine
    )
    report = await import_customers_csv(db, text)
    assert (report.created, report.updated) == (2, 0)
    assert [s.line for s in report.skipped] == [3, 4, 5, 6, 7, 8, 9, 10]
    reasons = {s.line: s.reason for s in report.skipped}
    assert reasons[3].startswith("name:")
    assert reasons[4].startswith("phones:") and "unknown" in reasons[4]
    assert reasons[5].startswith("grade:")
    assert reasons[6].startswith("value:")
    assert reasons[7].startswith("preferred_channel:")
    assert "no phone or account" in reasons[8]
    assert "different customers" in reasons[9]
    assert "8 cells" in reasons[10]
    assert sorted(c.name for c in await search_customers(db, name="好")) == ["好一", "好二"]
    assert report.as_dict()["skipped"] == 8
    assert report.as_dict()["errors"][0] == {"line": 3, "reason": reasons[3]}


async def test_a_line_the_database_refuses_leaves_the_rest_of_its_batch(db: Database) -> None:
    # A rule the import cannot know of (a site's own constraint) refuses one line
    # mid-batch: its savepoint is undone, the batch is committed without it.
    await db.execute("ALTER TABLE customers ADD CONSTRAINT test_refused CHECK (name <> '拒绝')")
    try:
        rows = [f"客户{i},1380000{i:04d},ACC-{i}" for i in range(10)]
        rows[4] = "拒绝,13800000004,ACC-4"
        text = "name,phones,accounts\n" + "\n".join(rows) + "\n"
        report = await import_customers_csv(db, text, batch_size=3)
    finally:
        await db.execute("ALTER TABLE customers DROP CONSTRAINT test_refused")
    assert [s.line for s in report.skipped] == [6]
    assert report.skipped[0].reason.startswith("refused by the database:")
    assert report.created == 9
    assert await db.fetchval("SELECT count(*) FROM customers") == 9
    assert await find_customer_by_account(db, "ACC-4") is None
    assert await db.fetchval("SELECT count(*) FROM customer_phones") == 9


async def test_many_lines_in_batches(db: Database) -> None:
    text = "name,phones,accounts\n" + "".join(
        f"客户{i},1390000{i:04d},B-{i}\n" for i in range(1200)
    )
    report = await import_customers_csv(db, text, batch_size=250)
    assert (report.created, report.skipped) == (1200, [])
    assert await db.fetchval("SELECT count(*) FROM customer_accounts") == 1200


async def test_a_path_is_read_as_a_file(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_bytes(("\ufeff" + GOOD).encode("utf-8"))
    assert (await import_customers_csv(db, path)).created == 3
    assert (await import_customers_csv(db, str(path))).unchanged == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("name,phones\n张三,138\n".encode("gbk"), "line 2: the file is not UTF-8"),
        (b"", "empty"),
        (b"name,phone\nx,1\n", "unknown column(s) 'phone'"),
        (b"phones,accounts\n1,2\n", "no 'name' column"),
        (b"name,Name\nx,y\n", "given twice"),
    ],
)
async def test_a_file_that_cannot_be_read_imports_nothing(
    db: Database, data: bytes, message: str
) -> None:
    with pytest.raises(ImportFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        await import_customers_csv(db, data)
    assert await db.fetchval("SELECT count(*) FROM customers") == 0
