"""The idle worker's look for due work (:class:`nurture.storage.work_probe.WorkProbe`) finds exactly what the claims
would take, at the injected time, on SQLite and PostgreSQL: a due enrollment (not one due later, leased by a live
worker, of a paused campaign, or of a lead another enrollment of which is leased), a retry or an expired lease of a
delivery, a due outbox row (not one due later or leased); and ``Worker.look`` starts the dispatcher or the outbox
only when there is work for it, so a new due email goes out within one ``NURTURE_POLL_INTERVAL``.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from db_fixtures import engine, migrated_url, postgres_available, postgres_template  # noqa: F401
from sqlalchemy import update
from sqlalchemy.engine import Engine
from worker_world import T0, write_project

from nurture.storage import outbox, schedule
from nurture.storage.database import session, transaction
from nurture.storage.models import Delivery, Enrollment, Lead
from nurture.storage.work_probe import Waiting, WorkProbe
from nurture.worker import runner
from nurture.worker.runner import Worker

LIVE = ["live"]
NOTHING = Waiting(dispatch=False, outbox=False)


def _lead(engine: Engine, email: str) -> int:
    with session(engine) as orm:
        lead = Lead(email=email, stage="mql")
        orm.add(lead)
        orm.flush()
        assert lead.id is not None
        return lead.id


def _enrollment(engine: Engine, lead_id: int, campaign: str, due: datetime, **extra: Any) -> int:
    with session(engine) as orm:
        row = Enrollment(lead_id=lead_id, campaign_id=campaign, step_id="hello", next_due_at=due, arrived_at=T0,
                         enrolled_at=T0, **extra)
        orm.add(row)
        orm.flush()
        assert row.id is not None
        return row.id


def _set(engine: Engine, table: Any, row_id: int, **values: Any) -> None:
    with transaction(engine) as conn:
        conn.execute(update(table.__table__).where(table.__table__.c.id == row_id).values(**values))


def _agrees_with_the_claims(engine: Engine, probe: WorkProbe, now: datetime) -> Waiting:
    found = probe.look(now)
    assert found.dispatch == schedule.anything_due(engine, now, LIVE)
    with transaction(engine, read_only=True) as conn:
        from sqlalchemy import exists, select

        assert found.outbox == bool(conn.execute(select(exists().where(*outbox.row_due(now)))).scalar())
    return found


def test_the_look_finds_what_a_claim_would_take_and_nothing_else(engine: Engine) -> None:
    probe = WorkProbe(engine, LIVE)
    try:
        assert _agrees_with_the_claims(engine, probe, T0) == NOTHING
        ada = _lead(engine, "ada@example.com")
        later = _enrollment(engine, ada, "live", T0 + timedelta(hours=1))
        _enrollment(engine, _lead(engine, "bo@example.com"), "paused", T0 - timedelta(hours=1))
        assert _agrees_with_the_claims(engine, probe, T0) == NOTHING  # due later; the other campaign is paused
        assert _agrees_with_the_claims(engine, probe, T0 + timedelta(hours=1)).dispatch
        _set(engine, Enrollment, later, lease_until=T0 + timedelta(hours=2), lease_owner="w")
        assert not _agrees_with_the_claims(engine, probe, T0 + timedelta(hours=1)).dispatch  # a live lease
        other = _enrollment(engine, ada, "live-2", T0)  # another campaign of the leased lead: not this worker's
        assert not _agrees_with_the_claims(engine, probe, T0 + timedelta(hours=1)).dispatch
        assert _agrees_with_the_claims(engine, probe, T0 + timedelta(hours=2, seconds=1)).dispatch  # lease over
        _set(engine, Enrollment, later, status="completed", next_due_at=None, lease_until=None)
        _set(engine, Enrollment, other, status="completed", next_due_at=None)
        assert _agrees_with_the_claims(engine, probe, T0 + timedelta(days=1)) == NOTHING

        with session(engine) as orm:
            delivery = Delivery(enrollment_id=later, lead_id=ada, campaign_id="live", step_id="hello",
                                step_key="hello", status="retry", attempts=1, next_attempt_at=T0 + timedelta(minutes=1))
            orm.add(delivery)
            orm.flush()
            delivery_id = delivery.id
        assert delivery_id is not None
        assert _agrees_with_the_claims(engine, probe, T0) == NOTHING
        assert _agrees_with_the_claims(engine, probe, T0 + timedelta(minutes=1)).dispatch  # the retry is due
        _set(engine, Delivery, delivery_id, status="claimed", lease_until=T0 + timedelta(minutes=5))
        assert not _agrees_with_the_claims(engine, probe, T0 + timedelta(minutes=4)).dispatch
        assert _agrees_with_the_claims(engine, probe, T0 + timedelta(minutes=6)).dispatch  # its sender died
        _set(engine, Delivery, delivery_id, status="sent", lease_until=None)

        with transaction(engine) as conn:
            outbox.enqueue(conn, kind="sales_webhook", dedup_key="n1", payload={}, now=T0 + timedelta(seconds=10))
        assert _agrees_with_the_claims(engine, probe, T0) == NOTHING
        assert _agrees_with_the_claims(engine, probe, T0 + timedelta(seconds=10)) == Waiting(False, True)
        rows = outbox.claim(engine, T0 + timedelta(seconds=10), limit=5, lease=timedelta(minutes=5))
        assert len(rows) == 1
        assert _agrees_with_the_claims(engine, probe, T0 + timedelta(minutes=1)) == NOTHING  # leased
        assert _agrees_with_the_claims(engine, probe, T0 + timedelta(minutes=6)) == Waiting(False, True)
    finally:
        probe.close()


def test_a_look_after_a_lost_connection_opens_another(engine: Engine) -> None:
    probe = WorkProbe(engine, LIVE)
    try:
        assert probe.look(T0) == NOTHING
        assert probe._connection is not None
        probe._connection.connection.dbapi_connection.close()  # type: ignore[union-attr]  # the server went away
        with pytest.raises(Exception):  # noqa: B017 - the driver's own error, whichever it is
            probe.look(T0)
        assert probe._connection is None
        _enrollment(engine, _lead(engine, "ada@example.com"), "live", T0)
        assert probe.look(T0).dispatch
    finally:
        probe.close()


class _Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def test_the_worker_looks_every_poll_interval_and_starts_only_the_job_with_work(
        engine: Engine, migrated_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = write_project(tmp_path / "project")
    clock = _Clock()
    settings = project.settings(migrated_url, f"file://{tmp_path / 'mail'}").model_copy(
        update={"poll_interval": 0.05})
    worker = Worker(settings, clock=clock)
    runs: dict[str, int] = {"dispatch": 0, "outbox": 0}
    dispatched = threading.Event()

    def counted(name: str, job: Any) -> Any:
        def run() -> None:
            runs[name] += 1
            job()
            if name == "dispatch":
                dispatched.set()
        return run

    worker.dispatch = counted("dispatch", worker.dispatch)  # type: ignore[method-assign]
    worker.deliver_outbox = counted("outbox", worker.deliver_outbox)  # type: ignore[method-assign]
    settled: list[bool] = []
    monkeypatch.setattr(runner, "settle_after_start_up", lambda: settled.append(True))
    worker.start()
    assert settled == [True]  # a service from its start: the collector set for batches (nurture.heap)
    try:
        deadline = datetime.now(timezone.utc) + timedelta(seconds=30)
        while runs["dispatch"] == 0 or runs["outbox"] == 0:  # each runs once at start
            assert datetime.now(timezone.utc) < deadline
            threading.Event().wait(0.01)
        threading.Event().wait(0.5)  # ten looks, with nothing due
        assert runs == {"dispatch": 1, "outbox": 1}
        dispatched.clear()
        campaign = next(iter(worker.catalog.campaigns))
        _enrollment(engine, _lead(engine, "ada@example.com"), campaign, T0 + timedelta(hours=1))
        threading.Event().wait(0.3)
        assert runs == {"dispatch": 1, "outbox": 1}  # due in an hour, on the worker's clock: nothing to start
        clock.now = T0 + timedelta(hours=1)
        assert dispatched.wait(5), "the look did not start the dispatcher"
        assert runs["outbox"] == 1
    finally:
        worker.stop()
        worker.engine.dispose()
