"""The sales handoff end to end over real HTTP, on a SQLite file and on PostgreSQL.

A running worker (:class:`nurture.worker.runner.Worker`, its APScheduler jobs in threads) and its HTTP intake
(uvicorn, ``tests/support/http_server.py``) work on one database; emails go to the real aiosmtpd sink, sales webhooks to
the real local receiver (``tests/support/webhook_receiver.py``). A nurtured MQL (it got a nurture email, opened it
through the tracking pixel and clicked its link) posts ``demo_request``: within a second the signed ``lead.promoted``
webhook reaches the receiver with the full brief, the owner gets an email, and the lead's nurture emails stop. Then
the receiver fails (500, then down) while the worker is restarted, and the notification arrives once when it recovers.

The clock is the wall clock plus an offset the test moves forward: the latency is measured on real time; retries
and the nurture's later steps become due by moving the offset, never by sleeping. Waits poll with deadlines.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from db_fixtures import migrated_url, postgres_available, postgres_template  # noqa: F401
from http_server import HttpServer, free_port
from smtp_sink import ReceivedMessage, SmtpSink
from sqlalchemy import select
from webhook_receiver import ReceivedRequest, WebhookReceiver
from worker_world import FROM, Project, deliveries, enrollments, wait_until, write_project

from nurture.delivery.webhooks import event_id_for, verify
from nurture.rendering.sales_links import decode_sales_link
from nurture.settings import Settings
from nurture.storage.database import transaction
from nurture.storage.models import Outbox, StageChange
from nurture.worker.runner import Worker, http_app

SECRET = "whsec_e2e_7c1d"
API_KEY = "e2e-api-key"
O, SC = Outbox.__table__, StageChange.__table__  # noqa: E741 - the table aliases of storage/tables.py

NURTURE = """\
id: nurture
name: MQL nurture
entry: {stage: mql}
steps:
  - id: welcome
    email: {template: welcome.html.j2, subject: "Welcome, {{ lead.first_name }}"}
  - id: followup
    wait: 2d
    email: {template: followup.html.j2, subject: "Two days in"}
  - id: offer
    wait: 2d
    email: {template: offer.html.j2, subject: "An offer"}
"""
WELCOME = ('<p>Hi {{ lead.first_name }}, here is <a href="{{ track(\'https://acme.test/guide\') }}">your guide</a>.'
           '</p>\n<img src="{{ open_pixel_url }}" width="1" height="1" alt="">\n')
SCORING = """\
behaviour:
  events:
    email_open: 1
    email_click: 3
fit:
  - {label: "EMEA", when: {country: [DE, FR]}, points: 5}
thresholds: {mql: 40}
"""
SALES = """\
promotion:
  intent: [demo_request]
routing:
  owners:
    - {id: ana, name: Ana Ruiz, email: ana@acme.test, slack: U01ANA, timezone: Europe/Madrid}
    - {id: jonas, name: Jonas Weber, email: jonas@acme.test, timezone: Europe/Berlin}
  teams: {emea: [ana, jonas]}
  rules:
    - {name: emea, when: {country: [DE, FR]}, team: emea}
  fallback: ana
