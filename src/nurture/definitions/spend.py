"""Marketing spend: what a marketer already has, as data (``campaigns/spend.yaml``, or a CSV for
``nurture spend import``): a period, a source, optionally one of its campaigns, an amount and a currency.

A period is a day (``2026-03-05``), an ISO week (``2026-W10``), a month (``2026-03``), a quarter (``2026-Q1``) or a
range of days with both ends included (``2026-03-01..2026-03-15``). An amount is a number with at most two decimals
(``1200``, ``1200.5``, ``1200.50``), not negative, without thousands separators. A currency is an ISO 4217 code
(``EUR``, ``USD``). Reports spread an amount evenly over its period's days.

``spend.yaml``::

    currency: EUR              # the default of every entry
    spend:
      - {period: 2026-03, source: google, campaign: spring-search, amount: 1200.50}
      - {period: 2026-W10, source: linkedin, amount: 800, currency: EUR}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from nurture.definitions.fields import Strict
from nurture.definitions.loader import validation_problems
from nurture.definitions.yamlsource import YamlDocument, load_yaml
from nurture.errors import Problem

SPEND_FILE = "spend.yaml"

MAX_AMOUNT = Decimal("1000000000000")
"""The largest amount one entry may hold (a trillion): a typo guard, not a budget."""

_MONTH = re.compile(r"(\d{4})-(\d{2})")
_WEEK = re.compile(r"(\d{4})-W(\d{2})")
_QUARTER = re.compile(r"(\d{4})-Q([1-4])")
_AMOUNT = re.compile(r"\d+(\.\d{1,2})?")
_CURRENCY = re.compile(r"[A-Z]{3}")
_NAME_MAX = 200


def parse_period(value: Any) -> tuple[date, date]:
    """The first and last day of a period (see the module docstring); ValueError saying what is accepted."""
    if isinstance(value, date):
        return value, value
    text = str(value).strip()
    try:
        if ".." in text:
            first, _, last = text.partition("..")
            start, end = date.fromisoformat(first.strip()), date.fromisoformat(last.strip())
            if end < start:
                raise ValueError(f"period {text!r} ends before it starts")
            return start, end
        if match := _QUARTER.fullmatch(text):
            year, quarter = int(match[1]), int(match[2])
            start = date(year, 3 * quarter - 2, 1)
            return start, _month_end(date(year, 3 * quarter, 1))
        if match := _WEEK.fullmatch(text):
            start = date.fromisocalendar(int(match[1]), int(match[2]), 1)
            return start, start + timedelta(days=6)
        if match := _MONTH.fullmatch(text):
            start = date(int(match[1]), int(match[2]), 1)
            return start, _month_end(start)
        day = date.fromisoformat(text)
        return day, day
    except ValueError as exc:
        if "ends before" in str(exc):
            raise
    raise ValueError(f"period {text!r} is not a day (2026-03-05), week (2026-W10), month (2026-03), quarter "
                     "(2026-Q1) or range (2026-03-01..2026-03-15)")


def _month_end(first: date) -> date:
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return following - timedelta(days=1)


def parse_amount(value: Any) -> int:
    """An amount in hundredths of the currency's unit; ValueError saying what is accepted."""
    if isinstance(value, bool):
        raise ValueError(f"amount {value!r} is not a number")
    text = str(value).strip()
    if isinstance(value, float):
        text = f"{value:.2f}" if round(value, 2) == value else repr(value)
    if not _AMOUNT.fullmatch(text):
        hint = " (write 1200.50: no thousands separators)" if "," in text or " " in text else ""
        raise ValueError(f"amount {text!r} is not a number with at most two decimals, 0 or more{hint}")
    try:
        amount = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise ValueError(f"amount {text!r} is not a number") from None
    if amount > MAX_AMOUNT:
        raise ValueError(f"amount {text} is more than {MAX_AMOUNT:,}")
    return int(amount * 100)


