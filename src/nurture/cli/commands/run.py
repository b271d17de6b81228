"""``nurture run``: the long-running service (worker + HTTP intake), ``--once`` to process what is due and exit."""

from __future__ import annotations

import logging

import typer

from nurture.settings import get_settings


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    # APScheduler's per-run lines, and its "skipped: maximum number of running instances" when intake wakes a job that
    # is already running (expected: the running one takes the new work), would drown the worker's own log.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs full URLs, and a webhook URL can be a secret


def run_command(
    once: bool = typer.Option(False, "--once", help="Process everything due now, then exit (tests, cron-style deploys)."),
    http: bool = typer.Option(True, "--http/--no-http", help="Serve the HTTP intake in the same process."),
    poll_interval: float = typer.Option(
        None, "--poll-interval", help="Seconds between dispatcher looks when idle (env NURTURE_POLL_INTERVAL, default 0.5)."
    ),
) -> None:
    """Run nurture: enroll leads, send due steps, retry failures, and serve the HTTP intake, until SIGTERM/SIGINT.

    Reads NURTURE_DATABASE_URL, NURTURE_MAIL_URL, NURTURE_FROM, NURTURE_BASE_URL, NURTURE_HTTP_HOST,
    NURTURE_HTTP_PORT, NURTURE_API_KEY, NURTURE_CAMPAIGNS_DIR, NURTURE_TEMPLATES_DIR, NURTURE_DEFAULT_TIMEZONE and
    the worker tuning variables (see .env.example).
    """
    from nurture.worker.runner import Worker, serve

    settings = get_settings()
    if poll_interval:
        settings = settings.model_copy(update={"poll_interval": poll_interval})
    _logging(settings.log_level)
    worker = Worker(settings)
    if once:
        report = worker.run_once()
        typer.echo(f"done: {report.sent} sent, {report.retried} to retry, {report.failed} failed, "
                   f"{report.suppressed} suppressed, {report.ended} enrollment(s) ended")
        return
    if http:
        serve(settings, worker=worker)
    else:
        worker.run_forever()


def serve_command() -> None:
    """Serve only the HTTP intake (events, leads, tracking, unsubscribe), for deploys that run workers apart.

    Reads NURTURE_HTTP_HOST, NURTURE_HTTP_PORT, NURTURE_API_KEY, NURTURE_DATABASE_URL and the definitions folders.
    """
    from nurture.worker.runner import serve

    settings = get_settings()
    _logging(settings.log_level)
    serve(settings, worker=None)


def register(app: typer.Typer) -> None:
    """Add ``nurture run`` and ``nurture serve``."""
    app.command("run")(run_command)
    app.command("serve")(serve_command)
