"""Scores kept one event at a time (ScoreAccumulator) equal scores computed over the whole history, and fit items
remembered by field values equal fit items computed afresh: random histories and random leads."""

from __future__ import annotations

import random
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nurture.core import scoring
from nurture.core.facts import Engagement, LeadView
from nurture.core.scoring import BEHAVIOUR, ScoreAccumulator, ScoreBreakdown, ScoreItem, decayed, fit_items, score
from nurture.definitions.scoring import SCORING_FILE, ScoringRules, load_scoring

NOW = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)

RULES = """\
behaviour:
  {half_life}
  events:
    page_view: {{points: 1, max_per_day: 5}}
    email_open: {{points: 1.5, max_per_day: 3}}
    email_click: 3
    content_download: 10
    webinar_attended: 15.25
    careers_page_view: -10
    unsubscribe: -50
fit:
  - {{label: "company size 200+", when: {{company_size: {{gte: 200}}}}, points: 15}}
  - {{label: "exactly one", when: {{seats: 1}}, points: 2}}
  - {{label: "flag", when: {{flag: true}}, points: 3}}
  - {{label: "target industry", when: {{industry: [software, saas, logistics]}}, points: 10}}
  - {{label: "senior title", when: {{title: {{matches: "(?i)\\\\b(vp|head|director)\\\\b"}}}}, points: 10, group: seniority}}
  - {{label: "any title", when: {{title: {{contains: [a, e]}}}}, points: 1, group: seniority}}
  - {{label: "tagged", when: {{tags: {{in: [vip, partner]}}}}, points: 4}}
  - {{label: "one or more", when: {{score_hint: {{gte: 1}}}}, points: 1}}
  - {{label: "written with a point", when: {{score_hint: {{contains: "."}}}}, points: 5}}
thresholds:
  mql: 40
{floor}
"""


def rules_for(tmp_path: Path, half_life: str | None, floor: int | None) -> ScoringRules:
    text = RULES.format(half_life=f"half_life: {half_life}" if half_life else "",
                        floor=f"floor: {floor}" if floor is not None else "")
    (tmp_path / SCORING_FILE).write_text(textwrap.dedent(text), encoding="utf-8")
    rules, problems = load_scoring(tmp_path)
    assert problems == []
    return rules


def reference_score(rules: ScoringRules, lead: LeadView, events: list[tuple[Engagement, float]],
                    now: datetime) -> ScoreBreakdown:
    """:func:`score` as it was written before the accumulator: the oracle the new code must match bit for bit."""
    half_life = rules.behaviour.half_life
    half_life_seconds = half_life.as_timedelta().total_seconds() if half_life else None
    groups: dict[str, list] = {}  # type -> [latest, points, raw, count]
    for event, awarded in events:
        if not awarded:
            continue
        group = groups.setdefault(event.type, [event.at, 0.0, 0.0, 0])
        group[1] += decayed(awarded, (now - event.at).total_seconds(), half_life_seconds)
        group[2] += awarded
        group[0] = max(group[0], event.at)
        group[3] += 1
    behaviour_items = sorted(
        (ScoreItem(BEHAVIOUR, kind, round(g[1], 2), round(g[2], 2), g[0], g[3]) for kind, g in groups.items()),
        key=lambda item: (-item.points, item.label),
    )
    fits = scoring._fit_items(rules, lead)
    behaviour = sum(group[1] for group in groups.values())
    fit = sum(item.points for item in fits)
    total = behaviour + fit
    if rules.floor is not None:
        total = max(total, rules.floor)
    return ScoreBreakdown(round(total, 2), round(behaviour, 2), round(fit, 2), (*behaviour_items, *fits))


TYPES = ["page_view", "email_open", "email_click", "content_download", "webinar_attended", "careers_page_view",
         "unsubscribe", "unscored"]


def random_events(rng: random.Random, count: int) -> list[tuple[Engagement, float]]:
    """Events spread over a year before NOW and up to a day after it, with points as they could have been awarded
    (zero included: capped or unknown types)."""
    events = []
    for _ in range(count):
        at = NOW + timedelta(seconds=rng.randint(-365 * 86400, 86400))
        points = rng.choice([0.0, 1.0, 1.5, 3.0, 10.0, 15.25, -10.0, -50.0])
        events.append((Engagement(rng.choice(TYPES), at), points))
    return events


@pytest.mark.parametrize(("half_life", "floor"), [("30d", -100), ("7d", None), (None, None), ("1d12h", 0)])
def test_adding_events_one_at_a_time_gives_exactly_the_score_of_the_whole_history(tmp_path, half_life, floor):
    rules = rules_for(tmp_path, half_life, floor)
    rng = random.Random(f"{half_life}{floor}")
    lead = LeadView(key="1", email="a@example.com", attributes={"company_size": 500, "industry": "SaaS"})
    fit = fit_items(rules, lead)
    for _history in range(40):
        now = NOW + timedelta(hours=rng.randint(-30, 30))
        events = random_events(rng, rng.randint(0, 60))
        accumulator = ScoreAccumulator(rules, now)
        for count, (event, points) in enumerate(events, start=1):
            accumulator.add(event.type, event.at, points)
            # exact: the same additions in the same order, so not even the last bit may differ
            assert accumulator.breakdown(rules, fit) == reference_score(rules, lead, events[:count], now)
        assert score(rules, lead, events, now, fit=fit) == reference_score(rules, lead, events, now)
        assert score(rules, lead, events, now) == reference_score(rules, lead, events, now)


