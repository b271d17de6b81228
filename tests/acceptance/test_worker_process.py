"""``nurture run`` as the real console script in a subprocess, on a real SQLite file, sending to the real aiosmtpd sink.

Here the clock is the wall clock: waits are polls with deadlines, never fixed sleeps. The worker is configured through
the environment only (NURTURE_DATABASE_URL, NURTURE_MAIL_URL, NURTURE_CAMPAIGNS_DIR, NURTURE_TEMPLATES_DIR, and
NURTURE_BATCH_SIZE / NURTURE_LEASE_SECONDS / NURTURE_POLL_INTERVAL to keep the crash test short). ``nurture run`` serves
its HTTP intake beside the worker, each process on a free NURTURE_HTTP_PORT; the latency test runs ``--no-http``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from smtp_sink import SmtpSink
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from worker_world import Project, by_recipient, deliveries, enrollments, seed_leads, wait_until, write_project

from nurture.storage.database import make_engine, transaction
from nurture.storage.models import Delivery, Enrollment

NURTURE = Path(sys.executable).with_name("nurture")
D, E = Delivery.__table__, Enrollment.__table__


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Nurture:
    """Runs ``nurture`` commands and ``nurture run`` processes on one project and database."""

    def __init__(self, project: Project, database_url: str, sink: SmtpSink, folder: Path) -> None:
        self.folder = folder
        base = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
        self.env = {**base, **project.env(database_url, sink.url)}
        self.processes: list[tuple[subprocess.Popen[bytes], Path]] = []

    def __call__(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Run a command to completion; it must succeed."""
        result = subprocess.run([str(NURTURE), *args], env={**self.env, **env}, cwd=self.folder, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, f"nurture {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
        return result

    def start(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """Start ``nurture run`` (with its HTTP intake on a free port); its output goes to a log file (see :meth:`log`)."""
        log_path = self.folder / f"worker-{len(self.processes) + 1}.log"
        env = {**self.env, "NURTURE_HTTP_PORT": str(free_port()), **env}
        with log_path.open("wb") as log:
            process = subprocess.Popen([str(NURTURE), "run", *args], env=env, cwd=self.folder,
                                       stdout=log, stderr=subprocess.STDOUT)
        self.processes.append((process, log_path))
        return process

    def log(self, process: subprocess.Popen[bytes]) -> str:
        path = next(path for p, path in self.processes if p is process)
        return path.read_text(errors="replace")[-4000:]

    def wait_for_messages(self, sink: SmtpSink, process: subprocess.Popen[bytes], count: int, timeout: float) -> int:
        """Poll until the sink holds more than ``count`` messages; fail early if the worker died."""
        deadline = time.monotonic() + timeout
        while (received := len(sink.messages)) <= count:
            assert process.poll() is None, f"the worker exited {process.returncode}:\n{self.log(process)}"
            assert time.monotonic() < deadline, f"only {received} messages after {timeout}s:\n{self.log(process)}"
            time.sleep(0.002)
        return received

    def stop_all(self) -> None:
        for process, _log in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return write_project(tmp_path / "project")


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'nurture.db'}"


@pytest.fixture
def nurture(project: Project, database_url: str, smtp_sink: SmtpSink, tmp_path: Path) -> Iterator[Nurture]:
    runner = Nurture(project, database_url, smtp_sink, tmp_path)
    assert "applied 0001" in runner("db", "upgrade").stdout
    yield runner
    runner.stop_all()


@pytest.fixture
def engine(database_url: str, nurture: Nurture) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def status_counts(engine: Engine) -> dict[str, int]:
    with transaction(engine, read_only=True) as conn:
        return dict(conn.execute(select(D.c.status, func.count()).group_by(D.c.status)).all())


def leased_enrollments(engine: Engine) -> int:
    with transaction(engine, read_only=True) as conn:
        return conn.execute(select(func.count()).select_from(E).where(E.c.lease_until.is_not(None))).scalar_one()


def test_run_once_sends_what_is_due_and_exits(nurture: Nurture, database_url: str, smtp_sink: SmtpSink,
                                              tmp_path: Path) -> None:
    emails = seed_leads(database_url, tmp_path, 50)
    started = datetime.now(timezone.utc)
    result = nurture("run", "--once")
    assert "done: 50 sent, 0 to retry, 0 failed, 0 suppressed, 0 enrollment(s) ended" in result.stdout
    received = by_recipient(smtp_sink.messages)
    assert sorted(received) == emails and all(len(copies) == 1 for copies in received.values())

    summary = json.loads(nurture("leads", "show", emails[7], "--json").stdout)
    [delivery] = summary["deliveries"]
    assert (delivery["step_key"], delivery["status"], delivery["attempts"]) == ("welcome", "sent", 1)
    assert delivery["subject"] == "Welcome, Lead7"
    [enrollment] = summary["enrollments"]
    assert (enrollment["status"], enrollment["step_id"]) == ("active", "followup")
    next_due = datetime.fromisoformat(enrollment["next_due_at"])
    assert timedelta(days=2) <= next_due - started < timedelta(days=2, minutes=1)

    assert "done: 0 sent" in nurture("run", "--once").stdout
    assert len(smtp_sink.messages) == 50


def test_a_worker_killed_mid_batch_and_restarted_emails_everyone_once_but_the_batch_in_flight(
    nurture: Nurture, database_url: str, engine: Engine, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    leads, batch_size = 3000, 200
    emails = seed_leads(database_url, tmp_path, leads)
    knobs = dict(NURTURE_BATCH_SIZE=str(batch_size), NURTURE_LEASE_SECONDS="2", NURTURE_POLL_INTERVAL="0.1")

    first = nurture.start(**knobs)
    nurture.wait_for_messages(smtp_sink, first, 300, timeout=60)
    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=10) == -signal.SIGKILL
    at_kill = len(smtp_sink.messages)
    assert at_kill < leads, "the worker finished before it could be killed: nothing was in flight"
    in_flight = {row.email for row in deliveries(engine) if row.status == "claimed"}
    assert len(in_flight) <= 2 * batch_size  # the batch being sent, and the next one being prepared

    second = nurture.start(**knobs)
    wait_until(lambda: status_counts(engine) == {"sent": leads}, timeout=60,
               what=f"every delivery sent after the restart; now {status_counts(engine)}")
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=15) == 0, nurture.log(second)

    received = by_recipient(smtp_sink.messages)
    twice = {email for email, copies in received.items() if len(copies) > 1}
    print(f"\n{at_kill} received before the kill, {len(in_flight)} deliveries in flight, {len(twice)} sent twice; "
          f"{len(smtp_sink.messages)} messages in all")
    assert sorted(received) == emails, "every lead got its email"
    assert twice <= in_flight, f"sent twice but not in flight at the kill: {sorted(twice - in_flight)[:10]}"
    assert max(len(copies) for copies in received.values()) <= 2
    for email in twice:
        first_copy, second_copy = (copy.parsed()["Message-ID"] for copy in received[email])
        assert first_copy == second_copy == deliveries(engine, email)[0].message_id
    assert len(deliveries(engine)) == leads
    assert {e.step_id for e in enrollments(engine)} == {"followup"}


