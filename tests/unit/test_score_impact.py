"""The pure parts of the scoring impact (``nurture.core.score_impact``): a lead's history rescored under a version of
the rules (daily caps counted again, a sales verdict's points kept), its score band, and what it would become."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from nurture.core.facts import Engagement, LeadView
from nurture.core.score_impact import NO_THRESHOLD, ScoringImpact, band, lead_impact, rescored
from nurture.definitions.sales import SalesRules
from nurture.definitions.scoring import ScoringRules

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def rules(page_view: float | dict, mql: float | None = 40, **more) -> ScoringRules:
    data = {"behaviour": {"events": {"page_view": page_view, "webinar_attended": 30}},
            "fit": [{"label": "big", "when": {"company_size": {"gte": 200}}, "points": 10}], **more}
    if mql is not None:
        data["thresholds"] = {"mql": mql}
    return ScoringRules.model_validate(data)


def views(count: int, day: int = 1) -> list[tuple[Engagement, float]]:
    start = datetime(2026, 3, day, 9, 0, tzinfo=UTC)
    return [(Engagement("page_view", start + timedelta(minutes=i)), 0.0) for i in range(count)]


LEAD = LeadView(key="1", email="a@example.com", stage="lead", attributes={"company_size": 500})


def test_every_event_is_scored_again_with_the_daily_cap_counted_per_utc_day():
    capped = rules({"points": 5, "max_per_day": 3})
    history = views(5, day=1) + views(2, day=2)
    assert rescored(capped, LEAD, history, NOW).total == 5 * (3 + 2) + 10
    assert rescored(rules(5), LEAD, history, NOW).total == 5 * 7 + 10


def test_a_sales_verdict_keeps_its_points_and_unknown_types_score_nothing():
    history = [*views(2), (Engagement("sales_feedback", NOW - timedelta(days=1)), -30.0),
               (Engagement("tweet", NOW - timedelta(days=1)), 99.0)]
    assert rescored(rules(5), LEAD, history, NOW, kept_types={"sales_feedback"}).total == 10 - 30 + 10


@pytest.mark.parametrize(("mql", "total", "expected"), [(40, 39.99, "below mql"), (40, 40, "mql"), (None, 99, NO_THRESHOLD)])
def test_a_band_is_the_side_of_the_mql_threshold(mql, total, expected):
    assert band(rules(5, mql=mql), total) == expected


def test_raising_an_event_s_points_makes_a_lead_an_mql_and_a_score_and_fit_rule_promotes_it():
    sales = SalesRules.model_validate({"promotion": {"score_and_fit": [{"name": "hot", "score": 60, "min_fit": 10}]}})
    impact = lead_impact(rules(5), rules(10), sales, sales, LEAD, views(6), NOW)
    assert (impact.old.total, impact.new.total) == (40.0, 70.0)
    assert (impact.old_band, impact.new_band) == ("mql", "mql")
    assert (impact.becomes_mql, impact.promoted, impact.disqualified) == (False, True, False)
    fewer = lead_impact(rules(5), rules(10), sales, sales, LEAD, views(3), NOW)  # 25 -> 40
    assert (fewer.old_band, fewer.new_band, fewer.becomes_mql, fewer.promoted) == ("below mql", "mql", True, False)


def test_an_mql_does_not_become_one_again_and_a_waiting_recycled_lead_is_left_be():
    mql = LeadView(key="1", email="a@example.com", stage="mql", attributes={"company_size": 500})
    assert not lead_impact(rules(5), rules(10), None, None, mql, views(3), NOW).becomes_mql
    recycled = LeadView(key="1", email="a@example.com", stage="recycled", attributes={"company_size": 500})
    sales = SalesRules.model_validate({"promotion": {"score_and_fit": [{"name": "hot", "score": 30}]}})
    waiting = lead_impact(rules(5), rules(10), None, sales, recycled, views(3), NOW, waiting=True)
    assert (waiting.becomes_mql, waiting.promoted) == (False, False)
    free = lead_impact(rules(5), rules(10), None, sales, recycled, views(3), NOW)
    assert (free.becomes_mql, free.promoted) == (True, True)


def test_a_new_disqualification_rule_counts_the_leads_it_would_disqualify():
    rival = SalesRules.model_validate({"disqualify": [{"name": "rival", "when": {"domain": ["example.com"]}}]})
    impact = lead_impact(rules(5), rules(5), None, rival, LEAD, views(1), NOW)
    assert (impact.disqualified, impact.promoted, impact.becomes_mql) == (True, False, False)


def test_the_impact_counts_leads_with_a_few_ids_and_says_it_in_one_sentence():
    impact = ScoringImpact()
    for lead_id, count in enumerate([0, 3, 3, 3, 3, 3, 3, 7], start=1):
        impact.add(lead_id, lead_impact(rules(5), rules(10), None, None, LEAD, views(count), NOW))
    assert (impact.leads, impact.band_changes.count, impact.become_mql.count) == (8, 6, 6)
    assert impact.band_changes.examples == [2, 3, 4, 5, 6]  # five ids at most
    assert impact.lines()[0] == "6 leads change score band, 6 become MQL, 0 would be promoted (of 8 leads; 7 change score)"
    assert "  below mql -> mql: 6" in impact.lines()
    data = json.loads(json.dumps(impact.to_json()))
    assert data["band_changes"]["moves"] == [{"from": "below mql", "to": "mql", "count": 6}]
    assert data["become_mql"] == {"count": 6, "examples": [2, 3, 4, 5, 6]}


@pytest.mark.parametrize(("old", "new", "sales", "live"), [
    (rules(5), rules(5), None, False),  # nothing changes
    (rules(5), rules(6), None, False),  # a score changes, on the same side of the threshold: not live
    (rules(5), rules(10), None, True),  # a band change (and a new MQL)
    (rules(5), rules(5), {"disqualify": [{"name": "rival", "when": {"domain": ["example.com"]}}]}, True),
    (rules(5), rules(5), {"promotion": {"score_and_fit": [{"name": "hot", "score": 10}]}}, True),
])
def test_the_plan_s_scoring_section_is_live_when_a_lead_changes_band_or_stage(old, new, sales, live):
    from nurture.application.plan_sections import RulesVersion, ScoringSection

    impact = ScoringImpact()
    new_sales = SalesRules.model_validate(sales) if sales is not None else None
    impact.add(1, lead_impact(old, new, None, new_sales, LEAD, views(3), NOW))  # 25 points under rules(5)
    section = ScoringSection([RulesVersion("scoring", "a", "b", True)], impact)
    assert section.live is live and section.to_json()["live"] is live
    assert section.lines()[0] == "scoring and sales impact (scoring.yaml a -> b):"
