"""The dispatcher tick: claim due enrollments, let the engine decide, create deliveries, send them, record results.

1. Claim (one short write transaction): lease a batch of due enrollments.
2. Decide (no transaction): load the leads' facts, run the step engine for each enrollment.
3. Write (one short write transaction): create the delivery rows (unique per enrollment x step), advance the
   enrollments, apply lead updates, queue webhooks in the outbox.
4. Send (no transaction): render, build, hand the batch to the transport in chunks; suppression is re-checked right
   before each chunk goes out.
5. Record (one short write transaction): sent, retry with backoff, or failed with the reason.

:meth:`Dispatcher.drain` overlaps batches: steps 1-4 of the next batch run while the transport still sends the last one,
which is recorded after. A crash between 3 and 5 leaves deliveries ``claimed`` with a lease; when it expires they are
sent again with the same Message-ID (SMTP cannot be exactly-once: at most the two batches in flight may be sent twice).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from nurture.application.compose import render_action
from nurture.application.enroll import enroll_in_transaction
from nurture.application.variant_decisions import recorded_winners
from nurture.clock import Clock
from nurture.core.engine import COUNTED, Action, EnrollmentState, advance, window_opens
from nurture.core.facts import Send
from nurture.definitions.loader import Catalog
from nurture.delivery.message import OutgoingEmail, build_message_bytes, domain_of, message_id_for
from nurture.delivery.transports import SendResult, Transport
from nurture.errors import NurtureError
from nurture.rendering.links import LinkBuilder
from nurture.settings import Settings
from nurture.signing import Signer
from nurture.storage import schedule
from nurture.storage.schedule import DeliveryOutcome, EnrollmentUpdate, LeadChange, LeadFacts, NewDelivery

if TYPE_CHECKING:
    from nurture.rendering.deferred import Renderer

log = logging.getLogger(__name__)

PARK_AFTER_ERROR = timedelta(hours=1)  # an enrollment the engine could not advance is looked at again after this
SEND_CHUNK = 400  # messages rendered before the transport starts on them; it sends while the next chunk renders


@dataclass
class DispatchConfig:
    """Knobs of the dispatcher."""

    batch_size: int = 500
    lease: timedelta = timedelta(minutes=5)
    max_attempts: int = 6
    retry_base: timedelta = timedelta(seconds=30)  # 30 s, 1 min, 2 min, 4 min, ... capped at retry_max
    retry_max: timedelta = timedelta(hours=2)
    default_timezone: str = "UTC"
    from_address: str = "Nurture <nurture@localhost>"
    base_url: str = "http://127.0.0.1:8000"


def dispatch_config(settings: Settings) -> DispatchConfig:
    """The dispatcher's knobs from the settings."""
    return DispatchConfig(
        batch_size=settings.batch_size, lease=timedelta(seconds=settings.lease_seconds),
        max_attempts=settings.max_attempts, default_timezone=settings.default_timezone,
        from_address=settings.from_address, base_url=settings.base_url,
    )


