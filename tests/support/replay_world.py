"""A recorded history for replay tests: a small drip campaign (waits, a wait for a click with two branches, a goal
event), leads saved at known times, clicks, an unsubscribe and a demo request recorded through the real intake, and
the real dispatcher run over a FixedClock hour by hour for days, sending through the file transport.

Times: T0 is Monday 2026-03-02 12:00 UTC. Leads 0-3 enter at T0, leads 4-7 at T0 + 1d. No policy file: the default
cap of one email a day, no send window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from worker_world import T0, Project, dispatch_config, write_project

from nurture.application.event_input import EventIn
from nurture.application.record_events import record_events
from nurture.application.save_lead import save_lead
from nurture.clock import FixedClock
from nurture.definitions.loader import Catalog, load_catalog
from nurture.definitions.sales import load_sales
from nurture.definitions.scoring import load_scoring
from nurture.delivery.transports import FileTransport
from nurture.rendering import EmailRenderer
from nurture.signing import Signer
from nurture.storage.database import transaction
from nurture.storage.tables import METADATA
from nurture.worker.dispatcher import Dispatcher

DRIP = """\
id: drip
name: Drip
entry: {stage: mql}
exit: {events: [demo_request]}
steps:
  - id: welcome
    email: {template: welcome.html.j2, subject: "Welcome, {{ lead.first_name }}"}
  - id: tips
    wait: 2d
    email: {template: followup.html.j2, subject: "Tips"}
  - id: await-click
    wait_for: {event: email_click, step: tips, timeout: 3d}
    on_event: thanks
    on_timeout: nudge
  - id: nudge
    email: {template: checklist.html.j2, subject: "Still there?"}
    goto: end
  - id: thanks
    wait: 1d
    email: {template: offer.html.j2, subject: "Thanks for reading"}
"""

SALES = "promotion:\n  intent: [demo_request]\n"

LEADS = 8
HOURS = 9 * 24  # the dispatcher runs hourly for nine days


def email(index: int) -> str:
    return f"drip{index}@example.com"


@dataclass
class History:
    """The project, the database and the clock at the end of the recorded history."""

    project: Project
    engine: Engine
    clock: FixedClock
    catalog: Catalog

    @property
    def now(self) -> Any:
        return self.clock.now


def write_drip_project(root: Path, drip: str = DRIP) -> Project:
    project = write_project(root, {"drip": drip})
    (project.campaigns_dir / "sales.yaml").write_text(SALES, encoding="utf-8")
    return project


def record_history(engine: Engine, root: Path, start: datetime = T0) -> History:
    """Run the drip campaign for nine days from ``start`` on ``engine`` (migrated), with the intake's events at fixed
    hours."""
    project = write_drip_project(root)
    catalog = load_catalog(project.campaigns_dir, project.templates_dir).raise_for_problems()
    rules, problems = load_scoring(project.campaigns_dir)
    sales, sales_problems = load_sales(project.campaigns_dir)
    assert not problems and not sales_problems
    clock = FixedClock(start)
    dispatcher = Dispatcher(engine, catalog, EmailRenderer(project.templates_dir), FileTransport(root / "outbox"),
                            Signer("replay-tests"), dispatch_config())

    def add_lead(index: int) -> None:
        save_lead(engine, catalog, rules, {"email": email(index), "first_name": f"Drip{index}", "stage": "mql"},
                  now=clock(), actor="api")

    def event(index: int, kind: str, **more: Any) -> None:
        record_events(engine, catalog, rules, [EventIn(email(index), kind, occurred_at=clock(), **more)],
                      now=clock(), actor="api", sales=sales)

    # at these hours after T0, before the dispatcher's tick of that hour
    script: dict[int, list[Any]] = {
        0: [lambda: [add_lead(i) for i in range(4)]],
        24: [lambda: [add_lead(i) for i in range(4, 8)]],
        50: [lambda: event(0, "email_click", campaign_id="drip", step_key="tips")],  # tips went at 48h
        75: [lambda: event(4, "email_click", campaign_id="drip", step_key="tips")],  # tips went at 72h
        30: [lambda: event(1, "unsubscribe")],
        60: [lambda: event(2, "demo_request")],  # the goal, and an SQL by the sales rules
        100: [lambda: event(5, "email_open", campaign_id="drip", step_key="tips")],
    }
    try:
        for hour in range(HOURS + 1):
            clock.now = start + timedelta(hours=hour)
            for action in script.get(hour, []):
                action()
            dispatcher.drain(clock)
    finally:
        dispatcher.close()
    return History(project, engine, clock, catalog)


def table_contents(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary key order: what must not change."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    with transaction(engine, read_only=True) as conn:
        for table in METADATA.sorted_tables:
            found[table.name] = [tuple(row) for row in conn.execute(
                select(table).order_by(*table.primary_key.columns))]
        if engine.dialect.name == "postgresql":
            found["-sequences"] = [tuple(row) for row in conn.execute(text(
                "SELECT sequencename, last_value FROM pg_sequences ORDER BY sequencename"))]
    return found
