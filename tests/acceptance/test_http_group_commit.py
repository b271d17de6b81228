"""Group commit over HTTP on PostgreSQL: concurrent ``POST /v1/events`` requests, recorded in groups by the intake's
writer threads, each answered as it would be alone (a duplicate id, an invalid event)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from db_fixtures import pg_url, postgres_available  # noqa: F401
from http_server import HttpServer
from intake_world import Clock, count_rows, events_of, load_world, write_campaigns

from nurture.intake import create_app
from nurture.settings import Settings
from nurture.signing import Signer
from nurture.storage.database import make_engine
from nurture.storage.migrate import upgrade
from nurture.storage.models import EngagementEvent

AUTH = {"Authorization": "Bearer test-key-0123456789"}


@pytest.mark.postgres
def test_concurrent_requests_are_grouped_and_each_answered_on_its_own(pg_url, tmp_path: Path):
    upgrade(pg_url)
    engine = make_engine(pg_url)
    catalog, rules = load_world(write_campaigns(tmp_path / "campaigns"))
    app = create_app(Settings(api_key=AUTH["Authorization"][7:], database_url=pg_url), engine=engine, catalog=catalog,
                     rules=rules, signer=Signer("s3cret"), clock=Clock())
    ctx = app.state.intake
    bodies = [{"email": f"lead{n % 7}@example.com", "type": "page_view", "id": f"ev-{n}"} for n in range(60)]
    bodies[10] = {"email": "other@example.com", "type": "email_open", "id": "ev-3"}  # a repeat of request 3's id
    bodies[20] = {"events": [{"email": "x@example.com", "type": "page_view"},
                             {"email": "x@example.com", "type": "not a type"}]}  # invalid: 422, nothing of it written
    start = threading.Barrier(12)
    try:
        with HttpServer(app) as server, httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
            def post(body):
                if bodies.index(body) < 12:
                    start.wait(10)  # the first twelve leave together
                return client.post("/v1/events", json=body)

            with ThreadPoolExecutor(12) as pool:
                answers = list(pool.map(post, bodies))
        groups = list(ctx.group_writer.groups)
    finally:
        ctx.close()
        engine.dispose()
    statuses = [answer.status_code for answer in answers]
    assert statuses[20] == 422 and "events[1]" in answers[20].json()["error"]
    # requests 3 and 10 share an id: whichever was recorded first, the other is its duplicate, on its lead
    first, repeat = (3, 10) if statuses[10] == 200 else (10, 3)
    assert statuses[first] == 202 and statuses[repeat] == 200
    assert answers[repeat].json()["results"][0]["status"] == "duplicate"
    assert answers[repeat].json()["results"][0]["email"] == answers[first].json()["results"][0]["email"]
    good = [n for n in range(60) if n not in (repeat, 20)]
    assert all(statuses[n] == 202 for n in good), [(n, statuses[n], answers[n].text) for n in good if statuses[n] != 202]
    assert all(answers[n].json()["results"][0]["id"] == f"ev-{n if n != 10 else 3}" for n in good)
    assert max(groups) > 1 and sum(groups) == 60  # grouped under load; the invalid one too (refused alone)
    engine = make_engine(pg_url)
    try:
        assert count_rows(engine, EngagementEvent) == len(good)
        assert events_of(engine, "x@example.com") == []
    finally:
        engine.dispose()
