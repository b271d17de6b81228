"""One module per command group; each has ``register(app: typer.Typer) -> None``."""

from __future__ import annotations

from nurture.cli.commands import campaigns, db, events, leads, project, report, run, sales, spend

MODULES = [campaigns, run, db, leads, events, sales, spend, report, project]
