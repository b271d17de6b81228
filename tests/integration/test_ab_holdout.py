"""A/B winners and holdout groups over real SQLite files and PostgreSQL databases: a winner is recorded once however
many deciders race, held-out leads never get a delivery row (nor count against another campaign's cap), and the
report's ``ab_tests`` and ``holdouts`` sections equal a calculation done here, independently, from generated data
with known true rates."""

from __future__ import annotations

import math
import random
import statistics
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from db_fixtures import engine, migrated_url, postgres_available, postgres_template  # noqa: F401  (fixtures)
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from worker_world import Clock, dispatch_config, write_project

from nurture.application.enroll import enroll_leads
from nurture.application.holdout_lift import holdouts_section
from nurture.application.variant_decisions import ab_tests_section, decide_winners, recorded_winners
from nurture.core.holdout import held_out
from nurture.definitions.loader import Catalog, load_catalog
from nurture.delivery.transports import FileTransport
from nurture.rendering import EmailRenderer
from nurture.signing import Signer
from nurture.storage import experiments
from nurture.storage.database import make_engine, transaction
from nurture.storage.models import (
    Delivery,
    EngagementEvent,
    Enrollment,
    Lead,
    StageChange,
    VariantDecision,
)
from nurture.worker.dispatcher import Dispatcher

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)

AB_CAMPAIGN = """\
id: welcome
name: Welcome
priority: 10
holdout: {holdout}
steps:
  - id: hello
    email:
      template: welcome.html.j2
      subject: Welcome
      variants: [{{id: a}}, {{id: b, subject: "Your guide is here"}}]
      goal: click
      winner: {{confidence: 95%, min_sends: 200}}
  - id: tag
    update: {{add_tags: [welcomed]}}
  - id: later
    wait: 2d
    email: {{template: followup.html.j2, subject: Two days in}}
"""

NEWS = """\
id: news
name: News
steps:
  - id: issue
    email: {template: news.html.j2, subject: News}
"""


def project_catalog(root: Path, holdout: str = "10%") -> tuple[Catalog, Path]:
    project = write_project(root, {"welcome": AB_CAMPAIGN.format(holdout=holdout), "news": NEWS})
    return load_catalog(project.campaigns_dir, project.templates_dir).raise_for_problems(), project.templates_dir


def add_leads(engine: Engine, count: int, *, stage: str = "mql") -> list[int]:
    with transaction(engine) as conn:
        conn.execute(insert(Lead.__table__), [
            dict(email=f"lead{i:05d}@example.com", first_name=f"Lead{i}", stage=stage, tags=[], fields={}, score=0.0,
                 created_at=T0, updated_at=T0, stage_changed_at=T0) for i in range(count)
        ])
        return [row.id for row in conn.execute(select(Lead.__table__.c.id).order_by(Lead.__table__.c.id))]


def rows(engine: Engine, model: Any) -> list[Any]:
    with transaction(engine, read_only=True) as conn:
        return list(conn.execute(select(model.__table__)))


# --- held-out leads get nothing -----------------------------------------------------------------------------------


def test_held_out_leads_never_get_a_delivery_and_do_not_hold_back_another_campaign(engine: Engine,
                                                                                   tmp_path: Path) -> None:
    catalog, templates = project_catalog(tmp_path / "project", holdout="30%")
    lead_ids = add_leads(engine, 200)
    assert enroll_leads(engine, catalog, T0) == 400  # every lead in both campaigns
    clock = Clock(T0)
    dispatcher = Dispatcher(engine, catalog, EmailRenderer(templates), FileTransport(tmp_path / "mail"),
                            Signer("test-key"), dispatch_config())
    try:
        dispatcher.drain(clock)
        for _ in range(3):
            clock.advance(days=1)
            dispatcher.drain(clock)
    finally:
        dispatcher.close()
    welcome = {e.lead_id: e for e in rows(engine, Enrollment) if e.campaign_id == "welcome"}
    held = {lead for lead, e in welcome.items() if e.held_out}
    assert held == {lead for lead in lead_ids if held_out(str(lead), "welcome", 0.3)}
    assert 30 < len(held) < 90
    deliveries = rows(engine, Delivery)
    assert not [d for d in deliveries if d.campaign_id == "welcome" and d.lead_id in held]
    assert len([d for d in deliveries if d.campaign_id == "welcome"]) == 2 * (200 - len(held))
    assert all(e.status == "completed" for e in welcome.values())  # the held-out ones walked to the end too
    for lead, enrollment in welcome.items():
        outcomes = [(p["step"], p["outcome"]) for p in enrollment.state["path"]]
        if lead in held:
            assert outcomes == [("hello", "held_out"), ("tag", "held_out"), ("later", "held_out")]
        else:
            assert outcomes == [("hello", "sent"), ("tag", "updated"), ("later", "sent")]
    tagged = {lead.id for lead in rows(engine, Lead) if "welcomed" in lead.tags}
    assert tagged == set(lead_ids) - held
    # one email a day (the default cap): a lead sent "hello" gets the news a day later, a held-out lead at once
    news = {d.lead_id: d.sent_at for d in deliveries if d.campaign_id == "news"}
    assert len(news) == 200
    assert {news[lead] for lead in held} == {T0}
    assert {news[lead] for lead in set(lead_ids) - held} == {T0 + DAY}


