"""Storage against real databases: engine set-up, timestamps, constraints, claims and lead upserts."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from db_fixtures import engine, migrated_url, pg_url, postgres_available, postgres_template, sqlite_engine  # noqa: F401
from sqlalchemy.exc import IntegrityError, OperationalError, StatementError

from nurture.application.lead_input import upsert_lead
from nurture.clock import SYSTEM_CLOCK as utcnow
from nurture.core.lead_fields import normalize_email
from nurture.errors import ConfigError, InvalidInput, LeadNotFound
from nurture.storage.database import UTCDateTime, make_engine, session, transaction
from nurture.storage.dialect import WriteLockBusy, for_update_skip_locked, no_wait
from nurture.storage.leads import get_lead, lead_summary
from nurture.storage.models import Delivery, EngagementEvent, Enrollment, Lead, Outbox, StageChange

T0 = datetime(2025, 3, 1, 9, 30, tzinfo=timezone.utc)


def add_lead(engine, email: str = "ada@example.com") -> int:
    with session(engine) as db:
        lead = Lead(email=email)
        db.add(lead)
        db.flush()
        return lead.id


def add_enrollment(engine, lead_id: int, campaign: str = "welcome", status: str = "active") -> int:
    with session(engine) as db:
        enrollment = Enrollment(lead_id=lead_id, campaign_id=campaign, status=status, step_id="s1", next_due_at=T0)
        db.add(enrollment)
        db.flush()
        return enrollment.id


# -- engines ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgres://u@h/db", "postgresql+psycopg"),
        ("postgresql://u@h/db", "postgresql+psycopg"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
def test_make_engine_picks_the_driver(url: str, driver: str) -> None:
    engine = make_engine(url)
    assert engine.url.drivername == driver
    engine.dispose()


def test_make_engine_refuses_other_databases() -> None:
    with pytest.raises(ConfigError, match="unsupported database"):
        make_engine("mysql://u@h/db")
    with pytest.raises(ConfigError, match="invalid database URL"):
        make_engine("not a url")


def test_sqlite_pragmas_are_in_force(sqlite_engine) -> None:
    with sqlite_engine.connect() as connection:
        pragma = lambda name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
        assert pragma("journal_mode") == "wal"
        assert pragma("busy_timeout") == 30000
        assert pragma("foreign_keys") == 1
        assert pragma("synchronous") == 1  # NORMAL


def test_sqlite_without_math_functions_gets_pow_from_python() -> None:
    import sqlite3

    from nurture.storage.dialect import ensure_pow

    class WithoutMath(sqlite3.Connection):  # as an SQLite built without SQLITE_ENABLE_MATH_FUNCTIONS answers
        def execute(self, sql, *args):
            if "pow(" in sql and not getattr(self, "registered", False):
                raise sqlite3.OperationalError("no such function: pow")
            return super().execute(sql, *args)

        def create_function(self, name, narg, func, **kwargs):
            self.registered = True
            return super().create_function(name, narg, func, **kwargs)

    connection = sqlite3.connect(":memory:", factory=WithoutMath)
    ensure_pow(connection)
    assert connection.registered
    assert connection.execute("SELECT pow(0.5, 3.0)").fetchone() == (0.125,)
    plain = sqlite3.connect(":memory:")
    ensure_pow(plain)  # a build with the math functions keeps its own
    assert plain.execute("SELECT pow(2.0, 10.0)").fetchone() == (1024.0,)


def test_sqlite_transactions_take_the_write_lock_when_they_begin(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'lock.db'}"
    holder, waiter = make_engine(url), make_engine(url, busy_timeout=0.2)
    try:
        with transaction(holder) as connection:
            connection.exec_driver_sql("SELECT 1").all()  # only a read: a deferred BEGIN would take no lock yet
            started = time.monotonic()
            with pytest.raises(OperationalError, match="database is locked"), transaction(waiter):
                pass
            assert time.monotonic() - started < 3
            with transaction(waiter, read_only=True) as reader:  # a snapshot read does not queue behind writers
                assert reader.exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        holder.dispose()
        waiter.dispose()


@pytest.fixture
def lock_pair(tmp_path):
    """Two engines on one SQLite file: one to hold the write lock, the other (busy timeout 10 s) to try for it."""
    url = f"sqlite:///{tmp_path / 'lock-pair.db'}"
    holder, engine = make_engine(url), make_engine(url, busy_timeout=10)
    yield holder, engine
    holder.dispose()
    engine.dispose()


def test_a_no_wait_transaction_gives_up_at_once_when_the_write_lock_is_taken(lock_pair) -> None:
    holder, engine = lock_pair
    with transaction(engine) as connection:
        connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    with transaction(holder) as held:
        held.exec_driver_sql("SELECT 1").all()
        started = time.monotonic()
        with pytest.raises(WriteLockBusy), transaction(no_wait(engine)) as connection:
            connection.exec_driver_sql("INSERT INTO t VALUES (1)")
        assert time.monotonic() - started < 1  # not the 10 s busy timeout
        raw = engine.raw_connection()  # the pool's one connection, the one that gave up: its timeout is back
        try:
            assert raw.driver_connection.execute("PRAGMA busy_timeout").fetchone() == (10000,)
        finally:
            raw.close()
    # the lock is free again: the same pooled connection takes it, and waits as configured otherwise
    with transaction(no_wait(engine)) as connection:
        connection.exec_driver_sql("INSERT INTO t VALUES (2)")
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10000
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT x FROM t").scalars().all() == [2]


def test_a_transaction_on_a_kept_connection_commits_or_rolls_back_and_leaves_it_open(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'kept.db'}")
    try:
        with engine.connect() as kept:
            with transaction(kept) as connection:
                assert connection is kept
                connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
                connection.exec_driver_sql("INSERT INTO t VALUES (1)")
            with pytest.raises(RuntimeError), transaction(kept) as connection:
                connection.exec_driver_sql("INSERT INTO t VALUES (2)")
                raise RuntimeError("undo")
            assert not kept.closed and not kept.in_transaction()
            assert kept.connection.driver_connection.in_transaction is False  # SQLite's own state, not SQLAlchemy's
            with pytest.raises(ValueError, match="read_only"), transaction(kept, read_only=True):
                pass
        with engine.connect() as other:
            assert other.exec_driver_sql("SELECT x FROM t").scalars().all() == [1]
    finally:
        engine.dispose()


def test_a_kept_no_wait_connection_gives_up_on_a_taken_lock_and_recovers_from_a_failed_commit(lock_pair) -> None:
    holder, engine = lock_pair
    with transaction(engine) as connection:
        connection.exec_driver_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        connection.exec_driver_sql("CREATE TABLE child (parent_id INTEGER REFERENCES parent (id) "
                                   "DEFERRABLE INITIALLY DEFERRED)")
    kept = no_wait(engine.connect())
    with transaction(holder) as held:
        held.exec_driver_sql("SELECT 1").all()
        with pytest.raises(WriteLockBusy), transaction(kept):
            pass
    driver = kept.connection.driver_connection
    assert driver.execute("PRAGMA busy_timeout").fetchone() == (10000,) and not driver.in_transaction
    # a COMMIT that fails (a deferred foreign key) leaves SQLite inside the transaction, holding the write lock;
    # no pool check-in undoes it on a kept connection: its next transaction must
    with pytest.raises(IntegrityError), transaction(kept) as connection:
        connection.exec_driver_sql("INSERT INTO child VALUES (7)")
    with transaction(kept) as connection:
        connection.exec_driver_sql("INSERT INTO parent VALUES (1)")
        connection.exec_driver_sql("INSERT INTO child VALUES (1)")
    assert not driver.in_transaction
    with transaction(holder) as other:  # nothing holds the lock now
        assert other.exec_driver_sql("SELECT count(*) FROM child").scalar() == 1
    kept.close()


def test_sqlite_writer_waits_for_the_lock_instead_of_failing(lock_pair) -> None:
    holder, waiter = lock_pair
    with transaction(waiter) as connection:
        connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    release = threading.Event()

    def hold() -> None:
        with transaction(holder) as connection:
            connection.exec_driver_sql("INSERT INTO t VALUES (1)")
            release.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    time.sleep(0.2)
    threading.Timer(0.3, release.set).start()
    with transaction(waiter) as connection:  # blocks until the holder commits, then sees its row
        assert connection.exec_driver_sql("SELECT count(*) FROM t").scalar() == 1
        connection.exec_driver_sql("INSERT INTO t VALUES (2)")
    thread.join()


def test_session_rolls_back_when_the_block_raises(engine) -> None:
    with pytest.raises(RuntimeError), session(engine) as db:
        db.add(Lead(email="gone@example.com"))
        db.flush()
        raise RuntimeError("boom")
    with session(engine, read_only=True) as db:
        assert db.execute(sa.select(sa.func.count()).select_from(Lead)).scalar() == 0


# -- timestamps ------------------------------------------------------------------------------------------------


def test_datetimes_read_back_aware_utc(engine) -> None:
    paris_summer = timezone(timedelta(hours=2))
    with session(engine) as db:
        db.add(Lead(email="tz@example.com", unsubscribed_at=datetime(2025, 6, 1, 12, 0, tzinfo=paris_summer)))
    with session(engine, read_only=True) as db:
        lead = db.execute(sa.select(Lead)).scalar_one()
    assert lead.unsubscribed_at == datetime(2025, 6, 1, 10, 0, tzinfo=timezone.utc)
    assert lead.unsubscribed_at.tzinfo == timezone.utc
    assert lead.created_at.tzinfo == timezone.utc
    assert abs(lead.created_at - utcnow()) < timedelta(minutes=1)


@pytest.mark.postgres
@pytest.mark.parametrize("zone", ["Asia/Tokyo", "UTC", "Etc/UTC", "America/St_Johns"])
def test_postgresql_timestamps_read_back_utc_whatever_the_sessions_time_zone(pg_url, zone) -> None:
    """psycopg hands timestamps back in the session's time zone (timezone.utc itself for 'UTC', a ZoneInfo for any
    other): each reads back as the same instant in timezone.utc, and NULL as None."""
    engine = make_engine(pg_url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"SET TIME ZONE '{zone}'")
            query = sa.text("SELECT '2025-06-01 12:00:00.000001+02'::timestamptz AS at, NULL::timestamptz AS never")
            row = conn.execute(query.columns(at=UTCDateTime(), never=UTCDateTime())).one()
    finally:
        engine.dispose()
    assert row.at == datetime(2025, 6, 1, 10, 0, 0, 1, tzinfo=timezone.utc)
    assert row.at.tzinfo is timezone.utc
    assert row.never is None


@pytest.mark.postgres
def test_postgresql_sessions_run_in_utc_after_a_rollback_too(pg_url) -> None:
    """make_engine's connections set the session's zone to UTC once, committed: the pool's rollback on check-in
    keeps it, so a reused connection still reads timestamps in timezone.utc without converting them."""
    engine = make_engine(pg_url)
    try:
        for _ in range(2):  # the second checkout is the first's connection, reset by a rollback
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SHOW TIME ZONE").scalar() == "UTC"
                assert conn.exec_driver_sql("SELECT now()").scalar().tzinfo is timezone.utc
                conn.rollback()
        assert engine.pool.checkedin() == 1
    finally:
        engine.dispose()


def test_datetime_comparisons_work_across_offsets(engine) -> None:
    lead_id = add_lead(engine)
    add_enrollment(engine, lead_id)  # due at T0
    just_before = (T0 - timedelta(seconds=1)).astimezone(timezone(timedelta(hours=-5)))
    with session(engine, read_only=True) as db:
        due = sa.select(Enrollment.id).where(Enrollment.next_due_at <= just_before)
        assert db.execute(due).all() == []
        assert len(db.execute(sa.select(Enrollment.id).where(Enrollment.next_due_at <= T0)).all()) == 1


def test_naive_datetimes_are_refused(engine) -> None:
    with pytest.raises(StatementError, match="naive datetime"), session(engine) as db:
        db.add(Lead(email="naive@example.com", bounced_at=datetime(2025, 1, 1)))


# -- constraints -----------------------------------------------------------------------------------------------


def test_a_lead_is_active_once_per_campaign_but_may_enroll_again_after_ending(engine) -> None:
    lead_id = add_lead(engine)
    first = add_enrollment(engine, lead_id)
    add_enrollment(engine, lead_id, campaign="other")  # another campaign is fine
    with pytest.raises(IntegrityError):
        add_enrollment(engine, lead_id)
    with session(engine) as db:
        db.get(Enrollment, first).status = "exited"
    add_enrollment(engine, lead_id)
    add_enrollment(engine, lead_id, status="completed")  # ended enrollments may repeat


def test_a_step_is_delivered_once_per_enrollment(engine) -> None:
    lead_id = add_lead(engine)
    enrollment_id = add_enrollment(engine, lead_id)

    def deliver(step_key: str) -> None:
        with session(engine) as db:
            db.add(Delivery(enrollment_id=enrollment_id, lead_id=lead_id, campaign_id="welcome", step_id="s1",
                            step_key=step_key))

    deliver("s1")
    deliver("s1/post-2")
    with pytest.raises(IntegrityError):
        deliver("s1")


def test_email_external_id_and_dedup_key_are_unique(engine) -> None:
    lead_id = add_lead(engine)
    with pytest.raises(IntegrityError):
        add_lead(engine)
    with session(engine) as db:
        for external_id in ("evt-1", None, None):
            db.add(EngagementEvent(lead_id=lead_id, type="opened", occurred_at=T0, external_id=external_id))
        db.add(Outbox(kind="sales_webhook", dedup_key="promoted:1", payload={"lead": 1}))
    with pytest.raises(IntegrityError), session(engine) as db:
        db.add(EngagementEvent(lead_id=lead_id, type="opened", occurred_at=T0, external_id="evt-1"))
    with pytest.raises(IntegrityError), session(engine) as db:
        db.add(Outbox(kind="sales_webhook", dedup_key="promoted:1", payload={}))


def test_foreign_keys_are_enforced_and_deleting_a_lead_cascades(engine) -> None:
    with pytest.raises(IntegrityError):
        add_enrollment(engine, lead_id=999)
    lead_id = add_lead(engine)
    enrollment_id = add_enrollment(engine, lead_id)
    with session(engine) as db:
        db.add(Delivery(enrollment_id=enrollment_id, lead_id=lead_id, campaign_id="welcome", step_id="s1",
                        step_key="s1"))
        db.add(StageChange(lead_id=lead_id, from_stage="lead", to_stage="mql", reason="score", actor="rule"))
    with transaction(engine) as connection:
        connection.execute(sa.delete(Lead.__table__).where(Lead.__table__.c.id == lead_id))
    with transaction(engine, read_only=True) as connection:
        for model in (Enrollment, Delivery, StageChange):
            assert connection.execute(sa.select(sa.func.count()).select_from(model)).scalar() == 0


def test_json_columns_save_top_level_changes(engine) -> None:
    lead_id = add_lead(engine)
    with session(engine) as db:
        lead = db.get(Lead, lead_id)
        lead.fields["plan"] = "pro"
        lead.tags.append("trial")
    with session(engine, read_only=True) as db:
        lead = db.get(Lead, lead_id)
        assert (lead.fields, lead.tags) == ({"plan": "pro"}, ["trial"])


# -- claiming --------------------------------------------------------------------------------------------------


def test_claim_clause_is_skip_locked_on_postgresql_only() -> None:
    from sqlalchemy.dialects import postgresql, sqlite

    query = sa.select(Enrollment.id).where(Enrollment.status == "active")
    assert "FOR UPDATE SKIP LOCKED" in str(for_update_skip_locked(query, "postgresql").compile(
        dialect=postgresql.dialect()))
    assert "FOR UPDATE" not in str(for_update_skip_locked(query, sqlite.dialect()).compile(dialect=sqlite.dialect()))


def test_concurrent_claims_take_different_rows(engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("on SQLite, BEGIN IMMEDIATE serializes claimers (tested above)")
    for number in range(4):
        add_enrollment(engine, add_lead(engine, f"l{number}@example.com"))
    claim = for_update_skip_locked(
        sa.select(Enrollment.id).where(Enrollment.status == "active").order_by(Enrollment.next_due_at).limit(2),
        engine.dialect,
    )
    with transaction(engine) as first, transaction(engine) as second:
        mine = set(first.execute(claim).scalars())
        theirs = set(second.execute(claim).scalars())
    assert len(mine) == len(theirs) == 2 and not mine & theirs


def test_a_lead_is_claimed_by_one_worker_at_a_time(engine) -> None:
    """While a worker holds one of a lead's enrollments (claimed, its email not written yet), another worker does not
    claim the lead's other enrollments: it would not see that email, and the frequency cap would let both go."""
    from nurture.storage.schedule import anything_due, claim_due_enrollments, release_enrollments

    lead, other = add_lead(engine), add_lead(engine, "bo@example.com")
    first = add_enrollment(engine, lead, "welcome")
    later, bystander = add_enrollment(engine, lead, "webinar"), add_enrollment(engine, other, "webinar")
    with transaction(engine) as conn:  # these two fall due an hour later
        conn.execute(sa.update(Enrollment.__table__).where(Enrollment.__table__.c.id.in_([later, bystander]))
                     .values(next_due_at=T0 + timedelta(hours=1)))
    campaigns, lease = ["welcome", "webinar"], timedelta(hours=2)

    def claim(owner: str, at: datetime) -> set[int]:
        return {row.id for row in claim_due_enrollments(engine, at, limit=10, owner=owner, lease=lease,
                                                         campaign_ids=campaigns)}

    assert claim("a", T0) == {first}
    at = T0 + timedelta(hours=1, seconds=1)
    assert claim("b", at) == {bystander}  # not the lead worker a holds
    assert not anything_due(engine, at, campaigns)
    release_enrollments(engine, [first], owner="a")  # worker a wrote its decisions (which releases), or gave them back
    assert anything_due(engine, at, campaigns)
    assert claim("b", at) == {first, later}  # a lead's due enrollments come together
    release_enrollments(engine, [first, later], owner="a")  # a late worker a gives back what b holds now: nothing
    assert claim("x", at) == set()
    # a worker that died holds nothing once its lease runs out
    assert claim("c", at + lease + timedelta(seconds=1)) == {first, later, bystander}
    # an enrollment that ended while leased (a goal reached, say) holds nothing either
    again = at + 3 * lease  # c's lease ran out too
    assert claim("d", again) == {first, later, bystander}
    with transaction(engine) as conn:
        conn.execute(sa.update(Enrollment.__table__).where(Enrollment.__table__.c.id == first).values(status="exited"))
        conn.execute(sa.update(Enrollment.__table__).where(Enrollment.__table__.c.id == later)
                     .values(lease_until=None, lease_owner=None))
    assert claim("e", again) == {later}


