"""``nurture init`` (start a campaigns project) and ``nurture config`` (the settings in force)."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from nurture.cli.commands import get_settings

STARTER_CAMPAIGN = """\
# A first nurture campaign. Check it with `nurture check`, try it with
#   nurture simulate welcome --lead lead.yaml --start 2026-03-02T09:00Z --days 14
# and see the README for every key.
id: welcome
name: Welcome series
entry: {stage: mql}
steps:
  - id: hello
    wait: 0s
    send_window: always
    email: {template: welcome/hello.html.j2, subject: "Welcome, {{ lead.first_name or 'there' }}"}
  - id: tips
    wait: 3d
    email: {template: welcome/tips.html.j2, subject: "Three tips to get started"}
"""
STARTER_POLICY = """\
# Rules for every campaign: at most one nurture email per lead per day, on weekdays 09:00-17:00 lead-local.
frequency_cap: {max: 1, per: 1d}
send_window: {days: mon-fri, hours: "09:00-17:00"}
"""
STARTER_SCORING = """\
# Lead scoring: behaviour points per event, fit points per lead field, and the score that makes a lead an MQL.
behaviour:
  half_life: 30d
  events:
    email_open: {points: 1, max_per_day: 3}
    email_click: 3
    content_download: 10
thresholds:
  mql: 40
"""
STARTER_EMAIL = """\
<!doctype html>
<html><body style="font-family: sans-serif; max-width: 600px">
<p>Hi {{{{ lead.first_name or "there" }}}},</p>
<p>{body}</p>
<p><a href="{{{{ track('https://example.com/') }}}}">Visit us</a></p>
<p style="font-size: 12px; color: #666">You get this email because you showed interest in Example Inc.
<a href="{{{{ unsubscribe_url }}}}">Unsubscribe</a>.</p>
<img src="{{{{ open_pixel_url }}}}" width="1" height="1" alt="">
</body></html>
"""
STARTER_LEAD = "email: dana@example.com\nfirst_name: Dana\ntimezone: America/Chicago\nstage: mql\n"


def _shipped_examples() -> Path | None:
    """The example project beside the package when nurture runs from a source checkout."""
    root = Path(__file__).resolve().parents[4]
    if (root / "campaigns").is_dir() and (root / "templates" / "_layout.html.j2").is_file():
        return root
    return None


def init_command(
    directory: Path = typer.Argument(Path("."), help="Where to create the project (default: here)."),
    examples: bool = typer.Option(False, "--examples", help="Copy the full example campaigns (source checkouts)."),
    force: bool = typer.Option(False, "--force", help="Overwrite files that exist."),
) -> None:
    """Create a campaigns project: campaigns/ (a first campaign, policy.yaml, scoring.yaml), templates/, .env."""
    from nurture.errors import InvalidInput

    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {
        "campaigns/welcome.yaml": STARTER_CAMPAIGN,
        "campaigns/policy.yaml": STARTER_POLICY,
        "campaigns/scoring.yaml": STARTER_SCORING,
        "templates/welcome/hello.html.j2": STARTER_EMAIL.format(body="Thanks for your interest: here is where to start."),
        "templates/welcome/tips.html.j2": STARTER_EMAIL.format(body="Three tips that our best customers swear by."),
        "lead.yaml": STARTER_LEAD,
        ".env": "NURTURE_DATABASE_URL=sqlite:///nurture.db\nNURTURE_MAIL_URL=console://\n",
    }
    source = _shipped_examples() if examples else None
    if examples and source is None:
        raise InvalidInput("the example campaigns ship with the source checkout; without it, init writes a starter")
    existing = [name for name in files if (directory / name).exists()] if source is None else [
        name for name in ("campaigns", "templates") if (directory / name).exists()
    ]
    if existing and not force:
        raise InvalidInput(f"{', '.join(existing)} already exist in {directory} (use --force to overwrite)")
    if source is not None:
        for name in ("campaigns", "templates"):
            shutil.copytree(source / name, directory / name, dirs_exist_ok=True)
        (directory / "lead.yaml").write_text(STARTER_LEAD, encoding="utf-8")
    else:
        for name, text in files.items():
            path = directory / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    typer.echo(f"created a nurture project in {directory}: next, `nurture check`, `nurture db upgrade`, `nurture run`")


SECRET_FIELDS = {"secret_key", "api_key", "webhook_secret", "inbound_webhook_token"}


def _shown(name: str, value: object) -> str:
    text = str(value)
    if name in SECRET_FIELDS:
        return "(set)" if text else "(not set)"
    if name == "sales_webhook_url" and text:
        # a chat webhook URL is a credential in itself: show where it goes, not the path
        scheme, _, rest = text.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}/..."
    if name in ("database_url", "mail_url", "sales_webhook_url") and "@" in text and "://" in text:
        scheme, rest = text.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in credentials else text
    return text


def config_command() -> None:
    """Print the settings in force (environment, then .env, then defaults), secrets masked."""
    settings = get_settings()
    for name, info in type(settings).model_fields.items():
        variable = (info.validation_alias if isinstance(info.validation_alias, str) else None) or f"NURTURE_{name.upper()}"
        typer.echo(f"{variable:28} {_shown(name, getattr(settings, name))}")


def register(app: typer.Typer) -> None:
    """Add ``nurture init`` and ``nurture config``."""
    app.command("init")(init_command)
    app.command("config")(config_command)
