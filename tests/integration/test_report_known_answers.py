"""The report against a generated dataset whose answers are known: every figure computed again here, from what the
generator says it wrote, on SQLite and PostgreSQL."""

from __future__ import annotations

import statistics
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from db_fixtures import engine, migrated_url, postgres_available, postgres_template  # noqa: F401  (fixtures)
from sqlalchemy.engine import Engine

from nurture.application.report import build_report
from nurture.definitions.spend import SpendEntry

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from report_data import NOW, RULES, Truth, generate

JAN = datetime(2026, 1, 1, tzinfo=timezone.utc)
MID_MARCH = datetime(2026, 3, 16, tzinfo=timezone.utc)


@pytest.fixture
def world(engine: Engine) -> Truth:
    return generate(engine, leads=1500, events=6000, months=3, seed=11, keep=True)


def _in(at: datetime | None, since: datetime, until: datetime) -> bool:
    return at is not None and since <= at < until


def _cost(cents: float, count: int) -> float | None:
    return round(cents / 100 / count, 2) if count else None


def test_funnel_velocity_and_sales_match_the_generated_leads(engine: Engine, world: Truth) -> None:
    data = build_report(engine, since=JAN, until=NOW, now=NOW).to_json()
    leads = world.leads
    mqls = [lead for lead in leads if _in(lead.mql_at, JAN, NOW)]
    sqls = [lead for lead in leads if _in(lead.sql_at, JAN, NOW)]
    decided = [lead for lead in leads if _in(lead.decided_at, JAN, NOW)]
    accepted = sum(1 for lead in decided if lead.accepted)
    funnel = data["funnel"]
    assert funnel["new_leads"] == len(leads) == 1500
    assert (funnel["new_mqls"], funnel["new_sqls"]) == (len(mqls), len(sqls))
    assert (funnel["accepted_by_sales"], funnel["rejected_by_sales"]) == (accepted, len(decided) - accepted)
    assert funnel["new_customers"] == sum(1 for lead in leads if _in(lead.customer_at, JAN, NOW))
    assert funnel["mql_to_sql_rate"] == round(len(sqls) / len(mqls), 4)
    per_month = Counter(lead.mql_at.month for lead in mqls if lead.mql_at)
    velocity = data["velocity"]
    assert [m["new_mqls"] for m in velocity["months"]] == [per_month[1], per_month[2], per_month[3]]
    assert velocity["lead_velocity_month"] == "2026-03"
    assert velocity["lead_velocity_rate"] == round((per_month[3] - per_month[2]) / per_month[2], 4)
    assert sum(w["new_leads"] for w in velocity["weeks"]) == 1500
    assert velocity["time_to_sql"]["sqls"] == len(sqls)
    sales = data["sales"]
    waiting = [lead for lead in leads if lead.sql_at and not lead.decided_at]
    assert sales["waiting_for_sales"] == len(waiting)
    assert {o["owner"]: o["waiting"] for o in sales["queue_by_owner"]} == Counter(lead.owner for lead in waiting)
    rejected = Counter(lead.reason for lead in decided if not lead.accepted)
    assert {r["reason"]: r["rejected"] for r in sales["rejection_reasons"]} == rejected
    by_owner = {o["owner"]: (o["accepted"], o["rejected"]) for o in sales["acceptance_by_owner"]}
    assert by_owner == {owner: (sum(1 for lead in decided if lead.owner == owner and lead.accepted),
                                sum(1 for lead in decided if lead.owner == owner and not lead.accepted))
                        for owner in {lead.owner for lead in decided}}
    # every rejected SQL had been nurtured by the generator's campaign
    assert {r["campaign"] for r in sales["rejections_by_campaign"]} == {"bench-nurture"}
    rules = {rule.split(": ")[0] for rule in RULES}
    assert {r["rule"]: (r["accepted"], r["rejected"]) for r in sales["acceptance_by_rule"]} == {
        rule: (sum(1 for lead in decided if lead.rule.startswith(rule + ": ") and lead.accepted),
               sum(1 for lead in decided if lead.rule.startswith(rule + ": ") and not lead.accepted))
        for rule in rules}
    # time to SQL, from each SQL's own MQL time
    waits = [(lead.sql_at - lead.mql_at).total_seconds() / 3600 for lead in sqls if lead.sql_at and lead.mql_at]
    cuts = statistics.quantiles(waits, n=20, method="inclusive")
    assert funnel["median_hours_mql_to_sql"] == velocity["time_to_sql"]["median_hours"] == round(
        statistics.median(waits), 2)
    assert (velocity["time_to_sql"]["p25_hours"], velocity["time_to_sql"]["p90_hours"]) == (
        round(cuts[4], 2), round(cuts[17], 2))
    # the queue, aged from when each lead became an SQL
    ages: dict[str, list[float]] = {}
    for lead in waiting:
        ages.setdefault(lead.owner, []).append((NOW - lead.sql_at).total_seconds() / 3600)
    assert {o["owner"]: (o["median_age_hours"], o["oldest_hours"]) for o in sales["queue_by_owner"]} == {
        owner: (round(statistics.median(found), 1), round(max(found), 1)) for owner, found in ages.items()}
    oldest = sorted(waiting, key=lambda lead: (lead.sql_at, lead.id))[0]
    assert sales["longest_waiting"][0]["lead_id"] == oldest.id
    assert sales["longest_waiting"][0]["rule"] == oldest.rule.split(": ")[0]