def test_sigterm_finishes_the_batch_in_flight_and_exits_0(nurture: Nurture, database_url: str, engine: Engine,
                                                          smtp_sink: SmtpSink, tmp_path: Path) -> None:
    leads, batch_size = 2000, 200
    emails = seed_leads(database_url, tmp_path, leads)
    worker = nurture.start(NURTURE_BATCH_SIZE=str(batch_size), NURTURE_POLL_INTERVAL="0.1")
    before = nurture.wait_for_messages(smtp_sink, worker, 200, timeout=60)
    signalled = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0, nurture.log(worker)
    print(f"\nstopped {time.monotonic() - signalled:.2f}s after SIGTERM")

    counts = status_counts(engine)
    assert "claimed" not in counts and leased_enrollments(engine) == 0, counts
    sent = counts.get("sent", 0)
    messages = smtp_sink.messages
    assert sent == len(messages) == len(by_recipient(messages)), "what was sent is recorded, once per lead"
    # in flight at the signal: the batch being sent, the next one queued behind it, one being claimed
    assert sent <= before + 3 * batch_size < leads, "it stopped claiming after the batches in flight"
    assert "stopped" in nurture.log(worker)

    result = nurture("run", "--once")
    assert f"done: {leads - sent} sent" in result.stdout
    assert Counter(len(copies) for copies in by_recipient(smtp_sink.messages).values()) == {1: leads}
    assert sorted(by_recipient(smtp_sink.messages)) == emails


