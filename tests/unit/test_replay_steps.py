"""The pure parts of a replay: an enrollment's position at the period's start read from its path, the lead as it was
then, one enrollment run under a version (``nurture.core.replay``), the stepping it shares with ``simulate``
(``nurture.core.simulate.run``), and the report's counts (``nurture.core.replay_report``).

2026-03-02 is a Monday; times are UTC; no policy limits unless a test sets one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nurture.core.engine import EnrollmentState, PathEntry
from nurture.core.facts import Engagement, LeadView, Send
from nurture.core.replay import (
    NOT_IN_VERSION,
    RecordedEnrollment,
    Replayed,
    StageChangeAt,
    lead_at,
    position_at,
    replay_enrollment,
)
from nurture.core.replay_report import ReplayReport
from nurture.core.simulate import Input, LeadChange, run
from nurture.definitions.campaign import Campaign
from nurture.definitions.policy import Policy

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
NO_LIMITS = Policy.model_validate({"frequency_cap": None})


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def email(step_id: str, wait: str = "0s", **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "wait": wait, "email": {"template": f"{step_id}.html.j2", "subject": step_id}, **extra}


def campaign(*steps: dict[str, Any], **fields: Any) -> Campaign:
    return Campaign.model_validate({"id": "drip", "name": "Drip", "steps": list(steps), **fields})


DRIP = campaign(email("welcome"), email("tips", "2d"), email("offer", "2d"))
LEAD = LeadView(key="7", email="ann@example.com", stage="mql")


def recorded(path: list[PathEntry], *, step: str | None, arrived: datetime, ended: datetime | None = None,
             enrolled: datetime = T0) -> RecordedEnrollment:
    return RecordedEnrollment(1, 7, "drip", step, arrived, enrolled, ended, "completed" if ended else None, tuple(path))


# --- where an enrollment stood when the period began ------------------------------------------------------------------

SENT_WELCOME = PathEntry("welcome", at(0), "sent")
SENT_TIPS = PathEntry("tips", at(48), "sent")
SENT_OFFER = PathEntry("offer", at(96), "sent")


@pytest.mark.parametrize(("since", "step", "arrived", "path"), [
    (at(-1), "welcome", T0, ()),  # nothing had happened yet: its first step, since its enrollment
    (at(0), "welcome", T0, ()),  # an entry at the start itself is inside the period
    (at(1), "tips", at(0), (SENT_WELCOME,)),  # welcome went at 0h: waiting on tips since then
    (at(50), "offer", at(48), (SENT_WELCOME, SENT_TIPS)),
])
def test_the_position_at_a_time_is_the_step_of_the_next_entry_since_the_last_move(since, step, arrived, path):
    record = recorded([SENT_WELCOME, SENT_TIPS, SENT_OFFER], step=None, arrived=at(96), ended=at(96))
    assert position_at(record, since) == EnrollmentState(step, arrived, T0, path)


def test_an_active_enrollment_with_nothing_since_stands_where_its_row_says():
    record = recorded([SENT_WELCOME], step="tips", arrived=at(0))
    assert position_at(record, at(30)) == EnrollmentState("tips", at(0), T0, (SENT_WELCOME,))


def test_a_content_piece_and_a_relocation_do_not_move_the_arrival():
    path = [PathEntry("welcome", at(0), "sent"),
            PathEntry("stream", at(24), "sent", "content guide"),
            PathEntry("gone", at(30), "relocated", "step 'gone' was removed; going on after 'welcome'"),
            PathEntry("stream", at(48), "sent", "content webinar")]
    state = position_at(recorded(path, step="stream", arrived=at(0)), at(40))
    assert (state.step_id, state.arrived_at) == ("stream", at(0))


# --- the lead as it was -----------------------------------------------------------------------------------------------

def test_the_lead_takes_the_stage_it_had_then_and_its_later_changes_in_order():
    stages = [StageChangeAt(at(-10), None, "lead"), StageChangeAt(at(-5), "lead", "mql"),
              StageChangeAt(at(30), "mql", "sql"), StageChangeAt(at(500), "sql", "opportunity")]
    lead, changes = lead_at(LeadView(key="7", email="a@example.com", stage="opportunity"), stages,
                            unsubscribed_at=at(40), bounced_at=None, at=at(0), until=at(100))
    assert (lead.stage, lead.unsubscribed, lead.bounced) == ("mql", False, False)
    assert changes == [LeadChange(at(30), stage="sql"), LeadChange(at(40), unsubscribed=True)]


def test_a_stage_before_the_first_recorded_change_is_that_change_s_from_stage():
    lead, changes = lead_at(LeadView(key="7", email="a@example.com", stage="sql"),
                            [StageChangeAt(at(200), "mql", "sql")], unsubscribed_at=None, bounced_at=at(-1),
                            at=at(0), until=at(100))
    assert (lead.stage, lead.bounced, changes) == ("mql", True, [])


# --- one enrollment under a version -----------------------------------------------------------------------------------

def test_a_shorter_wait_sends_earlier_and_an_enrollment_before_the_period_goes_on_from_where_it_stood():
    shorter = campaign(email("welcome"), email("tips", "1d"), email("offer", "2d"))
    record = recorded([SENT_WELCOME], step="tips", arrived=at(0))
    old = replay_enrollment(DRIP, NO_LIMITS, record, LEAD, since=at(6), until=at(200))
    new = replay_enrollment(shorter, NO_LIMITS, record, LEAD, since=at(6), until=at(200))
    assert [(s.step_key, s.at) for s in old.sends] == [("tips", at(48)), ("offer", at(96))]
    assert [(s.step_key, s.at) for s in new.sends] == [("tips", at(24)), ("offer", at(72))]
    assert old.standing == new.standing == ("ended", "completed")


def test_an_enrollment_inside_the_period_starts_at_the_first_step_of_each_version():
    other_first = campaign(email("hello"), email("tips", "2d"))
    record = recorded([], step="welcome", arrived=at(10), enrolled=at(10))
    replayed = replay_enrollment(other_first, NO_LIMITS, record, LEAD, since=at(0), until=at(20))
    assert [(s.step_key, s.at) for s in replayed.sends] == [("hello", at(10))]
    assert replayed.standing == ("at", "tips")


def test_a_campaign_the_version_lacks_or_pauses_sends_nothing():
    record = recorded([], step="welcome", arrived=T0)
    assert replay_enrollment(None, NO_LIMITS, record, LEAD, since=at(-1), until=at(100)) == \
        Replayed((), None, NOT_IN_VERSION)
    paused = campaign(email("welcome"), paused=True)
    assert replay_enrollment(paused, NO_LIMITS, record, LEAD, since=at(-1), until=at(100)) == \
        Replayed((), "welcome", None)


def test_a_stage_change_and_a_goal_event_end_the_replay_when_they_happened():
    goal = campaign(email("welcome"), email("tips", "2d"), exit={"events": ["demo_request"]})
    record = recorded([], step="welcome", arrived=T0)
    promoted = replay_enrollment(goal, NO_LIMITS, record, LEAD, since=at(-1), until=at(100),
                                 changes=[LeadChange(at(30), stage="sql")])
    asked = replay_enrollment(goal, NO_LIMITS, record, LEAD, since=at(-1), until=at(100),
                              events=[Engagement("demo_request", at(20))])
    assert [s.step_key for s in promoted.sends] == [s.step_key for s in asked.sends] == ["welcome"]
    assert (promoted.ended, asked.ended) == ("stage:sql", "goal:demo_request")


# --- the stepping shared with simulate --------------------------------------------------------------------------------

def test_another_campaign_s_send_holds_the_cap_from_its_time_on():
    capped = Policy.model_validate({"frequency_cap": {"max": 1, "per": "1d"}})
    other = [Send(at(47), "news", "issue-1")]
    ran = run(DRIP, capped, EnrollmentState.start(DRIP, T0), LEAD, start=T0, until=at(100), sends=other)
    # welcome at 0h is not held by a send that came later; tips, due at 48h, waits a day after the 47h send
    assert [(s.step_key, s.at) for s in ran.sends] == [("welcome", at(0)), ("tips", at(71))]


def test_events_before_the_start_are_history_from_the_first_look():
    clicked = campaign(email("welcome", when={"event": "webinar_attended"}), email("tips", "1d"))
    inputs = [Input(at(-2), event=Engagement("webinar_attended", at(-2)))]
    state = EnrollmentState.start(clicked, at(-5))
    ran = run(clicked, NO_LIMITS, state, LEAD, start=T0, until=at(48), inputs=inputs)
    assert [s.step_key for s in ran.sends] == ["welcome", "tips"]


# --- the report -------------------------------------------------------------------------------------------------------

def test_the_report_counts_each_step_s_emails_and_how_they_moved_and_where_the_leads_stand():
    report = ReplayReport(at(-1), at(200))
    drip = report.campaign("drip", ["welcome", "tips", "offer"])
    first = recorded([], step="welcome", arrived=T0)
    second = RecordedEnrollment(2, 8, "drip", "welcome", T0, T0, None, None)
    old_sends = (Send(at(0), "drip", "welcome"), Send(at(48), "drip", "tips"))
    drip.add(first, Replayed(old_sends, "offer", None),
             Replayed((Send(at(0), "drip", "welcome"), Send(at(24), "drip", "tips"), Send(at(72), "drip", "offer")),
                      None, "completed"), ["welcome", "tips"])
    drip.add(second, Replayed(old_sends, "offer", None), Replayed(old_sends, "offer", None), ["welcome"])

    counts = {s.step: (s.recorded, s.old, s.new, s.earlier, s.later, s.only_old, s.only_new)
              for s in drip.ordered_steps()}
    assert counts == {"welcome": (2, 2, 2, 0, 0, 0, 0), "tips": (1, 2, 2, 1, 0, 0, 0), "offer": (0, 0, 1, 0, 0, 0, 1)}
    assert (drip.enrollments, drip.changed) == (2, 1)
    data = json.loads(json.dumps(report.to_json()))
    assert data["campaigns"][0]["standing"] == {"old": {"at": {"offer": 2}, "ended": {}},
                                                "new": {"at": {"offer": 1}, "ended": {"completed": 1}}}
    assert data["campaigns"][0]["examples"] == [
        {"enrollment": 1, "lead": 7, "step": "tips", "old_at": "2026-03-04T12:00:00Z", "new_at": "2026-03-03T12:00:00Z"}]
    text = "\n".join(report.lines())
    assert "drip: 2 enrollment(s), 1 with emails sent differently" in text
    assert "e.g. enrollment 1 (lead 7) tips: old 2026-03-04 12:00Z, new 2026-03-03 12:00Z" in text
    assert "ann@example.com" not in text and "ann@example.com" not in json.dumps(data)


def test_a_held_out_enrollment_walks_the_path_and_is_replayed_with_nothing_sent():
    record = RecordedEnrollment(1, 7, "drip", "welcome", at(0), at(0), None, None, (), held_out=True)
    replayed = replay_enrollment(DRIP, NO_LIMITS, record, LEAD, since=at(-1), until=at(100))
    assert replayed.sends == ()
    assert replayed.standing == ("ended", "completed")
    sent = replay_enrollment(DRIP, NO_LIMITS, recorded([], step="welcome", arrived=at(0)), LEAD, since=at(-1),
                             until=at(100))
    assert [s.step_key for s in sent.sends] == ["welcome", "tips", "offer"]
