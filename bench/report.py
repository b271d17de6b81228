"""How long ``nurture report`` and the dashboard take on a large database (made by ``bench/report_data.py``).

For each period (the last 30, 90 and 365 days before the dataset's end, 2026-04-01): the report built in process
(median of ``--repeat`` runs), the whole ``nurture report --format json`` command in a subprocess (interpreter start
included), and ``GET /dashboard`` over HTTP from an in-process server.

    .venv/bin/python bench/report_data.py --leads 1000000 --events 10000000 --database-url sqlite:////tmp/report.db
    .venv/bin/python bench/report.py --database-url sqlite:////tmp/report.db
    .venv/bin/python bench/report.py --database-url postgresql://postgres@127.0.0.1:5432/bench_report

Target (the report issue): under 2 s for the report and the dashboard on 1,000,000 leads and 10,000,000 events.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_data import NOW

NURTURE = Path(sys.executable).with_name("nurture")
CAMPAIGN = ("id: bench-nurture\nname: Bench nurture\nentry: {stage: mql}\nsteps:\n  - id: welcome\n"
            "    email: {template: t.html.j2, subject: Hi}\n")


def _median(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:,.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--days", default="30,90,365")
    args = parser.parse_args()

    from sqlalchemy import func, select

    from nurture.application.report import build_report
    from nurture.definitions.loader import load_catalog
    from nurture.definitions.scoring import ScoringRules
    from nurture.intake.app import create_app
    from nurture.settings import Settings
    from nurture.signing import Signer
    from nurture.storage.database import make_engine
    from nurture.storage.tables import EV, L

    engine = make_engine(args.database_url)
    with engine.connect() as conn:
        leads = conn.execute(select(func.count()).select_from(L)).scalar_one()
        events = conn.execute(select(func.count()).select_from(EV)).scalar_one()
    print(f"{engine.dialect.name}: {leads:,} leads, {events:,} events")
    folder = Path(tempfile.mkdtemp())
    (folder / "campaigns").mkdir()
    (folder / "templates").mkdir()
    (folder / "campaigns" / "bench.yaml").write_text(CAMPAIGN)
    (folder / "templates" / "t.html.j2").write_text("<p>hi</p>")
    settings = Settings(database_url=args.database_url, api_key="bench", campaigns_dir=folder / "campaigns",
                        templates_dir=folder / "templates")
    catalog = load_catalog(settings.campaigns_dir, settings.templates_dir)
    app = create_app(settings, engine=engine, catalog=catalog, rules=ScoringRules(), signer=Signer("s"),
                     clock=lambda: NOW)
    env = {**os.environ, "NURTURE_DATABASE_URL": args.database_url, "NURTURE_CAMPAIGNS_DIR": str(folder / "campaigns")}
    print(f"{'period':>8}  {'report (in process)':>20}  {'nurture report --json':>22}  {'GET /dashboard':>15}")
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        for days in (int(d) for d in args.days.split(",")):
            since = NOW - timedelta(days=days)
            built = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                build_report(engine, since=since, until=NOW, now=NOW, catalog=catalog)
                built.append(time.perf_counter() - started)
            command = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                subprocess.run([str(NURTURE), "report", "--since", since.isoformat(), "--until", NOW.isoformat(),
                                "--format", "json"], env=env, check=True, capture_output=True)
                command.append(time.perf_counter() - started)
            page = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                response = client.get(f"/dashboard?days={days}", auth=("bench", "bench"))
                page.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text[:500]
            print(f"{days:>5} d  {_median(built):>20}  {_median(command):>22}  {_median(page):>15}")
    engine.dispose()


if __name__ == "__main__":
    main()
