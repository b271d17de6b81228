"""Shared pieces of the benchmarks: a counting SMTP sink in its own process, a seeded database, timing."""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

BENCH_CAMPAIGN = """\
id: bench
name: Benchmark
entry: {stage: mql}
steps:
  - id: welcome
    wait: 0s
    send_window: always
    email: {template: bench/welcome.html.j2, subject: "Your guide, {{ lead.first_name }}"}
"""
BENCH_TEMPLATE = """\
{% extends "_layout.html.j2" %}
{% block content %}
<h1>Hi {{ lead.first_name or "there" }},</h1>
<p>Thanks for downloading the guide{% if lead.company %} for {{ lead.company }}{% endif %}.</p>
<p><a href="{{ track('https://example.com/guide.pdf') }}">Download the guide</a> or
<a href="{{ track('https://example.com/demo') }}">book a demo</a>.</p>
{% endblock %}
"""
POLICY = "frequency_cap: {max: 10, per: 1d}\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sink_main(port: int, counter: mp.Value, ready: mp.Event) -> None:  # type: ignore[name-defined]
    from aiosmtpd.controller import Controller

    class Counter:
        async def handle_DATA(self, server, session, envelope):
            with counter.get_lock():
                counter.value += 1
            return "250 OK"

    controller = Controller(Counter(), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    while True:
        time.sleep(3600)


@contextmanager
def smtp_sink() -> Iterator[tuple[int, mp.Value]]:  # type: ignore[name-defined]
    """An aiosmtpd sink in its own process (so it does not share our GIL), counting messages."""
    port = free_port()
    counter = mp.Value("q", 0)
    ready = mp.Event()
    process = mp.Process(target=_sink_main, args=(port, counter, ready), daemon=True)
    process.start()
    if not ready.wait(20):
        raise RuntimeError("the SMTP sink did not start")
    try:
        yield port, counter
    finally:
        process.kill()
        process.join()


def wait_for_count(counter: mp.Value, expected: int, timeout: float = 120.0) -> None:  # type: ignore[name-defined]
    deadline = time.monotonic() + timeout
    while counter.value < expected and time.monotonic() < deadline:
        time.sleep(0.01)


def write_project(root: Path, layout_dir: Path) -> tuple[Path, Path]:
    """A campaigns and templates folder with the benchmark campaign (the shipped layout)."""
    campaigns, templates = root / "campaigns", root / "templates"
    (templates / "bench").mkdir(parents=True, exist_ok=True)
    campaigns.mkdir(parents=True, exist_ok=True)
    (campaigns / "bench.yaml").write_text(BENCH_CAMPAIGN)
    (campaigns / "policy.yaml").write_text(POLICY)
    (templates / "bench" / "welcome.html.j2").write_text(BENCH_TEMPLATE)
    for name in ("_layout.html.j2", "_layout.txt.j2"):
        (templates / name).write_text((layout_dir / name).read_text())
    return campaigns, templates


def seed(url: str, leads: int, *, due: bool = True, enroll: bool = True, campaign: str = "bench",
         step: str = "welcome") -> None:
    """``leads`` MQL leads, each enrolled in the campaign (unless ``enroll`` is false), due now (or in a year)."""
    from sqlalchemy import insert

    from nurture.storage.database import make_engine, transaction
    from nurture.storage.models import Enrollment, Lead

    engine = make_engine(url)
    now = datetime.now(timezone.utc)
    due_at = now if due else now.replace(year=now.year + 1)
    chunk = 20_000
    with transaction(engine) as conn:
        for start in range(0, leads, chunk):
            rows = [
                dict(id=i + 1, email=f"lead{i}@example.com", first_name=f"Lead{i}", company="Acme", stage="mql",
                     tags=[], fields={}, score=0.0, created_at=now, updated_at=now, stage_changed_at=now)
                for i in range(start, min(start + chunk, leads))
            ]
            conn.execute(insert(Lead.__table__), rows)
            if not enroll:
                continue
            conn.execute(
                insert(Enrollment.__table__),
                [dict(lead_id=r["id"], campaign_id=campaign, status="active", step_id=step, arrived_at=now,
                      next_due_at=due_at, state={}, priority=0, enrolled_at=now) for r in rows],
            )
    engine.dispose()


def rss_mb() -> float:
    """Peak resident memory of this process, MB (VmHWM: unlike ru_maxrss it is not inherited across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_count() -> int:
    return os.cpu_count() or 1
