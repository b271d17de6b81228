"""``nurture replay`` and ``nurture scoring impact`` over many leads: throughput and peak memory, beside the nightly
rescoring (``rescore_all``, which reads the same leads) as the baseline, each in a fresh process, on SQLite.

    .venv/bin/python bench/impact.py --leads 20000 100000

For each size a database is written directly (as an import of old data would): every lead in a three-step drip
campaign, enrolled at a time spread over the last 40 days, its recorded path and deliveries as the worker would have
left them, and ``--events`` scored events over the last 60 days. The replay compares the campaign with a version whose
wait is a day shorter over the last 30 days; the impact compares scoring rules that double a click's points. Peak
memory is the Python heap's peak during the call (tracemalloc, in a second run: the timed run is untraced), beside
the process's maximum resident size (which also counts SQLite's cache): a flat heap across sizes means the reads are
paged, not loaded at once.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sqlite3
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nurture.storage.migrate import upgrade

DRIP = """\
id: drip
name: Drip
entry: {stage: mql}
steps:
  - id: welcome
    email: {template: welcome.html.j2, subject: Welcome}
  - id: tips
    wait: 2d
    email: {template: tips.html.j2, subject: Tips}
  - id: offer
    wait: 3d
    email: {template: offer.html.j2, subject: Offer}
