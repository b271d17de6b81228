"""Benchmark: nurture's CSV lead import against a raw sqlite3 executemany of the same rows.

    .venv/bin/python bench/import_leads.py [--rows 1000000] [--batch-size 5000]

Generates realistic lead rows into a CSV in a temporary folder, imports them into a fresh, migrated SQLite
file with ``import_leads_csv`` (validation, upsert, stage history; then again with the shipped scoring rules, each
lead's stored score brought up to date as ``nurture leads import`` does; and its first pass alone, which finds the
emails that repeat, with its peak memory), then, as the baseline, reads the same
file with the csv module and inserts the rows with the ``sqlite3`` module's executemany into the same table
of another fresh database (one transaction, no validation, no upsert).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
import tracemalloc
import unicodedata
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nurture.application.import_leads import import_leads_csv
from nurture.clock import SYSTEM_CLOCK
from nurture.definitions.scoring import load_scoring
from nurture.storage.database import make_engine
from nurture.storage.migrate import upgrade

ROOT = Path(__file__).resolve().parents[1]

FIRST = ["Ada", "Grace", "Linus", "Margaret", "Alan", "Barbara", "Dennis", "Frances", "Ken", "Radia", "José", "Zoë"]
LAST = ["Lovelace", "Hopper", "Torvalds", "Hamilton", "Turing", "Liskov", "Ritchie", "Allen", "Thompson", "Perlman"]
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark Industries", "Wayne Enterprises", "Soylent"]
TITLES = ["CTO", "VP Engineering", "Head of Marketing", "Developer", "Data Engineer", "CEO", "Product Manager"]
INDUSTRIES = ["software", "retail", "finance", "healthcare", "manufacturing", "education"]
PLACES = [("US", "America/New_York"), ("US", "America/Los_Angeles"), ("DE", "Europe/Berlin"),
          ("FR", "Europe/Paris"), ("GB", "Europe/London"), ("JP", "Asia/Tokyo"), ("BR", "America/Sao_Paulo")]
TAGS = ["webinar", "trial", "newsletter", "ebook", "event", "partner"]
HEADER = ["email", "first_name", "last_name", "company", "title", "industry", "company_size", "country", "timezone",
          "stage", "tags", "lead_source", "utm_campaign"]


def _ascii(name: str) -> str:
    """The name without its accents (José: Jose): nurture takes only ASCII before an email's @-sign."""
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """Write ``rows`` lead rows (10% mql, the rest lead) with two custom columns."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for number in range(rows):
            first, last, company = rng.choice(FIRST), rng.choice(LAST), rng.choice(COMPANIES)
            country, zone = rng.choice(PLACES)
            writer.writerow([
                f"{_ascii(first)}.{last}.{number}@{company.split()[0].lower()}.example.com",
                first, last, company, rng.choice(TITLES), rng.choice(INDUSTRIES), rng.choice((10, 50, 200, 1000, 5000)),
                country, zone, "mql" if rng.random() < 0.1 else "lead", ";".join(rng.sample(TAGS, rng.randint(0, 3))),
                rng.choice(("ads", "organic", "referral")), f"spring-{rng.randint(1, 9)}",
            ])


def nurture_import(csv_path: Path, db_path: Path, batch_size: int, rules: Any = None) -> tuple[float, float, int]:
    """Seconds (wall, CPU) nurture's importer takes, and the rows it imported."""
    engine = make_engine(f"sqlite:///{db_path}")
    upgrade(engine)
    started, cpu_started = time.perf_counter(), time.process_time()
    report = import_leads_csv(engine, csv_path, clock=SYSTEM_CLOCK, batch_size=batch_size, rules=rules)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    engine.dispose()
    assert not report.rejected, report.rejected[:5]
    return elapsed, cpu, report.imported


def first_pass(csv_path: Path) -> tuple[float, float] | None:
    """CPU seconds and peak MB of the importer's first pass alone (the emails that repeat), None in a checkout
    without one."""
    try:
        from nurture.application.import_leads import _last_lines
    except ImportError:
        return None
    cpu_started = time.process_time()
    _last_lines(csv_path, 0)
    cpu = time.process_time() - cpu_started
    tracemalloc.start()
    _last_lines(csv_path, 0)
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return cpu, peak


def baseline_import(csv_path: Path, db_path: Path) -> tuple[float, float, int]:
    """Seconds a bare import takes: the csv module and the sqlite3 module's executemany into the same table,
    one transaction, no validation, no upsert, no stage history."""
    engine = make_engine(f"sqlite:///{db_path}")
    upgrade(engine)
    engine.dispose()
    connection = sqlite3.connect(db_path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    started, cpu_started = time.perf_counter(), time.process_time()
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        rows = [
            (*row[:6], int(row[6]), row[7], row[8], row[9], json.dumps(row[10].split(";") if row[10] else []),
             json.dumps({"lead_source": row[11], "utm_campaign": row[12]}), 0.0, now, now, now)
            for row in reader
        ]
    connection.execute("BEGIN IMMEDIATE")
    connection.executemany(
        "INSERT INTO lead (email, first_name, last_name, company, title, industry, company_size, country, timezone,"
        " stage, tags, fields, score, created_at, updated_at, stage_changed_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    connection.execute("COMMIT")
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    connection.close()
    return elapsed, cpu, len(rows)


def main(argv: list[str] | None = None) -> None:
    """Run both imports and print rows/s side by side."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows to generate (default 100000)")
    parser.add_argument("--batch-size", type=int, default=5000, help="importer batch size (default 5000)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nurture-bench-") as folder:
        csv_path = Path(folder) / "leads.csv"
        generate(csv_path, args.rows)
        size = csv_path.stat().st_size / 1e6
        print(f"{args.rows} rows, {size:.1f} MB CSV, SQLite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}")
        rules, problems = load_scoring(ROOT / "campaigns")
        assert not problems, problems
        ours, ours_cpu, ours_rows = nurture_import(csv_path, Path(folder) / "nurture.db", args.batch_size)
        scored, scored_cpu, scored_rows = nurture_import(csv_path, Path(folder) / "scored.db", args.batch_size, rules)
        base, base_cpu, base_rows = baseline_import(csv_path, Path(folder) / "baseline.db")
        first = first_pass(csv_path)
    print(f"nurture import_leads_csv : {ours:6.1f} s wall {ours_cpu:6.1f} s CPU {ours_rows / ours:9,.0f} rows/s"
          "  (parse + validate + upsert + stage history)")
    if first is not None:
        print(f"  its first pass alone   :                {first[0]:6.1f} s CPU {first[1]:9,.0f} MB peak"
              "  (which emails repeat in the file)")
    print(f"  with the scoring rules : {scored:6.1f} s wall {scored_cpu:6.1f} s CPU {scored_rows / scored:9,.0f} rows/s"
          "  (and each lead's stored score, as `nurture leads import` does)")
    print(f"csv + sqlite3 executemany: {base:6.1f} s wall {base_cpu:6.1f} s CPU {base_rows / base:9,.0f} rows/s"
          "  (parse + plain INSERT, one transaction)")
    print(f"ratio                    : {ours / base:6.2f}x the baseline's wall time, "
          f"{ours_cpu / base_cpu:.2f}x its CPU")
    print(f"load average             : {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
