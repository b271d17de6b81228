"""Recording events in batches (application.record_events) against an independent replay: random histories on both back-ends
check points (daily caps), scores (decay, fit, caps) and stages after every event; duplicates on the first attempt;
enrollment of exactly the leads a full sweep would enroll; the text SQLite stores for the driver-level writes."""

from __future__ import annotations

import random
import sqlite3
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from db_fixtures import engine, migrated_url, pg_url, postgres_available, postgres_template, sqlite_engine  # noqa: F401
from intake_world import (
    T0,
    add_delivery,
    count_rows,
    events_of,
    lead_row,
    load_world,
    stage_history,
    write_campaigns,
)
from sqlalchemy import select

from nurture.application.enroll import enroll_leads
from nurture.application.event_input import DUPLICATE, RECORDED, EventIn
from nurture.application.lead_input import upsert_lead
from nurture.application.override_stage import override_stage
from nurture.application.record_events import DUPLICATE, RECORDED, EventIn, record_events
from nurture.application.rescore import score_breakdown
from nurture.core.facts import Engagement
from nurture.core.score_state import window_start
from nurture.core.scoring import event_points, score, utc_day
from nurture.storage.database import make_engine, session, transaction
from nurture.storage.models import EngagementEvent, Enrollment, Lead, StageChange
from nurture.storage.rows import lead_view

TYPES = ["page_view", "page_view", "email_open", "email_click", "content_download", "pricing_page_view",
         "webinar_attended", "unscored_type"]


@pytest.fixture
def world(tmp_path: Path):
    return load_world(write_campaigns(tmp_path / "campaigns"))


class Replay:
    """What recording should give, worked out independently of application.record_events: every scored event kept in the order
    the database returns a lead's history (time, then recording order), caps counted per type and UTC day, the score
    of each event computed over the lead's history at the batch's start followed by the batch's events in order
    (as intake always has), with :func:`nurture.core.scoring.score` over the whole list."""

    def __init__(self, rules):
        self.rules = rules
        self.scored: dict[str, list[tuple[Engagement, float, int]]] = {}  # email -> (event, points, sequence)
        self.recorded: dict[str, tuple[str, float]] = {}  # client id -> (email, points)
        self.stage: dict[str, str] = {}
        self.sequence = 0

    def batch(self, engine, events: list[EventIn], now) -> list[tuple[str, float, float | None, str | None, bool]]:
        """Expected (status, points, score, stage, stage_changed) per event; score/stage None for duplicates."""
        at_start = {email: sorted(items, key=lambda item: (item[0].at, item[2])) for email, items in self.scored.items()}
        running = {email: [(e, p) for e, p, _ in items] for email, items in at_start.items()}
        expected = []
        for event in events:
            email = event.email.strip().lower()
            if event.id is not None and event.id in self.recorded:
                expected.append((DUPLICATE, self.recorded[event.id][1], None, None, False))
                continue
            at = (event.occurred_at or now)
            day = utc_day(at)
            scored_that_day = sum(1 for e, p, _ in self.scored.get(email, []) if e.type == event.type and utc_day(e.at) == day)
            points, _why = event_points(self.rules, Engagement(event.type, at), scored_that_day)
            self.sequence += 1
            if points:
                self.scored.setdefault(email, []).append((Engagement(event.type, at), points, self.sequence))
                running.setdefault(email, []).append((Engagement(event.type, at), points))
            if event.id is not None:
                self.recorded[event.id] = (email, points)
            with transaction(engine, read_only=True) as conn:
                row = conn.execute(select(Lead.__table__).where(Lead.__table__.c.email == email)).one()
            total = score(self.rules, lead_view(row), running.get(email, []), now).total
            stage = self.stage.get(email, "lead")
            changed = stage == "lead" and total >= 40
            if changed:
                stage = self.stage[email] = "mql"
            expected.append((RECORDED, points, total, stage, changed))
        return expected