# --- one winner, however many deciders -------------------------------------------------------------------------------


def seed_ab(engine: Engine, lead_ids: list[int], rates: dict[str, float], seed: int,
            variant_of: Callable[[int], str]) -> dict[str, tuple[int, int]]:
    """Sent emails of welcome/hello to every lead (variant by ``variant_of``) and clicks with the true ``rates``;
    returns variant -> (leads, clicks) as generated."""
    rng = random.Random(seed)
    truth: dict[str, list[int]] = {v: [0, 0] for v in rates}
    with transaction(engine) as conn:
        for lead in lead_ids:
            conn.execute(insert(Enrollment.__table__).values(
                id=lead, lead_id=lead, campaign_id="welcome", status="completed", step_id=None, arrived_at=T0,
                state={}, priority=10, enrolled_at=T0, held_out=False))
        variants = {lead: variant_of(lead) for lead in lead_ids}
        conn.execute(insert(Delivery.__table__), [
            dict(id=lead, enrollment_id=lead, lead_id=lead, campaign_id="welcome", step_id="hello", step_key="hello",
                 variant=variants[lead], channel="email", status="sent", attempts=1, created_at=T0, sent_at=T0)
            for lead in lead_ids
        ])
        clicks = []
        for lead in lead_ids:
            variant = variants[lead]
            truth[variant][0] += 1
            if rng.random() < rates[variant]:
                truth[variant][1] += 1
                clicks.append(dict(lead_id=lead, type="email_click", occurred_at=T0 + timedelta(hours=2),
                                   recorded_at=T0, campaign_id="welcome", step_key="hello", delivery_id=lead,
                                   properties={}, points=0.0))
            if rng.random() < 0.3:  # opens, which a click goal does not count
                clicks.append(dict(lead_id=lead, type="email_open", occurred_at=T0 + timedelta(hours=1),
                                   recorded_at=T0, campaign_id="welcome", step_key="hello", delivery_id=lead,
                                   properties={}, points=0.0))
        if clicks:
            conn.execute(insert(EngagementEvent.__table__), clicks)
    return {v: (n, c) for v, (n, c) in truth.items()}


