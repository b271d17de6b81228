"""``nurture run``: the long-running worker (``--once`` to process what is due and exit)."""

from __future__ import annotations

import logging

import typer

from nurture.settings import get_settings


def run_command(
    once: bool = typer.Option(False, "--once", help="Process everything due now, then exit (tests, cron-style deploys)."),
    poll_interval: float = typer.Option(
        None, "--poll-interval", help="Seconds between dispatcher looks when idle (env NURTURE_POLL_INTERVAL, default 0.5)."
    ),
) -> None:
    """Run the nurture worker: enroll leads, send due steps, retry failures, until SIGTERM/SIGINT.

    Reads NURTURE_DATABASE_URL, NURTURE_MAIL_URL, NURTURE_FROM, NURTURE_BASE_URL, NURTURE_CAMPAIGNS_DIR,
    NURTURE_TEMPLATES_DIR, NURTURE_DEFAULT_TIMEZONE, NURTURE_BATCH_SIZE, NURTURE_LEASE_SECONDS,
    NURTURE_MAX_ATTEMPTS and NURTURE_POLL_INTERVAL (see .env.example).
    """
    from nurture.worker.runner import RunOptions, Worker

    settings = get_settings()
    logging.getLogger("nurture").setLevel(settings.log_level.upper())
    if not logging.getLogger().handlers or logging.getLogger().level > logging.INFO:
        logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # its per-run lines would drown the worker's
    logging.getLogger("alembic").setLevel(logging.WARNING)
    worker = Worker(settings)
    if once:
        report = worker.run_once()
        typer.echo(f"done: {report.sent} sent, {report.retried} to retry, {report.failed} failed, "
                   f"{report.suppressed} suppressed, {report.ended} enrollment(s) ended")
        return
    worker.run_forever(RunOptions(poll_interval=poll_interval or settings.poll_interval))


def register(app: typer.Typer) -> None:
    """Add ``nurture run``."""
    app.command("run")(run_command)