handoff: {sla: 4h}  # no digest here: its hour depends on the wall clock (test_promotion.py covers it)
"""


@dataclass
class OffsetClock:
    """The wall clock, plus an offset the test moves forward."""

    offset: timedelta = timedelta(0)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self) -> datetime:
        with self._lock:
            return datetime.now(timezone.utc) + self.offset

    def advance(self, **delta: float) -> None:
        with self._lock:
            self.offset += timedelta(**delta)


class Service:
    """A worker and its HTTP intake on one port, restartable (the port and the database stay)."""

    def __init__(self, settings: Settings, clock: OffsetClock, port: int) -> None:
        self.settings, self.clock, self.port = settings, clock, port
        self.worker: Worker | None = None
        self.server: HttpServer | None = None

    def start(self) -> Service:
        worker = Worker(self.settings, clock=self.clock)
        worker.options.handoff_interval = 3600  # digests and reminders run when the test says (worker.remind)
        worker.start()
        self.worker = worker
        self.server = HttpServer(http_app(self.settings, worker), port=self.port).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.worker is not None:
            self.worker.stop()
            self.worker.engine.dispose()
        self.server = self.worker = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        response = httpx.post(self.url + path, json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10)
        assert response.status_code < 300, response.text
        return response


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def project(tmp_path: Path) -> Project:
    project = write_project(tmp_path / "project", {"nurture": NURTURE})
    (project.templates_dir / "welcome.html.j2").write_text(WELCOME, encoding="utf-8")
    (project.campaigns_dir / "scoring.yaml").write_text(SCORING, encoding="utf-8")
    (project.campaigns_dir / "sales.yaml").write_text(SALES, encoding="utf-8")
    return project


@pytest.fixture
def clock() -> OffsetClock:
    return OffsetClock()


@pytest.fixture
def service(project: Project, migrated_url: str, smtp_sink: SmtpSink, receiver: WebhookReceiver,
            clock: OffsetClock) -> Iterator[Service]:
    port = free_port()
    settings = Settings(
        _env_file=None, database_url=migrated_url, mail_url=smtp_sink.url, campaigns_dir=project.campaigns_dir,
        templates_dir=project.templates_dir, from_address=FROM, secret_key="e2e-secret", api_key=API_KEY,
        base_url=f"http://127.0.0.1:{port}", sales_webhook_url=receiver.url, webhook_secret=SECRET,
        poll_interval=0.05,
    )
    running = Service(settings, clock, port).start()
    yield running
    running.stop()


def to(sink: SmtpSink, recipient: str) -> list[ReceivedMessage]:
    return [message for message in sink.messages if recipient in message.rcpt_tos]


def text_of(message: ReceivedMessage) -> str:
    part = message.parsed().get_body(("plain",))
    assert part is not None
    return part.get_content()


def html_of(message: ReceivedMessage) -> str:
    part = message.parsed().get_body(("html",))
    assert part is not None
    return part.get_content()


def for_event(receiver: WebhookReceiver, event_id: str) -> list[ReceivedRequest]:
    return [r for r in receiver.requests if r.headers.get("nurture-event-id") == event_id]


def nurtured_mql(service: Service, sink: SmtpSink, email: str, first_name: str, **fields: Any) -> ReceivedMessage:
    """A lead posted as an MQL, enrolled, and sent the welcome email, which it opens and clicks."""
    service.post("/v1/leads", {"email": email, "first_name": first_name, "stage": "mql", **fields})
    [welcome] = wait_until(lambda: to(sink, email), timeout=10, what=f"the welcome email to {email}")
    assert welcome.parsed()["Subject"] == f"Welcome, {first_name}"
    html = html_of(welcome)
    [pixel] = re.findall(r'src="([^"]+/t/o/[^"]+)"', html)
    [click] = re.findall(r'href="([^"]+/t/c/[^"]+)"', html)
    assert httpx.get(pixel, timeout=10).status_code == 200
    assert httpx.get(click, timeout=10, follow_redirects=False).headers["location"] == "https://acme.test/guide"
    return welcome


def promotion_id(service: Service, email: str) -> int:
    assert service.worker is not None
    with transaction(service.worker.engine, read_only=True) as conn:
        from nurture.storage.models import Lead

        L = Lead.__table__
        return conn.execute(select(SC.c.id).join(L, L.c.id == SC.c.lead_id).where(
            L.c.email == email, SC.c.to_stage == "sql")).scalar_one()


def outbox_row(service: Service, dedup_key: str) -> Any:
    assert service.worker is not None
    with transaction(service.worker.engine, read_only=True) as conn:
        return conn.execute(select(O).where(O.c.dedup_key == dedup_key)).one_or_none()


def test_a_demo_request_reaches_sales_within_a_second_and_stops_the_nurture(
        service: Service, smtp_sink: SmtpSink, receiver: WebhookReceiver, clock: OffsetClock) -> None:
    nurtured_mql(service, smtp_sink, "ada@example.com", "Ada", last_name="Lovelace", company="Analytical Engines",
                 title="VP Engineering", country="DE", company_size=250, budget_confirmed=True)
    nurtured_mql(service, smtp_sink, "bob@example.com", "Bob")  # stays an MQL: his nurture goes on
    assert service.worker is not None
    engine = service.worker.engine

    started = time.monotonic()
    response = service.post("/v1/events", {"email": "ada@example.com", "type": "demo_request", "id": "demo-ada-1",
                                           "properties": {"form": "demo", "message": "Can we talk this week?"}})
    [request] = receiver.wait_for(1, timeout=5)
    latency = time.monotonic() - started
    assert latency < 1.0, f"the webhook took {latency:.3f}s"
    assert response.json()["results"][0]["stage"] == "sql"

    # Signed as documented, with the event id of this promotion.
    assert verify(SECRET, request.headers["nurture-signature"], request.body, now=int(time.time()))
    assert not verify("another-secret", request.headers["nurture-signature"], request.body, now=int(time.time()))
    promoted = promotion_id(service, "ada@example.com")
    event_id = event_id_for(f"lead.promoted:{promoted}")
    body = json.loads(request.body)
    assert request.headers["nurture-event-id"] == body["id"] == event_id
    assert request.headers["nurture-event-type"] == body["type"] == "lead.promoted"

    # The full brief.
    lead = body["lead"]
    assert (lead["email"], lead["first_name"], lead["last_name"], lead["company"], lead["stage"], lead["owner"]) == (
        "ada@example.com", "Ada", "Lovelace", "Analytical Engines", "sql", "ana@acme.test")
    assert body["owner"] == {"email": "ana@acme.test", "slack_id": "U01ANA", "id": "ana", "name": "Ana Ruiz"}
    brief = body["brief"]
    assert brief["who"]["title"] == "VP Engineering" and brief["who"]["company_size"] == 250
    assert brief["who"]["fields"] == {"budget_confirmed": True}
    assert brief["why_now"]["rule"] == "intent:demo_request"
    assert brief["why_now"]["event"]["properties"] == {"form": "demo", "message": "Can we talk this week?"}
    assert brief["why"][0] == "Requested a demo (form: demo)"
    assert brief["score"] == 9 and lead["score"] == 9  # open 1 + click 3 + EMEA fit 5
    assert {(i["source"], i["label"]) for i in brief["score_breakdown"]["items"]} == {
        ("behaviour", "email_open"), ("behaviour", "email_click"), ("fit", "EMEA")}
    assert [e["type"] for e in brief["timeline"]] == ["demo_request", "email_click", "email_open"]
    assert brief["timeline"][1]["label"] == "Clicked https://acme.test/guide in \u201cWelcome, Ada\u201d"
    [nurture] = brief["nurture"]
    assert (nurture["campaign"], nurture["name"], nurture["status"], nurture["end_reason"]) == (
        "nurture", "MQL nurture", "exited", "stage:sql")
    assert [(s["step"], s["subject"], s["opened"], s["clicked"]) for s in nurture["steps"]] == [
        ("welcome", "Welcome, Ada", True, True)]
    accept = decode_sales_link(service.worker.signer, body["links"]["accept"].rsplit("/", 1)[1])
    assert body["links"]["accept"].startswith(service.url + "/s/")
    assert (accept.promotion_id, accept.verdict) == (promoted, "accept")

    # The owner's email, through the same mail transport.
    [owner_email] = wait_until(lambda: to(smtp_sink, "ana@acme.test"), timeout=5, what="the owner's email")
    assert owner_email.parsed()["Subject"].startswith(
        "New SQL: Ada Lovelace, VP Engineering at Analytical Engines \u2014 Requested a demo")
    assert body["links"]["accept"] in text_of(owner_email) and body["links"]["reject"] in html_of(owner_email)
    assert "Clicked https://acme.test/guide" in text_of(owner_email)

    # The nurture stopped: two days on, Bob gets his follow-up and Ada gets nothing.
    assert [(e.status, e.end_reason) for e in enrollments(engine, "ada@example.com")] == [("exited", "stage:sql")]
    clock.advance(days=2, minutes=1)
    service.worker.dispatch()
    wait_until(lambda: len(to(smtp_sink, "bob@example.com")) == 2, timeout=10, what="Bob's follow-up")
    clock.advance(days=3)
    service.worker.dispatch()
    wait_until(lambda: len(to(smtp_sink, "bob@example.com")) == 3, timeout=10, what="Bob's offer")
    assert [m.parsed()["Subject"] for m in to(smtp_sink, "ada@example.com")] == ["Welcome, Ada"]
    assert [d.step_key for d in deliveries(engine, "ada@example.com")] == ["welcome"]

    # A second demo request notifies nobody again; the reminder past the SLA comes once, with both requests.
    service.post("/v1/events", {"email": "ada@example.com", "type": "demo_request", "id": "demo-ada-2"})
    service.worker.remind()
    service.worker.remind()
    overdue = event_id_for(f"lead.sla_overdue:{promoted}")
    [reminder] = wait_until(lambda: for_event(receiver, overdue), timeout=5, what="the SLA reminder webhook")
    reminder_body = json.loads(reminder.body)
    assert reminder_body["type"] == "lead.sla_overdue"
    assert [i["type"] for i in reminder_body["brief"]["intent_since"]] == ["demo_request"]
    assert verify(SECRET, reminder.headers["nurture-signature"], reminder.body, now=int(clock().timestamp()))
    wait_until(lambda: len(to(smtp_sink, "ana@acme.test")) == 2, timeout=5, what="the owner's reminder email")
    service.worker.deliver_outbox()
    assert len(for_event(receiver, event_id)) == 1 and len(for_event(receiver, overdue)) == 1
    assert len(to(smtp_sink, "ana@acme.test")) == 2
    assert [r.headers["nurture-event-type"] for r in receiver.requests] == ["lead.promoted", "lead.sla_overdue"]


def test_a_notification_survives_a_failing_receiver_and_a_restart_and_arrives_once(
        service: Service, smtp_sink: SmtpSink, receiver: WebhookReceiver, clock: OffsetClock) -> None:
    nurtured_mql(service, smtp_sink, "cy@example.com", "Cy", company="Cyberdyne", country="FR")
    receiver.fail_next(2, status=500)

    service.post("/v1/events", {"email": "cy@example.com", "type": "demo_request"})
    promoted = promotion_id(service, "cy@example.com")
    event_id = event_id_for(f"lead.promoted:{promoted}")
    key = f"lead.promoted:{promoted}"
    [first] = receiver.wait_for(1, timeout=5)
    assert (first.answered, first.headers["nurture-event-id"]) == (500, event_id)
    wait_until(lambda: outbox_row(service, key).attempts == 1, timeout=5, what="the first failure recorded")
    [owner_email] = wait_until(lambda: to(smtp_sink, "ana@acme.test"), timeout=5, what="the owner's email")

    # Down: the retry (due 10 s later) finds nobody listening.
    receiver.down()
    clock.advance(seconds=11)
    row = wait_until(lambda: (r := outbox_row(service, key)).attempts == 2 and r, timeout=5, what="the second failure")
    assert row.status == "pending" and "Connect" in row.last_error

    # The worker restarts while the notification waits; the receiver comes back, still failing once.
    service.stop()
    receiver.up()
    service.start()
    clock.advance(seconds=21)
    wait_until(lambda: outbox_row(service, key).attempts == 3, timeout=5, what="the third attempt (500)")
    clock.advance(seconds=41)
    row = wait_until(lambda: (r := outbox_row(service, key)).status == "sent" and r, timeout=5, what="the delivery")
    assert row.attempts == 4

    received = for_event(receiver, event_id)
    assert [r.answered for r in received] == [500, 500, 200]
    delivered = received[-1]
    assert verify(SECRET, delivered.headers["nurture-signature"], delivered.body, now=int(clock().timestamp()))
    body = json.loads(delivered.body)
    assert (body["id"], body["type"], body["lead"]["email"], body["owner"]["email"]) == (
        event_id, "lead.promoted", "cy@example.com", "ana@acme.test")
    assert [s["step"] for s in body["brief"]["nurture"][0]["steps"]] == ["welcome"]
    assert json.loads(received[0].body) == body  # every attempt sent the same notification

    # Once: later runs send nothing more, and the owner got one email.
    clock.advance(hours=2)
    assert service.worker is not None
    service.worker.deliver_outbox()
    assert len(for_event(receiver, event_id)) == 3 and len(receiver.requests) == 3
    assert to(smtp_sink, "ana@acme.test") == [owner_email]
