"""The dashboard over a real HTTP server, and in a real browser (headless Chromium) when the machine has one."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from http_server import HttpServer
from test_report import NOW, seed

from nurture.definitions.loader import load_catalog
from nurture.definitions.scoring import ScoringRules
from nurture.intake.app import create_app
from nurture.settings import Settings
from nurture.signing import Signer
from nurture.storage.database import make_engine
from nurture.storage.migrate import upgrade

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGN = """\
id: ebook
name: Ebook downloaders
entry: {stage: mql}
steps:
  - id: welcome
    email:
      template: t.html.j2
      variants: [{id: a, subject: "A"}, {id: b, subject: "B"}]
  - id: later
    wait: 2d
    update: {add_tags: [nurtured]}
"""


@pytest.fixture
def server(tmp_path: Path):
    (tmp_path / "campaigns").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "campaigns" / "ebook.yaml").write_text(CAMPAIGN)
    (tmp_path / "templates" / "t.html.j2").write_text("<p>hi</p>")
    url = f"sqlite:///{tmp_path / 'd.db'}"
    upgrade(url)
    engine = make_engine(url)
    seed(engine)
    settings = Settings(database_url=url, api_key="dash-key", campaigns_dir=tmp_path / "campaigns",
                        templates_dir=tmp_path / "templates")
    catalog = load_catalog(settings.campaigns_dir, settings.templates_dir).raise_for_problems()
    app = create_app(settings, engine=engine, catalog=catalog, rules=ScoringRules(), signer=Signer("s"),
                     clock=lambda: NOW)
    with HttpServer(app) as running:
        yield running
    engine.dispose()


def test_the_dashboard_needs_the_api_key(server: HttpServer) -> None:
    anonymous = httpx.get(f"{server.url}/dashboard")
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Basic")
    assert httpx.get(f"{server.url}/dashboard", auth=("marketing", "wrong")).status_code == 401


def test_the_dashboard_shows_the_funnel_and_each_steps_variants(server: HttpServer) -> None:
    page = httpx.get(f"{server.url}/dashboard?days=30", auth=("marketing", "dash-key"))
    assert page.status_code == 200
    html = page.text
    assert '<b id="new-mql">10</b>' in html and '<b id="new-sql">4</b>' in html
    assert "MQL&rarr;SQL 40.0%" in html and "acceptance 50.0%" in html
    assert "Ebook downloaders" in html and "stage:sql 2" in html
    # the A/B variants of the welcome step side by side, with their open rates (3 of 5 and 1 of 4)
    assert "<td>a</td><td class=\"n\">5</td>" in html and "60.0%" in html and "25.0%" in html
    assert "l1@example.com" not in html  # aggregates only


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_the_dashboard_renders_in_a_browser(server: HttpServer, tmp_path: Path) -> None:
    url = server.url.replace("http://", "http://marketing:dash-key@") + "/dashboard"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(["chromium", *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Ebook downloaders" in dom.stdout and 'id="new-sql">4<' in dom.stdout
    shot = tmp_path / "dashboard.png"
    subprocess.run(["chromium", *flags, "--window-size=1280,900", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
