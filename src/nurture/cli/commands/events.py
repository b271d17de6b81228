"""``nurture event``: record one engagement event by hand, exactly as the HTTP API would."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import typer

from nurture.errors import DefinitionError, InvalidInput


def parse_time(value: str) -> datetime:
    """An ISO 8601 time with its offset (``Z`` for UTC); InvalidInput otherwise."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(f"--at: {value!r} is not an ISO 8601 time such as 2024-05-01T09:30:00Z") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise InvalidInput(f"--at: {value!r} needs a time zone offset, such as 2024-05-01T09:30:00Z or +02:00")
    return parsed.astimezone(timezone.utc)


def parse_property(item: str) -> tuple[str, Any]:
    """``KEY=VALUE``; a value that reads as a JSON number, true, false or null is that, anything else is text."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise InvalidInput(f"--prop takes KEY=VALUE, got {item!r}")
    value: Any = raw
    try:
        decoded = json.loads(raw)
    except ValueError:
        decoded = raw
    if decoded is None or isinstance(decoded, (bool, int, float)):
        value = decoded
    return key.strip(), value


def event_command(
    email: str = typer.Argument(..., help="The lead's email; an unknown email creates the lead."),
    event_type: str = typer.Argument(..., metavar="TYPE", help="Event type, such as webinar_attended or page_view."),
    at: str | None = typer.Option(None, "--at", help="When it happened, ISO 8601 with an offset (default: now)."),
    props: list[str] | None = typer.Option(None, "--prop", help="A property as KEY=VALUE (repeatable), e.g. url=..."),
    event_id: str | None = typer.Option(None, "--id", help="An id for the event: the same id is recorded only once."),
) -> None:
    """Record an engagement event for a lead and print its points, the lead's score and stage.

    Goes through the same code as POST /v1/events: scoring (campaigns/scoring.yaml), promotion to MQL, exits on goal
    events, unsubscribe and bounce suppression, and enrollment. Reads NURTURE_DATABASE_URL and NURTURE_CAMPAIGNS_DIR.
    """
    from nurture.application.event_input import DUPLICATE, EventIn
    from nurture.application.record_events import record_events
    from nurture.cli.app import read_clock
    from nurture.cli.commands import get_settings
    from nurture.definitions.loader import load_catalog
    from nurture.definitions.sales import load_sales
    from nurture.definitions.scoring import load_scoring
    from nurture.handoff import Handoff
    from nurture.signing import Signer
    from nurture.storage.migrate import open_database
    from nurture.storage.secrets import signing_secret

    settings = get_settings()
    occurred_at = parse_time(at) if at is not None else None
    properties = dict(parse_property(item) for item in props or [])
    # Templates are not needed to record an event: a template being edited must not stop intake.
    catalog = load_catalog(settings.campaigns_dir).raise_for_problems()
    rules, problems = load_scoring(settings.campaigns_dir)
    sales, sales_problems = load_sales(settings.campaigns_dir)
    if problems or sales_problems:
        raise DefinitionError([*problems, *sales_problems])
    event = EventIn(email=email, type=event_type, occurred_at=occurred_at, properties=properties, id=event_id)
    engine = open_database(settings.database_url)
    try:
        now = read_clock()
        handoff = Handoff.from_settings(settings, Signer(signing_secret(engine, settings.secret_key)))
        try:
            [result] = record_events(engine, catalog, rules, [event], now=now, actor="cli", sales=sales,
                                     handoff=handoff)
        except InvalidInput as exc:
            raise InvalidInput(str(exc).removeprefix("events[0]: ")) from None
    finally:
        engine.dispose()
    if result.status == DUPLICATE:
        typer.echo(f"duplicate: an event with id {result.id!r} was recorded before; nothing changed")
    else:
        typer.echo(f"recorded {result.type} for {result.email}: {result.points:+g} points")
    moved = " (changed)" if result.stage_changed else ""
    typer.echo(f"score {result.score:g}, stage {result.stage}{moved}")


def register(app: typer.Typer) -> None:
    """Add ``nurture event`` to the command line."""
    app.command("event")(event_command)
