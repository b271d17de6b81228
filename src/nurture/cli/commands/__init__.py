"""One module per command group; each has ``register(app: typer.Typer) -> None``.

The modules are imported when needed: a command line that names one command imports (and registers) only the module
that defines it, so ``nurture run --once`` does not pay for the imports of ``report``, ``check`` or ``plan``
(``tests/acceptance/test_lazy_imports.py`` keeps :data:`COMMANDS` in step with what each module registers).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nurture.settings import Settings

NAMES = ["campaigns", "run", "db", "leads", "events", "sales", "spend", "report", "impact", "project", "versions"]
"""The command modules, in the order their commands are listed in ``nurture --help``."""

COMMANDS = {
    "check": "campaigns", "schema": "campaigns", "preview": "campaigns", "simulate": "campaigns",
    "run": "run", "serve": "run",
    "db": "db",
    "leads": "leads",
    "event": "events",
    "sales": "sales",
    "spend": "spend",
    "report": "report",
    "replay": "impact", "scoring": "impact",
    "init": "project", "config": "project",
    "plan": "versions", "campaigns": "versions",
}
"""The module that registers each top-level command or group."""


def module(name: str) -> ModuleType:
    """The command module ``name`` (imported on first use)."""
    return importlib.import_module(f"nurture.cli.commands.{name}")


def modules_for(command: str | None) -> list[ModuleType]:
    """The modules to register for a command line whose command is ``command``: its own module alone when it is a
    known command, else every module (``nurture --help`` lists them all; an unknown name gets click's message)."""
    name = COMMANDS.get(command) if command is not None else None
    return [module(name)] if name is not None else [module(each) for each in NAMES]


def get_settings() -> Settings:
    """The settings of this process (:func:`nurture.settings.get_settings`), imported when a command first reads them:
    ``nurture --help`` lists the commands without importing pydantic."""
    from nurture.settings import get_settings as settings_of_this_process

    return settings_of_this_process()
