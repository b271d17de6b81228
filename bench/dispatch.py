"""Dispatch benchmark: N leads due now, rendered and delivered to a local SMTP sink.

Prints emails/s for nurture's dispatcher and, side by side against the same sink in the same run:
  ceiling  pre-rendered messages sent over the same number of reused smtplib connections;
  naive    one persistent APScheduler job per email (SQLAlchemyJobStore), the design nurture avoids.
Also: the cost of a tick that finds nothing due with --idle-leads enrolled, and the worker's peak memory.

    .venv/bin/python bench/dispatch.py --leads 100000 --naive-leads 5000 --idle-leads 1000000

``--database-url`` runs nurture's side on PostgreSQL (a database for the benchmark alone: each round empties it) rather
than on a new SQLite file; the ceiling, the naive peer and the idle tick do not change.
"""

from __future__ import annotations

import argparse
import json
import os
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import rss_mb, seed, smtp_sink, wait_for_count, write_project

ROOT = Path(__file__).resolve().parents[1]
CONNECTIONS = 4


def _worker(url: str, campaigns: Path, templates: Path, port: int, batch: int, connections: int = CONNECTIONS):
    from nurture.definitions.loader import load_catalog
    from nurture.delivery import SMTPTransport
    from nurture.rendering import EmailRenderer
    from nurture.signing import Signer
    from nurture.storage.database import make_engine
    from nurture.worker.dispatcher import DispatchConfig, Dispatcher

    catalog = load_catalog(campaigns, templates).raise_for_problems()
    transport = SMTPTransport.from_url(f"smtp://127.0.0.1:{port}?connections={connections}")
    dispatcher = Dispatcher(make_engine(url), catalog, EmailRenderer(templates), transport, Signer("bench"),
                            DispatchConfig(batch_size=batch, from_address="Acme <hello@acme.example>"))
    try:
        from nurture.heap import settle_after_start_up
    except ImportError:  # a checkout from before it (bench/side_by_side.py)
        pass
    else:
        settle_after_start_up()  # as a worker process does once it has started
    return dispatcher, transport


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a live process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_cpu(url: str) -> dict[int, float]:
    """CPU seconds each PostgreSQL backend serving ``url``'s database has used (from /proc: the server runs on this
    machine), by pid; {} on SQLite or when the server's processes cannot be read."""
    if not url.startswith("postgresql"):
        return {}
    from nurture.storage.database import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            pids = [row[0] for row in conn.exec_driver_sql(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]
    finally:
        engine.dispose()
    found = {}
    for pid in pids:
        try:
            found[pid] = _process_cpu(pid)
        except OSError:  # gone meanwhile, or another machine's
            pass
    return found


def fresh_database(tmp: Path, database_url: str | None) -> str:
    """A new SQLite file, or the PostgreSQL database of ``database_url`` emptied (its public schema dropped and made
    again), migrated to the current schema."""
    from nurture.storage.database import make_engine
    from nurture.storage.migrate import upgrade

    if database_url is None:
        url = f"sqlite:///{tmp / 'nurture.db'}"
    else:
        url = database_url
        engine = make_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA public CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA public")
        engine.dispose()
    upgrade(url)
    return url


def bench_nurture(leads: int, batch: int, tmp: Path, processes: int, database_url: str | None = None) -> dict:
    """nurture's dispatcher in this process, and ``processes - 1`` more as ``nurture run --processes`` starts them;
    the CONNECTIONS mail connections are shared out among the processes."""
    from nurture.application.enroll import enroll_leads
    from nurture.settings import Settings
    from nurture.worker.processes import DispatchProcesses

    url = fresh_database(tmp, database_url)
    seed(url, leads, enroll=False)
    campaigns, templates = write_project(tmp, ROOT / "templates")
    with smtp_sink() as (port, counter):
        settings = Settings(
            database_url=url, mail_url=f"smtp://127.0.0.1:{port}?connections={CONNECTIONS // processes}",
            campaigns_dir=campaigns, templates_dir=templates, secret_key="bench", from_address="Acme <hello@acme.example>",
            batch_size=batch, poll_interval=0.05, log_level="WARNING", dispatch_processes=processes,
        )
        extra = DispatchProcesses(settings, processes - 1) if processes > 1 else None
        if extra is not None:
            extra.start()
            time.sleep(5)  # let them start (imports, the catalog) and go idle: no lead is enrolled yet
        dispatcher, transport = _worker(url, campaigns, templates, port, batch, CONNECTIONS // processes)
        clock = lambda: datetime.now(timezone.utc)  # noqa: E731
        pids = [p.pid for p in extra.processes] if extra is not None else []
        cpu_before = sum(_process_cpu(pid) for pid in pids)
        server_before = _server_cpu(url)
        started = time.perf_counter()
        cpu_started = time.process_time()
        enrolled = enroll_leads(dispatcher.engine, dispatcher.catalog, clock())  # nurture's "scheduling"
        enroll_seconds = time.perf_counter() - started
        send_started = time.perf_counter()
        cpu_sending = time.process_time() + sum(_process_cpu(pid) for pid in pids)
        server_sending = _server_cpu(url)
        report = dispatcher.drain(clock)
        wait_for_count(counter, leads)
        end = time.perf_counter()
        cpu = time.process_time() - cpu_started + sum(_process_cpu(pid) for pid in pids) - cpu_before
        # the backends' CPU (enrolling included, as the workers' CPU above): backends that began meanwhile count whole
        server_after = _server_cpu(url)
        server_cpu = sum(used - server_before.get(pid, 0.0) for pid, used in server_after.items())
        send_cpu = time.process_time() + sum(_process_cpu(pid) for pid in pids) - cpu_sending
        send_server_cpu = sum(used - server_sending.get(pid, 0.0) for pid, used in server_after.items())
        if extra is not None:
            extra.stop(timeout=60)
        transport.close()
        received = counter.value
    return {"sent": received, "here": report.sent, "received": received, "enrolled": enrolled,
            "enroll_seconds": enroll_seconds, "seconds": end - send_started, "per_second": received / (end - send_started),
            "end_to_end_per_second": received / (end - started), "cpu_ms_per_email": cpu / received * 1000,
            "server_cpu_ms_per_email": server_cpu / received * 1000 if url.startswith("postgresql") else None,
            "send_cpu_ms_per_email": send_cpu / received * 1000,
            "send_server_cpu_ms_per_email": send_server_cpu / received * 1000 if url.startswith("postgresql") else None,
            "peak_rss_mb": rss_mb()}


def bench_ceiling(messages: int, tmp: Path) -> dict:
    """The same emails nurture sends, rendered and built beforehand, over CONNECTIONS reused smtplib connections."""
    from nurture.delivery import OutgoingEmail, build_message_bytes
    from nurture.rendering import EmailRenderer, LinkBuilder
    from nurture.signing import Signer

    now = datetime.now(timezone.utc)
    _campaigns, templates = write_project(tmp / "ceiling", ROOT / "templates")
    renderer, signer = EmailRenderer(templates), Signer("bench")
    payloads = []
    for i in range(messages):
        links = LinkBuilder("http://127.0.0.1:8000", signer, str(i + 1))
        context = {"lead": {"email": f"lead{i}@example.com", "first_name": f"Lead{i}", "company": "Acme"},
                   "campaign": {"id": "bench", "name": "Benchmark"}, "step": {"id": "welcome", "key": "welcome"},
                   "variant": None}
        rendered = renderer.render("bench/welcome.html.j2", "Your guide, {{ lead.first_name }}", context, links)
        payloads.append(build_message_bytes(
            OutgoingEmail(f"<m{i}@acme.example>", "Acme <hello@acme.example>", f"lead{i}@example.com", rendered.subject,
                          rendered.html, rendered.text, links.unsubscribe()), date=now))
    with smtp_sink() as (port, counter):
        per = [payloads[i::CONNECTIONS] for i in range(CONNECTIONS)]

        def send(chunk: list[bytes]) -> None:
            with smtplib.SMTP("127.0.0.1", port) as smtp:
                for index, data in enumerate(chunk):
                    smtp.sendmail("hello@acme.example", [f"lead{index}@example.com"], data)

        started = time.perf_counter()
        with ThreadPoolExecutor(CONNECTIONS) as pool:
            list(pool.map(send, per))
        wait_for_count(counter, messages)
        elapsed = time.perf_counter() - started
    return {"sent": messages, "seconds": elapsed, "per_second": messages / elapsed}


def bench_naive(messages: int, tmp: Path) -> dict:
    """One persistent APScheduler 3 job per email, rendered and sent when the job runs."""
    from apscheduler.executors.pool import ThreadPoolExecutor as APExecutor
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    global _NAIVE  # noqa: PLW0603 - the naive jobs find their renderer and SMTP port here
    _campaigns, templates = write_project(tmp / "naive", ROOT / "templates")
    with smtp_sink() as (port, counter):
        from nurture.rendering import EmailRenderer
        from nurture.signing import Signer

        _NAIVE = {"renderer": EmailRenderer(templates), "port": port, "local": threading.local(),
                  "links": Signer("bench")}
        scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{tmp / 'naive.db'}")},
            executors={"default": APExecutor(CONNECTIONS)}, timezone=timezone.utc,
        )
        scheduler.start(paused=True)
        started = time.perf_counter()
        now = datetime.now(timezone.utc)
        for i in range(messages):
            scheduler.add_job(_naive_send, "date", run_date=now, args=[i], id=f"email-{i}", misfire_grace_time=None)
        add_seconds = time.perf_counter() - started
        sent_started = time.perf_counter()
        scheduler.resume()
        wait_for_count(counter, messages, timeout=600)
        send_seconds = time.perf_counter() - sent_started
        scheduler.shutdown(wait=False)
        received = counter.value
    return {"sent": received, "schedule_per_second": messages / add_seconds, "seconds": send_seconds,
            "per_second": received / send_seconds, "end_to_end_per_second": received / (add_seconds + send_seconds)}


_NAIVE: dict = {}


def _naive_send(i: int) -> None:
    from nurture.delivery import OutgoingEmail, build_message_bytes
    from nurture.rendering import LinkBuilder

    state = _NAIVE
    local = state["local"]
    if not hasattr(local, "smtp"):
        local.smtp = smtplib.SMTP("127.0.0.1", state["port"])
    links = LinkBuilder("https://t.acme.example", state["links"], str(i))
    context = {"lead": {"first_name": f"Lead{i}", "company": "Acme", "email": f"lead{i}@example.com"},
               "campaign": {"id": "bench", "name": "Benchmark"}, "step": {"id": "welcome"}}
    rendered = state["renderer"].render("bench/welcome.html.j2", "Your guide, {{ lead.first_name }}", context, links)
    email = OutgoingEmail(f"<n{i}@acme.example>", "Acme <hello@acme.example>", f"lead{i}@example.com",
                          rendered.subject, rendered.html, rendered.text, links.unsubscribe())
    local.smtp.sendmail("hello@acme.example", [email.to_addr], build_message_bytes(email, date=datetime.now(timezone.utc)))


IDLE_SCRIPT = r"""
import sys, time, json
sys.path.insert(0, sys.argv[5])
from datetime import datetime, timezone
from pathlib import Path
from _common import rss_mb
from dispatch import _worker
dispatcher, transport = _worker(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), 500)
now = datetime.now(timezone.utc)
dispatcher.tick(now)
samples = []
for _ in range(200):
    t = time.perf_counter(); dispatcher.tick(now); samples.append(time.perf_counter() - t)
samples.sort()
print(json.dumps({"median_ms": samples[len(samples)//2] * 1000, "p99_ms": samples[int(len(samples)*0.99)] * 1000,
                  "peak_rss_mb": rss_mb()}))
"""


def bench_idle(leads: int, tmp: Path) -> dict:
    """A tick with nothing due while ``leads`` enrollments wait (in a fresh process, to read its memory)."""
    from nurture.storage.migrate import upgrade

    url = f"sqlite:///{tmp / 'idle.db'}"
    upgrade(url)
    seed(url, leads, due=False)
    campaigns, templates = write_project(tmp / "idle", ROOT / "templates")
    out = subprocess.run(
        [sys.executable, "-c", IDLE_SCRIPT, url, str(campaigns), str(templates), "25", str(Path(__file__).parent)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=4,
                        help="SMTP connections in all: nurture's (shared out among its processes) and the ceiling's")
    parser.add_argument("--processes", type=int, default=2, choices=[1, 2, 4],
                        help="nurture run --processes: dispatching processes sharing the connections")
    parser.add_argument("--naive-leads", type=int, default=5_000, help="the naive peer is slow: fewer emails")
    parser.add_argument("--idle-leads", type=int, default=100_000, help="1000000 for the issue's figure")
    parser.add_argument("--rounds", type=int, default=3, help="nurture and the ceiling in turn, this many times")
    parser.add_argument("--database-url",
                        help="nurture's database: a PostgreSQL database for the benchmark alone (each round drops "
                             "and makes again its public schema), e.g. postgresql+psycopg://postgres@127.0.0.1:5432/"
                             "bench_dispatch; default: a new SQLite file each round")
    parser.add_argument("--skip", nargs="*", default=[], choices=["naive", "ceiling", "idle"])
    args = parser.parse_args()
    global CONNECTIONS  # noqa: PLW0603 - set once from the command line
    CONNECTIONS = args.connections
    results: dict[str, dict] = {}
    rounds: list[tuple[dict, dict | None]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        # nurture and the ceiling take turns, round after round, so that whatever else the machine does weighs on both
        for number in range(1, args.rounds + 1):
            folder = tmp / f"round{number}"
            folder.mkdir()
            n = bench_nurture(args.leads, args.batch, folder, args.processes, args.database_url)
            print(f"round {number}: nurture {n['per_second']:6.0f} emails/s  ({args.processes} process(es); {args.leads} "
                  f"in {n['seconds']:.1f}s, sink received {n['received']}; {n['cpu_ms_per_email']:.2f} ms CPU per email"
                  + (f" + {n['server_cpu_ms_per_email']:.2f} ms PostgreSQL backends'"
                     if n["server_cpu_ms_per_email"] is not None else "")
                  + f", sending alone {n['send_cpu_ms_per_email']:.2f} ms"
                  + (f" + {n['send_server_cpu_ms_per_email']:.2f} ms backends'"
                     if n["send_server_cpu_ms_per_email"] is not None else "") + "; "
                  f"load average {os.getloadavg()[0]:.1f}; "
                  f"enrolling took {n['enroll_seconds']:.1f}s, end to end {n['end_to_end_per_second']:.0f}/s; "
                  + (f"peak RSS {n['peak_rss_mb']:.0f} MB)" if number == 1 else  # later: the ceiling's messages too
                     "peak RSS: see round 1)"), flush=True)
            c = None
            if "ceiling" not in args.skip:
                c = bench_ceiling(min(args.leads, 50_000), folder)
                print(f"round {number}: ceiling {c['per_second']:6.0f} emails/s  (the same emails pre-rendered, {CONNECTIONS} reused "
                      f"smtplib connections); ratio {n['per_second'] / c['per_second']:.2f}", flush=True)
            rounds.append((n, c))
        if "naive" not in args.skip:
            results["naive"] = bench_naive(args.naive_leads, tmp)
            v = results["naive"]
            print(f"naive     {v['per_second']:8.0f} emails/s  (one APScheduler job per email; scheduling "
                  f"{v['schedule_per_second']:.0f} jobs/s, end to end {v['end_to_end_per_second']:.0f}/s)", flush=True)
        if "idle" not in args.skip:
            results["idle"] = bench_idle(args.idle_leads, tmp)
            print(f"idle tick {results['idle']['median_ms']:8.2f} ms median, {results['idle']['p99_ms']:.2f} ms p99 "
                  f"with {args.idle_leads} enrolled; worker peak RSS {results['idle']['peak_rss_mb']:.0f} MB", flush=True)
    middle = sorted(rounds, key=lambda r: r[0]["per_second"])[len(rounds) // 2][0]  # nurture's median round
    nurture = middle["per_second"]
    print(f"nurture, median of {len(rounds)} round(s): {nurture:.0f} emails/s, end to end "
          f"{middle['end_to_end_per_second']:.0f}/s")
    if "ceiling" not in args.skip:
        ratios = sorted(n["per_second"] / c["per_second"] for n, c in rounds if c is not None)
        ceilings = sorted(c["per_second"] for _n, c in rounds if c is not None)
        print(f"ceiling, median: {ceilings[len(ceilings) // 2]:.0f} emails/s")
        print(f"ratio nurture/ceiling = {ratios[len(ratios) // 2]:.2f} median of the rounds' ratios "
              f"({', '.join(f'{r:.2f}' for r in ratios)})  (target >= 0.8)")
    if "naive" in results:
        naive = results["naive"]
        print(f"ratio nurture/naive   = {nurture / naive['per_second']:.1f}x sending alone, "
              f"{middle['end_to_end_per_second'] / naive['end_to_end_per_second']:.1f}x from due leads "
              f"to delivered emails, scheduling included (target >= 5x)")


if __name__ == "__main__":
    main()
