"""Import customers from a CSV file: create the new ones, update the known ones.

The file is UTF-8 (a byte-order mark, as Excel writes, is fine) with a header
row naming some of these columns, in any order (`name` is required):

    name, phones, accounts, grade, value, language, preferred_channel, notes

`phones` and `accounts` hold several numbers separated by `;`.

A line is the customer holding one of its account numbers, else the customer
with one of its phone numbers (same digits) and exactly its name, else a new
customer. A known customer gets the line's non-empty cells and its phones and
accounts added (nothing is removed), so importing the same file twice
changes nothing the second time. A line with neither a phone nor an account
is refused: nothing would find that customer again, nor a re-import.

Every refused line is reported with its line number and reason and the
others are imported all the same. Lines are written in batches, each batch in
one transaction and each line in a savepoint of it; if the database fails
midway, the batches before are kept and re-running the import completes it.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import asyncpg

from ctiserver.store.customers import (
    Customer,
    CustomerFieldError,
    check_channel,
    check_grade,
    check_language,
    check_name,
    check_notes,
    check_phones,
    check_value,
    create_customer,
    get_customer,
    normalize_phone,
    update_customer,
)
from ctiserver.store.database import Connection, Database, in_transaction

COLUMNS = ("name", "phones", "accounts", "grade", "value", "language", "preferred_channel", "notes")
BATCH_SIZE = 500
SEPARATOR = ";"


class ImportFileError(ValueError):
    """The file as a whole cannot be imported (not UTF-8, bad header); nothing was written."""


@dataclass(frozen=True, slots=True)
class SkippedLine:
    line: int  # in the file, counting the header as line 1
    reason: str


@dataclass(slots=True)
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0  # known customers the line had nothing new for
    skipped: list[SkippedLine] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "skipped": len(self.skipped),
            "errors": [{"line": s.line, "reason": s.reason} for s in self.skipped],
        }


@dataclass(frozen=True, slots=True)
class _Line:
    """A line checked by the same rules as the API; None: the cell was empty."""

    line: int
    name: str
    phones: tuple[str, ...]
    digits: tuple[str, ...]
    accounts: tuple[str, ...]
    grade: str | None
    value: Decimal | None
    language: str | None
    preferred_channel: str | None
    notes: str | None


class _Refused(Exception):
    pass


async def import_customers_csv(
    db: Database | Connection, text_or_path: str | bytes | Path, *, batch_size: int = BATCH_SIZE
) -> ImportReport:
    """Import a CSV of customers (see the module docstring) and report what happened.

    `text_or_path`: a Path (or a one-line str naming an existing file), the
    file's bytes, or its text. ImportFileError when the file cannot be read
    as a whole; database errors propagate (the batches before stay written).
    """
    text = await _read(text_or_path)
    report = ImportReport()
    lines: list[_Line] = []
    for number, cells in _rows(text, report):
        try:
            lines.append(_check(number, cells))
        except _Refused as exc:
            report.skipped.append(SkippedLine(number, str(exc)))
    for start in range(0, len(lines), batch_size):
        async with in_transaction(db) as conn:
            for line in lines[start : start + batch_size]:
                try:
                    await _write(conn, line, report)
                except _Refused as exc:
                    report.skipped.append(SkippedLine(line.line, str(exc)))
    report.skipped.sort(key=lambda s: s.line)
    return report


async def _read(source: str | bytes | Path) -> str:
    if (
        isinstance(source, str)
        and "\n" not in source
        and await asyncio.to_thread(Path(source).is_file)
    ):
        source = Path(source)
    if isinstance(source, Path):
        source = await asyncio.to_thread(source.read_bytes)
    if isinstance(source, str):
        return source.removeprefix("\ufeff")
    try:
        return source.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = source.count(b"\n", 0, exc.start) + 1
        raise ImportFileError(
            f"line {line}: the file is not UTF-8 text (save it as CSV UTF-8)"
        ) from exc


def _rows(text: str, report: ImportReport) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, {column: cell}) for each non-blank record after the header."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFileError("the file is empty: a header row is needed") from None
    except csv.Error as exc:
        raise ImportFileError(f"line 1: {exc}") from exc
    columns = [cell.strip().lower() for cell in header]
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise ImportFileError(
            f"line 1: unknown column(s) {', '.join(map(repr, unknown))}; "
            f"the columns are {', '.join(COLUMNS)}"
        )
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise ImportFileError(f"line 1: column(s) {', '.join(repeated)} given twice")
    if "name" not in columns:
        raise ImportFileError("line 1: the header has no 'name' column")
    end = reader.line_num
    while True:
        start = end + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # the reader carries on with the next line
            end = reader.line_num
            report.skipped.append(SkippedLine(start, f"unreadable CSV: {exc}"))
            continue
        end = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) > len(columns):
            report.skipped.append(
                SkippedLine(start, f"{len(cells)} cells but the header has {len(columns)}")
            )
            continue
        yield start, dict(zip(columns, cells, strict=False))


def _check(number: int, cells: dict[str, str]) -> _Line:
    def cell(column: str) -> str | None:
        text = cells.get(column, "").strip()
        return text or None

    def split(column: str) -> list[str]:
        return [part.strip() for part in cells.get(column, "").split(SEPARATOR) if part.strip()]

    try:
        phones = split("phones")
        digits = check_phones(phones)
        accounts = split("accounts")
        if not phones and not accounts:
            raise _Refused("no phone or account number to identify the customer by")
        grade = cell("grade")
        value_text = cell("value")
        notes = cells.get("notes")
        return _Line(
            line=number,
            name=check_name(cells.get("name", "")),
            phones=tuple(phones),
            digits=tuple(digits),
            accounts=tuple(dict.fromkeys(accounts)),
            grade=None if grade is None else check_grade(grade),
            value=None if value_text is None else check_value(_decimal(value_text)),
            language=check_language(cell("language")),
            preferred_channel=check_channel(cell("preferred_channel")),
            notes=check_notes(notes.strip()) if notes and notes.strip() else None,
        )
    except CustomerFieldError as exc:
        raise _Refused(f"{exc.field}: {exc}") from exc


def _decimal(text: str) -> Decimal:
    try:
        # Spreadsheets write thousands separators: 1,234.50.
        return Decimal(text.replace(",", ""))
    except InvalidOperation:
        raise CustomerFieldError("value", f"value {text!r} is not a number") from None


async def _match(conn: Connection, line: _Line) -> int | None:
    """The id of the customer the line is about, or None for a new one."""
    if line.accounts:
        owners = await conn.fetch(
            "SELECT DISTINCT customer_id FROM customer_accounts"
            " WHERE account_number = ANY($1::text[]) ORDER BY customer_id",
            list(line.accounts),
        )
        if len(owners) > 1:
            ids = ", ".join(str(r["customer_id"]) for r in owners)
            raise _Refused(f"accounts: the account numbers belong to different customers ({ids})")
        if owners:
            return int(owners[0]["customer_id"])
    if line.digits:
        same = await conn.fetch(
            "SELECT DISTINCT c.id FROM customers c JOIN customer_phones p ON p.customer_id = c.id"
            " WHERE p.digits = ANY($1::text[]) AND c.name = $2 ORDER BY c.id",
            list(line.digits),
            line.name,
        )
        if len(same) > 1:
            ids = ", ".join(str(r["id"]) for r in same)
            raise _Refused(f"phones: several customers named {line.name!r} have the number ({ids})")
        if same:
            return int(same[0]["id"])
    return None


def _changes(line: _Line, customer: Customer) -> dict[str, Any]:
    """The update_customer arguments for what the line adds to `customer`."""
    changes: dict[str, Any] = {}
    for name, new, old in (
        ("name", line.name, customer.name),
        ("grade", line.grade, customer.grade),
        ("value", line.value, customer.value),
        ("language", line.language, customer.language),
        ("preferred_channel", line.preferred_channel, customer.preferred_channel),
        ("notes", line.notes, customer.notes),
    ):
        if new is not None and new != old:
            changes[name] = new
    have_digits = {p.digits for p in customer.phones}
    new_phones = [p for p in line.phones if normalize_phone(p) not in have_digits]
    if new_phones:
        changes["add_phones"] = new_phones
    have_accounts = {a.number for a in customer.accounts}
    new_accounts = [a for a in line.accounts if a not in have_accounts]
    if new_accounts:
        changes["add_accounts"] = new_accounts
    return changes


async def _write(conn: Connection, line: _Line, report: ImportReport) -> None:
    try:
        customer_id = await _match(conn, line)
        if customer_id is None:
            await create_customer(
                conn,
                name=line.name,
                phones=line.phones,
                accounts=line.accounts,
                grade=line.grade or "standard",
                value=line.value,
                language=line.language,
                preferred_channel=line.preferred_channel,
                notes=line.notes or "",
            )
            report.created += 1
            return
        customer = await get_customer(conn, customer_id)
        changes = {} if customer is None else _changes(line, customer)
        if not changes:
            report.unchanged += 1
            return
        await update_customer(conn, customer_id, **changes)
        report.updated += 1
    # create/update run in a savepoint of their own: a refusal undoes only this line.
    except CustomerFieldError as exc:
        raise _Refused(f"{exc.field}: {exc}") from exc
    except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as exc:
        # What the checks above did not foresee (a constraint added by the site, a race).
        raise _Refused(f"refused by the database: {exc}") from exc