class HistoryReads:
    """Which leads' histories a batch read from the events (sums, and cap counts with the types asked)."""

    def __init__(self, monkeypatch):
        from nurture.storage.event_bulk import EventBulk
        from nurture.storage.event_bulk_sqlite import SqliteEventBulk

        self.sums: list[int] = []
        self.counts: list[tuple[tuple[int, ...], tuple[str, ...] | None, tuple[Any, ...]]] = []  # ids, types, days
        for cls in (EventBulk, SqliteEventBulk):
            sums, counts = cls.scored_groups, cls.scored_counts
            monkeypatch.setattr(cls, "scored_groups", self._spy(sums, lambda ids, rest: self.sums.extend(ids)))
            monkeypatch.setattr(cls, "scored_counts", self._spy(counts, lambda ids, rest: self.counts.append(
                (tuple(ids), tuple(rest[0]) if rest[0] is not None else None, tuple(rest[1])))))

    @staticmethod
    def _spy(method, note):
        def spied(bulk, conn, lead_ids, *rest):
            note(list(lead_ids), rest)
            return method(bulk, conn, lead_ids, *rest)
        return spied


@pytest.mark.parametrize("ahead", [True, False], ids=["events-ahead-of-now", "no-events-ahead"])
def test_random_batches_give_the_points_scores_and_stages_of_an_independent_replay(engine, world, ahead, monkeypatch):
    """With events stamped up to a day ahead of the batch's time (no score state can stand for those leads: their
    history is read), and without (after its first batch, a lead's history is never read again, but for the cap
    counts of days before its score state's window)."""
    catalog, rules = world
    rng = random.Random(20261123)
    reads = HistoryReads(monkeypatch)
    emails = [f"lead{i}@example.com" for i in range(12)]
    with session(engine) as orm_session:  # some leads known beforehand, with fit points
        for email in emails[:4]:
            upsert_lead(orm_session, {"email": email, "company_size": rng.choice([50, 500, 5000])}, actor="cli", now=T0)
    replay = Replay(rules)
    now = T0
    ids: list[str] = []
    recorded = 0
    for batch_number in range(40):
        now += timedelta(minutes=rng.randint(0, 600))
        events = []
        for index in range(rng.choice([1, 1, 2, 5, 17])):
            if ids and rng.random() < 0.1:
                event_id = rng.choice(ids)  # a client resending an event
            else:
                event_id = f"b{batch_number}-{index}" if rng.random() < 0.8 else None
            latest = 23 * 60 if ahead else 0
            at = now + timedelta(minutes=rng.randint(-5 * 24 * 60, latest)) if rng.random() < 0.7 else None
            events.append(EventIn(rng.choice(emails).upper() if rng.random() < 0.2 else rng.choice(emails),
                                  rng.choice(TYPES), occurred_at=at, id=event_id))
        expected_status = []
        seen = set(replay.recorded)
        for event in events:  # ids repeated inside the batch are duplicates too
            expected_status.append(event.id is not None and event.id in seen)
            if event.id is not None:
                seen.add(event.id)
        late_before = len(reads.counts)
        results = record_events(engine, catalog, rules, events, now=now, actor="api")
        for read_ids, types, days in reads.counts[late_before:]:
            if types is not None:  # a late event's day, before the window of the states of these leads
                assert days and max(days) < window_start(now), (batch_number, days)
                capped_late = {e.email.strip().lower() for e in events if e.type in set(types) and e.occurred_at
                               and utc_day(e.occurred_at) in set(days)}
                with transaction(engine, read_only=True) as conn:
                    read_emails = set(conn.execute(select(Lead.__table__.c.email).where(Lead.__table__.c.id.in_(read_ids))).scalars())
                assert read_emails <= capped_late, (batch_number, read_emails, capped_late)
        # the replay reads fit from the stored lead: run it after recording (fields do not change here)
        expected = replay.batch(engine, events, now)
        for event, result, wanted, duplicate in zip(events, results, expected, expected_status):
            assert (result.status == DUPLICATE) == duplicate
            status, points, total, stage, changed = wanted
            assert (result.status, result.points) == (status, points), (batch_number, event)
            if status == RECORDED:
                assert (result.score, result.stage, result.stage_changed) == (total, stage, changed), (batch_number, event)
        ids += [event.id for event in events if event.id is not None]
        for email in {result.email for result in results if result.status == RECORDED}:  # the leads rescored
            stored = lead_row(engine, email)
            assert stored.score == [r for r in results if r.email == email and r.status == RECORDED][-1].score
            # and the stored score is the full recomputation's, up to the order the additions were made in
            assert stored.score == pytest.approx(score_breakdown(engine, rules, email, now).total, abs=0.011)
        recorded += sum(1 for r in results if r.status == RECORDED)
    assert count_rows(engine, EngagementEvent) == recorded  # duplicates wrote nothing
    assert {e.external_id for e in events_of(engine) if e.external_id} == set(replay.recorded)
    with transaction(engine, read_only=True) as conn:
        states = dict(conn.execute(select(Lead.__table__.c.id, Lead.__table__.c.score_state)).all())
    if ahead:
        assert Counter(reads.sums).most_common(1)[0][1] > 3  # leads with events ahead: read again and again
    else:
        # the four leads stored beforehand (no state yet) read once, at their first event; the others never
        assert sorted(Counter(reads.sums).values()) == [1, 1, 1, 1]
        assert all(state is not None for state in states.values())
        assert any(types is not None for _ids, types, _days in reads.counts)  # a late event's day was read


