"""The dashboard over a real HTTP server, and in a real browser (headless Chromium) when the machine has one: every
figure it shows is the one ``nurture report --json`` gives for the same period, the A/B tests' and holdouts' verdicts
included (on data with a known call and a known lift: :mod:`experiment_data`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from experiment_data import CAMPAIGN as WELCOME
from experiment_data import ExperimentTruth, seed_experiments
from http_server import HttpServer
from typer.testing import CliRunner

from nurture.application.variant_decisions import decide_winners
from nurture.cli import app as cli_app
from nurture.cli.commands import report as report_command
from nurture.core.metrics.tables import format_value
from nurture.definitions.loader import load_catalog
from nurture.definitions.scoring import ScoringRules
from nurture.intake.app import create_app
from nurture.settings import Settings, get_settings
from nurture.signing import Signer
from nurture.storage.database import make_engine
from nurture.storage.migrate import upgrade

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from report_data import NOW, generate

CAMPAIGN = """\
id: bench-nurture
name: Ebook downloaders
entry: {stage: mql}
steps:
  - id: welcome
    email:
      template: t.html.j2
      variants: [{id: a, subject: "A"}, {id: b, subject: "B"}]
  - id: choose
    wait: 2d
    branch:
      - {when: {clicked: welcome}, goto: demo}
      - {goto: followup}
  - id: followup
    wait: 1d
    email: {template: t.html.j2, subject: "More"}
  - id: demo
    wait_for: {event: demo_request, timeout: 3d}
    on_timeout: end
