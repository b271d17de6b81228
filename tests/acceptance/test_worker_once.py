"""``nurture run --once`` processes everything due now: after an SMTP outage the due retries and the deliveries whose
sender died (expired leases) all go out in one run, across as many batches as they take, and a run never loops on a
send that keeps failing (its next attempt is in the future, so it is not due).

The real aiosmtpd sink, a real SQLite file, the injected clock (T0 is Monday 2026-03-02 12:00 UTC); the onboarding
campaign sends ``welcome`` at once. The batch size is small so that the backlog takes several batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from smtp_sink import SmtpSink
from sqlalchemy import update
from worker_world import T0, Clock, Project, by_recipient, deliveries, dispatch_config, seed_leads, write_project

from nurture.storage.database import transaction
from nurture.storage.migrate import upgrade
from nurture.storage.models import Delivery
from nurture.worker.runner import Worker

LEADS = 11
BATCH = 3  # 11 leads: four batches of enrollments, and four of retries


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def worker(tmp_path: Path, clock: Clock, smtp_sink: SmtpSink) -> Iterator[Worker]:
    url = f"sqlite:///{tmp_path / 'nurture.db'}"
    upgrade(url)
    project: Project = write_project(tmp_path / "project")
    seed_leads(url, tmp_path, LEADS)
    built = Worker(project.settings(url, smtp_sink.url), clock=clock, config=dispatch_config(batch_size=BATCH))
    yield built
    built.transport.close()
    built.engine.dispose()


def statuses(worker: Worker) -> set[tuple[Any, ...]]:
    return {(row.status, row.attempts) for row in deliveries(worker.engine)}


def test_once_sends_every_due_retry_after_an_outage_across_batches(worker: Worker, clock: Clock,
                                                                   smtp_sink: SmtpSink) -> None:
    smtp_sink.stop()
    report = worker.run_once()
    assert (report.sent, report.retried) == (0, LEADS)
    assert statuses(worker) == {("retry", 1)}

    smtp_sink.start()
    clock.advance(seconds=30)
    report = worker.run_once()
    assert (report.sent, report.retried, report.failed) == (LEADS, 0, 0), "one --once sends every due retry"
    received = by_recipient(smtp_sink.messages)
    assert len(received) == LEADS and all(len(copies) == 1 for copies in received.values())
    assert statuses(worker) == {("sent", 2)}


def test_once_resends_every_expired_lease_across_batches(worker: Worker, clock: Clock, smtp_sink: SmtpSink) -> None:
    """Deliveries a dead worker had claimed (sent or not: SMTP cannot tell) all go out again once their lease ran out."""
    smtp_sink.stop()
    worker.run_once()
    with transaction(worker.engine) as conn:  # a worker claimed them all, then died before recording anything
        conn.execute(update(Delivery.__table__).values(status="claimed", lease_until=T0 + timedelta(minutes=5)))
    smtp_sink.start()

    clock.advance(minutes=4)
    assert worker.run_once().sent == 0, "the leases still hold"
    clock.advance(minutes=2)
    report = worker.run_once()
    assert report.sent == LEADS
    assert len(by_recipient(smtp_sink.messages)) == LEADS
    assert statuses(worker) == {("sent", 2)}


def test_once_tries_each_due_retry_once_when_sends_keep_failing_and_returns(worker: Worker, clock: Clock,
                                                                             smtp_sink: SmtpSink) -> None:
    """Bounded: a failed retry's next attempt is after the backoff, not due in this run, so the run ends."""
    smtp_sink.fail_next("DATA", 451, count=1000)
    assert worker.run_once().retried == LEADS
    clock.advance(seconds=30)
    report = worker.run_once()
    assert (report.sent, report.retried, report.failed) == (0, LEADS, 0)
    rows = deliveries(worker.engine)
    assert {(r.status, r.attempts, r.next_attempt_at) for r in rows} == {("retry", 2, clock.now + timedelta(minutes=1))}
    assert smtp_sink.messages == []
