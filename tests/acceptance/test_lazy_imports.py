"""The console script imports what the command it runs needs, and no more: ``nurture run --once`` starts without the
HTTP stack, the scheduler, the webhook client, Alembic, the ORM, Jinja, the SMTP client or the email validator (its
start-up is most of a cron-style run's time), ``nurture report`` without the ORM and Jinja, and every command is still
found, listed and run.

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
HEAVY = ("fastapi", "starlette", "uvicorn", "httpx", "apscheduler", "alembic", "sqlmodel", "sqlalchemy.orm", "jinja2",
         "smtplib", "email_validator", "multiprocessing")
"""What ``run --once`` with nothing due must not import: the HTTP intake's stack (``--no-http``), APScheduler (no
scheduler runs), httpx (no webhook is sent), Alembic (the schema is at the head), SQLModel and SQLAlchemy's ORM
(queries run on the Core tables), Jinja (no email is rendered: the renderer is made at the first one), the SMTP client
(mail goes to a folder), the email validator (no lead is written) and multiprocessing (one process)."""
SENDING_HEAVY = ("fastapi", "starlette", "uvicorn", "httpx", "apscheduler", "alembic", "sqlmodel", "sqlalchemy.orm",
                 "smtplib", "multiprocessing")
"""What ``run --once`` that sends emails to a folder must not import."""
REPORT_HEAVY = ("fastapi", "starlette", "uvicorn", "httpx", "apscheduler", "alembic", "sqlmodel", "sqlalchemy.orm",
                "jinja2", "smtplib", "email_validator", "nurture.core.engine")
"""What ``report`` must not import: it reads counts through Core queries and prints them (no campaign is run)."""

EMAIL = "dana.whitfield@northwind-logistics.example"  # a lead of examples/leads.csv

PROBE = """
import json, sys
from nurture.cli.app import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code or 0
loaded = {name.split(".")[0] for name in sys.modules} | {name for name in sys.modules
                                                         if name in ("sqlalchemy.orm", "nurture.core.engine")}
print(json.dumps({"code": code, "loaded": sorted(loaded)}))
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
    code, loaded, output = _run(["run", "--once", "--no-http"], env)  # the imported leads' first emails
    assert code == 0, output
    assert "done:" in output and "done: 0 sent" not in output
    assert loaded.isdisjoint(SENDING_HEAVY), sorted(loaded & set(SENDING_HEAVY))
    assert "jinja2" in loaded  # the emails were rendered
    code, loaded, output = _run(["run", "--once", "--no-http"], env)  # nothing due now: the next steps wait
    assert code == 0, output
    assert "done: 0 sent" in output
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
    assert {"sqlalchemy", "typer", "nurture"} <= loaded  # the probe does see what was imported
    # a module of one command (event) registered alone: still a command of the group, not the root taking its name
    code, _loaded, output = _run(["event", EMAIL, "page_view"], env)
    assert code == 0, output


def test_report_imports_no_orm_template_engine_or_http_stack(tmp_path: Path) -> None:
    env = _env(tmp_path)
    code, loaded, output = _run(["report", "--format", "json", "--since", "2026-01-01", "--until", "2026-02-01T00:00Z"], env)
    assert code == 0, output
    assert '"period"' in output
    assert loaded.isdisjoint(REPORT_HEAVY), sorted(loaded & set(REPORT_HEAVY))
    code, loaded, output = _run(["leads", "add", "new.person@example.com"], env)  # a lead written as an ORM object
    assert code == 0, output
    assert {"sqlmodel", "sqlalchemy.orm", "email_validator"} <= loaded  # the probe does see them when imported


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
    code, loaded, output = _run(["--help"], env)
    assert code == 0, output
    # listing the commands imports none of what they run: no settings (pydantic), database, template engine, YAML
    assert loaded.isdisjoint({"pydantic", "pydantic_settings", "sqlalchemy", "jinja2", "yaml"}), loaded
    for command in COMMANDS:
        assert f" {command} " in output, command
    code, loaded, output = _run(["check"], env)
    assert code == 0, output
    assert "sqlalchemy" not in loaded  # check reads files only: the run module and its storage are not imported
    code, _loaded, output = _run(["nosuch"], env)
    assert code == 2 and "No such command" in output