"""
SALES = "handoff: {sla: 48h}\nfeedback:\n  reject_reasons:\n    no_budget: {label: No budget, stage: recycled}\n" \
        "    bad_timing: {stage: recycled}\n    not_a_fit: {stage: disqualified}\n"
DAYS = 90  # 2026-01-01 .. 2026-04-01: the generator's three whole months
EXPERIMENTS_START = datetime(2026, 1, 10, tzinfo=timezone.utc)
TRUTH: dict[str, ExperimentTruth] = {}  # what the world's experiments wrote, by database URL


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[HttpServer, Settings]]:
    (tmp_path / "campaigns").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "campaigns" / "ebook.yaml").write_text(CAMPAIGN)
    (tmp_path / "campaigns" / "welcome.yaml").write_text(WELCOME)
    (tmp_path / "campaigns" / "sales.yaml").write_text(SALES)
    (tmp_path / "templates" / "t.html.j2").write_text("<p>hi</p>")
    url = f"sqlite:///{tmp_path / 'd.db'}"
    upgrade(url)
    engine = make_engine(url)
    generate(engine, leads=1200, events=5000, months=3, seed=5)
    settings = Settings(database_url=url, api_key="dash-key", campaigns_dir=tmp_path / "campaigns",
                        templates_dir=tmp_path / "templates")
    catalog = load_catalog(settings.campaigns_dir, settings.templates_dir).raise_for_problems()
    # an A/B step whose winner the worker called between two waves of leads, in a campaign with a 10 % holdout
    truth = TRUTH[url] = seed_experiments(engine, start=EXPERIMENTS_START)
    assert truth.second_wave is not None
    [call] = decide_winners(engine, catalog, truth.second_wave - timedelta(minutes=1))
    assert call.winner == "b"
    app = create_app(settings, engine=engine, catalog=catalog, rules=ScoringRules(), signer=Signer("s"),
                     clock=lambda: NOW)
    with HttpServer(app) as running:
        yield running, settings
    engine.dispose()


def report_json(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``nurture report --json`` for the dashboard's period, with the commands' clock at the server's time."""
    monkeypatch.setenv("NURTURE_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("NURTURE_CAMPAIGNS_DIR", str(settings.campaigns_dir))
    monkeypatch.setattr(cli_app, "clock", lambda: NOW)
    get_settings.cache_clear()
    app = typer.Typer()
    report_command.register(app)
    app.command("noop", hidden=True)(lambda: None)  # a group, so "report" is a sub-command as in nurture
    result = CliRunner().invoke(app, ["report", "--days", str(DAYS), "--json"])
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def shown_metrics(html: str) -> dict[str, str]:
    """Every ``data-metric`` of the page with the text shown in it."""
    return {path: unescape(text).strip()
            for path, text in re.findall(r'data-metric="([^"]+)"[^>]*>([^<]*)<', html)}


def value_at(data: dict[str, Any], section: str, path: str) -> Any:
    found: Any = data[section]
    for part in path.split("."):
        found = found[int(part)] if isinstance(found, list) else found if part == "0" and isinstance(found, dict) \
            and "0" not in found else found[part]
    return found


def kind_of(path: str) -> str:
    leaf = path.rsplit(".", 1)[-1]
    if leaf.endswith("rate") or leaf == "share":
        return "rate"
    if leaf in ("spend", "cac") or leaf.startswith("cost_per"):
        return "money"
    if "hours" in leaf:
        return "hours"
    if leaf in ("difference", "low", "high", "lift"):
        return "points"
    if leaf == "p_value":
        return "p_value"
    if leaf in ("confidence", "probability_to_beat", "holdout"):
        return "rate"
    if leaf in ("month", "week", "starts", "source", "campaign", "owner", "reason", "label", "rule", "range",
                "kind", "outcome", "step", "variant", "code", "lead_id", "promoted_at", "complete", "partial",
                "over_sla", "goal", "verdict", "decided_at"):
        return "text"
    return "count"


def assert_matches_the_report(metrics: dict[str, str], data: dict[str, Any]) -> None:
    assert len(metrics) > 100  # tiles and tables of every section
    for key, text in metrics.items():
        section, _, path = key.partition(".")
        expected = value_at(data, section, path)
        assert text == format_value(expected, kind_of(path)), f"{key}: shows {text!r}, report --json has {expected!r}"


def test_the_dashboard_needs_the_api_key(world: tuple[HttpServer, Settings]) -> None:
    server, _ = world
    anonymous = httpx.get(f"{server.url}/dashboard")
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Basic")
    assert httpx.get(f"{server.url}/dashboard", auth=("marketing", "wrong")).status_code == 401


def test_every_figure_of_the_dashboard_is_the_one_report_json_gives(
        world: tuple[HttpServer, Settings], monkeypatch: pytest.MonkeyPatch) -> None:
    server, settings = world
    page = httpx.get(f"{server.url}/dashboard?days={DAYS}", auth=("marketing", "dash-key"), timeout=30)
    assert page.status_code == 200
    data = report_json(settings, monkeypatch)
    metrics = shown_metrics(page.text)
    assert_matches_the_report(metrics, data)
    # the money, velocity and sales figures a manager looks for are there, with known values
    assert metrics["money.total.spend"] == "17,700.00"  # three months of 2,000 + 1,000 + 2,500 + 400
    assert {"funnel.new_mqls", "velocity.lead_velocity_rate", "money.total.cac", "sales.over_sla"} <= set(metrics)
    assert data["money"]["total"]["spend"] == 17700.0
    assert "<svg" in page.text and "lead velocity rate" in page.text  # the charts, drawn on the server
    assert "Ebook downloaders: steps" in page.text and "rule 1 → demo" in page.text
    assert "up to 3d for demo_request" in page.text  # a wait-for step says what it waits for, not "Wait 0s"
    assert "lead1@example.com" not in page.text  # aggregates and lead ids only
    assert_shows_the_experiments(metrics, data, TRUTH[settings.database_url])
    narrowed = httpx.get(f"{server.url}/dashboard?days={DAYS}&campaign=bench-nurture", auth=("m", "dash-key"))
    assert narrowed.status_code == 200 and "counts are of leads in nurture campaign bench-nurture" in narrowed.text
    assert 'id="ab-bench-nurture-welcome"' in page.text and 'id="ab-welcome-hello"' in page.text
    assert 'id="ab-bench-nurture-welcome"' in narrowed.text and 'id="ab-welcome-hello"' not in narrowed.text
    assert 'id="holdout-welcome"' in page.text and 'id="holdout-welcome"' not in narrowed.text


def assert_shows_the_experiments(metrics: dict[str, str], data: dict[str, Any], truth: ExperimentTruth) -> None:
    """The A/B block of welcome/hello and the holdout block of welcome show the counts written, the call and the
    lift, and the verdicts in the words of ``report --json``."""
    [ab] = [i for i, test in enumerate(data["ab_tests"]) if (test["campaign"], test["step"]) == ("welcome", "hello")]
    for j, variant in enumerate(("a", "b")):
        sends, clicks = truth.variants[variant]
        assert metrics[f"ab_tests.{ab}.variants.{j}.variant"] == variant
        assert metrics[f"ab_tests.{ab}.variants.{j}.sends"] == f"{sends:,}"
        assert metrics[f"ab_tests.{ab}.variants.{j}.conversions"] == f"{clicks:,}"
    assert metrics[f"ab_tests.{ab}.verdict"] == "b beats a on clicks, 95% confidence"
    assert metrics[f"ab_tests.{ab}.winner.variant"] == "b"
    assert metrics[f"ab_tests.{ab}.sent_after_call"] == f"{truth.sent_after_call:,}"
    assert {f"ab_tests.{ab}.comparisons.0.{key}" for key in ("difference", "low", "high", "p_value")} <= set(metrics)
    [holdout] = [i for i, h in enumerate(data["holdouts"]) if h["campaign"] == "welcome"]
    for group in ("sent", "held_out"):
        leads, sqls = truth.groups[group]
        assert (metrics[f"holdouts.{holdout}.{group}.leads"], metrics[f"holdouts.{holdout}.{group}.sql"]) == (
            f"{leads:,}", f"{sqls:,}")
    assert metrics[f"holdouts.{holdout}.verdict"] == data["holdouts"][holdout]["verdict"]
    assert metrics[f"holdouts.{holdout}.verdict"].startswith("the campaign lifts MQL→SQL conversion by +")
    assert metrics[f"holdouts.{holdout}.holdout"] == "10.0%"


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_the_dashboard_renders_in_a_browser_with_the_numbers_of_report_json(
        world: tuple[HttpServer, Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server, settings = world
    url = server.url.replace("http://", "http://marketing:dash-key@") + f"/dashboard?days={DAYS}"
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(["chromium", *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    data = report_json(settings, monkeypatch)
    metrics = shown_metrics(dom.stdout)
    assert_matches_the_report(metrics, data)
    assert_shows_the_experiments(metrics, data, TRUTH[settings.database_url])
    shot = tmp_path / "dashboard.png"
    subprocess.run(["chromium", *flags, "--window-size=1366,900", "--hide-scrollbars", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
