"""Intake benchmark: events/s through ``POST /v1/events`` (scoring, stage changes, enrollment) against a bare endpoint in
the same app that only inserts the event row, side by side in one run, over real HTTP (uvicorn in its own process).

    .venv/bin/python bench/intake.py --events 6000 --batch-events 60000 --clients 8

Each mode is run with single-event requests and with batches (``{"events": [...]}``, --batch per request). The
machine may be shared, so the two sides take turns in --rounds rounds (nurture, bare, then bare, nurture, ...) and
each side's figure is its events over its own time; the server's CPU time per event (from /proc) is printed beside
it, a figure other load on the machine barely moves (on PostgreSQL, ``--database-url``, the database server's own
CPU is printed next to it: the CPU time of the backends connected to the benchmark's database, from /proc, when the
server runs on this machine), and so is the load generator's CPU per request (--clients keep-alive connections, one thread each,
writing raw HTTP/1.1: it must stay well below the server's, or it sets the figures). ``--statements`` then counts,
in short extra passes, the statements the database executes per request on each side (SQLite: each row of an
executemany counts once; PostgreSQL: an executemany counts once, and so does each COMMIT). ``--servers N`` starts N server processes on
the one database (as N ``nurture serve`` would run), the clients spread over them; the CPU figures are their sum.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "bench-key"
MIN_TURN = 100  # requests

SERVER = r"""
import sys
from datetime import datetime, timezone
from pathlib import Path
import uvicorn
from fastapi import Request
from sqlalchemy import insert
from nurture.settings import Settings
from nurture.service import http_app
from nurture.storage.database import transaction
from nurture.storage.models import EngagementEvent
from nurture.storage.tables import EV

settings = Settings(database_url=sys.argv[1], api_key="bench-key", campaigns_dir=Path(sys.argv[2]),
                    templates_dir=Path(sys.argv[3]))
app = http_app(settings)
engine = app.state.intake.engine

@app.post("/bench/bare")
async def bare(request: Request):
    body = await request.json()
    items = body["events"] if "events" in body else [body]
    now = datetime.now(timezone.utc)
    with transaction(engine) as conn:
        conn.execute(insert(EV), [dict(lead_id=1, type=i["type"], occurred_at=now, recorded_at=now, properties={},
                                       points=0.0) for i in items])
    return {"recorded": len(items)}

import collections
import psycopg
from sqlalchemy import event

statements = collections.Counter()
patched = {}


def _count(statement):
    statements[" ".join(statement.split()[:3])] += 1


def _trace(dbapi_connection, record, proxy):
    dbapi_connection.set_trace_callback(_count)  # what SQLite runs, whether SQLAlchemy or the driver sent it


def _counting(name, method, label):
    def counted(self, query, *args, **kwargs):
        text = query if isinstance(query, str) else query.decode() if isinstance(query, bytes) else str(query)
        statements[label + " ".join(text.split()[:3])] += 1
        return method(self, query, *args, **kwargs)
    return counted


def _counting_commit(method):
    def counted(self, *args, **kwargs):
        statements["COMMIT"] += 1
        return method(self, *args, **kwargs)
    return counted


@app.post("/bench/statements/{action}")
async def count_statements(action: str):
    # start counting the SQL statements the database runs, or stop and return the counts: only the --statements
    # passes use it, after every timed round (counting costs every statement a little). SQLite: its trace callback,
    # on the connections the writer threads check out and on the event loop's kept connection (requests of up to 100
    # events record there); PostgreSQL: psycopg's cursor methods and commits, whatever connection they run on
    # (an executemany counts once, as one round of the pipeline it runs in)
    intake = app.state.intake
    if action == "start":
        statements.clear()
        if engine.dialect.name == "sqlite":
            event.listen(engine, "checkout", _trace)
            kept = intake.__dict__.get("_no_wait")
            if kept is not None:
                kept.connection.driver_connection.set_trace_callback(_count)
        else:
            for name, label in (("execute", ""), ("executemany", "executemany: "), ("copy", "COPY: ")):
                patched[name] = getattr(psycopg.Cursor, name)
                setattr(psycopg.Cursor, name, _counting(name, patched[name], label))
            patched["commit"] = psycopg.Connection.commit
            psycopg.Connection.commit = _counting_commit(patched["commit"])
        return {}
    if engine.dialect.name == "sqlite":
        event.remove(engine, "checkout", _trace)
    else:
        for name, method in patched.items():
            setattr(psycopg.Connection if name == "commit" else psycopg.Cursor, name, method)
    return dict(statements)

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[4]), log_level="warning", access_log=False)
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_servers(tmp: Path, database_url: str | None, count: int = 1) -> list[tuple[subprocess.Popen, str]]:
    """``count`` server processes (each as ``nurture serve`` runs one, on a port of its own) on one database."""
    from nurture.application.lead_input import upsert_lead
    from nurture.clock import SYSTEM_CLOCK
    from nurture.storage.database import make_engine, session
    from nurture.storage.migrate import upgrade

    url = database_url or f"sqlite:///{tmp / 'intake.db'}"
    upgrade(url)
    engine = make_engine(url)
    with session(engine) as s:
        upsert_lead(s, {"email": "seed@example.com"}, actor="cli", now=SYSTEM_CLOCK())
    engine.dispose()
    servers = []
    for _ in range(count):
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-c", SERVER, url, str(ROOT / "campaigns"), str(ROOT / "templates"), str(port)],
            env={**os.environ, "NURTURE_LOG_LEVEL": "WARNING"},
        )
        servers.append((process, f"http://127.0.0.1:{port}"))
    for _process, base in servers:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
            if time.monotonic() > deadline:
                for other, _base in servers:
                    other.kill()
                raise RuntimeError("a server did not start")
    return servers


