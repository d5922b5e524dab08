"""The demo's sample customers: grades, languages, Chinese and Latin names, notes, card
accounts with a balance, and a few past interactions each.

Seeding goes through the store's own paths and is idempotent, so re-running the
demo on the same data folder adds nothing: customers through the CSV import
(`import_customers_csv` matches a line to the customer holding its account
number), balances by account, past interactions by a stable `call_key`
(`record_interaction` updates the row of a call it already has).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from ctiserver.store.customer_import import ImportReport, import_customers_csv
from ctiserver.store.customers import find_customer_by_account, set_account_balance
from ctiserver.store.database import Database
from ctiserver.store.interactions import record_interaction

# call_key prefix of the seeded history (never an Asterisk Uniqueid, which has a dot).
HISTORY_KEY_PREFIX = "demo-history-"


@dataclass(frozen=True, slots=True)
class PastContact:
    days_ago: float
    queue: str
    agent: str  # ACD agent id
    disposition: str
    notes: str
    resolved: bool


@dataclass(frozen=True, slots=True)
class SampleCustomer:
    name: str
    phone: str  # as stored; callers present it as +<digits>
    card: str  # 16 digits, Luhn-valid: the bank IVR's account look-up finds it
    grade: str  # vip / gold / standard (acd.example.toml [grades])
    language: str
    balance: int  # yuan, said by the IVR's balance self-service
    notes: str
    history: tuple[PastContact, ...]

    @property
    def caller_id(self) -> str:
        return "+" + "".join(ch for ch in self.phone if ch.isdigit())


def luhn_card(prefix: str, serial: int, length: int = 16) -> str:
    """A card number starting `prefix`, then `serial`, then the Luhn check digit."""
    body = f"{prefix}{serial:0{length - 1 - len(prefix)}d}"
    total = 0
    for index, char in enumerate(reversed(body)):
        digit = int(char)
        if index % 2 == 0:  # doubled: these end up at odd places once the check digit is on
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return body + str((10 - total % 10) % 10)


def _c(
    serial: int,
    name: str,
    phone: str,
    grade: str,
    language: str,
    balance: int,
    notes: str,
    *history: PastContact,
) -> SampleCustomer:
    return SampleCustomer(
        name, phone, luhn_card("622202", serial), grade, language, balance, notes, history
    )


P = PastContact

SAMPLE_CUSTOMERS: tuple[SampleCustomer, ...] = (
    _c(
        1,
        "张伟",
        "+86 138 0013 8000",
        "vip",
        "zh",
        286_400,
        "私人银行客户，偏好下午联系。客户经理：刘洋。",
        P(2, "vip", "1006", "limit-increase", "申请临时提额至 20 万，已批准。", True),
        P(19, "vip", "1005", "travel-notice", "告知下月赴日旅行，已登记。", True),
    ),
    _c(
        2,
        "王芳",
        "+86 139 1234 5678",
        "gold",
        "zh",
        15_230,
        "上次账单有争议，待核实。",
        P(
            3,
            "support",
            "1001",
            "billing-question",
            "账单中一笔 1,280 元消费不认可，已提交调查。",
            False,
        ),
        P(40, "support", "1003", "card-activation", "新卡激活。", True),
    ),
    _c(
        3,
        "李娜",
        "+86 137 2468 1357",
        "standard",
        "zh",
        3_120,
        "",
        P(11, "support", "1002", "address-change", "更新账单地址为浦东新区。", True),
        P(45, "support", "1001", "card-activation", "新卡激活，设置交易密码。", True),
    ),
    _c(
        4,
        "Emily Chen 陈",
        "+86 186 0021 3344",
        "gold",
        "en",
        42_800,
        "Prefers English. Travels often.",
        P(
            6,
            "support",
            "1005",
            "card-blocked",
            "Card blocked abroad after 3 PIN errors; unblocked.",
            True,
        ),
        P(30, "support", "1005", "travel-notice", "Trip to Singapore noted.", True),
    ),
    _c(
        5,
        "陈嘉欣",
        "+86 135 5566 7788",
        "standard",
        "yue",
        1_940,
        "讲粤语，普通话一般。",
        P(1, "support", "1003", "repayment-plan", "要求分期还款，资料已寄出，待客户回传。", False),
        P(20, "support", "1003", "billing-question", "用粤语解释账单分期手续费。", True),
    ),
    _c(
        6,
        "刘洋",
        "+86 150 2020 3030",
        "standard",
        "zh",
        880,
        "",
        P(25, "sales", "1004", "loan-enquiry", "咨询装修贷款利率，已发资料。", True),
        P(60, "support", "1001", "address-change", "更新手机号码。", True),
    ),
    _c(
        7,
        "John Smith",
        "+86 131 0000 1111",
        "standard",
        "en",
        5_600,
        "Expat, English only.",
        P(8, "support", "1005", "statement-request", "Asked for a paper statement; sent.", True),
        P(35, "support", "1005", "card-activation", "New card activated; PIN set.", True),
    ),
    _c(
        8,
        "赵敏",
        "+86 158 8888 6666",
        "vip",
        "zh",
        1_052_000,
        "贵宾客户，多张卡。勿在工作日上午致电。",
        P(4, "vip", "1005", "complaint", "对年费收取不满，已减免，客户接受。", True),
        P(12, "vip", "1006", "limit-increase", "永久额度调整申请，已受理。", False),
        P(33, "vip", "1005", "card-replacement", "卡片磨损，补发新卡。", True),
    ),
    _c(
        9,
        "周杰",
        "+86 136 7777 2222",
        "standard",
        "zh",
        12,
        "",
        P(2, "support", "1001", "lost-card", "卡片遗失，已挂失并补卡。", True),
        P(2.2, "support", "1003", "lost-card", "询问补卡进度。", False),
    ),
    _c(
        10,
        "Maria Garcia",
        "+86 132 4455 6677",
        "gold",
        "en",
        23_750,
        "Spanish and English speaker.",
        P(15, "support", "1005", "billing-question", "Foreign transaction fee explained.", True),
        P(50, "vip", "1005", "travel-notice", "Trip to Madrid noted.", True),
    ),
    _c(
        11,
        "黄晓明",
        "+86 189 1122 3344",
        "gold",
        "zh",
        67_300,
        "",
        P(9, "sales", "1004", "loan-enquiry", "车贷预审，待补收入证明。", False),
        P(31, "support", "1002", "points-redemption", "积分兑换加油卡。", True),
    ),
    _c(
        12,
        "吴静",
        "+86 177 5555 0000",
        "standard",
        "zh",
        430,
        "听力不好，请说慢一点。",
        P(21, "support", "1002", "card-activation", "协助激活新卡。", True),
        P(6, "support", "1001", "billing-question", "慢速讲解本期账单，客户满意。", True),
    ),
    _c(
        13,
        "Pierre Martin",
        "+86 185 9090 8080",
        "standard",
        "en",
        2_210,
        "",
        P(
            5,
            "support",
            "1005",
            "card-blocked",
            "Online purchase declined; fraud check cleared.",
            True,
        ),
        P(38, "support", "1005", "address-change", "Moved to Xuhui; address updated.", True),
    ),
    _c(
        14,
        "孙丽",
        "+86 133 3131 3131",
        "vip",
        "zh",
        512_000,
        "企业主，常大额消费。",
        P(7, "vip", "1006", "travel-notice", "赴欧洲出差两周。", True),
        P(26, "vip", "1005", "limit-increase", "公司采购临时提额。", True),
    ),
    _c(
        15,
        "马超",
        "+86 151 6000 7000",
        "standard",
        "zh",
        0,
        "逾期一次，已还清。",
        P(
            10,
            "support",
            "1001",
            "repayment-plan",
            "逾期 3 天，已全额还款，申请减免滞纳金。",
            False,
        ),
        P(48, "support", "1003", "repayment-plan", "首次逾期提醒，客户承诺按时还款。", True),
    ),
    _c(
        16,
        "林小红",
        "+86 187 4321 8765",
        "gold",
        "zh",
        9_980,
        "",
        P(13, "support", "1003", "points-redemption", "积分兑换机票，已办理。", True),
        P(42, "support", "1001", "card-blocked", "网购被拦截，核实后解除。", True),
    ),
    _c(
        17,
        "David Lee 李大卫",
        "+86 130 2222 4444",
        "gold",
        "en",
        31_000,
        "Hong Kong resident; English or Cantonese.",
        P(3, "support", "1005", "billing-question", "Annual fee waiver requested.", False),
        P(29, "support", "1005", "card-replacement", "Card replaced after expiry.", True),
    ),
    _c(
        18,
        "郭靖",
        "+86 155 1212 3434",
        "standard",
        "zh",
        2_600,
        "",
        P(28, "sales", "1004", "loan-enquiry", "咨询消费贷，暂不需要。", True),
        P(55, "support", "1003", "statement-request", "补寄纸质账单。", True),
    ),
    _c(
        19,
        "何敏",
        "+86 156 0101 0202",
        "standard",
        "zh",
        7_450,
        "偏好短信联系。",
        P(16, "support", "1002", "statement-request", "申请电子账单。", True),
        P(4, "support", "1002", "complaint", "短信提醒过多，已调整提醒设置。", True),
    ),
    _c(
        20,
        "Olivia Brown",
        "+86 173 8080 9090",
        "vip",
        "en",
        780_000,
        "Private banking. Relationship manager: Emily Zhou.",
        P(
            1.5,
            "vip",
            "1005",
            "limit-increase",
            "Temporary limit raised for a house deposit.",
            True,
        ),
        P(17, "vip", "1006", "travel-notice", "Two weeks in London noted.", True),
    ),
)


def sample_csv(customers: tuple[SampleCustomer, ...] = SAMPLE_CUSTOMERS) -> str:
    """The customers as the CSV `ctiserver customers import` reads."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ("name", "phones", "accounts", "grade", "value", "language", "preferred_channel", "notes")
    )
    for customer in customers:
        writer.writerow(
            (
                customer.name,
                customer.phone,
                customer.card,
                customer.grade,
                str(customer.balance),
                customer.language,
                "phone",
                customer.notes,
            )
        )
    return out.getvalue()


