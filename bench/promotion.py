"""Promotion latency: from the ``demo_request`` POST to the signed ``lead.promoted`` webhook received, p50/p99.

The real service runs as ``nurture run`` (worker + HTTP intake in one process, configured through the environment:
NURTURE_SALES_WEBHOOK_URL, NURTURE_WEBHOOK_SECRET, ...) on a fresh database, sending emails to a counting SMTP sink
in its own process and webhooks to a receiver in this process that notes when each arrives. Each sample posts one
``demo_request`` for a nurtured MQL and waits for its webhook before the next one.

Measured twice: at idle, and while another process posts other traffic (``page_view`` events for other leads) at
``--load-rate`` events/s (in requests of ``--load-batch`` events, paced, for as long as the samples take).

    .venv/bin/python bench/promotion.py --samples 200 --load-rate 500
    .venv/bin/python bench/promotion.py --database-url postgresql://postgres@127.0.0.1:5432/bench_promotion

Targets (issue 5): p99 < 500 ms idle, < 2 s under load.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, smtp_sink

ROOT = Path(__file__).resolve().parents[1]
NURTURE = Path(sys.executable).with_name("nurture")
API_KEY = "bench-key"
SECRET = "bench-webhook-secret"

CAMPAIGN = """\
id: nurture
name: MQL nurture
entry: {stage: mql}
steps:
  - id: welcome
    send_window: always
    email: {template: welcome.html.j2, subject: "Welcome, {{ lead.first_name }}"}
  - id: followup
    wait: 2d
    send_window: always
    email: {template: welcome.html.j2, subject: "Two days in"}
"""
TEMPLATE = '<p>Hi {{ lead.first_name }}, <a href="{{ track(\'https://acme.test/guide\') }}">your guide</a>.</p>\n'
SCORING = """\
behaviour:
  events:
    page_view: {points: 1, max_per_day: 2}
    email_open: 1
fit:
  - {label: "company size 200+", when: {company_size: {gte: 200}}, points: 10}
thresholds: {mql: 40}
"""
SALES = """\
promotion:
  intent: [demo_request]
routing:
  owners:
    - {id: ana, name: Ana Ruiz, email: ana@acme.test, slack: U01ANA, timezone: Europe/Madrid}
    - {id: jonas, name: Jonas Weber, email: jonas@acme.test, timezone: Europe/Berlin}
    - {id: mike, name: Mike Chen, email: mike@acme.test, timezone: America/Chicago}
  teams: {emea: [ana, jonas]}
  rules:
    - {name: emea, when: {country: [DE, FR, GB]}, team: emea}
  fallback: mike
handoff: {sla: 4h, digest_at: "08:30"}
"""


# -- the receiver: notes when each lead's lead.promoted arrives -------------------------------------------------------


class Receiver:
    """A uvicorn server in a thread answering 200 and noting the arrival time of each ``lead.promoted``, by lead."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrived: dict[str, float] = {}
        self.condition = threading.Condition()
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False,
                                lifespan="off", interface="asgi3")
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def app(self, scope, receive, send):
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        at = time.perf_counter()
        body = json.loads(b"".join(chunks))
        if body.get("type") == "lead.promoted":
            with self.condition:
                self.arrived.setdefault(body["lead"]["email"], at)
                self.condition.notify_all()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the receiver did not start")
            time.sleep(0.01)

    def wait(self, email: str, timeout: float) -> float:
        """When the lead's webhook arrived (perf_counter); RuntimeError after ``timeout``."""
        deadline = time.perf_counter() + timeout
        with self.condition:
            while email not in self.arrived:
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise RuntimeError(f"no webhook for {email} within {timeout}s")
                self.condition.wait(left)
            return self.arrived[email]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


# -- the background load, in its own process ------------------------------------------------------------------------


def _load_main(base: str, rate: float, batch: int, clients: int, leads: int, stop: Any, sent: Any, failed: Any,
               started: Any) -> None:
    """Post ``page_view`` events at ``rate`` events/s (requests of ``batch``) from ``clients`` threads until
    ``stop`` is set; count what was sent and what failed."""
    interval = batch * clients / rate  # seconds between one client's requests

    def client(index: int) -> None:
        n = 0
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as http:
            next_at = time.perf_counter() + index * interval / clients
            while not stop.is_set():
                delay = next_at - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                next_at += interval
                events = [{"email": f"other{(index * 7919 + n * batch + i) % leads}@load.example", "type": "page_view",
                           "properties": {"url": f"https://acme.test/p/{n % 50}"}} for i in range(batch)]
                n += 1
                try:
                    response = http.post("/v1/events", json={"events": events})
                    ok = response.status_code < 300
                except httpx.HTTPError:
                    ok = False
                with (sent if ok else failed).get_lock():
                    (sent if ok else failed).value += batch

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    started.set()
    for thread in threads:
        thread.join()


class Load:
    """The background traffic process."""

    def __init__(self, base: str, rate: float, batch: int, clients: int, leads: int) -> None:
        self.stop_event, self.started = mp.Event(), mp.Event()
        self.sent, self.failed = mp.Value("q", 0), mp.Value("q", 0)
        self.process = mp.Process(target=_load_main, args=(base, rate, batch, clients, leads, self.stop_event,
                                                          self.sent, self.failed, self.started), daemon=True)
        self.began = 0.0

    def start(self) -> None:
        self.process.start()
        self.started.wait(20)
        self.began = time.perf_counter()

    def stop(self) -> tuple[float, int]:
        """Stop; return the achieved rate (events/s) and how many events failed."""
        self.stop_event.set()
        elapsed = time.perf_counter() - self.began
        self.process.join(30)
        return self.sent.value / elapsed, self.failed.value


