"""Customers, their phone numbers and account numbers: create and look up (SQL only).

Caller-id matching: numbers are stored as digits (`normalize_phone`), and
looked up by their last ten digits, which agree between the forms a number
arrives in (+86 10 1234 5678, 0086..., 010 1234 5678; +1 415..., 1415...).
A lookup returns every customer whose number matches (a shared home line has
several), exact digit matches first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

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

    ValueError for an empty name, a phone with no digits, or an account number
    that already belongs to a customer.
    """
    if not name.strip():
        raise ValueError("customer name must not be empty")
    phone_rows: dict[str, tuple[str, str]] = {}
    for number, label in map(_pair, phones):
        digits = normalize_phone(number)
        if len(digits) < 2:
            raise ValueError(f"phone number {number!r} has no digits to match a caller id on")
        phone_rows.setdefault(digits, (number.strip(), label))
    account_rows = [(number.strip(), kind) for number, kind in map(_pair, accounts)]
    for number, _ in account_rows:
        if not number:
            raise ValueError("account number must not be empty")

    async with in_transaction(db) as conn:
        customer_id = await conn.fetchval(
            """
            INSERT INTO customers (name, grade, value, churn_risk, language, preferred_channel,
                                   account_manager_id, notes)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id
            """,
            name.strip(),
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
                raise ValueError(
                    f"account number {number!r} already belongs to a customer"
                ) from exc
        row = await conn.fetchrow(_SELECT + " WHERE c.id = $1", customer_id)
    return _customer(row)


async def add_customer_phone(
    db: Database | Connection, customer_id: int, number: str, label: str = ""
) -> CustomerPhone:
    """Add a number to a customer (or relabel it if the customer has it already)."""
    digits = normalize_phone(number)
    if len(digits) < 2:
        raise ValueError(f"phone number {number!r} has no digits to match a caller id on")
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
