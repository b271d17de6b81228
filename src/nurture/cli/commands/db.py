"""``nurture db``: create the database schema or bring it up to date, and show where it stands."""

from __future__ import annotations

import typer

from nurture.cli.commands import get_settings

db_app = typer.Typer(
    help="The database schema (database from NURTURE_DATABASE_URL, default sqlite:///nurture.db).",
    no_args_is_help=True,
)


@db_app.command("upgrade")
def upgrade_command(
    revision: str = typer.Argument("head", help="Revision to upgrade to; the newest by default."),
) -> None:
    """Create nurture's tables, or migrate them to this version of nurture (safe to run again)."""
    url = get_settings().database_url
    from nurture.storage.database import display_url, make_engine
    from nurture.storage.migrate import upgrade

    engine = make_engine(url)
    try:
        result = upgrade(engine, revision)
    finally:
        engine.dispose()
    where = display_url(url)
    if not result.changed:
        typer.echo(f"{where}: already at {result.after}, nothing to do")
        return
    for applied in result.applied:
        typer.echo(f"applied {applied}")
    typer.echo(f"{where}: upgraded from {result.before or 'an empty database'} to {result.after}")


@db_app.command("current")
def current_command(
    check: bool = typer.Option(False, "--check", help="Exit 1 unless the schema is up to date."),
) -> None:
    """Show the schema revision of the database and the one this nurture needs."""
    url = get_settings().database_url
    from nurture.storage.database import display_url, make_engine
    from nurture.storage.migrate import current_revision, head_revision

    engine = make_engine(url)
    try:
        current = current_revision(engine)
    finally:
        engine.dispose()
    head = head_revision()
    if current == head:
        typer.echo(f"{display_url(url)}: at {current} (up to date)")
        return
    typer.echo(f"{display_url(url)}: at {current or 'nothing (no schema)'}, this nurture needs {head}: "
               "run `nurture db upgrade`")
    if check:
        raise typer.Exit(1)


@db_app.command("rebuild-rollups")
def rebuild_rollups_command() -> None:
    """Recount the report's daily rollups and each A/B step's first email per lead from the rows (they are kept up to
    date as rows are written; this repairs them after rows were changed by hand)."""
    url = get_settings().database_url
    from nurture.storage.database import display_url, transaction
    from nurture.storage.migrate import open_database
    from nurture.storage.rollups import rebuild

    engine = open_database(url)
    try:
        with transaction(engine) as conn:
            counts = rebuild(conn)
    finally:
        engine.dispose()
    held = ", ".join(f"{name} {rows:,}" for name, rows in counts.items())
    typer.echo(f"{display_url(url)}: rollups rebuilt ({held} rows)")


def register(app: typer.Typer) -> None:
    """Add ``nurture db`` to the command line."""
    app.add_typer(db_app, name="db")
