"""One module per command group; each has ``register(app: typer.Typer) -> None``."""

from __future__ import annotations

from nurture.cli.commands import campaigns, db, events, impact, leads, project, report, run, sales, spend, versions

MODULES = [campaigns, run, db, leads, events, sales, spend, report, impact, project, versions]
