"""``nurture replay`` and ``nurture scoring impact``: what an edit of the definitions would do to live leads, read
from the database before the edit goes live. The old version is another folder (a checkout of the previous commit,
say); the new one is the campaigns folder. Both read, never write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from nurture.cli.commands import get_settings
from nurture.errors import DefinitionError, InvalidInput

OLD_HELP = "The previous version's campaigns folder (e.g. a git checkout of the last release)."
NEW_HELP = "The new version's campaigns folder (env NURTURE_CAMPAIGNS_DIR, default: campaigns)."

scoring_app = typer.Typer(
    help="Scoring and sales rules against live leads (database from NURTURE_DATABASE_URL).",
    no_args_is_help=True,
)


def _catalog(folder: Path) -> Any:
    from nurture.definitions.loader import load_catalog

    return load_catalog(folder).raise_for_problems()  # templates are not needed to decide


def _period(text: str) -> Any:
    from nurture.definitions.durations import parse_duration

    try:
        duration = parse_duration(text)
    except ValueError as exc:
        raise InvalidInput(f"--since: {exc}") from None
    if not duration:
        raise InvalidInput("--since must be longer than 0s, such as 30d")
    return duration.as_timedelta()


def replay_command(
    old_campaigns: Path = typer.Option(..., "--old-campaigns", help=OLD_HELP),
    campaigns: Path | None = typer.Option(None, "--campaigns", help=NEW_HELP),
    since: str = typer.Option("30d", "--since", help="How far back: a duration such as 30d, 2w or 36h."),
    campaign: list[str] | None = typer.Option(None, "--campaign", help="Only this campaign id (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Re-run the last days' real enrollments, with their recorded events, under the old and the new campaigns.

    Prints per campaign and step how many emails each version would have sent (beside the recorded ones), which
    would have gone earlier, later or not at all, and where the leads would now stand. Reads the database
    (NURTURE_DATABASE_URL), never writes it.
    """
    from nurture.application.replay import replay
    from nurture.cli.app import read_clock
    from nurture.storage.migrate import open_database

    settings = get_settings()
    period = _period(since)
    old = _catalog(old_campaigns)
    new = _catalog(campaigns or settings.campaigns_dir)
    for campaign_id in campaign or []:
        if campaign_id not in old.campaigns and campaign_id not in new.campaigns:
            new.campaign(campaign_id)  # InvalidInput naming the known ids
    now = read_clock()
    engine = open_database(settings.database_url)
    try:
        report = replay(engine, old, new, since=now - period, now=now, default_tz=settings.default_timezone,
                        campaign_ids=campaign or None)
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
        return
    for line in report.lines():
        typer.echo(line)


def _rules(folder: Path) -> tuple[Any, Any]:
    from nurture.definitions.sales import load_sales
    from nurture.definitions.scoring import load_scoring

    scoring, problems = load_scoring(folder)
    sales, sales_problems = load_sales(folder)
    if problems or sales_problems:
        raise DefinitionError([*problems, *sales_problems])
    return scoring, sales


@scoring_app.command("impact")
def impact_command(
    old_campaigns: Path = typer.Option(..., "--old-campaigns", help=OLD_HELP),
    campaigns: Path | None = typer.Option(None, "--campaigns", help=NEW_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Compare every lead under the old and the new scoring.yaml and sales.yaml: how many change score band, become
    MQL, would be promoted to SQL or disqualified, with a few lead ids each. Reads the database, never writes it."""
    from nurture.application.definition_impact import scoring_impact
    from nurture.cli.app import read_clock
    from nurture.storage.migrate import open_database

    settings = get_settings()
    new_folder = campaigns or settings.campaigns_dir
    for folder in (old_campaigns, new_folder):
        if not folder.is_dir():
            raise InvalidInput(f"{folder}: campaigns folder not found")
    old_rules, old_sales = _rules(old_campaigns)
    new_rules, new_sales = _rules(new_folder)
    engine = open_database(settings.database_url)
    try:
        impact = scoring_impact(engine, old_rules, new_rules, old_sales, new_sales, now=read_clock())
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(impact.to_json(), indent=2))
        return
    for line in impact.lines():
        typer.echo(line)


def register(app: typer.Typer) -> None:
    """Add ``nurture replay`` and ``nurture scoring impact``."""
    app.command("replay")(replay_command)
    app.add_typer(scoring_app, name="scoring")
