"""Customers, their phone numbers and account numbers: create and look up (SQL only).

Caller-id matching: numbers are stored as digits (`normalize_phone`), and
looked up by their last ten digits, which agree between the forms a number
arrives in (+86 10 1234 5678, 0086..., 010 1234 5678; +1 415..., 1415...).
A lookup returns every customer whose number matches (a shared home line has
several), exact digit matches first.

Field rules (`check_*`) live here so that the REST API, the CSV import and
direct callers refuse the same input with the same message; a refusal is a
CustomerFieldError (a ValueError) naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Final

import asyncpg

from ctiserver.store.database import Connection, Database, in_transaction


@dataclass(frozen=True, slots=True)
class CustomerPhone:
    number: str  # as entered, for display
    digits: str  # normalised, what lookups compare
    label: str = ""  # mobile, home, work...


@dataclass(frozen=True, slots=True)
class CustomerAccount:
    number: str
    kind: str = ""  # card, brokerage, contract...


@dataclass(frozen=True, slots=True)
class Customer:
    id: int
    name: str
    grade: str
    value: Decimal | None
    churn_risk: Decimal | None
    language: str | None
    preferred_channel: str | None
    account_manager_id: int | None
    notes: str
    phones: tuple[CustomerPhone, ...]
    accounts: tuple[CustomerAccount, ...]
    created_at: datetime
    updated_at: datetime


def normalize_phone(raw: str) -> str:
    """The digits of a phone number, without its international prefix (+ or 00).

    '+86 138-0013-8000' -> '8613800138000'; '0086 138...' -> the same;
    '(010) 1234 5678' -> '01012345678'. No digits (anonymous, unknown) -> ''.
    """
    text = raw.strip()
    digits = "".join(ch for ch in text if "0" <= ch <= "9")
    if not text.startswith("+") and digits.startswith("00"):
        digits = digits[2:]
    return digits


# The contact_channel domain of migration 0001.
CHANNELS: Final = frozenset({"phone", "callback", "email", "sms", "chat", "web", "social", "video"})
NAME_MAX = 200
NOTES_MAX = 10_000
GRADE_MAX = 64
# customers.value is numeric(16, 2): at most 14 digits before the point.
VALUE_LIMIT: Final = Decimal(10) ** 14
# A BCP 47 tag in practice: a 2-8 letter language, then subtags (zh-CN, yue, zh-Hant-HK).
_LANGUAGE = re.compile(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*")
# customer_phones.digits accepts 2 to 20 digits.
PHONE_DIGITS_MAX = 20


class CustomerFieldError(ValueError):
    """A customer field was refused; `field` names it (name, grade, phones...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_name(name: str) -> str:
    """The name trimmed; refused when empty or longer than NAME_MAX."""
    name = name.strip()
    if not name:
        raise CustomerFieldError("name", "customer name must not be empty")
    if len(name) > NAME_MAX:
        raise CustomerFieldError("name", f"customer name is longer than {NAME_MAX} characters")
    return name


def check_grade(grade: str) -> str:
    """A grade is one word (routing maps it to a priority): no spaces, at most GRADE_MAX."""
    grade = grade.strip()
    if not grade:
        raise CustomerFieldError("grade", "grade must not be empty")
    if len(grade) > GRADE_MAX or any(ch.isspace() or not ch.isprintable() for ch in grade):
        raise CustomerFieldError(
            "grade", f"grade {grade!r} must be one word of at most {GRADE_MAX} characters"
        )
    return grade


def check_value(value: Decimal | None) -> Decimal | None:
    if value is not None and (not value.is_finite() or abs(value) >= VALUE_LIMIT):
        raise CustomerFieldError("value", f"value {value} is not a number below {VALUE_LIMIT}")
    return value


def check_language(language: str | None) -> str | None:
    """A BCP 47 language tag (zh-CN, yue, en), or None; blank counts as None."""
    if language is None or not language.strip():
        return None
    language = language.strip()
    if _LANGUAGE.fullmatch(language) is None:
        raise CustomerFieldError(
            "language", f"language {language!r} is not a language tag such as zh-CN or en"
        )
    return language


def check_channel(channel: str | None, field: str = "preferred_channel") -> str | None:
    """One of CHANNELS, or None; blank counts as None."""
    if channel is None or not channel.strip():
        return None
    channel = channel.strip()
    if channel not in CHANNELS:
        raise CustomerFieldError(
            field, f"channel {channel!r} is not one of {', '.join(sorted(CHANNELS))}"
        )
    return channel


def check_notes(notes: str) -> str:
    if len(notes) > NOTES_MAX:
        raise CustomerFieldError("notes", f"notes are longer than {NOTES_MAX} characters")
    return notes


def check_phones(
    phones: Iterable[str | tuple[str, str]], field: str = "phones"
) -> dict[str, tuple[str, str]]:
    """digits -> (number as entered, label); a number given twice counts once.

    Refused: a number with fewer than two digits (anonymous, unknown) or more
    than PHONE_DIGITS_MAX."""
    rows: dict[str, tuple[str, str]] = {}
    for number, label in map(_pair, phones):
        digits = normalize_phone(number)
        if len(digits) < 2:
            raise CustomerFieldError(
                field, f"phone number {number!r} has no digits to match a caller id on"
            )
        if len(digits) > PHONE_DIGITS_MAX:
            raise CustomerFieldError(
                field, f"phone number {number!r} has more than {PHONE_DIGITS_MAX} digits"
            )
        rows.setdefault(digits, (number.strip(), label))
    return rows


def _account_rows(
    accounts: Iterable[str | tuple[str, str]], field: str = "accounts"
) -> dict[str, str]:
    """account number (trimmed) -> kind; refuses an empty number."""
    rows: dict[str, str] = {}
    for number, kind in map(_pair, accounts):
        if not number.strip():
            raise CustomerFieldError(field, "account number must not be empty")
        rows.setdefault(number.strip(), kind)
    return rows


_SELECT = """
SELECT c.id, c.name, c.grade, c.value, c.churn_risk, c.language, c.preferred_channel,
       c.account_manager_id, c.notes, c.created_at, c.updated_at,
       ph.numbers AS phone_numbers, ph.digits AS phone_digits, ph.labels AS phone_labels,
       ac.numbers AS account_numbers, ac.kinds AS account_kinds
FROM customers c
CROSS JOIN LATERAL (
    SELECT array_agg(p.number ORDER BY p.id) AS numbers,
           array_agg(p.digits ORDER BY p.id) AS digits,
           array_agg(p.label ORDER BY p.id) AS labels
    FROM customer_phones p WHERE p.customer_id = c.id
) ph
CROSS JOIN LATERAL (
    SELECT array_agg(a.account_number ORDER BY a.id) AS numbers,
           array_agg(a.kind ORDER BY a.id) AS kinds
    FROM customer_accounts a WHERE a.customer_id = c.id
) ac
"""

# The match key is the last ten digits, as customer_phones.match_key is built.
_BY_PHONE = f"""
WITH matched AS (
    SELECT customer_id, bool_or(digits = $1) AS exact
    FROM customer_phones
    WHERE match_key = right($1::text, 10)
    GROUP BY customer_id
)
{_SELECT}
JOIN matched m ON m.customer_id = c.id
ORDER BY m.exact DESC, c.id
"""


def _customer(row: Any) -> Customer:
    phones = zip(
        row["phone_numbers"] or (),
        row["phone_digits"] or (),
        row["phone_labels"] or (),
        strict=True,
    )
    accounts = zip(row["account_numbers"] or (), row["account_kinds"] or (), strict=True)
    return Customer(
        id=row["id"],
        name=row["name"],
        grade=row["grade"],
        value=row["value"],
        churn_risk=row["churn_risk"],
        language=row["language"],
        preferred_channel=row["preferred_channel"],
        account_manager_id=row["account_manager_id"],
        notes=row["notes"],
        phones=tuple(CustomerPhone(n, d, label) for n, d, label in phones),
        accounts=tuple(CustomerAccount(n, k) for n, k in accounts),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _pair(item: str | tuple[str, str]) -> tuple[str, str]:
    return (item, "") if isinstance(item, str) else item


async def create_customer(
    db: Database | Connection,
    *,
    name: str,
    phones: Iterable[str | tuple[str, str]] = (),
    accounts: Iterable[str | tuple[str, str]] = (),
    grade: str = "standard",
    value: Decimal | None = None,
    churn_risk: Decimal | None = None,
    language: str | None = None,
    preferred_channel: str | None = None,
    account_manager_id: int | None = None,
    notes: str = "",
) -> Customer:
    """Create a customer with its phones ('number' or ('number', 'label')) and
    accounts ('number' or ('number', 'kind')), in one transaction.

    CustomerFieldError (a ValueError) for a field the check_* rules refuse,
    a phone with no digits, or an account number that already belongs to a
    customer.
    """
    name = check_name(name)
    grade = check_grade(grade)
    value = check_value(value)
    language = check_language(language)
    preferred_channel = check_channel(preferred_channel)
    notes = check_notes(notes)
    phone_rows = check_phones(phones)
    account_rows = list(_account_rows(accounts).items())

    async with in_transaction(db) as conn:
        customer_id = await conn.fetchval(
            """
            INSERT INTO customers (name, grade, value, churn_risk, language, preferred_channel,
                                   account_manager_id, notes)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id
            """,
            name,
            grade,
            value,
            churn_risk,
            language,
            preferred_channel,
            account_manager_id,
            notes,
        )
        if phone_rows:
            await conn.executemany(
                "INSERT INTO customer_phones (customer_id, number, digits, label) "
                "VALUES ($1, $2, $3, $4)",
                [(customer_id, n, d, label) for d, (n, label) in phone_rows.items()],
            )
        for number, kind in account_rows:
            try:
                await conn.execute(
                    "INSERT INTO customer_accounts (customer_id, account_number, kind) "
                    "VALUES ($1, $2, $3)",
                    customer_id,
                    number,
                    kind,
                )
            except asyncpg.UniqueViolationError as exc:
                raise CustomerFieldError(
                    "accounts", f"account number {number!r} already belongs to a customer"
                ) from exc
        row = await conn.fetchrow(_SELECT + " WHERE c.id = $1", customer_id)
    return _customer(row)


async def add_customer_phone(
    db: Database | Connection, customer_id: int, number: str, label: str = ""
) -> CustomerPhone:
    """Add a number to a customer (or relabel it if the customer has it already)."""
    [digits] = check_phones([number], "phone")
    row = await db.fetchrow(
        """
        INSERT INTO customer_phones (customer_id, number, digits, label) VALUES ($1, $2, $3, $4)
        ON CONFLICT (customer_id, digits) DO UPDATE SET label = EXCLUDED.label
        RETURNING number, digits, label
        """,
        customer_id,
        number.strip(),
        digits,
        label,
    )
    return CustomerPhone(row["number"], row["digits"], row["label"])


async def get_customer(db: Database | Connection, customer_id: int) -> Customer | None:
    row = await db.fetchrow(_SELECT + " WHERE c.id = $1", customer_id)
    return None if row is None else _customer(row)


async def find_customers_by_phone(db: Database | Connection, number: str) -> list[Customer]:
    """Customers with a phone matching caller id `number`; exact digit matches first.

    A number without digits (anonymous caller) matches nobody.
    """
    digits = normalize_phone(number)
    if len(digits) < 2:
        return []
    return [_customer(row) for row in await db.fetch(_BY_PHONE, digits)]


async def find_customer_by_account(
    db: Database | Connection, account_number: str
) -> Customer | None:
    """The customer holding `account_number` (surrounding spaces ignored), if any."""
    row = await db.fetchrow(
        _SELECT
        + " WHERE c.id = (SELECT customer_id FROM customer_accounts WHERE account_number = $1)",
        account_number.strip(),
    )
    return None if row is None else _customer(row)


async def set_account_balance(
    db: Database | Connection, account_number: str, balance: Decimal, at: datetime
) -> bool:
    """Record an account's balance as of `at`; False when no such account exists."""
    status = await db.execute(
        "UPDATE customer_accounts SET balance = $2, balance_at = $3 WHERE account_number = $1",
        account_number.strip(),
        balance,
        at,
    )
    return str(status).endswith(" 1")


async def account_balance(db: Database | Connection, account_number: str) -> Decimal | None:
    """The last reported balance of an account; None when unknown or no such account."""
    value = await db.fetchval(
        "SELECT balance FROM customer_accounts WHERE account_number = $1",
        account_number.strip(),
    )
    return None if value is None else Decimal(value)


class Unset(Enum):
    UNSET = "unset"


# "Leave this field as it is" for the update functions, where None means "clear it".
UNSET: Final = Unset.UNSET

_UPSERT_PHONE = """
INSERT INTO customer_phones (customer_id, number, digits, label) VALUES ($1, $2, $3, $4)
ON CONFLICT (customer_id, digits) DO UPDATE SET number = EXCLUDED.number, label = {label}
"""
# An account of another customer makes the WHERE false: no row comes back.
_UPSERT_ACCOUNT = """
INSERT INTO customer_accounts (customer_id, account_number, kind) VALUES ($1, $2, $3)
ON CONFLICT (account_number) DO UPDATE SET kind = {kind}
    WHERE customer_accounts.customer_id = EXCLUDED.customer_id
RETURNING id
"""
# Replacing sets labels and kinds as given; adding keeps them unless one is given.
_EXACT_LABEL = "EXCLUDED.label"
_KEEP_LABEL = "CASE WHEN EXCLUDED.label = '' THEN customer_phones.label ELSE EXCLUDED.label END"
_EXACT_KIND = "EXCLUDED.kind"
_KEEP_KIND = "CASE WHEN EXCLUDED.kind = '' THEN customer_accounts.kind ELSE EXCLUDED.kind END"


async def update_customer(
    db: Database | Connection,
    customer_id: int,
    *,
    name: str | Unset = UNSET,
    grade: str | Unset = UNSET,
    value: Decimal | Unset | None = UNSET,
    language: str | Unset | None = UNSET,
    preferred_channel: str | Unset | None = UNSET,
    notes: str | Unset = UNSET,
    phones: Iterable[str | tuple[str, str]] | None = None,
    add_phones: Iterable[str | tuple[str, str]] = (),
    accounts: Iterable[str | tuple[str, str]] | None = None,
    add_accounts: Iterable[str | tuple[str, str]] = (),
) -> Customer | None:
    """Change the fields given (UNSET: keep; None: clear), in one transaction.

    `phones`/`accounts` replace the customer's list (a number kept keeps its
    row, so an account keeps its balance); `add_phones`/`add_accounts` add to
    it, a number the customer has already is relabelled only when a label is
    given. None when there is no such customer; CustomerFieldError for a
    refused field or an account number of another customer.
    """
    columns: dict[str, Any] = {}
    if not isinstance(name, Unset):
        columns["name"] = check_name(name)
    if not isinstance(grade, Unset):
        columns["grade"] = check_grade(grade)
    if not isinstance(value, Unset):
        columns["value"] = check_value(value)
    if not isinstance(language, Unset):
        columns["language"] = check_language(language)
    if not isinstance(preferred_channel, Unset):
        columns["preferred_channel"] = check_channel(preferred_channel)
    if not isinstance(notes, Unset):
        columns["notes"] = check_notes(notes)
    new_phones = None if phones is None else check_phones(phones)
    more_phones = check_phones(add_phones, "add_phones")
    new_accounts = None if accounts is None else _account_rows(accounts)
    more_accounts = _account_rows(add_accounts, "add_accounts")

    # Always an UPDATE, so updated_at moves (and the row is locked) even when
    # only phones or accounts change.
    assignments = [f"{column} = ${n}" for n, column in enumerate(columns, start=2)]
    async with in_transaction(db) as conn:
        found = await conn.fetchval(
            f"UPDATE customers SET {', '.join(assignments) or 'updated_at = now()'}"
            " WHERE id = $1 RETURNING id",
            customer_id,
            *columns.values(),
        )
        if found is None:
            return None
        if new_phones is not None:
            await conn.execute(
                "DELETE FROM customer_phones WHERE customer_id = $1 AND digits <> ALL($2::text[])",
                customer_id,
                list(new_phones),
            )
        for rows, label in ((new_phones or {}, _EXACT_LABEL), (more_phones, _KEEP_LABEL)):
            if rows:
                await conn.executemany(
                    _UPSERT_PHONE.format(label=label),
                    [(customer_id, n, d, lbl) for d, (n, lbl) in rows.items()],
                )
        if new_accounts is not None:
            await conn.execute(
                "DELETE FROM customer_accounts"
                " WHERE customer_id = $1 AND account_number <> ALL($2::text[])",
                customer_id,
                list(new_accounts),
            )
        for field, accounts_given, kind_rule in (
            ("accounts", new_accounts or {}, _EXACT_KIND),
            ("add_accounts", more_accounts, _KEEP_KIND),
        ):
            for number, kind in accounts_given.items():
                upsert = _UPSERT_ACCOUNT.format(kind=kind_rule)
                if await conn.fetchval(upsert, customer_id, number, kind) is None:
                    raise CustomerFieldError(
                        field, f"account number {number!r} already belongs to another customer"
                    )
        row = await conn.fetchrow(_SELECT + " WHERE c.id = $1", customer_id)
    return _customer(row)


SEARCH_LIMIT_MAX = 500


async def search_customers(
    db: Database | Connection,
    *,
    name: str | None = None,
    phone: str | None = None,
    account: str | None = None,
    limit: int = 20,
) -> list[Customer]:
    """Customers matching every criterion given, at most `limit`, in a stable order.

    `name`: case-insensitive substring (any script; no wildcards, so % and _
    match themselves); `phone`: the caller-id rule of find_customers_by_phone;
    `account`: an exact account number. With none given, every customer.
    Order: exact phone digits first, then exact name, then names starting with
    the text, then by name and id. CustomerFieldError for a phone with no
    digits or a limit outside 1..SEARCH_LIMIT_MAX.
    """
    if not 1 <= limit <= SEARCH_LIMIT_MAX:
        raise CustomerFieldError("limit", f"limit must be between 1 and {SEARCH_LIMIT_MAX}")
    args: list[Any] = []
    where: list[str] = []
    order: list[str] = []

    def arg(item: Any) -> str:
        args.append(item)
        return f"${len(args)}"

    if phone is not None:
        digits = normalize_phone(phone)
        if len(digits) < 2:
            raise CustomerFieldError("phone", f"phone number {phone!r} has no digits")
        p = arg(digits)
        where.append(
            "c.id IN (SELECT customer_id FROM customer_phones"
            f" WHERE match_key = right({p}::text, 10))"
        )
        order.append(
            "EXISTS (SELECT 1 FROM customer_phones x"
            f" WHERE x.customer_id = c.id AND x.digits = {p}) DESC"
        )
    if account is not None:
        a = arg(account.strip())
        where.append(
            f"c.id IN (SELECT customer_id FROM customer_accounts WHERE account_number = {a})"
        )
    if name is not None:
        # strpos rather than ILIKE: the text is matched as is, no escaping needed.
        n = arg(name.strip().lower())
        where.append(f"strpos(lower(c.name), {n}) > 0")
        order += [f"lower(c.name) = {n} DESC", f"strpos(lower(c.name), {n}) = 1 DESC"]
    order += ["c.name", "c.id"]
    query = (
        _SELECT
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY "
        + ", ".join(order)
        + f" LIMIT {arg(limit)}"
    )
    return [_customer(row) for row in await db.fetch(query, *args)]


async def customer_exists(db: Database | Connection, customer_id: int) -> bool:
    return bool(await db.fetchval("SELECT 1 FROM customers WHERE id = $1", customer_id))
