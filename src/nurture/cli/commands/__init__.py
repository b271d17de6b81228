"""One module per command group; each has ``register(app: typer.Typer) -> None``."""

from __future__ import annotations

MODULES: list = []
