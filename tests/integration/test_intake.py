"""Recording engagement (application.record_events) against real databases: SQLite files and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
import typer
from db_fixtures import engine, migrated_url, postgres_available, postgres_template  # noqa: F401
from intake_world import (
    T0,
    add_delivery,
    count_rows,
    enrollments_of,
    events_of,
    lead_row,
    load_world,
    stage_history,
    write_campaigns,
)
from sqlalchemy import update
from typer.testing import CliRunner

from nurture.application.event_input import DUPLICATE, RECORDED, EventIn, InvalidEvents
from nurture.application.lead_input import upsert_lead
from nurture.application.record_events import record_events
from nurture.application.rescore import rescore_all, score_breakdown
from nurture.application.save_lead import save_lead
from nurture.errors import InvalidInput, LeadNotFound
from nurture.storage.database import session, transaction
from nurture.storage.models import EngagementEvent, Enrollment, Lead


@pytest.fixture
def world(tmp_path: Path):
    return load_world(write_campaigns(tmp_path / "campaigns"))


def record(engine, world, *events: EventIn, now=T0, actor="api"):
    catalog, rules = world
    return record_events(engine, catalog, rules, list(events), now=now, actor=actor)


def test_unknown_email_creates_the_lead_at_stage_lead_with_the_actor_in_its_history(engine, world):
    [result] = record(engine, world, EventIn(" New@Example.COM ", "page_view"), actor="cli")

    assert (result.status, result.email, result.points, result.stage) == (RECORDED, "new@example.com", 1, "lead")
    lead = lead_row(engine, "new@example.com")
    assert lead.stage == "lead" and lead.score == 1
    [change] = stage_history(engine, "new@example.com")
    assert (change.from_stage, change.to_stage, change.actor) == (None, "lead", "cli")
    assert "page_view" in change.reason


def test_a_repeated_id_is_a_duplicate_and_changes_nothing(engine, world):
    [first] = record(engine, world, EventIn("a@example.com", "content_download", id="evt-1"))
    [again] = record(engine, world, EventIn("a@example.com", "content_download", id="evt-1"), now=T0 + timedelta(minutes=1))

    assert first.status == RECORDED and again.status == DUPLICATE
    assert again.score == first.score == 10
    assert len(events_of(engine, "a@example.com")) == 1
    assert lead_row(engine, "a@example.com").score == 10


def test_the_same_id_twice_in_one_batch_is_recorded_once(engine, world):
    results = record(engine, world, EventIn("a@example.com", "content_download", id="x"),
                     EventIn("a@example.com", "content_download", id="x"))

    assert [r.status for r in results] == [RECORDED, DUPLICATE]
    assert len(events_of(engine)) == 1


def test_a_duplicate_id_caught_by_the_unique_constraint_is_reported_not_raised(engine, world, monkeypatch):
    # As if another process recorded the id between our lookup and our insert: the row appears right after the
    # batch looked the ids up, inside the same transaction, so only the unique constraint can catch it.
    catalog, rules = world
    from nurture.application import record_events as intake

    original = intake.EventBatch.prepare

    def prepare_then_race(self, events):
        known = original(self, events)
        lead = self.leads["a@example.com"]
        self.conn.execute(EngagementEvent.__table__.insert().values(
            lead_id=lead.id, type="page_view", occurred_at=T0, recorded_at=T0, external_id="raced", properties={},
            points=0.0))
        return known

    monkeypatch.setattr(intake.EventBatch, "prepare", prepare_then_race)
    [result] = record_events(engine, catalog, rules, [EventIn("a@example.com", "webinar_attended", id="raced")],
                             now=T0, actor="api")
    assert result.status == DUPLICATE
    assert lead_row(engine, "a@example.com").score == 0
    assert [e.type for e in events_of(engine)] == ["page_view"]


def test_concurrent_batches_for_one_new_lead_create_it_once_and_lose_no_update(engine, world):
    catalog, rules = world
    start = threading.Barrier(4)

    def post(i: int):
        start.wait()
        events = [EventIn("new@example.com", "page_view", id=f"view-{i}", occurred_at=T0 + timedelta(minutes=i)),
                  EventIn("new@example.com", "content_download", id="shared")]
        return record_events(engine, catalog, rules, events, now=T0 + timedelta(minutes=5), actor="api")

    with ThreadPoolExecutor(4) as pool:
        results = [r for batch in pool.map(post, range(4)) for r in batch]

    assert count_rows(engine, Lead) == 1
    assert len(stage_history(engine, "new@example.com")) == 1
    shared = [r.status for r in results if r.id == "shared"]
    assert shared.count(RECORDED) == 1 and shared.count(DUPLICATE) == 3
    views = [e for e in events_of(engine) if e.type == "page_view"]
    assert len(views) == 4 and sorted(e.points for e in views) == [0, 0, 1, 1]  # the daily cap held across batches
    expected = score_breakdown(engine, rules, "new@example.com", T0 + timedelta(minutes=5)).total
    assert lead_row(engine, "new@example.com").score == pytest.approx(expected)


def test_one_bad_event_rejects_the_whole_batch_and_names_it(engine, world):
    with pytest.raises(InvalidEvents) as caught:
        record(engine, world, EventIn("a@example.com", "page_view"), EventIn("b@example.com", "page_view"),
               EventIn("not-an-email", "page_view"))

    assert caught.value.problems[0][0] == 2
    assert "events[2]" in str(caught.value) and "invalid email" in str(caught.value)
    assert count_rows(engine, Lead) == 0 and count_rows(engine, EngagementEvent) == 0


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (EventIn("", "page_view"), "email is required"),
        (EventIn("a@example.com", "Page View"), "invalid type"),
        (EventIn("a@example.com", "9lives"), "invalid type"),
        (EventIn("a@example.com", "x" * 65), "invalid type"),
        (EventIn("a@example.com", "page_view", occurred_at=T0.replace(tzinfo=None)), "time zone"),
        (EventIn("a@example.com", "page_view", occurred_at=T0 + timedelta(days=1, seconds=1)), "future"),
        (EventIn("a@example.com", "page_view", id="x" * 201), "id must be"),
        (EventIn("a@example.com", "page_view", id=""), "id must be"),
        (EventIn("a@example.com", "page_view", properties={"blob": "x" * 20_000}), "larger than"),
        (EventIn("a@example.com", "page_view", properties={"when": T0}), "JSON values"),
        (EventIn("a@example.com", "page_view", properties={"n": float("nan")}), "JSON values"),
        (EventIn("a@example.com", "page_view", properties=["url"]), "object"),  # type: ignore[arg-type]
    ],
)
def test_invalid_events_are_refused_with_a_clear_message(engine, world, event, message):
    with pytest.raises(InvalidInput, match=message):
        record(engine, world, event)
    assert count_rows(engine, Lead) == 0


def test_a_batch_over_the_limit_is_refused(engine, world):
    with pytest.raises(InvalidInput, match="at most 1000"):
        record(engine, world, *[EventIn("a@example.com", "page_view")] * 1001)
    assert count_rows(engine, EngagementEvent) == 0


def test_an_event_up_to_a_day_ahead_is_accepted(engine, world):
    [result] = record(engine, world, EventIn("a@example.com", "page_view", occurred_at=T0 + timedelta(hours=23)))
    assert result.status == RECORDED


def test_daily_caps_count_what_scored_that_utc_day(engine, world):
    views = [EventIn("a@example.com", "page_view", occurred_at=T0 + timedelta(minutes=i)) for i in range(3)]
    results = record(engine, world, *views)
    [next_day] = record(engine, world, EventIn("a@example.com", "page_view", occurred_at=T0 + timedelta(hours=13)),
                        now=T0 + timedelta(hours=13))

    assert [r.points for r in results] == [1, 1, 0]
    assert next_day.points == 1
    assert [e.points for e in events_of(engine)] == [1, 1, 0, 1]  # capped events are kept, with 0 points


def test_score_rises_and_the_breakdown_explains_it(engine, world):
    _catalog, rules = world
    record(engine, world, EventIn("a@example.com", "page_view"), EventIn("a@example.com", "content_download"))
    breakdown = score_breakdown(engine, rules, "A@example.com", T0)

    assert breakdown.total == 11 == lead_row(engine, "a@example.com").score
    assert {item.label: item.points for item in breakdown.items} == {"content_download": 10, "page_view": 1}
    with pytest.raises(LeadNotFound):
        score_breakdown(engine, rules, "nobody@example.com", T0)


def test_crossing_the_mql_threshold_promotes_and_enrolls(engine, world):
    results = record(engine, world, EventIn("a@example.com", "webinar_attended"),
                     EventIn("a@example.com", "content_download"))

    assert [(r.stage, r.stage_changed) for r in results] == [("lead", False), ("mql", True)]
    change = stage_history(engine, "a@example.com")[-1]
    assert (change.from_stage, change.to_stage, change.actor) == ("lead", "mql", "rule")
    assert "threshold" in change.reason
    [enrollment] = enrollments_of(engine, "a@example.com")
    assert (enrollment.campaign_id, enrollment.status, enrollment.next_due_at) == ("mql-nurture", "active", T0)


def test_below_the_threshold_nothing_is_enrolled(engine, world):
    record(engine, world, EventIn("a@example.com", "webinar_attended"))
    assert lead_row(engine, "a@example.com").stage == "lead"
    assert enrollments_of(engine, "a@example.com") == []


def test_an_event_matching_an_entry_filter_enrolls_a_lead_stage_lead(engine, world):
    record(engine, world, EventIn("a@example.com", "page_view"))
    assert enrollments_of(engine, "a@example.com") == []
    record(engine, world, EventIn("a@example.com", "pricing_page_view"), now=T0 + timedelta(minutes=5))
    assert [e.campaign_id for e in enrollments_of(engine, "a@example.com")] == ["visitors"]


def test_unsubscribe_suppresses_and_exits_every_campaign(engine, world):
    add_delivery(engine, "a@example.com", campaign_id="mql-nurture")
    add_delivery(engine, "a@example.com", campaign_id="visitors", step="followup")
    [result] = record(engine, world, EventIn("a@example.com", "unsubscribe"), now=T0 + timedelta(hours=1))

    assert result.points == -50
    assert lead_row(engine, "a@example.com").unsubscribed_at == T0 + timedelta(hours=1)
    assert {(e.status, e.end_reason) for e in enrollments_of(engine, "a@example.com")} == {("exited", "unsubscribed")}
    record(engine, world, EventIn("a@example.com", "pricing_page_view"), EventIn("a@example.com", "webinar_attended"),
           EventIn("a@example.com", "content_download"), now=T0 + timedelta(hours=2))
    assert all(e.status == "exited" for e in enrollments_of(engine, "a@example.com"))  # suppressed: never re-enrolled


@pytest.mark.parametrize(("event_type", "reason"), [("bounce", "bounced"), ("spam_complaint", "spam_complaint")])
def test_bounces_and_complaints_suppress_and_exit(engine, world, event_type, reason):
    add_delivery(engine, "a@example.com")
    record(engine, world, EventIn("a@example.com", event_type), now=T0 + timedelta(hours=1))

    lead = lead_row(engine, "a@example.com")
    assert lead.bounced_at == T0 + timedelta(hours=1) and lead.unsubscribed_at is None
    assert [(e.status, e.end_reason) for e in enrollments_of(engine, "a@example.com")] == [("exited", reason)]


def test_a_goal_event_exits_only_the_campaigns_that_list_it(engine, world):
    add_delivery(engine, "a@example.com", campaign_id="mql-nurture")
    add_delivery(engine, "a@example.com", campaign_id="visitors", step="followup")
    record(engine, world, EventIn("a@example.com", "demo_request"), now=T0 + timedelta(hours=1))

    by_campaign = {e.campaign_id: (e.status, e.end_reason) for e in enrollments_of(engine, "a@example.com")}
    assert by_campaign == {"mql-nurture": ("exited", "goal:demo_request"), "visitors": ("active", None)}


def test_a_goal_event_from_before_the_enrollment_does_not_end_it(engine, world):
    add_delivery(engine, "a@example.com", at=T0)
    record(engine, world, EventIn("a@example.com", "demo_request", occurred_at=T0 - timedelta(days=3)))
    assert [e.status for e in enrollments_of(engine, "a@example.com")] == ["active"]


def test_an_awaited_event_makes_the_waiting_enrollment_due_at_once(engine, world):
    add_delivery(engine, "a@example.com")
    with transaction(engine) as conn:
        conn.execute(update(Enrollment.__table__).values(
            step_id="await-click", waiting_for="email_click", next_due_at=T0 + timedelta(days=5)))
    clicked_at = T0 + timedelta(hours=3)
    record(engine, world, EventIn("a@example.com", "page_view"), now=clicked_at)
    assert enrollments_of(engine, "a@example.com")[0].next_due_at == T0 + timedelta(days=5)
    record(engine, world, EventIn("a@example.com", "email_click", occurred_at=clicked_at), now=clicked_at)
    assert enrollments_of(engine, "a@example.com")[0].next_due_at == clicked_at


def test_wake_ups_of_one_batch_apply_in_order_around_the_other_enrollment_updates(engine, world):
    add_delivery(engine, "a@example.com")
    add_delivery(engine, "b@example.com")
    with transaction(engine) as conn:
        conn.execute(update(Enrollment.__table__).values(
            step_id="await-click", waiting_for="email_click", next_due_at=T0 + timedelta(days=5)))
    first, second = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    record(engine, world, EventIn("a@example.com", "email_click", occurred_at=second),
           EventIn("b@example.com", "email_click", occurred_at=first),
           EventIn("a@example.com", "email_click", occurred_at=first),  # the later of a's two, in order, wins
           EventIn("b@example.com", "unsubscribe", occurred_at=second),  # ends b's enrollment after its wake-up
           EventIn("b@example.com", "email_click", occurred_at=second),  # and wakes nothing any more
           now=second)
    [a] = enrollments_of(engine, "a@example.com")
    [b] = enrollments_of(engine, "b@example.com")
    assert (a.status, a.next_due_at) == ("active", first)
    assert (b.status, b.end_reason, b.next_due_at) == ("exited", "unsubscribed", None)


def test_a_burst_of_the_same_tracking_event_is_recorded_once(engine, world):
    delivery_id = add_delivery(engine, "a@example.com")

    def click(at, url="https://example.com/a"):
        return EventIn("a@example.com", "email_click", occurred_at=at, properties={"url": url}, campaign_id="mql-nurture",
                       step_key="welcome", delivery_id=delivery_id, dedupe_within=timedelta(seconds=10))

    results = record(engine, world, click(T0), click(T0 + timedelta(seconds=5)),
                     click(T0 + timedelta(seconds=6), url="https://example.com/b"), click(T0 + timedelta(seconds=11)),
                     now=T0 + timedelta(seconds=11))
    assert [r.status for r in results] == [RECORDED, DUPLICATE, RECORDED, RECORDED]
    stored = events_of(engine)
    assert len(stored) == 3
    assert (stored[0].campaign_id, stored[0].step_key, stored[0].delivery_id) == ("mql-nurture", "welcome", delivery_id)


def test_rescore_all_applies_decay_in_chunks_and_is_repeatable(engine, world):
    _catalog, rules = world
    for index in range(5):
        record(engine, world, EventIn(f"lead{index}@example.com", "webinar_attended"))
    later = T0 + timedelta(days=30)

    assert rescore_all(engine, rules, later, chunk=2) == 5
    assert lead_row(engine, "lead3@example.com").score == pytest.approx(15)
    assert rescore_all(engine, rules, later, chunk=2) == 0
    assert score_breakdown(engine, rules, "lead3@example.com", later).total == pytest.approx(15)


def test_rescore_all_reads_a_history_only_for_leads_without_a_score_state(engine, world, monkeypatch):
    from nurture.storage import scores

    _catalog, rules = world
    with session(engine) as orm_session:
        upsert_lead(orm_session, {"email": "fit@example.com", "company_size": 500}, actor="cli", now=T0)
    for index, kind in enumerate(["webinar_attended", "content_download", "page_view"]):
        record(engine, world, EventIn(f"lead{index}@example.com", kind, occurred_at=T0 - timedelta(days=index)))
        record(engine, world, EventIn(f"lead{index}@example.com", "email_click"))
    with transaction(engine) as conn:  # a history written past intake, its state cleared as such a writer must
        conn.execute(update(Lead.__table__).where(Lead.__table__.c.email == "lead2@example.com").values(score_state=None))
    read = []
    original = scores.scored_events
    monkeypatch.setattr(scores, "scored_events", lambda conn, ids: read.extend(ids) or original(conn, ids))
    later = T0 + timedelta(days=45, hours=5)

    # the three leads with events decay; the lead stored by upsert_lead alone (score 0) gets its fit points
    assert rescore_all(engine, rules, later, chunk=3) == 4
    ids = {email: lead_row(engine, email).id for email in ("fit@example.com", "lead2@example.com")}
    assert sorted(read) == sorted(ids.values())  # the lead with no state yet and the one whose state was cleared
    monkeypatch.setattr(scores, "scored_events", original)
    for email in ["fit@example.com"] + [f"lead{index}@example.com" for index in range(3)]:
        assert lead_row(engine, email).score == pytest.approx(score_breakdown(engine, rules, email, later).total,
                                                              abs=1e-9)
    assert lead_row(engine, "fit@example.com").score == 10


def test_save_lead_reads_the_history_of_a_lead_without_a_state_and_stores_one(engine, world):
    catalog, rules = world
    record(engine, world, EventIn("a@example.com", "webinar_attended", occurred_at=T0 - timedelta(days=3)),
           EventIn("a@example.com", "page_view", occurred_at=T0 - timedelta(hours=1)))
    with transaction(engine) as conn:  # as a writer of events past the intake leaves it
        conn.execute(update(Lead.__table__).values(score_state=None))
    later = T0 + timedelta(days=2)
    saved = save_lead(engine, catalog, rules, {"email": "a@example.com", "company_size": 500}, now=later, actor="api")
    assert saved.score == pytest.approx(score_breakdown(engine, rules, "a@example.com", later).total, abs=0.011)
    assert saved.score > 10 + 15 * 0.9  # fit, and the decayed webinar: the history was read
    assert lead_row(engine, "a@example.com").score_state is not None
    new = save_lead(engine, catalog, rules, {"email": "new@example.com", "company_size": 500}, now=later, actor="api")
    assert new.created and new.score == 10 and lead_row(engine, "new@example.com").score_state is not None
    [result] = record(engine, world, EventIn("a@example.com", "email_click"), now=later + timedelta(hours=1))
    assert result.score == pytest.approx(
        score_breakdown(engine, rules, "a@example.com", later + timedelta(hours=1)).total, abs=0.011)


def test_save_lead_rescores_with_fit_and_enrolls_an_mql(engine, world):
    catalog, rules = world
    record(engine, world, EventIn("a@example.com", "webinar_attended"))
    saved = save_lead(engine, catalog, rules, {"email": "A@example.com", "company_size": 500, "first_name": "Ada"},
                      now=T0 + timedelta(minutes=1), actor="api")

    assert (saved.created, saved.score, saved.stage, saved.stage_changed) == (False, 40, "mql", True)
    assert saved.enrolled  # (a count on SQLite; psycopg reports -1 for the executemany insert)
    assert [e.campaign_id for e in enrollments_of(engine, "a@example.com")] == ["mql-nurture"]
    assert lead_row(engine, "a@example.com").first_name == "Ada"
    with pytest.raises(InvalidInput, match="company_size"):
        save_lead(engine, catalog, rules, {"email": "b@example.com", "company_size": "many"}, now=T0, actor="api")
    assert lead_row(engine, "b@example.com") is None


def test_save_lead_with_an_exit_stage_ends_the_enrollments_at_once(engine, world):
    catalog, rules = world
    add_delivery(engine, "a@example.com")
    saved = save_lead(engine, catalog, rules, {"email": "a@example.com", "stage": "sql"}, now=T0, actor="api")

    assert saved.stage == "sql" and saved.stage_changed and not saved.created
    assert [(e.status, e.end_reason) for e in enrollments_of(engine, "a@example.com")] == [("exited", "stage:sql")]
    assert [(c.to_stage, c.actor) for c in stage_history(engine, "a@example.com")] == [("sql", "api")]


def test_save_lead_applies_a_stage_only_forward_and_saves_the_rest(engine, world):
    catalog, rules = world
    add_delivery(engine, "a@example.com")  # an mql in mql-nurture
    saved = save_lead(engine, catalog, rules, {"email": "a@example.com", "stage": "lead", "title": "CTO"}, now=T0,
                      actor="api")
    assert (saved.stage, saved.stage_changed) == ("mql", False)
    assert saved.stage_not_applied is not None
    assert saved.stage_not_applied.message == "would move backwards: mql → lead"
    assert lead_row(engine, "a@example.com").title == "CTO"
    assert [(e.status, e.campaign_id) for e in enrollments_of(engine, "a@example.com")] == [("active", "mql-nurture")]
    assert stage_history(engine, "a@example.com") == []
    new = save_lead(engine, catalog, rules, {"email": "b@example.com", "stage": "disqualified"}, now=T0, actor="api")
    assert (new.created, new.stage) == (True, "lead")
    assert new.stage_not_applied is not None and new.stage_not_applied.reason == "reserved"


# --- nurture event -----------------------------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path, monkeypatch, migrated_url):
    from nurture.cli.commands import events
    from nurture.settings import get_settings

    folder = write_campaigns(tmp_path / "cli-campaigns")
    monkeypatch.setenv("NURTURE_DATABASE_URL", migrated_url)
    monkeypatch.setenv("NURTURE_CAMPAIGNS_DIR", str(folder))
    get_settings.cache_clear()
    app = typer.Typer()
    events.register(app)
    app.command("noop", hidden=True)(lambda: None)  # two commands: typer then dispatches by name

    def run(*args: str):
        return CliRunner().invoke(app, ["event", *args])

    yield run
    get_settings.cache_clear()


def test_cli_records_an_event_and_prints_points_score_and_stage(cli, engine):
    result = cli("Ada@Example.com", "webinar_attended", "--at", "2024-05-01T10:00:00+02:00", "--prop", "webinar=q2",
                 "--prop", "minutes=45", "--id", "w-1")
    assert result.exit_code == 0, result.output
    assert "+30 points" in result.output and "stage lead" in result.output
    [event] = events_of(engine, "ada@example.com")
    assert (event.type, event.occurred_at, event.external_id) == ("webinar_attended", T0 - timedelta(hours=4), "w-1")
    assert dict(event.properties) == {"webinar": "q2", "minutes": 45}
    assert [c.actor for c in stage_history(engine, "ada@example.com")] == ["cli"]

    again = cli("ada@example.com", "webinar_attended", "--id", "w-1")
    assert again.exit_code == 0 and "duplicate" in again.output
    assert len(events_of(engine)) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["not-an-email", "page_view"], "invalid email"),
        (["a@example.com", "Page View"], "invalid type"),
        (["a@example.com", "page_view", "--at", "yesterday"], "ISO 8601"),
        (["a@example.com", "page_view", "--at", "2024-05-01T10:00:00"], "time zone"),
        (["a@example.com", "page_view", "--at", "2999-01-01T00:00:00Z"], "future"),
        (["a@example.com", "page_view", "--prop", "novalue"], "KEY=VALUE"),
    ],
)
def test_cli_refuses_bad_input_with_a_message_and_exit_status_1(cli, engine, monkeypatch, capsys, args, message):
    from nurture.cli import app as cli_app

    monkeypatch.setattr(cli_app, "app", typer.Typer(pretty_exceptions_enable=False))  # register into a fresh one
    with pytest.raises(SystemExit) as exited:
        cli_app.main(["event", *args])

    assert exited.value.code == 1
    assert message in capsys.readouterr().err
    assert count_rows(engine, EngagementEvent) == 0 and count_rows(engine, Lead) == 0
