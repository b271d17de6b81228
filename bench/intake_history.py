"""Intake cost against a lead's history: recording an event for leads that already have H scored events, against the
same batches for leads with none (the baseline), in one run, in this process (``record_events`` with the shipped
campaigns, scoring and sales rules on SQLite; no HTTP).

    .venv/bin/python bench/intake_history.py --history 0 100 300 1000

Scoring needs each lead's history: its scored events summed per type (decay included) and counted per day for the
daily caps. The first batch after the history was written reads it (the database does the sums) and stores each
lead's score state; the later batches fold that state in. Both are printed: the first batch, and the median of the
others.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from nurture.application.event_input import EventIn
from nurture.application.record_events import record_events
from nurture.definitions.loader import load_catalog
from nurture.definitions.sales import load_sales
from nurture.definitions.scoring import load_scoring
from nurture.storage.database import make_engine
from nurture.storage.migrate import upgrade

ROOT = Path(__file__).resolve().parents[1]
TYPES = ["page_view", "email_open", "email_click", "content_download", "webinar_attended", "pricing_page_view"]


def per_event_us(history: int, leads: int, batches: int, folder: Path) -> float:
    """Microseconds per event of the first of ``batches`` batches (one event per lead each) for leads with ``history``
    scored events spread over the past year, and the median of the others."""
    url = f"sqlite:///{folder / f'history{history}.db'}"
    upgrade(url)
    engine = make_engine(url)
    catalog = load_catalog(ROOT / "campaigns", ROOT / "templates").raise_for_problems()
    rules, problems = load_scoring(ROOT / "campaigns")
    sales, sales_problems = load_sales(ROOT / "campaigns")
    if problems or sales_problems:
        sys.exit(f"the shipped campaigns have problems: {problems + sales_problems}")
    now = datetime.now(timezone.utc)
    emails = [f"lead{i}@history.example" for i in range(leads)]
    record_events(engine, catalog, rules, [EventIn(email, "page_view", occurred_at=now) for email in emails],
                  now=now, actor="api", sales=sales)
    if history:
        with sqlite3.connect(folder / f"history{history}.db") as db:
            ids = [row[0] for row in db.execute("SELECT id FROM lead WHERE email LIKE '%@history.example'")]
            start = now - timedelta(days=365)
            rows = [(lead_id, TYPES[k % len(TYPES)],
                     (start + timedelta(minutes=k * 525_600 // history)).replace(tzinfo=None).isoformat(" ", "microseconds"),
                     now.replace(tzinfo=None).isoformat(" ", "microseconds"), "{}", 1.0)
                    for lead_id in ids for k in range(history)]
            db.executemany("INSERT INTO engagement_event (lead_id, type, occurred_at, recorded_at, properties, points) "
                           "VALUES (?, ?, ?, ?, ?, ?)", rows)
            # events written past the intake: the leads' score states no longer stand for their histories
            db.execute("UPDATE lead SET score_state = NULL")
    samples = []
    for number in range(batches):
        at = now + timedelta(seconds=number + 1)
        events = [EventIn(email, TYPES[(number + i) % len(TYPES)], occurred_at=at) for i, email in enumerate(emails)]
        started = time.perf_counter()
        record_events(engine, catalog, rules, events, now=at, actor="api", sales=sales)
        samples.append((time.perf_counter() - started) / len(events) * 1e6)
    engine.dispose()
    return samples[0], sorted(samples[1:])[len(samples[1:]) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history", type=int, nargs="+", default=[0, 100, 300, 1000],
                        help="scored events per lead before the timed batches")
    parser.add_argument("--leads", type=int, default=100, help="leads per batch (one event each)")
    parser.add_argument("--batches", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        first_baseline, baseline = per_event_us(0, args.leads, args.batches, Path(tmp))
        print(f"history     0: {baseline:7.0f} us per event (the baseline); first batch {first_baseline:7.0f} us",
              flush=True)
        for history in (h for h in args.history if h):
            first, cost = per_event_us(history, args.leads, args.batches, Path(tmp))
            print(f"history {history:5d}: {cost:7.0f} us per event, {cost / baseline:.1f}x the baseline; "
                  f"first batch (reads the history) {first:7.0f} us, {first / first_baseline:.1f}x", flush=True)


if __name__ == "__main__":
    main()
