"""What docs/webhooks.md and the README promise when NURTURE_WEBHOOK_SECRET is not set, through the real worker and a
real HTTP receiver: nothing is ever sent unsigned; notifications wait in the outbox with the reason, retried with the
usual backoff; sales notifications wait until a worker started with the secret sends them (signed), campaign webhook
steps give up after their 20 attempts like any failing step. The clock is a FixedClock; nothing sleeps."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from db_fixtures import migrated_url, postgres_available, postgres_template  # noqa: F401
from smtp_sink import SmtpSink
from sqlalchemy import select
from webhook_receiver import WebhookReceiver
from worker_world import T0, dispatch_config, write_project

from nurture.clock import FixedClock
from nurture.delivery.webhooks import UNSIGNED_REFUSED, verify
from nurture.storage import outbox as outbox_store
from nurture.storage.database import transaction
from nurture.storage.tables import O
from nurture.worker.runner import Worker

SECRET = "whsec_set_later"
UNSIGNED = "NURTURE_WEBHOOK_SECRET is not set: nurture does not send unsigned webhooks"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def start_worker(tmp_path: Path, migrated_url: str, smtp_sink: SmtpSink, receiver: WebhookReceiver) -> Iterator[Any]:
    project = write_project(tmp_path / "project")
    started: list[Worker] = []

    def start(clock: FixedClock, secret: str) -> Worker:
        settings = project.settings(migrated_url, smtp_sink.url).model_copy(
            update={"webhook_secret": secret, "sales_webhook_url": receiver.url})
        worker = Worker(settings, clock=clock, config=dispatch_config())
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.webhooks.close()
        worker.transport.close()
        worker.engine.dispose()


def outbox(worker: Worker) -> dict[str, Any]:
    with transaction(worker.engine, read_only=True) as conn:
        return {row.kind: row for row in conn.execute(select(O).order_by(O.c.id))}


def test_without_the_secret_webhooks_wait_unsent_and_go_out_signed_once_a_worker_has_it(
        start_worker, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture):
    clock = FixedClock(T0)
    worker = start_worker(clock, secret="")
    with transaction(worker.engine) as conn:
        outbox_store.enqueue(conn, kind="sales_webhook", dedup_key="promoted:1",
                             payload={"type": "lead.promoted", "lead": {"email": "ada@example.org"}}, now=T0)
        outbox_store.enqueue(conn, kind="step_webhook", dedup_key="step:1:crm",
                             payload={"url": receiver.url, "method": "POST", "body": {"type": "step.webhook"}}, now=T0)

    with caplog.at_level(logging.WARNING, logger="nurture"):
        worker.deliver_outbox()
        rows = outbox(worker)
        for row in rows.values():  # waiting, with the reason, for the first retry 10 s later
            assert (row.status, row.attempts, row.last_error, row.next_attempt_at) == (
                "pending", 1, UNSIGNED, T0 + timedelta(seconds=10))
        for _ in range(19):  # the backoff doubles up to an hour: attempt 20 is about 11 hours in
            clock.now = min(row.next_attempt_at for row in outbox(worker).values() if row.status == "pending")
            worker.deliver_outbox()
    assert caplog.text.count("webhooks wait in the outbox, never sent unsigned") == 1  # warned once per worker
    assert receiver.requests == []  # never sent unsigned
    assert clock.now - T0 < timedelta(hours=12)
    rows = outbox(worker)
    assert (rows["step_webhook"].status, rows["step_webhook"].last_error) == (
        "failed", f"gave up after 20 attempts: {UNSIGNED}")
    sales = rows["sales_webhook"]
    assert (sales.status, sales.attempts, sales.next_attempt_at) == ("pending", 20, clock.now + timedelta(hours=1))

    clock.now = sales.next_attempt_at  # the secret is set and the worker restarted: read at start
    start_worker(clock, secret=SECRET).deliver_outbox()
    [request] = receiver.wait_for(1)
    assert verify(SECRET, request.headers["nurture-signature"], request.body, now=int(clock.now.timestamp()))
    assert outbox(worker)["sales_webhook"].status == "sent"


def test_the_docs_describe_what_the_worker_does_without_the_secret():
    docs = " ".join(DOCS.read_text(encoding="utf-8").split())
    assert UNSIGNED_REFUSED == UNSIGNED and f"`{UNSIGNED}`" in docs  # the last_error a reader will find
    assert "Nothing is sent unsigned." in docs and "go out unsigned" not in docs
    assert "campaign webhook steps give up after their 20 attempts (about 11 hours)" in docs
    readme = " ".join((DOCS.parents[1] / "README.md").read_text(encoding="utf-8").split())
    assert ("none is sent unsigned: sales notifications wait in the outbox until it is set and the worker restarted; "
            "campaign webhook steps give up after their 20 attempts, about 11 hours") in readme