def test_claims_on_postgresql_take_turns(engine) -> None:
    """Two claims at once would each miss the other's leases: on PostgreSQL a claim waits for the claim lock."""
    if engine.dialect.name != "postgresql":
        pytest.skip("on SQLite, BEGIN IMMEDIATE serializes claimers")
    from nurture.storage.dialect import CLAIM_LOCK
    from nurture.storage.schedule import claim_due_enrollments

    enrollment = add_enrollment(engine, add_lead(engine))
    claimed: list[list[int]] = []
    thread = threading.Thread(target=lambda: claimed.append([row.id for row in claim_due_enrollments(
        engine, T0, limit=10, owner="b", lease=timedelta(minutes=5), campaign_ids=["welcome"])]))
    with transaction(engine) as held:
        held.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": CLAIM_LOCK})  # a claim in progress
        thread.start()
        deadline = time.monotonic() + 10
        waiting = sa.text(  # a bigint key shows as two 32-bit halves; pg_locks is live, not a snapshot
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database WHERE l.locktype = 'advisory' "
            "AND NOT l.granted AND d.datname = current_database() AND l.classid::text::bigint = :high "
            "AND l.objid::text::bigint = :low")
        while not held.execute(waiting, {"high": CLAIM_LOCK >> 32, "low": CLAIM_LOCK & 0xFFFFFFFF}).scalar():
            assert time.monotonic() < deadline, "the second claim did not wait for the first"
            time.sleep(0.01)
        assert claimed == []
    thread.join(10)
    assert claimed == [[enrollment]]


