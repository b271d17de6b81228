"""The worker in-process, end to end: ``Worker`` / ``Dispatcher`` with an injected clock, a real SQLite file (and the
core flows on PostgreSQL), the real aiosmtpd sink, the real CLI for adding leads.

Every time below is the injected clock's; T0 is Monday 2026-03-02 12:00 UTC. The onboarding campaign sends ``welcome``
at once and ``followup`` two days later; no policy file means the default cap of one email a day and no send window.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from db_fixtures import (  # noqa: F401 (fixtures)
    create_postgres_database,
    drop_postgres_database,
    migrated_sqlite_url,
    migrated_url,
    postgres_available,
    postgres_template,
)
from smtp_sink import SmtpSink
from sqlalchemy import update
from worker_world import (
    ONBOARDING,
    T0,
    Clock,
    Project,
    by_recipient,
    deliveries,
    dispatch_config,
    enrollments,
    lead_email,
    seed_leads,
    subjects,
    write_project,
)

from nurture.application.event_input import EventIn
from nurture.application.record_events import EventIn, record_events
from nurture.definitions.scoring import load_scoring
from nurture.delivery import message_id_for
from nurture.storage import schedule
from nurture.storage.database import session, transaction
from nurture.storage.leads import lead_summary
from nurture.storage.models import Lead
from nurture.worker.runner import Worker

NURTURE = Path(sys.executable).with_name("nurture")
MESSAGE_ID = re.compile(r"<nurture\.[0-9a-f]{24}@acme\.test>")


# --- fixtures -----------------------------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return write_project(tmp_path / "project")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sqlite_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return migrated_sqlite_url(request, tmp_path / "nurture.db")


@pytest.fixture
def build_worker(project: Project, clock: Clock, smtp_sink: SmtpSink) -> Iterator[Any]:
    """Build a Worker on the project, the sink and the injected clock (a new one is a restart); closed at the end."""
    built: list[Worker] = []

    def build(database_url: str, *, on: Project | None = None, **config: Any) -> Worker:
        settings = (on or project).settings(database_url, smtp_sink.url)
        worker = Worker(settings, clock=clock, config=dispatch_config(**config))
        built.append(worker)
        return worker

    yield build
    for worker in built:
        worker.transport.close()
        worker.engine.dispose()


def summary_of(worker: Worker, email: str) -> dict[str, Any]:
    with session(worker.engine, read_only=True) as db:
        return lead_summary(db, email)


def unsubscribe(worker: Worker, project: Project, email: str) -> None:
    """Record an unsubscribe event, as the one-click link does."""
    rules, problems = load_scoring(project.campaigns_dir)
    assert not problems
    record_events(worker.engine, worker.catalog, rules, [EventIn(email=email, type="unsubscribe")],
                  now=worker.clock(), actor="system")


def cli(project: Project, database_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **project.env(database_url, "console://")}
    result = subprocess.run([str(NURTURE), *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result


# --- the --once flow (both back-ends) -------------------------------------------------------------------------------


def test_once_sends_each_step_once_then_completes(migrated_url: str, build_worker, clock: Clock,
                                                  smtp_sink: SmtpSink, tmp_path: Path) -> None:
    emails = seed_leads(migrated_url, tmp_path, 20)
    worker = build_worker(migrated_url)

    report = worker.run_once()
    assert (report.sent, report.retried, report.failed) == (20, 0, 0)
    received = by_recipient(smtp_sink.messages)
    assert sorted(received) == emails and all(len(copies) == 1 for copies in received.values())
    rows = {row.email: row for row in deliveries(worker.engine)}
    for index, email in enumerate(emails):
        message = received[email][0].parsed()
        row = rows[email]
        assert row.status == "sent" and row.attempts == 1 and row.step_key == "welcome"
        assert message["Subject"] == f"Welcome, Lead{index}"
        assert message["Message-ID"] == row.message_id == message_id_for(f"{row.enrollment_id}:welcome", "acme.test")
        assert MESSAGE_ID.fullmatch(message["Message-ID"])
        assert re.fullmatch(r"<https://t\.acme\.test/u/[\w.-]+>", message["List-Unsubscribe"])
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message.get_content_type() == "multipart/alternative"
        assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]
        assert f"Hi Lead{index}, welcome to Acme." in message.get_body(("plain",)).get_content()
        assert message["List-Unsubscribe"].strip("<>") in message.get_body(("html",)).get_content()

    assert worker.run_once().sent == 0, "a second run at the same time sends nothing"
    clock.advance(days=2, seconds=-1)
    assert worker.run_once().sent == 0, "step 2 is not due one second early"
    clock.advance(seconds=1)
    assert worker.run_once().sent == 20
    received = by_recipient(smtp_sink.messages)
    assert all([str(m.parsed()["Subject"]) for m in received[email]] == [f"Welcome, Lead{i}", "Two days in"]
               for i, email in enumerate(emails))
    first, second = (received[emails[0]][n].parsed()["Message-ID"] for n in (0, 1))
    assert first != second and MESSAGE_ID.fullmatch(second)

    clock.advance(days=2)
    assert worker.run_once().sent == 0
    assert len(smtp_sink.messages) == 40
    assert {(e.status, e.end_reason) for e in enrollments(worker.engine)} == {("completed", "completed")}
    summary = summary_of(worker, emails[3])
    assert [(d["step_key"], d["status"], d["attempts"]) for d in summary["deliveries"]] == [
        ("followup", "sent", 1), ("welcome", "sent", 1)]  # newest first
    assert summary["deliveries"][1]["sent_at"] == T0.isoformat()
    assert summary["enrollments"][0]["status"] == "completed"


# --- send window and timezone ---------------------------------------------------------------------------------------

WINDOWED = """\
id: windowed
name: Business hours
entry: {stage: mql}
send_window: {days: daily, hours: "09:00-17:00"}
steps:
  - id: welcome
    email: {template: welcome.html.j2, subject: "Welcome, {{ lead.first_name }}"}