def test_a_score_state_is_not_used_with_another_half_life_or_by_a_batch_stamped_before_it(
        engine, world, tmp_path, monkeypatch):
    catalog, rules = world
    folder = write_campaigns(tmp_path / "faster-decay")
    (folder / "scoring.yaml").write_text((folder / "scoring.yaml").read_text().replace("half_life: 30d",
                                                                                         "half_life: 2d"))
    _catalog, faster = load_world(folder)
    email = "state@example.com"
    history = [EventIn(email, kind, occurred_at=T0 - timedelta(days=days))
               for kind, days in (("webinar_attended", 9), ("content_download", 4), ("page_view", 1))]
    record_events(engine, catalog, rules, history, now=T0, actor="api")
    reads = HistoryReads(monkeypatch)

    def check(event_rules, now, kind):
        [result] = record_events(engine, catalog, event_rules, [EventIn(email, kind)], now=now, actor="api")
        assert result.score == pytest.approx(score_breakdown(engine, event_rules, email, now).total, abs=0.011)
        return result.score

    day = T0 + timedelta(days=1)
    check(rules, day, "email_click")  # the state written at T0, decayed to a day later
    assert reads.sums == []
    fast = check(faster, day + timedelta(hours=1), "email_click")  # a 2-day half-life: the history is read
    assert len(reads.sums) == 1 and fast < 30
    check(faster, day + timedelta(hours=2), "page_view")  # the state written with 2 days is used
    assert len(reads.sums) == 1
    check(faster, T0 + timedelta(hours=5), "page_view")  # a clock behind the state's time: read again
    assert len(reads.sums) == 2


def test_an_event_recorded_before_does_not_create_the_lead_of_its_repeat(engine, world):
    catalog, rules = world
    record_events(engine, catalog, rules, [EventIn("a@example.com", "content_download", id="x")], now=T0, actor="api")
    results = record_events(engine, catalog, rules, [
        EventIn("other@example.com", "webinar_attended", id="x"),  # a resend, with another email: still a duplicate
        EventIn("b@example.com", "page_view", id="y"),
        EventIn("a@example.com", "page_view", id="z"),
    ], now=T0 + timedelta(minutes=1), actor="api")

    assert [(r.status, r.email, r.points, r.score) for r in results] == [
        (DUPLICATE, "a@example.com", 10, 10), (RECORDED, "b@example.com", 1, 1), (RECORDED, "a@example.com", 1, 11),
    ]
    assert lead_row(engine, "other@example.com") is None
    assert sorted(e.external_id for e in events_of(engine)) == ["x", "y", "z"]
    assert [c.to_stage for c in stage_history(engine, "b@example.com")] == ["lead"]


def test_a_batch_of_repeats_only_changes_nothing(engine, world):
    catalog, rules = world
    events = [EventIn(f"l{i}@example.com", "webinar_attended", id=f"e{i}") for i in range(5)]
    first = record_events(engine, catalog, rules, events, now=T0, actor="api")
    again = record_events(engine, catalog, rules, events[::-1], now=T0 + timedelta(hours=1), actor="api")
    assert [r.status for r in again] == [DUPLICATE] * 5
    assert [(r.email, r.points, r.score) for r in again] == [(r.email, r.points, r.score) for r in first[::-1]]
    assert count_rows(engine, EngagementEvent) == 5 and count_rows(engine, StageChange) == 5


