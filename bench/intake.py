"""Intake benchmark: events/s through ``POST /v1/events`` (scoring, stage changes, enrollment) against a bare endpoint in
the same app that only inserts the event row, side by side in one run, over real HTTP (uvicorn in its own process).

    .venv/bin/python bench/intake.py --events 6000 --clients 8

Each mode is run with single-event requests and with batches (``{"events": [...]}``, --batch per request).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "bench-key"

SERVER = r"""
import sys
from datetime import datetime, timezone
from pathlib import Path
import uvicorn
from fastapi import Request
from sqlalchemy import insert
from nurture.settings import Settings
from nurture.worker.runner import http_app
from nurture.storage.database import transaction
from nurture.storage.models import EngagementEvent

settings = Settings(database_url=sys.argv[1], api_key="bench-key", campaigns_dir=Path(sys.argv[2]),
                    templates_dir=Path(sys.argv[3]))
app = http_app(settings)
engine = app.state.intake.engine
EV = EngagementEvent.__table__

@app.post("/bench/bare")
async def bare(request: Request):
    body = await request.json()
    items = body["events"] if "events" in body else [body]
    now = datetime.now(timezone.utc)
    with transaction(engine) as conn:
        conn.execute(insert(EV), [dict(lead_id=1, type=i["type"], occurred_at=now, recorded_at=now, properties={},
                                       points=0.0) for i in items])
    return {"recorded": len(items)}

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[4]), log_level="warning", access_log=False)
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp: Path) -> tuple[subprocess.Popen, str]:
    from nurture.storage.database import make_engine, session
    from nurture.storage.leads import upsert_lead
    from nurture.storage.migrate import upgrade

    url = f"sqlite:///{tmp / 'intake.db'}"
    upgrade(url)
    with session(make_engine(url)) as s:
        upsert_lead(s, {"email": "seed@example.com"}, actor="cli")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, url, str(ROOT / "campaigns"), str(ROOT / "templates"), str(port)],
        env={**os.environ, "NURTURE_LOG_LEVEL": "WARNING"},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                return process, base
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the server did not start")


def load(base: str, path: str, events: int, clients: int, batch: int, leads: int, tag: str) -> float:
    """Post ``events`` events from ``clients`` threads, ``batch`` per request; return events/s."""
    requests_total = events // batch
    counter = iter(range(requests_total))
    lock = threading.Lock()
    failures: list[str] = []
    types = ["page_view", "email_open", "email_click", "content_download", "webinar_attended", "pricing_page_view"]

    def body(n: int) -> dict:
        items = [{"email": f"lead{(n * batch + i) % leads}@{tag}.example", "type": types[(n + i) % len(types)],
                  "id": f"{tag}-{n}-{i}"} for i in range(batch)]
        return items[0] if batch == 1 else {"events": items}

    def worker() -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as client:
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                response = client.post(path, json=body(n))
                if response.status_code >= 300:
                    failures.append(f"{response.status_code} {response.text[:200]}")

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} failed requests, e.g. {failures[0]}")
    return requests_total * batch / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--leads", type=int, default=2000, help="distinct leads the events spread over")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        process, base = start_server(Path(tmp_name))
        try:
            results = {}
            for label, batch in (("single", 1), (f"batch {args.batch}", args.batch)):
                # warm both paths, then measure nurture and the bare insert alternately, same load
                load(base, "/v1/events", min(200, args.events), args.clients, batch, args.leads, f"warm{batch}")
                nurture = load(base, "/v1/events", args.events, args.clients, batch, args.leads, f"n{batch}")
                bare = load(base, "/bench/bare", args.events, args.clients, batch, args.leads, f"b{batch}")
                results[label] = (nurture, bare)
                print(f"{label:10}  nurture {nurture:8.0f} events/s   bare insert {bare:8.0f} events/s   "
                      f"ratio {nurture / bare:.2f}", flush=True)
        finally:
            process.terminate()
            process.wait(10)
    print(json.dumps({k: {"nurture": round(v[0]), "bare": round(v[1]), "ratio": round(v[0] / v[1], 2)}
                      for k, v in results.items()}))


if __name__ == "__main__":
    main()
