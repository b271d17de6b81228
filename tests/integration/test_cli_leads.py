"""``nurture db`` and ``nurture leads`` through Typer's test runner, on a real SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from nurture.cli.commands import db as db_commands
from nurture.cli.commands import leads as leads_commands
from nurture.errors import InvalidInput, LeadNotFound, SchemaOutOfDate
from nurture.settings import get_settings
from nurture.storage.migrate import head_revision


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    db_commands.register(app)
    leads_commands.register(app)
    return app


@pytest.fixture
def run(app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NURTURE_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    get_settings.cache_clear()
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args))

    yield invoke
    get_settings.cache_clear()


@pytest.fixture
def upgraded(run) -> None:
    assert run("db", "upgrade").exit_code == 0


def test_db_upgrade_and_current(run) -> None:
    result = run("db", "current", "--check")
    assert result.exit_code == 1 and "run `nurture db upgrade`" in result.stdout
    result = run("db", "upgrade")
    assert result.exit_code == 0
    assert "applied 0001: Initial schema." in result.stdout
    assert "applied 0002: Score state on leads." in result.stdout
    assert "applied 0003_plan: Definition versions." in result.stdout
    head = head_revision()
    assert f"upgraded from an empty database to {head}" in result.stdout
    assert f"already at {head}, nothing to do" in run("db", "upgrade").stdout
    result = run("db", "current", "--check")
    assert result.exit_code == 0 and f"at {head} (up to date)" in result.stdout


def test_leads_commands_refuse_a_database_without_schema(run) -> None:
    result = run("leads", "show", "ada@example.com")
    assert isinstance(result.exception, SchemaOutOfDate)


def test_add_then_update_then_show(run, upgraded) -> None:
    result = run("leads", "add", "Ada@Example.com", "--first-name", "Ada", "--country", "gb", "--tag", "vip",
                 "--tag", "beta", "--field", "plan=pro", "--company-size", "50")
    assert result.exit_code == 0, result.output
    assert "added lead ada@example.com (id 1, stage lead)" in result.stdout
    result = run("leads", "add", "ada@example.com", "--stage", "mql", "--title", "CTO")
    assert "updated lead ada@example.com (id 1, stage mql)" in result.stdout
    shown = run("leads", "show", "ADA@example.com").stdout
    assert "ada@example.com (id 1)" in shown and "Ada" in shown and "vip, beta" in shown
    assert '{"plan": "pro"}' in shown and "Enrollments: none" in shown
    assert "Stage history:" in shown and "lead        mql       cli" in shown
    summary = json.loads(run("leads", "show", "ada@example.com", "--json").stdout)
    assert summary["lead"]["title"] == "CTO" and summary["lead"]["company_size"] == 50
    assert summary["stage_history"][0]["to_stage"] == "mql"


def test_add_reports_invalid_values(run, upgraded) -> None:
    result = run("leads", "add", "not-an-email", "--timezone", "Nowhere/Land")
    assert isinstance(result.exception, InvalidInput)
    assert "invalid email" in str(result.exception) and "unknown timezone" in str(result.exception)
    assert isinstance(run("leads", "add", "a@example.com", "--field", "novalue").exception, InvalidInput)


def test_show_an_unknown_lead(run, upgraded) -> None:
    assert isinstance(run("leads", "show", "nobody@example.com").exception, LeadNotFound)


def test_import_prints_the_report_and_bad_rows_on_stderr(run, upgraded, tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("email,stage\nada@example.com,mql\nbad,lead\ngrace@example.com,\n")
    result = run("leads", "import", str(path))
    assert result.exit_code == 0
    assert f"{path}: 2 new, 0 updated, 1 rejected" in result.stdout
    assert "1 leads entered the mql stage" in result.stdout
    assert f"{path}:3: invalid email 'bad'" in result.stderr
    assert "invalid email" not in result.stdout


def test_import_lists_repeated_emails_and_counts_the_stages_not_applied(run, upgraded, tmp_path: Path) -> None:
    first = tmp_path / "first.csv"
    first.write_text("email,stage\nada@example.com,customer\ngrace@example.com,sql\nalan@example.com,sql\n")
    assert run("leads", "import", str(first)).exit_code == 0
    assert run("leads", "stage", "alan@example.com", "recycled", "--reason", "no budget").exit_code == 0
    again = tmp_path / "again.csv"
    again.write_text("email,stage\n"
                     "ada@example.com,mql\n"       # 2: skipped, line 6 counts
                     "grace@example.com,lead\n"    # 3: backwards
                     "ADA@example.com,lead\n"      # 4: skipped
                     "alan@example.com,mql\n"      # 5: kept recycled
                     "ada@example.com,lead\n"      # 6: backwards
                     "new@example.com,recycled\n")  # 7: never from a file
    result = run("leads", "import", str(again))
    assert result.exit_code == 0, result.output
    assert f"{again}:6: lines 2 and 4 repeat this row's email and were skipped: the last row of an email counts" \
        in result.stderr
    lines = result.stdout.splitlines()
    assert f"{again}: 1 new, 3 updated, 0 rejected, 2 skipped (repeated emails)" in lines
    at = lines.index("4 stage value(s) not applied, the leads keep their stage (`nurture leads stage` sets one by hand):")
    assert lines[at + 1:at + 5] == [
        "  1 only rules or sales set recycled (line 7)",
        "  1 set by rules or sales: recycled; given mql (line 5)",
        "  1 would move backwards: customer → lead (line 6)",
        "  1 would move backwards: sql → lead (line 3)",
    ]
    shown = json.loads(run("leads", "show", "ada@example.com", "--json").stdout)
    assert shown["lead"]["stage"] == "customer"


def test_add_leaves_a_stage_that_would_move_backwards_and_says_why(run, upgraded) -> None:
    assert run("leads", "add", "ada@example.com", "--stage", "sql").exit_code == 0
    result = run("leads", "add", "ada@example.com", "--stage", "mql", "--title", "CTO")
    assert result.exit_code == 0
    assert "updated lead ada@example.com (id 1, stage sql)" in result.stdout
    assert ("stage not applied: would move backwards: sql → mql (to set it anyway: nurture leads stage "
            "ada@example.com mql --reason ...)") in result.stderr
    result = run("leads", "add", "new@example.com", "--stage", "disqualified")
    assert "added lead new@example.com (id 2, stage lead)" in result.stdout
    assert "stage not applied: only rules or sales set disqualified" in result.stderr
    summary = json.loads(run("leads", "show", "ada@example.com", "--json").stdout)
    assert (summary["lead"]["title"], summary["lead"]["stage"]) == ("CTO", "sql")


def test_stage_overrides_with_a_reason_and_show_lists_it(run, upgraded) -> None:
    assert run("leads", "add", "ada@example.com", "--stage", "customer").exit_code == 0
    result = run("leads", "stage", "ada@example.com", "mql", "--reason", "imported by mistake")  # as README.md shows
    assert result.exit_code == 0, result.output
    assert "ada@example.com (id 1): stage customer -> mql, set by admin: imported by mistake" in result.stdout
    shown = run("leads", "show", "ada@example.com").stdout
    assert "customer    mql       admin  imported by mistake" in shown
    again = run("leads", "stage", " ADA@example.com", "MQL", "--reason", "again", "--json")
    assert json.loads(again.stdout) == {"email": "ada@example.com", "lead_id": 1, "from_stage": "mql", "stage": "mql",
                                        "reason": "again", "changed": False, "exited": 0, "enrolled": 0}
    assert "is at stage mql already" in run("leads", "stage", "ada@example.com", "mql", "--reason", "x").stdout


def test_stage_needs_a_reason_a_known_stage_and_a_known_lead(run, upgraded) -> None:
    assert run("leads", "add", "ada@example.com").exit_code == 0
    missing = run("leads", "stage", "ada@example.com", "mql")
    assert missing.exit_code == 2 and "--reason" in missing.output
    blank = run("leads", "stage", "ada@example.com", "mql", "--reason", " ")
    assert isinstance(blank.exception, InvalidInput) and "give a reason" in str(blank.exception)
    unknown = run("leads", "stage", "ada@example.com", "hot", "--reason", "x")
    assert isinstance(unknown.exception, InvalidInput) and "unknown stage 'hot'" in str(unknown.exception)
    assert isinstance(run("leads", "stage", "nobody@example.com", "mql", "--reason", "x").exception, LeadNotFound)


def test_import_fails_when_nothing_is_valid_or_the_file_is_unreadable(run, upgraded, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("email\nnope\n")
    result = run("leads", "import", str(path))
    assert isinstance(result.exception, InvalidInput) and "no lead imported" in str(result.exception)
    assert f"{path}:2: invalid email" in result.stderr
    assert isinstance(run("leads", "import", str(tmp_path / "missing.csv")).exception, InvalidInput)


def test_import_shows_progress_on_large_files(run, upgraded, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(leads_commands, "PROGRESS_FROM_BYTES", 10)
    path = tmp_path / "big.csv"
    path.write_text("email\n" + "".join(f"l{i}@example.com\n" for i in range(50)))
    result = run("leads", "import", str(path), "--batch-size", "7")
    assert result.exit_code == 0 and "50 new" in result.stdout
    assert "importing big.csv" in result.stderr


def test_every_command_has_help(app: typer.Typer) -> None:
    group = typer.main.get_command(app)
    for name in ("db", "leads"):
        sub = group.commands[name]  # type: ignore[attr-defined]
        assert sub.help, name
        for command in sub.commands.values():
            assert command.help, f"{name} {command.name}"
            for param in command.params:
                assert param.help, f"{name} {command.name} {param.name}"


def test_leads_show_explains_the_score(run, upgraded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    campaigns = tmp_path / "rules"
    campaigns.mkdir()
    (campaigns / "scoring.yaml").write_text(
        "behaviour: {events: {content_download: 10}}\n"
        "fit:\n  - {label: big company, when: {company_size: {gte: 200}}, points: 15}\n"
    )
    monkeypatch.setenv("NURTURE_CAMPAIGNS_DIR", str(campaigns))
    get_settings.cache_clear()
    assert run("leads", "add", "ada@example.com", "--company-size", "350").exit_code == 0
    from datetime import datetime, timezone

    from nurture.application.event_input import EventIn
    from nurture.application.record_events import EventIn, record_events
    from nurture.definitions.loader import load_catalog
    from nurture.definitions.scoring import load_scoring
    from nurture.storage.database import make_engine

    engine = make_engine(get_settings().database_url)
    record_events(engine, load_catalog(campaigns), load_scoring(campaigns)[0],
                  [EventIn(email="ada@example.com", type="content_download")], now=datetime.now(timezone.utc),
                  actor="cli")
    engine.dispose()
    shown = run("leads", "show", "ada@example.com")
    assert shown.exit_code == 0, shown.output
    assert "Score: 25 = behaviour 10 + fit 15" in shown.output
    assert "big company" in shown.output and "content_download" in shown.output
    as_json = json.loads(run("leads", "show", "ada@example.com", "--json").output)
    assert as_json["score"]["total"] == 25.0


def test_import_stores_each_leads_score_with_its_fit_points(run, upgraded, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Campaign conditions and entry filters read the stored score: an imported lead's fit counts at once, not after
    the nightly rescoring; a re-import that changes a lead's fields keeps its behaviour points and moves its fit."""
    from datetime import datetime, timezone

    from nurture.application.event_input import EventIn
    from nurture.application.record_events import EventIn, record_events
    from nurture.application.rescore import score_breakdown
    from nurture.definitions.loader import load_catalog
    from nurture.definitions.scoring import load_scoring
    from nurture.storage.database import make_engine, session
    from nurture.storage.leads import get_lead

    campaigns = tmp_path / "rules"
    campaigns.mkdir()
    (campaigns / "scoring.yaml").write_text(
        "behaviour: {events: {content_download: 10}}\n"
        "fit:\n  - {label: big company, when: {company_size: {gte: 200}}, points: 15}\n"
        "  - {label: germany, when: {country: DE}, points: 5}\n"
    )
    monkeypatch.setenv("NURTURE_CAMPAIGNS_DIR", str(campaigns))
    get_settings.cache_clear()
    first = tmp_path / "first.csv"
    first.write_text("email,company_size,country\nada@example.com,350,DE\nbo@example.com,20,FR\n")
    assert run("leads", "import", str(first)).exit_code == 0
    engine = make_engine(get_settings().database_url)
    rules = load_scoring(campaigns)[0]
    now = datetime.now(timezone.utc)

    def stored(email: str) -> float:
        with session(engine, read_only=True) as db:
            return float(get_lead(db, email).score)

    assert (stored("ada@example.com"), stored("bo@example.com")) == (20.0, 0.0)
    record_events(engine, load_catalog(campaigns), rules, [EventIn(email="ada@example.com", type="content_download")],
                  now=now, actor="cli")
    again = tmp_path / "again.csv"
    again.write_text("email,company_size\nada@example.com,50\nbo@example.com,500\n")
    assert run("leads", "import", str(again)).exit_code == 0
    assert (stored("ada@example.com"), stored("bo@example.com")) == (15.0, 15.0)  # 10 + DE 5; big company 15
    for email in ("ada@example.com", "bo@example.com"):
        assert stored(email) == pytest.approx(score_breakdown(engine, rules, email, datetime.now(timezone.utc)).total)
    engine.dispose()