# -- leads -----------------------------------------------------------------------------------------------------


def test_upsert_lead_creates_then_updates_only_what_is_given(engine) -> None:
    with session(engine) as db:
        lead = upsert_lead(db, {"email": " Ada@Example.COM ", "first_name": "Ada", "country": "gb",
                                "company_size": "1,200", "tags": "a; b;a", "plan": "pro"}, actor="api",
                           now=utcnow()).lead
    assert (lead.email, lead.country, lead.company_size, lead.tags) == ("ada@example.com", "GB", 1200, ["a", "b"])
    assert lead.fields == {"plan": "pro"} and lead.stage == "lead"
    with session(engine) as db:
        again = upsert_lead(db, {"email": "ada@example.com", "title": "CTO", "fields": {"seats": 5, "plan": None},
                                 "stage": "MQL"}, actor="cli", now=utcnow()).lead
    assert again.id == lead.id
    assert (again.first_name, again.title, again.fields, again.stage) == ("Ada", "CTO", {"seats": 5}, "mql")
    assert again.stage_changed_at > lead.stage_changed_at
    with session(engine, read_only=True) as db:
        history = db.execute(sa.select(StageChange)).scalars().all()
    assert [(c.from_stage, c.to_stage, c.actor) for c in history] == [("lead", "mql", "cli")]