def test_part_days_and_one_campaign_count_as_whole_days_do(engine: Engine, world: Truth) -> None:
    """The period's part days come from the rows and its whole days from the rollups; a campaign's report comes
    from the rows alone: all three agree with the generated leads (every SQL of the generator was nurtured)."""
    since, until = JAN + timedelta(hours=9, minutes=30), NOW - timedelta(hours=7)
    decided = [lead for lead in world.leads if _in(lead.decided_at, since, until)]
    sqls = [lead for lead in world.leads if _in(lead.sql_at, since, until)]
    waits = [(lead.sql_at - lead.mql_at).total_seconds() / 3600 for lead in sqls if lead.sql_at and lead.mql_at]
    for campaign in (None, "bench-nurture"):
        data = build_report(engine, since=since, until=until, now=NOW, campaign=campaign).to_json()
        sales = data["sales"]
        assert {r["reason"]: r["rejected"] for r in sales["rejection_reasons"]} == Counter(
            lead.reason for lead in decided if not lead.accepted), campaign
        assert sum(o["accepted"] for o in sales["acceptance_by_owner"]) == sum(1 for lead in decided if lead.accepted)
        assert data["velocity"]["time_to_sql"]["sqls"] == len(sqls)
        assert data["velocity"]["time_to_sql"]["median_hours"] == round(statistics.median(waits), 2)


def test_cost_per_lead_and_cac_per_source_match_the_spend_written(engine: Engine, world: Truth) -> None:
    for since in (JAN, MID_MARCH):  # whole months, and half of March (its spend counted for 16 of 31 days)
        data = build_report(engine, since=since, until=NOW, now=NOW).to_json()
        money = data["money"]
        assert money["currency"] == "EUR" and money["error"] is None
        rows = {row["source"]: row for row in money["by_source"]}
        for source in ("google", "linkedin", "newsletter"):
            cents = 0.0
            for start, end, spent_source, _campaign, amount in world.spend:
                if spent_source != source:
                    continue
                days = (end - start).days + 1
                counted = sum(1 for n in range(days) if since.date() <= start.fromordinal(start.toordinal() + n))
                cents += amount * counted / days
            mine = [lead for lead in world.leads if lead.source == source]
            new = sum(1 for lead in mine if _in(lead.created_at, since, NOW))
            customers = sum(1 for lead in mine if _in(lead.customer_at, since, NOW))
            sqls = sum(1 for lead in mine if _in(lead.sql_at, since, NOW))
            row = rows[source]
            assert row["spend"] == round(cents / 100, 2)
            assert (row["leads"], row["sqls"], row["customers"]) == (new, sqls, customers)
            assert row["cost_per_lead"] == _cost(cents, new)
            assert row["cost_per_sql"] == _cost(cents, sqls)
            assert row["cac"] == _cost(cents, customers)
        assert rows["(none)"]["spend"] is None  # organic leads cost nothing
        total_cents = sum(amount for *_rest, amount in world.spend) if since == JAN else None
        if total_cents is not None:
            assert money["total"]["spend"] == total_cents / 100
            assert money["total"]["cost_per_lead"] == _cost(total_cents, 1500)


def test_spend_yaml_fills_in_where_nothing_was_imported_and_mixed_currencies_are_an_error(
        engine: Engine, world: Truth) -> None:
    planned = [SpendEntry(JAN.date(), datetime(2026, 3, 31).date(), "partner", "", 90_000, "EUR"),
               SpendEntry(JAN.date(), datetime(2026, 1, 31).date(), "linkedin", "", 1, "EUR")]  # imported: replaced
    data = build_report(engine, since=JAN, until=NOW, now=NOW, spend=planned).to_json()
    rows = {row["source"]: row for row in data["money"]["by_source"]}
    assert rows["partner"]["spend"] == 900.0 and rows["partner"]["leads"] == 0
    assert rows["linkedin"]["spend"] == 7500.0  # three imported months of 2,500, the yaml's January ignored
    mixed = [SpendEntry(JAN.date(), JAN.date(), "partner", "", 100, "USD")]
    money = build_report(engine, since=JAN, until=NOW, now=NOW, spend=mixed).to_json()["money"]
    assert money["error"] is not None and "EUR, USD" in money["error"] and money["total"] == {}


@pytest.mark.parametrize("goal", ["click", "open"])
def test_ab_counts_in_the_database_equal_the_counts_from_each_send(engine: Engine, world: Truth, goal: str) -> None:
    """The report counts an A/B step's leads and conversions in one query; the engine's own count from every send
    and its opens and clicks (``count_goal``) gives the same, for a period and an earlier as-of time."""
    from nurture.core.abtest import count_goal
    from nurture.core.facts import CLICK, OPEN
    from nurture.storage import experiments as store

    since, until, as_of = JAN, NOW - timedelta(days=9), NOW - timedelta(days=3)
    with engine.connect() as conn:
        sends = store.step_sends(conn, "bench-nurture", "welcome", since=since, until=until)
        engaged = store.engaged_deliveries(conn, [s.delivery_id for s in sends], until=as_of)
        found = store.engagement_by_variant(conn, "bench-nurture", "welcome", since=since, until=until, as_of=as_of,
                                            types=[CLICK] if goal == "click" else [OPEN, CLICK])
    expected = count_goal(sends, goal, as_of, variants=["a", "b"], engaged=engaged, goal_times={})
    assert {c.variant: (c.sends, c.conversions) for c in expected} == found
    assert all(c.sends > 100 and 0 < c.conversions < c.sends for c in expected)  # a test with something in it