def test_an_accumulator_with_nothing_added_is_the_fit_alone(tmp_path):
    rules = rules_for(tmp_path, "30d", -100)
    lead = LeadView(key="1", email="a@example.com", attributes={"company_size": 500})
    breakdown = ScoreAccumulator(rules, NOW).breakdown(rules, fit_items(rules, lead))
    assert (breakdown.total, breakdown.behaviour, breakdown.fit) == (15, 0, 15)
    assert breakdown == score(rules, lead, [], NOW) == reference_score(rules, lead, [], NOW)


VALUES = [None, 0, 1, 1.0, 1.5, True, False, 200, 199, 200.0, "200", "1", "true", "SaaS", "software", " saas ",
          "VP Sales", "Head of Ops", "analyst", "", [], ["vip"], ["VIP", "x"], ("partner",), ["a", 1], {"a": 1},
          [{"a": 1}]]


def test_remembered_fit_items_equal_fresh_ones_for_random_leads(tmp_path):
    rules = rules_for(tmp_path, "30d", None)
    rng = random.Random(7)
    names = ["company_size", "industry", "title"]
    custom_names = ["seats", "flag", "score_hint", "tags"]
    for _ in range(3000):
        attributes = {name: value for name in names if (value := rng.choice(VALUES)) is not None}
        custom = {name: rng.choice(VALUES) for name in custom_names if rng.random() < 0.7}
        tags = tuple(rng.choice(["vip", "partner", "other", "VIP"]) for _ in range(rng.randint(0, 2)))
        lead = LeadView(key="1", email="a@example.com", tags=tags, attributes=attributes, custom=custom)
        assert fit_items(rules, lead) == scoring._fit_items(rules, lead)


@pytest.mark.parametrize(("first", "second"), [(True, 1), (1, 1.0), (1.0, True), ("1", 1), (200, 200.0)])
def test_values_that_compare_equal_in_python_are_remembered_apart(tmp_path, first, second):
    rules = rules_for(tmp_path, "30d", None)
    for value in (first, second, first):
        lead = LeadView(key="1", email="a@example.com", custom={"seats": value, "flag": value, "score_hint": value},
                        attributes={"company_size": value})
        assert fit_items(rules, lead) == scoring._fit_items(rules, lead)


def test_fit_items_of_leads_with_unhashable_values_are_computed_each_time(tmp_path):
    rules = rules_for(tmp_path, "30d", None)
    lead = LeadView(key="1", email="a@example.com", custom={"seats": {"n": 1}, "flag": True})
    assert [item.label for item in fit_items(rules, lead)] == ["flag"]
    assert scoring._fit_key(scoring._fit_cache(rules).names, lead) is None


def test_the_remembered_items_belong_to_their_rules(tmp_path):
    one = rules_for(tmp_path, "30d", None)
    other_folder = tmp_path / "other"
    other_folder.mkdir()
    (other_folder / SCORING_FILE).write_text("fit:\n  - {label: big, when: {company_size: {gte: 200}}, points: 99}\n",
                                             encoding="utf-8")
    other, problems = load_scoring(other_folder)
    assert problems == []
    lead = LeadView(key="1", email="a@example.com", attributes={"company_size": 500})
    assert [item.points for item in fit_items(one, lead)] == [15]
    assert [item.points for item in fit_items(other, lead)] == [99]
    assert [item.points for item in fit_items(one, lead)] == [15]


def test_leads_without_fields_share_their_fit_unless_the_rules_read_built_in_fields(tmp_path):
    rules = rules_for(tmp_path, "30d", None)
    blank = [LeadView(key=str(i), email=f"l{i}@example.com", stage=stage, score=i)
             for i, stage in enumerate(["lead", "mql", "sql"])]
    for lead in blank:
        assert fit_items(rules, lead) == scoring._fit_items(rules, lead) == []
    (tmp_path / "email").mkdir()
    (tmp_path / "email" / SCORING_FILE).write_text(
        'fit:\n  - {label: work email, when: {email: {matches: "@acme"}}, points: 5}\n'
        '  - {label: mql, when: {stage: mql}, points: 1}\n', encoding="utf-8")
    by_email, problems = load_scoring(tmp_path / "email")
    assert problems == []
    leads = [LeadView(key="1", email="a@acme.example"), LeadView(key="2", email="b@other.example", stage="mql"),
             LeadView(key="3", email="c@acme.example", stage="mql")]
    assert [[item.label for item in fit_items(by_email, lead)] for lead in leads] == [
        ["work email"], ["mql"], ["work email", "mql"]]