@dataclass(frozen=True, slots=True)
class SeedReport:
    customers: ImportReport
    history: int  # interactions written or found again


async def seed_customers(
    database: Database,
    customers: tuple[SampleCustomer, ...] = SAMPLE_CUSTOMERS,
    *,
    now: datetime | None = None,
) -> SeedReport:
    """Create (or find again) the sample customers, their balances and their history."""
    now = now or datetime.now(UTC)
    report = await import_customers_csv(database, sample_csv(customers))
    if report.skipped:
        raise ValueError(f"sample customers refused: {report.as_dict()['errors']}")
    history = 0
    for index, customer in enumerate(customers):
        found = await find_customer_by_account(database, customer.card)
        if found is None:  # the import said it created or found every line
            raise RuntimeError(f"sample customer {customer.name} not found after the import")
        await set_account_balance(database, customer.card, Decimal(customer.balance), now)
        for number, contact in enumerate(customer.history):
            started = now - timedelta(days=contact.days_ago)
            await record_interaction(
                database,
                call_key=f"{HISTORY_KEY_PREFIX}{index}-{number}",
                customer_id=found.id,
                channel="phone",
                direction="inbound",
                address=customer.caller_id,
                started_at=started,
                ended_at=started + timedelta(minutes=4),
                wrap_up_at=started + timedelta(minutes=5),
                queue_name=contact.queue,
                agent_login=contact.agent,
                disposition=contact.disposition,
                notes=contact.notes,
                resolved=contact.resolved,
            )
            history += 1
    return SeedReport(report, history)
