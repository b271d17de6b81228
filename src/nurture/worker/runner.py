"""The worker of ``nurture run``: the dispatcher and the periodic jobs on APScheduler 3 (in-memory job store, UTC).
:mod:`nurture.service` runs it beside the HTTP intake in one process (or either one alone for larger deploys).

The database is the schedule, so APScheduler only runs a handful of jobs: the look for due work (every
``poll_interval``: one statement, :class:`nurture.storage.work_probe.WorkProbe`, that starts the dispatcher or the
outbox at once when it finds work for them), the dispatcher and the outbox (each also every ``recheck_interval`` on its
own; ``max_instances=1``, ``coalesce=True``, ``misfire_grace_time=None`` so a late run is never dropped), the
handoff's digests and SLA reminders (:mod:`nurture.worker.handoff_jobs`), the enrollment sweep (new or edited campaigns'
audiences, re-entry and recycle waits that ended: :mod:`nurture.application.enroll_sweep`), and the nightly rescoring
(score decay). Nothing per lead lives in APScheduler.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from datetime import timezone
from functools import partial
from typing import TYPE_CHECKING, Any

from nurture.application.apply_versions import apply_versions
from nurture.application.enroll_sweep import sweep
from nurture.application.variant_decisions import decide_winners
from nurture.clock import SYSTEM_CLOCK, Clock
from nurture.definitions.loader import Catalog, load_catalog
from nurture.definitions.sales import SalesRules, validate_sales
from nurture.definitions.scoring import ScoringRules, validate_scoring
from nurture.definitions.sources import DefinitionSource, catalog_sources
from nurture.delivery.transports import Transport, transport_from_url
from nurture.delivery.webhooks import WebhookSender
from nurture.errors import DefinitionError
from nurture.handoff import Handoff
from nurture.heap import settle_after_start_up
from nurture.rendering.deferred import DeferredRenderer
from nurture.settings import Settings
from nurture.signing import Signer
from nurture.storage.migrate import open_database
from nurture.storage.secrets import signing_secret
from nurture.storage.work_probe import Waiting, WorkProbe
from nurture.worker.dispatcher import DispatchConfig, Dispatcher, TickReport, dispatch_config
from nurture.worker.handoff_jobs import HandoffJobs
from nurture.worker.outbox_jobs import OutboxProcessor
from nurture.worker.processes import DispatchProcesses

if TYPE_CHECKING:  # APScheduler is imported by start(): `nurture run --once` runs no scheduler
    from apscheduler.schedulers.background import BackgroundScheduler

    from nurture.rendering.environment import EmailRenderer

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    """How ``nurture run`` behaves."""

    poll_interval: float = 0.5  # seconds between looks for due work (one statement) when idle
    recheck_interval: float = 60.0  # the dispatcher and the outbox also run this often without a look's word
    sweep_interval: float = 600.0  # seconds between enrollment sweeps (changed leads are enrolled as they change)
    max_batches_per_run: int = 20  # a dispatcher run yields after this many batches so shutdown stays prompt
    rescore_hour: int = 3  # UTC hour of the nightly rescoring (score decay)
    handoff_interval: float = 60.0  # seconds between looks for due digests and SLA reminders
    decide_interval: float = 60.0  # seconds between looks for A/B tests whose winner can be called


class Worker:
    """Everything ``nurture run`` needs, built once at start-up. Every job reads ``clock`` (the wall clock unless a
    test passes its own) and passes that time on."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = SYSTEM_CLOCK,
        transport: Transport | None = None,
        catalog: Catalog | None = None,
        config: DispatchConfig | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.engine = open_database(settings.database_url)
        self.catalog = catalog or load_catalog(settings.campaigns_dir, settings.templates_dir).raise_for_problems()
        self.sources = definition_sources(settings, self.catalog)
        self.scoring = scoring_rules(self.sources)
        self.sales = sales_rules(self.sources)
        self.transport = transport or transport_from_url(settings.mail_url)
        self.signer = Signer(signing_secret(self.engine, settings.secret_key))
        self.dispatcher = Dispatcher(
            self.engine, self.catalog, DeferredRenderer(partial(email_renderer, settings)), self.transport, self.signer,
            config or dispatch_config(settings),
        )
        self.webhooks = WebhookSender(None, secret=settings.webhook_secret)  # its HTTP client made at its first request
        self.outbox = OutboxProcessor(
            self.engine, sender=self.webhooks, mail=self.transport,
            from_address=settings.from_address, sales_webhook_url=settings.sales_webhook_url,
        )
        self.handoff = HandoffJobs(
            self.engine, sales=self.sales, scoring=self.scoring, handoff=Handoff.from_settings(settings, self.signer),
            campaign_names={campaign.id: campaign.name for campaign in self.catalog.campaigns.values()},
        )
        self.options = RunOptions(poll_interval=settings.poll_interval, sweep_interval=settings.sweep_interval)
        self.probe = WorkProbe(self.engine, self.dispatcher.live_campaigns)
        self.scheduler: BackgroundScheduler | None = None
        # --processes N: N - 1 more processes that only dispatch (see nurture.worker.processes)
        self.processes = DispatchProcesses(settings, settings.dispatch_processes - 1, self.catalog) \
            if settings.dispatch_processes > 1 else None
        self._stop = threading.Event()
        self._outbox_woken = threading.Event()

    # -- jobs ------------------------------------------------------------------------------------------------------

    def start_up(self) -> int:
        """Put edited definitions in force (:meth:`sync_versions`), call the A/B winners due, then sweep
        (:meth:`sweep`) before returning; return new enrollments."""
        self.sync_versions()
        self.decide()
        return self.sweep()

    def sync_versions(self) -> None:
        """Put edited definitions in force, as ``nurture plan`` shows them: logged, and recorded with each new version
        (leads at removed steps moved, the other active enrollments re-planned)."""
        with_impact = self.settings.start_scoring_impact
        report = apply_versions(self.engine, self.catalog, self.sources, self.clock(), with_impact=with_impact)
        if not with_impact and any(f.kind in ("scoring", "sales") for f in report.files):
            log.info("scoring and sales impact not counted (NURTURE_START_SCORING_IMPACT=false)")
        for section in report.shown():
            log.info("applied: %s", "\n".join(section.lines()))  # ids, versions and counts: no personal data

    def decide(self) -> None:
        """Call and record the winner of every A/B step with ``winner:`` whose test has one (an APScheduler job);
        the dispatcher gives it to later leads from its next batch."""
        try:
            decide_winners(self.engine, self.catalog, self.clock())
        except Exception:  # the job must survive a bad moment (database busy, ...): log and try again next run
            log.exception("A/B decision run failed; retrying at the next interval")

    def sweep(self) -> int:
        """Enroll the audiences of new or edited campaigns and the leads whose wait to enter (again) ended since the
        last sweep (leads that change are enrolled as they change); return new enrollments. A stop request cuts an
        audience short between two ranges of leads: the next start-up takes it up again."""
        try:
            report = sweep(self.engine, self.catalog, self.clock(), stopping=self._stop.is_set)
        except Exception:
            log.exception("enrollment sweep failed; retrying at the next interval")
            return 0
        if report.audiences:
            log.info("enrollment sweep: %d lead(s) enrolled in the audiences of %s%s", report.audience_enrolled,
                     ", ".join(report.audiences), "" if report.finished else " (stopped before the end)")
        if report.due_enrolled:
            log.info("enrollment sweep: %d lead(s) enrolled whose wait to enter ended", report.due_enrolled)
        return report.enrolled

    def look(self) -> Waiting:
        """The idle worker's poll (an APScheduler job, every ``poll_interval``): one statement asks whether due
        enrollments, retries, expired leases or outbox rows wait, and starts the dispatcher or the outbox at once
        when they do. If the look fails, both are started (they report what is wrong)."""
        try:
            waiting = self.probe.look(self.clock())
        except Exception:  # the job must survive a bad moment (database busy, ...)
            log.warning("looking for due work failed; running the dispatcher and the outbox", exc_info=True)
            waiting = Waiting(dispatch=True, outbox=True)
        jobs = [name for name, due in (("dispatch", waiting.dispatch), ("outbox", waiting.outbox)) if due]
        if jobs:
            self._run_now(jobs)
        return waiting

    def dispatch(self) -> None:
        """One dispatcher run (an APScheduler job): drain a bounded number of batches."""
        try:
            report = self.dispatcher.drain(self.clock, max_batches=self.options.max_batches_per_run)
        except Exception:  # the job must survive a bad moment (database busy, ...): log and try again next run
            log.exception("dispatcher run failed; retrying at the next interval")
            return
        if report.claimed:
            log.info("dispatched: %d claimed, %d sent, %d retry, %d failed, %d suppressed, %d ended",
                     report.claimed, report.sent, report.retried, report.failed, report.suppressed, report.ended)

    def deliver_outbox(self) -> None:
        """One outbox run (an APScheduler job): sales notifications, owner emails, step webhooks.

        A wake-up that came while this run was going (a promotion committed after its last look) makes it look again
        at once, rather than at the next interval: that is the handoff's latency."""
        try:
            while True:
                self._outbox_woken.clear()
                report = self.outbox.drain(self.clock, max_batches=self.options.max_batches_per_run)
                if not self._outbox_woken.is_set() or self._stop.is_set() or report.released:
                    break
        except Exception:
            log.exception("outbox run failed; retrying at the next interval")
            return
        if report.claimed:
            log.info("outbox: %d claimed, %d sent, %d retry, %d failed", report.claimed, report.sent, report.retried,
                     report.failed)

    def remind(self) -> None:
        """Queue the owners' daily digests and the SLA reminders that are due (an APScheduler job), and deliver them
        at once."""
        try:
            report = self.handoff.run(self.clock())
        except Exception:
            log.exception("handoff run failed; retrying at the next interval")
            return
        if report.queued:
            self.wake()

    def rescore(self) -> int:
        """Recompute stored scores (decay); safe to run on every worker."""
        from nurture.application.rescore import rescore_all

        changed = rescore_all(self.engine, self.scoring, self.clock(), catalog=self.catalog)
        log.info("rescored: %d score(s) changed", changed)
        return changed

    def run_once(self) -> TickReport:
        """Process everything due now, then return (``nurture run --once``): every due enrollment, retry and expired
        lease, however many batches they take (a retry that fails again is due later, not in this run)."""
        self.start_up()
        report = self.dispatcher.drain(self.clock)
        self.handoff.run(self.clock())
        self.outbox.drain(self.clock)
        self.dispatcher.close()
        self.transport.close()
        self.webhooks.close()
        return report

    # -- the service -----------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Put edited definitions in force, then start the periodic jobs in background threads; the first enrollment sweep
        runs at once, beside the dispatcher (a new campaign's audience is enrolled while due emails go out)."""
        from apscheduler.schedulers.background import BackgroundScheduler

        self.sync_versions()
        settle_after_start_up()  # a service from here on: batches, not start-up objects, for the collector
        scheduler = BackgroundScheduler(timezone=timezone.utc)
        common: dict[str, Any] = dict(max_instances=1, coalesce=True, misfire_grace_time=None)
        # APScheduler runs on wall-clock time, whatever clock the jobs decide with: "now" to it is the wall clock's
        started = SYSTEM_CLOCK()
        scheduler.add_job(self.dispatch, "interval", seconds=self.options.recheck_interval, id="dispatch",
                          next_run_time=started, **common)
        scheduler.add_job(self.deliver_outbox, "interval", seconds=self.options.recheck_interval, id="outbox",
                          next_run_time=started, **common)
        scheduler.add_job(self.look, "interval", seconds=self.options.poll_interval, id="look", **common)
        scheduler.add_job(self.remind, "interval", seconds=self.options.handoff_interval, id="handoff",
                          next_run_time=started, **common)
        scheduler.add_job(self.sweep, "interval", seconds=self.options.sweep_interval, id="sweep",
                          next_run_time=started, **common)
        scheduler.add_job(self.decide, "interval", seconds=self.options.decide_interval, id="decide",
                          next_run_time=started, **common)
        scheduler.add_job(self.rescore, "cron", hour=self.options.rescore_hour, minute=0, id="rescore", **common)
        if self.processes is not None:
            self.processes.start()
            scheduler.add_job(self.processes.check, "interval", seconds=5, id="processes", **common)
        scheduler.start()
        self.scheduler = scheduler
        log.info("worker running: %d campaign(s), polling every %.1fs", len(self.catalog.campaigns),
                 self.options.poll_interval)

    def stop(self) -> None:
        """Stop claiming, let the batch in flight finish and be recorded, release everything."""
        self.dispatcher.stopping = True
        self.outbox.stopping = True
        self._stop.set()
        if self.processes is not None:
            self.processes.request_stop()  # they wind down while this process does
        if self.scheduler is not None and self.scheduler.running:
            log.info("stopping: finishing the batch in flight")
            self.scheduler.shutdown(wait=True)
        if self.processes is not None:
            # a process may be finishing two batches, each handing back what it cannot start within half the lease
            self.processes.stop(timeout=self.settings.lease_seconds + 30)
        self.probe.close()
        self.dispatcher.close()
        self.transport.close()
        self.webhooks.close()
        log.info("stopped")

    def request_stop(self, *_args: object) -> None:
        """Signal handler: ask :meth:`run_forever` to stop."""
        self.dispatcher.stopping = True
        self._stop.set()
        if self.processes is not None:
            self.processes.request_stop()

    def run_forever(self, *, install_signals: bool = True) -> None:
        """The worker alone, until SIGTERM/SIGINT (or :meth:`request_stop`)."""
        if install_signals:
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
        self.start()
        try:
            while not self._stop.wait(timeout=1.0):
                pass
        finally:
            self.stop()
            self.engine.dispose()

    def wake(self) -> None:
        """Run the dispatcher and the outbox now (intake calls this after an event that may make a step due or queue
        a notification). APScheduler keeps wall-clock time, whatever clock the worker decides with."""
        self._outbox_woken.set()
        self._run_now(["dispatch", "outbox"])

    def _run_now(self, jobs: list[str]) -> None:
        """Run these jobs now (a running one is not run twice: the next look finds what is left)."""
        scheduler = self.scheduler
        if scheduler is not None and scheduler.running and not self._stop.is_set():
            try:
                woken = SYSTEM_CLOCK()  # APScheduler's wall-clock time, not the worker's clock
                for job in jobs:
                    scheduler.modify_job(job, next_run_time=woken)
            except Exception:  # the scheduler may be shutting down; the next look catches up anyway
                log.debug("could not wake %s", ", ".join(jobs), exc_info=True)


def email_renderer(settings: Settings) -> EmailRenderer:
    """The renderer of the worker's emails (made at the first email: the templates are compiled as they are used)."""
    from nurture.rendering import EmailRenderer, render_limits

    return EmailRenderer(settings.templates_dir, render_limits(settings))


def definition_sources(settings: Settings, catalog: Catalog) -> list[DefinitionSource]:
    """The texts of the definitions the worker runs, kept as versions (DefinitionError if one cannot be read)."""
    sources, problems = catalog_sources(catalog, settings.campaigns_dir)
    if problems:
        raise DefinitionError(problems)
    return sources


def _source(sources: list[DefinitionSource], kind: str) -> DefinitionSource | None:
    return next((source for source in sources if source.kind == kind), None)


def sales_rules(sources: list[DefinitionSource]) -> SalesRules:
    """The sales rules, from the text of sales.yaml kept as its version (DefinitionError with every problem)."""
    source = _source(sources, "sales")
    if source is None:
        return SalesRules()
    rules, problems = validate_sales(source.document())
    if problems:
        raise DefinitionError(problems)
    return rules


def scoring_rules(sources: list[DefinitionSource]) -> ScoringRules:
    """The scoring rules, from the text of scoring.yaml kept as its version (DefinitionError with every problem)."""
    source = _source(sources, "scoring")
    if source is None:
        return ScoringRules()
    rules, problems = validate_scoring(source.document())
    if problems:
        raise DefinitionError(problems)
    return rules
