"""``nurture leads``: import leads from CSV, add or update one, and show everything about one."""

from __future__ import annotations

import gc
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from nurture.cli.commands import get_settings
from nurture.errors import InvalidInput

leads_app = typer.Typer(
    help="Leads: import, add, stage, show (database from NURTURE_DATABASE_URL).",
    no_args_is_help=True,
)

PROGRESS_FROM_BYTES = 1_000_000  # smaller files import before a progress bar would be worth drawing


def _scoring_rules() -> Any:
    """The project's scoring rules, or None (with a word on stderr) when ``scoring.yaml`` has problems."""
    from nurture.definitions.scoring import load_scoring

    rules, problems = load_scoring(get_settings().campaigns_dir)
    if problems:
        typer.echo("scores not updated: scoring.yaml has problems (run `nurture check`); the nightly rescoring "
                   "of `nurture run` updates them once they are fixed", err=True)
        return None
    return rules


def _campaigns() -> Any:
    """The campaigns to enroll leads in as they are written, so a running worker sends at once; None (with a word on
    stderr when they have problems) when there are none to use: the worker's next sweep then considers every lead."""
    from nurture.definitions.loader import load_catalog

    settings = get_settings()
    if not settings.campaigns_dir.is_dir():
        return None
    catalog = load_catalog(settings.campaigns_dir, settings.templates_dir)
    if catalog.problems:
        typer.echo("not enrolled yet: the campaigns have problems (run `nurture check`); "
                   "`nurture run` enrolls them once they are fixed", err=True)
        return None
    return catalog


@leads_app.command("import")
def import_command(
    file: Path = typer.Argument(..., help="CSV file, UTF-8, with a header line naming the columns."),
    batch_size: int = typer.Option(5000, "--batch-size", min=1, help="Rows written per transaction."),
) -> None:
    """Create or update leads from a CSV file.

    Columns: email, first_name, last_name, company, title, industry, company_size, country, timezone, stage,
    tags (separated by ";"), owner; any other column is a custom field. Rows are matched by email; blank cells
    keep what the lead has. Bad rows are listed on stderr with their line numbers and the rest is imported.

    If several rows have one email, the last row counts: the earlier ones are skipped and listed on stderr. A
    stage starts a new lead there; an existing lead only moves forward (lead < mql < sql < opportunity <
    customer) and keeps recycled or disqualified; recycled and disqualified are never taken from a file. The
    summary counts the stage values not applied, by reason. Exits 1 when the file cannot be read or has no
    valid row.
    """
    from nurture.application.import_leads import import_leads_csv
    from nurture.cli.app import clock
    from nurture.storage.migrate import open_database

    engine = open_database(get_settings().database_url)
    rules = _scoring_rules()
    catalog = _campaigns()
    # what start-up made (modules, the engine, the campaigns) lives until the command ends: out of the collector's
    # sight, its collections while the import's batches come and go do not walk it again and again (~7% of the CPU)
    gc.freeze()
    try:
        size = file.stat().st_size if file.is_file() else 0
        if size >= PROGRESS_FROM_BYTES:
            with typer.progressbar(length=size, label=f"importing {file.name}", file=sys.stderr) as bar:
                done = [0]

                def advance(bytes_done: int, _total: int) -> None:
                    bar.update(bytes_done - done[0])
                    done[0] = bytes_done

                report = import_leads_csv(engine, file, clock=clock, on_progress=advance, batch_size=batch_size,
                                          rules=rules, catalog=catalog)
        else:
            report = import_leads_csv(engine, file, clock=clock, batch_size=batch_size, rules=rules, catalog=catalog)
    finally:
        engine.dispose()
    for line, problem in report.rejected:
        typer.echo(f"{file}:{line}: {problem}", err=True)
    for line, earlier in sorted(report.repeated.items()):
        typer.echo(f"{file}:{line}: {_lines(earlier)} {'repeats' if len(earlier) == 1 else 'repeat'} this row's "
                   f"email and {'was' if len(earlier) == 1 else 'were'} skipped: the last row of an email counts",
                   err=True)
    skipped = f", {report.skipped} skipped (repeated emails)" if report.repeated else ""
    typer.echo(f"{file}: {report.inserted} new, {report.updated} updated, {len(report.rejected)} rejected{skipped}")
    if report.enrolled:
        typer.echo(f"{report.enrolled} enrollment(s) started")
    if report.mql_lead_ids:
        typer.echo(f"{len(report.mql_lead_ids)} leads entered the mql stage")
    if report.stage_not_applied:
        count = sum(len(lines) for lines in report.stage_not_applied.values())
        typer.echo(f"{count} stage value(s) not applied, the leads keep their stage "
                   "(`nurture leads stage` sets one by hand):")
        for why, lines in sorted(report.stage_not_applied.items(), key=lambda item: (-len(item[1]), item[0])):
            typer.echo(f"  {len(lines)} {why} ({_lines(lines)})")
    if not report.imported:
        raise InvalidInput(f"no lead imported from {file}")


