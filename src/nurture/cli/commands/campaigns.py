"""``nurture check``, ``schema``, ``preview`` and ``simulate``: the marketer's commands, no database needed."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from nurture.cli.commands import get_settings
from nurture.errors import DefinitionError, InvalidInput

# The use cases are imported by the commands that run them: ``nurture --help`` and the other commands do without
# the template engine and the definitions' models.

CAMPAIGNS_HELP = "Campaigns folder (env NURTURE_CAMPAIGNS_DIR, default: campaigns)."
TEMPLATES_HELP = "Templates folder (env NURTURE_TEMPLATES_DIR, default: templates)."


def _dirs(campaigns: Path | None, templates: Path | None) -> tuple[Path, Path]:
    settings = get_settings()
    return campaigns or settings.campaigns_dir, templates or settings.templates_dir


def check_command(
    paths: list[Path] | None = typer.Argument(None, help="Campaign files or folders (default: the campaigns folder)."),
    campaigns: Path | None = typer.Option(None, "--campaigns", help=CAMPAIGNS_HELP),
    templates: Path | None = typer.Option(None, "--templates", help=TEMPLATES_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print problems only."),
) -> None:
    """Validate campaigns, the policy and templates, and render every email against a sample lead.

    Prints each problem as path:line: message and exits 1 if there is any (fit for pre-commit hooks and CI).
    """
    from nurture.application.authoring import check
    from nurture.rendering import render_limits

    campaigns_dir, templates_dir = _dirs(campaigns, templates)
    report = check(campaigns_dir, templates_dir, files=list(paths) if paths else None,
                   limits=render_limits(get_settings()))
    for problem in report.problems:
        typer.echo(str(problem))
    if report.problems:
        typer.echo(f"{len(report.problems)} problem(s) found", err=True)
        raise typer.Exit(1)
    if not quiet:
        typer.echo(f"ok: {len(report.catalog.campaigns)} campaign(s), {report.emails} email(s) rendered, no problems")


SCHEMA_HELP = (
    "Print the JSON Schema of a campaign file, or of policy.yaml, for yaml-language-server and other editors.\n\n"
    "scoring.yaml and sales.yaml have no schema: nurture check validates them. A schema checks each file's shape; "
    "nurture check also checks what a schema cannot: unique step ids and goto targets, templates, timezone names, "
    "a window's end after its start, loops without a wait."
)


def schema_command(
    kind: str = typer.Argument("campaign", help="campaign (a campaign file) or policy (policy.yaml)."),
) -> None:
    """Print the JSON Schema of a campaign file or of policy.yaml (the command's help is SCHEMA_HELP)."""
    from nurture.definitions.schemas import FILES, file_schema

    if kind not in FILES:
        typer.echo(f"no schema for {kind!r}: use one of {', '.join(FILES)}", err=True)
        raise typer.Exit(2)
    typer.echo(json.dumps(file_schema(kind), indent=2))


WINNER_HELP = ("STEP=VARIANT, repeatable: take VARIANT as the recorded winner of the A/B step STEP (default: the "
               "winners recorded in the database at NURTURE_DATABASE_URL, if it exists).")


def _winners(campaign_id: str, given: list[str] | None) -> tuple[dict[str, str], str]:
    """The A/B winners of a campaign as the worker would use them: recorded in the database, or given with --winner."""
    from nurture.application.variant_decisions import winners_in_database

    if given:
        chosen = {}
        for item in given:
            step, sep, variant = item.partition("=")
            if not sep or not step.strip() or not variant.strip():
                raise InvalidInput(f"--winner takes STEP=VARIANT, got {item!r}")
            chosen[step.strip()] = variant.strip()
        return chosen, "A/B winners as given with --winner"
    recorded, note = winners_in_database(get_settings().database_url)
    return recorded.get(campaign_id, {}), note


def preview_command(
    campaign: str = typer.Argument(..., help="Campaign id."),
    step: str = typer.Argument(..., help="Step id (an email or content-stream step)."),
    lead: Path | None = typer.Option(None, "--lead", help="YAML/JSON file with the lead's fields (default: a sample lead)."),
    variant: str | None = typer.Option(None, "--variant", help="A/B variant id, or a content-stream piece id."),
    html_out: Path | None = typer.Option(None, "--html-out", help="Write the HTML part to this file."),
    show_html: bool = typer.Option(False, "--html", help="Print the HTML part too."),
    winner: list[str] | None = typer.Option(None, "--winner", help=WINNER_HELP),
    campaigns: Path | None = typer.Option(None, "--campaigns", help=CAMPAIGNS_HELP),
    templates: Path | None = typer.Option(None, "--templates", help=TEMPLATES_HELP),
) -> None:
    """Render one email of a campaign (subject, text and HTML) for a sample or given lead.

    An A/B step whose winner is recorded renders the winner, as the worker sends it to every later lead."""
    from nurture.application.authoring import load_lead_file, preview
    from nurture.definitions.loader import load_catalog
    from nurture.rendering import render_limits

    campaigns_dir, templates_dir = _dirs(campaigns, templates)
    catalog = load_catalog(campaigns_dir, templates_dir).raise_for_problems()
    winners, _note = _winners(campaign, winner)
    called = winners.get(step) if variant is None else None
    email = preview(catalog, templates_dir, campaign, step, load_lead_file(lead), variant=variant or called,
                    content_id=variant, limits=render_limits(get_settings()))
    typer.echo(f"Subject: {email.subject}\n")
    typer.echo(email.text.rstrip() + "\n")
    if html_out:
        html_out.write_text(email.html, encoding="utf-8")
        typer.echo(f"HTML part written to {html_out} ({len(email.html)} characters)")
    elif show_html:
        typer.echo(email.html)
    else:
        typer.echo(f"(HTML part: {len(email.html)} characters; --html to print it, --html-out FILE to save it)")
    if called is not None:
        typer.echo(f"(variant {called}: the recorded winner, which every later lead gets)")


def simulate_command(
    campaign: str = typer.Argument(..., help="Campaign id."),
    lead: Path = typer.Option(..., "--lead", help="YAML/JSON file with the lead's fields."),
    start: str = typer.Option(..., "--start", help="When the lead enters, ISO 8601 (UTC if no offset)."),
    days: float = typer.Option(30, "--days", min=0, max=3650, help="How many days to simulate."),
    event: list[str] | None = typer.Option(
        None, "--event",
        help="TYPE[:DETAIL]@ISO8601, repeatable: email_open:STEP@..., email_click:STEP@..., demo_request@..., "
        "content_download:CONTENT@..., stage:sql@..., unsubscribe@...",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the timeline as a JSON list."),
    winner: list[str] | None = typer.Option(None, "--winner", help=WINNER_HELP),
    held_out: bool | None = typer.Option(
        None, "--held-out/--sent",
        help="Simulate the lead as held out (sent nothing) or as sent to (default: as the worker decides, by a hash "
        "of the lead file's id, else its email, and the campaign's holdout share).",
    ),
    campaigns: Path | None = typer.Option(None, "--campaigns", help=CAMPAIGNS_HELP),
    templates: Path | None = typer.Option(None, "--templates", help=TEMPLATES_HELP),
) -> None:
    """Dry-run a campaign for one lead over time: what it would get and when (UTC and lead-local), and why it stops.

    No sending and no writes: the same engine as the worker, on a virtual clock, with the A/B winners recorded in the
    database (if there is one) or given with --winner.
    """
    from nurture.application.authoring import load_lead_file, preview_links
    from nurture.application.compose import render_action
    from nurture.core.engine import Action
    from nurture.core.facts import LeadView
    from nurture.core.holdout import held_out as in_holdout
    from nurture.core.simulate import parse_event, parse_time, simulate
    from nurture.definitions.loader import load_catalog
    from nurture.rendering import EmailRenderer, render_limits

    settings = get_settings()
    campaigns_dir, templates_dir = _dirs(campaigns, templates)
    catalog = load_catalog(campaigns_dir, templates_dir).raise_for_problems()
    chosen = catalog.campaign(campaign)
    lead_view = load_lead_file(lead)
    events = [parse_event(text, chosen.id) for text in event or []]
    renderer = EmailRenderer(templates_dir, render_limits(settings))
    links = preview_links()

    def subject(action: Action, who: LeadView) -> str:
        return render_action(renderer, chosen, action, who, links).subject

    winners, winners_note = _winners(chosen.id, winner)
    hold = in_holdout(lead_view.key, chosen.id, chosen.holdout) if held_out is None else held_out
    timeline = simulate(chosen, catalog.policy, lead_view, start=parse_time(start), days=days, events=events,
                        default_tz=settings.default_timezone, render_subject=subject, winners=winners, held_out=hold)
    if as_json:
        typer.echo(json.dumps([entry.to_json() for entry in timeline], indent=2))
        return
    typer.echo(f"{chosen.id} for {lead_view.email}, from {start} for {days:g} days")
    if hold:
        typer.echo(f"held out (holdout {(chosen.holdout or 0) * 100:g}%): the lead walks the campaign and is sent nothing")
    if winners:
        called = ", ".join(f"{step} -> {variant}" for step, variant in sorted(winners.items()))
        typer.echo(f"A/B winners: {called} ({winners_note})")
    for entry in timeline:
        when = f"{entry.at:%Y-%m-%d %H:%M}Z  {entry.local:%a %Y-%m-%d %H:%M %Z}"
        what = entry.kind
        if entry.kind == "email":
            tag = f" [{entry.variant}]" if entry.variant else (f" [{entry.content}]" if entry.content else "")
            what = f"email{tag}: {entry.subject}"
        detail = f"  ({entry.detail})" if entry.detail and entry.kind != "email" else ""
        typer.echo(f"{when:40}  {entry.step or '-':16}  {what}{detail}")


def register(app: typer.Typer) -> None:
    """Add the authoring commands."""
    app.command("check")(check_command)
    app.command("schema", help=SCHEMA_HELP)(schema_command)
    app.command("preview")(preview_command)
    app.command("simulate")(simulate_command)


__all__ = ["DefinitionError", "register"]
