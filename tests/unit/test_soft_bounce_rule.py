"""The soft bounce rule: how many temporary delivery failures within how long suppress a lead
(core/suppression.py), and its place in policy.yaml (`soft_bounces: {limit, within}`), checked like every key."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from nurture.core.suppression import soft_bounce_span, soft_bounces_suppress
from nurture.definitions.durations import Duration
from nurture.definitions.loader import load_catalog

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
WEEK = timedelta(days=7)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


@pytest.mark.parametrize(
    ("days", "at", "limit", "expected"),
    [
        pytest.param([0], 0, 3, False, id="one-of-three"),
        pytest.param([0, 1], 1, 3, False, id="two-of-three"),
        pytest.param([0, 1, 2], 2, 3, True, id="three-within-a-week"),
        pytest.param([0, 3.5, 7], 7, 3, True, id="the-window-holds-both-ends"),
        pytest.param([0, 4, 7.01], 7.01, 3, False, id="spread-over-more-than-a-week"),
        pytest.param([0, 4, 8, 9], 9, 3, True, id="the-window-slides"),
        pytest.param([0, 1, 20, 3], 3, 3, True, id="a-late-one-counts-with-those-around-its-time"),
        pytest.param([0, 10, 20, 5], 5, 3, False, id="a-late-one-between-two-far-apart"),
        pytest.param([2, 2, 2], 2, 3, True, id="same-instant"),
        pytest.param([5], 5, 1, True, id="limit-one-every-soft-bounce-suppresses"),
        pytest.param([-30, -20, -10, 0], 0, 2, False, id="old-ones-outside-the-span-are-ignored"),
    ],
)
def test_soft_bounces_suppress_at_the_limit_within_the_window(days: list[float], at: float, limit: int,
                                                              expected: bool) -> None:
    assert soft_bounces_suppress([day(d) for d in days], day(at), limit=limit, within=WEEK) is expected


def test_the_span_read_covers_every_window_that_holds_the_new_soft_bounce() -> None:
    assert soft_bounce_span(day(10), WEEK) == (day(3), day(17))


EARLIEST, LATEST = datetime.min.replace(tzinfo=timezone.utc), datetime.max.replace(tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("at", "within", "expected"),
    [
        pytest.param(EARLIEST, WEEK, (EARLIEST, EARLIEST + WEEK), id="year-one"),
        pytest.param(EARLIEST + timedelta(days=2), WEEK, (EARLIEST, EARLIEST + timedelta(days=9)), id="two-days-in"),
        pytest.param(LATEST, WEEK, (LATEST - WEEK, LATEST), id="year-9999"),
        pytest.param(T0, timedelta(days=10**6), (EARLIEST, T0 + timedelta(days=10**6)), id="window-past-year-one"),
        pytest.param(T0, timedelta(days=3 * 10**6), (EARLIEST, LATEST), id="window-past-both-ends"),
    ],
)
def test_the_span_stops_at_the_first_and_last_instants_a_datetime_holds(at: datetime, within: timedelta,
                                                                          expected: tuple[datetime, datetime]) -> None:
    assert soft_bounce_span(at, within) == expected


def test_soft_bounces_at_the_edges_of_the_calendar_are_counted() -> None:
    assert soft_bounces_suppress([EARLIEST, EARLIEST + timedelta(days=1)], EARLIEST + timedelta(days=1), limit=2,
                                 within=WEEK)
    assert soft_bounces_suppress([LATEST - timedelta(days=1), LATEST], LATEST, limit=2, within=WEEK)
    assert not soft_bounces_suppress([LATEST - timedelta(days=8), LATEST], LATEST, limit=2, within=WEEK)


def load_policy(folder: Path, text: str):
    folder.mkdir(exist_ok=True)
    (folder / "policy.yaml").write_text(text, encoding="utf-8")
    return load_catalog(folder)


def test_the_policy_default_is_three_soft_bounces_within_seven_days(tmp_path: Path) -> None:
    catalog = load_policy(tmp_path / "campaigns", "timezone: UTC\n")
    assert catalog.problems == []
    assert (catalog.policy.soft_bounces.limit, catalog.policy.soft_bounces.within) == (3, Duration(days=7))


def test_the_policy_sets_the_limit_and_the_window(tmp_path: Path) -> None:
    catalog = load_policy(tmp_path / "campaigns", "soft_bounces:\n  limit: 5\n  within: 2w\n")
    assert catalog.problems == []
    assert (catalog.policy.soft_bounces.limit, catalog.policy.soft_bounces.within) == (5, Duration(days=14))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("soft_bounces:\n  limit: 0\n", "policy.yaml:2: limit: Input should be greater than or equal to 1",
                     id="limit-zero"),
        pytest.param("soft_bounces:\n  limit: 3\n  within: 0s\n", "policy.yaml:3: within: must be longer "
                     "than 0s, such as 7d", id="window-zero"),
        pytest.param("soft_bounces:\n  within: a week\n", "policy.yaml:2: within: invalid duration 'a week'",
                     id="window-not-a-duration"),
        pytest.param("soft_bounces:\n  within: 1000000d\n", "policy.yaml:2: within: must be at most 365d, such as 7d",
                     id="window-a-million-days"),
        pytest.param("soft_bounces:\n  within: 53w\n", "policy.yaml:2: within: must be at most 365d", id="window-53-weeks"),
        pytest.param("soft_bounces:\n  within: 1w2d\n", "policy.yaml:2: within: must be one number and a unit",
                     id="window-combined"),
        pytest.param("soft_bounces:\n  limit: '3'\n", "policy.yaml:2: limit: Input should be a valid integer",
                     id="limit-as-text"),
        pytest.param("soft_bounces: {limt: 3}\n", "policy.yaml:1: unknown key 'limt' (did you mean 'limit'?)",
                     id="typo"),
    ],
)
def test_a_bad_soft_bounce_rule_is_reported_at_its_line(tmp_path: Path, text: str, expected: str) -> None:
    found = [str(problem) for problem in load_policy(tmp_path / "campaigns", text).problems]
    assert len(found) == 1 and expected in found[0], found


def test_the_shipped_policy_spells_out_the_default() -> None:
    shipped = load_catalog(Path(__file__).resolve().parents[2] / "campaigns").raise_for_problems().policy
    assert (shipped.soft_bounces.limit, shipped.soft_bounces.within) == (3, Duration(days=7))
    assert "soft_bounces:\n  limit: 3\n  within: 7d\n" in (Path(__file__).resolve().parents[2] / "campaigns"
                                                          / "policy.yaml").read_text(encoding="utf-8")