def _lines(lines: list[int], shown: int = 10) -> str:
    """``line 3``, ``lines 3 and 7``, ``lines 3, 7, 9 and 2 more``."""
    if len(lines) == 1:
        return f"line {lines[0]}"
    head = ", ".join(str(line) for line in lines[:shown])
    if len(lines) > shown:
        return f"lines {head} and {len(lines) - shown} more"
    return f"lines {head.rpartition(', ')[0]} and {lines[-1]}"


@leads_app.command("add")
def add_command(
    email: str = typer.Argument(..., help="The lead's email address (its identity)."),
    first_name: str | None = typer.Option(None, "--first-name", help="First name."),
    last_name: str | None = typer.Option(None, "--last-name", help="Last name."),
    company: str | None = typer.Option(None, "--company", help="Company name."),
    title: str | None = typer.Option(None, "--title", help="Job title."),
    industry: str | None = typer.Option(None, "--industry", help="Industry."),
    company_size: int | None = typer.Option(None, "--company-size", min=0, help="Number of employees."),
    country: str | None = typer.Option(None, "--country", help="ISO 3166-1 alpha-2 code, e.g. DE."),
    timezone: str | None = typer.Option(None, "--timezone", help="IANA name, e.g. Europe/Berlin."),
    stage: str | None = typer.Option(
        None, "--stage", help="lead, mql, sql, opportunity or customer: a new lead starts there, an existing one only "
                              "moves forward (else it is not applied, with the reason). recycled and disqualified "
                              "are set by rules and sales, or `nurture leads stage`."),
    owner: str | None = typer.Option(None, "--owner", help="Sales owner."),
    tags: list[str] | None = typer.Option(None, "--tag", help="A tag (repeat the option); replaces the tags."),
    fields: list[str] | None = typer.Option(None, "--field", help="A custom field as KEY=VALUE (repeatable)."),
) -> None:
    """Create a lead, or update the given fields of an existing one.

    A --stage that would move the lead backwards, or take it into or out of recycled or disqualified, is not
    applied: the other fields are saved and the reason is printed on stderr (exit code 0).
    """
    given = dict(
        first_name=first_name, last_name=last_name, company=company, title=title, industry=industry,
        company_size=company_size, country=country, timezone=timezone, stage=stage, owner=owner, tags=tags or None,
    )
    data: dict[str, Any] = {"email": email, **{key: value for key, value in given.items() if value is not None}}
    data["fields"] = dict(_key_value(item) for item in fields or [])
    from nurture.application.enroll import enroll_in_transaction
    from nurture.application.lead_input import upsert_lead
    from nurture.cli.app import read_clock
    from nurture.storage.database import session
    from nurture.storage.entry_reads import forget_audiences
    from nurture.storage.migrate import open_database

    engine = open_database(get_settings().database_url)
    catalog = _campaigns()
    now = read_clock()
    try:
        with session(engine) as db:
            written = upsert_lead(db, data, actor="cli", now=now)
            lead = written.lead
            assert lead.id is not None  # flushed by upsert_lead
            # enrolled with the change, in its transaction (without campaigns, by the worker's next sweep)
            if catalog is not None:
                created = enroll_in_transaction(db.connection(), catalog, [lead.id], now)
            else:
                created = 0
                forget_audiences(db.connection())
        typer.echo(f"{'added' if written.created else 'updated'} lead {lead.email} (id {lead.id}, stage {lead.stage})")
        if written.stage_not_applied is not None:
            typer.echo(f"stage not applied: {written.stage_not_applied.message} (to set it anyway: "
                       f"nurture leads stage {lead.email} {written.stage_not_applied.given} --reason ...)", err=True)
        if created:
            typer.echo(f"{created} enrollment(s) started")
    finally:
        engine.dispose()


