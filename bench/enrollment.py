"""Benchmark: enrollment at scale, through the console script as an operator runs it.

    .venv/bin/python bench/enrollment.py --leads 100000 [--database-url postgresql+psycopg://postgres@127.0.0.1/bench_enroll]
        [--idle-seconds 60] [--skip-idle]

Generates ``--leads`` leads (30% mql, the rest lead; each tagged with each shipped campaign's entry tag with
probability 0.12, plus some other tags), then, on a fresh database (a SQLite file in a temporary folder, or the
PostgreSQL database the URL names, created and dropped by the benchmark) with the shipped campaigns:

1. ``nurture leads import FILE``: the leads and their enrollments (wall, CPU, peak memory of the process);
2. moves every enrollment's next step a month ahead, so that nothing is due;
3. ``nurture run --once --no-http`` twice: the first run after the import, then one with nothing changed since; then
   ``Worker.run_once()`` in the benchmark's process, without the console script's start-up (interpreter, imports);
4. ``nurture run --no-http`` with nothing due: once its start-up work is done (its CPU use has settled), its CPU
   time over ``--idle-seconds`` as a share of one core.

The same script runs in a checkout of the code before (``bench/side_by_side.py``), as it only uses the console
script and SQL.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
NURTURE = Path(sys.executable).parent / "nurture"
CAMPAIGN_TAGS = ["ebook-download", "pricing-page", "webinar-attendee", "long-term-nurture"]
OTHER_TAGS = ["newsletter", "trial", "partner"]
INDUSTRIES = ["software", "retail", "finance", "healthcare", "manufacturing", "education"]
PLACES = [("US", "America/New_York"), ("DE", "Europe/Berlin"), ("GB", "Europe/London"), ("JP", "Asia/Tokyo")]


def generate(path: Path, leads: int, seed: int = 11) -> None:
    """Write the leads' CSV."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "first_name", "company", "industry", "company_size", "country", "timezone", "stage",
                         "tags", "lead_source"])
        for number in range(leads):
            country, zone = rng.choice(PLACES)
            tags = [t for t in CAMPAIGN_TAGS if rng.random() < 0.12] + [t for t in OTHER_TAGS if rng.random() < 0.2]
            writer.writerow([f"lead{number}@example{number % 97}.com", f"Lead{number}", f"Company {number % 5000}",
                             rng.choice(INDUSTRIES), rng.choice((10, 50, 200, 1000)), country, zone,
                             "mql" if rng.random() < 0.3 else "lead", ";".join(tags),
                             rng.choice(("ads", "organic", "referral"))])


def _env(url: str, folder: Path) -> dict[str, str]:
    return {**os.environ, "NURTURE_DATABASE_URL": url, "NURTURE_CAMPAIGNS_DIR": str(ROOT / "campaigns"),
            "NURTURE_TEMPLATES_DIR": str(ROOT / "templates"), "NURTURE_MAIL_URL": f"file://{folder / 'mail'}",
            "NURTURE_SECRET_KEY": "bench-secret-key-bench-secret-key", "NURTURE_API_KEY": "bench"}


