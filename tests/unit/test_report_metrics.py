"""The report's arithmetic, pure: labels, spend spread over days, the lead velocity rate's months, the long CSV."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from nurture.core.metrics.facts import MoveCount
from nurture.core.metrics.money import build_money
from nurture.core.metrics.periods import Window
from nurture.core.metrics.report import Report
from nurture.core.metrics.steps import exit_label, outcome_label
from nurture.core.metrics.trends import build_trends, lvr_months
from nurture.core.promotion import rejection_code
from nurture.definitions.spend import SpendEntry


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)  # type: ignore[misc]


@pytest.mark.parametrize(("code", "label"), [
    ("goal:pricing_request", "reached goal: pricing request"), ("stage:sql", "became an SQL"),
    ("completed", "finished every step"), ("spam_complaint", "marked as spam"), ("stage:nurture", "moved to stage nurture"),
    (None, "ended"), ("loop: more than 64 steps ran without a wait", "loop: more than 64 steps ran without a wait"),
])
def test_exit_reasons_read_as_words(code: str | None, label: str) -> None:
    assert exit_label(code) == label


def test_outcomes_say_which_way_a_lead_went() -> None:
    assert outcome_label("branch", "rule 1 -> demo") == ("branch", "rule 1 → demo")
    assert outcome_label("event", "email_click came first") == ("wait for", "event: email_click came first")
    assert outcome_label("timeout", "no email_click within 3d") == ("wait for", "timeout: no email_click within 3d")
    assert outcome_label("skipped", "condition not met") == ("skipped", "condition not met")


def test_rejection_codes_come_back_from_the_stage_change_reason() -> None:
    assert rejection_code("rejected by sales: no_budget (No budget this year)") == "no_budget"
    assert rejection_code("rejected by sales: bad_timing") == "bad_timing"
    assert rejection_code("accepted") is None


def test_spend_counts_the_part_of_its_period_inside_the_window_to_the_second() -> None:
    march = SpendEntry(date(2026, 3, 1), date(2026, 3, 31), "google", "", 310_000, "EUR")  # 100.00 a day
    week = SpendEntry(date(2026, 3, 30), date(2026, 4, 5), "bing", "", 70_000, "EUR")  # 100.00 a day, across months
    window = Window(at(2026, 3, 16, 12), at(2026, 4, 2))
    money = build_money(window, [], [], [march, week])
    rows = {row["source"]: row["spend"] for row in money.by_source}
    assert rows == {"google": 1550.0, "bing": 300.0}  # 15.5 days of March; March 30, 31 and April 1
    assert [(m["month"], m["spend"]) for m in money.by_month] == [("2026-03", 1750.0), ("2026-04", 100.0)]
    assert money.total["spend"] == 1850.0 and money.total["cost_per_lead"] is None  # no leads: no cost per lead


def test_the_lead_velocity_rate_is_the_latest_complete_month_even_before_the_window() -> None:
    window = Window(at(2026, 3, 10), at(2026, 3, 31, 12))
    assert lvr_months(window) == [date(2026, 2, 1), date(2026, 3, 1)]
    days = [(date(2026, 1, 5), 40), (date(2026, 2, 5), 50), (date(2026, 3, 5), 70)]
    trends = build_trends(window, [], [], days, [])
    assert (trends.lead_velocity_month, trends.lead_velocity_rate) == ("2026-02", 0.25)
    assert [m["complete"] for m in trends.months] == [True, False]


def test_the_csv_is_long_one_line_per_row_and_figure() -> None:
    window = Window(at(2026, 3, 1), at(2026, 4, 1))
    moves = [MoveCount(date(2026, 3, 2), "lead", "mql", "rule", "google", "spring", 3)]
    entry = SpendEntry(date(2026, 3, 1), date(2026, 3, 31), "google", "spring", 30_000, "EUR")
    report = Report(window, [build_money(window, [], moves, [entry])])
    lines = report.to_csv().splitlines()
    assert lines[0] == "section,table,period,item,metric,value"
    assert "money,by_source,,google,cost_per_mql,100.0" in lines
    assert "money,by_source_campaign,,google / spring,spend,300.0" in lines
    assert "money,by_month,2026-03,,mqls,3" in lines
