"""``nurture report``: the funnel, money, velocity and trends, the sales side and every step, for a period."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from enum import StrEnum
from typing import Any

import typer

from nurture.cli.commands import get_settings


class Format(StrEnum):
    """How the report is printed."""

    table = "table"
    json = "json"
    csv = "csv"


def _print_table(table: Any) -> None:
    from nurture.core.metrics.tables import format_value

    typer.echo(f"  {table.title}" + (f"  ({table.note})" if table.note else ""))
    if not table.rows:
        typer.echo("    (none)")
        return
    cells = [[format_value(row.get(c.key), c.kind) for c in table.columns] for row in table.rows]
    widths = [max(len(c.label), *(len(line[i]) for line in cells)) for i, c in enumerate(table.columns)]
    texts = {i for i, c in enumerate(table.columns) if c.kind == "text"}

    def line(values: list[str]) -> str:
        return "    " + "  ".join(v.ljust(w) if i in texts else v.rjust(w)
                                  for i, (v, w) in enumerate(zip(values, widths, strict=True))).rstrip()

    typer.echo(line([c.label for c in table.columns]))
    for values in cells:
        typer.echo(line(values))


def _print(report: Any) -> None:
    from nurture.core.metrics.tables import format_value

    window = report.window
    typer.echo(f"Report {window.since:%Y-%m-%d %H:%M} .. {window.until:%Y-%m-%d %H:%M} UTC"
               + (f", nurture campaign {window.campaign}" if window.campaign else ""))
    for section in report.sections:
        typer.echo(f"\n{section.title}")
        lines = getattr(section, "lines", None)
        summary = getattr(section, "summary", None)
        if lines is not None:  # a section that reads best as its own lines (A/B tests, holdouts)
            for text in lines():
                typer.echo(f"  {text}")
        elif summary is not None:
            for item in summary().items:
                note = f"   ({item.note})" if item.note else ""
                typer.echo(f"  {item.label:24} {format_value(item.value, item.kind):>12}{note}")
        error = getattr(section, "error", None)
        if error:
            typer.echo(f"  error: {error}")
        for table in section.tables() if lines is None else ():
            if table.key == "figures":
                continue  # the summary above shows them
            _print_table(table)
        typer.echo("  Definitions:")
        for definition in section.definitions():
            source = f" (source: {definition.source})" if definition.source else ""
            typer.echo(f"    {definition.term}: {definition.meaning}{source}")


def report_command(
    days: int = typer.Option(30, "--days", min=1, help="The period: the last N days (unless --since)."),
    since: str | None = typer.Option(None, "--since", help="Start of the period, ISO 8601 (2026-03-01 or "
                                                           "2026-03-01T00:00Z; overrides --days)."),
    until: str | None = typer.Option(None, "--until", help="End of the period, excluded, ISO 8601 (default: now)."),
    campaign: str | None = typer.Option(None, "--campaign", help="Only this nurture campaign: its steps, A/B tests "
                                                                 "and holdout, and the leads ever enrolled in it."),
    output: Format = typer.Option(Format.table, "--format", help="table (for people), json, or csv (long: section, "
                                                                 "table, period, item, metric, value)."),
    as_json: bool = typer.Option(False, "--json", help="Same as --format json."),
) -> None:
    """Funnel (MQL→SQL conversion, acceptance, time to SQL), money (spend, cost per lead/MQL/SQL, CAC by source and
    month), velocity and trends (lead velocity rate, weekly series, time-to-SQL distribution), the sales side (SQLs
    waiting per owner against the SLA, rejection reasons, acceptance by owner and rule) and every step (emails and A/B
    variants, branch and wait-for outcomes, exits), each A/B test's verdict and each holdout's lift. Definitions are
    printed beside the numbers. Database from NURTURE_DATABASE_URL; campaigns, sales.yaml and spend.yaml from
    NURTURE_CAMPAIGNS_DIR. Exits 1 when spend in the period mixes currencies."""
    from nurture.application.report import build_report
    from nurture.cli.app import read_clock
    from nurture.core.times import parse_time
    from nurture.definitions.loader import load_catalog
    from nurture.definitions.sales import load_sales
    from nurture.definitions.spend import load_spend
    from nurture.errors import DefinitionError
    from nurture.storage.migrate import open_database

    settings = get_settings()
    now = read_clock()
    end = parse_time(until) if until else now
    start = parse_time(since) if since else end - timedelta(days=days)
    spend, problems = load_spend(settings.campaigns_dir)
    if problems:
        raise DefinitionError(problems)
    sales, sales_problems = load_sales(settings.campaigns_dir)
    if sales_problems:
        typer.echo(f"warning: {settings.campaigns_dir}/sales.yaml has problems (nurture check): no SLA or reject "
                   "labels in this report", err=True)
    catalog = load_catalog(settings.campaigns_dir)  # templates play no part in the figures
    if catalog.problems and settings.campaigns_dir.is_dir():
        typer.echo("the campaigns have problems (run `nurture check`): A/B tests are measured on clicks", err=True)
    engine = open_database(settings.database_url)
    try:
        report = build_report(engine, since=start, until=end, now=now, catalog=catalog, sales=sales, spend=spend,
                              campaign=campaign)
    finally:
        engine.dispose()
    chosen = Format.json if as_json else output
    if chosen is Format.json:
        typer.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    elif chosen is Format.csv:
        sys.stdout.write(report.to_csv())
    else:
        _print(report)
    money_error = report.section("money").error
    if money_error:
        typer.echo(f"error: {money_error}", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``nurture report``."""
    app.command("report")(report_command)
