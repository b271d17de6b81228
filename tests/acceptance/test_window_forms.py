"""The send-window forms the README documents, through the real worker (injected clock, real SQLite file, real SMTP
sink): ``send_window: always`` in policy.yaml, and a window that ends at ``24:00`` (midnight).

T0 is Monday 2026-03-02 12:00 UTC; the policy's timezone is UTC, so local times are UTC times.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from smtp_sink import SmtpSink
from worker_world import T0, Clock, Project, dispatch_config, enrollments, seed_leads, subjects, write_project

from nurture.storage.migrate import upgrade
from nurture.worker.runner import Worker

UNCAPPED = "timezone: UTC\nfrequency_cap: null\n"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'nurture.db'}"
    upgrade(url)
    return url


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def start_worker(sqlite_url: str, clock: Clock, smtp_sink: SmtpSink) -> Iterator[object]:
    built: list[Worker] = []

    def start(project: Project) -> Worker:
        worker = Worker(project.settings(sqlite_url, smtp_sink.url), clock=clock, config=dispatch_config())
        built.append(worker)
        return worker

    yield start
    for worker in built:
        worker.transport.close()
        worker.engine.dispose()


def test_a_policy_window_of_always_sends_at_any_hour(tmp_path: Path, sqlite_url: str, clock: Clock,
                                                     smtp_sink: SmtpSink, start_worker) -> None:
    project = write_project(tmp_path / "always", policy=UNCAPPED + "send_window: always\n")
    [email] = seed_leads(sqlite_url, tmp_path, 1)
    clock.now = datetime(2026, 3, 8, 3, 0, tzinfo=timezone.utc)  # Sunday 03:00
    worker = start_worker(project)
    assert worker.run_once().sent == 1
    assert subjects(smtp_sink, email) == ["Welcome, Lead0"]


def test_a_window_ending_at_24_00_is_open_until_midnight(tmp_path: Path, sqlite_url: str, clock: Clock,
                                                         smtp_sink: SmtpSink, start_worker) -> None:
    project = write_project(tmp_path / "evening", policy=UNCAPPED + "send_window: {days: mon, hours: '20:00-24:00'}\n")
    [email] = seed_leads(sqlite_url, tmp_path, 1)
    worker = start_worker(project)
    assert worker.run_once().sent == 0  # Monday 12:00: before the window
    [enrollment] = enrollments(worker.engine, email)
    assert enrollment.next_due_at == T0.replace(hour=20)
    clock.now = T0.replace(hour=23, minute=59, second=59)  # the last second of Monday is inside
    assert worker.run_once().sent == 1
    assert subjects(smtp_sink, email) == ["Welcome, Lead0"]


def test_a_window_ending_at_24_00_is_closed_after_midnight(tmp_path: Path, sqlite_url: str, clock: Clock,
                                                           smtp_sink: SmtpSink, start_worker) -> None:
    project = write_project(tmp_path / "evening", policy=UNCAPPED + "send_window: {days: mon, hours: '20:00-24:00'}\n")
    [email] = seed_leads(sqlite_url, tmp_path, 1)
    clock.now = datetime(2026, 3, 3, 0, 0, tzinfo=timezone.utc)  # Tuesday 00:00: Monday's window has closed
    worker = start_worker(project)
    assert worker.run_once().sent == 0
    [enrollment] = enrollments(worker.engine, email)
    assert enrollment.next_due_at == datetime(2026, 3, 9, 20, 0, tzinfo=timezone.utc)  # next Monday 20:00
    assert subjects(smtp_sink, email) == []
