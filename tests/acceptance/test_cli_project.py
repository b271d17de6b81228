"""nurture init and nurture config, through the real console script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

NURTURE = Path(sys.executable).with_name("nurture")


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NURTURE), *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_init_writes_a_project_that_checks_and_simulates(tmp_path: Path) -> None:
    created = run("init", "shop", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    project = tmp_path / "shop"
    assert (project / "campaigns" / "welcome.yaml").is_file() and (project / ".env").is_file()
    checked = run("check", cwd=project)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    simulated = run("simulate", "welcome", "--lead", "lead.yaml", "--start", "2026-03-02T09:00Z", "--days", "7",
                    "--json", cwd=project)
    assert simulated.returncode == 0, simulated.stderr
    assert '"subject": "Welcome, Dana"' in simulated.stdout


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    assert run("init", cwd=tmp_path).returncode == 0
    (tmp_path / "campaigns" / "welcome.yaml").write_text("id: mine\n")
    again = run("init", cwd=tmp_path)
    assert again.returncode == 1 and "already exist" in again.stderr
    assert (tmp_path / "campaigns" / "welcome.yaml").read_text() == "id: mine\n"


def test_config_masks_secrets(tmp_path: Path) -> None:
    shown = run("config", cwd=tmp_path, env={
        "NURTURE_API_KEY": "s3cret-key", "NURTURE_INBOUND_WEBHOOK_TOKEN": "hook-t0ken",
        "NURTURE_DATABASE_URL": "postgresql://app:pa55@db.internal/nurture",
        "NURTURE_SALES_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/XYZ", "NURTURE_HTTP_PORT": "8123",
    })
    assert shown.returncode == 0, shown.stderr
    assert "s3cret-key" not in shown.stdout and "pa55" not in shown.stdout and "XYZ" not in shown.stdout
    assert "hook-t0ken" not in shown.stdout
    assert "NURTURE_API_KEY" in shown.stdout and "(set)" in shown.stdout
    assert "postgresql://app:***@db.internal/nurture" in shown.stdout
    assert "8123" in shown.stdout


def test_every_secret_setting_is_masked() -> None:
    from nurture.cli.commands.project import SECRET_FIELDS
    from nurture.settings import Settings

    public = {"sendgrid_verification_key"}  # a public key: nothing to hide, and worth seeing when it does not match
    secrets = {name for name in Settings.model_fields if any(word in name for word in ("key", "secret", "token"))}
    assert len(secrets - public) >= 4 and secrets - public <= SECRET_FIELDS and not public & SECRET_FIELDS


def test_usage_errors_are_short_messages_not_tracebacks(tmp_path: Path) -> None:
    missing = run("sales", "reject", cwd=tmp_path)
    assert missing.returncode == 2 and "Missing argument" in missing.stderr and "Traceback" not in missing.stderr
    unknown = run("no-such-command", cwd=tmp_path)
    assert unknown.returncode == 2 and "No such command" in unknown.stderr and "Traceback" not in unknown.stderr
