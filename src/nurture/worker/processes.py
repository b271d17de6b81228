"""More processes that dispatch: ``nurture run --processes N`` (``NURTURE_DISPATCH_PROCESSES``).

Rendering (Jinja in its sandbox), signing links, building MIME bytes and speaking SMTP are CPU work under one
interpreter lock, so one process sends with at most one core. With N above 1, ``nurture run`` starts N - 1 more
processes that do nothing but dispatch. Each is a worker as far as the database is concerned: it claims its own
batches under its own lease owner (host:pid), so two processes never send the same step, and a process that dies
leaves only its leased batch for the others to take over when the lease runs out. Each opens its own
``NURTURE_MAIL_URL`` connections (``connections=`` is per process). The main process keeps everything else: the HTTP
intake, the outbox, sales hand-off jobs, enrollment sweeps, the nightly rescoring, and a dispatcher of its own.

The processes are started with ``spawn`` (the main process has threads; forking it would copy their locks), watched by
the main process (one that exits is started again; each works from the campaigns the main process loaded, so campaign
files edited meanwhile change nothing until ``nurture run`` restarts; templates are read at first use), and stopped with
it: they finish and record the batch in flight, then exit. One whose main process is gone (even killed with SIGKILL)
stops after its batch.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # multiprocessing is imported when processes are started (--processes 2 and more)
    from multiprocessing.connection import Connection
    from multiprocessing.context import SpawnProcess

    from nurture.definitions.loader import Catalog
    from nurture.settings import Settings

log = logging.getLogger(__name__)

MAX_BATCHES_PER_RUN = 20


def configure_logging(level: str) -> None:
    """The worker's log format and the quieting of chatty libraries (shared by ``nurture run`` and its processes)."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    # APScheduler's per-run lines, and its "skipped: maximum number of running instances" when intake wakes a job that
    # is already running (expected: the running one takes the new work), would drown the worker's own log.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs full URLs, and a webhook URL can be a secret


def dispatch_process_main(settings: Settings, control: Connection, catalog: Catalog | None = None) -> None:
    """The body of one extra dispatch process: drain what is due, wait ``poll_interval`` when idle, until told to stop.

    ``control`` is the reading end of a pipe from the main process: a message on it, or its end of file (the main
    process is gone, even killed), means stop. A pipe rather than a shared lock or event: a process killed while it
    held a shared lock would leave every other process waiting for it forever. ``catalog``: the campaigns the main
    process loaded (all processes of one ``nurture run`` work from the same definitions, even when the files were
    edited since it started and this process is a restarted one); loaded from the files when not given.
    """
    stopped = threading.Event()
    terminated: list[bool] = []  # a signal handler only appends here: setting the Event could deadlock on its lock
    # Ctrl-C reaches the whole process group; the main process decides when its processes stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_args: terminated.append(True))
    configure_logging(settings.log_level)

    from nurture.clock import SystemClock
    from nurture.definitions.loader import load_catalog
    from nurture.delivery import transport_from_url
    from nurture.heap import settle_after_start_up
    from nurture.rendering import EmailRenderer, render_limits
    from nurture.signing import Signer
    from nurture.storage.migrate import open_database
    from nurture.storage.secrets import signing_secret
    from nurture.worker.dispatcher import Dispatcher, dispatch_config

    engine = open_database(settings.database_url)
    if catalog is None:
        catalog = load_catalog(settings.campaigns_dir, settings.templates_dir).raise_for_problems()
    transport = transport_from_url(settings.mail_url)
    dispatcher = Dispatcher(engine, catalog, EmailRenderer(settings.templates_dir, render_limits(settings)), transport,
                            Signer(signing_secret(engine, settings.secret_key)), dispatch_config(settings))
    clock = SystemClock()
    settle_after_start_up()

    def watch() -> None:
        # a message on the pipe or its end of file (the main process is gone), or SIGTERM: stop claiming
        while not terminated:
            try:
                if control.poll(0.2):
                    break
            except OSError:
                break
        stopped.set()
        dispatcher.stopping = True

    threading.Thread(target=watch, name="nurture-control", daemon=True).start()
    log.info("dispatch process %d ready", os.getpid())
    try:
        while not stopped.is_set():
            try:
                report = dispatcher.drain(clock, max_batches=MAX_BATCHES_PER_RUN)
            except Exception:  # a bad moment (database busy, ...) must not end the process: try again shortly
                log.exception("dispatcher run failed; retrying at the next interval")
                report = None
            if report is not None and report.claimed:
                log.info("dispatched in process %d: %d claimed, %d sent, %d retry, %d failed, %d suppressed, %d ended",
                         os.getpid(), report.claimed, report.sent, report.retried, report.failed, report.suppressed,
                         report.ended)
                continue
            stopped.wait(settings.poll_interval)
    finally:
        dispatcher.close()
        transport.close()
        engine.dispose()


class DispatchProcesses:
    """Starts, watches and stops the extra dispatch processes of one ``nurture run``."""

    def __init__(self, settings: Settings, count: int, catalog: Catalog | None = None) -> None:
        self.settings = settings
        self.count = count
        self.catalog = catalog
        import multiprocessing

        self._context: Any = multiprocessing.get_context("spawn")
        self._running: list[tuple[SpawnProcess, Connection]] = []
        self._stopping = False
        self._lock = threading.Lock()

    @property
    def processes(self) -> list[SpawnProcess]:
        """The processes running now."""
        return [process for process, _control in self._running]

    def _spawn(self) -> tuple[SpawnProcess, Connection]:
        reading, writing = self._context.Pipe(duplex=False)
        process = self._context.Process(target=dispatch_process_main, args=(self.settings, reading, self.catalog),
                                        name="nurture-dispatch", daemon=False)
        process.start()
        reading.close()  # the child has its own copy; ours would keep the pipe open after the child's death
        return process, writing

    def start(self) -> None:
        """Start ``count`` processes."""
        with self._lock:
            self._running = [self._spawn() for _ in range(self.count)]
        log.info("dispatching in %d more process(es): %s", self.count, ", ".join(str(p.pid) for p in self.processes))

    def check(self) -> int:
        """Start again any process that exited while the worker runs (an APScheduler job); return how many."""
        restarted = 0
        with self._lock:
            if self._stopping:
                return 0
            for index, (process, control) in enumerate(self._running):
                if process.is_alive():
                    continue
                log.warning("dispatch process %s exited with code %s; starting another", process.pid, process.exitcode)
                process.join()
                control.close()
                self._running[index] = self._spawn()
                restarted += 1
        return restarted

    def request_stop(self) -> None:
        """Tell every process to stop claiming (they finish what is in flight); none is started again after this.

        Called from signal handlers too, so it takes no lock (the interrupted code may hold it)."""
        if self._stopping:
            return
        self._stopping = True
        for _process, control in list(self._running):
            try:
                control.send_bytes(b"stop")
            except OSError:
                pass  # that one is gone already

    def stop(self, timeout: float) -> None:
        """Ask every process to stop after its batches in flight; kill one that has not within ``timeout`` seconds."""
        self.request_stop()
        with self._lock:
            for _process, control in self._running:
                control.close()
            for process, _control in self._running:
                process.join(timeout)
                if process.is_alive():
                    log.warning("dispatch process %s did not stop in %.0fs; killing it", process.pid, timeout)
                    process.kill()
                    process.join()
