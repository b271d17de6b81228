"""The console script imports what the command it runs needs, and no more: ``nurture run --once`` starts without the
HTTP stack, the scheduler, the webhook client or Alembic (its start-up is most of a cron-style run's time), and
every command is still found, listed and run.

The command line runs in a subprocess (a fresh interpreter, as an operator runs it) on a real SQLite file and the
shipped campaigns; the subprocess reports which of the heavy packages it had imported when the command returned.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from nurture.cli.commands import COMMANDS, NAMES, module
from nurture.storage.migrate import upgrade

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("fastapi", "starlette", "uvicorn", "httpx", "apscheduler", "alembic")
"""What ``run --once`` must not import: the HTTP intake's stack (``--no-http``), APScheduler (no scheduler runs), httpx
(no webhook is sent), Alembic (the schema is at the head)."""

EMAIL = "dana.whitfield@northwind-logistics.example"  # a lead of examples/leads.csv

PROBE = """
import json, sys
from nurture.cli.app import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code or 0
print(json.dumps({"code": code, "loaded": sorted({name.split(".")[0] for name in sys.modules})}))
"""


def _env(tmp_path: Path) -> dict[str, str]:
    url = f"sqlite:///{tmp_path / 'nurture.db'}"
    upgrade(url)
    (tmp_path / "mail").mkdir(exist_ok=True)
    return {**os.environ, "NURTURE_DATABASE_URL": url, "NURTURE_CAMPAIGNS_DIR": str(ROOT / "campaigns"),
            "NURTURE_TEMPLATES_DIR": str(ROOT / "templates"), "NURTURE_MAIL_URL": f"file://{tmp_path / 'mail'}",
            "NURTURE_SECRET_KEY": "lazy-imports-secret-key-lazy-imports", "NURTURE_API_KEY": "k"}


def _run(args: list[str], env: dict[str, str]) -> tuple[int, set[str], str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip(), done.stderr
    last = json.loads(done.stdout.strip().splitlines()[-1])
    return int(last["code"]), set(last["loaded"]), done.stdout + done.stderr


def test_run_once_imports_no_http_stack_scheduler_webhook_client_or_alembic(tmp_path: Path) -> None:
    env = _env(tmp_path)
    code, loaded, output = _run(["leads", "import", str(ROOT / "examples" / "leads.csv")], env)
    assert code == 0, output
    code, loaded, output = _run(["run", "--once", "--no-http"], env)
    assert code == 0, output
    assert "done:" in output
    # a module of one command (event) registered alone: still a command of the group, not the root taking its name
    code, _loaded, output = _run(["event", EMAIL, "page_view"], env)
    assert code == 0, output
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
    assert {"sqlalchemy", "typer", "nurture"} <= loaded  # the probe does see what was imported


def test_a_schema_behind_still_stops_run_once_with_alembics_explanation(tmp_path: Path) -> None:
    env = _env(tmp_path)
    env["NURTURE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'empty.db'}"
    code, _loaded, output = _run(["run", "--once", "--no-http"], env)
    assert code == 1
    assert "has no nurture schema yet" in output and "nurture db upgrade" in output


def _registered(app: typer.Typer) -> set[str]:
    names = {command.name for command in app.registered_commands}
    names |= {group.name for group in app.registered_groups}
    return {name for name in names if name is not None}


@pytest.mark.parametrize("name", NAMES)
def test_the_command_map_names_what_each_module_registers(name: str) -> None:
    app = typer.Typer()
    module(name).register(app)
    assert _registered(app) == {command for command, owner in COMMANDS.items() if owner == name}


def test_help_lists_every_command_and_each_command_runs_alone(tmp_path: Path) -> None:
    env = _env(tmp_path)
    code, _loaded, output = _run(["--help"], env)
    assert code == 0, output
    for command in COMMANDS:
        assert f" {command} " in output, command
    code, loaded, output = _run(["check"], env)
    assert code == 0, output
    assert "sqlalchemy" not in loaded  # check reads files only: the run module and its storage are not imported
    code, _loaded, output = _run(["nosuch"], env)
    assert code == 2 and "No such command" in output
