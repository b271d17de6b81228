"""The scoring impact against real databases (SQLite files and PostgreSQL): leads whose page views the real intake
recorded under the old rules (5 points each, MQL at 40), compared with new rules that raise a page view to 8 points
and add a score-and-fit promotion at 60 and a disqualification of a rival's domain. Which leads cross which line is
worked out here from each lead's number of page views alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from db_fixtures import engine, migrated_url, postgres_available, postgres_template  # noqa: F401
from replay_world import table_contents
from sqlalchemy import select

from nurture.application.definition_impact import scoring_impact
from nurture.application.event_input import EventIn
from nurture.application.record_events import record_events
from nurture.application.save_lead import save_lead
from nurture.definitions.loader import load_catalog
from nurture.definitions.sales import SalesRules, load_sales
from nurture.definitions.scoring import ScoringRules, load_scoring
from nurture.storage.database import transaction
from nurture.storage.models import Lead

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
OLD_SCORING = "behaviour:\n  events:\n    page_view: 5\nthresholds:\n  mql: 40\n"
NEW_SCORING = OLD_SCORING.replace("page_view: 5", "page_view: 8")
NEW_SALES = """\
promotion:
  score_and_fit:
    - {name: hot, score: 60}
disqualify:
  - {name: rival, when: {domain: [rival.example]}}
"""
VIEWS = list(range(12))  # lead i viewed i pages


def write_rules(folder: Path, scoring: str, sales: str | None = None) -> tuple[ScoringRules, SalesRules]:
    folder.mkdir(parents=True)
    (folder / "scoring.yaml").write_text(scoring, encoding="utf-8")
    if sales is not None:
        (folder / "sales.yaml").write_text(sales, encoding="utf-8")
    rules, problems = load_scoring(folder)
    sales_rules, sales_problems = load_sales(folder)
    assert not problems and not sales_problems
    return rules, sales_rules


def email(index: int) -> str:
    return f"viewer{index}@example.com"


@pytest.fixture
def leads(engine, tmp_path: Path) -> dict[int, int]:
    """Lead i (stage lead) with i page views a minute apart, recorded under the old rules; returns i -> lead id."""
    folder = tmp_path / "old"
    rules, _sales = write_rules(folder, OLD_SCORING)
    catalog = load_catalog(folder)
    for index in VIEWS:
        save_lead(engine, catalog, rules, {"email": email(index), "stage": "lead"}, now=T0, actor="api")
        views = [EventIn(email(index), "page_view", occurred_at=T0 + timedelta(minutes=m)) for m in range(index)]
        if views:
            record_events(engine, catalog, rules, views, now=T0 + timedelta(hours=1), actor="api")
    save_lead(engine, catalog, rules, {"email": "spy@rival.example", "stage": "lead"}, now=T0, actor="api")
    with transaction(engine, read_only=True) as conn:
        ids = dict(conn.execute(select(Lead.__table__.c.email, Lead.__table__.c.id)).all())
    return {index: ids[email(index)] for index in VIEWS} | {-1: ids["spy@rival.example"]}


def test_raising_an_event_s_points_shows_exactly_the_leads_that_cross_the_mql_threshold(engine, leads, tmp_path):
    old, old_sales = write_rules(tmp_path / "a", OLD_SCORING)
    new, new_sales = write_rules(tmp_path / "b", NEW_SCORING, NEW_SALES)
    now = T0 + timedelta(days=1)

    impact = scoring_impact(engine, old, new, old_sales, new_sales, now=now)

    crossing = sorted(leads[i] for i in VIEWS if 5 * i < 40 <= 8 * i)  # 5, 6 and 7 page views
    promoted = sorted(leads[i] for i in VIEWS if 8 * i >= 60)  # no promotion rule before
    assert impact.leads == len(VIEWS) + 1
    assert (impact.become_mql.count, sorted(impact.become_mql.examples)) == (len(crossing), crossing)
    assert (impact.band_changes.count, sorted(impact.band_changes.examples)) == (len(crossing), crossing)
    assert dict(impact.moves) == {("below mql", "mql"): len(crossing)}
    assert impact.promoted.count == len(promoted) and set(impact.promoted.examples) <= set(promoted)
    assert (impact.disqualified.count, impact.disqualified.examples) == (1, [leads[-1]])
    assert impact.score_changes.count == len([i for i in VIEWS if i > 0])
    assert impact.lines()[0].startswith(f"{len(crossing)} leads change score band, {len(crossing)} become MQL, "
                                        f"{len(promoted)} would be promoted, 1 would be disqualified")
    paged = scoring_impact(engine, old, new, old_sales, new_sales, now=now, page=4)
    assert paged.to_json() == impact.to_json()


def test_the_rules_that_ran_rescore_to_the_stored_scores_and_an_unchanged_file_changes_nothing(engine, leads, tmp_path):
    old, old_sales = write_rules(tmp_path / "a", OLD_SCORING)
    impact = scoring_impact(engine, old, old, old_sales, old_sales, now=T0 + timedelta(days=1))
    assert impact.leads == len(VIEWS) + 1
    assert impact.to_json()["band_changes"]["count"] == impact.score_changes.count == 0
    with transaction(engine, read_only=True) as conn:
        stored = dict(conn.execute(select(Lead.__table__.c.id, Lead.__table__.c.score)).all())
    assert {leads[i]: stored[leads[i]] for i in VIEWS} == {leads[i]: 5.0 * i for i in VIEWS}
    assert [i for i in VIEWS if _stage(engine, leads[i]) == "mql"] == [i for i in VIEWS if 5 * i >= 40], "MQLs under the old rules"


def _stage(engine, lead_id: int) -> str:
    with transaction(engine, read_only=True) as conn:
        return conn.execute(select(Lead.__table__.c.stage).where(Lead.__table__.c.id == lead_id)).scalar_one()


def test_the_impact_reads_and_never_writes(engine, leads, tmp_path):
    old, old_sales = write_rules(tmp_path / "a", OLD_SCORING)
    new, new_sales = write_rules(tmp_path / "b", NEW_SCORING, NEW_SALES)
    before = table_contents(engine)
    scoring_impact(engine, old, new, old_sales, new_sales, now=T0 + timedelta(days=1), page=4)
    assert table_contents(engine) == before
