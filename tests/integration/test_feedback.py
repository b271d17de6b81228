"""Sales' verdict on an SQL (application.sales_feedback) and the recycle gate of enrollment, on SQLite files and PostgreSQL.

The world: an SQL seeded as the promotion code leaves one (a lead at stage ``sql`` with its history lead -> mql -> sql
and scored events), scoring with a half-life and fit rules, reject reasons of every kind, and campaigns that a
decision ends or starts (``feedback_world``, which ``test_feedback_http`` uses too).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from db_fixtures import engine, migrated_url, postgres_available, postgres_template  # noqa: F401
from feedback_world import (
    FILES,
    PROMOTION_REASON,
    World,
    outbox_rows,
    promote,
    seed_sql,
    snapshot,
    write_world,
)
from intake_world import T0, enrollments_of, events_of, lead_row, stage_history
from sqlalchemy import update
from sqlalchemy.engine import Engine

from nurture.application.enroll import enroll_leads
from nurture.application.event_input import EventIn
from nurture.application.record_events import record_events
from nurture.application.rescore import rescore_all, score_breakdown
from nurture.application.sales_feedback import (
    SALES_FEEDBACK,
    AlreadyDecided,
    FeedbackResult,
    NotAwaitingDecision,
    apply_feedback,
    promotion_status,
)
from nurture.core.enrollment import waiting_to_recycle
from nurture.definitions.loader import load_catalog
from nurture.definitions.sales import SalesRules
from nurture.definitions.scoring import load_scoring
from nurture.errors import InvalidInput, LeadNotFound
from nurture.storage.database import transaction
from nurture.storage.models import Lead


@pytest.fixture
def world(tmp_path: Path) -> World:
    return write_world(tmp_path / "campaigns")


def rescored(engine: Engine, world: World, email: str, now: datetime = T0) -> float:
    """The lead's score recomputed from its stored events (what the stored score must be)."""
    return score_breakdown(engine, world.scoring, email, now).total


def decide(engine: Engine, world: World, email: str | None = "ada@example.com", verdict: str = "accept",
           reason: str | None = None, note: str | None = None, now: datetime = T0, **target: Any) -> FeedbackResult:
    if target:
        email = None
    return apply_feedback(engine, world.catalog, world.scoring, world.sales, email=email, verdict=verdict,
                          reason=reason, note=note, actor="api", now=now, **target)


def feedback_events(engine: Engine, email: str) -> list[Any]:
    return [e for e in events_of(engine, email) if e.type == SALES_FEEDBACK]


# --- accept ------------------------------------------------------------------------------------------------------


def test_accept_makes_an_opportunity_with_history_event_outbox_row_and_enrollment(engine, world):
    lead_id, promotion_id = seed_sql(engine, "ada@example.com")
    score_before = rescored(engine, world, "ada@example.com")

    result = decide(engine, world, note="  Great call, budget approved  ")

    assert (result.verdict, result.from_stage, result.stage, result.already) == ("accept", "sql", "opportunity", False)
    assert (result.lead_id, result.promotion_id, result.note) == (lead_id, promotion_id, "Great call, budget approved")
    assert result.score == result.score_before == score_before and result.score_adjustment == 0
    lead = lead_row(engine, "ada@example.com")
    assert (lead.stage, lead.stage_changed_at, lead.score) == ("opportunity", T0, score_before)
    assert dict(lead.fields) == {"budget_confirmed": True}
    last = stage_history(engine, "ada@example.com")[-1]
    assert (last.from_stage, last.to_stage, last.actor, last.at) == ("sql", "opportunity", "sales", T0)
    assert last.reason == "accepted by sales: Great call, budget approved" and last.id == result.stage_change_id
    [event] = feedback_events(engine, "ada@example.com")
    assert event.points == 0 and event.occurred_at == T0
    assert event.properties["verdict"] == "accept" and event.properties["promotion_id"] == promotion_id
    [row] = outbox_rows(engine)
    assert (row.kind, row.dedup_key, row.status, row.next_attempt_at) == (
        "sales_webhook", f"sales-feedback:{promotion_id}", "pending", T0)
    assert row.payload["type"] == "lead.accepted"
    assert row.payload["lead"]["email"] == "ada@example.com" and row.payload["lead"]["stage"] == "opportunity"
    assert row.payload["decision"]["note"] == "Great call, budget approved"
    assert row.payload["decision"]["promotion_id"] == promotion_id and row.payload["decision"]["via"] == "api"
    enrollments = {e.campaign_id: e for e in enrollments_of(engine, "ada@example.com")}
    followup = enrollments["sql-followup"]
    assert (followup.status, followup.end_reason) == ("exited", "stage:opportunity")
    assert enrollments["opportunity-onboarding"].status == "active" and result.enrolled == 1