def test_a_tracking_burst_with_a_client_id_recorded_before_is_a_duplicate_of_that_id(engine, world):
    catalog, rules = world
    delivery_id = add_delivery(engine, "a@example.com")
    record_events(engine, catalog, rules, [EventIn("a@example.com", "email_click", id="c1", occurred_at=T0,
                                                   properties={"url": "u"})], now=T0, actor="api")
    burst = EventIn("a@example.com", "email_click", occurred_at=T0, properties={"url": "u"}, id="c1",
                    delivery_id=delivery_id, dedupe_within=timedelta(seconds=10))
    [result] = record_events(engine, catalog, rules, [burst], now=T0, actor="api")
    assert (result.status, result.points) == (DUPLICATE, 3)
    assert len(events_of(engine)) == 1


def test_leads_are_enrolled_as_a_full_sweep_would_enroll_them(engine, world, tmp_path):
    """Intake skips the enrollment work for leads no campaign's stage and lead-field filters let in: a full sweep
    afterwards must find nobody it would enroll that intake did not."""
    catalog, rules = world
    rng = random.Random(5)
    stages = {f"l{i}@example.com": rng.choice(["lead", "mql", "sql", "recycled"]) for i in range(30)}
    with session(engine) as orm_session:
        for email, stage in stages.items():
            upsert_lead(orm_session, {
                "email": email, "stage": stage if stage != "recycled" else None,
                "company_size": rng.choice([None, 10, 500]), "tags": rng.sample(["vip", "x"], rng.randint(0, 2)),
            }, actor="cli", now=T0)
    for email in (email for email, stage in stages.items() if stage == "recycled"):  # only sales or an admin recycle
        override_stage(engine, catalog, email=email, stage="recycled", reason="returned by sales", now=T0)
    # every lead has a reason to be looked at: new, or with an event an entry filter reads (had_event), some moved to
    # mql by a webinar too
    events = [EventIn(f"l{i}@example.com", "pricing_page_view") for i in range(30)]
    events += [EventIn(f"l{i}@example.com", "webinar_attended") for i in range(0, 30, 3)]
    events += [EventIn(f"new{i}@example.com", rng.choice(["pricing_page_view", "page_view", "webinar_attended"]))
               for i in range(10)]
    record_events(engine, catalog, rules, events, now=T0, actor="api")
    enrolled = count_rows(engine, Enrollment)
    assert enrolled > 0  # some leads did match (visitors: pricing_page_view; mql-nurture: mql)
    assert enroll_leads(engine, catalog, T0) == 0
    assert count_rows(engine, Enrollment) == enrolled


def test_an_event_of_a_lead_without_enrollments_changes_no_enrollment(engine, world):
    catalog, rules = world
    add_delivery(engine, "nurtured@example.com")
    record_events(engine, catalog, rules, [EventIn("fresh@example.com", "unsubscribe"),
                                           EventIn("nurtured@example.com", "unsubscribe")], now=T0, actor="api")
    assert lead_row(engine, "fresh@example.com").unsubscribed_at == T0
    with transaction(engine, read_only=True) as conn:
        statuses = [(row.status, row.end_reason) for row in conn.execute(select(Enrollment.__table__))]
    assert statuses == [("exited", "unsubscribed")]


