"""The replay against real databases (SQLite files and PostgreSQL), on a history the real dispatcher recorded over a
FixedClock (``replay_world``): with the same version on both sides it reproduces what the worker sent and where the
leads stand; a shorter wait shows which emails would have gone earlier; it never writes.

The history (T0 = Monday 2026-03-02 12:00 UTC; leads 0-3 enrolled at T0, 4-7 at T0 + 1d; hours after T0):
welcome at enrollment; tips 2d later; then a click on tips within 3d leads to thanks a day after the click, no click
to nudge. Lead 0 clicks at 50h (thanks at 74h), lead 4 at 75h (thanks at 99h); lead 1 unsubscribes at 30h (before
tips); lead 2 asks for a demo at 60h (the campaign's goal, and an SQL); lead 5 opens tips but never clicks.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from db_fixtures import engine, migrated_url, postgres_available, postgres_template  # noqa: F401
from replay_world import DRIP, History, record_history, table_contents, write_drip_project
from worker_world import T0, deliveries, enrollments

from nurture.application.replay import replay
from nurture.core.replay import NOT_IN_VERSION
from nurture.core.replay_report import ReplayReport
from nurture.definitions.loader import Catalog, load_catalog


@pytest.fixture
def history(engine, tmp_path: Path) -> History:
    return record_history(engine, tmp_path / "recorded")


def version(tmp_path: Path, name: str, text: str) -> Catalog:
    project = write_drip_project(tmp_path / name, text)
    return load_catalog(project.campaigns_dir, project.templates_dir).raise_for_problems()


def steps(report: ReplayReport, campaign: str = "drip") -> dict[str, tuple[int, ...]]:
    return {s.step: (s.recorded, s.old, s.new, s.earlier, s.later, s.only_old, s.only_new)
            for s in report.campaigns[campaign].ordered_steps()}


def real_standing(rows: list[Any]) -> Counter[tuple[str, str]]:
    return Counter(("at", row.step_id) if row.status == "active" else ("ended", row.end_reason) for row in rows)


def test_the_same_version_on_both_sides_reproduces_what_the_worker_sent_and_where_the_leads_stand(history):
    recorded = Counter(row.step_id for row in deliveries(history.engine))
    assert recorded == {"welcome": 8, "tips": 7, "nudge": 4, "thanks": 2}, "the history is as described"

    report = replay(history.engine, history.catalog, history.catalog, since=T0 - timedelta(days=1), now=history.now)

    drip = report.campaigns["drip"]
    assert steps(report) == {step: (n, n, n, 0, 0, 0, 0) for step, n in recorded.items()}
    assert [s.step for s in drip.ordered_steps()] == ["welcome", "tips", "nudge", "thanks"]
    assert (drip.enrollments, drip.changed, drip.examples) == (8, 0, [])
    assert drip.old_standing == drip.new_standing == real_standing(enrollments(history.engine))
    assert drip.new_standing == {("ended", "completed"): 6, ("ended", "unsubscribed"): 1,
                                 ("ended", "goal:demo_request"): 1}


def test_enrollments_begun_before_the_period_go_on_from_where_their_path_says_they_stood(history):
    since = T0 + timedelta(days=3)  # leads 0, 2, 3 got tips at 48h; leads 4-7 get theirs at 72h, in the period
    in_period = Counter(row.step_id for row in deliveries(history.engine) if row.created_at >= since)
    assert in_period == {"tips": 4, "nudge": 4, "thanks": 2}

    report = replay(history.engine, history.catalog, history.catalog, since=since, now=history.now)

    assert steps(report) == {step: (n, n, n, 0, 0, 0, 0) for step, n in in_period.items()}
    still_in = [row for row in enrollments(history.engine) if row.ended_at is None or row.ended_at >= since]
    assert report.campaigns["drip"].enrollments == len(still_in) == 6  # lead 1 left at 30h, lead 2 at 60h
    assert report.campaigns["drip"].new_standing == real_standing(still_in)


def test_a_shorter_wait_shows_the_emails_that_would_have_gone_earlier_and_the_same_count_for_the_others(
        history, tmp_path):
    shorter = version(tmp_path, "new", DRIP.replace("wait: 2d", "wait: 1d"))

    report = replay(history.engine, history.catalog, shorter, since=T0 - timedelta(days=1), now=history.now)

    # tips a day earlier for all seven who got it, and also for lead 1, who unsubscribed at 30h: after a tips at 24h;
    # the nudges follow their tips (a day earlier); welcome and the thanks (a day after the click) do not move
    assert steps(report) == {
        "welcome": (8, 8, 8, 0, 0, 0, 0),
        "tips": (7, 7, 8, 7, 0, 0, 1),
        "nudge": (4, 4, 4, 4, 0, 0, 0),
        "thanks": (2, 2, 2, 0, 0, 0, 0),
    }
    drip = report.campaigns["drip"]
    assert drip.changed == 8
    by_lead = {e.lead_id: e for e in drip.examples}
    lead_ids = {row.email: row.lead_id for row in enrollments(history.engine)}
    tips_1 = by_lead[lead_ids["drip1@example.com"]]
    assert (tips_1.step_key, tips_1.old_at, tips_1.new_at) == ("tips", None, T0 + timedelta(days=1))
    tips_3 = by_lead[lead_ids["drip3@example.com"]]
    assert (tips_3.step_key, tips_3.old_at, tips_3.new_at) == ("tips", T0 + timedelta(days=2), T0 + timedelta(days=1))
    assert drip.old_standing == drip.new_standing


def test_a_campaign_removed_in_the_new_version_sends_nothing_there_and_its_leads_stay_put(history, tmp_path):
    other = version(tmp_path, "new", DRIP.replace("id: drip", "id: drip-two"))

    report = replay(history.engine, history.catalog, other, since=T0 - timedelta(days=1), now=history.now)

    assert set(report.campaigns) == {"drip"}, "drip-two has no enrollments to replay"
    assert {s.step: (s.old, s.new) for s in report.campaigns["drip"].ordered_steps()} == {
        "welcome": (8, 0), "tips": (7, 0), "nudge": (4, 0), "thanks": (2, 0)}
    assert report.campaigns["drip"].new_standing == {("ended", NOT_IN_VERSION): 8}
    only = replay(history.engine, history.catalog, other, since=T0 - timedelta(days=1), now=history.now,
                  campaign_ids=["drip-two"])
    assert only.campaigns == {}


def test_pages_of_any_size_give_the_same_report(history, tmp_path):
    shorter = version(tmp_path, "new", DRIP.replace("wait: 2d", "wait: 1d"))
    whole = replay(history.engine, history.catalog, shorter, since=T0 - timedelta(days=1), now=history.now)
    paged = replay(history.engine, history.catalog, shorter, since=T0 - timedelta(days=1), now=history.now, page=3)
    assert paged.to_json() == whole.to_json()


def test_the_replay_reads_and_never_writes(history, tmp_path):
    shorter = version(tmp_path, "new", DRIP.replace("wait: 2d", "wait: 1d"))
    url = history.engine.url
    database = Path(url.database or "") if url.get_backend_name() == "sqlite" else None

    def file_bytes() -> bytes | None:
        history.engine.dispose()  # the last connection closed: SQLite's write-ahead log is in the file
        return database.read_bytes() if database is not None else None

    before = (table_contents(history.engine), file_bytes())
    replay(history.engine, history.catalog, shorter, since=T0 - timedelta(days=1), now=history.now, page=3)
    after = (table_contents(history.engine), file_bytes())
    assert after == before
