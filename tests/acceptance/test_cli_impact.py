"""``nurture replay`` and ``nurture scoring impact`` through the real console script, on a SQLite file holding the
history ``replay_world`` records with the real dispatcher, dated to end a day before the machine's clock (the
commands read it): every form the README shows, and their errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from replay_world import DRIP, History, record_history, write_drip_project

from nurture.storage.database import make_engine
from nurture.storage.migrate import upgrade

NURTURE = Path(sys.executable).with_name("nurture")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[History, Path, Path, str]:
    """The recorded history (its own folder is the old version), a new version with a shorter wait, and the URL."""
    root = tmp_path_factory.mktemp("replay-cli")
    url = f"sqlite:///{root / 'nurture.db'}"
    upgrade(url)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=10)
    engine = make_engine(url)
    try:
        history = record_history(engine, root / "recorded", start)
    finally:
        engine.dispose()
    new = write_drip_project(root / "new", DRIP.replace("wait: 2d", "wait: 1d")).campaigns_dir
    return history, history.project.campaigns_dir, new, url


def nurture(url: str, *args: str, campaigns: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NURTURE_DATABASE_URL": url}
    if campaigns is not None:
        env["NURTURE_CAMPAIGNS_DIR"] = str(campaigns)
    return subprocess.run([str(NURTURE), *args], env=env, capture_output=True, text=True, timeout=120)


def test_replay_prints_each_step_s_emails_under_both_versions(world):
    _history, old, new, url = world
    result = nurture(url, "replay", "--old-campaigns", str(old), "--campaigns", str(new), "--since", "30d")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith(": 8 enrollment(s) in 1 campaign(s)")
    assert "drip: 8 enrollment(s), 8 with emails sent differently" in lines
    table = {line.split()[0]: line.split()[1:] for line in lines if line.startswith("  ") and line.split()[0] in
             ("welcome", "tips", "nudge", "thanks")}
    assert table == {"welcome": ["8", "8", "8", "0", "0", "0", "0"], "tips": ["7", "7", "8", "7", "0", "0", "1"],
                     "nudge": ["4", "4", "4", "4", "0", "0", "0"], "thanks": ["2", "2", "2", "0", "0", "0", "0"]}
    assert any(line.strip().startswith("e.g. enrollment") for line in lines)
    assert "@example.com" not in result.stdout + result.stderr


def test_replay_json_of_one_campaign_with_the_new_version_from_the_campaigns_folder_setting(world):
    _history, old, new, url = world
    result = nurture(url, "replay", "--old-campaigns", str(old), "--since", "2w", "--campaign", "drip", "--json",
                     campaigns=new)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    [drip] = report["campaigns"]
    assert {s["step"]: (s["recorded"], s["old"], s["new"]) for s in drip["steps"]} == {
        "welcome": (8, 8, 8), "tips": (7, 7, 8), "nudge": (4, 4, 4), "thanks": (2, 2, 2)}
    assert drip["standing"]["old"] == drip["standing"]["new"] == {
        "at": {}, "ended": {"completed": 6, "goal:demo_request": 1, "unsubscribed": 1}}
    since, until = (datetime.fromisoformat(report[k].replace("Z", "+00:00")) for k in ("since", "until"))
    assert until - since == timedelta(days=14)


@pytest.mark.parametrize(("since", "period"), [("30d", timedelta(days=30)), ("2w", timedelta(days=14)),
                                                ("36h", timedelta(hours=36))])
def test_replay_since_takes_a_duration(world, since, period):
    _history, old, new, url = world
    result = nurture(url, "replay", "--old-campaigns", str(old), "--campaigns", str(new), "--since", since, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    start, until = (datetime.fromisoformat(report[k].replace("Z", "+00:00")) for k in ("since", "until"))
    assert until - start == period
    assert report["enrollments"] == (8 if period >= timedelta(days=14) else 0), "the history ended a day ago"


def test_replay_of_a_version_against_itself_changes_nothing(world):
    _history, old, _new, url = world
    result = nurture(url, "replay", "--old-campaigns", str(old), "--campaigns", str(old), "--json")
    assert result.returncode == 0, result.stderr
    [drip] = json.loads(result.stdout)["campaigns"]
    assert drip["changed"] == 0 and all(s["recorded"] == s["old"] == s["new"] for s in drip["steps"])


@pytest.mark.parametrize(("args", "message"), [
    (("--since", "30"), "--since: invalid duration '30'"),
    (("--since", "0d"), "--since must be longer than 0s"),
    (("--campaign", "nope"), "no campaign 'nope' (known: drip)"),
])
def test_replay_refuses_bad_options_with_a_message(world, args, message):
    _history, old, new, url = world
    result = nurture(url, "replay", "--old-campaigns", str(old), "--campaigns", str(new), *args)
    assert result.returncode == 1 and message in result.stderr, result.stderr


def test_replay_reports_a_broken_old_version_at_its_file_and_line(world, tmp_path):
    _history, _old, new, url = world
    broken = write_drip_project(tmp_path / "broken", DRIP.replace("wait: 2d", "wait: soon")).campaigns_dir
    result = nurture(url, "replay", "--old-campaigns", str(broken), "--campaigns", str(new))
    assert result.returncode == 1
    assert f"{broken / 'drip.yaml'}:9:" in result.stderr, result.stderr


SCORING = "behaviour:\n  events:\n    email_click: 10\nthresholds:\n  mql: 40\n"


def test_scoring_impact_counts_band_changes_mqls_and_promotions(world, tmp_path):
    _history, _old, _new, url = world
    old = write_drip_project(tmp_path / "old").campaigns_dir
    new = write_drip_project(tmp_path / "new").campaigns_dir
    (old / "scoring.yaml").write_text(SCORING, encoding="utf-8")
    (new / "scoring.yaml").write_text(SCORING.replace("10", "50"), encoding="utf-8")
    (new / "sales.yaml").write_text("promotion:\n  score_and_fit:\n    - {name: engaged, score: 45}\n", encoding="utf-8")

    # leads 0 and 4 clicked once: 10 -> 50 points; all eight were MQLs from the start, lead 2 is an SQL
    result = nurture(url, "scoring", "impact", "--old-campaigns", str(old), "--campaigns", str(new))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == \
        "2 leads change score band, 0 become MQL, 2 would be promoted (of 8 leads; 2 change score)"
    assert "  below mql -> mql: 2" in result.stdout.splitlines()

    shown = nurture(url, "scoring", "impact", "--old-campaigns", str(old), "--json", campaigns=new)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["promoted"]["count"] == 2 and len(data["promoted"]["examples"]) == 2
    assert "@" not in shown.stdout


def test_scoring_impact_reports_a_broken_rules_file_and_a_missing_folder(world, tmp_path):
    _history, old, _new, url = world
    broken = write_drip_project(tmp_path / "broken").campaigns_dir
    (broken / "scoring.yaml").write_text("thresholds:\n  mql: lots\n", encoding="utf-8")
    result = nurture(url, "scoring", "impact", "--old-campaigns", str(old), "--campaigns", str(broken))
    assert result.returncode == 1 and f"{broken / 'scoring.yaml'}:2:" in result.stderr, result.stderr
    missing = nurture(url, "scoring", "impact", "--old-campaigns", str(tmp_path / "nowhere"), "--campaigns", str(old))
    assert missing.returncode == 1 and "campaigns folder not found" in missing.stderr, missing.stderr


def test_both_commands_explain_themselves():
    for args in (("replay", "--help"), ("scoring", "impact", "--help")):
        result = subprocess.run([str(NURTURE), *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "never writes" in result.stdout and "--old-campaigns" in result.stdout


def test_plan_explains_replay_and_the_scoring_impact():
    result = subprocess.run([str(NURTURE), "plan", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.replace("│", " ").split())  # the help is drawn in boxes
    for words in ("--replay", "30d", "Does not change the exit code", "become MQL", "never writes"):
        assert words in text, words


@pytest.mark.parametrize(("args", "message"), [
    (("--replay", "30"), "--replay: invalid duration '30'"),
    (("--replay", "0d"), "--replay must be longer than 0s"),
    (("--replay",), "Option '--replay' requires an argument"),
    (("--replay-days", "30"), "No such option"),
])
def test_plan_refuses_a_bad_replay_period_and_a_usage_error_with_exit_1(world, args, message):
    """Exit 2 means "live leads concerned" for plan: its usage errors exit 1, as its other errors do."""
    _history, _old, new, url = world
    result = nurture(url, "plan", "--campaigns", str(new), *args)
    assert (result.returncode, result.stdout) == (1, ""), result.stderr
    assert message in result.stderr


def test_plan_replay_on_a_database_with_no_version_recorded(world):
    """The recorded history ran through the dispatcher alone, so no version is in force: the old side has no campaign
    (its enrollments stay where they were), the new one replays them; with nothing recorded at all there is no baseline
    for the rules files (no scoring section), and nobody is left for the campaign to enroll."""
    history, old, _new, url = world
    result = nurture(url, "plan", "--campaigns", str(old), "--templates", str(history.project.templates_dir),
                     "--replay", "2w", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [(c["campaign"], c["status"], c["live"]) for c in report["campaigns"]] == [("drip", "new", False)]
    assert report.get("scoring", []) == []
    [drip] = report["replay"][0]["campaigns"]
    assert {s["step"]: (s["recorded"], s["old"], s["new"]) for s in drip["steps"]} == {
        "welcome": (8, 0, 8), "tips": (7, 0, 7), "nudge": (4, 0, 4), "thanks": (2, 0, 2)}


@pytest.mark.parametrize(("period", "length"), [("30d", timedelta(days=30)), ("36h", timedelta(hours=36))])
def test_plan_replay_takes_a_duration(world, period, length):
    history, old, _new, url = world
    result = nurture(url, "plan", "--campaigns", str(old), "--templates", str(history.project.templates_dir),
                     "--replay", period, "--json")
    assert result.returncode == 0, result.stderr
    [section] = json.loads(result.stdout)["replay"]
    start, until = (datetime.fromisoformat(section[k].replace("Z", "+00:00")) for k in ("since", "until"))
    assert until - start == length
    assert section["enrollments"] == (8 if length > timedelta(days=2) else 0), "the history ended a day ago"