def test_sqlite_stores_the_driver_level_writes_as_sqlalchemy_would(sqlite_engine, world, tmp_path):
    """The SQLite writes skip SQLAlchemy's per-value conversions: the stored text must be what SQLAlchemy writes."""
    catalog, rules = world
    at = T0.astimezone(__import__("zoneinfo").ZoneInfo("America/Chicago")) + timedelta(microseconds=7)
    record_events(sqlite_engine, catalog, rules, [
        EventIn("a@example.com", "email_click", occurred_at=at, properties={"url": "https://x/é", "n": [1, 2.5]},
                id="one"),
        EventIn("a@example.com", "content_download", occurred_at=at + timedelta(seconds=1)),
        EventIn("b@example.com", "page_view", occurred_at=T0.replace(microsecond=0), id="two"),
    ], now=T0 + timedelta(hours=1), actor="api")
    EV, L, SC = EngagementEvent.__table__, Lead.__table__, StageChange.__table__
    score = lead_row(sqlite_engine, "a@example.com").score
    with transaction(sqlite_engine) as conn:  # the same values, written by SQLAlchemy Core
        lead_id = conn.execute(L.insert().values(
            email="core@example.com", tags=[], fields={}, stage="lead", score=0.0, created_at=T0 + timedelta(hours=1),
            updated_at=T0 + timedelta(hours=1), stage_changed_at=T0 + timedelta(hours=1)).returning(L.c.id)).scalar_one()
        conn.execute(EV.insert().values(
            lead_id=lead_id, type="email_click", occurred_at=at, recorded_at=T0 + timedelta(hours=1),
            external_id="core", properties={"url": "https://x/é", "n": [1, 2.5]}, points=3.0))
        conn.execute(SC.insert().values(lead_id=lead_id, from_stage=None, to_stage="lead", at=T0 + timedelta(hours=1),
                                        reason="r", actor="api"))
        conn.execute(L.update().where(L.c.id == lead_id).values(
            score=score, stage="lead", stage_changed_at=T0 + timedelta(hours=1), updated_at=T0 + timedelta(hours=1)))
    raw = sqlite3.connect(str(sqlite_engine.url.database))
    try:
        events = raw.execute("SELECT external_id, occurred_at, recorded_at, properties, points, typeof(points) "
                             "FROM engagement_event WHERE external_id IN ('one', 'core') ORDER BY id").fetchall()
        assert events[0][1:] == events[1][1:]
        leads = raw.execute("SELECT tags, fields, stage, score, typeof(score), created_at, updated_at, stage_changed_at, "
                            "unsubscribed_at, bounced_at FROM lead WHERE email IN ('a@example.com', 'core@example.com') "
                            "ORDER BY id").fetchall()
        assert leads[0] == leads[1]
        changes = raw.execute("SELECT at, typeof(at) FROM stage_change ORDER BY id").fetchall()
        assert len(set(changes)) == 1
        seconds = raw.execute("SELECT occurred_at FROM engagement_event WHERE external_id = 'two'").fetchone()
        assert seconds == ("2024-05-01 12:00:00.000000",)
    finally:
        raw.close()


@pytest.mark.postgres
def test_postgres_writes_the_leads_back_as_a_per_row_update_would(pg_url, world, monkeypatch):
    """The batch's leads go back in one UPDATE over arrays on PostgreSQL: the stored rows must be those the per-row
    update of the generic code stores (stage changes, suppression times, scores, states; NULLs among values)."""
    from nurture.application import record_events as intake
    from nurture.storage.event_bulk import EventBulk
    from nurture.storage.migrate import upgrade as migrate_up

    catalog, rules = world
    migrate_up(pg_url)
    engine = make_engine(pg_url)
    try:
        def batch(prefix):
            emails = [f"{prefix}{i}@example.com" for i in range(6)]
            record_events(engine, catalog, rules, [EventIn(email, "page_view") for email in emails], now=T0, actor="api")
            later = T0 + timedelta(hours=1)
            record_events(engine, catalog, rules, [
                EventIn(emails[0], "webinar_attended", id=f"{prefix}-w"), EventIn(emails[0], "content_download"),  # mql
                EventIn(emails[1], "unsubscribe"), EventIn(emails[2], "bounce", properties={"reason": "550 ü", "n": [1]}),
                EventIn(emails[3], "email_click", occurred_at=later + timedelta(hours=2), id=f"{prefix}-c"),  # ahead
                EventIn(emails[4], "email_open", campaign_id="mql-nurture", step_key="welcome"),
                EventIn(emails[4], "page_view", occurred_at=later - timedelta(microseconds=1)),
                EventIn(f"{prefix}-unscored@example.com", "demo_request"),  # a new lead whose score is 0
            ], now=later, actor="api")
            L, EV = Lead.__table__, EngagementEvent.__table__
            with transaction(engine, read_only=True) as conn:
                leads = conn.execute(select(L).where(L.c.email.like(f"{prefix}%")).order_by(L.c.email)).all()
                events = conn.execute(select(EV, L.c.email).join(L, L.c.id == EV.c.lead_id)
                                      .where(L.c.email.like(f"{prefix}%")).order_by(EV.c.id)).all()
            return ([{k: v for k, v in row._mapping.items() if k not in ("id", "email")} for row in leads],
                    [{k: (v.replace(prefix, "") if isinstance(v, str) else v) for k, v in row._mapping.items()
                      if k not in ("id", "lead_id")} for row in events])

        arrays, array_events = batch("arrays")
        monkeypatch.setattr(intake, "bulk_writer", lambda dialect: EventBulk(dialect.name))
        per_row, per_row_events = batch("perrow")
        assert arrays == per_row
        assert array_events == per_row_events and len(array_events) == 14  # the same rows, in the same order
        assert [row["score"] for row in arrays].count(0) == 1
        assert {row["stage"] for row in arrays} >= {"lead", "mql"}
        assert sum(row["unsubscribed_at"] is not None for row in arrays) == 1
        assert sum(row["bounced_at"] is not None for row in arrays) == 1
        assert sum(row["score_state"] is None for row in arrays) == 1 and isinstance(arrays[0]["score_state"], list)
    finally:
        engine.dispose()