@dataclass
class TickReport:
    """What one tick did."""

    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    suppressed: int = 0
    ended: int = 0
    released: int = 0  # rendered but handed back unsent: the batch ran out of time
    errors: list[str] = field(default_factory=list)

    def add(self, other: TickReport) -> None:
        """Sum another report into this one."""
        for name in ("claimed", "sent", "retried", "failed", "suppressed", "ended", "released"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.extend(other.errors)


def worker_id() -> str:
    """This process's name in leases: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def backoff(attempts: int, config: DispatchConfig) -> timedelta:
    """The wait before attempt ``attempts + 1``: exponential from ``retry_base``, capped at ``retry_max``."""
    return min(config.retry_base * (2 ** max(attempts - 1, 0)), config.retry_max)


@dataclass
class _Pending:
    delivery: Any  # the delivery row
    action: Action
    facts: LeadFacts


@dataclass
class _InFlight:
    """A batch whose messages are queued on the sending thread: its chunks, and outcomes known before sending."""

    now: datetime
    report: TickReport
    outcomes: list[DeliveryOutcome] = field(default_factory=list)
    # each chunk: what it sends, and its results (None: handed back unsent; a None result: that lead left meanwhile)
    chunks: list[tuple[list[tuple[_Pending, str]], Future[list[SendResult | None] | None]]] = field(
        default_factory=list)


class Dispatcher:
    """Sends what is due. Thread-unsafe by design: APScheduler runs it with max_instances=1."""

    def __init__(
        self,
        engine: Engine,
        catalog: Catalog,
        renderer: Renderer,
        transport: Transport,
        signer: Signer,
        config: DispatchConfig | None = None,
        *,
        owner: str | None = None,
    ) -> None:
        self.engine = engine
        self.catalog = catalog
        self.renderer = renderer
        self.transport = transport
        self.signer = signer
        self.config = config or DispatchConfig()
        self.owner = owner or worker_id()
        self.domain = domain_of(self.config.from_address)
        self.stopping = False
        self._sender: ThreadPoolExecutor | None = None  # one thread: chunks go to the transport in order
        # a paused campaign sends nothing, not even the steps of leads already in it
        self.live_campaigns = [c.id for c in catalog.campaigns.values() if not c.paused]
        self._winners: dict[str, dict[str, str]] = {}  # campaign -> step -> the recorded A/B winner

    # -- the tick -------------------------------------------------------------------------------------------------

    def tick(self, now: datetime) -> TickReport:
        """One batch of due enrollments and one batch of retries, at ``now``; returns when both are sent and recorded."""
        if not schedule.anything_due(self.engine, now, self.live_campaigns):
            return TickReport()
        report = self._finish(self._dispatch_enrollments(now))
        report.add(self._retry_deliveries(now))
        return report

    def drain(self, clock: Clock, *, max_batches: int | None = None) -> TickReport:
        """Tick until nothing is due (or ``stopping`` is set). The clock is read once per batch, and when a batch has been
        sent, again for the retries that fell due meanwhile (and once more when they are claimed).

        Batches overlap: the next one is claimed, decided, written and rendered while the transport still sends the
        one before, then the one before is recorded. So the mail connections are never idle while there is work, and
        at most two batches are in flight (claimed, not yet recorded) at any time.
        """
        total = TickReport()
        batches = 0
        in_flight: _InFlight | None = None
        try:
            while not self.stopping:
                now = clock()
                if not schedule.anything_due(self.engine, now, self.live_campaigns):
                    break
                flight = self._dispatch_enrollments(now)
                previous, in_flight = in_flight, flight  # should recording the previous fail, this one is still recorded
                if previous is not None:
                    total.add(self._finish(previous))
                # Later moments than ``now``, read when they happen: the previous batch was sent since (seconds, up to
                # half a lease), so retries that fell due or leases that ran out meanwhile go out in this pass; and
                # the retries' lease and backoff count from when they are claimed, after the batch in flight is sent.
                retries = TickReport()
                if not self.stopping and schedule.deliveries_due(self.engine, clock(), self.live_campaigns):
                    # Retries are sent and recorded at once: not queued behind a batch in flight, which would stay
                    # unrecorded meanwhile and could outlive its lease (another worker would send it again).
                    total.add(self._finish(in_flight))
                    in_flight = None
                    retries = self._retry_deliveries(clock())
                    total.add(retries)
                batches += 1
                # Done when a pass found nothing to claim, neither due enrollments nor due retries (a backlog of
                # retries after an outage takes several passes). Each claimed retry is sent, or its next attempt is
                # set in the future, so this ends; except a chunk handed back unsent (the mail server too slow to
                # start it by half the lease): that waits for the next run rather than being tried again at once.
                if (flight.report.claimed == 0 and retries.claimed == 0) or retries.released \
                        or (max_batches is not None and batches >= max_batches):
                    break
        finally:
            if in_flight is not None:
                total.add(self._finish(in_flight))
        return total

    def _dispatch_enrollments(self, now: datetime) -> _InFlight:
        """Claim, decide, write and start sending a batch of due enrollments; :meth:`_finish` waits and records."""
        report = TickReport()
        rows = schedule.claim_due_enrollments(
            self.engine, now, limit=self.config.batch_size, owner=self.owner, lease=self.config.lease,
            campaign_ids=self.live_campaigns,
        )
        if not rows:
            return _InFlight(now, report)
        report.claimed = len(rows)
        try:
            since = min(row.enrolled_at for row in rows)
            facts = schedule.load_facts(self.engine, sorted({row.lead_id for row in rows}), since)
            self._winners = recorded_winners(self.engine)  # A/B calls made since the last batch apply to this one
            pending = self._decide_and_write(now, rows, facts, report)
        except Exception:
            schedule.release_enrollments(self.engine, [row.id for row in rows], owner=self.owner)
            raise
        return self._start_sending(now, pending, report)

    def _decide_and_write(self, now: datetime, rows: list[Any], facts: dict[int, LeadFacts], report: TickReport) -> list[_Pending]:
        updates: list[EnrollmentUpdate] = []
        new_deliveries: list[NewDelivery] = []
        actions: dict[tuple[int, str], tuple[Action, LeadFacts]] = {}
        changes: list[LeadChange] = []
        outbox: list[dict[str, Any]] = []
        for row in rows:
            try:
                decided = self._decide(now, row, facts.get(row.lead_id))
            except Exception as exc:  # noqa: BLE001 - one broken enrollment must not hold back every other lead's email
                log.warning("enrollment %s in %s could not be advanced (%s); looking again in an hour",
                            row.id, row.campaign_id, type(exc).__name__)
                updates.append(EnrollmentUpdate(row.id, row.step_id, row.arrived_at, row.state or {},
                                                now + PARK_AFTER_ERROR, row.waiting_for, None))
                continue
            update, row_deliveries, row_actions, row_changes, row_outbox = decided
            if update.ended:
                report.ended += 1
            updates.append(update)
            new_deliveries += row_deliveries
            actions.update(row_actions)
            changes += row_changes
            outbox += row_outbox
        changed = [change.lead_id for change in changes]

        def enroll_changed(conn: Any) -> None:
            # a tag or field an update step set may be another campaign's entry (a hand-off to a content stream):
            # enrolled with the change, in its transaction
            enroll_in_transaction(conn, self.catalog, changed, now)

        created = schedule.write_decisions(
            self.engine, now, enrollments=updates, deliveries=new_deliveries, lead_changes=changes, outbox=outbox,
            lease=self.config.lease, owner=self.owner, then=enroll_changed if changed else None,
        )
        pending = []
        for delivery in created:
            action, lead_facts = actions[(delivery.enrollment_id, delivery.step_key)]
            pending.append(_Pending(delivery, action, lead_facts))
        return pending

    def _decide(self, now: datetime, row: Any, lead_facts: LeadFacts | None) -> tuple[
        EnrollmentUpdate, list[NewDelivery], dict[tuple[int, str], tuple[Action, LeadFacts]], list[LeadChange],
        list[dict[str, Any]],
    ]:
        """What the engine decides for one enrollment, as the rows to write."""
        if lead_facts is None:  # the lead was deleted under us
            return (EnrollmentUpdate(row.id, row.step_id, row.arrived_at, row.state or {}, None, None, "lead deleted"),
                    [], {}, [], [])
        campaign = self.catalog.campaigns[row.campaign_id]
        state = EnrollmentState.from_row(row.step_id, row.arrived_at, row.enrolled_at, row.state or {},
                                         held_out=bool(row.held_out))
        result = advance(campaign, self.catalog.policy, state, lead_facts.lead, lead_facts.history(), now,
                         default_tz=self.config.default_timezone, winners=self._winners.get(campaign.id))
        deliveries: list[NewDelivery] = []
        actions: dict[tuple[int, str], tuple[Action, LeadFacts]] = {}
        changes: list[LeadChange] = []
        outbox: list[dict[str, Any]] = []
        for action in result.actions:
            if action.kind == "email":
                key = f"{row.id}:{action.step_key}"
                deliveries.append(NewDelivery(row.id, row.lead_id, campaign.id, action.step_id, action.step_key,
                                              action.variant, message_id_for(key, self.domain),
                                              campaign_version=self.catalog.version(campaign.id)))
                actions[(row.id, action.step_key)] = (action, lead_facts)
            elif action.kind == "update" and action.update is not None:
                changes.append(LeadChange(row.lead_id, dict(action.update.set), list(action.update.add_tags),
                                          list(action.update.remove_tags)))
            elif action.kind == "webhook" and action.webhook is not None:
                outbox.append(self._webhook_row(now, row, campaign.id, action, lead_facts))
        for action in result.actions:  # only once every action of the enrollment was built
            if action.kind == "email":
                lead_facts.sends.append(Send(now, campaign.id, action.step_key,
                                             action.content.id if action.content else None))
        new_state = result.state
        update = EnrollmentUpdate(row.id, new_state.step_id, new_state.arrived_at, new_state.to_json(),
                                  result.next_due_at, result.waiting_for, result.ended,
                                  [(n.step, n.outcome, n.detail, n.at) for n in result.notes if n.outcome in COUNTED])
        return update, deliveries, actions, changes, outbox

    def _webhook_row(self, now: datetime, row: Any, campaign_id: str, action: Action, facts: LeadFacts) -> dict[str, Any]:
        assert action.webhook is not None
        lead = facts.lead
        body = {
            "type": "step.webhook",
            "campaign": campaign_id,
            "step": action.step_id,
            "lead": {"email": lead.email, "stage": lead.stage, "score": lead.score, **dict(lead.attributes)},
            **action.webhook.payload,
        }
        return dict(kind="step_webhook", dedup_key=f"step:{row.id}:{action.step_key}", status="pending", attempts=0,
                    next_attempt_at=now, created_at=now,
                    payload={"url": action.webhook.url, "method": action.webhook.method, "body": body})

    # -- retries ---------------------------------------------------------------------------------------------------

    def _retry_deliveries(self, now: datetime) -> TickReport:
        report = TickReport()
        rows = schedule.claim_deliveries_to_retry(self.engine, now, limit=self.config.batch_size, lease=self.config.lease,
                                                  campaign_ids=self.live_campaigns)
        if not rows:
            return report
        report.claimed = len(rows)
        facts = schedule.load_facts(self.engine, sorted({row.lead_id for row in rows}), now)
        pending: list[_Pending] = []
        outcomes: list[DeliveryOutcome] = []
        for row in rows:
            action = self._action_for(row, now)
            lead_facts = facts.get(row.lead_id)
            if action is None or lead_facts is None:
                outcomes.append(DeliveryOutcome(row.id, "failed", row.attempts, "the step or the lead no longer exists"))
                report.failed += 1
                continue
            campaign = self.catalog.campaigns[row.campaign_id]
            opens = window_opens(campaign, self.catalog.policy, campaign.step(row.step_id), lead_facts.lead, now,
                                 default_tz=self.config.default_timezone)
            if opens > now:  # a retry (or a crashed worker's batch) waits for the send window like a first attempt
                outcomes.append(DeliveryOutcome(row.id, "retry", row.attempts, row.error, next_attempt_at=opens))
                continue
            pending.append(_Pending(row, action, lead_facts))
        schedule.record_outcomes(self.engine, now, outcomes)
        self._send(now, pending, report)
        return report

    def _action_for(self, delivery: Any, now: datetime) -> Action | None:
        """Rebuild the email action of a delivery from its campaign (for a retry)."""
        campaign = self.catalog.campaigns.get(delivery.campaign_id)
        if campaign is None or campaign.index_of(delivery.step_id) is None:
            return None
        step = campaign.step(delivery.step_id)
        if step.stream is not None:
            content_id = delivery.step_key.split("/", 1)[-1]
            item = next((c for c in step.stream.content if c.id == content_id), None)
            if item is None:
                return None
            return Action("email", step.id, delivery.step_key, now, item.template, item.subject, content=item)
        if step.email is None:
            return None
        for variant, _weight, template, subject in step.email.resolved_variants():
            if variant == delivery.variant:
                return Action("email", step.id, delivery.step_key, now, template, subject, variant)
        return None

    # -- sending ---------------------------------------------------------------------------------------------------

    def _send(self, now: datetime, pending: list[_Pending], report: TickReport) -> None:
        """Render and send ``pending``, then record the outcomes."""
        self._finish(self._start_sending(now, pending, report))

    def _start_sending(self, now: datetime, pending: list[_Pending], report: TickReport) -> _InFlight:
        """Render ``pending`` in chunks and queue each on the sending thread as soon as it is rendered."""
        flight = _InFlight(now, report)
        if not pending:
            return flight
        # A slow mail server must not keep this batch past its lease, or another worker would take it over and
        # send it again: chunks not started by half the lease are handed back, unsent, for the next tick.
        deadline = time.monotonic() + self.config.lease.total_seconds() / 2

        def send_in_time(batch: list[tuple[OutgoingEmail, bytes]],
                         sending: list[tuple[_Pending, str]]) -> list[SendResult | None] | None:
            if time.monotonic() >= deadline:
                return None
            # Suppression is checked here, right before the send, not when the batch was decided: a chunk may wait
            # behind others (a slow mail server, the batch before still sending), and an unsubscribe, bounce or exit
            # that came in meanwhile must hold.
            try:
                left = self._left_since([item for item, _subject in sending])
            except Exception as exc:  # noqa: BLE001 - the database is unreachable: hand the chunk back rather than send unchecked
                log.warning("could not check suppression before sending (%s); the chunk is handed back",
                            type(exc).__name__)
                return None
            keep = [i for i, (item, _subject) in enumerate(sending) if item.delivery.id not in left]
            results: list[SendResult | None] = [None] * len(batch)  # None: not sent, the lead left
            if keep:
                for i, result in zip(keep, self.transport.send_many([batch[i] for i in keep])):
                    results[i] = result
            return results

        if self._sender is None:
            self._sender = ThreadPoolExecutor(1, thread_name_prefix="nurture-send")
        for start in range(0, len(pending), SEND_CHUNK):
            batch, sending = self._render_chunk(now, pending[start : start + SEND_CHUNK], flight.outcomes, report)
            if batch:
                flight.chunks.append((sending, self._sender.submit(send_in_time, batch, sending)))
        return flight

    def _left_since(self, items: list[_Pending]) -> set[int]:
        """The deliveries among ``items`` whose lead is now unsubscribed or bounced, or whose enrollment exited."""
        suppressed = schedule.suppressed_leads(self.engine, [item.delivery.lead_id for item in items])
        exited = schedule.exited_enrollments(self.engine, [item.delivery.enrollment_id for item in items])
        return {item.delivery.id for item in items
                if item.delivery.lead_id in suppressed or item.delivery.enrollment_id in exited}

    def _finish(self, flight: _InFlight) -> TickReport:
        """Wait for a batch's chunks to be sent and record every outcome; return its report."""
        now, report, outcomes = flight.now, flight.report, flight.outcomes
        for sending, future in flight.chunks:
            results = future.result()
            if results is None:
                report.released += len(sending)
                outcomes += [DeliveryOutcome(item.delivery.id, "retry", item.delivery.attempts, item.delivery.error,
                                             next_attempt_at=now) for item, _subject in sending]
                continue
            for (item, subject), result in zip(sending, results):
                if result is None:
                    outcomes.append(DeliveryOutcome(item.delivery.id, "suppressed", item.delivery.attempts,
                                                    "lead suppressed or left"))
                    report.suppressed += 1
                else:
                    outcomes.append(self._outcome(now, item.delivery, subject, result, report))
        flight.chunks.clear()
        schedule.record_outcomes(self.engine, now, outcomes)
        outcomes.clear()
        return report

    def close(self) -> None:
        """Stop the sending thread (the transport is closed by its owner)."""
        if self._sender is not None:
            self._sender.shutdown(wait=True)
            self._sender = None

    def _render_chunk(
        self, now: datetime, chunk: list[_Pending], outcomes: list[DeliveryOutcome], report: TickReport,
    ) -> tuple[list[tuple[OutgoingEmail, bytes]], list[tuple[_Pending, str]]]:
        batch: list[tuple[OutgoingEmail, bytes]] = []
        sending: list[tuple[_Pending, str]] = []
        for item in chunk:
            delivery = item.delivery
            attempts = delivery.attempts + 1
            campaign = self.catalog.campaigns[delivery.campaign_id]
            links = LinkBuilder(self.config.base_url, self.signer, str(delivery.id))
            try:
                rendered = render_action(self.renderer, campaign, item.action, item.facts.lead, links)
                email = OutgoingEmail(
                    message_id=delivery.message_id or message_id_for(f"{delivery.enrollment_id}:{delivery.step_key}", self.domain),
                    from_addr=self.config.from_address, to_addr=item.facts.lead.email, subject=rendered.subject,
                    html=rendered.html, text=rendered.text, list_unsubscribe_url=links.unsubscribe(),
                )
                data = build_message_bytes(email, date=now)
            except (NurtureError, ValueError) as exc:
                # a template that fails for this lead will fail again: no retry, the reason is kept
                outcomes.append(DeliveryOutcome(delivery.id, "failed", attempts, f"render: {exc}"))
                report.failed += 1
                continue
            batch.append((email, data))
            sending.append((item, rendered.subject))
        return batch, sending

    def _outcome(self, now: datetime, delivery: Any, subject: str, result: SendResult, report: TickReport) -> DeliveryOutcome:
        attempts = delivery.attempts + 1
        if result.ok:
            report.sent += 1
            return DeliveryOutcome(delivery.id, "sent", attempts, None, result.provider_message_id, subject)
        if result.permanent or attempts >= self.config.max_attempts:
            report.failed += 1
            why = result.error or "send failed"
            if not result.permanent:
                why = f"gave up after {attempts} attempts: {why}"
            return DeliveryOutcome(delivery.id, "failed", attempts, why, subject=subject)
        report.retried += 1
        return DeliveryOutcome(delivery.id, "retry", attempts, result.error, subject=subject,
                               next_attempt_at=now + backoff(attempts, self.config))