# --- reject, reason by reason --------------------------------------------------------------------------------------

# (code, stage, points, fields after (starting from budget_confirmed, purchase_timeline, decision_maker), recycle delay)
REJECTIONS = [
    ("no_budget", "recycled", -30.0, {"budget_confirmed": False, "purchase_timeline": "this_quarter",
                                      "decision_maker": True}, timedelta(0)),
    ("bad_timing", "recycled", -10.0, {"budget_confirmed": True, "decision_maker": True}, timedelta(days=90)),
    ("wrong_person", "recycled", -20.0, {"budget_confirmed": True, "purchase_timeline": "this_quarter",
                                         "decision_maker": False}, None),
    ("not_a_fit", "disqualified", 0.0, {"budget_confirmed": True, "purchase_timeline": "this_quarter",
                                        "decision_maker": True}, None),
]


@pytest.mark.parametrize(("code", "stage", "points", "fields", "delay"), REJECTIONS, ids=[r[0] for r in REJECTIONS])
def test_each_reject_reason_sets_stage_fields_score_and_history(engine, world, code, stage, points, fields, delay):
    start = {"budget_confirmed": True, "purchase_timeline": "this_quarter", "decision_maker": True}
    _lead_id, promotion_id = seed_sql(engine, "ada@example.com", fields=start, owner="ana")
    before = rescored(engine, world, "ada@example.com")

    result = decide(engine, world, verdict="reject", reason=code, note="Spoke to them Tuesday")

    lead = lead_row(engine, "ada@example.com")
    assert lead.stage == result.stage == stage
    expected_fields = {**fields, "rejection_reason": code}
    if delay is not None:
        expected_fields["recycle_at"] = (T0 + delay).isoformat()
    assert dict(lead.fields) == expected_fields
    assert result.recycle_at == (T0 + delay if delay is not None else None)
    assert lead.owner == (None if code == "wrong_person" else "ana")  # a reason may clear a column too
    label = world.sales.feedback.reject_reasons[code].label
    last = stage_history(engine, "ada@example.com")[-1]
    assert (last.from_stage, last.to_stage, last.actor) == ("sql", stage, "sales")
    assert last.reason == f"rejected by sales: {code} ({label}); note: Spoke to them Tuesday"
    [event] = feedback_events(engine, "ada@example.com")
    assert event.points == result.score_adjustment == points
    assert (event.properties["reason"], event.properties["label"]) == (code, label)
    # The stored score is the recomputed one: the adjustment, and fit lost with budget_confirmed: false.
    fit_lost = 15 if code == "no_budget" else 0
    assert result.score == lead.score == rescored(engine, world, "ada@example.com") == pytest.approx(
        before + points - fit_lost)
    [row] = outbox_rows(engine)
    assert row.dedup_key == f"sales-feedback:{promotion_id}" and row.payload["type"] == "lead.rejected"
    assert row.payload["decision"]["reason"] == code and row.payload["decision"]["stage"] == stage
    assert row.payload["lead"]["score"] == result.score
    [followup] = [e for e in enrollments_of(engine, "ada@example.com") if e.campaign_id == "sql-followup"]
    assert (followup.status, followup.end_reason) == ("exited", f"stage:{stage}")