def test_upsert_lead_records_the_first_stage_of_a_new_lead_past_lead(engine) -> None:
    with session(engine) as db:
        upsert_lead(db, {"email": "new@example.com", "stage": "sql"}, actor="sales", reason="met at a fair",
                    now=utcnow())
    with session(engine, read_only=True) as db:
        change = db.execute(sa.select(StageChange)).scalar_one()
    assert (change.from_stage, change.to_stage, change.reason) == (None, "sql", "met at a fair")


def test_upsert_lead_reports_every_problem(engine) -> None:
    with pytest.raises(InvalidInput) as error, session(engine) as db:
        upsert_lead(db, {"email": "nope", "stage": "hot", "timezone": "Mars/Olympus", "country": "USA",
                         "company_size": "many"}, actor="api", now=utcnow())
    message = str(error.value)
    for part in ("invalid email", "unknown stage", "unknown timezone", "country", "company_size"):
        assert part in message


def test_get_lead_and_summary(engine) -> None:
    with session(engine) as db:
        lead = upsert_lead(db, {"email": "ada@example.com", "stage": "mql", "tags": ["x"]}, actor="import",
                           now=utcnow()).lead
    enrollment_id = add_enrollment(engine, lead.id)
    with session(engine) as db:
        db.add(Delivery(enrollment_id=enrollment_id, lead_id=lead.id, campaign_id="welcome", step_id="s1",
                        step_key="s1", status="retry", attempts=2, error="421 try later"))
        db.add(EngagementEvent(lead_id=lead.id, type="clicked", occurred_at=T0, points=5, properties={"url": "/"}))
    with session(engine, read_only=True) as db:
        assert get_lead(db, " ADA@example.com").id == lead.id
        with pytest.raises(LeadNotFound):
            get_lead(db, "nobody@example.com")
        summary = lead_summary(db, "ada@example.com")
    assert summary["lead"]["stage"] == "mql" and summary["lead"]["tags"] == ["x"]
    assert summary["enrollments"][0]["status"] == "active"
    assert summary["enrollments"][0]["next_due_at"] == T0.isoformat()
    assert summary["deliveries"][0] | {"error": "421 try later", "attempts": 2} == summary["deliveries"][0]
    assert summary["events"][0]["type"] == "clicked" and summary["events"][0]["properties"] == {"url": "/"}
    assert [c["to_stage"] for c in summary["stage_history"]] == ["mql"]


def test_normalize_email() -> None:
    assert normalize_email("  Ada.Lovelace@Example.COM\n") == "ada.lovelace@example.com"