def cpu_seconds(process: subprocess.Popen) -> float:
    """The server's CPU time so far (user + system), from /proc."""
    return pid_cpu_seconds(process.pid) or 0.0


def pid_cpu_seconds(pid: int) -> float | None:
    """A process's CPU time so far (user + system), from /proc; None when it is gone or not on this machine."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Backends:
    """The CPU time of the PostgreSQL backends serving the benchmark's database (from /proc: the server must run on
    this machine), read at the start and end of each turn. A backend that ends within a turn loses its CPU since the
    last reading; nurture's and the bare side's connections stay in the pool, so few do."""

    def __init__(self, database_url: str) -> None:
        import psycopg
        from sqlalchemy.engine import make_url

        url = make_url(database_url)
        self.connection = psycopg.connect(host=url.host, port=url.port or 5432, user=url.username,
                                          password=url.password, dbname=url.database, autocommit=True)
        self.seen: dict[int, float] = {}

    def read(self) -> dict[int, float]:
        pids = [pid for (pid,) in self.connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]
        return {pid: seconds for pid in pids if (seconds := pid_cpu_seconds(pid)) is not None}

    def spent_since(self, before: dict[int, float]) -> float:
        """CPU seconds the backends spent since ``before`` (a :meth:`read`); new backends count from zero."""
        after = self.read()
        return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


class Client:
    """One keep-alive HTTP/1.1 connection that posts JSON and reads the answer, with little work of its own.

    httpx spent more CPU per request than the server's bare endpoint (about 650 µs against 450 µs for one event), so
    on this 2-core machine it, not the server, set the single-event figures. Here a request is one ``sendall`` of
    prepared bytes and the answer is read by its ``Content-Length``: 50-100 µs per request (printed)."""

    def __init__(self, base: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.head = f"Host: {host}:{port}\r\nAuthorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
        self.buffer = b""

    def post(self, path: str, payload: object) -> tuple[int, bytes]:
        body = json.dumps(payload, separators=(",", ":")).encode()
        self.sock.sendall(f"POST {path} HTTP/1.1\r\n{self.head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self.buffer += self._recv()
        head, self.buffer = self.buffer[:end].decode("latin-1"), self.buffer[end + 4 :]
        status = int(head.split(" ", 2)[1])
        found = re.search(r"(?im)^content-length:\s*(\d+)", head)
        if found is None:
            raise RuntimeError(f"an answer without Content-Length: {head[:200]!r}")
        length = int(found.group(1))
        while len(self.buffer) < length:
            self.buffer += self._recv()
        answer, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, answer

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise RuntimeError("the server closed the connection")
        return chunk

    def close(self) -> None:
        self.sock.close()


def load(bases: list[str], path: str, first: int, requests_total: int, clients: int, batch: int, leads: int,
         tag: str) -> float:
    """Post requests number ``first`` to ``first + requests_total - 1`` from ``clients`` threads (client i to server
    i modulo the servers), ``batch`` events per request (request n's events go to leads n*batch, n*batch+1, ...
    modulo ``leads``); return the seconds it took."""
    counter = iter(range(first, first + requests_total))
    lock = threading.Lock()
    failures: list[str] = []
    types = ["page_view", "email_open", "email_click", "content_download", "webinar_attended", "pricing_page_view"]

    def body(n: int) -> dict:
        items = [{"email": f"lead{(n * batch + i) % leads}@{tag}.example", "type": types[(n + i) % len(types)],
                  "id": f"{tag}-{n}-{i}"} for i in range(batch)]
        return items[0] if batch == 1 else {"events": items}

    def worker(base: str) -> None:
        try:
            client = Client(base)
        except OSError as exc:
            failures.append(f"could not connect: {exc}")
            return
        try:
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                status, answer = client.post(path, body(n))
                if status >= 300:
                    failures.append(f"{status} {answer[:200]!r}")
        except Exception as exc:  # noqa: BLE001 - a dead client thread must fail the run, not make it look fast
            failures.append(f"client error: {exc!r}")
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(bases[i % len(bases)],)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} failed requests, e.g. {failures[0]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=6000, help="events per side, single-event requests")
    parser.add_argument("--batch-events", type=int, default=60000, help="events per side, batched requests")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--leads", type=int, default=2000, help="distinct leads the events spread over")
    parser.add_argument("--rounds", type=int, default=6, help="turns each side takes, alternating")
    parser.add_argument("--statements", action="store_true", help="print the statements per request, each side")
    parser.add_argument("--servers", type=int, default=1,
                        help="server processes on the one database (each as `nurture serve` runs one); the clients "
                             "spread over them")
    parser.add_argument("--database-url", help="an empty database to run on (e.g. postgresql+psycopg://...); "
                                               "default: a new SQLite file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        servers = start_servers(Path(tmp_name), args.database_url, args.servers)
        bases = [base for _process, base in servers]

        def cpu() -> float:
            return sum(cpu_seconds(process) for process, _base in servers)

        backends = Backends(args.database_url) if args.database_url else None
        print(f"load average before: {os.getloadavg()[0]:.1f}", flush=True)

        try:
            results = {}
            for label, batch in (("single", 1), (f"batch {args.batch}", args.batch)):
                requests_total = (args.events if batch == 1 else args.batch_events) // batch
                # each turn starts its client threads and connections afresh: a turn of a few requests would time
                # mostly that (it did: 10 requests a turn halved the bare side's figure), so a turn is 100 at least
                per_round = max(MIN_TURN, requests_total // args.rounds)
                # warm both paths up (their own leads), then let the sides take turns on the same load
                for path in ("/v1/events", "/bench/bare"):
                    load(bases, path, 0, max(1, 200 // batch), args.clients, batch, args.leads, f"warm{batch}{path[1]}")
                # seconds, server CPU seconds, requests, load generator CPU seconds, database backends' CPU seconds
                spent = {"nurture": [0.0, 0.0, 0, 0.0, 0.0], "bare": [0.0, 0.0, 0, 0.0, 0.0]}
                for index, first in enumerate(range(0, requests_total, per_round)):
                    count = min(per_round, requests_total - first)
                    order = ("nurture", "bare") if index % 2 == 0 else ("bare", "nurture")
                    for side in order:
                        path = "/v1/events" if side == "nurture" else "/bench/bare"
                        database = backends.read() if backends is not None else {}
                        used, own = cpu(), time.process_time()
                        seconds = load(bases, path, first, count, args.clients, batch, args.leads, f"{side[0]}{batch}")
                        spent[side][0] += seconds
                        spent[side][1] += cpu() - used
                        spent[side][2] += count
                        spent[side][3] += time.process_time() - own
                        spent[side][4] += backends.spent_since(database) if backends is not None else 0.0
                rate = {side: spent[side][2] * batch / spent[side][0] for side in spent}
                cpu_us = {side: spent[side][1] / (spent[side][2] * batch) * 1e6 for side in spent}
                client_us = {side: spent[side][3] / spent[side][2] * 1e6 for side in spent}
                db_us = {side: spent[side][4] / (spent[side][2] * batch) * 1e6 for side in spent}
                results[label] = (rate["nurture"], rate["bare"], cpu_us["nurture"], cpu_us["bare"], db_us["nurture"],
                                  db_us["bare"])
                print(f"{label:10}  nurture {rate['nurture']:8.0f} events/s ({cpu_us['nurture']:5.0f} us CPU/event)   "
                      f"bare insert {rate['bare']:8.0f} events/s ({cpu_us['bare']:5.0f} us CPU/event)   "
                      f"ratio {rate['nurture'] / rate['bare']:.2f}   "
                      f"(load generator: {client_us['nurture']:.0f} / {client_us['bare']:.0f} us CPU per request)",
                      flush=True)
                if backends is not None:
                    print(f"{'':10}  PostgreSQL backends: nurture {db_us['nurture']:5.0f} us CPU/event   "
                          f"bare insert {db_us['bare']:5.0f} us CPU/event   "
                          f"(load average now {os.getloadavg()[0]:.1f})", flush=True)
            # short extra passes after every timed round (the connections keep counting once they did)
            for label, batch in (("single", 1), (f"batch {args.batch}", args.batch)) if args.statements else ():
                for side, path in (("nurture", "/v1/events"), ("bare", "/bench/bare")):
                    count = max(1, 300 // batch)
                    for base in bases:
                        httpx.post(f"{base}/bench/statements/start")
                    # new requests, on leads the timed rounds created
                    first = (args.events if batch == 1 else args.batch_events) // batch
                    load(bases, path, first, count, args.clients, batch, args.leads, f"{side[0]}{batch}")
                    counted: collections.Counter[str] = collections.Counter()
                    for base in bases:
                        counted.update(httpx.post(f"{base}/bench/statements/stop").json())
                    shown = ", ".join(f"{n / count:.2f} {what}" for what, n in sorted(counted.items(), key=lambda x: -x[1]))
                    print(f"{label:10}  {side} statements/request: {shown}", flush=True)
        finally:
            if backends is not None:
                backends.connection.close()
            for process, _base in servers:
                process.terminate()
            for process, _base in servers:
                process.wait(10)
    print(json.dumps({k: {"nurture": round(v[0]), "bare": round(v[1]), "ratio": round(v[0] / v[1], 2),
                          "nurture_cpu_us": round(v[2]), "bare_cpu_us": round(v[3]),
                          **({"nurture_db_cpu_us": round(v[4]), "bare_db_cpu_us": round(v[5])} if args.database_url
                             else {})} for k, v in results.items()}))


if __name__ == "__main__":
    main()