def test_the_adjustment_is_an_item_of_the_breakdown_and_survives_rescoring(engine, world):
    seed_sql(engine, "ada@example.com")
    decide(engine, world, verdict="reject", reason="bad_timing")

    breakdown = score_breakdown(engine, world.scoring, "ada@example.com", T0)
    [item] = [i for i in breakdown.items if i.label == SALES_FEEDBACK]
    assert (item.source, item.points, item.raw, item.at, item.count) == ("behaviour", -10, -10, T0, 1)
    later = T0 + timedelta(days=30)  # one half-life: every behaviour item halves, the adjustment too
    assert rescore_all(engine, world.scoring, later) == 1
    assert lead_row(engine, "ada@example.com").score == rescored(engine, world, "ada@example.com", later)
    [item] = [i for i in score_breakdown(engine, world.scoring, "ada@example.com", later).items
              if i.label == SALES_FEEDBACK]
    assert item.points == -5


def test_reset_behaviour_cancels_every_behaviour_point_for_good_and_keeps_fit(engine, world):
    seed_sql(engine, "ada@example.com")
    before = score_breakdown(engine, world.scoring, "ada@example.com", T0)
    assert before.behaviour > 35 and before.fit == 25

    result = decide(engine, world, verdict="reject", reason="no_response")

    assert result.score_adjustment == pytest.approx(-before.behaviour, abs=0.01)
    assert result.stage == "recycled" and result.recycle_at == T0 + timedelta(days=30)
    for days in (0, 10, 45):  # the negative event decays exactly as fast as the points it cancels
        later = score_breakdown(engine, world.scoring, "ada@example.com", T0 + timedelta(days=days))
        assert later.behaviour == pytest.approx(0, abs=0.01) and later.fit == 25
    assert lead_row(engine, "ada@example.com").score == pytest.approx(25, abs=0.01)


def test_events_after_a_decision_score_against_the_history_the_decision_changed(engine, world):
    """A decision adds a scored event outside the intake: the lead's score state (what intake folds in instead of
    reading the history) is cleared, and the next event scores against the whole history, adjustment included."""
    seed_sql(engine, "ada@example.com")
    record_events(engine, world.catalog, world.scoring, [EventIn("ada@example.com", "pricing_page_view")], now=T0,
                  actor="api")
    assert lead_row(engine, "ada@example.com").score_state is not None

    result = decide(engine, world, verdict="reject", reason="no_response", now=T0 + timedelta(minutes=1))
    assert result.score_adjustment < -40 and lead_row(engine, "ada@example.com").score_state is None

    later = T0 + timedelta(hours=2)
    [recorded] = record_events(engine, world.catalog, world.scoring, [EventIn("ada@example.com", "content_download")],
                               now=later, actor="api")
    assert recorded.score == pytest.approx(rescored(engine, world, "ada@example.com", later), abs=0.01)
    assert recorded.score == pytest.approx(25 + 10, abs=0.01)  # fit, and the one event after the reset
    assert lead_row(engine, "ada@example.com").score_state is not None


def test_a_reason_whose_field_is_invalid_writes_nothing(engine, world):
    seed_sql(engine, "ada@example.com")
    before = snapshot(engine)

    with pytest.raises(InvalidInput, match=r"sales.yaml sets country to 'Germany'"):
        decide(engine, world, verdict="reject", reason="broken")

    assert snapshot(engine) == before


# --- the recycle gate --------------------------------------------------------------------------------------------