def test_new_lead_scores_remembered_by_their_values_equal_the_scores_of_their_views(tmp_path):
    rules = rules_for(tmp_path, "30d", -5)
    (tmp_path / "built_in").mkdir()
    (tmp_path / "built_in" / SCORING_FILE).write_text(
        'fit:\n  - {label: work email, when: {email: {matches: "@acme"}}, points: 5}\n'
        '  - {label: mql, when: {stage: mql}, points: 1}\n  - {label: east, when: {timezone: America/New_York}, points: 2}\n'
        '  - {label: none yet, when: {score: 0}, points: 1}\n  - {label: seats, when: {seats: 1}, points: 3}\n'
        '  - {label: vip, when: {tags: {in: [vip]}}, points: 4}\n', encoding="utf-8")
    built_in, problems = load_scoring(tmp_path / "built_in")
    assert problems == []
    rng = random.Random(11)
    columns_named = ["company_size", "industry", "title", "seats"]  # seats: no column, a custom field only
    for ruleset in (rules, built_in):
        scores = scoring.NewLeadScores(ruleset)
        for number in range(3000):
            email = rng.choice(["a@acme.example", "b@other.example"])
            columns = {name: rng.choice(VALUES) for name in columns_named if rng.random() < 0.8}
            columns |= {"stage": rng.choice(["lead", "mql"]), "timezone": rng.choice([None, "America/New_York"])}
            custom = {name: rng.choice(VALUES) for name in ("seats", "flag", "score_hint", "title")
                      if rng.random() < 0.5}
            tags = [rng.choice(["vip", "partner", "VIP"]) for _ in range(rng.randint(0, 2))]
            attributes = {name: value for name, value in columns.items()
                          if name in scoring.LEAD_ATTRIBUTES and value is not None}
            view = LeadView(key=email, email=email, stage=columns["stage"], timezone=columns["timezone"],
                            tags=tuple(tags), attributes=attributes, custom=custom)
            assert scores(email, columns, tags, custom) == scoring.score_without_events(ruleset, view), number
        assert 0 < len(scores.known) < 3000  # leads that share the values the rules read share a look-up


@pytest.mark.parametrize(("half_life", "floor"), [("30d", -100), (None, 0)])
def test_totals_are_the_breakdowns_figures_to_the_last_bit(tmp_path, half_life, floor):
    rules = rules_for(tmp_path, half_life, floor)
    rng = random.Random(f"totals{half_life}{floor}")
    for _lead in range(30):
        lead = LeadView(key="1", email="a@example.com",
                        attributes={"company_size": rng.choice([None, 10, 500]), "industry": rng.choice(["SaaS", "x"])})
        fit = fit_items(rules, lead)
        accumulator = ScoreAccumulator(rules, NOW)
        for event, points in [(None, 0.0), *random_events(rng, rng.randint(0, 40))]:
            if event is not None:
                if rng.random() < 0.2:
                    accumulator.add_group(event.type, points * 0.37, points, 3, event.at)
                else:
                    accumulator.add(event.type, event.at, points)
            full, totals = accumulator.breakdown(rules, fit), accumulator.totals(rules, fit)
            figures = [(type(value), repr(value)) for value in (full.total, full.behaviour, full.fit)]
            assert [(type(value), repr(value)) for value in (totals.total, totals.behaviour, totals.fit)] == figures
            assert totals.items == ()


@pytest.mark.parametrize("half_life", ["30d", None])
def test_an_accumulator_given_its_half_life_sums_as_one_given_the_rules(tmp_path, half_life):
    rules = rules_for(tmp_path, half_life, None)
    rng = random.Random(f"decaying{half_life}")
    given = ScoreAccumulator.decaying(scoring.half_life_seconds(rules), NOW)
    made = ScoreAccumulator(rules, NOW)
    assert (given.half_life_seconds, given.now) == (made.half_life_seconds, made.now)
    for event, points in random_events(rng, 50):
        given.add(event.type, event.at, points)
        made.add(event.type, event.at, points)
    assert given.breakdown(rules, []) == made.breakdown(rules, []) and given.groups() == made.groups()


def test_awarded_points_are_event_points_without_the_reason(tmp_path):
    text = """\
    behaviour:
      events:
        page_view: {points: 1, max_per_day: 2}
        download:
          - {when: {content: {contains: buyers-guide}}, points: 20, max_per_day: 1}
          - {when: {content: ebook}, points: 5}
          - {points: 0.5}
        pricing:
          - {when: {url: {contains: /pricing}}, points: 10}
    """
    (tmp_path / SCORING_FILE).write_text(textwrap.dedent(text), encoding="utf-8")
    rules, problems = load_scoring(tmp_path)
    assert problems == []
    properties = [{}, {"content": "buyers-guide-2026"}, {"content": "ebook"}, {"content": None}, {"url": "/pricing"},
                  {"url": "/about"}, {"content": ["ebook"]}]
    for kind in ("page_view", "download", "pricing", "unknown"):
        for found in properties:
            for scored_today in range(4):
                event = Engagement(kind, NOW, properties=found)
                assert scoring.awarded_points(rules, event, scored_today) == scoring.event_points(
                    rules, event, scored_today)[0]
