"""The HTTP API over a real uvicorn server and a real SQLite file: events, leads, API key, provider webhooks, health."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from http_server import HttpServer
from intake_world import (
    T0,
    Clock,
    add_delivery,
    count_rows,
    enrollments_of,
    events_of,
    lead_row,
    load_world,
    write_campaigns,
)
from pydantic import ValidationError
from sqlalchemy.engine import Engine

from nurture.intake import create_app
from nurture.intake.context import INLINE_EVENTS, IntakeContext
from nurture.settings import Settings
from nurture.signing import Signer
from nurture.storage.database import make_engine, transaction
from nurture.storage.migrate import upgrade
from nurture.storage.models import EngagementEvent, Lead, StageChange

API_KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@dataclass
class Intake:
    """A running intake: its base URL, database, clock, and how often it woke the worker."""

    url: str
    engine: Engine
    clock: Clock
    wakes: list[int] = field(default_factory=list)
    context: IntakeContext | None = None

    def post(self, path: str, body: Any = None, *, headers: dict[str, str] | None = None, raw: bytes | None = None,
             **kwargs: Any) -> httpx.Response:
        content = raw if raw is not None else json.dumps(body).encode()
        return httpx.post(self.url + path, content=content, headers={"Content-Type": "application/json",
                                                                     **(AUTH if headers is None else headers)}, **kwargs)

    def get(self, path: str, *, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.get(self.url + path, headers=AUTH if headers is None else headers)


def _serve(tmp_path: Path, api_key: str, *, migrate: bool = True, busy_timeout: float = 5,
           **settings: Any) -> Iterator[Intake]:
    url = f"sqlite:///{tmp_path / 'intake.db'}"
    if migrate:
        upgrade(url)
    engine = make_engine(url, busy_timeout=busy_timeout)
    catalog, rules = load_world(write_campaigns(tmp_path / "campaigns"))
    clock = Clock()
    intake = Intake("", engine, clock)
    app = create_app(Settings(api_key=api_key, database_url=url, **settings), engine=engine, catalog=catalog,
                     rules=rules, signer=Signer("s3cret"), on_event=lambda: intake.wakes.append(1), clock=clock)
    intake.context = app.state.intake
    with HttpServer(app) as server:
        intake.url = server.url
        yield intake
    app.state.intake.close()
    engine.dispose()


@pytest.fixture
def intake(tmp_path: Path) -> Iterator[Intake]:
    yield from _serve(tmp_path, API_KEY)


def test_events_are_recorded_on_the_event_loop_and_wait_for_a_taken_write_lock_on_the_writer_thread(tmp_path):
    for intake in _serve(tmp_path, API_KEY, busy_timeout=30):
        ctx = intake.context
        assert ctx is not None
        assert intake.post("/v1/events", {"email": "a@example.com", "type": "page_view"}).status_code == 202
        batch = [{"email": f"x{i}@example.com", "type": "page_view"} for i in range(INLINE_EVENTS)]
        assert intake.post("/v1/events", {"events": batch}).status_code == 202
        assert "writer" not in ctx.__dict__  # the write lock was free: no writer thread was needed

        holder = make_engine(str(intake.engine.url))
        with ThreadPoolExecutor(1) as pool:
            with transaction(holder) as held:  # another connection takes SQLite's write lock
                held.exec_driver_sql("SELECT 1").all()
                pending = pool.submit(intake.post, "/v1/events", {"email": "b@example.com", "type": "page_view"})
                deadline = time.monotonic() + 10
                while not ("writer" in ctx.__dict__ and ctx.writer._alive) and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert ctx.writer._alive == 1  # the request went to the writer thread, which waits for the lock
                assert intake.get("/healthz").status_code == 200  # meanwhile the event loop serves other requests
                assert intake.get("/v1/leads/a@example.com").status_code == 200
                assert not pending.done()
            answer = pending.result(10)  # the lock is free again: the waiting request records its event
        holder.dispose()
        assert answer.status_code == 202, answer.text
        assert [e.type for e in events_of(intake.engine, "b@example.com")] == ["page_view"]
        # the event loop's connection, which gave up on the lock, records the next request itself as before
        handed: list[Any] = []
        hand_over = ctx.writer.run
        ctx.writer.run = (  # type: ignore[method-assign]
            lambda *args, **kwargs: handed.append(args) or hand_over(*args, **kwargs)  # noqa: B023 - used in this pass only
        )
        assert intake.post("/v1/events", {"email": "c@example.com", "type": "page_view"}).status_code == 202
        assert [e.type for e in events_of(intake.engine, "c@example.com")] == ["page_view"]
        assert handed == []
        connection = ctx.__dict__["_no_wait"]
        ctx.close()  # what `nurture run` does before disposing of the engine
        assert connection.closed and "_no_wait" not in ctx.__dict__


def test_a_batch_larger_than_the_event_loop_takes_goes_to_the_writer_thread(intake):
    batch = [{"email": f"x{i}@example.com", "type": "page_view"} for i in range(INLINE_EVENTS + 1)]
    assert intake.post("/v1/events", {"events": batch}).status_code == 202
    assert intake.context is not None and "writer" in intake.context.__dict__
    assert count_rows(intake.engine, EngagementEvent) == INLINE_EVENTS + 1


def test_every_v1_route_refuses_a_request_without_credentials(intake):
    # every route the app documents under /v1, including any added later (a sub-router included into the API router
    # would not get its key check from the route class: this catches it)
    spec = httpx.get(intake.url + "/openapi.json").json()
    routes = [(method.upper(), path) for path, operations in spec["paths"].items() if path.startswith("/v1/")
              for method in operations]
    assert len(routes) >= 6
    for method, path in routes:
        concrete = path.replace("{email}", "a@example.com")
        response = httpx.request(method, intake.url + concrete, json={"email": "a@example.com", "type": "page_view"})
        assert response.status_code == 401, (method, path, response.status_code)
    assert nothing_written(intake.engine)


def nothing_written(engine: Engine) -> bool:
    return count_rows(engine, Lead) == 0 and count_rows(engine, EngagementEvent) == 0 and count_rows(engine, StageChange) == 0


# --- the API key -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": f"Basic {API_KEY}"}, {"Authorization": "Bearer"},
     {"Authorization": f"Bearer {API_KEY}x"}],
)
@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v1/events"), ("POST", "/v1/leads"), ("GET", "/v1/leads/a@example.com"),
                         ("POST", "/v1/webhooks/bounces")],
)
def test_a_missing_or_wrong_api_key_is_401_and_changes_nothing(intake, headers, method, path):
    body = {"email": "a@example.com", "type": "bounce"}
    response = httpx.request(method, intake.url + path, json=body if method == "POST" else None, headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "API key" in response.json()["error"]
    assert nothing_written(intake.engine)


def test_without_a_configured_key_the_api_refuses_with_503(tmp_path):
    for intake in _serve(tmp_path, ""):
        for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Bearer anything"}):
            response = intake.post("/v1/events", {"email": "a@example.com", "type": "page_view"}, headers=headers)
            assert response.status_code == 503
            assert "NURTURE_API_KEY" in response.json()["error"]
        response = intake.post("/v1/webhooks/sendgrid?token=", [{"event": "bounce", "email": "a@example.com"}])
        assert response.status_code == 503
        assert "NURTURE_INBOUND_WEBHOOK_TOKEN" in response.json()["error"]
        assert nothing_written(intake.engine)


def test_a_webhook_token_alone_opens_the_webhooks_not_the_api(tmp_path):
    for intake in _serve(tmp_path, "", inbound_webhook_token="hook-token-42"):
        events = intake.post("/v1/events", {"email": "a@example.com", "type": "page_view"},
                             headers={"Authorization": "Bearer hook-token-42"})
        assert events.status_code == 503
        assert nothing_written(intake.engine)
        response = intake.post("/v1/webhooks/sendgrid?token=hook-token-42", sendgrid_events(), headers={})
        assert response.status_code == 200, response.text
        assert lead_row(intake.engine, "c@example.com").bounced_at is not None


# --- POST /v1/events ----------------------------------------------------------------------------------------------


def test_an_event_is_recorded_and_a_retried_post_counts_once(intake):
    event = {"id": "form-42", "email": "Ada@Example.com", "type": "content_download",
             "occurred_at": "2024-05-01T12:00:00Z", "properties": {"asset": "ebook"}}
    first = intake.post("/v1/events", event)
    retry = intake.post("/v1/events", event)

    assert first.status_code == 202
    assert first.json()["results"] == [{"index": 0, "status": "recorded", "id": "form-42", "email": "ada@example.com",
                                        "type": "content_download", "points": 10.0, "score": 10.0, "stage": "lead",
                                        "stage_changed": False}]
    assert retry.status_code == 200
    assert retry.json()["results"][0]["status"] == "duplicate" and retry.json()["duplicate"] == 1
    assert lead_row(intake.engine, "ada@example.com").score == 10
    assert len(events_of(intake.engine)) == 1
    assert intake.wakes == [1]  # woken for the new event, not for the duplicate


def test_concurrent_retries_of_one_event_record_it_once(intake):
    event = {"id": "retry-me", "email": "a@example.com", "type": "content_download"}
    start = threading.Barrier(8)

    def post(_: int) -> int:
        start.wait()
        return intake.post("/v1/events", event).json()["recorded"]

    with ThreadPoolExecutor(8) as pool:
        recorded = list(pool.map(post, range(8)))
    assert sorted(recorded) == [0] * 7 + [1]
    assert lead_row(intake.engine, "a@example.com").score == 10 and len(events_of(intake.engine)) == 1


def test_a_batch_is_all_or_nothing(intake):
    batch = {"events": [{"email": "a@example.com", "type": "page_view"},
                        {"email": "b@example.com", "type": "page_view"},
                        {"email": "c@example.com", "type": "Not A Slug"}]}
    response = intake.post("/v1/events", batch)

    assert response.status_code == 422
    assert "events[2]" in response.json()["error"] and "invalid type" in response.json()["error"]
    assert nothing_written(intake.engine)

    batch["events"][2]["type"] = "page_view"
    response = intake.post("/v1/events", batch)
    assert response.status_code == 202 and response.json()["recorded"] == 3
    assert count_rows(intake.engine, Lead) == 3


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"type": "page_view"}, 422, "email: Field required"),
        ({"email": "a@example.com"}, 422, "type: Field required"),
        ({"email": "not an email", "type": "page_view"}, 422, "invalid email"),
        ({"email": "a@example.com", "type": "Page View!"}, 422, "invalid type"),
        ({"email": "a@example.com", "type": "page_view", "occurred_at": "yesterday"}, 422, "occurred_at"),
        ({"email": "a@example.com", "type": "page_view", "occurred_at": "2024-05-01T10:00:00"}, 422, "time zone"),
        ({"email": "a@example.com", "type": "page_view", "occurred_at": "2024-05-03T12:00:01Z"}, 422, "future"),
        ({"email": "a@example.com", "type": "page_view", "properties": "url"}, 422, "properties"),
        ({"email": "a@example.com", "type": "page_view", "properties": {"x": "y" * 20_000}}, 422, "KiB"),
        ({"email": "a@example.com", "type": "page_view", "colour": "red"}, 422, "colour: unknown key"),
        ({"email": 42, "type": "page_view"}, 422, "email"),
        ({"events": []}, 422, "non-empty list"),
        ({"events": [{"email": "a@example.com", "type": "page_view"}] * 1001}, 422, "at most 1000"),
        ({"events": [{"email": "a@example.com", "type": "page_view"}, {"type": "x"}]}, 422, "events[1].email"),
        ([{"email": "a@example.com", "type": "page_view"}], 422, "one event object"),
        ("page_view", 422, "one event object"),
    ],
)
def test_bad_payloads_are_4xx_json_and_write_nothing(intake, body, status, message):
    response = intake.post("/v1/events", body)

    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert message in response.json()["error"]
    assert nothing_written(intake.engine)


@pytest.mark.parametrize(("raw", "message"), [(b"{not json", "not valid JSON"), (b"", "empty"), (b"\xff\xfe", "not valid JSON")])
def test_a_body_that_is_not_json_is_400(intake, raw, message):
    response = intake.post("/v1/events", raw=raw)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert nothing_written(intake.engine)


@pytest.mark.parametrize("raw", [
    rb'{"email": "a@example.com", "type": "page_view", "id": "abc\ud800"}',
    rb'{"email": "\uDC00b@example.com", "type": "page_view"}',
    rb'{"events": [{"email": "c@example.com", "type": "page_view", "properties": {"url": "\ud800x"}}]}',
])
def test_an_unpaired_surrogate_escape_is_400_and_writes_nothing(intake, raw):
    response = intake.post("/v1/events", raw=raw)
    assert response.status_code == 400, response.text
    assert "surrogate" in response.json()["error"]
    assert nothing_written(intake.engine)


def test_a_paired_surrogate_escape_is_text(intake):
    response = intake.post("/v1/events", raw=rb'{"email": "d@example.com", "type": "page_view", "properties": {"t": "\ud83d\ude00"}}')
    assert response.status_code < 300, response.text


def test_an_oversized_body_is_413(intake):
    huge = json.dumps({"events": [{"email": "a@example.com", "type": "page_view", "properties": {"x": "y" * 9000}}] * 1000})
    response = intake.post("/v1/events", raw=huge.encode())
    assert response.status_code == 413
    assert "larger than" in response.json()["error"]
    assert nothing_written(intake.engine)


def test_score_rises_with_a_breakdown_in_the_lead(intake):
    intake.post("/v1/events", {"events": [{"email": "a@example.com", "type": "page_view"},
                                          {"email": "a@example.com", "type": "content_download"}]})
    response = intake.get("/v1/leads/A@example.com")

    assert response.status_code == 200
    body = response.json()
    assert body["lead"]["email"] == "a@example.com" and body["lead"]["score"] == 11
    assert body["score"]["total"] == 11
    assert {item["label"]: item["points"] for item in body["score"]["items"]} == {"content_download": 10, "page_view": 1}
    assert [event["type"] for event in body["events"]] == ["content_download", "page_view"]
    assert body["stage_history"][0]["to_stage"] == "lead"


def test_crossing_the_mql_threshold_over_http_enrolls_the_lead(intake):
    response = intake.post("/v1/events", {"events": [{"email": "a@example.com", "type": "webinar_attended"},
                                                     {"email": "a@example.com", "type": "content_download"}]})

    assert [r["stage_changed"] for r in response.json()["results"]] == [False, True]
    body = intake.get("/v1/leads/a@example.com").json()
    assert body["lead"]["stage"] == "mql"
    assert [(e["campaign_id"], e["status"]) for e in body["enrollments"]] == [("mql-nurture", "active")]
    assert body["stage_history"][-1]["actor"] == "rule"


# --- leads --------------------------------------------------------------------------------------------------------


def test_post_lead_creates_then_updates_and_enrolls_a_matching_mql(intake):
    created = intake.post("/v1/leads", {"email": "Ada@Example.com", "first_name": "Ada", "company_size": 500,
                                        "plan": "pro", "tags": ["webinar"]})
    assert created.status_code == 201
    assert created.json() == {"email": "ada@example.com", "created": True, "stage": "lead", "score": 10.0,
                              "stage_changed": False, "enrolled": 0, "stage_not_applied": None}
    assert created.headers["Location"] == "/v1/leads/ada@example.com"

    updated = intake.post("/v1/leads", {"email": "ada@example.com", "stage": "mql"})
    assert updated.status_code == 200 and updated.json()["stage"] == "mql" and updated.json()["stage_changed"]
    assert [e.campaign_id for e in enrollments_of(intake.engine, "ada@example.com")] == ["mql-nurture"]
    lead = intake.get("/v1/leads/ada@example.com").json()["lead"]
    assert (lead["first_name"], lead["company_size"], lead["fields"], lead["tags"]) == ("Ada", 500, {"plan": "pro"}, ["webinar"])


def test_post_lead_never_moves_a_lead_backwards_and_says_what_it_did(intake):
    assert intake.post("/v1/leads", {"email": "ada@example.com", "stage": "opportunity"}).status_code == 201
    response = intake.post("/v1/leads", {"email": "ada@example.com", "stage": "lead", "title": "CTO"})
    assert response.status_code == 200, response.text
    assert response.json() | {"score": 0} == {
        "email": "ada@example.com", "created": False, "stage": "opportunity", "score": 0, "stage_changed": False,
        "enrolled": 0, "stage_not_applied": {"reason": "backwards", "stage": "opportunity", "given": "lead",
                                             "message": "would move backwards: opportunity → lead"}}
    lead = intake.get("/v1/leads/ada@example.com").json()
    assert (lead["lead"]["title"], lead["lead"]["stage"]) == ("CTO", "opportunity")
    assert [c["to_stage"] for c in lead["stage_history"]] == ["opportunity"]
    forward = intake.post("/v1/leads", {"email": "ada@example.com", "stage": "customer"}).json()
    assert (forward["stage"], forward["stage_changed"], forward["stage_not_applied"]) == ("customer", True, None)
    reserved = intake.post("/v1/leads", {"email": "new@example.com", "stage": "Recycled"})
    assert reserved.status_code == 201
    assert (reserved.json()["stage"], reserved.json()["stage_not_applied"]["message"]) == (
        "lead", "only rules or sales set recycled")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"first_name": "Ada"}, "email"),
        ({"email": "nope"}, "invalid email"),
        ({"email": "a@example.com", "company_size": "lots"}, "company_size"),
        ({"email": "a@example.com", "company_size": 12.5}, "company_size"),
        ({"email": "a@example.com", "country": "Germany"}, "country"),
        ({"email": "a@example.com", "timezone": "Mars/Base"}, "timezone"),
        ({"email": "a@example.com", "stage": "hot"}, "unknown stage"),
        ({"email": "a@example.com", "tags": 7}, "tags"),
        (["a@example.com"], "JSON object"),
    ],
)
def test_post_lead_refuses_bad_values_with_the_message(intake, body, message):
    response = intake.post("/v1/leads", body)
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]
    assert nothing_written(intake.engine)


def test_an_unknown_lead_is_a_json_404(intake):
    response = intake.get("/v1/leads/nobody@example.com")
    assert response.status_code == 404
    assert response.json() == {"error": "no lead with email 'nobody@example.com'"}


# --- provider webhooks ----------------------------------------------------------------------------------------------


def test_generic_bounces_find_the_lead_by_email_or_message_id(intake):
    first = add_delivery(intake.engine, "a@example.com")
    add_delivery(intake.engine, "b@example.com")
    response = intake.post("/v1/webhooks/bounces", [
        {"type": "bounce", "message_id": "nurture.1@example.com", "reason": "550 mailbox unknown"},
        {"type": "spam_complaint", "email": "B@example.com"},
        {"type": "bounce", "message_id": "<unknown@example.com>"},
    ])

    assert response.status_code == 200, response.text
    assert [r["status"] for r in response.json()["results"]] == ["recorded", "recorded", "unmatched"]
    assert lead_row(intake.engine, "a@example.com").bounced_at == T0
    assert lead_row(intake.engine, "b@example.com").bounced_at == T0
    [bounce] = events_of(intake.engine, "a@example.com")
    assert (bounce.type, bounce.delivery_id, bounce.properties["reason"]) == ("bounce", first, "550 mailbox unknown")
    assert enrollments_of(intake.engine, "a@example.com")[0].end_reason == "bounced"
    assert enrollments_of(intake.engine, "b@example.com")[0].end_reason == "spam_complaint"
    again = intake.post("/v1/webhooks/bounces", {"type": "bounce", "message_id": "<nurture.1@example.com>"})
    assert again.json()["duplicate"] == 1  # a provider's retry is recognised by the message id


@pytest.mark.parametrize(
    ("body", "message"),
    [({"type": "bounce"}, "email or the message_id"), ({"type": "soft", "email": "a@example.com"}, "type"),
     ([{"type": "bounce", "email": "a@example.com"}, {"type": "bounce", "email": "bad"}], "[1]: invalid email")],
)
def test_bad_bounce_notices_are_422_and_write_nothing(intake, body, message):
    response = intake.post("/v1/webhooks/bounces", body)
    assert response.status_code == 422
    assert message in response.json()["error"]
    assert nothing_written(intake.engine)


def sendgrid_events(**overrides: Any) -> list[dict[str, Any]]:
    stamp = int(T0.timestamp()) - 60
    return [
        {"email": "a@example.com", "timestamp": stamp, "event": "processed", "sg_event_id": "e0", "sg_message_id": "m.filter1"},
        {"email": "a@example.com", "timestamp": stamp, "event": "delivered", "sg_event_id": "e1", "sg_message_id": "m.filter1"},
        {"email": "a@example.com", "timestamp": stamp, "event": "bounce", "type": "bounce", "sg_event_id": "e2",
         "sg_message_id": "prov-1.filterdrecv-1", "reason": "550 5.1.1 user unknown", "status": "5.1.1"},
        {"email": "c@example.com", "timestamp": stamp, "event": "spamreport", "sg_event_id": "e3"},
        {"email": "d@example.com", "timestamp": stamp, "event": "unsubscribe", "sg_event_id": "e4"},
        {"email": "e@example.com", "timestamp": stamp, "event": "bounce", "type": "blocked", "sg_event_id": "e5"},
        {"email": "f@example.com", "timestamp": stamp, "event": "dropped", "reason": "Unsubscribed Address", "sg_event_id": "e6"},
        {"email": "not-an-email", "timestamp": stamp, "event": "bounce", "sg_event_id": "e7"},
        {**overrides},
    ]


def test_a_sendgrid_event_webhook_suppresses_the_leads(intake):
    delivery = add_delivery(intake.engine, "a@example.com")
    response = intake.post(f"/v1/webhooks/sendgrid?token={API_KEY}", sendgrid_events(), headers={})

    assert response.status_code == 200, response.text
    assert response.json() == {"recorded": 5, "duplicate": 0, "ignored": 4}
    a = lead_row(intake.engine, "a@example.com")
    assert a.bounced_at == T0 - timedelta(seconds=60)
    assert enrollments_of(intake.engine, "a@example.com")[0].end_reason == "bounced"
    assert events_of(intake.engine, "a@example.com")[0].delivery_id == delivery
    assert lead_row(intake.engine, "c@example.com").bounced_at is not None
    assert lead_row(intake.engine, "d@example.com").unsubscribed_at is not None
    assert lead_row(intake.engine, "f@example.com").unsubscribed_at is not None
    assert lead_row(intake.engine, "e@example.com").bounced_at is None  # "blocked" is temporary: a soft bounce
    assert [e.type for e in events_of(intake.engine, "e@example.com")] == ["soft_bounce"]

    retried = intake.post(f"/v1/webhooks/sendgrid?token={API_KEY}", sendgrid_events(), headers={})
    assert retried.json() == {"recorded": 0, "duplicate": 5, "ignored": 4}


@pytest.mark.parametrize("query", ["", "?token=wrong", f"?token={API_KEY}x"])
def test_the_sendgrid_webhook_needs_the_token(intake, query):
    response = intake.post(f"/v1/webhooks/sendgrid{query}", sendgrid_events(), headers={})
    assert response.status_code == 401
    assert "token" in response.json()["error"]
    assert nothing_written(intake.engine)


def basic(password: str, user: str = "sendgrid") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_the_sendgrid_webhook_takes_the_token_as_the_basic_auth_password(intake):
    assert intake.post("/v1/webhooks/sendgrid", sendgrid_events(), headers=basic("wrong")).status_code == 401
    assert nothing_written(intake.engine)
    response = intake.post("/v1/webhooks/sendgrid", sendgrid_events(), headers=basic(API_KEY))
    assert response.status_code == 200, response.text
    assert lead_row(intake.engine, "c@example.com").bounced_at is not None


def test_with_an_inbound_webhook_token_the_api_key_opens_no_webhook(tmp_path):
    """A webhook URL lives in a provider's console and in proxies' logs: with a token of its own, a leaked URL
    gives no access to the API, and the API key is refused in a URL."""
    for intake in _serve(tmp_path, API_KEY, inbound_webhook_token="hook-token-42"):
        for refused in (f"?token={API_KEY}", "?token=hook-token-4", ""):
            response = intake.post(f"/v1/webhooks/sendgrid{refused}", sendgrid_events(), headers={})
            assert response.status_code == 401, refused
        assert "NURTURE_INBOUND_WEBHOOK_TOKEN" in response.json()["error"]
        assert intake.post("/v1/webhooks/sendgrid", sendgrid_events(), headers=basic(API_KEY)).status_code == 401
        assert nothing_written(intake.engine)
        assert intake.post("/v1/events", {"email": "x@example.com", "type": "page_view"},
                           headers={"Authorization": "Bearer hook-token-42"}).status_code == 401
        assert nothing_written(intake.engine)
        response = intake.post("/v1/webhooks/sendgrid?token=hook-token-42", sendgrid_events(), headers={})
        assert response.status_code == 200, response.text
        assert response.json()["recorded"] == 5
        assert intake.post("/v1/webhooks/sendgrid", sendgrid_events(), headers=basic("hook-token-42")).json() == {
            "recorded": 0, "duplicate": 5, "ignored": 4}


def sendgrid_keys() -> tuple[Any, str]:
    """A key pair as SendGrid makes one for its Signed Event Webhook: the private key, and the verification key as
    its Mail Settings show it (base64 of the DER public key)."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(der).decode()


