"""The sales-feedback world: an SQL seeded as the promotion code leaves one (a lead at stage ``sql`` with its history
lead -> mql -> sql and scored events), scoring with a half-life and fit rules, reject reasons of every kind, and
campaigns that a decision ends or starts. ``test_feedback`` (the library) and ``test_feedback_http`` (the edges) use it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from intake_world import T0, count_rows
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from nurture.definitions.loader import Catalog, load_catalog
from nurture.definitions.sales import SalesRules, load_sales
from nurture.definitions.scoring import ScoringRules, load_scoring
from nurture.storage.database import transaction
from nurture.storage.models import EngagementEvent, Enrollment, Lead, Outbox, StageChange

FILES = {
    "scoring.yaml": """\
behaviour:
  half_life: 30d
  events:
    content_download: 10
    webinar_attended: 30
    pricing_page_view: 5
fit:
  - {label: "company size 200+", when: {company_size: {gte: 200}}, points: 10}
  - {label: "budget confirmed", when: {budget_confirmed: true}, points: 15}
thresholds:
  mql: 40
""",
    "sales.yaml": """\
promotion:
  intent: [demo_request]
feedback:
  reject_reasons:
    no_budget: {label: No budget this year, stage: recycled, score: -30, recycle_after: 0s,
                set: {budget_confirmed: false}}
    bad_timing: {label: "Not now, maybe next quarter", stage: recycled, score: -10, recycle_after: 90d,
                 set: {purchase_timeline: null}}
    wrong_person: {label: Not the decision maker, stage: recycled, score: -20,
                   set: {decision_maker: false, owner: null}}
    no_response: {stage: recycled, score: reset_behaviour, recycle_after: 30d}
    not_a_fit: {label: Not a fit, stage: disqualified}
    broken: {stage: recycled, score: -5, set: {country: Germany}}
""",
    # SQLs get a follow-up sequence that sales' verdict ends.
    "sql-followup.yaml": """\
id: sql-followup
name: SQL follow-up
entry: {stage: sql}
exit: {stages: [opportunity, recycled, disqualified]}
steps:
  - {id: intro, wait: 1d, email: {template: intro.html.j2, subject: Intro}}
""",
    "mql-nurture.yaml": """\
id: mql-nurture
name: MQL nurture
entry: {stage: mql}
steps:
  - {id: welcome, email: {template: welcome.html.j2, subject: Welcome}}
""",
    "onboarding.yaml": """\
id: opportunity-onboarding
name: Opportunity onboarding
entry: {stage: opportunity}
steps:
  - {id: hello, email: {template: hello.html.j2, subject: Hello}}
""",
    "recycle-no-budget.yaml": """\
id: recycle-no-budget
name: Recycled - no budget
entry: {stage: recycled, where: {fields: {rejection_reason: no_budget}}}
exit: {stages: [sql, opportunity, customer, disqualified]}
steps:
  - {id: budget-planning, email: {template: budget.html.j2, subject: For your next budget round}}
""",
    "recycle-timing.yaml": """\
id: recycle-timing
name: Recycled - bad timing
entry: {stage: recycled, where: {fields: {rejection_reason: bad_timing}}}
exit: {stages: [sql, opportunity, customer, disqualified]}
steps:
  - {id: next-quarter, email: {template: quarter.html.j2, subject: Next quarter}}
""",
}

PROMOTION_REASON = "demo_request (explicit intent)"


@dataclass
class World:
    """The definitions of the test folder."""

    folder: Path
    catalog: Catalog
    scoring: ScoringRules
    sales: SalesRules


def write_world(folder: Path, files: dict[str, str] | None = None) -> World:
    """Write the world's files into ``folder`` (with ``files`` replacing or adding some) and load them."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in {**FILES, **(files or {})}.items():
        (folder / name).write_text(text, encoding="utf-8")
    catalog = load_catalog(folder).raise_for_problems()
    scoring, problems = load_scoring(folder)
    sales, sales_problems = load_sales(folder)
    assert not problems and not sales_problems, [*problems, *sales_problems]
    return World(folder, catalog, scoring, sales)


DEFAULT_EVENTS = (("webinar_attended", 30.0, T0 - timedelta(days=2)),
                  ("content_download", 10.0, T0 - timedelta(days=1)))


def seed_sql(engine: Engine, email: str, *, at: datetime = T0, events: tuple[tuple[str, float, datetime], ...] =
             DEFAULT_EVENTS, fields: dict[str, Any] | None = None, **columns: Any) -> tuple[int, int]:
    """A lead at stage ``sql`` as promotion leaves it: history lead -> mql -> sql, scored events, an enrollment in the
    SQL follow-up; return (lead id, promotion id). The stored score is left at 0: a decision recomputes it."""
    L, SC, EV, E = Lead.__table__, StageChange.__table__, EngagementEvent.__table__, Enrollment.__table__
    values = {"first_name": "Ada", "last_name": "Lovelace", "company": "Analytical Engines", "title": "CTO",
              "company_size": 500, **columns}
    with transaction(engine) as conn:
        lead_id = conn.execute(L.insert().values(
            email=email, tags=[], fields=fields or {"budget_confirmed": True}, stage="sql", score=0.0,
            created_at=at - timedelta(days=10), updated_at=at, stage_changed_at=at, **values,
        ).returning(L.c.id)).scalar_one()
        conn.execute(SC.insert(), [
            dict(lead_id=lead_id, from_stage=None, to_stage="lead", at=at - timedelta(days=10), reason="import",
                 actor="import"),
            dict(lead_id=lead_id, from_stage="lead", to_stage="mql", at=at - timedelta(days=2), reason="score 40",
                 actor="rule"),
        ])
        for event_type, points, when in events:
            conn.execute(EV.insert().values(lead_id=lead_id, type=event_type, occurred_at=when, recorded_at=when,
                                            properties={}, points=points))
        promotion_id = promote(conn, lead_id, at)
        conn.execute(E.insert().values(lead_id=lead_id, campaign_id="sql-followup", status="active", step_id="intro",
                                       arrived_at=at, next_due_at=at + timedelta(days=1), state={}, priority=0,
                                       enrolled_at=at))
    return lead_id, promotion_id


def promote(conn: Any, lead_id: int, at: datetime, from_stage: str = "mql") -> int:
    """Move the lead to ``sql`` as the promotion rules do; return the promotion id."""
    SC, L = StageChange.__table__, Lead.__table__
    conn.execute(update(L).where(L.c.id == lead_id).values(stage="sql", stage_changed_at=at))
    return conn.execute(SC.insert().values(lead_id=lead_id, from_stage=from_stage, to_stage="sql", at=at,
                                           reason=PROMOTION_REASON, actor="rule").returning(SC.c.id)).scalar_one()


def outbox_rows(engine: Engine) -> list[Any]:
    with transaction(engine, read_only=True) as conn:
        return list(conn.execute(select(Outbox.__table__).order_by(Outbox.__table__.c.id)))


def snapshot(engine: Engine) -> tuple[Any, ...]:
    """Everything a decision could write: compared before and after a refused one."""
    return (count_rows(engine, StageChange), count_rows(engine, EngagementEvent), count_rows(engine, Outbox),
            count_rows(engine, Enrollment), [(r.stage, r.score, dict(r.fields)) for r in _leads(engine)])


def _leads(engine: Engine) -> list[Any]:
    with transaction(engine, read_only=True) as conn:
        return list(conn.execute(select(Lead.__table__).order_by(Lead.__table__.c.id)))