def test_two_deciders_at_once_record_one_winner(engine: Engine, tmp_path: Path, migrated_url: str) -> None:
    catalog, _templates = project_catalog(tmp_path / "project")
    lead_ids = add_leads(engine, 600)
    seed_ab(engine, lead_ids, {"a": 0.05, "b": 0.25}, seed=3, variant_of=lambda lead: "ab"[lead % 2])
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def decide() -> None:
        own = make_engine(migrated_url)
        try:
            barrier.wait(timeout=10)
            results.append(decide_winners(own, catalog, T0 + DAY))
        finally:
            own.dispose()

    threads = [threading.Thread(target=decide) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 2
    [decision] = rows(engine, VariantDecision)
    assert (decision.campaign_id, decision.step_id, decision.winner) == ("welcome", "hello", "b")
    assert decision.figures["verdict"] == "b beats a on clicks, 95% confidence"
    assert sum(len(found) for found in results) >= 1
    assert recorded_winners(engine) == {"welcome": {"hello": "b"}}
    assert decide_winners(engine, catalog, T0 + 2 * DAY) == []  # decided: not measured or recorded again


def test_a_second_winner_is_never_recorded_over_the_first(engine: Engine, migrated_url: str) -> None:
    barrier = threading.Barrier(2)
    returned: dict[str, str] = {}

    def record(winner: str) -> None:
        own = make_engine(migrated_url)
        try:
            barrier.wait(timeout=10)
            with transaction(own) as conn:
                row = experiments.record_decision(conn, campaign_id="c", step_id="s", winner=winner, metric="clicks",
                                                  confidence=0.95, decided_at=T0, figures={})
            returned[winner] = row.winner
        finally:
            own.dispose()

    threads = [threading.Thread(target=record, args=(w,)) for w in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    [decision] = rows(engine, VariantDecision)
    assert returned == {"a": decision.winner, "b": decision.winner}  # both callers go on with the one recorded


# --- the report against an independent calculation ------------------------------------------------------------------


def wilson_roots(x: int, n: int, z: float) -> tuple[float, float]:
    """Wilson's interval as the roots of |p - pi| = z sqrt(pi (1 - pi) / n)."""
    p = x / n
    a, b, c = 1 + z * z / n, -(2 * p + z * z / n), p * p
    d = math.sqrt(b * b - 4 * a * c)
    return (-b - d) / (2 * a), (-b + d) / (2 * a)


def by_hand(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float, float, float]:
    """(difference, Newcombe low, high, p-value of Pearson's chi-square) at 95 %, computed here."""
    z = 1.959963984540054
    p1, p2 = x1 / n1, x2 / n2
    (l1, u1), (l2, u2) = wilson_roots(x1, n1, z), wilson_roots(x2, n2, z)
    total, hits = n1 + n2, x1 + x2
    expected = [(n1 * hits / total, n1 * (total - hits) / total), (n2 * hits / total, n2 * (total - hits) / total)]
    observed = [(x1, n1 - x1), (x2, n2 - x2)]
    chi2 = sum((o - e) ** 2 / e for row_o, row_e in zip(observed, expected) for o, e in zip(row_o, row_e))
    return (p1 - p2, p1 - p2 - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
            p1 - p2 + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2), math.erfc(math.sqrt(chi2 / 2)))


def test_the_report_sections_equal_an_independent_calculation(engine: Engine, tmp_path: Path) -> None:
    catalog, _templates = project_catalog(tmp_path / "project")
    lead_ids = add_leads(engine, 1200)
    truth = seed_ab(engine, lead_ids, {"a": 0.10, "b": 0.18}, seed=11, variant_of=lambda lead: "ab"[lead % 2])
    # the holdout: a second campaign's enrollments, held out by the hash, SQLs at known true rates
    rng = random.Random(5)
    entries, changes, expected = [], [], {True: [], False: []}
    for lead in lead_ids:
        hold = held_out(str(lead), "welcome", 0.1)
        entered = T0 + timedelta(minutes=lead)
        entries.append(dict(id=100_000 + lead, lead_id=lead, campaign_id="nurture", status="completed", arrived_at=entered, state={},
                            priority=0, enrolled_at=entered, held_out=hold))
        sql = None
        if rng.random() < (0.10 if hold else 0.25):
            sql = entered + timedelta(hours=rng.randint(1, 400))
            changes.append(dict(lead_id=lead, from_stage="mql", to_stage="sql", at=sql, reason="demo", actor="rule"))
        expected[hold].append((entered, sql))
    changes.append(dict(lead_id=lead_ids[0], from_stage="lead", to_stage="sql", at=T0 - DAY, reason="x",
                        actor="rule"))  # before it entered: not a conversion
    with transaction(engine) as conn:
        conn.execute(insert(Enrollment.__table__), entries)
        conn.execute(insert(StageChange.__table__), changes)

    since, until = T0 - 10 * DAY, T0 + 30 * DAY
    [test] = ab_tests_section(engine, catalog, since=since, until=until)
    (n_a, c_a), (n_b, c_b) = truth["a"], truth["b"]
    assert [(v["variant"], v["sends"], v["conversions"]) for v in test["variants"]] == [("a", n_a, c_a),
                                                                                        ("b", n_b, c_b)]
    difference, low, high, p_value = by_hand(c_b, n_b, c_a, n_a)
    [comparison] = test["comparisons"]
    assert (comparison["variant"], comparison["against"]) == ("b", "a")
    assert comparison["difference"] == pytest.approx(difference, abs=1e-6)
    assert (comparison["low"], comparison["high"]) == pytest.approx((low, high), abs=1e-6)
    assert comparison["p_value"] == pytest.approx(p_value, abs=1e-6)
    assert p_value < 0.05 and test["verdict"] == "b beats a on clicks, 95% confidence" and test["significant"]
    assert test["winner"] is None  # nothing decided: the report states the verdict, the worker records calls

    holdouts = holdouts_section(engine, catalog, since=since, until=until)
    [nurture] = [h for h in holdouts if h["campaign"] == "nurture"]
    sent_group = [sql for _entered, sql in expected[False]]
    held_group = [sql for _entered, sql in expected[True]]
    n_s, x_s = len(sent_group), sum(s is not None for s in sent_group)
    n_h, x_h = len(held_group), sum(s is not None for s in held_group)
    assert (nurture["sent"]["leads"], nurture["sent"]["sql"]) == (n_s, x_s)
    assert (nurture["held_out"]["leads"], nurture["held_out"]["sql"]) == (n_h, x_h)
    difference, low, high, p_value = by_hand(x_s, n_s, x_h, n_h)
    assert nurture["lift"] == pytest.approx(difference, abs=1e-6)
    assert (nurture["low"], nurture["high"]) == pytest.approx((low, high), abs=1e-6)
    assert nurture["p_value"] == pytest.approx(p_value, abs=1e-6)
    for group, name in ((expected[False], "sent"), (expected[True], "held_out")):
        hours = [(sql - entered).total_seconds() / 3600 for entered, sql in group if sql is not None]
        assert nurture[name]["median_hours_to_sql"] == round(statistics.median(hours), 2)
    verdict = nurture["verdict"]
    assert verdict.startswith("the campaign lifts MQL→SQL conversion by") if p_value < 0.05 and difference > 0 \
        else verdict.startswith("no measurable lift yet"), verdict
    # the campaign declares a holdout but held nobody out in the period: listed, with too little data to judge
    [welcome] = [h for h in holdouts if h["campaign"] == "welcome"]
    assert welcome["holdout"] == 0.1 and welcome["verdict"].startswith("not enough data")