def sendgrid_signed(private: Any, body: bytes, timestamp: str = "1714567890") -> dict[str, str]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    signature = private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp}


def test_with_a_verification_key_the_sendgrid_webhook_takes_only_posts_sendgrid_signed(tmp_path):
    private, verification_key = sendgrid_keys()
    other, _key = sendgrid_keys()
    body = json.dumps(sendgrid_events()).encode()
    for intake in _serve(tmp_path, API_KEY, sendgrid_verification_key=verification_key):
        signed = sendgrid_signed(private, body)
        refused = {
            "no signature, the API key as token": ({}, body, f"?token={API_KEY}"),
            "signed by another key": (sendgrid_signed(other, body), body, ""),
            "another body": (signed, body.replace(b"c@example.com", b"b@example.com"), ""),
            "another timestamp": ({**signed, "X-Twilio-Email-Event-Webhook-Timestamp": "1714567891"}, body, ""),
            "a signature that is not base64": ({**signed, "X-Twilio-Email-Event-Webhook-Signature": "%%%"}, body, ""),
        }
        for why, (headers, raw, query) in refused.items():
            response = intake.post(f"/v1/webhooks/sendgrid{query}", raw=raw, headers=headers)
            assert response.status_code == 401, why
            assert "SendGrid signature" in response.json()["error"], why
            assert nothing_written(intake.engine), why
        response = intake.post("/v1/webhooks/sendgrid", raw=body, headers=signed)
        assert response.status_code == 200, response.text
        assert response.json() == {"recorded": 5, "duplicate": 0, "ignored": 4}
        assert lead_row(intake.engine, "c@example.com").bounced_at is not None
        # SendGrid retries a post it saw fail, signed again: a duplicate, whatever its age
        retried = intake.post("/v1/webhooks/sendgrid", raw=body, headers=sendgrid_signed(private, body, "1600000000"))
        assert retried.json() == {"recorded": 0, "duplicate": 5, "ignored": 4}
        bad_json = b"[{not json"
        assert intake.post("/v1/webhooks/sendgrid", raw=bad_json, headers=sendgrid_signed(private, bad_json)
                           ).status_code == 400


