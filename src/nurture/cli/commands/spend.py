"""``nurture spend import FILE``: marketing spend from a CSV, for cost per lead and CAC in ``nurture report``."""

from __future__ import annotations

from pathlib import Path

import typer

spend_app = typer.Typer(help="Marketing spend (database from NURTURE_DATABASE_URL).", no_args_is_help=True)


@spend_app.command("import")
def import_command(
    file: Path = typer.Argument(..., help="CSV with the columns period, source (or channel), campaign (optional), "
                                          "amount, currency."),
) -> None:
    """Import spend: one row per period (2026-03-05, 2026-W10, 2026-03, 2026-Q1 or 2026-03-01..2026-03-15), source,
    optional campaign, amount (1200.50) and currency (EUR). A file with a bad row writes nothing and lists every
    problem as file:line; importing a period, source and campaign again replaces its amount. Where
    NURTURE_CAMPAIGNS_DIR/spend.yaml gives the same period, source and campaign, the import wins."""
    from nurture.application.spend import import_spend
    from nurture.cli.app import read_clock
    from nurture.cli.commands import get_settings
    from nurture.storage.migrate import open_database

    engine = open_database(get_settings().database_url)
    try:
        result = import_spend(engine, file, read_clock())
    finally:
        engine.dispose()
    if not result.rows:
        typer.echo(f"{file}: no spend rows")
        return
    typer.echo(f"imported {result.rows} spend rows from {file}: {result.first_day} .. {result.last_day}, "
               f"{', '.join(result.currencies)}")


def register(app: typer.Typer) -> None:
    """Add ``nurture spend``."""
    app.add_typer(spend_app, name="spend")
