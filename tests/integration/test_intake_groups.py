"""Group commit (application.record_groups, intake.group_commit): several requests' events in one transaction, each
request answered as if recorded alone, one after the other; a request the database refuses fails alone; a failed
COMMIT answers no request as recorded. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from db_fixtures import engine, migrated_url, postgres_available, postgres_template  # noqa: F401
from intake_world import T0, count_rows, events_of, lead_row, load_world, write_campaigns
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError

from nurture.application.event_input import DUPLICATE, RECORDED, EventIn, InvalidEvents
from nurture.application.record_events import record_events
from nurture.application.record_groups import record_together
from nurture.intake.group_commit import GroupWriter
from nurture.storage.database import make_engine
from nurture.storage.migrate import upgrade
from nurture.storage.models import EngagementEvent, Lead


@pytest.fixture
def world(tmp_path: Path):
    return load_world(write_campaigns(tmp_path / "campaigns"))


def requests_with_a_duplicate_and_an_invalid_one() -> list[list[EventIn]]:
    return [
        [EventIn("a@example.com", "webinar_attended", id="w-1"), EventIn("b@example.com", "page_view")],
        [EventIn("c@example.com", "page_view", id="w-1"),  # the first request's id: a duplicate
         EventIn("a@example.com", "content_download", id="d-1")],
        [EventIn("e@example.com", "page_view"), EventIn("not an email", "page_view")],  # invalid: refused alone
        [EventIn("A@Example.com ", "pricing_page_view")],
    ]


def commits(engine) -> list[int]:
    counted: list[int] = []
    event.listen(engine, "commit", lambda _conn: counted.append(1))
    return counted


def test_a_group_answers_each_request_in_one_transaction(engine, world):
    catalog, rules = world
    counted = commits(engine)
    outcomes = record_together(engine, catalog, rules, requests_with_a_duplicate_and_an_invalid_one(), now=T0,
                               actor="api")
    assert len(counted) == 1  # the three valid requests: one transaction
    invalid = outcomes[2]
    assert isinstance(invalid, InvalidEvents) and [index for index, _ in invalid.problems] == [1]
    assert count_rows(engine, EngagementEvent) == 4 and count_rows(engine, Lead) == 2  # a and b: c's event was a repeat
    assert [e.type for e in events_of(engine, "e@example.com")] == []
    assert [e.type for e in events_of(engine, "c@example.com")] == []

    assert [r.status for r in outcomes[0]] == [RECORDED, RECORDED]  # type: ignore[union-attr]
    assert [(r.index, r.status, r.email) for r in outcomes[1]] == [  # type: ignore[union-attr]
        (0, DUPLICATE, "a@example.com"), (1, RECORDED, "a@example.com")]


def test_the_same_answers_on_postgresql_as_on_sqlite(engine, world, tmp_path):
    """The group's answers on each back-end, against the same requests recorded alone, one after the other, on a
    SQLite file; and the same rows."""
    catalog, rules = world
    outcomes = record_together(engine, catalog, rules, requests_with_a_duplicate_and_an_invalid_one(), now=T0,
                               actor="api")
    alone = make_engine(f"sqlite:///{tmp_path / 'alone.db'}")
    upgrade(alone)
    try:
        for outcome, request in zip(outcomes, requests_with_a_duplicate_and_an_invalid_one(), strict=True):
            try:
                expected: object = record_events(alone, catalog, rules, request, now=T0, actor="api")
            except InvalidEvents as exc:
                assert isinstance(outcome, InvalidEvents) and outcome.problems == exc.problems
                continue
            assert outcome == expected
        for email in ("a@example.com", "b@example.com", "c@example.com"):
            grouped, single = lead_row(engine, email), lead_row(alone, email)
            assert (grouped is None) == (single is None), email
            if grouped is not None:
                assert (grouped.score, grouped.stage) == (single.score, single.stage)
        assert count_rows(engine, Lead) == count_rows(alone, Lead) == 2
    finally:
        alone.dispose()


def test_a_request_the_database_refuses_fails_alone(engine, world):
    """A delivery id that names no delivery passes validation and breaks a foreign key: the group's transaction fails,
    and each request is recorded again alone, so only that one fails."""
    catalog, rules = world
    counted = commits(engine)
    outcomes = record_together(engine, catalog, rules, [
        [EventIn("a@example.com", "page_view", id="ok-1")],
        [EventIn("b@example.com", "email_open", delivery_id=987654)],
        [EventIn("c@example.com", "page_view", id="ok-2"), EventIn("a@example.com", "page_view", id="ok-1")],
    ], now=T0, actor="api")
    assert isinstance(outcomes[1], IntegrityError)
    assert [r.status for r in outcomes[0]] == [RECORDED]  # type: ignore[union-attr]
    assert [r.status for r in outcomes[2]] == [RECORDED, DUPLICATE]  # type: ignore[union-attr]
    assert len(counted) == 2  # the two good requests, each alone, after the group failed
    assert count_rows(engine, EngagementEvent) == 2
    assert [e.external_id for e in events_of(engine)] == ["ok-1", "ok-2"]


def test_a_failed_commit_answers_no_request_as_recorded_and_records_none_again(engine, world):
    catalog, rules = world

    def refuse(_conn):
        raise RuntimeError("the COMMIT failed")

    event.listen(engine, "commit", refuse)
    outcomes = record_together(engine, catalog, rules, [
        [EventIn("a@example.com", "page_view")], [EventIn("b@example.com", "page_view", id="b-1")],
    ], now=T0, actor="api")
    event.remove(engine, "commit", refuse)
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)
    assert count_rows(engine, EngagementEvent) == 0 and count_rows(engine, Lead) == 0  # not tried again alone
    outcomes = record_together(engine, catalog, rules, [
        [EventIn("a@example.com", "page_view")], [EventIn("b@example.com", "page_view", id="b-1")],
    ], now=T0, actor="api")
    assert [[r.status for r in outcome] for outcome in outcomes] == [[RECORDED], [RECORDED]]  # type: ignore[union-attr]


def test_the_writer_groups_what_queued_while_it_was_busy_and_answers_each_request(engine, world):
    """One writer thread: the first request holds it (its group waits at a gate before recording); four more queue up
    meanwhile and are recorded as one group, each answered with its own results or error."""
    catalog, rules = world
    gate = threading.Event()
    calls: list[int] = []

    def record(actor, requests):
        calls.append(len(requests))
        if len(calls) == 1:
            assert gate.wait(30)
        return record_together(engine, catalog, rules, requests, now=T0 + timedelta(minutes=len(calls)), actor=actor)

    writer = GroupWriter(1, record)
    counted = commits(engine)

    async def main():
        first = asyncio.ensure_future(writer.submit([EventIn("first@example.com", "page_view")], "api"))
        while not calls:
            await asyncio.sleep(0.01)
        others = [asyncio.ensure_future(writer.submit(request, "api"))
                  for request in requests_with_a_duplicate_and_an_invalid_one()]
        deadline = time.monotonic() + 10
        while writer._queue.qsize() < len(others) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        gate.set()
        return await asyncio.gather(first, *others, return_exceptions=True)

    first, *outcomes = asyncio.run(main())
    assert list(writer.groups) == [1, 4] and calls == [1, 4]
    assert len(counted) == 2  # a transaction per group
    assert [r.status for r in first] == [RECORDED]
    assert isinstance(outcomes[2], InvalidEvents)
    assert [r.status for r in outcomes[1]] == [DUPLICATE, RECORDED]
    assert [r.index for r in outcomes[1]] == [0, 1]
    assert lead_row(engine, "a@example.com").score == outcomes[3][0].score


def test_the_writer_takes_one_actor_and_at_most_a_full_batch_per_group(engine, world):
    catalog, rules = world
    gate = threading.Event()
    calls: list[tuple[str, list[int]]] = []

    def record(actor, requests):
        calls.append((actor, [len(r) for r in requests]))
        if len(calls) == 1:
            assert gate.wait(30)
        return record_together(engine, catalog, rules, requests, now=T0, actor=actor)

    writer = GroupWriter(1, record, max_events=5)

    def events(tag: str, n: int) -> list[EventIn]:
        return [EventIn(f"{tag}{i}@example.com", "page_view") for i in range(n)]

    async def main():
        first = asyncio.ensure_future(writer.submit(events("first", 1), "api"))
        while not calls:
            await asyncio.sleep(0.01)
        queued = [("api", 2), ("api", 3), ("api", 1), ("system", 1), ("api", 1)]
        others = [asyncio.ensure_future(writer.submit(events(f"q{n}-", size), actor))
                  for n, (actor, size) in enumerate(queued)]
        while writer._queue.qsize() < len(others):
            await asyncio.sleep(0.01)
        gate.set()
        return await asyncio.gather(first, *others)

    answers = asyncio.run(main())
    assert calls == [("api", [1]), ("api", [2, 3]), ("api", [1]), ("system", [1]), ("api", [1])]
    assert [len(a) for a in answers] == [1, 2, 3, 1, 1, 1]
    assert count_rows(engine, EngagementEvent) == 9


@pytest.mark.postgres
def test_the_group_writers_keep_their_connections_and_connect_again_when_the_database_dropped_one(
        migrated_url, world, tmp_path):
    """On PostgreSQL a group runs on a connection the writers keep (no pool checkout, no ping per group); when the
    server ends that connection's session meanwhile, the next request is still recorded (on a new session), nothing
    twice; closing the intake closes the kept connections."""
    from sqlalchemy import text

    from nurture.intake.context import GROUP_THREADS, IntakeContext
    from nurture.settings import Settings
    from nurture.signing import Signer

    if not migrated_url.startswith("postgresql"):
        pytest.skip("SQLite records on the event loop's connection")
    catalog, rules = world
    engine = make_engine(migrated_url)
    checkouts: list[int] = []
    event.listen(engine, "checkout", lambda *_args: checkouts.append(1))
    intake = IntakeContext(Settings(database_url=migrated_url, api_key="k", campaigns_dir=tmp_path),
                           engine, catalog, rules, Signer("secret"), clock=lambda: T0)
    try:
        async def record(tag: str) -> list:
            return await intake.record_async([EventIn(f"{tag}@example.com", "page_view", id=tag)], actor="api",
                                             source="api")

        for n in range(5):
            assert [r.status for r in asyncio.run(record(f"kept{n}"))] == [RECORDED]
        assert len(checkouts) == 1 and len(intake._kept) == 1  # one group at a time: one connection, checked out once
        kept = intake._kept[0]
        with kept.begin():
            pid = kept.execute(text("SELECT pg_backend_pid()")).scalar()
        with engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            admin.commit()
        assert [r.status for r in asyncio.run(record("after"))] == [RECORDED]
        assert [e.type for e in events_of(engine, "after@example.com")] == ["page_view"]
        assert len(intake._kept) == 1 <= GROUP_THREADS
        with kept.begin():
            assert kept.execute(text("SELECT pg_backend_pid()")).scalar() != pid
    finally:
        intake.close()
        assert kept.closed and intake._kept == []
        engine.dispose()