# -- the service ----------------------------------------------------------------------------------------------------


def write_project(root: Path) -> tuple[Path, Path]:
    campaigns, templates = root / "campaigns", root / "templates"
    campaigns.mkdir(parents=True)
    templates.mkdir(parents=True)
    (campaigns / "nurture.yaml").write_text(CAMPAIGN)
    (campaigns / "scoring.yaml").write_text(SCORING)
    (campaigns / "sales.yaml").write_text(SALES)
    (templates / "welcome.html.j2").write_text(TEMPLATE)
    return campaigns, templates


def start_service(env: dict[str, str], folder: Path) -> tuple[subprocess.Popen, str]:
    subprocess.run([str(NURTURE), "db", "upgrade"], env=env, cwd=folder, check=True, capture_output=True)
    log = (folder / "nurture-run.log").open("wb")
    process = subprocess.Popen([str(NURTURE), "run"], env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{env['NURTURE_HTTP_PORT']}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"nurture run exited {process.returncode}: see {folder / 'nurture-run.log'}")
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("nurture run did not become ready")


def seed_mqls(base: str, emails: list[str], sink_count: Any) -> None:
    """Post the leads as MQLs (each is enrolled and sent its welcome email), then wait for the emails."""
    before = sink_count.value
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as http:
        for index, email in enumerate(emails):
            response = http.post("/v1/leads", json={
                "email": email, "first_name": f"Lead{index}", "company": "Acme Corp", "stage": "mql",
                "country": ["DE", "FR", "US", "GB"][index % 4], "company_size": 250, "budget_confirmed": True,
            })
            response.raise_for_status()
    deadline = time.monotonic() + 60
    while sink_count.value < before + len(emails) and time.monotonic() < deadline:
        time.sleep(0.05)


def promote(base: str, receiver: Receiver, emails: list[str]) -> list[float]:
    """One ``demo_request`` per lead, one at a time; return the latencies in seconds."""
    latencies = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as http:
        for email in emails:
            started = time.perf_counter()
            response = http.post("/v1/events", json={"email": email, "type": "demo_request",
                                                     "properties": {"form": "demo"}})
            response.raise_for_status()
            assert response.json()["results"][0]["stage"] == "sql", response.text
            latencies.append(receiver.wait(email, timeout=30) - started)
    return latencies


def summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))] * 1000

    return {"n": len(ordered), "p50_ms": round(pct(50), 1), "p99_ms": round(pct(99), 1),
            "max_ms": round(ordered[-1] * 1000, 1), "mean_ms": round(statistics.fmean(ordered) * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=200, help="promotions measured in each phase")
    parser.add_argument("--load-rate", type=float, default=500, help="other events per second in the load phase")
    parser.add_argument("--load-batch", type=int, default=5, help="events per request of the load")
    parser.add_argument("--load-clients", type=int, default=8, help="threads posting the load")
    parser.add_argument("--load-leads", type=int, default=5000, help="distinct leads the load spreads over")
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file (an empty PostgreSQL "
                                                             "database works too)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name, smtp_sink() as (smtp_port, sink_count):
        folder = Path(tmp_name)
        campaigns, templates = write_project(folder)
        receiver = Receiver()
        receiver.start()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")},
            "NURTURE_DATABASE_URL": args.database_url or f"sqlite:///{folder / 'promotion.db'}",
            "NURTURE_MAIL_URL": f"smtp://127.0.0.1:{smtp_port}", "NURTURE_CAMPAIGNS_DIR": str(campaigns),
            "NURTURE_TEMPLATES_DIR": str(templates), "NURTURE_API_KEY": API_KEY,
            "NURTURE_SALES_WEBHOOK_URL": receiver.url, "NURTURE_WEBHOOK_SECRET": SECRET,
            "NURTURE_HTTP_PORT": str(free_port()), "NURTURE_SECRET_KEY": "bench-secret", "NURTURE_LOG_LEVEL": "WARNING",
        }
        process, base = start_service(env, folder)
        results: dict[str, object] = {"database": env["NURTURE_DATABASE_URL"].split(":", 1)[0]}
        try:
            idle_leads = [f"idle{i}@bench.example" for i in range(args.samples)]
            load_leads = [f"busy{i}@bench.example" for i in range(args.samples)]
            seed_mqls(base, idle_leads + load_leads, sink_count)
            promote(base, receiver, [f"warm{i}@bench.example" for i in range(5)])  # first requests pay imports

            results["idle"] = summary(promote(base, receiver, idle_leads))
            print(f"idle        {results['idle']}", flush=True)

            load = Load(base, args.load_rate, args.load_batch, args.load_clients, args.load_leads)
            load.start()
            time.sleep(2)  # let the load reach its pace before measuring
            try:
                under_load = promote(base, receiver, load_leads)
            finally:
                rate, failed = load.stop()
            results["load"] = {**summary(under_load), "other_events_per_s": round(rate), "load_failures": failed}
            print(f"under load  {results['load']}", flush=True)
        except BaseException:
            log = folder / "nurture-run.log"
            print(f"nurture run's log:\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
            raise
        finally:
            process.terminate()
            process.wait(30)
            receiver.stop()
    idle, busy = results["idle"], results["load"]
    assert isinstance(idle, dict) and isinstance(busy, dict)
    results["targets"] = {"idle_p99_under_500ms": idle["p99_ms"] < 500, "load_p99_under_2s": busy["p99_ms"] < 2000}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
