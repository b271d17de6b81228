"""``nurture run``: the dispatcher and the periodic jobs on APScheduler 3 (in-memory job store, UTC).

The database is the schedule, so APScheduler only runs a handful of jobs: the dispatcher (every ``poll_interval``,
``max_instances=1``, ``coalesce=True``, ``misfire_grace_time=None`` so a late run is never dropped) and the
enrollment sweep. Nothing per lead lives in APScheduler.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

from apscheduler.schedulers.background import BackgroundScheduler

from nurture.definitions.loader import Catalog, load_catalog
from nurture.delivery import Transport, transport_from_url
from nurture.rendering import EmailRenderer
from nurture.settings import Settings
from nurture.signing import Signer
from nurture.storage.enrollments import enroll_leads, sync_campaign_versions
from nurture.storage.migrate import open_database
from nurture.storage.secrets import signing_secret
from nurture.worker.dispatcher import DispatchConfig, Dispatcher, TickReport

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    """The wall clock, in UTC: the only place the worker reads it."""
    return datetime.now(timezone.utc)


@dataclass
class RunOptions:
    """How ``nurture run`` behaves."""

    poll_interval: float = 0.5  # seconds between dispatcher looks when idle
    sweep_interval: float = 600.0  # seconds between full enrollment sweeps (intake enrolls its own leads at once)
    max_batches_per_run: int = 20  # a dispatcher run yields after this many batches so shutdown stays prompt


class Worker:
    """Everything ``nurture run`` needs, built once at start-up."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        transport: Transport | None = None,
        catalog: Catalog | None = None,
        config: DispatchConfig | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.engine = open_database(settings.database_url)
        self.catalog = catalog or load_catalog(settings.campaigns_dir, settings.templates_dir).raise_for_problems()
        self.transport = transport or transport_from_url(settings.mail_url)
        self.signer = Signer(signing_secret(self.engine, settings.secret_key))
        self.dispatcher = Dispatcher(
            self.engine, self.catalog, EmailRenderer(settings.templates_dir), self.transport, self.signer,
            config or DispatchConfig(
                batch_size=settings.batch_size, lease=timedelta(seconds=settings.lease_seconds),
                max_attempts=settings.max_attempts, default_timezone=settings.default_timezone,
                from_address=settings.from_address, base_url=settings.base_url,
            ),
        )
        self._stop = threading.Event()

    def start_up(self) -> int:
        """Notice edited campaigns and enroll every lead that matches a campaign; return new enrollments."""
        now = self.clock()
        changed = sync_campaign_versions(self.engine, self.catalog, now)
        for campaign_id in changed:
            log.info("campaign %s changed since it was last loaded: its active enrollments are re-planned", campaign_id)
        return self.sweep()

    def sweep(self) -> int:
        """Enroll leads that match a campaign's entry criteria and are not enrolled yet."""
        created = enroll_leads(self.engine, self.catalog, self.clock())
        if created:
            log.info("enrolled %d lead(s)", created)
        return created

    def run_once(self) -> TickReport:
        """Process everything due now, then return (``nurture run --once``)."""
        self.start_up()
        report = self.dispatcher.drain(self.clock)
        self.transport.close()
        return report

    def dispatch(self) -> None:
        """One dispatcher run (an APScheduler job): drain a bounded number of batches."""
        try:
            report = self.dispatcher.drain(self.clock, max_batches=RunOptions.max_batches_per_run)
        except Exception:  # the job must survive a bad moment (database busy, ...): log and try again next run
            log.exception("dispatcher run failed; retrying at the next interval")
            return
        if report.claimed:
            log.info("dispatched: %d claimed, %d sent, %d retry, %d failed, %d suppressed, %d ended",
                     report.claimed, report.sent, report.retried, report.failed, report.suppressed, report.ended)

    def request_stop(self, *_args: object) -> None:
        """Stop claiming; the batch in flight is finished and recorded."""
        self.dispatcher.stopping = True
        self._stop.set()

    def run_forever(self, options: RunOptions | None = None, *, install_signals: bool = True) -> None:
        """Run until SIGTERM/SIGINT (or :meth:`request_stop`), then finish the batch in flight and exit cleanly."""
        options = options or RunOptions()
        self.start_up()
        scheduler = BackgroundScheduler(timezone=timezone.utc)
        common = dict(max_instances=1, coalesce=True, misfire_grace_time=None)
        scheduler.add_job(self.dispatch, "interval", seconds=options.poll_interval, id="dispatch",
                          next_run_time=self.clock(), **common)
        scheduler.add_job(self.sweep, "interval", seconds=options.sweep_interval, id="sweep", **common)
        self.scheduler = scheduler
        if install_signals:
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
        scheduler.start()
        log.info("worker running: %d campaign(s), polling every %.1fs", len(self.catalog.campaigns), options.poll_interval)
        try:
            while not self._stop.wait(timeout=1.0):
                pass
        finally:
            log.info("stopping: finishing the batch in flight")
            scheduler.shutdown(wait=True)
            self.transport.close()
            self.engine.dispose()
            log.info("stopped")

    def wake(self) -> None:
        """Run the dispatcher now (intake calls this after an event that may make a step due)."""
        scheduler = getattr(self, "scheduler", None)
        if scheduler is not None and scheduler.running:
            scheduler.modify_job("dispatch", next_run_time=self.clock() + timedelta(milliseconds=1))
