"""A small nurture project for worker tests: campaigns and templates written into a folder, leads seeded through the
real CSV importer, a clock tests move by hand, and readers for what the worker wrote and what the SMTP sink received."""

from __future__ import annotations

import csv
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from smtp_sink import ReceivedMessage, SmtpSink
from sqlalchemy import select
from sqlalchemy.engine import Engine

from nurture.application.import_leads import import_leads_csv
from nurture.clock import SYSTEM_CLOCK
from nurture.settings import Settings
from nurture.storage.database import make_engine, transaction
from nurture.storage.models import Delivery, Enrollment, Lead
from nurture.worker.dispatcher import DispatchConfig

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
"""A Monday, 12:00 UTC: 07:00 in New York (EST, UTC-5), 21:00 in Tokyo (JST, UTC+9)."""

FROM = "Acme Team <news@acme.test>"

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

TEMPLATES = {
    "welcome.html.j2": '<p>Hi {{ lead.first_name }}, welcome to Acme.</p>\n'
                       '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>\n',
    "followup.html.j2": "<p>How is it going, {{ lead.first_name }}?</p>\n",
    "checklist.html.j2": "<p>Ten points for {{ lead.first_name }}.</p>\n",
    "news.html.j2": "<p>News for {{ lead.first_name }}.</p>\n",
    "offer.html.j2": "<p>An offer for {{ lead.first_name }}.</p>\n",
}


@dataclass
class Clock:
    """A clock tests move by hand; the worker reads it through ``__call__``."""

    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@dataclass
class Project:
    """A campaigns folder and a templates folder under one root."""

    root: Path

    @property
    def campaigns_dir(self) -> Path:
        return self.root / "campaigns"

    @property
    def templates_dir(self) -> Path:
        return self.root / "templates"

    def write_campaign(self, campaign_id: str, text: str) -> None:
        """Write (or rewrite) ``campaigns/<campaign_id>.yaml``."""
        (self.campaigns_dir / f"{campaign_id}.yaml").write_text(text, encoding="utf-8")

    def write_policy(self, text: str) -> None:
        (self.campaigns_dir / "policy.yaml").write_text(text, encoding="utf-8")

    def env(self, database_url: str, mail_url: str, **extra: str) -> dict[str, str]:
        """``NURTURE_*`` variables for a ``nurture`` process working on this project."""
        return {
            "NURTURE_DATABASE_URL": database_url,
            "NURTURE_MAIL_URL": mail_url,
            "NURTURE_CAMPAIGNS_DIR": str(self.campaigns_dir),
            "NURTURE_TEMPLATES_DIR": str(self.templates_dir),
            "NURTURE_FROM": FROM,
            "NURTURE_SECRET_KEY": "worker-tests-secret",
            **extra,
        }

    def settings(self, database_url: str, mail_url: str) -> Settings:
        """Settings for an in-process Worker on this project (no ``.env`` file read)."""
        return Settings(
            _env_file=None, database_url=database_url, mail_url=mail_url, campaigns_dir=self.campaigns_dir,
            templates_dir=self.templates_dir, from_address=FROM, secret_key="worker-tests-secret",
        )


def write_project(root: Path, campaigns: dict[str, str] | None = None, *, policy: str | None = None) -> Project:
    """A project with the given campaigns (default: the two-step onboarding) and every test template."""
    project = Project(root)
    project.campaigns_dir.mkdir(parents=True, exist_ok=True)
    project.templates_dir.mkdir(parents=True, exist_ok=True)
    for name, text in TEMPLATES.items():
        (project.templates_dir / name).write_text(text, encoding="utf-8")
    for campaign_id, text in (campaigns if campaigns is not None else {"onboarding": ONBOARDING}).items():
        project.write_campaign(campaign_id, text)
    if policy is not None:
        project.write_policy(policy)
    return project


def dispatch_config(**changes: Any) -> DispatchConfig:
    """The dispatcher's settings for tests: the test sender, and any changes."""
    return DispatchConfig(**{"from_address": FROM, "base_url": "https://t.acme.test", **changes})


def lead_email(index: int, prefix: str = "lead") -> str:
    return f"{prefix}{index:05d}@example.com"


def seed_leads(
    database_url: str, folder: Path, count: int, *, stage: str = "mql", timezone: str | None = None,
    prefix: str = "lead", start: int = 0,
) -> list[str]:
    """Import ``count`` leads through the CSV importer; return their emails."""
    emails = [lead_email(i, prefix) for i in range(start, start + count)]
    path = folder / f"{prefix}-{start}-{count}.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "first_name", "stage", "timezone"])
        for i, email in enumerate(emails, start=start):
            writer.writerow([email, f"Lead{i}", stage, timezone or ""])
    engine = make_engine(database_url)
    try:
        report = import_leads_csv(engine, path, clock=SYSTEM_CLOCK)  # the machine's time, as the CLI's
    finally:
        engine.dispose()
    assert report.inserted == count and not report.rejected, report
    return emails


def by_recipient(messages: Iterable[ReceivedMessage]) -> dict[str, list[ReceivedMessage]]:
    """Received messages grouped by envelope recipient, in arrival order."""
    grouped: dict[str, list[ReceivedMessage]] = defaultdict(list)
    for message in messages:
        for recipient in message.rcpt_tos:
            grouped[recipient].append(message)
    return dict(grouped)


def subjects(sink: SmtpSink, recipient: str) -> list[str]:
    """The subjects of what ``recipient`` received, in arrival order."""
    return [str(m.parsed()["Subject"]) for m in sink.messages if recipient in m.rcpt_tos]


def deliveries(engine: Engine, email: str | None = None) -> list[Any]:
    """Delivery rows (of one lead, or all) with the lead's email as ``email``, oldest first."""
    D, L = Delivery.__table__, Lead.__table__
    query = select(D, L.c.email).join(L, L.c.id == D.c.lead_id).order_by(D.c.id)
    if email is not None:
        query = query.where(L.c.email == email)
    with transaction(engine, read_only=True) as conn:
        return list(conn.execute(query))


def enrollments(engine: Engine, email: str | None = None) -> list[Any]:
    """Enrollment rows (of one lead, or all) with the lead's email as ``email``, oldest first."""
    E, L = Enrollment.__table__, Lead.__table__
    query = select(E, L.c.email).join(L, L.c.id == E.c.lead_id).order_by(E.c.id)
    if email is not None:
        query = query.where(L.c.email == email)
    with transaction(engine, read_only=True) as conn:
        return list(conn.execute(query))


def wait_until(condition: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll ``condition`` until it returns something truthy (returned); AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
