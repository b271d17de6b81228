"""Sales' verdict at the edges: ``POST /v1/sales/feedback`` and the signed accept/reject links over a real uvicorn
server, ``nurture sales`` through the installed console script, and the issue's end to end: reject with no_budget
over HTTP, and the running worker sends the recycle campaign's first email to the real SMTP sink (and tells the CRM).

The world (campaigns, reasons, a seeded SQL) is :mod:`feedback_world`, the one :mod:`test_feedback` uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from db_fixtures import migrated_sqlite_url, migrated_url, postgres_available, postgres_template  # noqa: F401
from feedback_world import PROMOTION_REASON, World, outbox_rows, seed_sql, snapshot, write_world
from http_server import HttpServer, free_port
from intake_world import T0, Clock, lead_row, stage_history
from smtp_sink import SmtpSink
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from test_feedback import PROMOTION_REASON, World, outbox_rows, seed_sql, snapshot, write_world
from webhook_receiver import WebhookReceiver
from worker_world import dispatch_config, subjects, wait_until, write_project

from nurture.application.rescore import score_breakdown
from nurture.delivery.webhooks import verify
from nurture.intake import create_app
from nurture.rendering.links import LinkBuilder
from nurture.rendering.sales_links import SalesLinks, decode_sales_link
from nurture.settings import Settings
from nurture.signing import Signer
from nurture.storage.database import make_engine, transaction
from nurture.storage.migrate import upgrade
from nurture.storage.models import Lead
from nurture.worker.runner import Worker

API_KEY = "sales-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
NURTURE = Path(sys.executable).with_name("nurture")


@dataclass
class Intake:
    """A running intake on the feedback world: URL, database, definitions, link builder, worker wake-ups."""

    url: str
    engine: Engine
    world: World
    links: SalesLinks
    wakes: list[int] = field(default_factory=list)

    def feedback(self, body: Any = None, *, raw: bytes | None = None, headers: dict[str, str] | None = None
                 ) -> httpx.Response:
        content = raw if raw is not None else json.dumps(body).encode()
        return httpx.post(f"{self.url}/v1/sales/feedback", content=content,
                          headers={"Content-Type": "application/json", **(AUTH if headers is None else headers)})


@pytest.fixture
def intake(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Intake]:
    url = migrated_sqlite_url(request, tmp_path / "intake.db")
    engine = make_engine(url, busy_timeout=5)
    world = write_world(tmp_path / "campaigns")
    signer = Signer("s3cret")
    intake = Intake("", engine, world, SalesLinks("", signer))
    settings = Settings(_env_file=None, api_key=API_KEY, database_url=url, sales_webhook_url="http://127.0.0.1:9/crm")
    app = create_app(settings, engine=engine, catalog=world.catalog,
                     rules=world.scoring, signer=signer, on_event=lambda: intake.wakes.append(1), clock=Clock(),
                     sales=world.sales)
    with HttpServer(app) as server:
        intake.url = server.url
        intake.links = SalesLinks(server.url, signer)
        yield intake
    engine.dispose()


def seed_mql(engine: Engine, email: str) -> None:
    with transaction(engine) as conn:
        conn.execute(Lead.__table__.insert().values(email=email, tags=[], fields={}, stage="mql", score=0.0,
                                                    created_at=T0, updated_at=T0, stage_changed_at=T0))


# --- POST /v1/sales/feedback --------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {API_KEY}"}])
def test_the_api_key_is_required(intake, headers):
    seed_sql(intake.engine, "ada@example.com")
    before = snapshot(intake.engine)

    response = intake.feedback({"email": "ada@example.com", "verdict": "accept"}, headers=headers)

    assert response.status_code == 401 and "API key" in response.json()["error"]
    assert snapshot(intake.engine) == before and not intake.wakes


def test_accept_answers_the_result_and_a_retry_answers_it_again(intake):
    _lead_id, promotion_id = seed_sql(intake.engine, "ada@example.com")

    first = intake.feedback({"email": "Ada@Example.com", "verdict": "accept", "note": "Budget approved"})
    retry = intake.feedback({"email": "ada@example.com", "verdict": "accept"})

    assert first.status_code == 200
    body = first.json()
    assert (body["stage"], body["from_stage"], body["verdict"], body["via"]) == ("opportunity", "sql", "accept", "api")
    assert body["already"] is False
    assert (body["promotion_id"], body["note"], body["decided_at"]) == (promotion_id, "Budget approved", T0.isoformat())
    assert retry.status_code == 200 and retry.json() == {**body, "already": True, "enrolled": 0}
    assert lead_row(intake.engine, "ada@example.com").stage == "opportunity"
    assert [c.to_stage for c in stage_history(intake.engine, "ada@example.com")].count("opportunity") == 1
    assert intake.wakes == [1]  # the outbox row (and onboarding) are due: once, for the decision


def test_reject_with_a_reason_recycles_and_enrolls(intake):
    seed_sql(intake.engine, "ada@example.com")

    response = intake.feedback({"email": "ada@example.com", "verdict": "reject", "reason": "no_budget"})

    assert response.status_code == 200
    body = response.json()
    assert (body["stage"], body["reason"], body["label"], body["score_adjustment"], body["enrolled"]) == (
        "recycled", "no_budget", "No budget this year", -30, 1)
    assert body["set_fields"] == {"budget_confirmed": False, "rejection_reason": "no_budget"}
    assert body["history_reason"] == "rejected by sales: no_budget (No budget this year)"


REASONS = "use one of no_budget, bad_timing, wrong_person, no_response, not_a_fit, broken"


@pytest.mark.parametrize(("body", "status", "message"), [
    (b"{not json", 400, "not valid JSON"),
    (b"", 400, "body is empty"),
    ([], 422, "send a JSON object"),
    ({"email": "ada@example.com"}, 422, "verdict: Field required"),
    ({"verdict": "accept"}, 422, "email: Field required"),
    ({"email": "ada@example.com", "verdict": "maybe"}, 422, "verdict: Input should be 'accept' or 'reject'"),
    ({"email": 42, "verdict": "accept"}, 422, "email: Input should be a valid string"),
    ({"email": "ada@example.com", "verdict": "accept", "by": "ana"}, 422, "by: unknown key"),
    ({"email": "ada@example.com", "verdict": "reject"}, 422, f"a rejection needs a reason: {REASONS}"),
    ({"email": "ada@example.com", "verdict": "reject", "reason": "nope"}, 422,
     f"unknown reject reason 'nope': {REASONS}"),
    ({"email": "ada@example.com", "verdict": "accept", "reason": "no_budget"}, 422, "accept takes no reason"),
    ({"email": "ada@example.com", "verdict": "accept", "note": "x" * 2001}, 422,
     "note: String should have at most 2000"),
    ({"email": "ada@example.com", "verdict": "reject", "reason": "broken"}, 422, "sales.yaml sets country"),
    ({"email": "nobody@example.com", "verdict": "accept"}, 404, "no lead with email 'nobody@example.com'"),
    ({"email": "mql@example.com", "verdict": "accept"}, 409, "mql@example.com is not an SQL (stage mql)"),
])
def test_bad_requests_are_4xx_with_a_message_and_write_nothing(intake, body, status, message):
    seed_sql(intake.engine, "ada@example.com")
    seed_mql(intake.engine, "mql@example.com")
    before = snapshot(intake.engine)

    response = intake.feedback(raw=body) if isinstance(body, bytes) else intake.feedback(body)

    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert snapshot(intake.engine) == before and not intake.wakes


def test_a_different_decision_after_one_is_409(intake):
    seed_sql(intake.engine, "ada@example.com")
    assert intake.feedback({"email": "ada@example.com", "verdict": "reject", "reason": "not_a_fit"}).status_code == 200
    before = snapshot(intake.engine)

    response = intake.feedback({"email": "ada@example.com", "verdict": "accept"})

    assert response.status_code == 409
    assert response.json()["error"].startswith("decided already: ada@example.com was rejected (not_a_fit: Not a fit)")
    assert snapshot(intake.engine) == before


def test_concurrent_posts_of_one_decision_write_it_once(intake):
    seed_sql(intake.engine, "ada@example.com")
    body = {"email": "ada@example.com", "verdict": "reject", "reason": "wrong_person"}

    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: intake.feedback(body), range(6)))

    assert {r.status_code for r in responses} == {200}
    assert sorted(r.json()["already"] for r in responses) == [False] + [True] * 5
    assert len(outbox_rows(intake.engine)) == 1


def test_the_route_is_in_the_openapi_document(intake):
    document = httpx.get(f"{intake.url}/openapi.json").json()
    operation = document["paths"]["/v1/sales/feedback"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"email", "verdict", "reason", "note"}
    assert "/s/{token}" not in document["paths"]


# --- the signed links ------------------------------------------------------------------------------------------------


def test_the_accept_page_shows_the_brief_escaped_and_changes_nothing(intake):
    lead_id, promotion_id = seed_sql(intake.engine, "ada@example.com", first_name="<b>Ada</b>",
                                     company="Smith & Sons <script>alert(1)</script>")
    before = snapshot(intake.engine)

    page = httpx.get(intake.links.accept(lead_id, promotion_id))

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "no-store" in page.headers["cache-control"] and page.headers["referrer-policy"] == "no-referrer"
    text = page.text
    assert "<script>alert" not in text and "<b>Ada" not in text
    assert "&lt;b&gt;Ada&lt;/b&gt; Lovelace" in text and "Smith &amp; Sons &lt;script&gt;" in text
    assert PROMOTION_REASON in text and "2024-05-01 12:00 UTC" in text
    breakdown = score_breakdown(intake.engine, intake.world.scoring, "ada@example.com", T0)
    assert breakdown.behaviour == 38.42  # two events, a day or two old, decayed with a 30-day half-life
    assert f"<dt>Score</dt><dd>{breakdown.total:g} (behaviour 38.42, fit 25)</dd>" in text
    assert '<form method="post">' in text and 'name="note"' in text and "Accept: make it an opportunity" in text
    assert snapshot(intake.engine) == before


def test_the_reject_page_offers_the_configured_reasons(intake):
    lead_id, promotion_id = seed_sql(intake.engine, "ada@example.com")

    text = httpx.get(intake.links.reject(lead_id, promotion_id)).text

    assert '<select name="reason" required>' in text
    assert '<option value="no_budget">No budget this year</option>' in text
    assert '<option value="bad_timing">Not now, maybe next quarter</option>' in text
    assert '<option value="no_response">no_response</option>' in text  # no label: the code


def test_posting_the_accept_link_decides_once(intake):
    lead_id, promotion_id = seed_sql(intake.engine, "ada@example.com")
    link = intake.links.accept(lead_id, promotion_id)

    page = httpx.post(link, data={"note": "Call booked <Tuesday>"})

    assert page.status_code == 200 and "<h1>Accepted</h1>" in page.text and "is now an opportunity" in page.text
    assert lead_row(intake.engine, "ada@example.com").stage == "opportunity"
    assert stage_history(intake.engine, "ada@example.com")[-1].reason == "accepted by sales: Call booked <Tuesday>"
    [row] = outbox_rows(intake.engine)
    assert row.payload["decision"]["via"] == "link" and intake.wakes == [1]
    before = snapshot(intake.engine)

    for again in (httpx.get(link), httpx.post(link, data={"note": "again"})):
        assert again.status_code == 200 and "<h1>Already decided</h1>" in again.text
        assert "was accepted on 2024-05-01 12:00 UTC" in again.text and "Call booked &lt;Tuesday&gt;" in again.text
    assert snapshot(intake.engine) == before and intake.wakes == [1]


def test_posting_the_reject_link_recycles_with_the_chosen_reason(intake):
    lead_id, promotion_id = seed_sql(intake.engine, "ada@example.com")
    link = intake.links.reject(lead_id, promotion_id)

    page = httpx.post(link, data={"reason": "bad_timing", "note": "Q3"})

    assert page.status_code == 200 and "<h1>Rejected</h1>" in page.text
    assert "goes back to marketing (recycled); recycle campaigns pick it up from 2024-07-30" in page.text
    assert "Reason: Not now, maybe next quarter" in page.text
    lead = lead_row(intake.engine, "ada@example.com")
    assert (lead.stage, lead.fields["rejection_reason"]) == ("recycled", "bad_timing")
    assert stage_history(intake.engine, "ada@example.com")[-1].reason == (
        "rejected by sales: bad_timing (Not now, maybe next quarter); note: Q3")
    # The accept link of the same promotion now shows the decision, and changes nothing.
    before = snapshot(intake.engine)
    accept = intake.links.accept(lead_id, promotion_id)
    for response in (httpx.get(accept), httpx.post(accept, data={})):
        assert response.status_code == 200 and "<h1>Already decided</h1>" in response.text
        assert "was rejected (bad_timing: Not now, maybe next quarter)" in response.text
    assert snapshot(intake.engine) == before


def test_a_disqualifying_reason_says_so(intake):
    lead_id, promotion_id = seed_sql(intake.engine, "ada@example.com")
    page = httpx.post(intake.links.reject(lead_id, promotion_id), data={"reason": "not_a_fit"})
    assert page.status_code == 200 and "is disqualified" in page.text
    assert lead_row(intake.engine, "ada@example.com").stage == "disqualified"


@pytest.mark.parametrize(("form", "message"), [
    ({}, "a rejection needs a reason: use one of no_budget"),
    ({"reason": ""}, "a rejection needs a reason"),
    ({"reason": "<nope>"}, "unknown reject reason &#x27;&lt;nope&gt;&#x27;"),
])
def test_a_reject_form_without_a_valid_reason_is_shown_again(intake, form, message):
    lead_id, promotion_id = seed_sql(intake.engine, "ada@example.com")
    before = snapshot(intake.engine)

    page = httpx.post(intake.links.reject(lead_id, promotion_id), data=form)

    assert page.status_code == 422 and message in page.text
    assert '<select name="reason" required>' in page.text
    assert snapshot(intake.engine) == before


def test_a_link_of_an_earlier_promotion_no_longer_decides(intake):
    from feedback_world import promote

    lead_id, old = seed_sql(intake.engine, "ada@example.com")
    with transaction(intake.engine) as conn:
        promote(conn, lead_id, T0, from_stage="sql")
    before = snapshot(intake.engine)

    for response in (httpx.get(intake.links.accept(lead_id, old)), httpx.post(intake.links.accept(lead_id, old))):
        assert response.status_code == 409 and "No longer waiting for a decision" in response.text
        assert "promoted again since this link was sent" in response.text
    assert snapshot(intake.engine) == before


def _tokens(intake: Intake, lead_id: int, promotion_id: int) -> dict[str, str]:
    token = intake.links.accept(lead_id, promotion_id).rsplit("/", 1)[1]
    payload, signature = token.split(".")
    flipped = payload[:-1] + ("A" if payload[-1] != "A" else "B")
    other = SalesLinks(intake.url, Signer("another secret")).reject(lead_id, promotion_id).rsplit("/", 1)[1]
    unsubscribe = LinkBuilder(intake.url, Signer("s3cret"), "1").unsubscribe().rsplit("/", 1)[1]
    return {
        "altered payload": f"{flipped}.{signature}", "altered signature": f"{payload}.{signature[:-2]}xy",
        "another secret": other, "another purpose": unsubscribe, "garbage": "nothing-here",
        "no signature": payload,
        "no such lead": SalesLinks("", Signer("s3cret")).accept(lead_id + 1, 1).rsplit("/", 1)[1],
        "no such promotion": SalesLinks("", Signer("s3cret")).accept(lead_id, promotion_id + 99).rsplit("/", 1)[1],
    }


def test_forged_and_altered_tokens_are_404_and_change_nothing(intake):
    lead_id, promotion_id = seed_sql(intake.engine, "ada@example.com")
    before = snapshot(intake.engine)

    for name, token in _tokens(intake, lead_id, promotion_id).items():
        for response in (httpx.get(f"{intake.url}/s/{token}"),
                         httpx.post(f"{intake.url}/s/{token}", data={"reason": "no_budget"})):
            assert response.status_code == 404, (name, response.request.method)
            assert "This link is not valid" in response.text
    assert snapshot(intake.engine) == before and not intake.wakes


def test_a_link_of_a_deleted_lead_is_404(intake):
    lead_id, promotion_id = seed_sql(intake.engine, "ada@example.com")
    link = intake.links.reject(lead_id, promotion_id)
    with transaction(intake.engine) as conn:
        conn.execute(delete(Lead.__table__))
    assert httpx.get(link).status_code == 404
    assert httpx.post(link, data={"reason": "no_budget"}).status_code == 404


# --- nurture sales (the console script) ---------------------------------------------------------------------------


@pytest.fixture
def sales_cli(tmp_path: Path) -> Iterator[Any]:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    upgrade(url)
    world = write_world(tmp_path / "campaigns")
    env = {key: value for key, value in os.environ.items() if not key.startswith("NURTURE_")}
    env.update(NURTURE_DATABASE_URL=url, NURTURE_CAMPAIGNS_DIR=str(world.folder))
    engine = make_engine(url)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(NURTURE), "sales", *args], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)

    run.engine = engine  # type: ignore[attr-defined]
    yield run
    engine.dispose()


def test_cli_accept_reject_and_repeat(sales_cli):
    engine = sales_cli.engine
    seed_sql(engine, "ada@example.com")
    seed_sql(engine, "bob@example.com", events=())  # the command reads the wall clock: no behaviour to decay

    with ThreadPoolExecutor(2) as pool:
        accepted, rejected = pool.map(lambda args: sales_cli(*args), [
            ("accept", "Ada@Example.com", "--note", "Budget approved"),
            ("reject", "bob@example.com", "--reason", "no_budget", "--note", "next year"),
        ])

    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.splitlines()[0] == "accepted ada@example.com: stage sql -> opportunity"
    assert "entered 1 campaign(s)" in accepted.stdout
    assert rejected.returncode == 0, rejected.stderr
    assert rejected.stdout.splitlines() == [
        "rejected (no_budget: No budget this year) bob@example.com: stage sql -> recycled",
        "score 25 -> -20 (-30 sales_feedback)",  # fit 10 + 15 for the budget, which no_budget sets false
        'fields: budget_confirmed=false, rejection_reason="no_budget"',
        "entered 1 campaign(s)",
    ]
    assert stage_history(engine, "bob@example.com")[-1].reason == (
        "rejected by sales: no_budget (No budget this year); note: next year")
    assert [c.actor for c in stage_history(engine, "ada@example.com")][-1] == "sales"
    assert outbox_rows(engine) == []  # no NURTURE_SALES_WEBHOOK_URL: nowhere to tell

    again = sales_cli("accept", "ada@example.com", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["already"] is True
    repeat = sales_cli("reject", "bob@example.com", "--reason", "no_budget")
    assert repeat.returncode == 0
    assert repeat.stdout.startswith("already decided: bob@example.com was rejected (no_budget: No budget this year) on")


def test_cli_bad_input_is_a_message_and_exit_status_1(sales_cli):
    engine = sales_cli.engine
    seed_sql(engine, "ada@example.com")
    seed_mql(engine, "mql@example.com")
    before = snapshot(engine)
    cases = [
        (("reject", "ada@example.com"), f"error: a rejection needs a reason: {REASONS}"),
        (("reject", "ada@example.com", "--reason", "nope"), f"error: unknown reject reason 'nope': {REASONS}"),
        (("accept", "mql@example.com"), "error: mql@example.com is not an SQL (stage mql): only a sales qualified "
                                        "lead can be accepted or rejected"),
        (("accept", "nobody@example.com"), "error: no lead with email 'nobody@example.com'"),
    ]

    with ThreadPoolExecutor(len(cases)) as pool:
        results = list(pool.map(lambda case: sales_cli(*case[0]), cases))

    for (args, message), result in zip(cases, results):
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert result.stderr.splitlines()[0] == message and "Traceback" not in result.stderr
    assert snapshot(engine) == before


def test_cli_lists_the_reasons(sales_cli):
    listed = sales_cli("reasons")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["CODE", "STAGE", "SCORE", "WAIT", "LABEL"]
    assert lines[1].split() == ["no_budget", "recycled", "-30", "No", "budget", "this", "year"]
    assert lines[2].split()[:4] == ["bad_timing", "recycled", "-10", "90d"]
    assert lines[4].split() == ["no_response", "recycled", "reset_behaviour", "30d"]
    as_json = json.loads(sales_cli("reasons", "--json").stdout)
    assert [r["code"] for r in as_json] == ["no_budget", "bad_timing", "wrong_person", "no_response", "not_a_fit",
                                            "broken"]
    assert as_json[1] == {"code": "bad_timing", "label": "Not now, maybe next quarter", "stage": "recycled",
                          "score": -10.0, "recycle_after": "12w6d", "set": {"purchase_timeline": None}}


# --- end to end: reject over HTTP, the running worker sends the recycle campaign's first email --------------------

RECYCLE = """\
id: recycle-no-budget
name: Recycled - no budget
entry: {stage: recycled, where: {fields: {rejection_reason: no_budget}}}
steps:
  - id: budget-planning
    email: {template: offer.html.j2, subject: "For your next budget round, {{ lead.first_name }}"}
  - id: business-case
    wait: 4w
    email: {template: news.html.j2, subject: "What 3 ops leaders told their CFO"}
