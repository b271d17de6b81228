"""``nurture plan`` and ``nurture campaigns history``: what an edit of the definitions would change for live leads,
and the versions the worker ran."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import typer

from nurture.cli.commands import get_settings
from nurture.errors import InvalidInput

CAMPAIGNS_HELP = "Campaigns folder (env NURTURE_CAMPAIGNS_DIR, default: campaigns)."
TEMPLATES_HELP = "Templates folder (env NURTURE_TEMPLATES_DIR, default: templates)."

campaigns_app = typer.Typer(help="Campaign versions: history (database from NURTURE_DATABASE_URL).",
                            no_args_is_help=True)


def plan_command(
    campaigns: Path | None = typer.Option(None, "--campaigns", help=CAMPAIGNS_HELP),
    templates: Path | None = typer.Option(None, "--templates", help=TEMPLATES_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON (for CI)."),
    replay_period: str | None = typer.Option(
        None, "--replay", metavar="PERIOD",
        help="Also replay the enrollments of this last period (a duration such as 30d, 2w or 36h) under the versions "
             "in force and the files on disk: per step, the emails each would have sent. Does not change the exit code.",
    ),
) -> None:
    """Compare the definitions on disk with the versions the database runs, and count what each change does to live
    leads: the step-level diff of every changed campaign, where the leads at removed steps go, changed waits and
    subjects, pauses, who will be enrolled, and which project files changed; for an edited scoring.yaml or
    sales.yaml, how many leads change score band, become MQL, would be promoted or disqualified. Reads the database,
    never writes it.

    Exit code 0 when no live lead is concerned, 2 when some are (so a pipeline can require a review), 1 when a
    definition has problems (each printed as path:line: message) or an option is wrong. Database from
    NURTURE_DATABASE_URL.
    """
    from nurture.application.plan import plan
    from nurture.cli.app import read_clock
    from nurture.definitions.loader import load_catalog
    from nurture.definitions.sales import validate_sales
    from nurture.definitions.scoring import validate_scoring
    from nurture.definitions.sources import catalog_sources
    from nurture.storage.migrate import open_database

    settings = get_settings()
    period = replay_duration(replay_period) if replay_period is not None else None
    campaigns_dir = campaigns or settings.campaigns_dir
    catalog = load_catalog(campaigns_dir, templates or settings.templates_dir)
    sources, problems = catalog_sources(catalog, campaigns_dir)
    problems = [*catalog.problems, *problems]
    for source in sources:
        if source.kind in ("scoring", "sales"):
            validate = validate_scoring if source.kind == "scoring" else validate_sales
            problems += validate(source.document())[1]
    if problems:
        for problem in sorted(problems):
            typer.echo(str(problem))
        typer.echo(f"{len(problems)} problem(s) found: nothing to plan", err=True)
        raise typer.Exit(1)
    engine = open_database(settings.database_url)
    try:
        now = read_clock()
        report = plan(engine, catalog, sources, now, replay_since=now - period if period is not None else None,
                      default_tz=settings.default_timezone)
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        for line in report.lines():
            typer.echo(line)
    if report.live:
        raise typer.Exit(2)


def replay_duration(text: str) -> timedelta:
    """The period of ``--replay``: a duration longer than 0s (InvalidInput, exit 1, otherwise)."""
    from nurture.definitions.durations import parse_duration

    try:
        duration = parse_duration(text)
    except ValueError as exc:
        raise InvalidInput(f"--replay: {exc}") from None
    if not duration:
        raise InvalidInput("--replay must be longer than 0s, such as 30d")
    return duration.as_timedelta()


@campaigns_app.command("history")
def history_command(
    campaign: str = typer.Argument(..., help="Campaign id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The versions of a campaign the worker ran, oldest first: when each came into force and until when, the
    enrollments begun and deliveries made under it, the enrollments on it now, and what applying it did."""
    from nurture.application.history import campaign_history, run_to_json
    from nurture.storage.migrate import open_database

    engine = open_database(get_settings().database_url)
    try:
        runs = campaign_history(engine, campaign)
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps([run_to_json(run) for run in runs], indent=2))
        return
    typer.echo(f"campaign {campaign}: {len(runs)} version(s)")
    typer.echo(f"  {'version':16}  {'in force from':17}  {'until':17}  {'enrolled':>8}  {'deliveries':>10}  "
               f"{'active':>6}")
    for run in runs:
        until = f"{run.ended_at:%Y-%m-%d %H:%MZ}" if run.ended_at else "(in force)"
        typer.echo(f"  {run.content_hash:16}  {run.loaded_at:%Y-%m-%d %H:%MZ}  {until:17}  {run.entered:>8}  "
                   f"{run.deliveries:>10}  {run.active if run.ended_at is None else '-':>6}")
        for effect in (run.summary or {}).get("effects", []):
            typer.echo(f"      applied: {effect['text']}")
        if not run.has_text:
            typer.echo("      (recorded before texts were kept)")


def register(app: typer.Typer) -> None:
    """Add ``nurture plan`` and ``nurture campaigns``."""
    app.command("plan")(plan_command)
    app.add_typer(campaigns_app, name="campaigns")
