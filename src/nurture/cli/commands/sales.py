"""``nurture sales``: accept or reject an SQL by email (as the API and the signed links do); list the reject reasons."""

from __future__ import annotations

import json
from typing import Any

import typer

from nurture.errors import DefinitionError

sales_app = typer.Typer(
    help="Sales' verdict on SQLs (rules in NURTURE_CAMPAIGNS_DIR/sales.yaml, database from NURTURE_DATABASE_URL).",
    no_args_is_help=True,
)


def _rules() -> tuple[Any, Any, Any]:
    """The catalog, scoring rules and sales rules from NURTURE_CAMPAIGNS_DIR; DefinitionError when any has problems."""
    from nurture.cli.commands import get_settings
    from nurture.definitions.loader import load_catalog
    from nurture.definitions.sales import load_sales
    from nurture.definitions.scoring import load_scoring

    settings = get_settings()
    # Templates are not needed to decide: a template being edited must not stop sales.
    catalog = load_catalog(settings.campaigns_dir).raise_for_problems()
    scoring, problems = load_scoring(settings.campaigns_dir)
    sales, sales_problems = load_sales(settings.campaigns_dir)
    if problems or sales_problems:
        raise DefinitionError([*problems, *sales_problems])
    return catalog, scoring, sales


def _decide(email: str, verdict: str, reason: str | None, note: str | None, as_json: bool) -> None:
    from nurture.application.sales_feedback import apply_feedback, feedback_outcome
    from nurture.cli.app import read_clock
    from nurture.cli.commands import get_settings
    from nurture.storage.migrate import open_database

    catalog, scoring, sales = _rules()
    feedback_outcome(sales, verdict, reason, note)  # a bad reason is refused before the database is opened
    settings = get_settings()
    engine = open_database(settings.database_url)
    try:
        result = apply_feedback(engine, catalog, scoring, sales, email=email, verdict=verdict, reason=reason,
                                note=note, actor="cli", now=read_clock(),
                                notify_crm=bool(settings.sales_webhook_url))
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    if result.already:
        typer.echo(f"already decided: {result.email} was {result.describe()} on "
                   f"{result.decided_at:%Y-%m-%d %H:%M} UTC; nothing changed")
        return
    typer.echo(f"{result.describe()} {result.email}: stage {result.from_stage} -> {result.stage}")
    if result.score_adjustment:
        typer.echo(f"score {result.score_before:g} -> {result.score:g} ({result.score_adjustment:+g} sales_feedback)")
    if result.set_fields:
        shown = ", ".join(f"{name}={json.dumps(value)}" for name, value in result.set_fields.items())
        typer.echo(f"fields: {shown}")
    if result.recycle_at is not None and result.recycle_at > result.decided_at:
        typer.echo(f"recycle campaigns pick it up from {result.recycle_at:%Y-%m-%d %H:%M} UTC")
    if result.enrolled:
        typer.echo(f"entered {result.enrolled} campaign(s)")


@sales_app.command("accept")
def accept_command(
    email: str = typer.Argument(..., help="The SQL's email."),
    note: str | None = typer.Option(None, "--note", help="A comment for the lead's history and the CRM."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Accept an SQL: it becomes an opportunity (stage history: actor sales, reason accepted)."""
    _decide(email, "accept", None, note, as_json)


@sales_app.command("reject")
def reject_command(
    email: str = typer.Argument(..., help="The SQL's email."),
    reason: str | None = typer.Option(
        None, "--reason", help="Why: a reject reason code from sales.yaml (`nurture sales reasons` lists them)."),
    note: str | None = typer.Option(None, "--note", help="A comment for the lead's history and the CRM."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Reject an SQL with a reason: it is recycled (back to nurture, maybe after a wait) or disqualified.

    What each reason does is configured in sales.yaml: the stage, the score change and the fields to set;
    rejection_reason is always set to the code, so recycle campaigns can select on it.
    """
    _decide(email, "reject", reason, note, as_json)


def _wait(duration: Any) -> str:
    """``90d`` rather than ``12w6d``: reasons' waits are written in days."""
    return f"{duration.days}d" if not duration.seconds else str(duration)


@sales_app.command("reasons")
def reasons_command(
    as_json: bool = typer.Option(False, "--json", help="Print the reasons as JSON."),
) -> None:
    """List the reject reasons configured in sales.yaml: code, stage, score change, wait and label."""
    from nurture.cli.commands import get_settings
    from nurture.definitions.sales import load_sales

    sales, problems = load_sales(get_settings().campaigns_dir)
    if problems:
        raise DefinitionError(problems)
    reasons = sales.feedback.reject_reasons
    if as_json:
        typer.echo(json.dumps([
            {"code": code, "label": r.label, "stage": r.stage, "score": r.score,
             "recycle_after": str(r.recycle_after) if r.recycle_after is not None else None, "set": r.set}
            for code, r in reasons.items()
        ], indent=2))
        return
    rows = [("CODE", "STAGE", "SCORE", "WAIT", "LABEL")]
    rows += [(code, r.stage, r.score if isinstance(r.score, str) else f"{r.score:+g}",
             _wait(r.recycle_after) if r.recycle_after else "", r.label or "")
            for code, r in reasons.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        typer.echo(("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4]).rstrip())


def register(app: typer.Typer) -> None:
    """Add ``nurture sales`` to the command line."""
    app.add_typer(sales_app, name="sales")
