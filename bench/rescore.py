"""The nightly rescoring (``rescore_all``: every stored score brought up to date with decay) from the leads' score
states, against the same run reading every lead's scored events (the states cleared: the baseline), in one run, in
this process, on SQLite with the shipped scoring rules.

    .venv/bin/python bench/rescore.py --leads 20000 --history 50

Each lead gets ``--history`` scored events spread over the past year (written directly, as an import of old
engagement would), then one event through ``record_events``, which reads that history once and stores the lead's
score state. Rescoring a day later then runs twice on copies of the same database: with the states, and with them
cleared.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from nurture.application.event_input import EventIn
from nurture.application.record_events import record_events
from nurture.application.rescore import rescore_all
from nurture.definitions.loader import load_catalog
from nurture.definitions.scoring import load_scoring
from nurture.storage.database import make_engine
from nurture.storage.migrate import upgrade

ROOT = Path(__file__).resolve().parents[1]
TYPES = ["page_view", "email_open", "email_click", "content_download", "webinar_attended", "pricing_page_view"]


def build(path: Path, leads: int, history: int, now: datetime) -> None:
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = make_engine(url)
    catalog = load_catalog(ROOT / "campaigns", ROOT / "templates").raise_for_problems()
    rules, problems = load_scoring(ROOT / "campaigns")
    if problems:
        sys.exit(f"the shipped scoring rules have problems: {problems}")
    emails = [f"lead{i}@rescore.example" for i in range(leads)]
    for start in range(0, leads, 1000):  # the leads, created by an event
        record_events(engine, catalog, rules, [EventIn(email, "page_view", occurred_at=now - timedelta(days=400))
                                               for email in emails[start : start + 1000]], now=now, actor="api")
    with sqlite3.connect(path) as db:
        ids = [row[0] for row in db.execute("SELECT id FROM lead")]
        begin = now - timedelta(days=365)
        for lead_id in ids:
            db.executemany(
                "INSERT INTO engagement_event (lead_id, type, occurred_at, recorded_at, properties, points) "
                "VALUES (?, ?, ?, ?, '{}', ?)",
                [(lead_id, TYPES[k % len(TYPES)],
                  (begin + timedelta(minutes=k * 525_600 // history)).replace(tzinfo=None).isoformat(" ", "microseconds"),
                  now.replace(tzinfo=None).isoformat(" ", "microseconds"), float(1 + k % 5)) for k in range(history)])
        db.execute("UPDATE lead SET score_state = NULL")  # events written past intake: the states no longer stand
    for start in range(0, leads, 1000):  # one more event each: the history read once, the state stored
        record_events(engine, catalog, rules, [EventIn(email, "email_click", occurred_at=now)
                                               for email in emails[start : start + 1000]], now=now, actor="api")
    engine.dispose()


def timed_rescore(path: Path, at: datetime) -> tuple[float, int]:
    engine = make_engine(f"sqlite:///{path}")
    rules, _problems = load_scoring(ROOT / "campaigns")
    started = time.perf_counter()
    changed = rescore_all(engine, rules, at)
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds, changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=20000)
    parser.add_argument("--history", type=int, default=50, help="scored events per lead")
    args = parser.parse_args()
    now = datetime.now(timezone.utc)
    with tempfile.TemporaryDirectory() as tmp:
        states, cleared = Path(tmp) / "states.db", Path(tmp) / "cleared.db"
        build(states, args.leads, args.history, now)
        shutil.copy(states, cleared)
        with sqlite3.connect(cleared) as db:
            db.execute("UPDATE lead SET score_state = NULL")
        with sqlite3.connect(states) as db:
            without = db.execute("SELECT COUNT(*) FROM lead WHERE score_state IS NULL").fetchone()[0]
        if without:
            sys.exit(f"{without} lead(s) have no score state: the benchmark would not measure what it says")
        later = now + timedelta(days=1)
        with_states, changed = timed_rescore(states, later)
        baseline, changed_baseline = timed_rescore(cleared, later)
        if changed != changed_baseline:
            sys.exit(f"the two runs changed {changed} and {changed_baseline} scores")
        scores = []
        for path in (states, cleared):
            with sqlite3.connect(path) as db:
                scores.append(dict(db.execute("SELECT email, score FROM lead")))
        differ = max(abs(scores[0][email] - scores[1][email]) for email in scores[0])
        if differ > 0.0100001:  # scores are kept to two decimals: sums in another order may round 0.01 apart
            sys.exit(f"the stored scores differ by up to {differ}")
        events = args.leads * (args.history + 2)
        print(f"{args.leads:,} leads, {events:,} events; {changed:,} scores changed, the same to {differ:.2f}")
        print(f"rescore_all from score states     {with_states:7.2f} s  ({args.leads / with_states:9,.0f} leads/s)")
        print(f"rescore_all reading every history {baseline:7.2f} s  ({args.leads / baseline:9,.0f} leads/s)  "
              f"{baseline / with_states:.1f}x the time")


if __name__ == "__main__":
    main()