@leads_app.command("stage")
def stage_command(
    email: str = typer.Argument(..., help="The lead's email address."),
    stage: str = typer.Argument(..., help="lead, mql, sql, opportunity, customer, recycled or disqualified."),
    reason: str = typer.Option(..., "--reason", help="Why (required): kept in the lead's stage history."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Set a lead's stage by hand, whatever it is now (an admin's override, recorded as actor admin).

    The one way to move a lead backwards or into or out of recycled and disqualified, which imports and the API
    never do. It counts as a stage change: campaigns whose exit stages list the new stage end, and the lead enters
    the campaigns it now matches (entry stages, filters, re-entry policy). Logged with the lead's id only.
    """
    from nurture.application.override_stage import clean_override, override_stage
    from nurture.cli.app import read_clock
    from nurture.definitions.loader import Catalog, load_catalog
    from nurture.storage.migrate import open_database

    clean_override(stage, reason)  # a bad stage or reason is refused before the database is opened
    settings = get_settings()
    # Templates are not needed to follow a stage change: a template being edited must not stop an override.
    catalog = (load_catalog(settings.campaigns_dir).raise_for_problems() if settings.campaigns_dir.is_dir()
               else Catalog())
    engine = open_database(settings.database_url)
    try:
        result = override_stage(engine, catalog, email=email, stage=stage, reason=reason, now=read_clock())
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps({
            "email": result.email, "lead_id": result.lead_id, "from_stage": result.from_stage, "stage": result.stage,
            "reason": result.reason, "changed": result.changed, "exited": result.exited, "enrolled": result.enrolled,
        }, indent=2, ensure_ascii=False))
        return
    if not result.changed:
        typer.echo(f"{result.email} is at stage {result.stage} already: nothing changed")
        return
    typer.echo(f"{result.email} (id {result.lead_id}): stage {result.from_stage} -> {result.stage}, "
               f"set by admin: {result.reason}")
    if result.exited:
        typer.echo(f"{result.exited} enrollment(s) ended (stage:{result.stage})")
    if result.enrolled:
        typer.echo(f"entered {result.enrolled} campaign(s)")


def _key_value(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise InvalidInput(f"--field takes KEY=VALUE, got {item!r}")
    return key.strip(), value


@leads_app.command("show")
def show_command(
    email: str = typer.Argument(..., help="The lead's email address."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Show a lead: fields, stage, score with the events and fit rules behind it, enrollments, deliveries, recent
    events and stage history."""
    from nurture.application.rescore import score_breakdown
    from nurture.application.variant_decisions import winners_of_lead
    from nurture.cli.app import read_clock
    from nurture.definitions.scoring import load_scoring
    from nurture.storage.database import session
    from nurture.storage.leads import lead_summary
    from nurture.storage.migrate import open_database

    settings = get_settings()
    engine = open_database(settings.database_url)
    try:
        with session(engine, read_only=True) as db:
            summary = lead_summary(db, email)
        summary["ab_winners"] = winners_of_lead(engine, summary)
        rules, problems = load_scoring(settings.campaigns_dir)
        if not problems:
            summary["score"] = score_breakdown(engine, rules, email, read_clock()).to_json()
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    typer.echo(_render_summary(summary))


def _render_summary(summary: dict[str, Any]) -> str:
    lead = summary["lead"]
    out = [f"{lead['email']} (id {lead['id']})"]
    for key, value in lead.items():
        if key not in ("email", "id") and value not in (None, [], {}):
            out.append(f"  {key:<17} {_cell(value, key)}")
    score = summary.get("score")
    if score is not None:
        out.append("")
        out.append(f"Score: {score['total']:g} = behaviour {score['behaviour']:g} + fit {score['fit']:g}")
        for item in score["items"]:
            detail = f" ({item['count']} event(s), {item['raw']:g} before decay)" if item["source"] == "behaviour" else ""
            out.append(f"  {item['points']:>+8g}  {item['source']:<9} {item['label']}{detail}")
    sections = [
        ("Enrollments", summary["enrollments"], ["campaign_id", "status", "held_out", "step_id", "next_due_at",
                                                 "end_reason"]),
        ("Deliveries", summary["deliveries"], ["campaign_id", "step_key", "variant", "status", "attempts", "sent_at",
                                               "error"]),
        ("Recent events", summary["events"], ["occurred_at", "type", "points", "campaign_id", "step_key"]),
        ("Stage history", summary["stage_history"], ["at", "from_stage", "to_stage", "actor", "reason"]),
    ]
    if summary.get("ab_winners"):
        sections.append(("A/B winners", summary["ab_winners"],
                         ["campaign_id", "step_id", "winner", "decided_at", "received", "given_the_winner"]))
    for title, rows, columns in sections:
        out.append("")
        out.append(f"{title}:" if rows else f"{title}: none")
        if rows:
            out.extend("  " + line for line in _table(rows, columns))
    return "\n".join(out)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    cells = [[_cell(row[c], c) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return lines


def _cell(value: Any, key: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key.endswith("at") and isinstance(value, str):  # ISO timestamps from the summary, to the second
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def register(app: typer.Typer) -> None:
    """Add ``nurture leads`` to the command line."""
    app.add_typer(leads_app, name="leads")