LATENCY = """\
id: latency
name: Latency
entry: {stage: mql}
steps:
  - id: soon
    wait: 3s
    email: {template: welcome.html.j2, subject: "Welcome, {{ lead.first_name }}"}
"""


def test_an_idle_worker_sends_a_step_within_a_second_of_its_due_time(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    project = write_project(tmp_path / "latency", {"latency": LATENCY})
    database_url = f"sqlite:///{tmp_path / 'latency.db'}"
    runner = Nurture(project, database_url, smtp_sink, tmp_path)
    runner("db", "upgrade")
    seed_leads(database_url, tmp_path, 1)
    engine = make_engine(database_url)
    try:
        worker = runner.start("--no-http")  # the worker alone, at the default poll interval

        def planned() -> Any:
            rows = enrollments(engine)
            if not rows:
                return None
            assert rows[0].status == "active", "sent before the test saw it planned"
            return rows[0].next_due_at > rows[0].enrolled_at and rows[0].next_due_at

        due: datetime = wait_until(planned, timeout=30, what="the step to be planned")
        assert due - enrollments(engine)[0].enrolled_at == timedelta(seconds=3)
        deadline = time.monotonic() + 30
        while not smtp_sink.messages:
            assert worker.poll() is None and time.monotonic() < deadline, runner.log(worker)
            time.sleep(0.001)
        latency = time.time() - due.timestamp()
        print(f"\nstep due at {due.isoformat()} received {latency * 1000:.0f} ms later")
        assert 0 <= latency < 2.5
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=10) == 0
    finally:
        runner.stop_all()
        engine.dispose()


SCORING = """\
behaviour:
  events:
    webinar_attended: 50
thresholds:
  mql: 40
"""


def test_a_lead_promoted_by_an_event_while_the_worker_runs_is_emailed(nurture: Nurture, project: Project,
                                                                      smtp_sink: SmtpSink, tmp_path: Path) -> None:
    (project.campaigns_dir / "scoring.yaml").write_text(SCORING, encoding="utf-8")
    worker = nurture.start()
    wait_until(lambda: worker.poll() is not None or "worker running" in nurture.log(worker), timeout=30,
               what="the worker to start")
    assert worker.poll() is None, nurture.log(worker)
    result = nurture("event", "ada@example.com", "webinar_attended")
    assert "stage mql (changed)" in result.stdout
    [message] = smtp_sink.wait_for(1, timeout=10)
    assert message.rcpt_tos == ("ada@example.com",)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0


