"""The dispatcher on PostgreSQL: its batch writes as one statement each (``storage/schedule_pg.py``) and the rollups
kept by statement-level triggers (migration ``0008_pgdispatch``) store exactly the rows that the generic executemany
writes and 0006's row triggers stored, on a real PostgreSQL server; each statement keeps one SQL text whatever the
batch's size; the migration's downgrade puts the row triggers back."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from db_fixtures import create_postgres_database, drop_postgres_database, postgres_available  # noqa: F401
from sqlalchemy import event, insert, select
from sqlalchemy.engine import Engine
from worker_world import FROM, TEMPLATES

from nurture.application.enroll import enroll_leads
from nurture.definitions.loader import Catalog, load_catalog
from nurture.delivery import OutgoingEmail, SendResult
from nurture.rendering import EmailRenderer
from nurture.signing import Signer
from nurture.storage import schedule
from nurture.storage.database import make_engine, transaction
from nurture.storage.migrate import alembic_config, upgrade
from nurture.storage.rollups import rebuild
from nurture.storage.tables import D, E, L, RD, RE, RL, RM, RO, SO
from nurture.worker.dispatcher import DispatchConfig, Dispatcher

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
ONBOARDING = """\
id: onboarding
name: Onboarding
entry: {stage: mql}
steps:
  - id: welcome
    email: {template: welcome.html.j2, subject: "Welcome, {{ lead.first_name }}"}
  - id: followup
    wait: 2d
    email: {template: followup.html.j2, subject: "Two days in"}
"""
SORTING = """\
id: sorting
name: Sorting
entry: {stage: mql}
priority: 5
steps:
  - id: tag
    update: {add_tags: [sorted]}
  - id: route
    branch:
      - {when: {lead: {company: Globex}}, goto: offer}
      - {goto: end}
  - id: offer
    email: {template: offer.html.j2, subject: "An offer"}
"""
LEADS = 40


class ScriptedTransport:
    """Accepts every message but these: lead 1's first attempt fails for now, lead 2's fails for good."""

    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()

    def send_many(self, batch: list[tuple[OutgoingEmail, bytes]]) -> list[SendResult]:
        results = []
        for email, _data in batch:
            self.attempts[email.to_addr] += 1
            if email.to_addr == "lead1@example.com" and self.attempts[email.to_addr] == 1:
                results.append(SendResult(False, error="421 try again later"))
            elif email.to_addr == "lead2@example.com":
                results.append(SendResult(False, error="550 no such user", permanent=True))
            else:
                results.append(SendResult(True, provider_message_id=f"p-{email.message_id}"))
        return results

    def close(self) -> None:
        pass


@pytest.fixture
def project(tmp_path: Path) -> Catalog:
    campaigns, templates = tmp_path / "campaigns", tmp_path / "templates"
    campaigns.mkdir()
    templates.mkdir()
    for name, text in TEMPLATES.items():
        (templates / name).write_text(text, encoding="utf-8")
    (campaigns / "onboarding.yaml").write_text(ONBOARDING, encoding="utf-8")
    (campaigns / "sorting.yaml").write_text(SORTING, encoding="utf-8")
    return load_catalog(campaigns, templates).raise_for_problems()


@pytest.fixture
def database(postgres_available: None) -> Iterator[Any]:
    """Fresh PostgreSQL databases on demand, migrated to a given revision; dropped at the end."""
    made: list[tuple[str, Engine]] = []

    def make(revision: str = "head") -> Engine:
        url = create_postgres_database()
        upgrade(url, revision)
        engine = make_engine(url)
        made.append((url, engine))
        return engine

    yield make
    for url, engine in made:
        engine.dispose()
        drop_postgres_database(url)


def seed(engine: Engine, count: int) -> None:
    with transaction(engine) as conn:
        conn.execute(insert(L), [
            dict(email=f"lead{i}@example.com", first_name=f"Lead{i}", company="Globex" if i % 3 == 0 else "Acme",
                 stage="mql", tags=[], fields={}, score=0.0, created_at=T0, updated_at=T0, stage_changed_at=T0,
                 source="google")
            for i in range(count)
        ])


def run_journey(engine: Engine, catalog: Catalog, templates: Path, *, batch_size: int = 7) -> None:
    """Enroll, then dispatch at T0, a minute later (the retry), and two days later (the follow-ups), in small
    batches, with an unsubscribed lead whose email is then suppressed."""
    seed(engine, LEADS)
    enroll_leads(engine, catalog, T0)
    dispatcher = Dispatcher(engine, catalog, EmailRenderer(templates), ScriptedTransport(), Signer("secret"),
                            DispatchConfig(batch_size=batch_size, from_address=FROM), owner="worker-1")
    try:
        for at in (T0, T0 + timedelta(minutes=1), T0 + timedelta(days=1, minutes=2), T0 + timedelta(days=2, minutes=3)):
            with transaction(engine) as conn:  # lead 4 unsubscribes after its welcome: its follow-up is suppressed
                if at > T0 + timedelta(days=1):
                    conn.execute(L.update().where(L.c.email == "lead4@example.com").values(unsubscribed_at=T0))
            dispatcher.drain(lambda at=at: at)
    finally:
        dispatcher.close()


def stored(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row the dispatch writes: deliveries, enrollments, step outcomes, leads and every rollup (zeros too).
    Deliveries and step outcomes without their own ids: which of the enrollments due at one moment a claim takes
    first is the database's choice (``ORDER BY next_due_at`` ties), so their ids' order may differ."""
    with transaction(engine, read_only=True) as conn:
        return {table.name: sorted((tuple(value for column, value in row._mapping.items()
                                          if not (table in (D, SO) and column == "id"))
                                    for row in conn.execute(select(table))), key=repr)
                for table in (D, E, SO, L, RD, RE, RL, RM, RO)}


