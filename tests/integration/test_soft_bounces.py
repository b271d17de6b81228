"""Soft bounces against real databases (SQLite files and PostgreSQL): counted per lead, they suppress it when
``policy.yaml``'s ``soft_bounces`` limit falls within its window; hard bounces and complaints still suppress at once.
The time is a FixedClock's, moved by hand."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from db_fixtures import engine, migrated_url, postgres_available, postgres_template  # noqa: F401
from intake_world import T0, add_delivery, enrollments_of, events_of, lead_row, load_world, write_campaigns
from sqlalchemy import event as sa_event
from typer.testing import CliRunner

from nurture.application.event_input import DUPLICATE, RECORDED, EventIn
from nurture.application.record_events import record_events
from nurture.clock import FixedClock


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_campaigns(tmp_path / "campaigns")


def record(engine, folder: Path, clock: FixedClock, *events: EventIn) -> list[Any]:
    catalog, rules = load_world(folder)
    return record_events(engine, catalog, rules, list(events), now=clock(), actor="system")


def soft(email: str = "a@example.com", **kwargs: Any) -> EventIn:
    return EventIn(email, "soft_bounce", **kwargs)


def suppressed(engine, email: str = "a@example.com") -> bool:
    return lead_row(engine, email).bounced_at is not None


def test_the_third_soft_bounce_within_seven_days_suppresses_the_lead_and_ends_its_campaigns(engine, folder, clock):
    add_delivery(engine, "a@example.com")
    record(engine, folder, clock, soft())
    clock.advance(days=2)
    record(engine, folder, clock, soft(properties={"reason": "452 mailbox full"}))
    assert not suppressed(engine)
    assert enrollments_of(engine, "a@example.com")[0].status == "active"

    clock.advance(days=3)
    [result] = record(engine, folder, clock, soft())

    assert result.status == RECORDED
    assert lead_row(engine, "a@example.com").bounced_at == clock.now
    [enrollment] = enrollments_of(engine, "a@example.com")
    assert (enrollment.status, enrollment.end_reason) == ("exited", "bounced")
    assert [e.type for e in events_of(engine, "a@example.com")] == ["soft_bounce"] * 3


def test_soft_bounces_spread_wider_than_the_window_do_not_suppress_until_three_fit_in_it(engine, folder, clock):
    add_delivery(engine, "a@example.com")
    for days in (0, 4, 4):  # days 0, 4 and 8: no seven days hold three
        clock.advance(days=days)
        record(engine, folder, clock, soft())
    assert not suppressed(engine)
    assert enrollments_of(engine, "a@example.com")[0].status == "active"

    clock.advance(days=1)  # day 9: days 4, 8 and 9 are within seven days
    record(engine, folder, clock, soft())
    assert lead_row(engine, "a@example.com").bounced_at == clock.now


def test_a_late_soft_bounce_counts_with_the_ones_around_when_it_happened(engine, folder, clock):
    add_delivery(engine, "a@example.com")
    record(engine, folder, clock, soft())
    clock.advance(days=1)
    record(engine, folder, clock, soft())
    clock.advance(days=19)
    record(engine, folder, clock, soft())  # day 20: alone in its week
    assert not suppressed(engine)

    record(engine, folder, clock, soft(occurred_at=T0 + timedelta(days=3)))  # reported late: days 0, 1 and 3

    assert lead_row(engine, "a@example.com").bounced_at == T0 + timedelta(days=3)


def test_soft_bounces_of_one_batch_count_together_for_a_new_lead_too(engine, folder, clock):
    record(engine, folder, clock, soft("new@example.com"), soft("other@example.com"), soft("new@example.com"))
    assert not suppressed(engine, "new@example.com")
    clock.advance(hours=1)
    results = record(engine, folder, clock, soft("new@example.com"), soft("other@example.com"))
    assert [r.status for r in results] == [RECORDED, RECORDED]
    assert suppressed(engine, "new@example.com") and not suppressed(engine, "other@example.com")


def test_a_retried_soft_bounce_is_counted_once(engine, folder, clock):
    add_delivery(engine, "a@example.com")
    for _ in range(3):
        [result] = record(engine, folder, clock, soft(id="provider-evt-1"))
        clock.advance(hours=1)
    assert result.status == DUPLICATE
    assert not suppressed(engine)
    assert len(events_of(engine, "a@example.com")) == 1


@pytest.mark.parametrize(("event_type", "reason"), [("bounce", "bounced"), ("spam_complaint", "spam_complaint")])
def test_a_hard_bounce_or_a_complaint_still_suppresses_at_once(engine, folder, clock, event_type, reason):
    add_delivery(engine, "a@example.com")
    record(engine, folder, clock, EventIn("a@example.com", event_type))
    assert lead_row(engine, "a@example.com").bounced_at == T0
    assert enrollments_of(engine, "a@example.com")[0].end_reason == reason


def test_policy_yaml_sets_the_limit_and_the_window(engine, folder, clock):
    (folder / "policy.yaml").write_text("soft_bounces:\n  limit: 2\n  within: 1h\n", encoding="utf-8")
    add_delivery(engine, "a@example.com")
    record(engine, folder, clock, soft())
    clock.advance(hours=2)
    record(engine, folder, clock, soft())
    assert not suppressed(engine)  # two, but two hours apart

    clock.advance(minutes=30)
    record(engine, folder, clock, soft())
    assert lead_row(engine, "a@example.com").bounced_at == clock.now


def test_limit_one_makes_every_soft_bounce_suppress(engine, folder, clock):
    (folder / "policy.yaml").write_text("soft_bounces: {limit: 1}\n", encoding="utf-8")
    record(engine, folder, clock, soft())
    assert suppressed(engine)


def statements(engine, folder, clock, *events: EventIn) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []

    def note(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement, parameters))

    sa_event.listen(engine, "before_cursor_execute", note)
    try:
        record(engine, folder, clock, *events)
    finally:
        sa_event.remove(engine, "before_cursor_execute", note)
    return seen


def test_only_a_soft_bounce_costs_a_read_and_other_events_cost_what_they_did(engine, folder, clock):
    add_delivery(engine, "a@example.com")
    add_delivery(engine, "b@example.com")
    others = statements(engine, folder, clock, EventIn("a@example.com", "page_view"), EventIn("a@example.com", "email_open"))
    with_soft = statements(engine, folder, clock, EventIn("b@example.com", "page_view"), soft("b@example.com"))

    assert not any("soft_bounce" in str(parameters) for _, parameters in others)
    assert len(with_soft) == len(others) + 1
    assert sum("soft_bounce" in str(parameters) and statement.lstrip().upper().startswith("SELECT")
               for statement, parameters in with_soft) == 1


@pytest.fixture
def cli(tmp_path, monkeypatch, migrated_url, folder, clock):
    from nurture.cli import app as cli_app
    from nurture.cli.commands import events
    from nurture.settings import get_settings

    monkeypatch.setenv("NURTURE_DATABASE_URL", migrated_url)
    monkeypatch.setenv("NURTURE_CAMPAIGNS_DIR", str(folder))
    monkeypatch.setattr(cli_app, "clock", clock)
    get_settings.cache_clear()
    app = typer.Typer()
    events.register(app)
    app.command("noop", hidden=True)(lambda: None)  # two commands: typer then dispatches by name

    def run(*args: str):
        return CliRunner().invoke(app, ["event", *args])

    yield run
    get_settings.cache_clear()


def test_nurture_event_records_soft_bounces_that_count_toward_the_limit(cli, engine, clock):
    add_delivery(engine, "a@example.com")
    for hours in (0, 5, 5):
        clock.advance(hours=hours)
        result = cli("a@example.com", "soft_bounce", "--prop", "reason=452 4.2.2 mailbox full")
        assert result.exit_code == 0, result.output
        assert "recorded soft_bounce for a@example.com" in result.output

    assert lead_row(engine, "a@example.com").bounced_at == T0 + timedelta(hours=10)
    assert enrollments_of(engine, "a@example.com")[0].end_reason == "bounced"
