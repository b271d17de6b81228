"""A small world for intake tests: two campaigns and scoring rules written to a folder, a controllable clock, and
helpers that put an enrollment and a delivery in the database (as the dispatcher would) and read rows back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from nurture.definitions.loader import Catalog, load_catalog
from nurture.definitions.scoring import ScoringRules, load_scoring
from nurture.storage.database import transaction
from nurture.storage.models import Delivery, EngagementEvent, Enrollment, Lead, StageChange

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)

CAMPAIGNS = {
    # MQLs get a welcome, then the campaign waits up to 5 days for a click. A demo request is its goal.
    "mql-nurture.yaml": """\
id: mql-nurture
name: MQL nurture
entry:
  stage: mql
exit:
  events: [demo_request]
steps:
  - id: welcome
    wait: 1d
    email:
      template: welcome.html.j2
      subject: Welcome
  - id: await-click
    wait_for:
      event: email_click
      timeout: 5d
    on_event: end
    on_timeout: end
""",
    # Anyone (lead or mql) who looked at pricing.
    "visitors.yaml": """\
id: visitors
name: Pricing visitors
entry:
  stage: [lead, mql]
  where:
    had_event: [pricing_page_view]
exit:
  events: [quote_request]
steps:
  - id: followup
    wait: 2h
    email:
      template: followup.html.j2
      subject: Pricing?
""",
    "scoring.yaml": """\
behaviour:
  half_life: 30d
  events:
    page_view: {points: 1, max_per_day: 2}
    email_open: {points: 1, max_per_day: 3}
    email_click: 3
    webinar_attended: 30
    content_download: 10
    pricing_page_view: 5
    unsubscribe: -50
fit:
  - {label: "company size 200+", when: {company_size: {gte: 200}}, points: 10}
thresholds:
  mql: 40
""",
}


def write_campaigns(folder: Path) -> Path:
    """Write the test campaigns and scoring rules into ``folder``; return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in CAMPAIGNS.items():
        (folder / name).write_text(content, encoding="utf-8")
    return folder


def load_world(folder: Path) -> tuple[Catalog, ScoringRules]:
    """The catalog and the scoring rules of a folder written by :func:`write_campaigns` (no problems allowed)."""
    catalog = load_catalog(folder).raise_for_problems()
    rules, problems = load_scoring(folder)
    assert not problems, problems
    return catalog, rules


@dataclass
class Clock:
    """A clock tests move by hand."""

    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def add_delivery(engine: Engine, email: str, *, campaign_id: str = "mql-nurture", step: str = "welcome",
                 at: datetime = T0) -> int:
    """A lead (created if needed), an active enrollment and a sent delivery for it; return the delivery id."""
    L, E, D = Lead.__table__, Enrollment.__table__, Delivery.__table__
    with transaction(engine) as conn:
        lead_id = conn.execute(select(L.c.id).where(L.c.email == email)).scalar()
        if lead_id is None:
            lead_id = conn.execute(L.insert().values(
                email=email, tags=[], fields={}, stage="mql", score=0.0, created_at=at, updated_at=at,
                stage_changed_at=at,
            ).returning(L.c.id)).scalar_one()
        enrollment_id = conn.execute(E.insert().values(
            lead_id=lead_id, campaign_id=campaign_id, status="active", step_id=step, arrived_at=at,
            next_due_at=at + timedelta(days=30), state={}, priority=0, enrolled_at=at,
        ).returning(E.c.id)).scalar_one()
        return conn.execute(D.insert().values(
            enrollment_id=enrollment_id, lead_id=lead_id, campaign_id=campaign_id, step_id=step, step_key=step,
            channel="email", status="sent", attempts=1, message_id=f"<nurture.{enrollment_id}@example.com>",
            provider_message_id=f"prov-{enrollment_id}", created_at=at, sent_at=at,
        ).returning(D.c.id)).scalar_one()


def lead_row(engine: Engine, email: str) -> Any:
    """The lead's row, or None."""
    with transaction(engine, read_only=True) as conn:
        return conn.execute(select(Lead.__table__).where(Lead.__table__.c.email == email)).one_or_none()


def events_of(engine: Engine, email: str | None = None) -> list[Any]:
    """Recorded events (of one lead, or all), oldest first."""
    EV, L = EngagementEvent.__table__, Lead.__table__
    query = select(EV, L.c.email).join(L, L.c.id == EV.c.lead_id).order_by(EV.c.id)
    if email is not None:
        query = query.where(L.c.email == email)
    with transaction(engine, read_only=True) as conn:
        return list(conn.execute(query))


def enrollments_of(engine: Engine, email: str) -> list[Any]:
    """The lead's enrollments, oldest first."""
    E, L = Enrollment.__table__, Lead.__table__
    with transaction(engine, read_only=True) as conn:
        return list(conn.execute(
            select(E).join(L, L.c.id == E.c.lead_id).where(L.c.email == email).order_by(E.c.id)
        ))


def stage_history(engine: Engine, email: str) -> list[Any]:
    """The lead's stage changes, oldest first."""
    SC, L = StageChange.__table__, Lead.__table__
    with transaction(engine, read_only=True) as conn:
        return list(conn.execute(
            select(SC).join(L, L.c.id == SC.c.lead_id).where(L.c.email == email).order_by(SC.c.id)
        ))


def count_rows(engine: Engine, model: Any) -> int:
    """How many rows the model's table has."""
    with transaction(engine, read_only=True) as conn:
        return conn.execute(select(func.count()).select_from(model.__table__)).scalar_one()