def test_no_budget_enters_its_recycle_campaign_at_once(engine, world):
    seed_sql(engine, "ada@example.com")

    result = decide(engine, world, verdict="reject", reason="no_budget")

    assert result.enrolled == 1
    active = [e for e in enrollments_of(engine, "ada@example.com") if e.status == "active"]
    assert [(e.campaign_id, e.next_due_at) for e in active] == [("recycle-no-budget", T0)]


def test_a_recycle_delay_holds_the_lead_until_the_sweep_finds_it_due(engine, world):
    seed_sql(engine, "ada@example.com")
    result = decide(engine, world, verdict="reject", reason="bad_timing")
    assert result.enrolled == 0
    assert lead_row(engine, "ada@example.com").fields["recycle_at"] == "2024-07-30T12:00:00+00:00"

    almost = T0 + timedelta(days=90, seconds=-1)
    lead_id = lead_row(engine, "ada@example.com").id
    assert enroll_leads(engine, world.catalog, almost, lead_ids=[lead_id]) == 0  # intake and the CLI
    assert enroll_leads(engine, world.catalog, almost) == 0  # the periodic sweep
    assert not [e for e in enrollments_of(engine, "ada@example.com") if e.status == "active"]

    assert enroll_leads(engine, world.catalog, T0 + timedelta(days=90)) == 1
    [active] = [e for e in enrollments_of(engine, "ada@example.com") if e.status == "active"]
    assert (active.campaign_id, active.enrolled_at) == ("recycle-timing", T0 + timedelta(days=90))


def test_given_leads_enter_once_the_time_has_come(engine, world):
    seed_sql(engine, "ada@example.com")
    decide(engine, world, verdict="reject", reason="bad_timing")
    lead_id = lead_row(engine, "ada@example.com").id

    assert enroll_leads(engine, world.catalog, T0 + timedelta(days=90), lead_ids=[lead_id]) == 1


def test_the_gate_only_holds_recycled_leads(engine, world):
    """A gate left from an earlier rejection does not keep a lead that moved on out of its stage's campaigns."""
    L = Lead.__table__
    with transaction(engine) as conn:
        conn.execute(L.insert().values(email="back@example.com", tags=[], stage="mql", score=0.0, created_at=T0,
                                       updated_at=T0, stage_changed_at=T0,
                                       fields={"recycle_at": (T0 + timedelta(days=60)).isoformat()}))
    assert enroll_leads(engine, world.catalog, T0) == 1
    assert [e.campaign_id for e in enrollments_of(engine, "back@example.com")] == ["mql-nurture"]


@pytest.mark.parametrize(
    ("stage", "recycle_at", "waiting"),
    [("recycled", "2024-05-01T12:00:01+00:00", True), ("recycled", "2024-05-01T12:00:00+00:00", False),
     ("recycled", "2024-05-01T14:00:00+02:00", False), ("recycled", "2024-05-01T12:30:00", True),
     ("recycled", "next tuesday", False), ("recycled", None, False), ("recycled", 1234, False),
     ("mql", "2024-06-01T00:00:00+00:00", False)],
)
def test_waiting_to_recycle(stage, recycle_at, waiting):
    @dataclass
    class Row:
        stage: str
        fields: dict[str, Any]

    fields = {} if recycle_at is None else {"recycle_at": recycle_at}
    assert waiting_to_recycle(Row(stage, fields), T0) is waiting


# --- idempotency and conflicts -----------------------------------------------------------------------------------


def test_a_repeated_accept_returns_the_first_result_and_changes_nothing(engine, world):
    seed_sql(engine, "ada@example.com")
    first = decide(engine, world, note="first")
    before = snapshot(engine)

    again = decide(engine, world, note="a retry", now=T0 + timedelta(minutes=5))

    assert again.already and not first.already
    assert {**again.to_json(), "already": False, "enrolled": first.enrolled} == first.to_json()
    assert again.note == "first" and again.decided_at == T0
    assert snapshot(engine) == before