"""


def test_each_lead_gets_the_step_at_09_00_in_its_own_timezone(tmp_path: Path, sqlite_url: str, build_worker,
                                                              clock: Clock, smtp_sink: SmtpSink) -> None:
    project = write_project(tmp_path / "windowed", {"windowed": WINDOWED})
    build = lambda: Worker(project.settings(sqlite_url, smtp_sink.url), clock=clock, config=dispatch_config())  # noqa: E731
    [tokyo] = seed_leads(sqlite_url, tmp_path, 1, timezone="Asia/Tokyo", prefix="tokyo")
    [new_york] = seed_leads(sqlite_url, tmp_path, 1, timezone="America/New_York", prefix="ny")
    worker = build()
    try:
        # 12:00 UTC is 07:00 in New York and 21:00 in Tokyo: both windows are closed.
        assert worker.run_once().sent == 0
        due = {e.email: e.next_due_at for e in enrollments(worker.engine)}
        assert due == {new_york: T0.replace(hour=14), tokyo: T0.replace(day=3, hour=0)}

        clock.now = T0.replace(hour=13, minute=59, second=59)
        assert worker.run_once().sent == 0
        clock.now = T0.replace(hour=14)  # 09:00 EST
        assert worker.run_once().sent == 1
        assert list(by_recipient(smtp_sink.messages)) == [new_york]
        clock.now = T0.replace(hour=23, minute=59, second=59)  # 08:59:59 JST
        assert worker.run_once().sent == 0
        clock.now = T0.replace(day=3, hour=0)  # 09:00 JST on Tuesday
        assert worker.run_once().sent == 1
        assert list(by_recipient(smtp_sink.messages)) == [new_york, tokyo]
        zones = {tokyo: ZoneInfo("Asia/Tokyo"), new_york: ZoneInfo("America/New_York")}
        local = {row.email: row.sent_at.astimezone(zones[row.email]) for row in deliveries(worker.engine)}
        assert (local[new_york].hour, local[new_york].minute) == (9, 0)
        assert (local[tokyo].hour, local[tokyo].minute, local[tokyo].day) == (9, 0, 3)
    finally:
        worker.transport.close()
        worker.engine.dispose()


# --- retries (both back-ends) ---------------------------------------------------------------------------------------


def test_a_451_is_retried_after_the_backoff_with_the_same_message_id(migrated_url: str, build_worker, clock: Clock,
                                                                     smtp_sink: SmtpSink, tmp_path: Path) -> None:
    emails = seed_leads(migrated_url, tmp_path, 6)
    worker = build_worker(migrated_url)
    smtp_sink.fail_next("DATA", 451, count=6)

    report = worker.run_once()
    assert (report.sent, report.retried) == (0, 6)
    assert smtp_sink.messages == []
    rows = deliveries(worker.engine)
    assert {(r.status, r.attempts, r.next_attempt_at) for r in rows} == {("retry", 1, T0 + timedelta(seconds=30))}
    assert all(r.error.startswith("451") for r in rows)
    message_ids = {r.email: r.message_id for r in rows}

    clock.advance(seconds=29)
    assert worker.run_once().sent == 0, "not before the backoff"
    clock.advance(seconds=1)
    report = worker.run_once()
    assert (report.sent, report.retried) == (6, 0)
    received = by_recipient(smtp_sink.messages)
    assert sorted(received) == emails
    assert {email: [m.parsed()["Message-ID"] for m in copies] for email, copies in received.items()} == {
        email: [message_ids[email]] for email in emails}
    rows = deliveries(worker.engine)
    assert {(r.status, r.attempts, r.error) for r in rows} == {("sent", 2, None)}
    assert all(r.sent_at == T0 + timedelta(seconds=30) for r in rows)


def test_a_550_fails_at_once_with_the_reason_and_is_never_retried(migrated_url: str, build_worker, clock: Clock,
                                                                  smtp_sink: SmtpSink, tmp_path: Path) -> None:
    emails = seed_leads(migrated_url, tmp_path, 4)
    refused = emails[1]
    worker = build_worker(migrated_url)
    smtp_sink.fail_next("RCPT", 550, recipient=refused)

    report = worker.run_once()
    assert (report.sent, report.failed, report.retried) == (3, 1, 0)
    [delivery] = summary_of(worker, refused)["deliveries"]
    assert (delivery["status"], delivery["attempts"]) == ("failed", 1)
    assert delivery["error"] == "550 5.1.1 Mailbox unavailable"
    clock.advance(hours=3)
    assert worker.run_once().sent == 0
    assert refused not in by_recipient(smtp_sink.messages)
    assert deliveries(worker.engine, refused)[0].status == "failed"


def test_temporary_failures_give_up_after_max_attempts(migrated_url: str, build_worker, clock: Clock,
                                                       smtp_sink: SmtpSink, tmp_path: Path) -> None:
    [email] = seed_leads(migrated_url, tmp_path, 1)
    worker = build_worker(migrated_url, max_attempts=3)
    smtp_sink.fail_next("DATA", 451, count=100)

    worker.run_once()
    clock.advance(seconds=30)
    assert worker.run_once().retried == 1
    assert deliveries(worker.engine)[0].next_attempt_at == clock.now + timedelta(minutes=1)
    clock.advance(minutes=1)
    report = worker.run_once()
    assert (report.failed, report.retried) == (1, 0)
    [delivery] = summary_of(worker, email)["deliveries"]
    assert (delivery["status"], delivery["attempts"]) == ("failed", 3)
    assert delivery["error"] == "gave up after 3 attempts: 451 4.3.0 Try again later"
    clock.advance(hours=5)
    assert worker.run_once().sent + worker.run_once().retried == 0
    assert smtp_sink.messages == []


def test_nothing_is_lost_while_the_smtp_server_is_down(sqlite_url: str, build_worker, clock: Clock,
                                                       smtp_sink: SmtpSink, tmp_path: Path) -> None:
    emails = seed_leads(sqlite_url, tmp_path, 30)
    worker = build_worker(sqlite_url)
    smtp_sink.stop()

    report = worker.run_once()
    assert (report.sent, report.retried, report.failed) == (0, 30, 0)
    clock.advance(seconds=30)
    assert worker.run_once().retried == 30, "still down: retried again, not dropped"
    assert {(r.status, r.attempts) for r in deliveries(worker.engine)} == {("retry", 2)}

    smtp_sink.start()
    clock.advance(minutes=1)
    assert worker.run_once().sent == 30
    received = by_recipient(smtp_sink.messages)
    assert sorted(received) == emails and all(len(copies) == 1 for copies in received.values())
    assert {(r.status, r.attempts) for r in deliveries(worker.engine)} == {("sent", 3)}


def test_a_batch_sent_but_not_recorded_is_sent_again_after_its_lease_with_the_same_message_id(
    sqlite_url: str, build_worker, clock: Clock, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    """A worker that dies after the server's 250 and before recording it: its batch goes out once more, no more."""

    class Killed(BaseException):
        pass

    emails = seed_leads(sqlite_url, tmp_path, 10)
    dying = build_worker(sqlite_url, lease=timedelta(minutes=5))
    real_send = dying.transport.send_many

    def send_then_die(batch):
        real_send(batch)
        raise Killed

    dying.transport.send_many = send_then_die  # type: ignore[method-assign]
    with pytest.raises(Killed):
        dying.run_once()
    assert len(smtp_sink.messages) == 10
    assert {r.status for r in deliveries(dying.engine)} == {"claimed"}

    restarted = build_worker(sqlite_url, lease=timedelta(minutes=5))
    clock.advance(minutes=4, seconds=59)
    assert restarted.run_once().sent == 0, "the lease still holds"
    clock.advance(seconds=2)
    assert restarted.run_once().sent == 10
    received = by_recipient(smtp_sink.messages)
    assert sorted(received) == emails
    for email, copies in received.items():
        ids = [m.parsed()["Message-ID"] for m in copies]
        assert len(ids) == 2 and ids[0] == ids[1] == deliveries(restarted.engine, email)[0].message_id
    clock.advance(days=1)
    assert restarted.run_once().sent == 0
    assert len(smtp_sink.messages) == 20


