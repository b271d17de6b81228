"""The ``ab_tests`` and ``holdouts`` sections of ``nurture report``: built by the application, printed here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import typer

from nurture.settings import get_settings


def _catalog() -> Any:
    """The campaigns (for each step's goal and each campaign's holdout), or None when they cannot be loaded: the
    sections then fall back to clicks and to the holdouts the database shows."""
    from nurture.definitions.loader import load_catalog

    settings = get_settings()
    if not settings.campaigns_dir.is_dir():
        return None
    catalog = load_catalog(settings.campaigns_dir)  # templates play no part in the figures
    if catalog.problems:
        typer.echo("the campaigns have problems (run `nurture check`): A/B tests are measured on clicks", err=True)
        return None
    return catalog


def experiment_sections(engine: Any, since: datetime, until: datetime) -> dict[str, list[dict[str, Any]]]:
    """``{"ab_tests": [...], "holdouts": [...]}`` for the period [since, until)."""
    from nurture.application.holdout_lift import holdouts_section
    from nurture.application.variant_decisions import ab_tests_section

    catalog = _catalog()
    return {
        "ab_tests": ab_tests_section(engine, catalog, since=since, until=until),
        "holdouts": holdouts_section(engine, catalog, since=since, until=until),
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _hours(value: float | None) -> str:
    return "-" if value is None else f"{value:g} h"


def print_experiments(sections: dict[str, list[dict[str, Any]]]) -> None:
    """The sections as tables, each test with its verdict in words."""
    typer.echo("\nA/B tests")
    if not sections["ab_tests"]:
        typer.echo("  none in this period")
    for test in sections["ab_tests"]:
        typer.echo(f"  {test['campaign']} / {test['step']}: goal {test['goal']}, "
                   f"{test['confidence'] * 100:g}% confidence, at least {test['min_sends']} sends per variant")
        typer.echo(f"    {'variant':10} {'sends':>7} {'conv.':>6} {'rate':>7}")
        for variant in test["variants"]:
            typer.echo(f"    {variant['variant']:10} {variant['sends']:>7} {variant['conversions']:>6} "
                       f"{_pct(variant['rate']):>7}")
        for c in test["comparisons"]:
            typer.echo(f"    {c['variant']} - {c['against']}: {c['difference'] * 100:+.1f} points "
                       f"({c['low'] * 100:+.1f} to {c['high'] * 100:+.1f}), p = {c['p_value']:.3f}, "
                       f"P({c['variant']} better) = {c['probability_to_beat'] * 100:.1f}%")
        typer.echo(f"    verdict: {test['verdict']}")
        winner = test["winner"]
        if winner is not None:
            typer.echo(f"    winner recorded: {winner['variant']} at {winner['decided_at']}, sent to every later lead "
                       f"({test['sent_after_call']} since)")
    typer.echo("\nHoldouts")
    if not sections["holdouts"]:
        typer.echo("  none in this period")
    for h in sections["holdouts"]:
        share = "" if h["holdout"] is None else f" (holdout {h['holdout'] * 100:g}%)"
        typer.echo(f"  {h['campaign']}{share}")
        typer.echo(f"    {'group':10} {'leads':>7} {'SQLs':>6} {'MQL→SQL':>8} {'median to SQL':>14}")
        for name, group in (("sent", h["sent"]), ("held out", h["held_out"])):
            typer.echo(f"    {name:10} {group['leads']:>7} {group['sql']:>6} {_pct(group['rate']):>8} "
                       f"{_hours(group['median_hours_to_sql']):>14}")
        typer.echo(f"    verdict: {h['verdict']}")
