"""The outbox processor: deliver the notifications that transactions queued, with retries and exponential backoff.

One :meth:`OutboxProcessor.run` claims a batch of due rows (leased), sends them outside any transaction — webhooks
in parallel, owner emails as one batch through the mail transport — and records every outcome in one transaction.

Kinds of rows:

- ``sales_webhook``: a sales notification (``lead.promoted``, ``lead.sla_overdue``, ``owner.digest``, ...) POSTed to
  ``payload["url"]`` or ``NURTURE_SALES_WEBHOOK_URL``, as Slack Block Kit for a Slack webhook.
- ``owner_email``: an email to a lead's owner (``to``, ``subject``, ``text``, ``html``) through the mail transport.
- ``step_webhook``: a campaign's webhook step: ``payload["body"]`` sent to ``payload["url"]`` with
  ``payload["method"]``.

Failures retry after 10 s, 20 s, 40 s, ... capped at 1 h. Sales notifications (and owner emails, and kinds this
version does not know) are never dropped: they keep retrying hourly, ``attempts`` and ``last_error`` showing why —
a permanent refusal (a 404 from a mistyped URL) goes straight to the hourly cap with a warning, since configuration
gets fixed. Only campaign webhook steps give up: at once on a permanent error, or after ``max_attempts``.

A worker that dies between sending and recording leaves its rows leased; after the lease they are claimed and sent
again with the same event id (receivers deduplicate on ``Nurture-Event-Id``). A batch stops starting new requests
after ``send_budget`` (half the lease by default) and releases what it did not attempt, so a slow receiver cannot
make a batch outlive its lease.
"""

from __future__ import annotations

import html
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import Engine

from nurture.clock import Clock
from nurture.delivery.message import OutgoingEmail, build_message_bytes, domain_of, message_id_for
from nurture.delivery.transports import Transport
from nurture.delivery.webhooks import DeliveryResult, WebhookSender, event_id_for, is_slack_url, slack_message
from nurture.storage import outbox as outbox_store
from nurture.storage.outbox import OutboxOutcome

log = logging.getLogger(__name__)


SALES_WEBHOOK = "sales_webhook"
OWNER_EMAIL = "owner_email"
STEP_WEBHOOK = "step_webhook"
# Kinds that may give up. Everything else is kept until delivered: losing a sales notification loses a deal.
DROPPABLE_KINDS = frozenset({STEP_WEBHOOK})
_CONTROL_KEYS = ("url", "format")  # how to deliver a sales notification, not part of what is sent


@dataclass
class OutboxConfig:
    """Knobs of the outbox processor."""

    batch_size: int = 50
    lease: timedelta = timedelta(minutes=5)
    max_attempts: int = 20  # for kinds that may give up (campaign webhook steps)
    retry_base: timedelta = timedelta(seconds=10)  # 10 s, 20 s, 40 s, ... capped at retry_max
    retry_max: timedelta = timedelta(hours=1)
    concurrency: int = 8  # webhook requests in flight at once
    send_budget: timedelta | None = None  # stop starting requests after this; default: half the lease