def test_a_repeated_reject_with_the_same_reason_is_already_done(engine, world):
    seed_sql(engine, "ada@example.com")
    first = decide(engine, world, verdict="reject", reason="no_budget")
    before = snapshot(engine)

    again = decide(engine, world, verdict="reject", reason="no_budget", now=T0 + timedelta(hours=1))

    assert again.already
    assert (again.stage, again.score, again.recycle_at) == (first.stage, first.score, first.recycle_at)
    assert snapshot(engine) == before


@pytest.mark.parametrize(("first", "then"), [
    (("accept", None), ("reject", "no_budget")),
    (("reject", "no_budget"), ("accept", None)),
    (("reject", "no_budget"), ("reject", "bad_timing")),
])
def test_a_different_decision_on_a_decided_promotion_is_refused(engine, world, first, then):
    seed_sql(engine, "ada@example.com")
    decide(engine, world, verdict=first[0], reason=first[1])
    before = snapshot(engine)

    with pytest.raises(AlreadyDecided, match=r"decided already: ada@example.com was (accepted|rejected)"):
        decide(engine, world, verdict=then[0], reason=then[1])
    assert snapshot(engine) == before


def test_only_an_sql_waits_for_a_decision(engine, world):
    L = Lead.__table__
    with transaction(engine) as conn:
        conn.execute(L.insert().values(email="mql@example.com", tags=[], fields={}, stage="mql", score=0.0,
                                       created_at=T0, updated_at=T0, stage_changed_at=T0))
    seed_sql(engine, "moved@example.com")
    with transaction(engine) as conn:  # someone moved it on by hand, without a verdict
        conn.execute(update(L).where(L.c.email == "moved@example.com").values(stage="customer"))
    before = snapshot(engine)

    with pytest.raises(NotAwaitingDecision, match=r"mql@example.com is not an SQL \(stage mql\)"):
        decide(engine, world, "mql@example.com")
    with pytest.raises(NotAwaitingDecision, match="no longer waiting for a decision: it is at stage customer"):
        decide(engine, world, "moved@example.com", "reject", "no_budget")
    with pytest.raises(LeadNotFound, match=r"nobody@example.com"):
        decide(engine, world, " Nobody@Example.com ")
    with pytest.raises(LeadNotFound, match="id 999999"):
        decide(engine, world, lead_id=999999, promotion_id=1)
    assert snapshot(engine) == before


@pytest.mark.parametrize(("verdict", "reason", "note", "message"), [
    ("reject", "no_money", None, "unknown reject reason 'no_money': use one of no_budget, bad_timing, wrong_person, "
                                 "no_response, not_a_fit, broken"),
    ("reject", None, None, "a rejection needs a reason: use one of no_budget, bad_timing"),
    ("reject", "  ", None, "a rejection needs a reason"),
    ("accept", "no_budget", None, "accept takes no reason"),
    ("maybe", None, None, "unknown verdict 'maybe': use accept or reject"),
    ("accept", None, "x" * 2001, "the note is 2001 characters long: at most 2000"),
])
def test_bad_input_is_refused_before_anything_is_written(engine, world, verdict, reason, note, message):
    seed_sql(engine, "ada@example.com")
    before = snapshot(engine)

    with pytest.raises(InvalidInput) as caught:
        decide(engine, world, verdict=verdict, reason=reason, note=note)
    assert message in str(caught.value)
    assert not isinstance(caught.value, (NotAwaitingDecision, AlreadyDecided))
    assert snapshot(engine) == before


# --- promotions named by signed links -----------------------------------------------------------------------------


