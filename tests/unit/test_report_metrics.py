"""The report's arithmetic, pure: labels, spend spread over days, the lead velocity rate's months, the long CSV."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from nurture.core.abtest import VariantCount, evaluate
from nurture.core.holdout import GroupFigures, lift
from nurture.core.metrics.experiments import AbTests, Holdouts
from nurture.core.metrics.facts import MoveCount
from nurture.core.metrics.money import build_money
from nurture.core.metrics.periods import Window
from nurture.core.metrics.report import Report
from nurture.core.metrics.steps import exit_label, outcome_label
from nurture.core.metrics.tables import format_value
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
    # a note of sales' follows the reason; it is never part of the code, with or without a label
    assert rejection_code("rejected by sales: bad_timing; note: call (again) in May") == "bad_timing"
    assert rejection_code("rejected by sales: no_budget (No budget); note: Q3") == "no_budget"
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


def ab_test(sends: tuple[int, int], conversions: tuple[int, int], winner: dict[str, str] | None) -> dict[str, object]:
    """An ``ab_tests`` object as the application builds it, from core's own evaluation."""
    verdict = evaluate([VariantCount("a", sends[0], conversions[0]), VariantCount("b", sends[1], conversions[1])],
                       goal_label="clicks", confidence=0.95, min_sends=100)
    return dict(campaign="welcome", step="hello", goal="clicks", confidence=0.95, min_sends=100,
                variants=[dict(variant=c.variant, sends=c.sends, conversions=c.conversions, rate=c.rate)
                          for c in verdict.counts],
                leader=verdict.leader, comparisons=[vars(c) for c in verdict.comparisons],
                more_sends_needed=verdict.more_sends, verdict=verdict.verdict, significant=verdict.winner is not None,
                winner=winner, sent_after_call=7 if winner else 0)


def test_ab_tests_are_a_section_with_verdicts_long_csv_rows_and_readable_lines() -> None:
    called = ab_test((400, 400), (20, 80), {"variant": "b", "decided_at": "2026-03-05T12:00:00+00:00"})
    early = {**ab_test((30, 20), (3, 2), None), "step": "later"}
    section = AbTests([called, early])
    assert section.to_json() == [called, early]
    assert [(h.key, h.label, h.value, h.note) for h in section.summary().items] == [
        ("0.verdict", "welcome / hello", "b beats a on clicks, 95% confidence", "winner b recorded 2026-03-05"),
        ("1.verdict", "welcome / later", early["verdict"], "no winner recorded")]
    assert str(early["verdict"]).startswith("not enough data: 150 more sends")
    rows = list(Report(Window(at(2026, 3, 1), at(2026, 4, 1)), [section]).long_rows())
    assert ("ab_tests", "tests", "", "welcome / hello", "winner", "b") in rows
    assert ("ab_tests", "tests", "", "welcome / later", "winner", "") in rows
    assert ("ab_tests", "variants", "", "welcome / hello / b", "rate", 0.2) in rows
    [difference] = [r[5] for r in rows if r[1] == "comparisons" and r[3] == "welcome / hello / b / a"
                    and r[4] == "difference"]
    assert difference == pytest.approx(0.15)
    lines = section.lines()
    assert "verdict: b beats a on clicks, 95% confidence" in [line.strip() for line in lines]
    [comparison] = called["comparisons"]  # type: ignore[misc]
    low, high = comparison["low"] * 100, comparison["high"] * 100
    assert 0 < low < 15 < high
    assert f"  b - a: +15.0 points ({low:+.1f} to {high:+.1f}), p = 0.000, P(b better) = 100.0%" in lines
    assert "  winner recorded: b at 2026-03-05T12:00:00+00:00, sent to every later lead (7 since)" in lines
    assert AbTests([]).lines() == ["none in this period"] and AbTests([]).summary().items == []


def test_holdouts_are_a_section_with_the_lift() -> None:
    sent, held = GroupFigures(900, 270, 50.0), GroupFigures(100, 10, 80.0)
    result = lift(sent, held)
    campaign = dict(campaign="welcome", holdout=0.1,
                    sent=dict(leads=900, sql=270, rate=0.3, median_hours_to_sql=50.0),
                    held_out=dict(leads=100, sql=10, rate=0.1, median_hours_to_sql=80.0),
                    lift=result.difference, low=result.low, high=result.high, p_value=result.p_value, confidence=0.95,
                    verdict=result.verdict)
    section = Holdouts([campaign])
    [headline] = section.summary().items
    assert (headline.key, headline.value, headline.note) == ("0.verdict", result.verdict, "lift +20.0 pts")
    assert result.verdict.startswith("the campaign lifts MQL→SQL conversion by +20.0 points")
    rows = list(Report(Window(at(2026, 3, 1), at(2026, 4, 1)), [section]).long_rows())
    assert ("holdouts", "groups", "", "welcome / held out", "leads", 100) in rows
    assert ("holdouts", "lift", "", "welcome", "verdict", result.verdict) in rows
    assert "welcome (holdout 10%)" in section.lines()
    assert "  held out       100     10    10.0%           80 h" in section.lines()


@pytest.mark.parametrize(("value", "kind", "shown"), [
    (0.15, "points", "+15.0 pts"), (-0.033, "points", "-3.3 pts"), (0.0, "points", "+0.0 pts"),
    (0.0004, "p_value", "< 0.001"), (0.377, "p_value", "0.377"), (None, "points", "-"),
])
def test_differences_show_as_points_and_p_values_to_three_decimals(value: float | None, kind: str, shown: str) -> None:
    assert format_value(value, kind) == shown
