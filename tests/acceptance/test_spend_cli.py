"""``nurture spend import`` and ``nurture check`` on spend files, through the installed console script."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

from db_fixtures import engine, migrated_url, postgres_available, postgres_template  # noqa: F401  (fixtures)
from sqlalchemy import select
from sqlalchemy.engine import Engine
from test_cli_authoring import make_project, nurture

from nurture.storage.database import transaction
from nurture.storage.tables import SP

CAMPAIGN = "id: c\nname: C\nsteps:\n  - id: s\n    email: {template: t.html.j2, subject: Hi}\n"


def stored(engine: Engine) -> list[tuple[object, ...]]:
    with transaction(engine, read_only=True) as conn:
        return [tuple(row) for row in conn.execute(
            select(SP.c.period_start, SP.c.period_end, SP.c.source, SP.c.campaign, SP.c.amount_cents, SP.c.currency)
            .order_by(SP.c.source))]


def test_a_spend_file_with_a_bad_row_writes_nothing_and_names_every_bad_line(
        tmp_path: Path, engine: Engine, migrated_url: str) -> None:
    env = {"NURTURE_DATABASE_URL": migrated_url}
    bad = tmp_path / "spend.csv"
    bad.write_text("period,channel,campaign,amount,currency\n"
                   "2026-03,google,,1200.50,EUR\n"            # 2: good
                   "2026-13,bing,,10,EUR\n"                   # 3
                   "2026-03,meta,,\"1,200\",EUR\n"            # 4
                   "2026-03,,,5,EUR\n"                        # 5
                   "2026-03,google,,7,EUR\n", encoding="utf-8")  # 6: line 2 again
    result = nurture(tmp_path, "spend", "import", str(bad), env=env)
    assert result.returncode == 1
    assert re.findall(r"spend\.csv:(\d+): ", result.stderr) == ["3", "4", "5", "6"]
    assert "no thousands separators" in result.stderr and "source is required" in result.stderr
    assert stored(engine) == []
    good = tmp_path / "good.csv"
    good.write_text("Period,Source,Campaign,Amount,Currency\n2026-03,google,,1200.50,EUR\n"
                    "2026-W10,linkedin,abm,800,eur\n", encoding="utf-8")
    result = nurture(tmp_path, "spend", "import", str(good), env=env)
    assert result.returncode == 0, result.stderr
    assert "imported 2 spend rows" in result.stdout
    assert stored(engine) == [(date(2026, 3, 1), date(2026, 3, 31), "google", "", 120050, "EUR"),
                              (date(2026, 3, 2), date(2026, 3, 8), "linkedin", "abm", 80000, "EUR")]
    again = tmp_path / "again.csv"
    again.write_text("period,source,amount,currency\n2026-03,google,1300,EUR\n", encoding="utf-8")
    assert nurture(tmp_path, "spend", "import", str(again), env=env).returncode == 0
    assert stored(engine)[0][4] == 130000  # the same period and source: replaced, not added


def test_check_reports_spend_yaml_problems_at_their_lines(tmp_path: Path) -> None:
    root = make_project(tmp_path, {"c.yaml": CAMPAIGN,
                                   "spend.yaml": "currency: EUR\nspend:\n  - {period: 2026-03, source: g, amount: 5}\n"
                                                 "  - {period: 2026-3-1, source: g, amount: 5}\n"},
                        {"t.html.j2": "<p>hi</p>"})
    result = nurture(root, "check", "--campaigns", "campaigns", "--templates", "templates")
    assert result.returncode == 1
    assert "spend.yaml:4: period '2026-3-1' is not a day" in result.stdout + result.stderr
    (root / "campaigns" / "spend.yaml").write_text("currency: EUR\nspend:\n  - {period: 2026-03, source: g, amount: 5}\n",
                                                   encoding="utf-8")
    result = nurture(root, "check", "--campaigns", "campaigns", "--templates", "templates")
    assert result.returncode == 0, result.stdout + result.stderr


README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_spend_examples_are_accepted(tmp_path: Path, engine: Engine, migrated_url: str) -> None:
    text = README.read_text(encoding="utf-8")
    csv_example = re.search(r"```csv\n(period,source,campaign,amount,currency\n.*?)```", text, re.S)
    yaml_example = re.search(r"```yaml\n(currency: EUR  .*?)```", text, re.S)
    assert csv_example and yaml_example
    (tmp_path / "spend.csv").write_text(csv_example[1], encoding="utf-8")
    result = nurture(tmp_path, "spend", "import", "spend.csv", env={"NURTURE_DATABASE_URL": migrated_url})
    assert result.returncode == 0, result.stderr
    assert len(stored(engine)) == 2
    root = make_project(tmp_path / "project", {"c.yaml": CAMPAIGN, "spend.yaml": yaml_example[1]},
                        {"t.html.j2": "<p>hi</p>"})
    result = nurture(root, "check", "--campaigns", "campaigns", "--templates", "templates")
    assert result.returncode == 0, result.stdout + result.stderr