def test_the_batch_statements_and_statement_triggers_store_what_executemany_and_row_triggers_stored(
    database: Any, project: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    templates = tmp_path / "templates"
    new = database()
    run_journey(new, project, templates)
    before = database("0007_sales_rollup")  # the row triggers of 0006, and the generic statements
    with monkeypatch.context() as patched:
        patched.setattr(schedule, "dispatch_writer", lambda _dialect: None)
        run_journey(before, project, templates)

    rows = stored(new)
    assert rows == stored(before)
    # every path was taken: 14 offers (Globex, first by priority), 40 welcomes, 25 follow-ups (not lead 4, who
    # unsubscribed; the Globex leads' are not due yet); lead 2's two fail for good, lead 1's welcome went on retry
    delivered = _deliveries(new)
    assert Counter(row.status for row in delivered) == {"sent": 77, "failed": 2}
    assert Counter(row.attempts for row in delivered) == {1: 78, 2: 1}
    assert _tagged(new)  # the update step's lead changes
    assert rows["step_outcome"] and rows["rollup_outcome_day"]
    with transaction(new) as conn:  # and what the statement triggers kept is what counting the rows gives
        kept = {name: rows[name] for name in ("rollup_delivery_day", "rollup_enrollment_day")}
        rebuild(conn)
    rebuilt = stored(new)
    assert {name: [r for r in kept[name] if any(r[-3:])] for name in kept} == \
        {name: [r for r in rebuilt[name] if any(r[-3:])] for name in kept}


def _deliveries(engine: Engine) -> list[Any]:
    with transaction(engine, read_only=True) as conn:
        return list(conn.execute(select(D)))


def _tagged(engine: Engine) -> bool:
    with transaction(engine, read_only=True) as conn:
        return all("sorted" in row.tags for row in conn.execute(select(L.c.tags)))


def test_each_statement_has_one_text_whatever_the_batch_size(database: Any, project: Catalog, tmp_path: Path) -> None:
    # the email path alone (an update step's enrollment and a branch's outcomes are written as before)
    emails = Catalog(campaigns={"onboarding": project.campaigns["onboarding"]}, policy=project.policy)
    texts: dict[int, set[str]] = {}
    for batch_size in (3, 11):
        engine = database()
        seen: set[str] = set()
        event.listen(engine, "before_cursor_execute", lambda *args, seen=seen: seen.add(args[2]))
        run_journey(engine, emails, tmp_path / "templates", batch_size=batch_size)
        texts[batch_size] = seen
    assert texts[3] == texts[11] and len(texts[3]) > 20


def test_the_downgrade_puts_the_row_triggers_back(database: Any) -> None:
    engine = database()

    def levels() -> dict[str, str]:
        with engine.connect() as conn:  # bit 0 of tgtype: a row trigger
            rows = conn.exec_driver_sql("SELECT tgname, tgtype FROM pg_trigger WHERE tgname IN ('rollup_delivery_insert', "
                                        "'rollup_delivery_update', 'rollup_enrollment_insert', 'rollup_enrollment_update')")
            return {name: "row" if kind & 1 else "statement" for name, kind in rows}

    assert set(levels().values()) == {"statement"} and len(levels()) == 4
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0007_sales_rollup")
    assert set(levels().values()) == {"row"} and len(levels()) == 4
    upgrade(engine)
    assert set(levels().values()) == {"statement"}
