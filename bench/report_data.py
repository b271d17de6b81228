"""A dataset with known answers for ``nurture report``: leads from known sources over whole months, their way through
the funnel, sales' decisions, a nurture campaign's emails, opens and clicks, branch outcomes, filler events up to the
wanted count, and spend per month and source.

It writes straight into a migrated database (bulk inserts, explicit ids) and returns the :class:`Truth` it wrote
(with ``keep=True``), so a test can compute every figure on its own and compare.

    .venv/bin/python bench/report_data.py --leads 1000000 --events 10000000 --database-url sqlite:////tmp/report.db
    .venv/bin/python bench/report_data.py --leads 1000000 --events 10000000 \
        --database-url postgresql://postgres@127.0.0.1:5432/bench_report

Deterministic for a seed. Leads are created over ``--months`` whole months ending at NOW (2026-04-01 00:00 UTC). On
PostgreSQL the command writes with the triggers off (``session_replication_role = replica``), on SQLite with them
dropped and put back after, and counts the rollups once at the end, as ``nurture db rebuild-rollups`` does (what the
triggers would have kept: ``tests/integration/test_rollups.py``).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

NOW = datetime(2026, 4, 1, tzinfo=timezone.utc)
CAMPAIGN = "bench-nurture"
SOURCES = (  # (source, medium, acquisition campaign, weight)
    ("google", "cpc", "spring", 30), ("google", "cpc", "brand", 15), ("linkedin", "social", "abm", 20),
    ("newsletter", "email", None, 10), (None, None, None, 25),
)
MONTHLY_SPEND = {("google", "spring"): 200_000, ("google", "brand"): 100_000, ("linkedin", ""): 250_000,
                 ("newsletter", ""): 40_000}
"""Cents per whole month, per (source, campaign); '' is the source as a whole."""
REASONS = ("no_budget", "bad_timing", "not_a_fit")
OWNERS = ("ana", "ben", "cho")
RULES = ("intent:demo_request: demo_request (explicit intent)", "score-and-fit:hot: score 80 >= 60")
HOUR = timedelta(hours=1)


@dataclass
class LeadTruth:
    """One generated lead and its milestones."""

    id: int
    created_at: datetime
    source: str | None
    source_campaign: str | None
    owner: str | None = None
    mql_at: datetime | None = None
    sql_at: datetime | None = None
    rule: str | None = None
    decided_at: datetime | None = None
    accepted: bool | None = None
    reason: str | None = None
    customer_at: datetime | None = None


@dataclass
class Truth:
    """What was written."""

    leads: list[LeadTruth] = field(default_factory=list)
    spend: list[tuple[date, date, str, str, int]] = field(default_factory=list)  # start, end, source, campaign, cents
    events: int = 0
    deliveries: int = 0


def _month_starts(months: int) -> list[date]:
    first = NOW.date().replace(day=1)
    found = []
    for _ in range(months):
        first = (first - timedelta(days=1)).replace(day=1)
        found.append(first)
    return sorted(found)


def _next_month(first: date) -> date:
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def _leads(count: int, months: int, rng: random.Random) -> Iterator[LeadTruth]:
    start = datetime.combine(_month_starts(months)[0], datetime.min.time(), tzinfo=timezone.utc)
    span = (NOW - start).total_seconds()
    weights = [s[3] for s in SOURCES]
    for lead_id in range(1, count + 1):
        source, _medium, campaign, _w = rng.choices(SOURCES, weights)[0]
        lead = LeadTruth(lead_id, start + timedelta(seconds=int(rng.random() * span)), source, campaign)
        if rng.random() < 0.5:
            lead.mql_at = lead.created_at + timedelta(seconds=int(rng.random() * 10 * 86400))
        if lead.mql_at and rng.random() < 0.25:
            lead.sql_at = lead.mql_at + HOUR + timedelta(seconds=int(rng.random() * 20 * 86400))
            lead.owner, lead.rule = rng.choice(OWNERS), rng.choice(RULES)
        if lead.sql_at and rng.random() < 0.8:
            lead.decided_at = lead.sql_at + HOUR + timedelta(seconds=int(rng.random() * 3 * 86400))
            lead.accepted = rng.random() < 0.6
            lead.reason = None if lead.accepted else rng.choice(REASONS)
        if lead.accepted and rng.random() < 0.4:
            lead.customer_at = lead.decided_at + timedelta(days=1 + rng.random() * 30)  # type: ignore[operator]
        for name in ("mql_at", "sql_at", "decided_at", "customer_at"):  # nothing in the future
            if getattr(lead, name) is not None and getattr(lead, name) >= NOW:
                for later in ("mql_at", "sql_at", "decided_at", "customer_at")[
                        ("mql_at", "sql_at", "decided_at", "customer_at").index(name):]:
                    setattr(lead, later, None)
                if name in ("sql_at",):
                    lead.owner = lead.rule = None
                if name in ("sql_at", "decided_at"):
                    lead.accepted, lead.reason = None, None
                break
        yield lead


def _stage(lead: LeadTruth) -> str:
    if lead.customer_at:
        return "customer"
    if lead.decided_at:
        return "opportunity" if lead.accepted else "recycled"
    if lead.sql_at:
        return "sql"
    return "mql" if lead.mql_at else "lead"


ORDER = ("lead", "enrollment", "delivery", "stage_change", "step_outcome", "engagement_event", "spend")


class _Writer:
    """Chunked bulk inserts (SQLAlchemy's insertmanyvalues)."""

    def __init__(self, engine: Engine, chunk: int = 20_000) -> None:
        self.engine, self.chunk, self.rows, self.written = engine, chunk, {}, {}

    def add(self, table: str, row: dict[str, Any]) -> None:
        rows = self.rows.setdefault(table, [])
        rows.append(row)
        if len(rows) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        """Write every table's pending rows, parents first (foreign keys)."""
        from nurture.storage.models import SQLModel

        for name in sorted(self.rows, key=ORDER.index):
            rows = self.rows.get(name) or []
            if rows:
                with self.engine.begin() as conn:
                    conn.execute(SQLModel.metadata.tables[name].insert(), rows)
                self.written[name] = self.written.get(name, 0) + len(rows)
            self.rows[name] = []


def generate(engine: Engine, *, leads: int, events: int, months: int = 3, seed: int = 7, keep: bool = False,
             progress: bool = False) -> Truth:
    """Write the dataset; return what was written (the leads only with ``keep``)."""
    rng = random.Random(seed)
    truth = Truth()
    w = _Writer(engine)
    enrollment_id = delivery_id = 0
    event_budget = events
    started = time.perf_counter()
    for lead in _leads(leads, months, rng):
        if keep:
            truth.leads.append(lead)
        w.add("lead", dict(id=lead.id, email=f"lead{lead.id}@example.com", tags=[], fields={}, stage=_stage(lead),
                           score=0.0, owner=lead.owner, source=lead.source,
                           medium=next((s[1] for s in SOURCES if s[0] == lead.source), None),
                           source_campaign=lead.source_campaign, created_at=lead.created_at, updated_at=lead.created_at,
                           stage_changed_at=max(t for t in (lead.created_at, lead.mql_at, lead.sql_at,
                                                            lead.decided_at, lead.customer_at) if t)))
        w.add("stage_change", dict(lead_id=lead.id, from_stage=None, to_stage="lead", at=lead.created_at, reason="",
                                   actor="import"))
        if lead.mql_at:
            w.add("stage_change", dict(lead_id=lead.id, from_stage="lead", to_stage="mql", at=lead.mql_at,
                                       reason="score 60 >= 50", actor="rule"))
            enrollment_id += 1
            ended = lead.sql_at
            w.add("enrollment", dict(id=enrollment_id, lead_id=lead.id, campaign_id=CAMPAIGN,
                                     status="exited" if ended else "active", step_id=None if ended else "followup",
                                     arrived_at=lead.mql_at, state={}, priority=0, enrolled_at=lead.mql_at,
                                     ended_at=ended, end_reason="stage:sql" if ended else None))
            for step, offset in (("welcome", timedelta(0)), ("followup", timedelta(days=3))):
                at = lead.mql_at + offset
                if at >= NOW or (ended and at >= ended):
                    continue
                delivery_id += 1
                truth.deliveries += 1
                w.add("delivery", dict(id=delivery_id, enrollment_id=enrollment_id, lead_id=lead.id,
                                       campaign_id=CAMPAIGN, step_id=step, step_key=step,
                                       variant="ab"[lead.id % 2] if step == "welcome" else None, channel="email",
                                       status="sent", attempts=1, created_at=at, sent_at=at))
                for kind, chance in (("email_open", 0.4), ("email_click", 0.15)):
                    if event_budget > 0 and rng.random() < chance:
                        event_budget -= 1
                        w.add("engagement_event", dict(lead_id=lead.id, type=kind, occurred_at=min(at + HOUR, NOW),
                                                       recorded_at=at, campaign_id=CAMPAIGN, step_key=step,
                                                       delivery_id=delivery_id, properties={}, points=0.0))
            branch_at = lead.mql_at + timedelta(days=2)
            if branch_at < NOW and not (ended and branch_at >= ended):
                detail = "rule 1 -> demo" if lead.id % 3 == 0 else "no rule matched -> next step"
                w.add("step_outcome", dict(enrollment_id=enrollment_id, campaign_id=CAMPAIGN, step_id="choose",
                                           outcome="branch", detail=detail, at=branch_at))
        if lead.sql_at:
            w.add("stage_change", dict(lead_id=lead.id, from_stage="mql", to_stage="sql", at=lead.sql_at,
                                       reason=lead.rule, actor="rule"))
        if lead.decided_at:
            w.add("stage_change", dict(
                lead_id=lead.id, from_stage="sql", to_stage="opportunity" if lead.accepted else "recycled",
                at=lead.decided_at, actor="sales",
                reason="accepted by sales" if lead.accepted else f"rejected by sales: {lead.reason}"))
        if lead.customer_at:
            w.add("stage_change", dict(lead_id=lead.id, from_stage="opportunity", to_stage="customer",
                                       at=lead.customer_at, reason="won", actor="api"))
        if progress and lead.id % 100_000 == 0:
            print(f"  {lead.id:,} leads ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    # filler events (page views) up to the wanted count, spread over the leads and the months
    start = datetime.combine(_month_starts(months)[0], datetime.min.time(), tzinfo=timezone.utc)
    span = int((NOW - start).total_seconds())
    for number in range(event_budget):
        at = start + timedelta(seconds=rng.randrange(span))
        w.add("engagement_event", dict(lead_id=rng.randint(1, leads), type="page_view", occurred_at=at,
                                       recorded_at=at, campaign_id=None, step_key=None, delivery_id=None,
                                       properties={"url": "/pricing"}, points=0.0))
        if progress and number % 1_000_000 == 0 and number:
            print(f"  {number:,} filler events ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    truth.events = events
    for first in _month_starts(months):
        last = _next_month(first) - timedelta(days=1)
        for (source, campaign), cents in MONTHLY_SPEND.items():
            truth.spend.append((first, last, source, campaign, cents))
            w.add("spend", dict(period_start=first, period_end=last, source=source, campaign=campaign,
                                amount_cents=cents, currency="EUR", imported_at=NOW))
    w.flush()
    if engine.dialect.name == "postgresql":  # explicit ids: move the sequences past them
        with engine.begin() as conn:
            for table in ("lead", "enrollment", "delivery", "stage_change", "engagement_event", "step_outcome", "spend"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                  f"(SELECT coalesce(max(id), 1) FROM {table}))"))
            conn.execute(text("ANALYZE"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    return truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--database-url", required=True)
    args = parser.parse_args()
    from nurture.storage.database import make_engine
    from nurture.storage.migrate import upgrade

    upgrade(args.database_url)
    engine = make_engine(args.database_url)
    if engine.dialect.name == "sqlite":  # a scratch database: no fsync per chunk
        from sqlalchemy import event

        event.listen(engine, "connect", lambda dbapi, _record: dbapi.execute("PRAGMA synchronous=OFF"))
    if engine.dialect.name == "postgresql":  # no trigger per row: the rollups are counted once at the end
        from sqlalchemy import event

        event.listen(engine, "connect", lambda dbapi, _record: dbapi.execute("SET session_replication_role = replica"))
    triggers: list[str] = []
    if engine.dialect.name == "sqlite":  # no trigger per row either: dropped, then put back before the rollups count
        with engine.begin() as conn:
            triggers = [sql for (name, sql) in conn.execute(text(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name"))]
            for (name,) in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).all():
                conn.execute(text(f'DROP TRIGGER "{name}"'))
    started = time.perf_counter()
    truth = generate(engine, leads=args.leads, events=args.events, months=args.months, progress=True)
    if triggers:
        from nurture.storage.database import transaction
        from nurture.storage.rollups import rebuild

        with transaction(engine) as conn:
            for sql in triggers:
                conn.exec_driver_sql(sql)
            print(f"  rollups counted: {rebuild(conn)}", file=sys.stderr)
    if engine.dialect.name == "postgresql":
        from nurture.storage.database import transaction
        from nurture.storage.rollups import rebuild

        with transaction(make_engine(args.database_url)) as conn:  # a new engine: its triggers fire again
            print(f"  rollups counted: {rebuild(conn)}", file=sys.stderr)
    print(f"wrote {args.leads:,} leads, {truth.events:,} events, {truth.deliveries:,} emails in "
          f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
