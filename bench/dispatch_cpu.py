"""CPU per email of the dispatcher, in process: --leads leads due now in the benchmark campaign, claimed, decided,
rendered, signed, built, sent to an SMTP sink in its own process and recorded by one :class:`Dispatcher` (its sending
thread included), without the worker's start-up or the sink's own CPU.

    .venv/bin/python bench/dispatch_cpu.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/NAME

Prints the process's CPU time per email (``time.process_time``, the database's own CPU aside) for each of --repeats
passes, each on a database emptied and seeded again, and their minimum and median: on a machine shared with other
work, CPU time is inflated by what runs beside it and never deflated, so the minimum is the steadiest figure to
compare two checkouts by (``bench/side_by_side.py``). Without ``--database-url``, a new SQLite file each pass.
``--profile FILE`` writes a cProfile of the timed passes.
"""

from __future__ import annotations

import argparse
import cProfile
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import seed, smtp_sink, wait_for_count, write_project
from dispatch import _worker, fresh_database

ROOT = Path(__file__).resolve().parents[1]


def one_pass(tmp: Path, database_url: str | None, leads: int, batch: int, profile: cProfile.Profile | None) -> float:
    """CPU seconds per email of one pass on a fresh database."""
    from nurture.application.enroll import enroll_leads

    url = fresh_database(tmp, database_url)
    seed(url, leads, enroll=False)
    campaigns, templates = write_project(tmp, ROOT / "templates")
    with smtp_sink() as (port, counter):
        dispatcher, transport = _worker(url, campaigns, templates, port, batch)
        clock = lambda: datetime.now(timezone.utc)  # noqa: E731
        enroll_leads(dispatcher.engine, dispatcher.catalog, clock())
        if profile is not None:
            profile.enable()
        started = time.process_time()
        report = dispatcher.drain(clock)
        wait_for_count(counter, leads)
        cpu = time.process_time() - started
        if profile is not None:
            profile.disable()
        dispatcher.close()
        transport.close()
        dispatcher.engine.dispose()
        if counter.value != leads or report.sent != leads:
            raise RuntimeError(f"sent {report.sent}, the sink received {counter.value}, of {leads}")
    return cpu / leads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="a PostgreSQL database for the benchmark alone (each pass drops and "
                                               "makes again its public schema); default: a new SQLite file per pass")
    parser.add_argument("--leads", type=int, default=5000, help="emails per pass")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile")
    args = parser.parse_args()
    profile = cProfile.Profile() if args.profile else None
    figures = []
    with tempfile.TemporaryDirectory() as tmp_name:
        one_pass(Path(tmp_name) / "warm-up", args.database_url, min(args.leads, 500), args.batch, None)
        for number in range(args.repeats):
            folder = Path(tmp_name) / f"pass{number}"
            folder.mkdir()
            figures.append(one_pass(folder, args.database_url, args.leads, args.batch, profile) * 1e6)
            print(f"  {figures[-1]:6.1f} us CPU/email", flush=True)
    if profile is not None:
        profile.dump_stats(args.profile)
    ordered = sorted(figures)
    print(f"per email, us CPU: min {ordered[0]:.1f}, median {ordered[len(ordered) // 2]:.1f} "
          f"({args.repeats} passes of {args.leads})")


if __name__ == "__main__":
    main()