"""
SCORING = "behaviour:\n  events:\n    email_open: 1\n    email_click: 10\n    page_view: {points: 2, max_per_day: 5}\n" \
          "thresholds:\n  mql: 40\n"
SALES = "promotion:\n  score_and_fit:\n    - {name: engaged, score: 60}\n"
TYPES = ["email_open", "page_view", "email_click", "page_view"]


def stamp(at: datetime) -> str:
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def write_folders(root: Path) -> tuple[Path, Path]:
    old, new = root / "old", root / "new"
    for folder, drip, scoring in ((old, DRIP, SCORING), (new, DRIP.replace("wait: 3d", "wait: 2d"),
                                                          SCORING.replace("email_click: 10", "email_click: 20"))):
        folder.mkdir(parents=True)
        (folder / "drip.yaml").write_text(drip, encoding="utf-8")
        (folder / "scoring.yaml").write_text(scoring, encoding="utf-8")
        (folder / "sales.yaml").write_text(SALES, encoding="utf-8")
    return old, new


def build(path: Path, leads: int, events: int, now: datetime) -> None:
    upgrade(f"sqlite:///{path}")
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO lead (id, email, tags, fields, stage, score, created_at, updated_at, stage_changed_at) "
            "VALUES (?, ?, '[]', '{}', 'mql', 0, ?, ?, ?)",
            [(i, f"lead{i}@impact.example", stamp(now), stamp(now), stamp(now)) for i in range(1, leads + 1)])
        enrollments, deliveries, rows = [], [], []
        for i in range(1, leads + 1):
            enrolled = now - timedelta(minutes=(i * 7919) % (40 * 24 * 60))
            path, sent, at = [], [], enrolled
            for step, wait in (("welcome", 0), ("tips", 2), ("offer", 3)):
                at = at + timedelta(days=wait)
                if at > now:
                    break
                path.append({"step": step, "at": at.isoformat(), "outcome": "sent", "detail": ""})
                sent.append((step, at))
            done = len(sent) == 3
            waiting = None if done else ("welcome", "tips", "offer")[len(sent)]
            enrollments.append((i, i, "completed" if done else "active", waiting, stamp(sent[-1][1] if sent else enrolled),
                                json.dumps({"path": path}), stamp(enrolled), stamp(at) if done else None,
                                "completed" if done else None))
            deliveries += [(i, i, step, step, stamp(sent_at), stamp(sent_at)) for step, sent_at in sent]
            rows += [(i, TYPES[k % len(TYPES)], stamp(now - timedelta(minutes=(i * 31 + k * 977) % (60 * 24 * 60))),
                      stamp(now), float(k % 3)) for k in range(i % (2 * events + 1))]  # ``events`` on average
        db.executemany(
            "INSERT INTO enrollment (id, lead_id, campaign_id, status, step_id, arrived_at, state, priority, "
            "enrolled_at, ended_at, end_reason) VALUES (?, ?, 'drip', ?, ?, ?, ?, 0, ?, ?, ?)", enrollments)
        db.executemany(
            "INSERT INTO delivery (enrollment_id, lead_id, campaign_id, step_id, step_key, channel, status, attempts, "
            "created_at, sent_at) VALUES (?, ?, 'drip', ?, ?, 'email', 'sent', 1, ?, ?)", deliveries)
        db.executemany("INSERT INTO engagement_event (lead_id, type, occurred_at, recorded_at, properties, points) "
                       "VALUES (?, ?, ?, ?, '{}', ?)", rows)


def _job(kind: str, url: str, old: str, new: str, now: datetime, traced: bool, out: Any) -> None:
    from nurture.application.definition_impact import scoring_impact
    from nurture.application.replay import replay
    from nurture.application.rescore import rescore_all
    from nurture.definitions.loader import load_catalog
    from nurture.definitions.sales import load_sales
    from nurture.definitions.scoring import load_scoring
    from nurture.storage.database import make_engine

    engine = make_engine(url)
    if traced:
        tracemalloc.start()
    started = time.perf_counter()
    if kind == "replay":
        report = replay(engine, load_catalog(Path(old)), load_catalog(Path(new)), since=now - timedelta(days=30),
                        now=now)
        count, detail = report.enrollments, report.campaigns["drip"].changed
    elif kind == "impact":
        impact = scoring_impact(engine, load_scoring(Path(old))[0], load_scoring(Path(new))[0],
                                load_sales(Path(old))[0], load_sales(Path(new))[0], now=now)
        count, detail = impact.leads, impact.band_changes.count
    else:
        count = detail = rescore_all(engine, load_scoring(Path(old))[0], now)
    seconds = time.perf_counter() - started
    heap = tracemalloc.get_traced_memory()[1] / 2**20 if traced else 0.0
    engine.dispose()
    out.put((seconds, count, detail, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, heap))


def run(kind: str, url: str, old: Path, new: Path, now: datetime, *, traced: bool) -> tuple[float, int, int, float,
                                                                                              float]:
    context = mp.get_context("spawn")
    out = context.Queue()
    process = context.Process(target=_job, args=(kind, url, str(old), str(new), now, traced, out))
    process.start()
    result = out.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, nargs="+", default=[20000, 100000])
    parser.add_argument("--events", type=int, default=10, help="events per lead")
    args = parser.parse_args()
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        old, new = write_folders(root / "definitions")
        print(f"{'leads':>8} {'job':8} {'seconds':>8} {'per second':>11} {'RSS MB':>7} {'heap MB':>8}  counted")
        for leads in args.leads:
            path = root / f"impact-{leads}.db"
            build(path, leads, args.events, now)
            for kind in ("rescore", "impact", "replay"):
                # the rescoring writes scores: it runs on a copy
                target = path
                if kind == "rescore":
                    target = root / "rescore.db"
                    target.write_bytes(path.read_bytes())
                seconds, count, detail, rss, _heap = run(kind, f"sqlite:///{target}", old, new, now, traced=False)
                if kind == "rescore":
                    target.write_bytes(path.read_bytes())
                heap = run(kind, f"sqlite:///{target}", old, new, now, traced=True)[4]
                what = {"replay": "enrollments, changed", "impact": "leads, band changes",
                        "rescore": "scores changed"}[kind]
                print(f"{leads:>8} {kind:8} {seconds:>8.2f} {count / seconds:>11,.0f} {rss:>7.0f} {heap:>8.1f}  "
                      f"{count} / {detail} ({what})")


if __name__ == "__main__":
    main()
