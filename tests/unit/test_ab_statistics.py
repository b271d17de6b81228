"""The statistics behind A/B verdicts and holdout lifts (``nurture.core.proportions``), against published values and
computations done another way here, and the decision rule of ``nurture.core.abtest`` as a table."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone

import pytest

from nurture.core.abtest import StepSend, VariantCount, count_goal, evaluate
from nurture.core.proportions import EXACT_TERMS, newcombe, probability_to_beat, wilson, z_for, z_test
from nurture.definitions.durations import Duration
from nurture.definitions.experiments import EventGoal, SqlGoal

# --- intervals: Newcombe (1998), "Interval estimation for the difference between independent proportions:
# comparison of eleven methods", Statistics in Medicine 17, 873-890, Table II, method 10 (score, no continuity
# correction), 95 %. Each row: x1, n1, x2, n2, lower, upper.
NEWCOMBE_TABLE_II = [
    pytest.param(56, 70, 48, 80, 0.0524, 0.3339, id="a-56/70-48/80"),
    pytest.param(9, 10, 3, 10, 0.1705, 0.8090, id="b-9/10-3/10"),
    pytest.param(5, 56, 0, 29, -0.0381, 0.1926, id="d-5/56-0/29"),
    pytest.param(0, 10, 0, 20, -0.1611, 0.2775, id="e-0/10-0/20"),
    pytest.param(0, 10, 0, 10, -0.2775, 0.2775, id="f-0/10-0/10"),
    pytest.param(10, 10, 0, 20, 0.6791, 1.0000, id="g-10/10-0/20"),
    pytest.param(10, 10, 0, 10, 0.6075, 1.0000, id="h-10/10-0/10"),
]


@pytest.mark.parametrize(("x1", "n1", "x2", "n2", "low", "high"), NEWCOMBE_TABLE_II)
def test_the_difference_interval_is_newcombes_method_10(x1: int, n1: int, x2: int, n2: int, low: float,
                                                        high: float) -> None:
    got = newcombe(x1, n1, x2, n2, 0.95)
    assert (round(got[0], 4), round(got[1], 4)) == (low, high)


def test_the_wilson_interval_matches_its_formula_solved_as_a_quadratic() -> None:
    # Wilson's interval is where |p - pi| = z * sqrt(pi (1 - pi) / n): solve that quadratic in pi directly.
    for x, n in ((0, 10), (3, 10), (56, 70), (81, 263), (1000, 1000)):
        z, p = z_for(0.95), x / n
        a, b, c = 1 + z * z / n, -(2 * p + z * z / n), p * p
        roots = sorted(((-b - math.sqrt(b * b - 4 * a * c)) / (2 * a), (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)))
        assert wilson(x, n) == pytest.approx(tuple(roots), abs=1e-12)


def test_the_normal_quantile_of_95_percent_is_1_96() -> None:
    assert z_for(0.95) == pytest.approx(1.959964, abs=1e-6)
    assert z_for(0.99) == pytest.approx(2.575829, abs=1e-6)


# --- the z-test: its square is Pearson's chi-square of the 2x2 table, whose p-value with one degree of freedom is
# erfc(sqrt(X2 / 2)); R: prop.test(c(15, 25), c(50, 50), correct = FALSE) gives X-squared = 4.1667, p = 0.04123.


def _pearson(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    table = [[x1, n1 - x1], [x2, n2 - x2]]
    total = n1 + n2
    columns = [x1 + x2, total - x1 - x2]
    chi2 = sum((table[i][j] - (n1, n2)[i] * columns[j] / total) ** 2 / ((n1, n2)[i] * columns[j] / total)
               for i in range(2) for j in range(2))
    return chi2, math.erfc(math.sqrt(chi2 / 2))


def test_the_z_test_agrees_with_r_prop_test_without_correction() -> None:
    z, p = z_test(15, 50, 25, 50)
    assert round(z * z, 4) == 4.1667
    assert round(p, 5) == 0.04123


@pytest.mark.parametrize(("x1", "n1", "x2", "n2"), [(15, 50, 25, 50), (120, 1000, 90, 1000), (3, 40, 11, 35),
                                                     (400, 5000, 455, 5200)])
def test_the_z_test_is_pearsons_chi_square(x1: int, n1: int, x2: int, n2: int) -> None:
    z, p = z_test(x1, n1, x2, n2)
    chi2, p_chi2 = _pearson(x1, n1, x2, n2)
    assert z * z == pytest.approx(chi2, rel=1e-9)
    assert p == pytest.approx(p_chi2, rel=1e-9)
    assert (z > 0) == (x1 / n1 > x2 / n2)


def test_the_z_test_without_data_or_variation_says_nothing() -> None:
    assert z_test(0, 0, 5, 10) == (0.0, 1.0)
    assert z_test(0, 10, 0, 20) == (0.0, 1.0)


# --- probability to beat, against a numerical integration of the two Beta posteriors


def _beta_log_density(x: float, a: int, b: int) -> float:
    return (a - 1) * math.log(x) + (b - 1) * math.log1p(-x) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))


def _integrated(x1: int, n1: int, x2: int, n2: int, steps: int = 200_000) -> float:
    """P(p1 > p2) = integral of f1(x) F2(x) dx, by the midpoint rule with F2 summed along the same grid."""
    a1, b1, a2, b2 = 1 + x1, 1 + n1 - x1, 1 + x2, 1 + n2 - x2
    h = 1.0 / steps
    total = cdf2 = 0.0
    for i in range(steps):
        x = (i + 0.5) * h
        f2 = math.exp(_beta_log_density(x, a2, b2)) * h
        total += math.exp(_beta_log_density(x, a1, b1)) * h * (cdf2 + f2 / 2)
        cdf2 += f2
    return total


@pytest.mark.parametrize(("x1", "n1", "x2", "n2"), [(30, 100, 20, 100), (3, 10, 300, 1000), (12, 200, 9, 210),
                                                     (0, 5, 1, 5)])
def test_probability_to_beat_matches_a_numerical_integration(x1: int, n1: int, x2: int, n2: int) -> None:
    assert probability_to_beat(x1, n1, x2, n2) == pytest.approx(_integrated(x1, n1, x2, n2), abs=1e-5)


def test_probability_to_beat_is_symmetric_and_one_half_between_equals() -> None:
    assert probability_to_beat(40, 100, 40, 100) == pytest.approx(0.5, abs=1e-12)
    assert probability_to_beat(30, 100, 20, 100) + probability_to_beat(20, 100, 30, 100) == pytest.approx(1.0)


def test_probability_to_beat_for_large_counts_agrees_across_the_switch_to_the_normal_form() -> None:
    # just below the closed form's limit and just above it, the same rates give nearly the same answer
    below = probability_to_beat(EXACT_TERMS - 1, 10 * EXACT_TERMS, EXACT_TERMS - 120, 10 * EXACT_TERMS)
    above = probability_to_beat(EXACT_TERMS + 1, 10 * EXACT_TERMS, EXACT_TERMS - 118, 10 * EXACT_TERMS)
    assert 0.5 < below < 1 and above == pytest.approx(below, abs=2e-3)


# --- the decision rule


def counts(*rows: tuple[str, int, int]) -> list[VariantCount]:
    return [VariantCount(name, sends, conversions) for name, sends, conversions in rows]


DECISIONS = [
    pytest.param(counts(("a", 60, 5), ("b", 28, 9)), 100, None,
                 "not enough data: 112 more sends (at least 100 per variant)", id="short-of-the-minimum"),
    pytest.param(counts(("a", 1000, 100), ("b", 1000, 150)), 100, "b",
                 "b beats a on clicks, 95% confidence", id="clear-winner"),
    pytest.param(counts(("a", 1000, 100), ("b", 1000, 110)), 100, None,
                 "no significant difference on clicks yet: b 11.0% against a 10.0%, p = {p(110, 1000, 100, 1000)}; "
                 "a call at 95% confidence needs p < 0.05", id="too-close"),
    pytest.param(counts(("a", 500, 50), ("b", 500, 50)), 100, None,
                 "no significant difference on clicks yet: a and b are level at 10.0%", id="level"),
    # b against a: p = 0.035, significant alone, but not at the 0.025 each of two comparisons must reach
    pytest.param(counts(("a", 1000, 100), ("b", 1000, 130), ("c", 1000, 60)), 100, None,
                 "no significant difference on clicks yet: b 13.0% against a 10.0%, p = {p(130, 1000, 100, 1000)}; "
                 "a call at 95% confidence needs p < 0.025", id="three-variants-bonferroni"),
    pytest.param(counts(("a", 1000, 100), ("b", 1000, 160), ("c", 1000, 60)), 100, "b",
                 "b beats a and c on clicks, 95% confidence", id="three-variants-winner"),
    pytest.param(counts(("a", 1000, 100), ("b", 1000, 150)), 2000, None,
                 "not enough data: 2000 more sends (at least 2000 per variant)", id="min-sends-holds-a-clear-lead"),
]


@pytest.mark.parametrize(("rows", "min_sends", "winner", "verdict"), DECISIONS)
def test_the_decision_rule(rows: list[VariantCount], min_sends: int, winner: str | None, verdict: str) -> None:
    result = evaluate(rows, goal_label="clicks", confidence=0.95, min_sends=min_sends)
    expected = re.sub(r"\{p\((\d+), (\d+), (\d+), (\d+)\)\}",
                      lambda m: f"{_pearson(*(int(g) for g in m.groups()))[1]:.3f}", verdict)
    assert (result.winner, result.verdict) == (winner, expected)
    if "{p(130" in verdict:
        assert 0.025 < _pearson(130, 1000, 100, 1000)[1] < 0.05


def test_a_comparison_carries_the_difference_its_interval_the_p_value_and_the_probability() -> None:
    result = evaluate(counts(("a", 1000, 100), ("b", 1000, 150)), goal_label="clicks", confidence=0.95, min_sends=100)
    [c] = result.comparisons
    assert (c.variant, c.against) == ("b", "a")
    assert c.difference == pytest.approx(0.05)
    assert (c.low, c.high) == pytest.approx(newcombe(150, 1000, 100, 1000, 0.95))
    assert c.p_value == pytest.approx(_pearson(150, 1000, 100, 1000)[1])
    assert c.probability_to_beat == pytest.approx(probability_to_beat(150, 1000, 100, 1000))
    assert result.leader == "b" and result.more_sends == 0


def test_a_higher_confidence_needs_a_smaller_p_value() -> None:
    rows = counts(("a", 1000, 100), ("b", 1000, 135))  # p = 0.014
    assert evaluate(rows, goal_label="clicks", confidence=0.95, min_sends=100).winner == "b"
    strict = evaluate(rows, goal_label="clicks", confidence=0.99, min_sends=100)
    assert strict.winner is None and "needs p < 0.01" in strict.verdict


# --- counting a goal: per lead, once, within the goal's window

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)


def test_clicks_count_each_lead_once_in_the_variant_it_was_sent_first() -> None:
    sends = [StepSend(1, "a", 10, T0), StepSend(1, "a", 11, T0 + 40 * DAY),  # re-entered: sent again
             StepSend(2, "b", 12, T0), StepSend(3, "b", 13, T0)]
    engaged = {11: {"email_click"}, 12: {"email_open"}, 13: {"email_click", "email_open"}}
    got = count_goal(sends, "click", T0 + 50 * DAY, variants=["a", "b"], engaged=engaged, goal_times={})
    assert [(c.variant, c.sends, c.conversions) for c in got] == [("a", 1, 1), ("b", 2, 1)]
    opened = count_goal(sends, "open", T0 + 50 * DAY, variants=["a", "b"], engaged=engaged, goal_times={})
    assert [(c.sends, c.conversions) for c in opened] == [(1, 1), (2, 2)]  # a click is an open


def test_a_windowed_goal_counts_ripe_sends_and_goals_inside_the_window() -> None:
    goal = SqlGoal(sql_within=Duration(days=14))
    sends = [StepSend(1, "a", 1, T0), StepSend(2, "a", 2, T0), StepSend(3, "b", 3, T0),
             StepSend(4, "b", 4, T0 + 10 * DAY)]  # its window is still open at T0 + 20 days
    times = {1: [T0 + 3 * DAY], 2: [T0 + 15 * DAY], 3: [T0 - DAY, T0 + 14 * DAY], 4: [T0 + 11 * DAY]}
    got = count_goal(sends, goal, T0 + 20 * DAY, variants=["a", "b"], engaged={}, goal_times=times)
    assert [(c.variant, c.sends, c.conversions) for c in got] == [("a", 2, 1), ("b", 1, 1)]
    event = EventGoal(event="demo_request", within=Duration(days=2))
    got = count_goal(sends, event, T0 + 20 * DAY, variants=["a", "b"], engaged={}, goal_times=times)
    assert [(c.sends, c.conversions) for c in got] == [(2, 0), (2, 1)]