def test_sqlite_reads_the_batch_rows_as_sqlalchemy_would(sqlite_engine, world):
    """The SQLite reads of leads and scored history skip SQLAlchemy's result conversions: same values, same types."""
    from nurture.storage.dialect import bulk_writer as _bulk_for
    from nurture.storage.event_bulk import EventBulk as _Bulk

    catalog, rules = world
    with session(sqlite_engine) as orm_session:
        upsert_lead(orm_session, {"email": "full@example.com", "first_name": "Ada", "company_size": 250, "country": "DE",
                                  "timezone": "Europe/Berlin", "tags": ["a", "b"], "fields": {"x": [1, {"y": None}]}},
                    actor="cli", now=T0)
        upsert_lead(orm_session, {"email": "bare@example.com"}, actor="cli", now=T0 + timedelta(microseconds=1))
    add_delivery(sqlite_engine, "full@example.com")
    record_events(sqlite_engine, catalog, rules, [
        EventIn("full@example.com", "unsubscribe", occurred_at=T0 + timedelta(seconds=1)),
        EventIn("full@example.com", "webinar_attended", occurred_at=T0 - timedelta(days=2)),
        EventIn("bare@example.com", "page_view"), EventIn("bare@example.com", "email_open"),
    ], now=T0 + timedelta(hours=2), actor="api")
    emails = ["bare@example.com", "full@example.com", "missing@example.com"]
    with transaction(sqlite_engine) as conn:
        fast, core = _bulk_for(conn.dialect), _Bulk("sqlite")
        assert type(fast) is not _Bulk
        for wanted in (emails, emails[1:2]):
            mine, theirs = fast.lock_leads(conn, wanted), core.lock_leads(conn, wanted)
            assert sorted(mine) == sorted(theirs) == sorted(set(wanted) - {"missing@example.com"})
            for email, row in theirs.items():
                expected = dict(row._mapping)
                got = {name: getattr(mine[email], name) for name in expected}
                assert got == expected and [type(v) for v in got.values()] == [type(v) for v in expected.values()]
        ids = sorted(row.id for row in core.lock_leads(conn, emails).values())
        assert fast.scored_points(conn, ids) == core.scored_points(conn, ids)
        assert len(fast.scored_points(conn, ids)) == 4