def test_a_verification_key_in_pem_form_is_taken_and_both_headers_are_needed(tmp_path):
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    private, _key = sendgrid_keys()
    pem = private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    body = json.dumps(sendgrid_events()).encode()
    signed = sendgrid_signed(private, body)
    for intake in _serve(tmp_path, API_KEY, sendgrid_verification_key=pem):
        for header in signed:
            response = intake.post("/v1/webhooks/sendgrid", raw=body, headers={header: signed[header]})
            assert response.status_code == 401 and "missing SendGrid signature" in response.json()["error"]
        assert nothing_written(intake.engine)
        response = intake.post("/v1/webhooks/sendgrid", raw=body, headers=signed)
        assert response.status_code == 200 and response.json()["recorded"] == 5


@pytest.mark.parametrize("value", ["not base64!", base64.b64encode(b"not a key").decode(), "PEM-RSA",
                                   "MA8wCQYHKoZIzj0CBQMCAAA="])  # an EC key type cryptography does not know
def test_a_verification_key_that_is_not_an_ec_public_key_is_refused_at_start(value):
    if value == "PEM-RSA":
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        value = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
            Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    with pytest.raises(ValidationError, match="sendgrid_verification_key"):
        Settings(sendgrid_verification_key=value)
    _private, good = sendgrid_keys()
    assert Settings(sendgrid_verification_key=f"  {good}\n").sendgrid_verification_key == good