"""


def test_a_rejected_sql_gets_the_recycle_campaigns_first_email_and_the_crm_hears(
    migrated_url: str, tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    from feedback_world import FILES

    project = write_project(tmp_path / "project", {"recycle-no-budget": RECYCLE})
    for name in ("scoring.yaml", "sales.yaml"):
        (project.campaigns_dir / name).write_text(FILES[name], encoding="utf-8")
    clock = Clock(T0)
    with WebhookReceiver() as crm:
        settings = project.settings(migrated_url, smtp_sink.url).model_copy(update={
            "api_key": API_KEY, "sales_webhook_url": crm.url, "webhook_secret": "crm-secret"})
        worker = Worker(settings, clock=clock, config=dispatch_config())
        seed_sql(worker.engine, "ada@example.com")
        app = create_app(settings, engine=worker.engine, catalog=worker.catalog, rules=worker.scoring,
                         signer=worker.signer, on_event=worker.wake, clock=clock, sales=worker.sales)
        worker.start()
        try:
            with HttpServer(app) as server:
                assert worker.sweep() == 0 and subjects(smtp_sink, "ada@example.com") == []  # an SQL: no nurture
                response = httpx.post(f"{server.url}/v1/sales/feedback", headers=AUTH, json={
                    "email": "ada@example.com", "verdict": "reject", "reason": "no_budget"})
                assert response.status_code == 200, response.text
                assert response.json()["enrolled"] == 1

                wait_until(lambda: subjects(smtp_sink, "ada@example.com"), timeout=10,
                           what="the recycle campaign's first email")
                [request] = crm.wait_for(1, timeout=10)
        finally:
            worker.stop()
            worker.engine.dispose()
    assert subjects(smtp_sink, "ada@example.com") == ["For your next budget round, Ada"]
    [message] = [m for m in smtp_sink.messages if "ada@example.com" in m.rcpt_tos]
    assert "An offer for Ada." in message.parsed().get_body(("plain",)).get_content()
    body = json.loads(request.body)
    assert request.headers["nurture-event-type"] == "lead.rejected" and body["type"] == "lead.rejected"
    assert body["lead"]["email"] == "ada@example.com" and body["decision"]["reason"] == "no_budget"
    assert verify("crm-secret", request.headers["nurture-signature"], request.body, now=int(T0.timestamp()))


def test_the_whole_loop_demo_request_handoff_link_reject_recycle_email(
    migrated_url: str, tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    """With the real promotion: a demo request makes an SQL, the CRM gets the handoff with its links, the rep rejects
    through the reject link's page, and the recycle campaign's first email goes out."""
    from feedback_world import FILES

    project = write_project(tmp_path / "project", {"recycle-no-budget": RECYCLE})
    for name in ("scoring.yaml", "sales.yaml"):
        (project.campaigns_dir / name).write_text(FILES[name], encoding="utf-8")
    clock = Clock(T0)
    port = free_port()
    with WebhookReceiver() as crm:
        settings = project.settings(migrated_url, smtp_sink.url).model_copy(update={
            "api_key": API_KEY, "sales_webhook_url": crm.url, "webhook_secret": "crm-secret",
            "base_url": f"http://127.0.0.1:{port}"})
        worker = Worker(settings, clock=clock, config=dispatch_config())
        app = create_app(settings, engine=worker.engine, catalog=worker.catalog, rules=worker.scoring,
                         signer=worker.signer, on_event=worker.wake, clock=clock, sales=worker.sales)
        worker.start()
        try:
            with HttpServer(app, port=port) as server:
                response = httpx.post(f"{server.url}/v1/events", headers=AUTH, json={
                    "email": "ada@example.com", "type": "demo_request"})
                assert response.status_code == 202 and response.json()["results"][0]["stage"] == "sql"
                [promoted] = crm.wait_for(1, timeout=10)
                handoff = json.loads(promoted.body)
                assert handoff["type"] == "lead.promoted"

                page = httpx.get(handoff["links"]["reject"])
                assert page.status_code == 200 and "demo_request" in page.text
                outcome = httpx.post(handoff["links"]["reject"], data={"reason": "no_budget", "note": "FY25"})
                assert outcome.status_code == 200 and "<h1>Rejected</h1>" in outcome.text

                wait_until(lambda: subjects(smtp_sink, "ada@example.com"), timeout=10,
                           what="the recycle campaign's first email")
                rejected = crm.wait_for(2, timeout=10)[1]
                again = httpx.post(handoff["links"]["accept"], data={})
                assert again.status_code == 200 and "<h1>Already decided</h1>" in again.text
        finally:
            worker.stop()
            worker.engine.dispose()
    assert subjects(smtp_sink, "ada@example.com") == ["For your next budget round,"]  # no first name on the form
    body = json.loads(rejected.body)
    assert body["type"] == "lead.rejected" and body["decision"]["note"] == "FY25"
    target = decode_sales_link(Signer(settings.secret_key), handoff["links"]["reject"].rsplit("/", 1)[1])
    assert (body["decision"]["promotion_id"], body["lead"]["id"]) == (target.promotion_id, target.lead_id)
    assert len(crm.requests) == 2  # the repeated click told nobody anything