def parse_currency(value: Any) -> str:
    """An ISO 4217 code, upper-cased; ValueError otherwise."""
    text = str(value or "").strip().upper()
    if not _CURRENCY.fullmatch(text):
        raise ValueError(f"currency {str(value or '')!r} is not a three-letter ISO 4217 code such as EUR or USD")
    return text


def parse_name(value: Any, what: str, *, required: bool) -> str:
    """A source or campaign name: stripped text up to 200 characters; '' for no campaign."""
    text = "" if value is None else str(value).strip()
    if required and not text:
        raise ValueError(f"{what} is required")
    if len(text) > _NAME_MAX:
        raise ValueError(f"{what} is longer than {_NAME_MAX} characters")
    return text


@dataclass(frozen=True)
class SpendEntry:
    """Spend of one source (and campaign, or '' for the whole source) over the days ``start`` to ``end`` included."""

    start: date
    end: date
    source: str
    campaign: str
    amount_cents: int
    currency: str
    origin: str = "spend.yaml"  # or "import"

    @property
    def key(self) -> tuple[date, date, str, str]:
        """What an entry of the other origin replaces or is replaced by."""
        return self.start, self.end, self.source, self.campaign


class SpendItem(Strict):
    """One entry of ``spend.yaml``."""

    period: Any = Field(description="A day, ISO week, month, quarter or range: 2026-03-05, 2026-W10, 2026-03, "
                                    "2026-Q1, 2026-03-01..2026-03-15.")
    source: str = Field(min_length=1, max_length=_NAME_MAX, description="The source, as leads carry it (utm_source).")
    campaign: str | None = Field(None, max_length=_NAME_MAX, description="One campaign of the source (utm_campaign).")
    amount: Any = Field(description="At most two decimals, 0 or more.")
    currency: str | None = Field(None, description="ISO 4217; default: the file's currency.")

    @field_validator("period")
    @classmethod
    def _period(cls, value: Any) -> Any:
        parse_period(value)
        return value

    @field_validator("amount")
    @classmethod
    def _amount(cls, value: Any) -> Any:
        parse_amount(value)
        return value

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str | None) -> str | None:
        return None if value is None else parse_currency(value)


class SpendFile(Strict):
    """``campaigns/spend.yaml``."""

    currency: str | None = Field(None, description="The currency of entries that name none (ISO 4217).")
    spend: list[SpendItem] = Field(default_factory=list)

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str | None) -> str | None:
        return None if value is None else parse_currency(value)


def validate_spend(doc: YamlDocument) -> tuple[list[SpendEntry], list[Problem]]:
    """The entries of a parsed spend file and its problems (with any problem, no entries)."""
    if doc.problems:
        return [], list(doc.problems)
    if doc.data is None:
        return [], []
    if not isinstance(doc.data, dict):
        return [], [doc.problem((), "expected a mapping with currency and spend")]
    try:
        parsed = SpendFile.model_validate(doc.data)
    except ValidationError as exc:
        return [], sorted(validation_problems(doc, exc, SpendFile))
    entries: list[SpendEntry] = []
    problems: list[Problem] = []
    seen: dict[tuple[date, date, str, str], int] = {}
    for index, item in enumerate(parsed.spend):
        currency = item.currency or parsed.currency
        if currency is None:
            problems.append(doc.problem(("spend", index), "no currency: give the entry one or the file a "
                                                          "`currency:`"))
            continue
        start, end = parse_period(item.period)
        entry = SpendEntry(start, end, item.source.strip(), (item.campaign or "").strip(), parse_amount(item.amount),
                           currency)
        if entry.key in seen:
            problems.append(doc.problem(("spend", index), f"the same period, source and campaign as entry "
                                                          f"{seen[entry.key] + 1}"))
            continue
        seen[entry.key] = index
        entries.append(entry)
    return ([] if problems else entries), problems


def load_spend(campaigns_dir: Path) -> tuple[list[SpendEntry], list[Problem]]:
    """Read ``campaigns_dir/spend.yaml``; no file is no spend, not a problem."""
    path = campaigns_dir / SPEND_FILE
    if not path.exists():
        return [], []
    return validate_spend(load_yaml(path))
