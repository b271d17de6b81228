"""Promotion to SQL and the sales handoff in the intake transaction, on SQLite files and PostgreSQL: intent triggers,
score-and-fit, disqualification, idempotency, round-robin routing, exits, the outbox rows and their dedup, the brief,
and the digest and SLA reminder jobs (their "who is due" functions as tables).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from db_fixtures import engine, migrated_url, postgres_available, postgres_template  # noqa: F401
from intake_world import T0, add_delivery, enrollments_of, lead_row, load_world, stage_history, write_campaigns
from sqlalchemy import select, update

from nurture.application import promote as store
from nurture.application.event_input import DUPLICATE, RECORDED, EventIn
from nurture.application.override_stage import override_stage
from nurture.application.promote import OpenSql
from nurture.application.record_events import DUPLICATE, RECORDED, EventIn, record_events
from nurture.application.sales_reminders import digest_day, digests_due, reminders_due, sla_overdue
from nurture.application.save_lead import save_lead
from nurture.core.facts import Engagement, LeadView
from nurture.definitions.loader import Catalog
from nurture.definitions.sales import SalesRules, load_sales
from nurture.definitions.scoring import ScoringRules
from nurture.handoff import Handoff, notify
from nurture.handoff.brief import is_hand_raise
from nurture.rendering.sales_links import SalesLinks, decode_sales_link
from nurture.signing import Signer
from nurture.storage.database import transaction
from nurture.storage.models import Delivery, Meta, Outbox, StageChange
from nurture.storage.promotions import OpenSql
from nurture.storage.tables import L
from nurture.worker.handoff_jobs import HandoffJobs

O, M, D, SC = Outbox.__table__, Meta.__table__, Delivery.__table__, StageChange.__table__  # noqa: E741 - as in storage/tables.py

SALES = """\
promotion:
  intent:
    - demo_request
    - {event: contact_sales, properties: {topic: {ne: support}}}
    - {event: free_trial_signup, when: {company_size: {gte: 20}}}
  score_and_fit:
    - {name: engaged-and-fit, score: 50, min_fit: 10}
disqualify:
  - {name: competitor, when: {domain: [rival.example]}}
  - {name: student, when: {title: {matches: '(?i)student'}}}
routing:
  owners:
    - {id: ana, name: Ana Ruiz, email: ana@acme.test, slack: U01ANA, timezone: Europe/Madrid}
    - {id: jonas, name: Jonas Weber, email: jonas@acme.test, timezone: Europe/Berlin}
    - {id: mike, name: Mike Chen, email: mike@acme.test, slack: U01MIKE, timezone: America/Chicago}
  teams: {emea: [ana, jonas]}
  rules:
    - {name: emea, when: {country: [DE, FR, GB]}, team: emea}
  fallback: mike
handoff: {sla: 4h, digest_at: "08:30"}
"""

# A campaign that stays on at stage sql by its own exits (only recycled leads enter it; tests enroll leads by hand).
LONG_NURTURE = """\
id: long-nurture
name: Long nurture
entry: {stage: recycled}
exit: {stages: [customer]}
steps:
  - id: monthly
    wait: 30d
    email: {template: monthly.html.j2, subject: Monthly}
