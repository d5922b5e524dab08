"""`ctiserver customers import FILE` against real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctiserver.cli import main
from ctiserver.store.customers import search_customers
from ctiserver.store.database import Database
from tests.conftest import truncate_all


async def _empty(dsn: str) -> None:
    async with await Database.open(dsn) as db:
        await truncate_all(db)


async def _names(dsn: str, phone: str) -> list[str]:
    async with await Database.open(dsn) as db:
        return [c.name for c in await search_customers(db, phone=phone)]


@pytest.fixture
def dsn(pg_dsn: str, no_server_config: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("CTISERVER_DATABASE_DSN", pg_dsn)
    asyncio.run(_empty(pg_dsn))
    yield pg_dsn


def test_import_reports_each_refused_line_and_keeps_the_good_ones(
    dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "客户.csv"
    csv.write_text(
        "\ufeffname,phones,accounts,grade,notes\n"
        "张三,13800138000,6222020200112233,vip,老客户\n"
        ",13900139000,,standard,\n",
        encoding="utf-8",
    )
    assert main(["customers", "import", str(csv)]) == 1
    out = capsys.readouterr()
    assert f"{csv}: 1 created, 0 updated, 0 unchanged, 1 skipped" in out.out
    assert f"{csv}:3: " in out.err
    assert asyncio.run(_names(dsn, "13800138000")) == ["张三"]

    # The same file again: the good line is known now, nothing is duplicated.
    assert main(["customers", "import", str(csv)]) == 1
    assert "0 created" in capsys.readouterr().out
    assert asyncio.run(_names(dsn, "13800138000")) == ["张三"]


def test_a_file_that_is_not_utf8_imports_nothing(
    dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "gbk.csv"
    csv.write_bytes("name,phones\n张三,13800138000\n".encode("gbk"))
    assert main(["customers", "import", str(csv)]) == 1
    assert f"ctiserver: {csv}: " in capsys.readouterr().err
    assert asyncio.run(_names(dsn, "13800138000")) == []