# --- suppression (both back-ends) ---------------------------------------------------------------------------------


def test_a_lead_unsubscribed_between_claim_and_send_is_not_emailed(migrated_url: str, build_worker, project: Project,
                                                                   clock: Clock, smtp_sink: SmtpSink, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    emails = seed_leads(migrated_url, tmp_path, 5)
    victim = emails[2]
    worker = build_worker(migrated_url)
    write_decisions = schedule.write_decisions

    def then_unsubscribe(*args: Any, **kwargs: Any) -> Any:
        created = write_decisions(*args, **kwargs)
        unsubscribe(worker, project, victim)  # the click lands while the batch is being rendered
        return created

    monkeypatch.setattr(schedule, "write_decisions", then_unsubscribe)
    report = worker.run_once()
    monkeypatch.undo()
    assert (report.sent, report.suppressed) == (4, 1)
    assert victim not in by_recipient(smtp_sink.messages)
    assert deliveries(worker.engine, victim)[0].status == "suppressed"
    [enrollment] = enrollments(worker.engine, victim)
    assert (enrollment.status, enrollment.end_reason) == ("exited", "unsubscribed")

    clock.advance(days=3)
    assert worker.run_once().sent == 4
    assert victim not in by_recipient(smtp_sink.messages)
    assert len(deliveries(worker.engine, victim)) == 1


def test_a_lead_unsubscribed_while_an_earlier_chunk_is_sent_is_not_emailed(
    migrated_url: str, build_worker, project: Project, clock: Clock, smtp_sink: SmtpSink, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Chunks wait their turn on the sending thread (behind a slow mail server, or the batch before): an unsubscribe
    that lands while an earlier chunk is being sent is honoured by the later chunk, checked again right before it."""
    from nurture.worker import dispatcher as dispatching

    monkeypatch.setattr(dispatching, "SEND_CHUNK", 2)
    emails = seed_leads(migrated_url, tmp_path, 6)
    worker = build_worker(migrated_url)
    transport = worker.dispatcher.transport
    send_many = transport.send_many
    victims: list[str] = []

    def then_unsubscribe(batch: list[Any]) -> Any:
        results = send_many(batch)
        if not victims:  # the first chunk is out: a lead of a later chunk clicks unsubscribe
            first = {email for email in emails if any(email in outgoing.to_addr for outgoing, _bytes in batch)}
            victims.append(next(email for email in emails if email not in first))
            unsubscribe(worker, project, victims[0])
        return results

    monkeypatch.setattr(transport, "send_many", then_unsubscribe)
    report = worker.run_once()
    assert (report.sent, report.suppressed) == (5, 1)
    assert sorted(by_recipient(smtp_sink.messages)) == sorted(set(emails) - set(victims))
    assert [d.status for d in deliveries(worker.engine, victims[0])] == ["suppressed"]
    [enrollment] = enrollments(worker.engine, victims[0])
    assert (enrollment.status, enrollment.end_reason) == ("exited", "unsubscribed")


def test_a_chunk_whose_suppression_check_fails_is_handed_back_not_sent_unchecked(
    sqlite_url: str, build_worker, smtp_sink: SmtpSink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    emails = seed_leads(sqlite_url, tmp_path, 3)
    worker = build_worker(sqlite_url)
    exited_enrollments = schedule.exited_enrollments

    def unreachable_when_sending(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name.startswith("nurture-send"):  # the check right before the send
            raise OSError("database unreachable")
        return exited_enrollments(*args, **kwargs)

    monkeypatch.setattr(schedule, "exited_enrollments", unreachable_when_sending)
    worker.start_up()
    report = worker.dispatcher.drain(worker.clock, max_batches=1)
    monkeypatch.undo()
    assert (report.sent, report.released) == (0, 3) and smtp_sink.messages == []
    assert {d.status for email in emails for d in deliveries(worker.engine, email)} == {"retry"}
    assert worker.run_once().sent == 3
    assert sorted(by_recipient(smtp_sink.messages)) == sorted(emails)


def test_a_lead_unsubscribed_before_its_next_step_gets_nothing_more(migrated_url: str, build_worker,
                                                                    project: Project, clock: Clock,
                                                                    smtp_sink: SmtpSink, tmp_path: Path) -> None:
    emails = seed_leads(migrated_url, tmp_path, 4)
    by_event, by_column = emails[0], emails[1]
    worker = build_worker(migrated_url)
    assert worker.run_once().sent == 4

    clock.advance(hours=1)
    unsubscribe(worker, project, by_event)
    with transaction(worker.engine) as conn:  # suppressed by another system, the enrollment left as it was
        conn.execute(update(Lead.__table__).where(Lead.__table__.c.email == by_column).values(bounced_at=clock.now))
    assert enrollments(worker.engine, by_column)[0].status == "active"

    clock.advance(days=2)
    assert worker.run_once().sent == 2
    received = by_recipient(smtp_sink.messages)
    assert [len(received[email]) for email in emails] == [1, 1, 2, 2]
    ended = {e.email: (e.status, e.end_reason) for e in enrollments(worker.engine)}
    assert ended[by_event] == ("exited", "unsubscribed")
    assert ended[by_column] == ("exited", "bounced")
    assert [d.step_key for d in deliveries(worker.engine, by_column)] == ["welcome"]


# --- frequency cap across campaigns -------------------------------------------------------------------------------

NEWSLETTER = """\
id: newsletter
name: Newsletter
priority: 0
entry: {stage: mql}
steps:
  - id: news
    email: {template: news.html.j2, subject: "News"}
"""

OFFERS = """\
id: offers
name: Offers
priority: 10
entry: {stage: mql}
steps:
  - id: offer
    email: {template: offer.html.j2, subject: "An offer"}
"""

CAP = "frequency_cap: {max: 1, per: 1d}\n"


@pytest.mark.parametrize("batch_size", [500, pytest.param(7, id="batches-split-a-leads-enrollments")])
def test_a_lead_in_two_campaigns_gets_one_email_a_day_the_higher_priority_first(
    tmp_path: Path, sqlite_url: str, clock: Clock, smtp_sink: SmtpSink, batch_size: int, request: pytest.FixtureRequest
) -> None:
    # The newsletter enrollments exist first (lower ids), so priority, not insertion order, must decide.
    project = write_project(tmp_path / "two", {"newsletter": NEWSLETTER}, policy=CAP)
    emails = seed_leads(sqlite_url, tmp_path, 12)
    built: list[Worker] = []

    def build() -> Worker:
        built.append(Worker(project.settings(sqlite_url, smtp_sink.url), clock=clock,
                            config=dispatch_config(batch_size=batch_size)))
        return built[-1]

    try:
        assert build().sweep() == 12
        project.write_campaign("offers", OFFERS)
        worker = build()
        assert worker.run_once().sent == 12
        first = {email: subjects(smtp_sink, email) for email in emails}
        assert [email for email in emails if first[email] != ["An offer"]] == [], "the low-priority campaign went first"
        clock.advance(days=1, seconds=-1)
        assert worker.run_once().sent == 0
        clock.advance(seconds=1)
        assert worker.run_once().sent == 12
        assert all(subjects(smtp_sink, email) == ["An offer", "News"] for email in emails)
        clock.advance(days=3)
        assert worker.run_once().sent == 0
        assert {e.status for e in enrollments(worker.engine)} == {"completed"}
    finally:
        for worker in built:
            worker.transport.close()
            worker.engine.dispose()


# --- editing a live campaign --------------------------------------------------------------------------------------

ONBOARDING_5D = """\
id: onboarding
name: Onboarding
entry: {stage: mql}
steps:
  - id: welcome
    email: {template: welcome.html.j2, subject: "Welcome, {{ lead.first_name }}"}
  - id: followup
    wait: 5d
    email: {template: followup.html.j2, subject: "Five days in"}
"""

WELCOME_ONLY = """\
id: onboarding
name: Onboarding
entry: {stage: mql}
steps:
  - id: welcome
    email: {template: welcome.html.j2, subject: "Welcome, {{ lead.first_name }}"}
"""

FOLLOWUP_REPLACED = """\
id: onboarding
name: Onboarding
entry: {stage: mql}
steps:
  - id: welcome
    email: {template: welcome.html.j2, subject: "Welcome, {{ lead.first_name }}"}
  - id: checklist
    wait: 1d
    replaces: [followup]
    email: {template: checklist.html.j2, subject: "A checklist"}
"""


def _welcome_then_edit(project: Project, build_worker, sqlite_url: str, clock: Clock, tmp_path: Path,
                       edited: str) -> tuple[list[str], Worker]:
    emails = seed_leads(sqlite_url, tmp_path, 3)
    assert build_worker(sqlite_url).run_once().sent == 3
    clock.advance(hours=1)
    project.write_campaign("onboarding", edited)
    restarted = build_worker(sqlite_url)
    return emails, restarted


def test_a_changed_wait_applies_to_leads_already_waiting(project: Project, build_worker, sqlite_url: str,
                                                        clock: Clock, smtp_sink: SmtpSink, tmp_path: Path) -> None:
    emails, worker = _welcome_then_edit(project, build_worker, sqlite_url, clock, tmp_path, ONBOARDING_5D)
    assert worker.run_once().sent == 0
    assert {(e.step_id, e.next_due_at) for e in enrollments(worker.engine)} == {("followup", T0 + timedelta(days=5))}
    clock.now = T0 + timedelta(days=2)
    assert worker.run_once().sent == 0, "the old wait no longer applies"
    clock.now = T0 + timedelta(days=5)
    assert worker.run_once().sent == 3
    assert all(subjects(smtp_sink, email) == [f"Welcome, Lead{i}", "Five days in"] for i, email in enumerate(emails))


def test_a_removed_last_step_completes_the_enrollments_waiting_on_it(project: Project, build_worker, sqlite_url: str,
                                                                     clock: Clock, smtp_sink: SmtpSink,
                                                                     tmp_path: Path) -> None:
    _emails, worker = _welcome_then_edit(project, build_worker, sqlite_url, clock, tmp_path, WELCOME_ONLY)
    assert worker.run_once().sent == 0  # ended at start-up, when the new version came into force
    for enrollment in enrollments(worker.engine):
        assert (enrollment.status, enrollment.end_reason) == ("completed", "completed")
        assert [p["outcome"] for p in enrollment.state["path"]] == ["sent", "relocated"]
    clock.advance(days=7)
    assert worker.run_once().sent == 0
    assert len(smtp_sink.messages) == 3


def test_a_removed_step_goes_on_with_the_step_that_replaces_it(project: Project, build_worker,
                                                                         sqlite_url: str, clock: Clock,
                                                                         smtp_sink: SmtpSink, tmp_path: Path) -> None:
    emails, worker = _welcome_then_edit(project, build_worker, sqlite_url, clock, tmp_path, FOLLOWUP_REPLACED)
    assert worker.run_once().sent == 0
    assert {(e.step_id, e.next_due_at) for e in enrollments(worker.engine)} == {("checklist", T0 + timedelta(days=1))}
    clock.now = T0 + timedelta(days=1)
    assert worker.run_once().sent == 3
    assert all(subjects(smtp_sink, email)[-1] == "A checklist" for email in emails)
    assert {e.status for e in enrollments(worker.engine)} == {"completed"}


# --- downtime ---------------------------------------------------------------------------------------------------


def test_steps_due_while_the_worker_was_down_are_sent_on_restart(sqlite_url: str, build_worker, clock: Clock,
                                                                 smtp_sink: SmtpSink, tmp_path: Path) -> None:
    emails = seed_leads(sqlite_url, tmp_path, 5)
    assert build_worker(sqlite_url).run_once().sent == 5
    clock.advance(days=5)  # down from day 0 to day 5: followup was due on day 2
    assert build_worker(sqlite_url).run_once().sent == 5
    assert all(subjects(smtp_sink, email)[-1] == "Two days in" for email in emails)
    late = [m.parsed()["Date"] for m in smtp_sink.messages[5:]]
    assert set(late) == {"Sat, 07 Mar 2026 12:00:00 +0000"}


def test_catch_up_max_late_skips_and_records_steps_too_late(tmp_path: Path, sqlite_url: str, clock: Clock,
                                                           smtp_sink: SmtpSink) -> None:
    project = write_project(tmp_path / "late", policy="catch_up: {max_late: 1d}\n")
    emails = seed_leads(sqlite_url, tmp_path, 3)
    built = [Worker(project.settings(sqlite_url, smtp_sink.url), clock=clock, config=dispatch_config())]
    try:
        assert built[0].run_once().sent == 3
        clock.advance(days=5)
        built.append(Worker(project.settings(sqlite_url, smtp_sink.url), clock=clock, config=dispatch_config()))
        report = built[1].run_once()
        assert (report.sent, report.ended) == (0, 3)
        assert len(smtp_sink.messages) == 3
        for enrollment in enrollments(built[1].engine):
            assert enrollment.status == "completed"
            late = enrollment.state["path"][-1]
            assert (late["step"], late["outcome"]) == ("followup", "late")
            assert "more than 1d late" in late["detail"]
        assert all([d.step_key for d in deliveries(built[1].engine, email)] == ["welcome"] for email in emails)
    finally:
        for worker in built:
            worker.transport.close()
            worker.engine.dispose()


# --- leads added while the worker runs --------------------------------------------------------------------------


def _add_leads_through_the_cli(project: Project, sqlite_url: str, tmp_path: Path) -> list[str]:
    cli(project, sqlite_url, tmp_path, "leads", "add", "ada@example.com", "--first-name", "Ada", "--stage", "mql")
    csv_file = tmp_path / "more.csv"
    csv_file.write_text("email,first_name,stage\nbob@example.com,Bob,mql\ncy@example.com,Cy,mql\n", encoding="utf-8")
    cli(project, sqlite_url, tmp_path, "leads", "import", str(csv_file))
    return ["ada@example.com", "bob@example.com", "cy@example.com"]


def test_leads_added_through_the_cli_are_enrolled_at_once(project: Project, build_worker, sqlite_url: str,
                                                          clock: Clock, smtp_sink: SmtpSink, tmp_path: Path) -> None:
    worker = build_worker(sqlite_url)
    assert worker.run_once().claimed == 0
    added = _add_leads_through_the_cli(project, sqlite_url, tmp_path)
    # The commands enrolled them (at the machine's time): no sweep is needed, the next dispatcher run sends.
    assert worker.sweep() == 0
    assert sorted(e.lead_id for e in enrollments(worker.engine)) == [1, 2, 3]
    clock.now = datetime.now(timezone.utc) + timedelta(seconds=1)
    assert worker.dispatcher.drain(clock).sent == 3
    assert sorted(by_recipient(smtp_sink.messages)) == added
    assert subjects(smtp_sink, "ada@example.com") == ["Welcome, Ada"]


def test_the_sweep_counts_the_leads_it_enrolled(migrated_url: str, build_worker, tmp_path: Path) -> None:
    seed_leads(migrated_url, tmp_path, 12)
    worker = build_worker(migrated_url)
    assert worker.sweep() == 12
    assert worker.sweep() == 0
    assert len(enrollments(worker.engine)) == 12


# --- several dispatchers on PostgreSQL --------------------------------------------------------------------------


@pytest.fixture
def pg_url(postgres_template: str) -> Iterator[str]:
    url = create_postgres_database(template=postgres_template)
    yield url
    drop_postgres_database(url)


@pytest.mark.postgres
def test_two_workers_drain_one_postgres_database_without_sending_anything_twice(
    pg_url: str, project: Project, clock: Clock, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    emails = seed_leads(pg_url, tmp_path, 2000)
    workers = [Worker(project.settings(pg_url, f"{smtp_sink.url}?connections=2"), clock=clock,
                      config=dispatch_config(batch_size=50)) for _ in range(2)]
    for name, worker in zip("AB", workers):
        worker.dispatcher.owner = f"worker-{name}"
    try:
        workers[0].sweep()
        assert len(enrollments(workers[0].engine)) == 2000
        start = threading.Barrier(2)
        reports: dict[int, Any] = {}
        errors: list[BaseException] = []

        def drain(index: int) -> None:
            try:
                start.wait(timeout=10)
                reports[index] = workers[index].dispatcher.drain(clock)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=drain, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
        sent = [reports[0].sent, reports[1].sent]
        print(f"\ndispatcher A sent {sent[0]}, dispatcher B sent {sent[1]}")
        assert sum(sent) == 2000 and min(sent) > 0, sent
        received = by_recipient(smtp_sink.messages)
        assert sorted(received) == emails
        assert [email for email, copies in received.items() if len(copies) != 1] == []
        rows = deliveries(workers[0].engine)
        assert len(rows) == 2000 and {r.status for r in rows} == {"sent"}
    finally:
        for worker in workers:
            worker.transport.close()
            worker.engine.dispose()


HANDS_OFF = """\
id: onboarding
name: Onboarding
entry: {stage: mql}
steps:
  - id: welcome
    email: {template: welcome.html.j2, subject: "Welcome, {{ lead.first_name }}"}
  - id: to-stream
    update: {add_tags: [long-term]}
"""
STREAM = """\
id: stream
name: Long-term stream
entry: {stage: [lead, mql], where: {tags: [long-term]}}
steps:
  - id: news
    email: {template: news.html.j2, subject: "News"}
"""


def test_a_tag_set_by_an_update_step_enrolls_the_lead_at_once(build_worker, tmp_path: Path, sqlite_url: str,
                                                               clock: Clock, smtp_sink: SmtpSink) -> None:
    project = write_project(tmp_path / "handoff", {"onboarding": HANDS_OFF, "stream": STREAM},
                            policy="frequency_cap: {max: 1, per: 1d}\n")
    seed_leads(sqlite_url, tmp_path, 2)
    worker = build_worker(sqlite_url, on=project)
    worker.run_once()
    # the update step tagged the leads and they entered the stream in the same run, not at the next sweep
    assert sorted((e.lead_id, e.campaign_id) for e in enrollments(worker.engine) if e.campaign_id == "stream") == [
        (1, "stream"), (2, "stream")]
    assert worker.sweep() == 0
    clock.advance(days=1)
    worker.dispatcher.drain(clock)
    assert subjects(smtp_sink, lead_email(0)) == ["Welcome, Lead0", "News"]  # the cap spaced them a day apart


# --- hardening ---------------------------------------------------------------------------------------------------


def test_a_paused_campaign_sends_nothing_to_leads_already_in_it(build_worker, project: Project, sqlite_url: str,
                                                               clock: Clock, smtp_sink: SmtpSink, tmp_path: Path) -> None:
    emails = seed_leads(sqlite_url, tmp_path, 2)
    build_worker(sqlite_url).run_once()
    assert len(smtp_sink.messages) == 2  # the welcomes
    project.write_campaign("onboarding", ONBOARDING.replace("name: Onboarding", "name: Onboarding\npaused: true"))
    clock.advance(days=3)
    paused = build_worker(sqlite_url)  # a restart with the edited file
    assert paused.run_once().sent == 0
    assert len(smtp_sink.messages) == 2
    assert {e.status for e in enrollments(paused.engine)} == {"active"}  # waiting, not ended
    assert emails


def test_one_enrollment_the_engine_cannot_advance_does_not_hold_back_the_others(
    project: Project, build_worker, sqlite_url: str, clock: Clock, smtp_sink: SmtpSink, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emails = seed_leads(sqlite_url, tmp_path, 4)
    worker = build_worker(sqlite_url)
    import nurture.worker.dispatcher as dispatcher_module

    real_advance = dispatcher_module.advance

    def broken_for_one_lead(campaign, policy, state, lead, *args, **kwargs):
        if lead.email == emails[1]:
            raise TypeError("a bug the engine hits for this lead only")
        return real_advance(campaign, policy, state, lead, *args, **kwargs)

    monkeypatch.setattr(dispatcher_module, "advance", broken_for_one_lead)
    report = worker.run_once()
    assert report.sent == 3
    assert sorted(by_recipient(smtp_sink.messages)) == sorted(set(emails) - {emails[1]})
    [parked] = enrollments(worker.engine, emails[1])
    assert parked.status == "active" and parked.lease_until is None
    assert parked.next_due_at == clock.now + timedelta(hours=1)  # looked at again later, not every tick
    monkeypatch.undo()
    clock.advance(hours=1)
    assert worker.dispatcher.drain(clock).sent == 1


def test_an_enrollment_ended_by_intake_during_the_tick_stays_ended_and_gets_nothing(
    project: Project, build_worker, sqlite_url: str, clock: Clock, smtp_sink: SmtpSink, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emails = seed_leads(sqlite_url, tmp_path, 3)
    worker = build_worker(sqlite_url)
    worker.start_up()
    load_facts = schedule.load_facts
    victim = emails[0]

    def then_a_demo_request(*args: Any, **kwargs: Any) -> Any:
        facts = load_facts(*args, **kwargs)
        with transaction(worker.engine) as conn:  # intake ends the enrollment (a goal event) mid-tick
            from nurture.storage.enrollments import exit_enrollments

            lead_id = conn.execute(select_lead_id(victim)).scalar_one()
            exit_enrollments(conn, lead_id, "goal:demo_request", clock.now)
        return facts

    monkeypatch.setattr(schedule, "load_facts", then_a_demo_request)
    report = worker.dispatcher.drain(clock)
    monkeypatch.undo()
    assert report.sent == 2 and victim not in by_recipient(smtp_sink.messages)
    [ended] = enrollments(worker.engine, victim)
    assert (ended.status, ended.end_reason) == ("exited", "goal:demo_request")
    assert deliveries(worker.engine, victim) == []


def select_lead_id(email: str) -> Any:
    from sqlalchemy import select

    return select(Lead.__table__.c.id).where(Lead.__table__.c.email == email)


def test_a_retry_waits_for_the_send_window_like_a_first_attempt(build_worker, tmp_path: Path, sqlite_url: str,
                                                                 clock: Clock, smtp_sink: SmtpSink) -> None:
    project = write_project(tmp_path / "window", policy="send_window: {days: mon-fri, hours: '09:00-17:00'}\n"
                                                        "timezone: UTC\nfrequency_cap: {max: 5, per: 1d}\n")
    [email] = seed_leads(sqlite_url, tmp_path, 1)
    clock.now = datetime(2026, 3, 2, 16, 59, 50, tzinfo=timezone.utc)  # Monday, ten seconds before closing
    worker = build_worker(sqlite_url, on=project)
    smtp_sink.fail_next("DATA", 451, count=1)
    assert worker.run_once().retried == 1
    clock.advance(seconds=31)  # the backoff is over, but the window closed at 17:00
    assert worker.run_once().sent == 0
    [delivery] = deliveries(worker.engine, email)
    assert (delivery.status, delivery.next_attempt_at) == ("retry", datetime(2026, 3, 3, 9, 0, tzinfo=timezone.utc))
    clock.now = datetime(2026, 3, 3, 9, 0, tzinfo=timezone.utc)
    assert worker.run_once().sent == 1
    assert subjects(smtp_sink, email) == ["Welcome, Lead0"]


def test_chunks_not_started_by_half_the_lease_are_handed_back_unsent(
    project: Project, build_worker, sqlite_url: str, clock: Clock, smtp_sink: SmtpSink, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import types

    import nurture.worker.dispatcher as dispatcher_module

    emails = seed_leads(sqlite_url, tmp_path, 30)
    worker = build_worker(sqlite_url)
    worker.start_up()
    monkeypatch.setattr(dispatcher_module, "SEND_CHUNK", 10)
    import itertools

    # the deadline's base, chunk 1 in time, chunks 2 and 3 too late; the tick's retry pass has a batch (and a
    # deadline) of its own and sends the 20 handed back
    readings = itertools.chain([0.0, 1.0], itertools.repeat(10_000.0))
    monkeypatch.setattr(dispatcher_module, "time", types.SimpleNamespace(monotonic=lambda: next(readings)))
    report = worker.dispatcher.tick(clock.now)
    monkeypatch.undo()
    assert (report.sent, report.released) == (30, 20)
    assert sorted(by_recipient(smtp_sink.messages)) == emails
    assert {d.attempts for d in deliveries(worker.engine)} == {1}  # handing back is not an attempt
    assert all(len(copies) == 1 for copies in by_recipient(smtp_sink.messages).values())


def test_when_recording_a_batch_fails_the_batch_sent_after_it_is_still_recorded(
    sqlite_url: str, build_worker, clock: Clock, smtp_sink: SmtpSink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """drain() sends batch n+1 while it records batch n: a failure recording n must not leave n+1 sent unrecorded."""

    class DatabaseGone(Exception):
        pass

    seed_leads(sqlite_url, tmp_path, 20)
    worker = build_worker(sqlite_url, batch_size=5)
    worker.start_up()
    real_record = schedule.record_outcomes
    calls: list[int] = []

    def record_once_failing(engine, now, outcomes):
        calls.append(len(outcomes))
        if len(calls) == 1:
            raise DatabaseGone
        return real_record(engine, now, outcomes)

    monkeypatch.setattr(schedule, "record_outcomes", record_once_failing)
    with pytest.raises(DatabaseGone):
        worker.dispatcher.drain(clock)
    rows = deliveries(worker.engine)
    statuses = [r.status for r in sorted(rows, key=lambda r: r.id)]
    # the first batch stays claimed (sent again after its lease); the second, sent meanwhile, is recorded
    assert statuses == ["claimed"] * 5 + ["sent"] * 5, statuses
    assert calls == [5, 5]
    assert len(smtp_sink.wait_for(10)) == 10
    worker.dispatcher.close()


def test_retries_wait_until_the_batch_in_flight_is_recorded(
    sqlite_url: str, build_worker, clock: Clock, smtp_sink: SmtpSink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry pass must not queue behind a batch that was sent but not recorded (it could outlive its lease)."""
    seed_leads(sqlite_url, tmp_path, 3)
    worker = build_worker(sqlite_url, batch_size=5)
    smtp_sink.fail_next("DATA", 451, count=3)
    assert worker.run_once().retried == 3
    seed_leads(sqlite_url, tmp_path, 10, start=3)
    worker.start_up()
    clock.advance(seconds=31)  # the three retries are due, and ten new leads too
    claimed_at_retry: list[int] = []
    real_retry = worker.dispatcher._retry_deliveries

    def watch(now):
        claimed_at_retry.append(sum(r.status == "claimed" for r in deliveries(worker.engine)))
        return real_retry(now)

    monkeypatch.setattr(worker.dispatcher, "_retry_deliveries", watch)
    worker.dispatcher.drain(clock)
    assert claimed_at_retry and claimed_at_retry[0] == 0, claimed_at_retry
    assert sorted({r.status for r in deliveries(worker.engine)}) == ["sent"]
    worker.dispatcher.close()


# --- the rendering budget -----------------------------------------------------------------------------------------


SLOW_FOR_ONE_LEAD = """\
<p>Hi {{ lead.first_name }}, welcome to Acme.</p>
{% if lead.first_name == 'Lead7' %}{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}{% endif %}
{% if lead.first_name == 'Lead8' %}{{ 'a' * 10**9 }}{% endif %}
"""


def test_a_template_too_slow_or_too_large_for_one_lead_fails_that_email_and_the_others_go_out_at_once(
    project: Project, sqlite_url: str, clock: Clock, smtp_sink: SmtpSink, tmp_path: Path,
) -> None:
    emails = seed_leads(sqlite_url, tmp_path, 301)
    (project.templates_dir / "welcome.html.j2").write_text(SLOW_FOR_ONE_LEAD, encoding="utf-8")
    slow, huge = emails[7], emails[8]
    # NURTURE_LEASE_SECONDS=10: chunks not sent within half the lease are handed back; the default budget of 2 s fits
    worker = Worker(project.settings(sqlite_url, smtp_sink.url), clock=clock,
                    config=dispatch_config(lease=timedelta(seconds=10)))
    try:
        reports: list[Any] = []
        runner = threading.Thread(target=lambda: reports.append(worker.run_once()), daemon=True)
        started = time.monotonic()
        runner.start()
        runner.join(timeout=60)
        assert not runner.is_alive(), "the batch never finished: the slow template held everyone back"
        assert time.monotonic() - started < 30
        [report] = reports
        assert (report.sent, report.failed, report.released) == (299, 2, 0)
        assert sorted(by_recipient(smtp_sink.messages)) == sorted(set(emails) - {slow, huge})
        [too_slow] = deliveries(worker.engine, slow)
        assert (too_slow.status, too_slow.attempts) == ("failed", 1)
        assert too_slow.error.startswith("render: welcome.html.j2:2: rendering took longer than 2 s (NURTURE_RENDER_TIMEOUT)")
        [too_large] = deliveries(worker.engine, huge)
        assert too_large.status == "failed"
        assert too_large.error.startswith("render: welcome.html.j2:3: '*' would make 1,000,000,000 characters")
        clock.advance(hours=3)  # failed, not retried: nothing is rendered or sent again
        assert worker.run_once().sent == 0
        assert [d.status for d in deliveries(worker.engine, slow) + deliveries(worker.engine, huge)] == ["failed"] * 2
    finally:
        worker.transport.close()
        worker.engine.dispose()
