"""Soft bounces end to end: the real worker sends over a real SMTP server, the mail provider reports back through
the real HTTP intake (nurture's bounce webhook, POST /v1/events, SendGrid's Event Webhook), and a lead whose soft
bounces reach policy.yaml's limit within its window gets nothing more. One FixedClock serves the worker and the intake."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from db_fixtures import migrated_url, postgres_available, postgres_template  # noqa: F401
from http_server import HttpServer
from smtp_sink import SmtpSink
from sqlalchemy import select
from worker_world import T0, by_recipient, deliveries, dispatch_config, enrollments, seed_leads, write_project

from nurture.clock import FixedClock
from nurture.definitions.scoring import load_scoring
from nurture.intake import create_app
from nurture.settings import Settings
from nurture.signing import Signer
from nurture.storage.database import transaction
from nurture.storage.models import EngagementEvent, Lead
from nurture.worker.runner import Worker

API_KEY = "soft-bounce-test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}


@dataclass
class World:
    worker: Worker
    url: str
    clock: FixedClock
    sink: SmtpSink

    def post(self, path: str, body: Any, *, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.post(self.url + path, content=json.dumps(body).encode(), headers=AUTH if headers is None else headers)

    def lead(self, email: str) -> Any:
        with transaction(self.worker.engine, read_only=True) as conn:
            return conn.execute(select(Lead.__table__).where(Lead.__table__.c.email == email)).one_or_none()

    def event_types(self, email: str) -> list[str]:
        EV, L = EngagementEvent.__table__, Lead.__table__
        with transaction(self.worker.engine, read_only=True) as conn:
            return list(conn.execute(select(EV.c.type).join(L, L.c.id == EV.c.lead_id)
                                     .where(L.c.email == email).order_by(EV.c.id)).scalars())

    def received(self, email: str) -> int:
        return len(by_recipient(self.sink.messages).get(email, []))


@pytest.fixture
def world(tmp_path: Path, migrated_url: str, smtp_sink: SmtpSink) -> Iterator[World]:
    project = write_project(tmp_path / "project")  # onboarding: welcome now, a follow-up two days later
    clock = FixedClock(T0)
    worker = Worker(project.settings(migrated_url, smtp_sink.url), clock=clock, config=dispatch_config())
    rules, problems = load_scoring(project.campaigns_dir)
    assert not problems
    app = create_app(Settings(_env_file=None, api_key=API_KEY, database_url=migrated_url), engine=worker.engine,
                     catalog=worker.catalog, rules=rules, signer=Signer("s3cret"), clock=clock)
    try:
        with HttpServer(app) as server:
            yield World(worker, server.url, clock, smtp_sink)
    finally:
        app.state.intake.close()
        worker.transport.close()
        worker.engine.dispose()


def test_soft_bounces_reported_to_the_bounce_webhook_stop_the_mail_at_the_third_within_a_week(
        world, tmp_path, migrated_url):
    bouncing, twice, fine = seed_leads(migrated_url, tmp_path, 3)
    assert world.worker.run_once().sent == 3  # the welcome emails
    [welcome] = deliveries(world.worker.engine, bouncing)

    def report(*notices: dict[str, Any]) -> None:
        response = world.post("/v1/webhooks/bounces", list(notices))
        assert response.status_code == 200, response.text
        assert [r["status"] for r in response.json()["results"]] == ["recorded"] * len(notices)

    def full_mailbox(n: int) -> dict[str, Any]:  # the relay finds the lead by the Message-ID nurture sent
        return {"type": "soft_bounce", "message_id": welcome.message_id, "reason": "452 4.2.2 mailbox full",
                "id": f"relay-{n}"}

    world.clock.advance(hours=1)
    report(full_mailbox(1), {"type": "soft_bounce", "email": twice})
    world.clock.advance(hours=12)
    report(full_mailbox(2))
    assert world.lead(bouncing).bounced_at is None  # two of three
    world.clock.advance(hours=12)
    report(full_mailbox(3))
    assert world.lead(bouncing).bounced_at == world.clock.now
    assert [(e.status, e.end_reason) for e in enrollments(world.worker.engine, bouncing)] == [("exited", "bounced")]
    world.clock.advance(hours=1)
    assert world.post("/v1/events", {"email": twice, "type": "soft_bounce"}).status_code == 202
    assert world.lead(twice).bounced_at is None  # two soft bounces: still mailed

    world.clock.advance(days=2)  # the follow-up falls due
    assert world.worker.run_once().sent == 2
    assert (world.received(bouncing), world.received(twice), world.received(fine)) == (1, 2, 2)


def test_a_soft_bounce_notice_is_accepted_and_an_unknown_type_still_refused(world):
    accepted = world.post("/v1/webhooks/bounces", {"type": "soft_bounce", "email": "a@example.com"})
    assert accepted.status_code == 200, accepted.text
    assert world.event_types("a@example.com") == ["soft_bounce"]
    assert world.lead("a@example.com").bounced_at is None

    refused = world.post("/v1/webhooks/bounces", {"type": "soft", "email": "b@example.com"})
    assert refused.status_code == 422 and "type" in refused.json()["error"]
    assert world.lead("b@example.com") is None


def test_sendgrid_blocks_are_soft_bounces_and_drops_go_by_their_reason(world):
    stamp = int(T0.timestamp())

    def item(n: int, email: str, event: str, **extra: Any) -> dict[str, Any]:
        return {"email": email, "timestamp": stamp + n, "event": event, "sg_event_id": f"sg-{n}", **extra}

    events = [
        item(1, "blocked@example.com", "bounce", type="blocked", reason="421 try again later"),
        item(2, "blocked@example.com", "bounce", type="blocked"),
        item(3, "deferred@example.com", "deferred", response="451 greylisted", attempt="1"),
        item(4, "gone@example.com", "dropped", reason="Bounced Address"),
        item(5, "invalid@example.com", "dropped", reason="Invalid"),
        item(6, "content@example.com", "dropped", reason="Spam Content (if spam checker app enabled)"),
        item(7, "header@example.com", "dropped", reason="Invalid SMTPAPI header"),
        item(8, "complained@example.com", "dropped", reason="Spam Reporting Address"),
        item(9, "expired@example.com", "dropped", reason="Expired"),
    ]
    response = world.post(f"/v1/webhooks/sendgrid?token={API_KEY}", events, headers={"Content-Type": "application/json"})

    assert response.status_code == 200, response.text
    assert response.json() == {"recorded": 6, "duplicate": 0, "ignored": 3}
    assert world.event_types("blocked@example.com") == ["soft_bounce", "soft_bounce"]
    assert world.lead("blocked@example.com").bounced_at is None  # two of three
    assert world.lead("deferred@example.com") is None  # SendGrid is still trying
    assert world.event_types("gone@example.com") == ["bounce"] and world.lead("gone@example.com").bounced_at
    assert world.event_types("invalid@example.com") == ["bounce"]
    assert world.lead("content@example.com") is None and world.lead("header@example.com") is None  # the message's fault
    assert world.event_types("complained@example.com") == ["spam_complaint"]
    assert world.event_types("expired@example.com") == ["soft_bounce"]
    assert world.lead("expired@example.com").bounced_at is None

    world.clock.advance(days=1)
    third = [item(10, "blocked@example.com", "bounce", type="blocked")]
    assert world.post(f"/v1/webhooks/sendgrid?token={API_KEY}", third, headers={}).json()["recorded"] == 1
    assert world.lead("blocked@example.com").bounced_at is not None


@pytest.mark.parametrize("at", ["0001-01-01T00:00:00+00:00", "0001-01-03T00:00:00+00:00"])
def test_a_soft_bounce_dated_near_year_one_is_recorded_not_a_server_error(world, at):
    """The rule's window around a bounce near year 1 reaches past what a datetime holds: it stops there."""
    notice = world.post("/v1/webhooks/bounces", {"type": "soft_bounce", "email": "a@example.com", "occurred_at": at})
    assert notice.status_code == 200, notice.text
    event = world.post("/v1/events", {"email": "z@example.com", "type": "soft_bounce", "occurred_at": at})
    assert event.status_code == 202, event.text
    assert world.event_types("a@example.com") == ["soft_bounce"] and world.event_types("z@example.com") == ["soft_bounce"]
    assert world.lead("a@example.com").bounced_at is None and world.lead("z@example.com").bounced_at is None