def _children(pid: int) -> dict[int, str]:
    """The child processes of ``pid`` and their command lines (from /proc)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry.name)] = cmdline
    return found


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie waiting to be reaped counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _dispatch_children(pid: int) -> set[int]:
    # multiprocessing's spawned children run spawn_main; its resource tracker is another child, which does not count
    return {child for child, cmdline in _children(pid).items() if "spawn_main" in cmdline}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_processes_share_the_sending_survive_a_killed_one_and_stop_together(
    nurture: Nurture, engine: Engine, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    leads, batch_size = 3000, 100
    worker = nurture.start("--no-http", "--processes", "3", NURTURE_BATCH_SIZE=str(batch_size),
                           NURTURE_LEASE_SECONDS="2", NURTURE_POLL_INTERVAL="0.1")
    wait_until(lambda: nurture.log(worker).count("ready") >= 2, timeout=60, what="two dispatch processes ready")
    children = _dispatch_children(worker.pid)
    assert len(children) == 2, _children(worker.pid)

    path = tmp_path / "leads.csv"
    emails = [f"lead{i}@example.com" for i in range(leads)]
    path.write_text("email,first_name,stage\n" + "".join(f"{e},Lead{i},mql\n" for i, e in enumerate(emails)))
    nurture("leads", "import", str(path))  # enrolls them: every process finds them due at its next look
    nurture.wait_for_messages(smtp_sink, worker, 1000, timeout=60)
    victim = min(children)
    os.kill(victim, signal.SIGKILL)
    in_flight = {row.email for row in deliveries(engine) if row.status == "claimed"}

    wait_until(lambda: status_counts(engine) == {"sent": leads}, timeout=90,
               what=f"every delivery sent; now {status_counts(engine)}")
    replacement = wait_until(lambda: _dispatch_children(worker.pid) - children, timeout=30,
                             what="a new dispatch process in place of the killed one")
    assert victim not in _dispatch_children(worker.pid)
    log = nurture.log(worker)
    senders = {line.split("dispatched in process ", 1)[1].split(":", 1)[0] for line in log.splitlines()
               if "dispatched in process " in line}
    assert senders and "runner: dispatched:" in log, f"the main process and the others did not share the work:\n{log}"

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, nurture.log(worker)
    wait_until(lambda: all(_gone(pid) for pid in children | replacement), timeout=10,
               what="the dispatch processes gone with the worker")
    received = by_recipient(smtp_sink.messages)
    twice = {email for email, copies in received.items() if len(copies) > 1}
    assert sorted(received) == sorted(emails), "every lead got its email"
    assert twice <= in_flight, f"sent twice but not in flight at the kill: {sorted(twice - in_flight)[:10]}"
    assert len(deliveries(engine)) == leads


def test_dispatch_processes_work_from_the_campaigns_the_worker_loaded(project: Project, database_url: str,
                                                                     smtp_sink: SmtpSink, engine: Engine,
                                                                     tmp_path: Path) -> None:
    """Campaign files edited while ``nurture run`` runs change nothing until it restarts, in every process: a dispatch
    process, a restarted one too, works from the definitions the main process loaded, not the files as they are now."""
    from nurture.application.enroll import enroll_leads
    from nurture.definitions.loader import load_catalog
    from nurture.worker.processes import DispatchProcesses

    settings = project.settings(database_url, smtp_sink.url).model_copy(update={"poll_interval": 0.1})
    catalog = load_catalog(settings.campaigns_dir, settings.templates_dir).raise_for_problems()
    emails = seed_leads(database_url, tmp_path, 20)
    assert enroll_leads(engine, catalog, datetime.now(timezone.utc)) == 20
    project.write_campaign("edited", "id: [a campaign being edited\n")  # the files no longer load
    processes = DispatchProcesses(settings, 1, catalog)
    processes.start()
    try:
        wait_until(lambda: len(by_recipient(smtp_sink.messages)) == 20, timeout=60,
                   what="the dispatch process sending (it exits at once if it reads the edited files)")
        [first] = processes.processes
        first.kill()
        first.join(10)
        assert processes.check() == 1  # as the worker's watch job does
        emails += seed_leads(database_url, tmp_path, 5, start=20)
        assert enroll_leads(engine, catalog, datetime.now(timezone.utc)) == 5
        wait_until(lambda: len(by_recipient(smtp_sink.messages)) == 25, timeout=60,
                   what="the restarted dispatch process sending")
    finally:
        processes.stop(timeout=30)
    assert sorted(by_recipient(smtp_sink.messages)) == sorted(emails)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_dispatch_processes_stop_when_the_main_process_is_killed(nurture: Nurture) -> None:
    worker = nurture.start("--no-http", "--processes", "2", NURTURE_POLL_INTERVAL="0.1")
    wait_until(lambda: "ready" in nurture.log(worker), timeout=60, what="the dispatch process ready")
    [child] = _dispatch_children(worker.pid)
    worker.send_signal(signal.SIGKILL)
    assert worker.wait(timeout=10) == -signal.SIGKILL
    # its pipe from the main process reads end of file: it stops on its own instead of sending unwatched
    wait_until(lambda: _gone(child), timeout=15, what="the orphaned dispatch process to exit")