@pytest.mark.parametrize("half_life", [7 * 86400.0, 36.5, None])
def test_the_database_sums_a_history_as_the_events_added_one_by_one(engine, world, half_life):
    """What scoring reads of a lead's history, summed by SQLite or PostgreSQL (decay, future events counted in full,
    microseconds, negative points), against the same events folded in Python one by one; caps count the asked
    types and UTC days only."""
    from nurture.storage.dialect import bulk_writer as _bulk_for
    from nurture.storage.event_bulk import EventBulk as _Bulk

    catalog, rules = world
    rng = random.Random(f"sums{half_life}")
    emails = [f"sum{i}@example.com" for i in range(5)]
    events = [EventIn(rng.choice(emails), rng.choice([*TYPES, "careers_page_view"]),
                      occurred_at=T0 + timedelta(seconds=rng.randint(-40 * 86400, 86400), microseconds=rng.randint(0, 999_999)))
              for _ in range(300)]
    record_events(engine, catalog, rules, events, now=T0, actor="api")
    now = T0 + timedelta(hours=3, microseconds=123_456)  # some events still ahead of it
    with transaction(engine) as conn:
        ids = sorted(conn.execute(select(Lead.__table__.c.id).where(Lead.__table__.c.email.in_(emails))).scalars())
        fast, reference = _bulk_for(conn.dialect), _Bulk("sqlite")  # the reference folds the rows in Python
        got = {(g[0], g[1]): g[2:] for g in fast.scored_groups(conn, ids, now, half_life)}
        want = {(g[0], g[1]): g[2:] for g in reference.scored_groups(conn, ids, now, half_life)}
        assert sorted(got) == sorted(want) and len(want) >= 10
        for key, (points, raw, count, latest) in want.items():
            assert got[key][1:] == (raw, count, latest), key
            # SQLite's julianday() keeps milliseconds: an age off by up to 0.5 ms, a relative error of ~1e-8 per event
            # with a half-life of a day (a wrong formula is off by far more)
            assert got[key][0] == pytest.approx(points, rel=1e-6, abs=1e-9), key
        assert any(points != raw for points, raw, _c, _l in want.values()) == (half_life is not None)
        days = sorted({utc_day(e.occurred_at) for e in events})[::3]
        for types in (["page_view"], ["page_view", "email_open", "careers_page_view"]):
            counted = fast.scored_counts(conn, ids, types, days)
            assert sorted(counted) == sorted(reference.scored_counts(conn, ids, types, days))
            assert counted and {row[1] for row in counted} <= set(types) and {row[2] for row in counted} <= set(days)


def test_cleaning_an_event_keeps_every_field():
    from dataclasses import fields

    from nurture.application.event_input import clean_event

    event = EventIn(" A@Example.com ", "email_click", occurred_at=T0, properties={"url": "u"}, id="i", campaign_id="c",
                    step_key="s", delivery_id=3, dedupe_within=timedelta(seconds=10))
    cleaned = clean_event(event, T0)
    assert cleaned.email == "a@example.com"
    for name in (f.name for f in fields(EventIn)):
        if name != "email":
            assert getattr(cleaned, name) == getattr(event, name), name
    assert clean_event(EventIn("a@example.com", "page_view"), T0).properties == {}


@pytest.mark.postgres
@pytest.mark.parametrize("kind, reason", [("demo_request", "goal:demo_request"), ("unsubscribe", "unsubscribed")])
def test_postgres_a_request_that_waited_on_the_lead_lock_ends_the_enrollment_the_other_request_created(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, reason: str
) -> None:
    import threading
    import time

    from intake_world import enrollments_of

    import nurture.application.record_events as intake
    from nurture.storage.database import make_engine
    from nurture.storage.migrate import upgrade

    engine = make_engine(pg_url)
    try:
        upgrade(engine)
        catalog, rules = load_world(write_campaigns(tmp_path / "campaigns"))
        email = "x@acme.example"
        record_events(engine, catalog, rules, [EventIn(email, "content_download", occurred_at=T0)], now=T0, actor="api")
        assert enrollments_of(engine, email) == []
        real = intake.enroll_in_transaction
        enrolled = threading.Event()

        def enroll_then_hold(conn, catalog, ids, now):  # the first request keeps the lock a while
            count = real(conn, catalog, ids, now)
            if threading.current_thread().name == "first":
                enrolled.set()
                time.sleep(1.0)
            return count

        monkeypatch.setattr(intake, "enroll_in_transaction", enroll_then_hold)
        first = threading.Thread(name="first", target=record_events, args=(
            engine, catalog, rules, [EventIn(email, "webinar_attended", occurred_at=T0)]), kwargs={"now": T0, "actor": "api"})
        first.start()
        assert enrolled.wait(30)
        record_events(engine, catalog, rules, [EventIn(email, kind, occurred_at=T0)], now=T0, actor="api")  # waits
        first.join(30)
        assert [(e.status, e.end_reason) for e in enrollments_of(engine, email)] == [("exited", reason)]
    finally:
        engine.dispose()