@dataclass
class OutboxReport:
    """What one run (or a drain) did."""

    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    released: int = 0
    errors: list[str] = field(default_factory=list)  # "<kind> #<id>: <error>", no personal data

    def add(self, other: OutboxReport) -> None:
        """Sum another report into this one."""
        for name in ("claimed", "sent", "retried", "failed", "released"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.extend(other.errors)


def backoff(attempts: int, config: OutboxConfig) -> timedelta:
    """The wait after the ``attempts``-th failed attempt: ``retry_base`` doubled each time, capped at ``retry_max``."""
    if attempts > 40:  # 2**40 × 10 s is past any cap; avoids overflowing timedelta
        return config.retry_max
    return min(config.retry_base * (2 ** max(attempts - 1, 0)), config.retry_max)


class OutboxProcessor:
    """Delivers claimed outbox rows. Run by one APScheduler job (``max_instances=1``); several processes may share
    the table (claims skip each other's rows)."""

    def __init__(
        self,
        engine: Engine,
        *,
        sender: WebhookSender,
        mail: Transport | None,
        from_address: str,
        sales_webhook_url: str,
        config: OutboxConfig | None = None,
    ) -> None:
        self.engine = engine
        self.sender = sender
        self.mail = mail
        self.from_address = from_address
        self.sales_webhook_url = sales_webhook_url
        self.config = config or OutboxConfig()
        self.domain = domain_of(from_address)
        self.stopping = False

    def run(self, now: datetime) -> OutboxReport:
        """Claim one batch due at ``now``, deliver it, record the outcomes."""
        report = OutboxReport()
        rows = outbox_store.claim(self.engine, now, limit=self.config.batch_size, lease=self.config.lease)
        if not rows:
            return report
        report.claimed = len(rows)
        budget = self.config.send_budget if self.config.send_budget is not None else self.config.lease / 2
        deadline = time.monotonic() + budget.total_seconds()
        emails = [row for row in rows if row.kind == OWNER_EMAIL]
        requests = [row for row in rows if row.kind != OWNER_EMAIL]
        results: dict[int, DeliveryResult | None] = {}
        with ThreadPoolExecutor(max(1, self.config.concurrency), thread_name_prefix="nurture-outbox") as pool:
            futures = {row.id: pool.submit(self._deliver_request, row, now, deadline) for row in requests}
            results.update(self._send_emails(emails, now, deadline))
            for row_id, future in futures.items():
                results[row_id] = future.result()
        outcomes = [self._outcome(now, row, results[row.id], report) for row in rows]
        outbox_store.mark(self.engine, now, outcomes)
        if report.sent or report.retried or report.failed:
            log.info("outbox: %d claimed, %d sent, %d retry, %d failed, %d released",
                     report.claimed, report.sent, report.retried, report.failed, report.released)
        return report

    def drain(self, clock: Clock, *, max_batches: int | None = None) -> OutboxReport:
        """Run until nothing is due (or ``stopping`` is set); the clock is read once per batch."""
        total = OutboxReport()
        batches = 0
        while not self.stopping:
            report = self.run(clock())
            total.add(report)
            batches += 1
            if report.claimed == 0 or report.released or (max_batches is not None and batches >= max_batches):
                break
        return total

    # -- webhooks ------------------------------------------------------------------------------------------------

    def _deliver_request(self, row: Any, now: datetime, deadline: float) -> DeliveryResult | None:
        if time.monotonic() > deadline:
            return None  # released untouched: the lease may not outlast another request
        try:
            if row.kind == SALES_WEBHOOK:
                return self._deliver_sales(row, now)
            if row.kind == STEP_WEBHOOK:
                return self._deliver_step(row, now)
            return DeliveryResult(ok=False, error=f"unknown outbox kind {row.kind!r} (a newer nurture may know it)")
        except Exception as exc:  # a bug must not cost the batch its records: this row retries, the others are marked
            log.exception("outbox %s #%d: unexpected error", row.kind, row.id)
            return DeliveryResult(ok=False, error=f"internal error: {type(exc).__name__}")

    def _deliver_sales(self, row: Any, now: datetime) -> DeliveryResult:
        payload = dict(row.payload or {})
        url = str(payload.get("url") or self.sales_webhook_url)
        if not url:
            return DeliveryResult(ok=False, error="no sales webhook URL: set NURTURE_SALES_WEBHOOK_URL")
        event_id = str(payload.get("id") or event_id_for(row.dedup_key))
        event_type = str(payload.get("type") or "sales.notification")
        body = {key: value for key, value in payload.items() if key not in _CONTROL_KEYS}
        body = {"id": event_id, "type": event_type, "created_at": row.created_at.isoformat(), **body}
        wants_slack = payload.get("format") == "slack" or ("format" not in payload and is_slack_url(url))
        if wants_slack:
            body = slack_message(body)
        return self.sender.deliver(url, event_id, event_type, body, now=now)

    def _deliver_step(self, row: Any, now: datetime) -> DeliveryResult:
        payload = row.payload or {}
        url = payload.get("url")
        if not url:
            return DeliveryResult(ok=False, error="step webhook without a URL", permanent=True)
        body = payload.get("body") or {}
        event_type = str(body.get("type") or "step.webhook") if isinstance(body, dict) else "step.webhook"
        return self.sender.deliver(str(url), event_id_for(row.dedup_key), event_type, body, now=now,
                                   method=str(payload.get("method") or "POST").upper())

    # -- owner emails --------------------------------------------------------------------------------------------

    def _send_emails(self, rows: list[Any], now: datetime, deadline: float) -> dict[int, DeliveryResult | None]:
        results: dict[int, DeliveryResult | None] = {}
        if not rows:
            return results
        if time.monotonic() > deadline:
            return {row.id: None for row in rows}
        if self.mail is None:
            return {row.id: DeliveryResult(ok=False, error="no mail transport configured") for row in rows}
        batch: list[tuple[OutgoingEmail, bytes]] = []
        sending: list[Any] = []
        for row in rows:
            payload = row.payload or {}
            try:
                text = str(payload["text"])
                email = OutgoingEmail(
                    message_id=message_id_for(f"outbox:{row.dedup_key}", self.domain),
                    from_addr=str(payload.get("from") or self.from_address), to_addr=str(payload["to"]),
                    subject=str(payload["subject"]),
                    html=str(payload.get("html") or f"<pre>{html.escape(text)}</pre>"), text=text,
                )
                data = build_message_bytes(email, date=now)
            except (KeyError, ValueError) as exc:
                # kept (owner emails are never dropped) with the reason, so the enqueuing code can be fixed
                error = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
                results[row.id] = DeliveryResult(ok=False, error=f"malformed owner email: {error}", permanent=True)
                continue
            batch.append((email, data))
            sending.append(row)
        if batch:
            try:
                sent = self.mail.send_many(batch)
            except Exception as exc:  # transports report failures per message; this is a bug, kept retryable
                log.exception("outbox: the mail transport raised")
                failure = DeliveryResult(ok=False, error=f"mail transport error: {type(exc).__name__}")
                sent_results = [failure] * len(batch)
            else:
                sent_results = [DeliveryResult(ok=r.ok, error=r.error, permanent=r.permanent) for r in sent]
            for row, result in zip(sending, sent_results):
                results[row.id] = result
        return results

    # -- outcomes ------------------------------------------------------------------------------------------------

    def _outcome(self, now: datetime, row: Any, result: DeliveryResult | None, report: OutboxReport) -> OutboxOutcome:
        if result is None:
            report.released += 1
            return OutboxOutcome(row.id, "released", row.attempts)
        attempts = row.attempts + 1
        if result.ok:
            report.sent += 1
            return OutboxOutcome(row.id, "sent", attempts)
        error = result.error or "delivery failed"
        report.errors.append(f"{row.kind} #{row.id}: {error}")
        if row.kind in DROPPABLE_KINDS and (result.permanent or attempts >= self.config.max_attempts):
            report.failed += 1
            reason = error if result.permanent else f"gave up after {attempts} attempts: {error}"
            log.warning("outbox %s #%d failed for good: %s", row.kind, row.id, _log_reason(result))
            return OutboxOutcome(row.id, "failed", attempts, reason)
        delay = backoff(attempts, self.config)
        if result.permanent:
            # Never dropped: refused for good as configured, so try hourly until someone fixes the configuration.
            delay = self.config.retry_max
            log.warning("outbox %s #%d to %s refused (%s); kept, retrying every %s until the configuration is fixed",
                        row.kind, row.id, _target(row), _log_reason(result), self.config.retry_max)
        elif attempts == self.config.max_attempts:
            log.warning("outbox %s #%d still failing after %d attempts (%s); kept, retrying every %s",
                        row.kind, row.id, attempts, _log_reason(result), self.config.retry_max)
        if result.retry_after is not None:
            delay = min(max(delay, timedelta(seconds=result.retry_after)), self.config.retry_max)
        report.retried += 1
        return OutboxOutcome(row.id, "pending", attempts, error, now + delay)


def _log_reason(result: DeliveryResult) -> str:
    """The status code or the error's class, never its text: error texts may quote an address or a receiver's body."""
    if result.status_code is not None:
        return f"HTTP {result.status_code}"
    error = result.error or "error"
    first_word = error.split(" ", 1)[0]
    if first_word.isdigit():
        return f"SMTP {first_word}"
    head = error.split(":", 1)[0]
    return head if "@" not in head else "error"


def _target(row: Any) -> str:
    if row.kind == OWNER_EMAIL:
        return "the mail server"
    url = (row.payload or {}).get("url")
    return (urlsplit(str(url)).hostname or "?") if url else "the configured endpoint"