def test_the_sendgrid_webhook_wants_an_array(intake):
    response = intake.post(f"/v1/webhooks/sendgrid?token={API_KEY}", {"event": "bounce"}, headers={})
    assert response.status_code == 422
    assert nothing_written(intake.engine)


# --- operations -------------------------------------------------------------------------------------------------------


def test_healthz_readyz_metrics_and_docs(intake):
    assert httpx.get(intake.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(intake.url + "/readyz").json() == {"status": "ready"}
    add_delivery(intake.engine, "a@example.com")
    intake.post("/v1/events", {"events": [{"email": "a@example.com", "type": "page_view", "id": "p1"},
                                          {"email": "b@example.com", "type": "page_view", "id": "p1"}]})

    metrics = httpx.get(intake.url + "/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = set(metrics.text.splitlines())
    assert {'nurture_leads{stage="mql"} 1', 'nurture_enrollments{status="active"} 1', 'nurture_deliveries{status="sent"} 1',
            "nurture_outbox_pending 0", 'nurture_events_total{source="api",status="recorded"} 1',
            'nurture_events_total{source="api",status="duplicate"} 1', "# TYPE nurture_leads gauge"} <= lines

    assert httpx.get(intake.url + "/docs").status_code == 200
    spec = httpx.get(intake.url + "/openapi.json").json()
    assert {"/v1/events", "/v1/leads", "/v1/leads/{email}", "/t/c/{token}", "/u/{token}", "/healthz"} <= set(spec["paths"])
    assert "EventBatch" in spec["components"]["schemas"]
    assert spec["components"]["securitySchemes"]["NURTURE_API_KEY"] == {
        "type": "http", "description": "NURTURE_API_KEY", "scheme": "bearer"}
    for path, method in (("/v1/events", "post"), ("/v1/leads", "post"), ("/v1/leads/{email}", "get"),
                         ("/v1/webhooks/bounces", "post")):
        assert spec["paths"][path][method]["security"] == [{"NURTURE_API_KEY": []}], path


def test_readyz_is_503_when_the_schema_is_missing(tmp_path):
    for intake in _serve(tmp_path, API_KEY, migrate=False):
        response = httpx.get(intake.url + "/readyz")
        assert response.status_code == 503
        assert "nurture db upgrade" in response.json()["error"]
        assert httpx.get(intake.url + "/healthz").status_code == 200


def test_unknown_routes_are_json_404(intake):
    response = httpx.get(intake.url + "/v2/nothing")
    assert response.status_code == 404 and response.json() == {"error": "not found"}


def test_logs_name_routes_and_types_but_no_emails_or_keys(intake, caplog):
    caplog.set_level("DEBUG", logger="nurture")
    intake.post("/v1/events", {"email": "secret.person@example.com", "type": "page_view", "id": "private-id"})
    intake.get("/v1/leads/secret.person@example.com")
    intake.post("/v1/events", {"email": "secret.person@example.com", "type": "page_view"},
                headers={"Authorization": "Bearer leaked-guess"})

    text = caplog.text
    assert "POST /v1/events 202" in text and "GET /v1/leads/{email} 200" in text and "page_view" in text
    for secret in ("secret.person", "example.com", API_KEY, "leaked-guess", "private-id"):
        assert secret not in text


def test_an_unexpected_failure_is_a_json_500_logged_without_the_data(intake, caplog):
    caplog.set_level("DEBUG")
    with intake.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE engagement_event")  # every write of an event now fails inside SQLite
    response = intake.post("/v1/events", {"email": "hidden.person@example.com", "type": "page_view", "id": "secret-id"})

    assert response.status_code == 500
    assert response.json() == {"error": "internal error"}
    assert "unhandled OperationalError in POST /v1/events" in caplog.text
    for secret in ("hidden.person", "secret-id", "no such table"):  # the exception's message quotes SQL and values
        assert secret not in caplog.text


# --- input that used to break things --------------------------------------------------------------------------------


def test_a_client_cannot_post_the_sales_decision_event(intake):
    response = intake.post("/v1/events", {"email": "s@example.com", "type": "sales_feedback",
                                          "properties": {"promotion_id": 1}})
    assert response.status_code == 422 and "recorded by nurture itself" in response.json()["error"]
    assert nothing_written(intake.engine)


def test_a_non_latin_email_is_a_4xx_and_a_non_latin_domain_gets_a_valid_location(intake):
    response = intake.post("/v1/leads", {"email": "用户@example.com", "first_name": "Yu"})
    assert response.status_code == 422 and "SMTPUTF8" in response.json()["error"]
    assert nothing_written(intake.engine)
    response = intake.post("/v1/leads", {"email": "yu@用户.example", "first_name": "Yu"})
    assert response.status_code == 201, response.text
    assert response.headers["location"] == "/v1/leads/yu@xn--zouo53b.example"


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-05:00"])
def test_a_time_at_the_edge_of_the_calendar_is_a_4xx(intake, when):
    response = intake.post("/v1/events", {"email": "t@example.com", "type": "page_view", "occurred_at": when})
    assert 400 <= response.status_code < 500, response.text
    assert nothing_written(intake.engine)