def test_stage_changes_that_wait_with_the_batch_store_the_rows_of_stage_changes_written_at_once(engine, world,
                                                                                             monkeypatch):
    """Moves to mql that wait with the batch's other writes (written in one insert, after the events) store the same
    history rows, in the same order, and the same events, enrollments and leads as moves written at once (each
    writing the events queued before it first)."""
    from nurture.application.record_events import EventBatch
    from nurture.storage.models import Enrollment as EnrollmentModel

    catalog, rules = world
    inserts: list[int] = []

    def events(prefix: str) -> list[EventIn]:
        a, b, c = (f"{prefix}-{name}@example.com" for name in "abc")
        return [EventIn(a, "webinar_attended"), EventIn(b, "page_view"), EventIn(a, "content_download"),  # a: mql
                EventIn(c, "webinar_attended"), EventIn(b, "webinar_attended"), EventIn(c, "content_download"),
                EventIn(a, "pricing_page_view"), EventIn(b, "content_download"), EventIn(c, "email_open"),
                EventIn(b, "email_click")]

    def stored(prefix: str):
        L, SC, EN = Lead.__table__, StageChange.__table__, EnrollmentModel.__table__
        with transaction(engine, read_only=True) as conn:
            moves = conn.execute(select(L.c.email, SC.c.from_stage, SC.c.to_stage, SC.c.at, SC.c.reason, SC.c.actor)
                                 .join(L, L.c.id == SC.c.lead_id).where(L.c.email.like(f"{prefix}-%"))
                                 .order_by(SC.c.id)).all()
            enrolled = conn.execute(select(L.c.email, EN.c.campaign_id, EN.c.step_id, EN.c.status)
                                    .join(L, L.c.id == EN.c.lead_id).where(L.c.email.like(f"{prefix}-%"))
                                    .order_by(EN.c.id)).all()
            leads = conn.execute(select(L.c.email, L.c.stage, L.c.score, L.c.stage_changed_at, L.c.score_state)
                                 .where(L.c.email.like(f"{prefix}-%")).order_by(L.c.id)).all()
            recorded = conn.execute(select(L.c.email, EngagementEvent.__table__.c.type)
                                    .join(L, L.c.id == EngagementEvent.__table__.c.lead_id)
                                    .where(L.c.email.like(f"{prefix}-%")).order_by(EngagementEvent.__table__.c.id)).all()
        strip = lambda rows: [(row[0].split("-", 1)[1], *row[1:]) for row in rows]  # noqa: E731
        return strip(moves), strip(enrolled), strip(leads), strip(recorded)

    for name in ("insert_events", "insert_stage_change"):  # count the writes of each way
        for cls in {type(bulk) for bulk in [_bulk(engine)]}:
            original = getattr(cls, name)
            monkeypatch.setattr(cls, name, lambda self, *args, _original=original: (inserts.append(1), _original(
                self, *args))[1])
    record_events(engine, catalog, rules, events("queued"), now=T0, actor="api")
    queued_writes = len(inserts)
    move = EventBatch.move

    def written_at_once(self, *args, queued=False, **kwargs):
        return move(self, *args, **kwargs)

    monkeypatch.setattr(EventBatch, "move", written_at_once)
    record_events(engine, catalog, rules, events("direct"), now=T0, actor="api")
    queued, direct = stored("queued"), stored("direct")
    assert queued == direct
    assert [move[2] for move in queued[0]].count("mql") == 3  # every lead moved to mql within the batch
    assert len(queued[3]) == 10
    assert queued_writes == 1 and len(inserts) - queued_writes == 7  # one insert of events against 4 and 3 moves


def _bulk(engine):
    from nurture.storage.dialect import bulk_writer

    with transaction(engine, read_only=True) as conn:
        return bulk_writer(conn.dialect)