def test_a_link_decides_only_the_latest_promotion_of_its_lead(engine, world):
    lead_id, old_promotion = seed_sql(engine, "ada@example.com")
    other_lead, other_promotion = seed_sql(engine, "bob@example.com")
    L = Lead.__table__
    with transaction(engine) as conn:  # back to mql, and promoted again an hour later
        conn.execute(update(L).where(L.c.id == lead_id).values(stage="mql"))
        new_promotion = promote(conn, lead_id, T0 + timedelta(hours=1))
    before = snapshot(engine)

    with pytest.raises(NotAwaitingDecision, match="it was promoted again since this link was sent"):
        decide(engine, world, lead_id=lead_id, promotion_id=old_promotion)
    with pytest.raises(NotAwaitingDecision):
        decide(engine, world, lead_id=lead_id, promotion_id=other_promotion)
    assert snapshot(engine) == before

    result = decide(engine, world, lead_id=lead_id, promotion_id=new_promotion, verdict="reject", reason="no_budget")
    assert (result.promotion_id, result.stage) == (new_promotion, "recycled")
    assert decide(engine, world, lead_id=lead_id, promotion_id=new_promotion, verdict="reject",
                  reason="no_budget").already
    assert lead_row(engine, "bob@example.com").stage == "sql"  # the other lead's promotion is untouched
    assert decide(engine, world, lead_id=other_lead, promotion_id=other_promotion).stage == "opportunity"


def test_promotion_status_tells_waiting_decided_and_superseded_apart(engine, world):
    lead_id, promotion_id = seed_sql(engine, "ada@example.com")
    status = promotion_status(engine, world.scoring, lead_id, promotion_id, T0)
    assert status is not None and status.waiting and status.decision is None and status.latest
    assert status.promotion.reason == PROMOTION_REASON and status.name == "Ada Lovelace"
    assert status.breakdown.total == rescored(engine, world, "ada@example.com")
    assert promotion_status(engine, world.scoring, lead_id, promotion_id + 1000, T0) is None
    assert promotion_status(engine, world.scoring, lead_id + 1000, promotion_id, T0) is None

    decide(engine, world, verdict="reject", reason="wrong_person")
    status = promotion_status(engine, world.scoring, lead_id, promotion_id, T0)
    assert status is not None and not status.waiting
    assert status.decision is not None
    assert status.decision.describe() == "rejected (wrong_person: Not the decision maker)"


def test_without_a_crm_webhook_nothing_is_queued_for_it(engine, world):
    seed_sql(engine, "ada@example.com")

    result = apply_feedback(engine, world.catalog, world.scoring, world.sales, email="ada@example.com",
                            verdict="accept", reason=None, note=None, actor="cli", now=T0, notify_crm=False)

    assert result.stage == "opportunity" and outbox_rows(engine) == []


# --- concurrency and defaults --------------------------------------------------------------------------------------


def test_concurrent_identical_decisions_are_written_once(engine, world):
    seed_sql(engine, "ada@example.com")
    start = threading.Barrier(4)

    def accept(_: int) -> FeedbackResult:
        start.wait(timeout=10)
        return decide(engine, world)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(accept, range(4)))

    assert sorted(r.already for r in results) == [False, True, True, True]
    assert len({r.stage_change_id for r in results}) == 1
    assert [c.to_stage for c in stage_history(engine, "ada@example.com")].count("opportunity") == 1
    assert len(feedback_events(engine, "ada@example.com")) == 1 and len(outbox_rows(engine)) == 1


def test_without_a_sales_file_the_default_reasons_apply(engine, tmp_path):
    folder = tmp_path / "bare"
    folder.mkdir()
    (folder / "mql.yaml").write_text(FILES["mql-nurture.yaml"], encoding="utf-8")
    catalog = load_catalog(folder).raise_for_problems()
    scoring, _ = load_scoring(folder)
    seed_sql(engine, "ada@example.com")

    result = apply_feedback(engine, catalog, scoring, SalesRules(), email="ada@example.com", verdict="reject",
                            reason="competitor", note=None, actor="cli", now=T0)

    assert (result.stage, result.score_adjustment, result.label) == ("disqualified", 0, "competitor")
    assert lead_row(engine, "ada@example.com").fields["rejection_reason"] == "competitor"