def timed(args: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """Run ``nurture ARGS``; (wall seconds, CPU seconds, peak resident MB, output). Raises when it fails."""
    started = time.perf_counter()
    process = subprocess.Popen([str(NURTURE), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               cwd=ROOT)
    output = process.stdout.read().decode() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"nurture {' '.join(args)} failed ({process.returncode}):\n{output[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, output


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def idle_worker(env: dict[str, str], seconds: float) -> tuple[float, float]:
    """Start ``nurture run --no-http``; (seconds until its CPU use settled, share of a core over ``seconds`` after)."""
    process = subprocess.Popen([str(NURTURE), "run", "--no-http"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        started = time.perf_counter()
        last = _cpu_seconds(process.pid)
        settled_for = 0
        while settled_for < 3:  # three seconds in a row under 5% of a core: start-up is over
            time.sleep(1)
            if process.poll() is not None:
                raise SystemExit("the worker exited")
            now = _cpu_seconds(process.pid)
            settled_for = settled_for + 1 if now - last < 0.05 else 0
            last = now
        settled = time.perf_counter() - started
        before, at = _cpu_seconds(process.pid), time.perf_counter()
        time.sleep(seconds)
        return settled, (_cpu_seconds(process.pid) - before) / (time.perf_counter() - at)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()


def run_once_in_process(env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds of ``Worker.run_once()`` in this process, the worker built beforehand."""
    from nurture.settings import Settings
    from nurture.worker.runner import Worker

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        worker = Worker(Settings(_env_file=None))
        started, cpu = time.perf_counter(), time.process_time()
        worker.run_once()
        return time.perf_counter() - started, time.process_time() - cpu
    finally:
        worker.engine.dispose()
        os.environ.clear()
        os.environ.update(saved)


def _admin(url: str) -> Any:
    return sa.create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")


def fresh_database(url: str) -> None:
    if not url.startswith("postgresql"):
        return
    name = make_url(url).database
    admin = _admin(url)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()


def drop_database(url: str) -> None:
    if url.startswith("postgresql"):
        admin = _admin(url)
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {make_url(url).database} WITH (FORCE)")
        admin.dispose()


def nothing_due(url: str) -> int:
    """Move every active enrollment's next step a month ahead; return how many enrollments there are."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        later = "datetime('now', '+30 days')" if url.startswith("sqlite") else "now() + interval '30 days'"
        conn.exec_driver_sql(f"UPDATE enrollment SET next_due_at = {later} WHERE status = 'active'")
        count = conn.exec_driver_sql("SELECT count(*) FROM enrollment").scalar_one()
    engine.dispose()
    return int(count)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--database-url", default="", help="PostgreSQL database to create, use and drop "
                        "(default: a SQLite file in a temporary folder)")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--skip-idle", action="store_true", help="leave out the idle worker's CPU")
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL database afterwards, to look into")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nurture-bench-enroll-") as name:
        folder = Path(name)
        (folder / "mail").mkdir()
        csv_path = folder / "leads.csv"
        generate(csv_path, args.leads)
        url = args.database_url or f"sqlite:///{folder / 'nurture.db'}"
        fresh_database(url)
        env = _env(url, folder)
        try:
            timed(["db", "upgrade"], env)
            kind = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
            print(f"{args.leads} leads ({csv_path.stat().st_size / 1e6:.0f} MB CSV) on {kind}, "
                  f"Python {sys.version.split()[0]}, load {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
            wall, cpu, rss, _ = timed(["leads", "import", str(csv_path)], env)
            enrollments = nothing_due(url)
            print(f"leads import            : {wall:7.1f} s wall {cpu:7.1f} s CPU {rss:6.0f} MB peak"
                  f"  {enrollments} enrollments")
            for label in ("run --once, first", "run --once, again"):
                wall, cpu, rss, _ = timed(["run", "--once", "--no-http"], env)
                print(f"{label:24}: {wall:7.2f} s wall {cpu:7.2f} s CPU {rss:6.0f} MB peak  (nothing due)")
            wall, cpu = run_once_in_process(env)
            print(f"Worker.run_once()       : {wall:7.2f} s wall {cpu:7.2f} s CPU  (in this process, the worker built"
                  " beforehand: without the interpreter's start-up and imports)")
            if not args.skip_idle:
                settled, share = idle_worker(env, args.idle_seconds)
                print(f"idle worker             : {100 * share:6.2f}% of a core over {args.idle_seconds:.0f} s, "
                      f"after start-up settled in {settled:.0f} s")
            print(f"load average            : {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        finally:
            if not (args.keep and url.startswith("postgresql")):
                drop_database(url)


if __name__ == "__main__":
    main()
