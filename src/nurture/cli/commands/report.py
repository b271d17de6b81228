"""``nurture report``: funnel, campaign and step metrics for a period."""

from __future__ import annotations

import json
from datetime import timedelta

import typer

from nurture.settings import get_settings


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def report_command(
    days: int = typer.Option(30, "--days", min=1, help="The period: the last N days."),
    since: str | None = typer.Option(None, "--since", help="Start of the period, ISO 8601 (overrides --days)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Funnel metrics (MQL→SQL conversion, SQL acceptance, time to SQL, lead velocity), per-campaign and
    per-step email performance (A/B variants side by side), each A/B test's verdict and each holdout's lift.
    Database from NURTURE_DATABASE_URL, campaigns from NURTURE_CAMPAIGNS_DIR."""
    from nurture.cli.app import read_clock
    from nurture.cli.commands.report_experiments import experiment_sections, print_experiments
    from nurture.core.simulate import parse_time
    from nurture.storage.migrate import open_database
    from nurture.storage.reports import build_report

    until = read_clock()
    start = parse_time(since) if since else until - timedelta(days=days)
    engine = open_database(get_settings().database_url)
    report = build_report(engine, since=start, until=until)
    experiments = experiment_sections(engine, start, until)
    if as_json:
        typer.echo(json.dumps({**report.to_json(), **experiments}, indent=2))
        return
    f = report.funnel
    typer.echo(f"Funnel {start:%Y-%m-%d} .. {until:%Y-%m-%d}")
    typer.echo(f"  new MQLs            {f.new_mql:>8}   ({f.mql_per_week:g}/week, "
               f"velocity {'-' if f.mql_velocity_change is None else f'{f.mql_velocity_change * 100:+.1f}%'})")
    typer.echo(f"  new SQLs            {f.new_sql:>8}   MQL→SQL {_pct(f.mql_to_sql_rate)}")
    typer.echo(f"  accepted / rejected {f.accepted:>4} / {f.rejected:<4} acceptance {_pct(f.sql_acceptance_rate)}")
    typer.echo(f"  median MQL→SQL      {'-' if f.median_hours_mql_to_sql is None else f'{f.median_hours_mql_to_sql:g} h'}")
    typer.echo(f"  new customers       {f.customers:>8}")
    typer.echo("\nCampaigns")
    typer.echo(f"  {'campaign':24} {'enrolled':>8} {'active':>7} {'done':>6} {'sent':>7} {'open':>7} {'click':>7}  exits")
    for c in report.campaigns:
        exits = ", ".join(f"{k} {v}" for k, v in sorted(c.exited.items())) or "-"
        typer.echo(f"  {c.campaign:24} {c.enrolled:>8} {c.active:>7} {c.completed:>6} {c.sent:>7} "
                   f"{_pct(c.open_rate):>7} {_pct(c.click_rate):>7}  {exits}")
    typer.echo("\nEmail steps")
    typer.echo(f"  {'campaign':24} {'step':20} {'variant':8} {'sent':>7} {'failed':>6} {'open':>7} {'click':>7}")
    for s in report.steps:
        typer.echo(f"  {s.campaign:24} {s.step:20} {s.variant or '-':8} {s.sent:>7} {s.failed:>6} "
                   f"{_pct(s.open_rate):>7} {_pct(s.click_rate):>7}")
    print_experiments(experiments)


def register(app: typer.Typer) -> None:
    """Add ``nurture report``."""
    app.command("report")(report_command)
