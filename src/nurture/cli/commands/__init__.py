"""One module per command group; each has ``register(app: typer.Typer) -> None``."""

from __future__ import annotations

from nurture.cli.commands import campaigns, run

MODULES = [campaigns, run]