"""

SIGNER = Signer("promotion-tests-secret")
LINKS = SalesLinks("https://nurture.acme.test", SIGNER)
HANDOFF = Handoff(LINKS)


@dataclass
class World:
    catalog: Catalog
    rules: ScoringRules
    sales: SalesRules


@pytest.fixture
def world(tmp_path: Path) -> World:
    folder = write_campaigns(tmp_path / "campaigns")
    (folder / "sales.yaml").write_text(SALES, encoding="utf-8")
    (folder / "long-nurture.yaml").write_text(LONG_NURTURE, encoding="utf-8")
    catalog, rules = load_world(folder)
    sales, problems = load_sales(folder)
    assert not problems, problems
    return World(catalog, rules, sales)


def record(engine, world: World, *events: EventIn, now: datetime = T0, handoff: Handoff | None = HANDOFF):
    return record_events(engine, world.catalog, world.rules, list(events), now=now, actor="api", sales=world.sales,
                         handoff=handoff)


def save(engine, world: World, data: dict[str, Any], *, now: datetime = T0, handoff: Handoff | None = HANDOFF):
    return save_lead(engine, world.catalog, world.rules, data, now=now, actor="api", sales=world.sales,
                     handoff=handoff)


def nurtured_mql(engine, world: World, email: str, **fields: Any) -> None:
    """An MQL enrolled in both test campaigns (mql-nurture lists demo_request as its goal; visitors does not)."""
    add_delivery(engine, email, campaign_id="mql-nurture")
    add_delivery(engine, email, campaign_id="visitors", step="followup")
    if fields:
        save(engine, world, {"email": email, **fields})


def outbox(engine) -> list[Any]:
    with transaction(engine, read_only=True) as conn:
        return list(conn.execute(select(O).order_by(O.c.id)))


def promotions(engine, email: str) -> list[Any]:
    return [change for change in stage_history(engine, email) if change.to_stage == "sql"]


def mark_sent(engine) -> None:
    with transaction(engine) as conn:
        conn.execute(update(O).values(status="sent", sent_at=T0))


# -- promotion by intent -------------------------------------------------------------------------------------------


def test_a_demo_request_promotes_exits_every_campaign_routes_and_queues_the_handoff(engine, world):
    nurtured_mql(engine, world, "ada@example.com", first_name="Ada", last_name="Lovelace", company="Engines",
                 title="VP Engineering", country="DE", budget_confirmed=True)
    add_delivery(engine, "ada@example.com", campaign_id="long-nurture", step="monthly")
    at = T0 + timedelta(hours=1)
    [result] = record(engine, world, EventIn("ada@example.com", "demo_request", properties={"form": "demo"}), now=at)

    assert (result.status, result.stage, result.stage_changed) == (RECORDED, "sql", True)
    [change] = promotions(engine, "ada@example.com")
    assert (change.from_stage, change.actor, change.at) == ("mql", "rule", at)
    assert change.reason == "intent:demo_request: demo_request (explicit intent)"
    lead = lead_row(engine, "ada@example.com")
    assert (lead.stage, lead.owner) == ("sql", "ana@acme.test")
    by_campaign = {e.campaign_id: (e.status, e.end_reason, e.next_due_at) for e in enrollments_of(engine, lead.email)}
    # The goal exit of mql-nurture comes first; the promotion ends the others, even one whose exits leave out sql.
    assert by_campaign == {"mql-nurture": ("exited", "goal:demo_request", None),
                           "visitors": ("exited", "stage:sql", None), "long-nurture": ("exited", "stage:sql", None)}

    webhook, email = outbox(engine)
    assert (webhook.kind, webhook.dedup_key, webhook.status, webhook.next_attempt_at) == (
        "sales_webhook", f"lead.promoted:{change.id}", "pending", at)
    payload = webhook.payload
    assert payload["type"] == "lead.promoted" and payload["promotion_id"] == change.id
    assert payload["lead"] == {
        "id": lead.id, "email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace", "company": "Engines",
        "title": "VP Engineering", "industry": None, "company_size": None, "country": "DE", "stage": "sql",
        "score": 0.0, "owner": "ana@acme.test",
    }
    assert payload["owner"] == {"email": "ana@acme.test", "slack_id": "U01ANA", "id": "ana", "name": "Ana Ruiz"}
    accept, reject = (decode_sales_link(SIGNER, payload["links"][v].rsplit("/", 1)[1]) for v in ("accept", "reject"))
    assert (accept.lead_id, accept.promotion_id, accept.verdict) == (lead.id, change.id, "accept")
    assert (reject.lead_id, reject.promotion_id, reject.verdict) == (lead.id, change.id, "reject")
    assert payload["links"]["accept"].startswith("https://nurture.acme.test/s/")
    brief = payload["brief"]
    assert brief["why_now"]["rule"] == "intent:demo_request"
    assert brief["why_now"]["event"]["type"] == "demo_request"
    assert brief["why_now"]["event"]["properties"] == {"form": "demo"}
    assert brief["why"][0] == "Requested a demo (form: demo)"
    assert brief["who"]["fields"] == {"budget_confirmed": True}
    assert brief["owner"]["routing"] == "emea"

    assert (email.kind, email.dedup_key) == ("owner_email", f"lead.promoted:{change.id}:email")
    assert email.payload["to"] == "ana@acme.test"
    assert "Ada Lovelace, VP Engineering at Engines" in email.payload["subject"]
    assert payload["links"]["accept"] in email.payload["text"] and payload["links"]["reject"] in email.payload["html"]


@pytest.mark.parametrize(("event", "fields", "promoted"), [
    (EventIn("a@example.com", "contact_sales", properties={"topic": "pricing"}), {}, True),
    (EventIn("a@example.com", "contact_sales", properties={"topic": "support"}), {}, False),
    (EventIn("a@example.com", "contact_sales"), {}, False),  # a missing property fails every test, even "ne"
    (EventIn("a@example.com", "free_trial_signup"), {"company_size": 50}, True),
    (EventIn("a@example.com", "free_trial_signup"), {"company_size": 5}, False),
    (EventIn("a@example.com", "page_view"), {}, False),
])
def test_conditional_intent_triggers(engine, world, event, fields, promoted):
    nurtured_mql(engine, world, "a@example.com", **fields)
    [result] = record(engine, world, event, now=T0 + timedelta(hours=1))

    assert result.stage == ("sql" if promoted else "mql")
    assert len(outbox(engine)) == (2 if promoted else 0)
    assert any(e.status == "active" for e in enrollments_of(engine, "a@example.com")) is not promoted


def test_score_and_fit_promotes_only_with_the_fit_points(engine, world):
    # 30 + 10 + 10 behaviour; the 200+ company size rule gives the 10 fit points the rule asks for.
    record(engine, world, EventIn("fit@example.com", "webinar_attended"),
           EventIn("fit@example.com", "content_download"), EventIn("unfit@example.com", "webinar_attended"),
           EventIn("unfit@example.com", "content_download"))
    save(engine, world, {"email": "unfit@example.com", "company_size": 50})
    results = record(engine, world, EventIn("fit@example.com", "content_download"),
                     EventIn("unfit@example.com", "content_download"), EventIn("unfit@example.com", "content_download"),
                     now=T0 + timedelta(minutes=1))
    assert [r.stage for r in results] == ["mql", "mql", "mql"]  # fit has no size yet; unfit is small

    saved = save(engine, world, {"email": "fit@example.com", "company_size": 250}, now=T0 + timedelta(minutes=2))

    assert (saved.stage, saved.stage_changed, saved.score) == ("sql", True, 60)
    [change] = promotions(engine, "fit@example.com")
    assert change.reason.startswith("score-and-fit:engaged-and-fit: score 60 >= 50 and fit: 10 fit points >= 10")
    assert promotions(engine, "unfit@example.com") == []
    webhook, _email = outbox(engine)
    assert webhook.payload["brief"]["why_now"]["event"] is None
    assert webhook.payload["brief"]["why"][0].startswith("Score and fit (engaged-and-fit): score 60")
    assert webhook.payload["owner"]["email"] == "mike@acme.test"  # no country: the fallback


def test_a_recycled_lead_waiting_out_its_delay_is_promoted_by_a_hand_raise_only(engine, world):
    until = T0 + timedelta(days=90)
    for email in ("waits@example.com", "asks@example.com", "due@example.com"):
        save(engine, world, {"email": email, "company_size": 250, "recycle_at": until.isoformat()})
        override_stage(engine, world.catalog, email=email, stage="recycled", reason="returned by sales", now=T0)
    events = [EventIn(email, kind) for email in ("waits@example.com", "asks@example.com")
              for kind in ("webinar_attended", "content_download")]
    results = record(engine, world, *events, EventIn("asks@example.com", "demo_request"), now=T0 + timedelta(days=1))
    # 40 behaviour + 10 fit points: an MQL, and an SQL by score and fit, were it not waiting
    assert [(r.score, r.stage) for r in results] == [(40, "recycled"), (50, "recycled")] * 2 + [(50, "sql")]

    results = record(engine, world, EventIn("due@example.com", "webinar_attended"),
                     EventIn("due@example.com", "content_download"), now=until + timedelta(minutes=1))
    assert [(r.stage, r.stage_changed) for r in results] == [("mql", True), ("sql", True)]
    assert [(c.to_stage, c.actor) for c in stage_history(engine, "due@example.com")] == [
        ("recycled", "admin"), ("mql", "rule"), ("sql", "rule")]
    assert promotions(engine, "due@example.com")[0].reason.startswith("score-and-fit:engaged-and-fit")
    assert promotions(engine, "waits@example.com") == []


@pytest.mark.parametrize(("stage", "fields", "waiting"), [
    ("recycled", {"recycle_at": "2024-05-02T00:00:00+00:00"}, True),
    ("recycled", {"recycle_at": "2024-05-01T12:00:00+00:00"}, False),  # T0 itself: the wait is over
    ("recycled", {"recycle_at": "2024-05-02T00:00:00"}, True),  # no offset: UTC
    ("recycled", {"recycle_at": "soon"}, False),
    ("recycled", {}, False),
    ("mql", {"recycle_at": "2024-05-02T00:00:00+00:00"}, False),  # a gate left from an earlier rejection
])
def test_recycling(stage, fields, waiting):
    assert store.recycling(stage, fields, T0) is waiting


# -- disqualification ----------------------------------------------------------------------------------------------


def test_a_disqualified_lead_leaves_nurture_and_is_never_promoted(engine, world):
    nurtured_mql(engine, world, "jo@rival.example")
    add_delivery(engine, "jo@rival.example", campaign_id="long-nurture", step="monthly")
    [result] = record(engine, world, EventIn("jo@rival.example", "page_view"), now=T0 + timedelta(hours=1))

    assert (result.stage, result.stage_changed) == ("disqualified", True)
    change = stage_history(engine, "jo@rival.example")[-1]
    assert (change.to_stage, change.actor) == ("disqualified", "rule")
    assert change.reason == "disqualify:competitor: competitor: domain rival.example"
    assert {(e.status, e.end_reason) for e in enrollments_of(engine, "jo@rival.example")} == {
        ("exited", "stage:disqualified")}

    results = record(engine, world, EventIn("jo@rival.example", "demo_request"),
                     EventIn("jo@rival.example", "contact_sales", properties={"topic": "pricing"}),
                     now=T0 + timedelta(hours=2))
    assert [(r.status, r.stage, r.stage_changed) for r in results] == [(RECORDED, "disqualified", False)] * 2
    assert outbox(engine) == [] and promotions(engine, "jo@rival.example") == []
    assert lead_row(engine, "jo@rival.example").owner is None


def test_an_sql_whose_fields_later_match_a_disqualification_is_disqualified(engine, world):
    record(engine, world, EventIn("kim@example.com", "demo_request"))
    saved = save(engine, world, {"email": "kim@example.com", "title": "PhD student"}, now=T0 + timedelta(minutes=1))
    assert (saved.stage, saved.stage_changed) == ("disqualified", True)
    assert [c.to_stage for c in stage_history(engine, "kim@example.com")] == ["lead", "sql", "disqualified"]


# -- idempotency ------------------------------------------------------------------------------------------------------


def test_a_second_hand_raise_notifies_nobody_and_joins_the_pending_brief(engine, world):
    nurtured_mql(engine, world, "ada@example.com", country="FR")
    record(engine, world, EventIn("ada@example.com", "demo_request", id="demo-1"), now=T0 + timedelta(hours=1))
    [first_webhook, first_email] = outbox(engine)
    assert first_webhook.payload["brief"]["intent_since"] == []

    [again] = record(engine, world, EventIn("ada@example.com", "contact_sales", properties={"topic": "pricing"}),
                     now=T0 + timedelta(hours=2))
    [duplicate] = record(engine, world, EventIn("ada@example.com", "demo_request", id="demo-1"),
                         now=T0 + timedelta(hours=3))

    assert (again.status, again.stage, again.stage_changed) == (RECORDED, "sql", False)
    assert duplicate.status == DUPLICATE
    assert len(promotions(engine, "ada@example.com")) == 1
    webhook, email = outbox(engine)
    assert (webhook.id, email.id) == (first_webhook.id, first_email.id)  # refreshed in place: no new notification
    assert [i["type"] for i in webhook.payload["brief"]["intent_since"]] == ["contact_sales"]
    assert "Also: Asked to talk to sales (topic: pricing)" in webhook.payload["brief"]["why"]
    assert "Also: Asked to talk to sales (topic: pricing)" in email.payload["text"]
    assert webhook.payload["brief"]["owner"]["routing"] == "emea"  # kept from the promotion
    assert webhook.payload["links"] == first_webhook.payload["links"]

    # Once delivered, a notification is history: a third hand-raise changes no row, but a brief built now shows it.
    mark_sent(engine)
    record(engine, world, EventIn("ada@example.com", "demo_request", id="demo-2"), now=T0 + timedelta(hours=4))
    assert [row.payload for row in outbox(engine)] == [webhook.payload, email.payload]
    lead = lead_row(engine, "ada@example.com")
    with transaction(engine, read_only=True) as conn:
        brief = store.brief_for(conn, sales=world.sales, lead_id=lead.id, promotion_id=webhook.payload["promotion_id"],
                                scoring=world.rules, now=T0 + timedelta(hours=5), links=LINKS)
    assert [i["type"] for i in brief["intent_since"]] == ["contact_sales", "demo_request"]
    assert brief["why_now"]["event"]["at"] == (T0 + timedelta(hours=1)).isoformat()  # still the first request


def test_two_hand_raises_in_one_batch_promote_once(engine, world):
    results = record(engine, world, EventIn("new@example.com", "demo_request"),
                     EventIn("new@example.com", "free_trial_signup"),  # no company size: not a trigger on its own
                     EventIn("new@example.com", "contact_sales", properties={"topic": "pricing"}))
    assert [(r.stage, r.stage_changed) for r in results] == [("sql", True), ("sql", False), ("sql", False)]
    webhook, _email = outbox(engine)
    assert [i["type"] for i in webhook.payload["brief"]["intent_since"]] == ["contact_sales"]
    assert len(promotions(engine, "new@example.com")) == 1


def test_everything_is_written_in_the_intake_transaction_or_not_at_all(engine, world, monkeypatch):
    nurtured_mql(engine, world, "ada@example.com")

    def broken(*_args, **_kwargs):
        raise RuntimeError("outbox unavailable")

    monkeypatch.setattr(store, "enqueue", broken)
    with pytest.raises(RuntimeError):
        record(engine, world, EventIn("ada@example.com", "demo_request"))
    assert lead_row(engine, "ada@example.com").stage == "mql"
    assert promotions(engine, "ada@example.com") == [] and outbox(engine) == []
    assert {e.status for e in enrollments_of(engine, "ada@example.com")} == {"active"}


# -- routing -------------------------------------------------------------------------------------------------------


def test_round_robin_per_team_in_meta_the_fallback_and_a_kept_owner(engine, world):
    for index in range(4):
        record(engine, world, EventIn(f"eu{index}@example.com", "demo_request"))
        save(engine, world, {"email": f"eu{index}@example.com", "country": "DE"})
    # The country came after the promotion: the four went to the fallback, and no team counter moved.
    assert {lead_row(engine, f"eu{i}@example.com").owner for i in range(4)} == {"mike@acme.test"}

    for index in range(4):
        save(engine, world, {"email": f"de{index}@example.com", "country": "DE"})
        record(engine, world, EventIn(f"de{index}@example.com", "demo_request"))
    save(engine, world, {"email": "kept@example.com", "country": "GB", "owner": "Jonas@acme.test"})
    record(engine, world, EventIn("kept@example.com", "demo_request"))

    assert [lead_row(engine, f"de{i}@example.com").owner for i in range(4)] == [
        "ana@acme.test", "jonas@acme.test", "ana@acme.test", "jonas@acme.test"]
    assert lead_row(engine, "kept@example.com").owner == "jonas@acme.test"
    with transaction(engine, read_only=True) as conn:
        assert dict(conn.execute(select(M.c.key, M.c.value).where(M.c.key.like("routing.%"))).all()) == {
            "routing.round_robin.emea": "4"}
    kept = [row for row in outbox(engine) if row.kind == "sales_webhook"][-1]
    assert kept.payload["brief"]["owner"]["routing"] == "existing owner"


def test_concurrent_promotions_take_consecutive_round_robin_positions(engine, world):
    emails = [f"rr{index}@example.com" for index in range(6)]
    for email in emails:
        save(engine, world, {"email": email, "country": "FR"})
    start = threading.Barrier(len(emails))

    def promote(email: str) -> None:
        start.wait()
        record(engine, world, EventIn(email, "demo_request"))

    with ThreadPoolExecutor(len(emails)) as pool:
        list(pool.map(promote, emails))

    owners = [lead_row(engine, email).owner for email in emails]
    assert sorted(owners) == ["ana@acme.test"] * 3 + ["jonas@acme.test"] * 3
    with transaction(engine, read_only=True) as conn:
        assert conn.execute(select(M.c.value).where(M.c.key == "routing.round_robin.emea")).scalar_one() == "6"


def test_no_routing_no_email_and_no_webhook_url_no_webhook(engine, world):
    record(engine, world, EventIn("a@example.com", "demo_request"), handoff=Handoff(LINKS, webhook=False))
    assert [(row.kind, row.payload["to"]) for row in outbox(engine)] == [("owner_email", "mike@acme.test")]

    world.sales = SalesRules.model_validate({"promotion": {"intent": ["demo_request"]}})
    mark_sent(engine)
    record(engine, world, EventIn("b@example.com", "demo_request"), handoff=None)
    [webhook] = [row for row in outbox(engine) if row.status == "pending"]
    assert webhook.kind == "sales_webhook"
    assert webhook.payload["owner"] is None and webhook.payload["links"] == {}
    assert lead_row(engine, "b@example.com").owner is None


def test_without_sales_rules_intake_promotes_nobody(engine, world):
    record_events(engine, world.catalog, world.rules, [EventIn("a@example.com", "demo_request")], now=T0, actor="api")
    assert lead_row(engine, "a@example.com").stage == "lead" and outbox(engine) == []


# -- the brief ------------------------------------------------------------------------------------------------------


def test_the_brief_tells_who_why_score_timeline_and_nurture(engine, world):
    delivery_id = add_delivery(engine, "ada@example.com", campaign_id="mql-nurture", step="welcome")
    with transaction(engine) as conn:
        conn.execute(update(D).where(D.c.id == delivery_id).values(subject="Welcome to Acme"))
    save(engine, world, {"email": "ada@example.com", "first_name": "Ada", "company": "Engines", "industry": "Software",
                         "company_size": 300, "country": "GB", "purchase_timeline": "this_quarter"})
    record(engine, world,
           EventIn("ada@example.com", "email_open", occurred_at=T0 + timedelta(minutes=5), campaign_id="mql-nurture",
                   step_key="welcome", delivery_id=delivery_id),
           EventIn("ada@example.com", "email_click", occurred_at=T0 + timedelta(minutes=6), campaign_id="mql-nurture",
                   step_key="welcome", delivery_id=delivery_id, properties={"url": "https://acme.test/guide"}),
           EventIn("ada@example.com", "content_download", occurred_at=T0 + timedelta(minutes=7),
                   properties={"asset": "ROI guide"}),
           EventIn("ada@example.com", "webinar_registered", occurred_at=T0 + timedelta(minutes=8),
                   properties={"webinar": "Forecasting 101"}),
           EventIn("ada@example.com", "pricing_page_view", occurred_at=T0 + timedelta(minutes=9),
                   properties={"url": "https://acme.test/pricing"}),
           now=T0 + timedelta(minutes=10))
    record(engine, world, EventIn("ada@example.com", "demo_request"), now=T0 + timedelta(hours=1))
    webhook = outbox(engine)[0]
    brief = webhook.payload["brief"]

    assert brief["who"] | {"fields": None, "qualification": None} == {
        "email": "ada@example.com", "name": "Ada", "first_name": "Ada", "last_name": None, "title": None,
        "company": "Engines", "industry": "Software", "company_size": 300, "country": "GB", "timezone": None,
        "fields": None, "qualification": None}
    assert brief["who"]["fields"] == {"purchase_timeline": "this_quarter"}
    assert [(e["type"], e["label"]) for e in brief["timeline"]] == [
        ("demo_request", "Requested a demo"),
        ("pricing_page_view", "Viewed pricing: https://acme.test/pricing"),
        ("webinar_registered", "Webinar registered: Forecasting 101"),
        ("content_download", "Downloaded ROI guide"),
        ("email_click", "Clicked https://acme.test/guide in \u201cWelcome to Acme\u201d"),
        ("email_open", "Opened \u201cWelcome to Acme\u201d"),
    ]
    assert brief["timeline"][-1] | {"properties": None} == {
        "at": (T0 + timedelta(minutes=5)).isoformat(), "type": "email_open",
        "label": "Opened \u201cWelcome to Acme\u201d",
        "campaign": "mql-nurture", "step": "welcome", "subject": "Welcome to Acme", "points": 1.0, "properties": None}
    assert brief["score"] == brief["score_breakdown"]["total"] == webhook.payload["lead"]["score"]
    assert {i["label"] for i in brief["score_breakdown"]["items"]} == {
        "email_open", "email_click", "content_download", "pricing_page_view", "company size 200+"}
    nurture, visitors = brief["nurture"]  # the pricing page view enrolled the lead in "visitors" too
    assert nurture | {"steps": None, "enrolled_at": None} == {
        "campaign": "mql-nurture", "name": "MQL nurture", "status": "exited", "enrolled_at": None,
        "ended_at": (T0 + timedelta(hours=1)).isoformat(), "end_reason": "goal:demo_request", "steps": None}
    assert (visitors["campaign"], visitors["name"], visitors["end_reason"], visitors["steps"]) == (
        "visitors", "Pricing visitors", "stage:sql", [])
    assert nurture["steps"] == [{"step": "welcome", "subject": "Welcome to Acme", "status": "sent",
                                 "sent_at": T0.isoformat(), "opened": True, "clicked": True}]
    assert brief["why"][:2] == ["Requested a demo", "Content download: 10 points"]
    assert "Fit: company size 200+" in brief["why"]


def test_the_owner_email_escapes_lead_data_in_html_and_reads_as_text(engine, world):
    save(engine, world, {"email": "x@example.com", "first_name": "<script>alert(1)</script>", "company": "A & B"})
    record(engine, world, EventIn("x@example.com", "demo_request", properties={"form": "<b>demo</b>"}))
    email = outbox(engine)[1].payload

    assert "<script>" not in email["html"] and "&lt;script&gt;alert(1)&lt;/script&gt;" in email["html"]
    assert "A &amp; B" in email["html"] and "&lt;b&gt;demo&lt;/b&gt;" in email["html"]
    assert email["text"].startswith("New sales qualified lead for you: <script>alert(1)</script> at A & B\n")
    assert "Requested a demo (form: <b>demo</b>)" in email["text"]
    assert email["subject"].startswith("New SQL: <script>alert(1)</script> at A & B")


# -- the digest and the SLA reminder: who is due (pure) ------------------------------------------------------------


@pytest.mark.parametrize(("zone", "now", "expected"), [
    (None, datetime(2024, 5, 1, 8, 29, tzinfo=timezone.utc), None),
    (None, datetime(2024, 5, 1, 8, 30, tzinfo=timezone.utc), date(2024, 5, 1)),
    (None, datetime(2024, 5, 1, 23, 59, tzinfo=timezone.utc), date(2024, 5, 1)),
    ("Europe/Madrid", datetime(2024, 5, 1, 6, 29, tzinfo=timezone.utc), None),  # 08:29 CEST
    ("Europe/Madrid", datetime(2024, 5, 1, 6, 30, tzinfo=timezone.utc), date(2024, 5, 1)),
    ("Europe/Madrid", datetime(2024, 1, 15, 7, 29, tzinfo=timezone.utc), None),  # 08:29 CET in winter
    ("Europe/Madrid", datetime(2024, 1, 15, 7, 30, tzinfo=timezone.utc), date(2024, 1, 15)),
    ("America/Chicago", datetime(2024, 5, 2, 3, 0, tzinfo=timezone.utc), date(2024, 5, 1)),  # 22:00 the day before
    ("America/Chicago", datetime(2024, 5, 2, 13, 29, tzinfo=timezone.utc), None),
    ("America/Chicago", datetime(2024, 5, 2, 13, 30, tzinfo=timezone.utc), date(2024, 5, 2)),
    ("Australia/Sydney", datetime(2024, 5, 1, 22, 30, tzinfo=timezone.utc), date(2024, 5, 2)),  # 08:30 AEST
])
def test_digest_day(zone, now, expected):
    assert digest_day(zone, time(8, 30), now) == expected


def test_digests_due_per_owner_and_none_without_digest_at(world):
    now = datetime(2024, 5, 1, 7, 0, tzinfo=timezone.utc)  # 09:00 Madrid and Berlin, 02:00 Chicago
    assert digests_due(world.sales, now) == {"ana": date(2024, 5, 1), "jonas": date(2024, 5, 1)}
    no_digest = world.sales.model_copy(update={"handoff": world.sales.handoff.model_copy(update={"digest_at": None})})
    assert digests_due(no_digest, now) == {}


@pytest.mark.parametrize(("waited", "overdue"), [
    (timedelta(0), False), (timedelta(hours=3, minutes=59, seconds=59), False), (timedelta(hours=4), True),
    (timedelta(days=3), True),
])
def test_sla_overdue(waited, overdue):
    assert sla_overdue(T0, timedelta(hours=4), T0 + waited) is overdue


def test_reminders_due_picks_the_sqls_past_the_sla():
    sqls = [OpenSql(1, 10, T0, "ana@acme.test"), OpenSql(2, 20, T0 + timedelta(hours=1), None),
            OpenSql(3, 30, T0 + timedelta(hours=3), "mike@acme.test")]
    now = T0 + timedelta(hours=5)
    assert [s.promotion_id for s in reminders_due(sqls, timedelta(hours=4), now)] == [10, 20]
    assert reminders_due(sqls, None, now) == []


# -- the digest and the SLA reminder jobs ---------------------------------------------------------------------------


def jobs(engine, world: World, *, webhook: bool = True) -> HandoffJobs:
    return HandoffJobs(engine, sales=world.sales, scoring=world.rules, handoff=Handoff(LINKS, webhook=webhook),
                       campaign_names={"mql-nurture": "MQL nurture"})


def queued_since(engine, first_id: int) -> list[Any]:
    return [row for row in outbox(engine) if row.id > first_id]


def test_the_daily_digest_goes_once_per_owner_and_local_day_with_their_open_sqls(engine, world):
    for email, country in (("a1@example.com", "DE"), ("a2@example.com", "DE"), ("a3@example.com", "DE"),
                           ("m1@example.com", "US")):
        save(engine, world, {"email": email, "country": country, "first_name": email[:2].upper()})
        record(engine, world, EventIn(email, "demo_request"))  # ana, jonas, ana; mike (fallback)
    with transaction(engine) as conn:  # a3 was accepted since: no longer waiting
        conn.execute(update(L).where(L.c.email == "a3@example.com").values(stage="opportunity"))
    last = outbox(engine)[-1].id
    handoff = jobs(engine, world)

    early = datetime(2024, 5, 2, 6, 29, tzinfo=timezone.utc)  # 08:29 in Madrid and Berlin, 01:29 in Chicago
    assert handoff.send_digests(early) == 0
    morning = datetime(2024, 5, 2, 6, 30, tzinfo=timezone.utc)
    assert handoff.send_digests(morning) == 2
    assert handoff.send_digests(morning + timedelta(minutes=1)) == 0
    assert handoff.send_digests(datetime(2024, 5, 2, 12, 0, tzinfo=timezone.utc)) == 0  # 07:00 in Chicago
    rows = queued_since(engine, last)
    assert [(r.kind, r.dedup_key, r.payload["to"]) for r in rows] == [
        ("owner_email", "owner.digest:ana:2024-05-02", "ana@acme.test"),
        ("owner_email", "owner.digest:jonas:2024-05-02", "jonas@acme.test"),
    ]
    ana = rows[0].payload
    assert ana["subject"] == "Your open SQLs: 1 waiting (Thu 2 May)"
    assert "A1" in ana["text"] and "A3" not in ana["text"]
    a1 = lead_row(engine, "a1@example.com")
    promotion_id = promotions(engine, "a1@example.com")[0].id
    assert LINKS.accept(a1.id, promotion_id) in ana["text"] and LINKS.reject(a1.id, promotion_id) in ana["html"]

    # Chicago's morning comes later; the next day's digests are new ones.
    assert handoff.send_digests(datetime(2024, 5, 2, 13, 30, tzinfo=timezone.utc)) == 1
    assert handoff.send_digests(datetime(2024, 5, 3, 6, 30, tzinfo=timezone.utc)) == 2
    assert [r.dedup_key for r in queued_since(engine, last)][2:] == [
        "owner.digest:mike:2024-05-02", "owner.digest:ana:2024-05-03", "owner.digest:jonas:2024-05-03"]


def test_an_sql_past_its_sla_gets_one_webhook_and_one_reminder(engine, world):
    save(engine, world, {"email": "slow@example.com", "country": "FR", "first_name": "Sam"})
    record(engine, world, EventIn("slow@example.com", "demo_request"))
    record(engine, world, EventIn("fresh@example.com", "demo_request"), now=T0 + timedelta(hours=3))
    record(engine, world, EventIn("done@example.com", "demo_request"))
    with transaction(engine) as conn:
        conn.execute(update(L).where(L.c.email == "done@example.com").values(stage="recycled"))
    last = outbox(engine)[-1].id
    handoff = jobs(engine, world)

    assert handoff.send_reminders(T0 + timedelta(hours=3, minutes=59)) == 0
    assert handoff.send_reminders(T0 + timedelta(hours=4, minutes=1)) == 1
    assert handoff.send_reminders(T0 + timedelta(hours=5)) == 0
    webhook, email = queued_since(engine, last)
    promotion_id = promotions(engine, "slow@example.com")[0].id
    assert (webhook.kind, webhook.dedup_key) == ("sales_webhook", f"lead.sla_overdue:{promotion_id}")
    assert webhook.payload["type"] == "lead.sla_overdue"
    assert (webhook.payload["waited_seconds"], webhook.payload["sla_seconds"]) == (4 * 3600 + 60, 4 * 3600)
    assert webhook.payload["lead"]["email"] == "slow@example.com" and webhook.payload["brief"]["promotion_id"] == (
        promotion_id)
    assert (email.kind, email.dedup_key, email.payload["to"]) == (
        "owner_email", f"lead.sla_overdue:{promotion_id}:email", "ana@acme.test")
    assert email.payload["subject"] == "Waiting 4h 1m: Sam"

    assert handoff.send_reminders(T0 + timedelta(hours=7, minutes=1)) == 1  # fresh@ now
    assert len(queued_since(engine, last)) == 4


def test_without_a_webhook_url_the_reminder_is_the_email_alone(engine, world):
    record(engine, world, EventIn("slow@example.com", "demo_request"))
    last = outbox(engine)[-1].id
    handoff = jobs(engine, world, webhook=False)
    assert handoff.send_reminders(T0 + timedelta(hours=5)) == 1
    assert handoff.send_reminders(T0 + timedelta(hours=6)) == 0
    assert [r.kind for r in queued_since(engine, last)] == ["owner_email"]


# -- notify (pure) --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("duration", "text"), [
    (timedelta(minutes=7, seconds=59), "7m"), (timedelta(hours=4), "4h 0m"), (timedelta(hours=4, minutes=12), "4h 12m"),
    (timedelta(days=2, hours=3, minutes=5), "2d 3h"), (timedelta(seconds=-5), "0m"),
])
def test_waited(duration, text):
    assert notify.waited(duration) == text


def test_local_time_in_the_owner_timezone():
    assert notify.local_time("2026-03-09T09:00:00+00:00", "Europe/Madrid") == "Mon 9 Mar 2026, 10:00 CET"
    assert notify.local_time(datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc), None) == "Wed 1 Jul 2026, 12:00 UTC"
    assert notify.local_time(None, "Europe/Madrid") == ""


@pytest.mark.parametrize(("event", "size", "title", "hand_raise"), [
    (Engagement("demo_request", T0), 5, None, True),
    (Engagement("free_trial_signup", T0), 5, None, False),
    (Engagement("free_trial_signup", T0), 50, None, True),
    (Engagement("contact_sales", T0, properties={"topic": "support"}), 50, None, False),
    (Engagement("page_view", T0), 5000, None, False),  # score-and-fit is not a hand-raise
    (Engagement("demo_request", T0), 5, "Student", True),  # disqualification is decided elsewhere
])
def test_is_hand_raise(world, event, size, title, hand_raise):
    attributes = {"company_size": size, **({"title": title} if title else {})}
    view = LeadView(key="1", email="a@example.com", stage="sql", score=500, attributes=attributes)
    assert is_hand_raise(world.sales, view, event) is hand_raise


def test_open_sqls_are_the_leads_at_sql_each_with_its_latest_promotion_longest_waiting_first(engine) -> None:
    from nurture.storage.promotions import open_sqls
    from nurture.storage.tables import SC

    def lead(email: str, stage: str, owner: str | None = None) -> int:
        with transaction(engine) as conn:
            return int(conn.execute(L.insert().values(email=email, stage=stage, owner=owner, created_at=T0,
                                                      updated_at=T0, stage_changed_at=T0)).inserted_primary_key[0])

    def move(lead_id: int, to_stage: str, hours: int) -> int:
        with transaction(engine) as conn:
            return int(conn.execute(SC.insert().values(lead_id=lead_id, to_stage=to_stage, actor="rule",
                                                       at=T0 + timedelta(hours=hours))).inserted_primary_key[0])

    again = lead("again@example.com", "sql", "ana")  # promoted, recycled, promoted again: the latest promotion counts
    move(again, "sql", 1)
    move(again, "recycled", 2)
    latest = move(again, "sql", 5)
    early = lead("early@example.com", "sql")
    first = move(early, "sql", 3)
    moved_on = lead("won@example.com", "opportunity")  # promoted once, no longer waiting
    move(moved_on, "sql", 0)
    lead("unpromoted@example.com", "sql")  # at sql without a recorded promotion: not a promotion to answer
    lead("plain@example.com", "lead")
    with transaction(engine, read_only=True) as conn:
        found = open_sqls(conn)
    assert found == [OpenSql(early, first, T0 + timedelta(hours=3), None),
                     OpenSql(again, latest, T0 + timedelta(hours=5), "ana")]
