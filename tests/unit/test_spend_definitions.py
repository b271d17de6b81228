"""Spend as marketers write it: the period forms, amounts, currencies, and ``spend.yaml`` problems at their line."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from nurture.definitions.spend import parse_amount, parse_currency, parse_period, validate_spend
from nurture.definitions.yamlsource import load_yaml


@pytest.mark.parametrize(("text", "first", "last"), [
    ("2026-03-05", date(2026, 3, 5), date(2026, 3, 5)),
    ("2026-W10", date(2026, 3, 2), date(2026, 3, 8)),
    ("2026-03", date(2026, 3, 1), date(2026, 3, 31)),
    ("2024-02", date(2024, 2, 1), date(2024, 2, 29)),
    ("2026-12", date(2026, 12, 1), date(2026, 12, 31)),
    ("2026-Q1", date(2026, 1, 1), date(2026, 3, 31)),
    ("2026-Q4", date(2026, 10, 1), date(2026, 12, 31)),
    ("2026-03-01..2026-03-15", date(2026, 3, 1), date(2026, 3, 15)),
    (date(2026, 3, 5), date(2026, 3, 5), date(2026, 3, 5)),  # YAML reads a bare day as a date
])
def test_each_period_form_is_its_days(text: object, first: date, last: date) -> None:
    assert parse_period(text) == (first, last)


@pytest.mark.parametrize(("text", "message"), [
    ("2026-13", "is not a day"), ("2026-W54", "is not a day"), ("2026-Q5", "is not a day"), ("March", "is not a day"),
    ("2026-03-15..2026-03-01", "ends before it starts"),
])
def test_a_bad_period_says_which_forms_are_accepted(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_period(text)


@pytest.mark.parametrize(("value", "cents"), [("1200", 120000), ("1200.5", 120050), ("1200.50", 120050),
                                              (1200.5, 120050), (0, 0), ("0.01", 1)])
def test_amounts_are_kept_in_hundredths(value: object, cents: int) -> None:
    assert parse_amount(value) == cents


@pytest.mark.parametrize(("value", "message"), [("1,200", "no thousands separators"), ("-5", "0 or more"),
                                                ("12.345", "at most two decimals"), (True, "not a number"),
                                                ("2000000000000", "more than")])
def test_bad_amounts_are_refused(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_amount(value)


def test_currencies_are_iso_codes() -> None:
    assert parse_currency(" eur ") == "EUR"
    with pytest.raises(ValueError, match="ISO 4217"):
        parse_currency("euro")


def test_spend_yaml_entries_and_their_problems_at_their_lines(tmp_path: Path) -> None:
    good = tmp_path / "spend.yaml"
    good.write_text("currency: EUR\nspend:\n"
                    "  - {period: 2026-03, source: google, campaign: spring-search, amount: 1200.50}\n"
                    "  - {period: 2026-W10, source: linkedin, amount: 800, currency: usd}\n", encoding="utf-8")
    entries, problems = validate_spend(load_yaml(good))
    assert problems == []
    assert [(e.start, e.end, e.source, e.campaign, e.amount_cents, e.currency) for e in entries] == [
        (date(2026, 3, 1), date(2026, 3, 31), "google", "spring-search", 120050, "EUR"),
        (date(2026, 3, 2), date(2026, 3, 8), "linkedin", "", 80000, "USD"),
    ]
    bad = tmp_path / "bad" / "spend.yaml"
    bad.parent.mkdir()
    bad.write_text("spend:\n"
                   "  - {period: 2026-03, source: google, amount: 10}\n"      # 2: no currency anywhere
                   "  - {period: 2026-13, source: x, amount: 1, currency: EUR}\n"  # 3
                   "  - period: 2026-03\n"                                     # 4
                   "    source: y\n"
                   "    amount: 1,5\n"                                         # 6
                   "    currency: EUR\n", encoding="utf-8")
    entries, problems = validate_spend(load_yaml(bad))
    assert entries == []
    assert [(p.line, p.message.split(" is ")[0]) for p in problems] == [(3, "period '2026-13'"),
                                                                          (6, "amount '1,5'")]
    bad.write_text("spend:\n  - {period: 2026-03, source: google, amount: 10}\n", encoding="utf-8")
    assert [(p.line, "no currency" in p.message) for p in validate_spend(load_yaml(bad))[1]] == [(2, True)]
