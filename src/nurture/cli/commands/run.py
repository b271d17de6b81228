"""``nurture run``: the long-running service (worker + HTTP intake), ``--once`` to process what is due and exit."""

from __future__ import annotations

import typer

from nurture.cli.commands import get_settings
from nurture.worker.processes import configure_logging


def run_command(
    once: bool = typer.Option(False, "--once", help="Process everything due now, then exit (tests, cron-style deploys)."),
    http: bool = typer.Option(True, "--http/--no-http", help="Serve the HTTP intake in the same process."),
    poll_interval: float = typer.Option(
        None, "--poll-interval", help="Seconds between looks for due work when idle (env NURTURE_POLL_INTERVAL, default 0.5)."
    ),
    processes: int = typer.Option(
        None, "--processes", min=1, max=64,
        help="Processes that render and send, to use more cores (env NURTURE_DISPATCH_PROCESSES, default 1; "
             "--once always uses one).",
    ),
) -> None:
    """Run nurture: enroll leads, send due steps, retry failures, and serve the HTTP intake, until SIGTERM/SIGINT.

    Reads NURTURE_DATABASE_URL, NURTURE_MAIL_URL, NURTURE_FROM, NURTURE_BASE_URL, NURTURE_HTTP_HOST,
    NURTURE_HTTP_PORT, NURTURE_API_KEY, NURTURE_CAMPAIGNS_DIR, NURTURE_TEMPLATES_DIR, NURTURE_DEFAULT_TIMEZONE and
    the worker tuning variables (see .env.example).
    """
    from nurture.cli.app import clock
    from nurture.worker.runner import Worker

    settings = get_settings()
    if poll_interval:
        settings = settings.model_copy(update={"poll_interval": poll_interval})
    if once:
        settings = settings.model_copy(update={"dispatch_processes": 1})
    elif processes:
        settings = settings.model_copy(update={"dispatch_processes": processes})
    configure_logging(settings.log_level)
    worker = Worker(settings, clock=clock)
    if once:
        report = worker.run_once()
        typer.echo(f"done: {report.sent} sent, {report.retried} to retry, {report.failed} failed, "
                   f"{report.suppressed} suppressed, {report.ended} enrollment(s) ended")
        return
    if http:
        from nurture.service import serve  # the HTTP stack only when it serves: --once and --no-http start faster

        serve(settings, worker=worker)
    else:
        worker.run_forever()


def serve_command() -> None:
    """Serve only the HTTP intake (events, leads, tracking, unsubscribe), for deploys that run workers apart.

    Reads NURTURE_HTTP_HOST, NURTURE_HTTP_PORT, NURTURE_API_KEY, NURTURE_DATABASE_URL and the definitions folders.
    """
    from nurture.service import serve

    settings = get_settings()
    configure_logging(settings.log_level)
    serve(settings, worker=None)


def register(app: typer.Typer) -> None:
    """Add ``nurture run`` and ``nurture serve``."""
    app.command("run")(run_command)
    app.command("serve")(serve_command)
