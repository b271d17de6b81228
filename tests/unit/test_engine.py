"""Tables for the step engine (``nurture.core.engine``) and the condition evaluator (``nurture.core.conditions``).

Expected instants are written with the offset in force locally, so a reader can see the wall clock; they were worked out
by hand from the 2026 calendar and DST rules:

- 2026-03-02 is a Monday.
- America/New_York: EST (UTC-5) until Sun 2026-03-08 -> EDT (UTC-4); back to EST on Sun 2026-11-01.
- Europe/Berlin: CET (UTC+1) until Sun 2026-03-29 -> CEST (UTC+2); back to CET on Sun 2026-10-25.
- Asia/Tokyo: JST (UTC+9), no DST.

``drive`` below plays the worker: it calls ``advance`` at every due time (and at every event), feeding back the emails
it decided to send, until the enrollment ends or a horizon is passed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest

from nurture.core.conditions import compare, entry_matches, evaluate, field_matches, filter_matches
from nurture.core.engine import (
    MAX_STEPS_PER_ADVANCE,
    Action,
    EnrollmentState,
    PathEntry,
    advance,
    choose_variant,
    relocate,
)
from nurture.core.facts import Engagement, History, LeadView, Send
from nurture.definitions.campaign import Campaign
from nurture.definitions.conditions import Comparison, Condition
from nurture.definitions.policy import Policy


def T(text: str) -> datetime:
    """An instant written in ISO 8601 with its offset."""
    return datetime.fromisoformat(text)


def email(step_id: str, wait: str = "0s", **extra: Any) -> dict[str, Any]:
    """An email step as a campaign file would have it."""
    return {"id": step_id, "wait": wait, "email": {"template": f"{step_id}.html.j2", "subject": step_id.title()}, **extra}


def make_campaign(*steps: dict[str, Any], campaign_id: str = "camp", **fields: Any) -> Campaign:
    return Campaign.model_validate({"id": campaign_id, "name": "Test campaign", "steps": list(steps), **fields})


def make_lead(timezone: str | None = None, **fields: Any) -> LeadView:
    return LeadView(**{"key": "lead-1", "email": "ann@example.com", "stage": "mql", "timezone": timezone, **fields})


NO_LIMITS = Policy.model_validate({"frequency_cap": None})
"""No window, no cap: timing comes from the waits alone."""

OFFICE_HOURS = {"days": "mon-fri", "hours": "09:00-17:00"}


@dataclass
class Run:
    actions: list[Action]
    state: EnrollmentState
    ended: str | None

    @property
    def emails(self) -> list[tuple[str, datetime]]:
        return [(a.step_key, a.at) for a in self.actions if a.kind == "email"]

    def outcomes(self, outcome: str) -> list[PathEntry]:
        return [entry for entry in self.state.path if entry.outcome == outcome]


def drive(
    campaign: Campaign,
    policy: Policy,
    lead: LeadView,
    start: datetime,
    *,
    until: datetime | None = None,
    events: list[Engagement] = [],  # noqa: B006 - never mutated
    sends: list[Send] = [],  # noqa: B006 - never mutated
    state: EnrollmentState | None = None,
    default_tz: str = "UTC",
) -> Run:
    """Advance like the worker does, from ``start`` until the enrollment ends or nothing is due before ``until``."""
    until = until or start + timedelta(days=60)
    state = state or EnrollmentState.start(campaign, start)
    now = start
    sent = list(sends)
    actions: list[Action] = []
    for _ in range(500):
        past = [event for event in events if event.at <= now]
        result = advance(campaign, policy, state, lead, History(past, sent), now, default_tz=default_tz)
        for action in result.actions:
            actions.append(action)
            if action.kind == "email":
                content = action.content.id if action.content else None
                sent.append(Send(action.at, campaign.id, action.step_key, content))
        state = result.state
        if result.ended:
            return Run(actions, state, result.ended)
        wakes = [event.at for event in events if event.at > now]
        if result.next_due_at is not None:
            wakes.append(result.next_due_at)
        if not wakes or min(wakes) > until:
            return Run(actions, state, None)
        now = min(wakes)
    raise AssertionError("the enrollment never settled")


# --- waits ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wait", "lead_tz", "start", "expected"),
    [
        ("0s", None, "2026-03-02T09:00Z", "2026-03-02T09:00Z"),
        ("30m", None, "2026-03-02T09:00Z", "2026-03-02T09:30Z"),
        ("4h30m", None, "2026-03-02T09:00Z", "2026-03-02T13:30Z"),
        ("2d", None, "2026-03-02T09:00Z", "2026-03-04T09:00Z"),
        ("1w", None, "2026-03-02T09:00Z", "2026-03-09T09:00Z"),
        ("1d12h", None, "2026-03-02T09:00Z", "2026-03-03T21:00Z"),
        # days are calendar days on the lead's clock, hours are elapsed time
        ("1d", "America/New_York", "2026-03-07T09:00-05:00", "2026-03-08T09:00-04:00"),
        ("24h", "America/New_York", "2026-03-07T09:00-05:00", "2026-03-08T10:00-04:00"),
        ("1d", "Europe/Berlin", "2026-10-24T09:00+02:00", "2026-10-25T09:00+01:00"),
        ("24h", "Europe/Berlin", "2026-10-24T09:00+02:00", "2026-10-25T08:00+01:00"),
    ],
)
def test_a_step_runs_its_wait_after_the_previous_one(wait: str, lead_tz: str | None, start: str, expected: str) -> None:
    campaign = make_campaign(email("first"), email("second", wait))
    run = drive(campaign, NO_LIMITS, make_lead(lead_tz), T(start))
    assert run.emails == [("first", T(start)), ("second", T(expected))]
    assert run.ended == "completed"


def test_the_first_step_waits_too() -> None:
    campaign = make_campaign(email("first", "1d"))
    result = advance(campaign, NO_LIMITS, EnrollmentState.start(campaign, T("2026-03-02T09:00Z")), make_lead(),
                     History(), T("2026-03-02T09:00Z"))
    assert result.actions == []
    assert result.next_due_at == T("2026-03-03T09:00Z")
    assert result.ended is None


DST_CHAINS = [
    pytest.param(
        "America/New_York",
        ["2026-03-06T09:00-05:00", "2026-03-07T09:00-05:00", "2026-03-08T09:00-04:00", "2026-03-09T09:00-04:00"],
        id="us-spring",
    ),
    pytest.param(
        "America/New_York",
        ["2026-10-30T09:00-04:00", "2026-10-31T09:00-04:00", "2026-11-01T09:00-05:00", "2026-11-02T09:00-05:00"],
        id="us-fall",
    ),
    pytest.param(
        "Europe/Berlin",
        ["2026-03-27T09:00+01:00", "2026-03-28T09:00+01:00", "2026-03-29T09:00+02:00", "2026-03-30T09:00+02:00"],
        id="eu-spring",
    ),
    pytest.param(
        "Europe/Berlin",
        ["2026-10-23T09:00+02:00", "2026-10-24T09:00+02:00", "2026-10-25T09:00+01:00", "2026-10-26T09:00+01:00"],
        id="eu-fall",
    ),
]

DAILY = make_campaign(email("day1"), email("day2", "1d"), email("day3", "1d"), email("day4", "1d"))


@pytest.mark.parametrize("policy", [NO_LIMITS, Policy()], ids=["no-cap", "default-cap-1-per-1d"])
@pytest.mark.parametrize(("zone", "expected"), DST_CHAINS)
def test_a_daily_chain_keeps_nine_local_across_dst(zone: str, expected: list[str], policy: Policy) -> None:
    # under the default cap too: on a spring-forward day two 1d-spaced emails are only 23 hours apart
    run = drive(DAILY, policy, make_lead(zone), T(expected[0]))
    assert run.emails == [(f"day{n}", T(at)) for n, at in enumerate(expected, start=1)]


# --- send windows and timezones ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lead_tz", "campaign_tz", "policy_tz", "default_tz", "start", "expected"),
    [
        # the lead's own timezone: 07:00 in New York waits for 09:00 there
        ("America/New_York", None, None, "UTC", "2026-03-02T12:00Z", "2026-03-02T09:00-05:00"),
        # 13:00 in Berlin is open: at once
        ("Europe/Berlin", None, None, "UTC", "2026-03-02T12:00Z", "2026-03-02T12:00Z"),
        # 17:30 in Berlin is closed (the end is exclusive): the next morning there
        ("Europe/Berlin", None, None, "UTC", "2026-03-02T16:30Z", "2026-03-03T09:00+01:00"),
        # the lead's zone wins over the campaign's and the policy's
        ("America/New_York", "Europe/Berlin", "Asia/Tokyo", "UTC", "2026-03-02T12:00Z", "2026-03-02T09:00-05:00"),
        # no lead zone: the campaign's (21:00 Monday in Tokyo -> Tuesday 09:00 there)
        (None, "Asia/Tokyo", "America/New_York", "UTC", "2026-03-02T12:00Z", "2026-03-03T09:00+09:00"),
        # a lead zone that is not a zone is ignored, never fatal
        ("Not/AZone", "Asia/Tokyo", None, "UTC", "2026-03-02T12:00Z", "2026-03-03T09:00+09:00"),
        # no lead or campaign zone: the policy's
        (None, None, "America/New_York", "Europe/Berlin", "2026-03-02T12:00Z", "2026-03-02T09:00-05:00"),
        # none at all: the default (NURTURE_DEFAULT_TIMEZONE)
        (None, None, None, "Europe/Berlin", "2026-03-02T06:00Z", "2026-03-02T09:00+01:00"),
        (None, None, None, "UTC", "2026-03-02T06:00Z", "2026-03-02T09:00Z"),
    ],
)
def test_the_send_window_is_read_in_the_leads_timezone(
    lead_tz: str | None, campaign_tz: str | None, policy_tz: str | None, default_tz: str, start: str, expected: str
) -> None:
    campaign = make_campaign(email("welcome"), **({"timezone": campaign_tz} if campaign_tz else {}))
    policy = Policy.model_validate({"send_window": OFFICE_HOURS, "frequency_cap": None, "timezone": policy_tz})
    run = drive(campaign, policy, make_lead(lead_tz), T(start), default_tz=default_tz)
    assert run.emails == [("welcome", T(expected))]


@pytest.mark.parametrize(
    ("campaign_window", "step_window", "start", "expected"),
    [
        # the policy's mon-fri window: Friday 17:00 is closed, the weekend is skipped (and DST began on Sunday)
        (None, None, "2026-03-06T17:00-05:00", "2026-03-09T09:00-04:00"),
        (None, None, "2026-03-07T12:00-05:00", "2026-03-09T09:00-04:00"),
        (None, None, "2026-03-06T16:59-05:00", "2026-03-06T16:59-05:00"),
        # a campaign window overrides the policy's
        ({"days": ["sat"], "hours": "10:00-11:00"}, None, "2026-03-06T17:00-05:00", "2026-03-07T10:00-05:00"),
        # a step window overrides the campaign's
        (
            {"days": ["sat"], "hours": "10:00-11:00"},
            {"days": "daily", "hours": "08:00-20:00"},
            "2026-03-06T17:00-05:00",
            "2026-03-06T17:00-05:00",
        ),
        # 'always' sends at any hour, at either level
        (None, "always", "2026-03-07T03:00-05:00", "2026-03-07T03:00-05:00"),
        ("always", None, "2026-03-07T03:00-05:00", "2026-03-07T03:00-05:00"),
        ("always", OFFICE_HOURS, "2026-03-07T03:00-05:00", "2026-03-09T09:00-04:00"),
    ],
)
def test_weekends_and_window_overrides(
    campaign_window: Any, step_window: Any, start: str, expected: str
) -> None:
    step = email("welcome", **({"send_window": step_window} if step_window else {}))
    campaign = make_campaign(step, **({"send_window": campaign_window} if campaign_window else {}))
    policy = Policy.model_validate({"send_window": OFFICE_HOURS, "frequency_cap": None})
    run = drive(campaign, policy, make_lead("America/New_York"), T(start))
    assert run.emails == [("welcome", T(expected))]


def test_an_email_processed_after_the_window_closed_waits_for_the_next_opening() -> None:
    policy = Policy.model_validate({"send_window": OFFICE_HOURS, "frequency_cap": None})
    campaign = make_campaign(email("welcome"))
    state = EnrollmentState.start(campaign, T("2026-03-02T16:00-05:00"))  # due Monday 16:00, inside the window
    result = advance(campaign, policy, state, make_lead("America/New_York"), History(), T("2026-03-02T20:00-05:00"))
    assert result.actions == []
    assert result.next_due_at == T("2026-03-03T09:00-05:00")


# --- the frequency cap ---------------------------------------------------------------------------------------------------


def other(at: str) -> Send:
    """An email another campaign sent the lead."""
    return Send(T(at), "other-campaign", "some-step")


@pytest.mark.parametrize(
    ("cap", "earlier", "start", "expected"),
    [
        ({"max": 1, "per": "1d"}, [], "2026-03-03T09:00Z", "2026-03-03T09:00Z"),
        # another campaign's email yesterday afternoon: ours waits until 24 hours after it
        ({"max": 1, "per": "1d"}, [other("2026-03-02T15:00Z")], "2026-03-03T09:00Z", "2026-03-03T15:00Z"),
        # more than a day ago: no effect
        ({"max": 1, "per": "1d"}, [other("2026-03-02T08:00Z")], "2026-03-03T09:00Z", "2026-03-03T09:00Z"),
        # freed at 17:30, when the window is closed: the next opening
        ({"max": 1, "per": "1d"}, [other("2026-03-02T17:30Z")], "2026-03-03T09:00Z", "2026-03-04T09:00Z"),
        # freed on Friday evening: Monday
        ({"max": 1, "per": "1d"}, [other("2026-03-05T18:00Z")], "2026-03-06T09:00Z", "2026-03-09T09:00Z"),
        # two a day allowed: one yesterday is fine, two are not
        ({"max": 2, "per": "1d"}, [other("2026-03-02T15:00Z")], "2026-03-03T09:00Z", "2026-03-03T09:00Z"),
        (
            {"max": 2, "per": "1d"},
            [other("2026-03-02T15:00Z"), other("2026-03-02T16:00Z")],
            "2026-03-03T09:00Z",
            "2026-03-03T15:00Z",
        ),
        # one a week
        ({"max": 1, "per": "1w"}, [other("2026-02-27T10:00Z")], "2026-03-03T09:00Z", "2026-03-06T10:00Z"),
    ],
)
def test_the_frequency_cap_counts_every_campaign(
    cap: dict[str, Any], earlier: list[Send], start: str, expected: str
) -> None:
    policy = Policy.model_validate({"send_window": OFFICE_HOURS, "frequency_cap": cap})
    run = drive(make_campaign(email("welcome")), policy, make_lead(), T(start), sends=earlier)
    assert run.emails == [("welcome", T(expected))]


@pytest.mark.parametrize("now", ["2026-03-03T09:00:05Z", "2026-03-03T10:30Z"])
def test_the_cap_counts_a_send_made_after_the_step_fell_due(now: str) -> None:
    campaign = make_campaign(email("welcome", "1d"))
    state = EnrollmentState.start(campaign, T("2026-03-02T09:00Z"))  # due 2026-03-03 09:00
    earlier_in_this_tick = Send(T(now), "higher-priority-campaign", "some-step")
    result = advance(campaign, Policy(), state, make_lead(), History((), [earlier_in_this_tick]), T(now))
    assert result.actions == []
    assert result.next_due_at == T(now) + timedelta(days=1)


def test_the_frequency_cap_counts_the_campaigns_own_previous_email() -> None:
    campaign = make_campaign(email("first"), email("second"))
    run = drive(campaign, Policy(), make_lead(), T("2026-03-02T09:00Z"))
    assert run.emails == [("first", T("2026-03-02T09:00Z")), ("second", T("2026-03-03T09:00Z"))]


def test_without_a_cap_two_emails_may_go_at_once() -> None:
    campaign = make_campaign(email("first"), email("second"))
    run = drive(campaign, NO_LIMITS, make_lead(), T("2026-03-02T09:00Z"))
    assert run.emails == [("first", T("2026-03-02T09:00Z")), ("second", T("2026-03-02T09:00Z"))]


# --- when ----------------------------------------------------------------------------------------------------------------


CONDITIONAL = make_campaign(
    email("intro"),
    email("follow-up", "1d", when={"opened": "intro"}),
    email("last", "1d"),
)


@pytest.mark.parametrize(
    ("events", "expected_emails", "expected_skips"),
    [
        (
            [],
            [("intro", "2026-03-02T09:00Z"), ("last", "2026-03-04T09:00Z")],
            [PathEntry("follow-up", T("2026-03-03T09:00Z"), "skipped", "condition not met")],
        ),
        (
            [Engagement("email_open", T("2026-03-02T11:00Z"), "camp", "intro")],
            [("intro", "2026-03-02T09:00Z"), ("follow-up", "2026-03-03T09:00Z"), ("last", "2026-03-04T09:00Z")],
            [],
        ),
        # an open after the step fell due comes too late for it
        (
            [Engagement("email_open", T("2026-03-03T11:00Z"), "camp", "intro")],
            [("intro", "2026-03-02T09:00Z"), ("last", "2026-03-04T09:00Z")],
            [PathEntry("follow-up", T("2026-03-03T09:00Z"), "skipped", "condition not met")],
        ),
    ],
)
def test_when_is_evaluated_when_the_step_is_due_and_a_skip_is_recorded(
    events: list[Engagement], expected_emails: list[tuple[str, str]], expected_skips: list[PathEntry]
) -> None:
    run = drive(CONDITIONAL, NO_LIMITS, make_lead(), T("2026-03-02T09:00Z"), events=events)
    assert run.emails == [(step, T(at)) for step, at in expected_emails]
    assert run.outcomes("skipped") == expected_skips
    assert run.ended == "completed"


# --- branch --------------------------------------------------------------------------------------------------------------


ROUTED = make_campaign(
    email("intro"),
    {
        "id": "route",
        "wait": "1d",
        "branch": [
            {"when": {"clicked": "intro"}, "goto": "hot"},
            {"when": {"score": {"gte": 40}}, "goto": "warm"},
            {"goto": "cold"},
        ],
    },
    email("hot", goto="end"),
    email("warm", goto="end"),
    email("cold"),
)
CLICK_INTRO = Engagement("email_click", T("2026-03-02T12:00Z"), "camp", "intro")
OPEN_INTRO = Engagement("email_open", T("2026-03-02T12:00Z"), "camp", "intro")


@pytest.mark.parametrize(
    ("events", "score", "expected_detail", "expected_step"),
    [
        ([CLICK_INTRO], 0, "rule 1 -> hot", "hot"),
        ([], 50, "rule 2 -> warm", "warm"),
        ([CLICK_INTRO], 50, "rule 1 -> hot", "hot"),  # the first matching rule wins
        ([OPEN_INTRO], 39, "rule 3 -> cold", "cold"),  # an open is not a click; the rule without when is the default
        ([], 0, "rule 3 -> cold", "cold"),
    ],
)
def test_a_branch_takes_the_first_rule_that_holds(
    events: list[Engagement], score: float, expected_detail: str, expected_step: str
) -> None:
    run = drive(ROUTED, NO_LIMITS, make_lead(score=score), T("2026-03-02T09:00Z"), events=events)
    assert run.outcomes("branch") == [PathEntry("route", T("2026-03-03T09:00Z"), "branch", expected_detail)]
    assert run.emails == [("intro", T("2026-03-02T09:00Z")), (expected_step, T("2026-03-03T09:00Z"))]
    assert run.ended == "completed"


def test_a_branch_without_a_matching_rule_goes_on_with_the_next_step() -> None:
    campaign = make_campaign(
        email("intro"),
        {"id": "route", "branch": [{"when": {"clicked": "intro"}, "goto": "end"}]},
        email("next", "1d"),
    )
    run = drive(campaign, NO_LIMITS, make_lead(), T("2026-03-02T09:00Z"))
    assert run.outcomes("branch") == [
        PathEntry("route", T("2026-03-02T09:00Z"), "branch", "no rule matched -> next step")
    ]
    assert run.emails == [("intro", T("2026-03-02T09:00Z")), ("next", T("2026-03-03T09:00Z"))]


def test_a_branch_to_end_finishes_the_campaign() -> None:
    delayed = make_campaign(
        email("intro"),
        {"id": "route", "wait": "1d", "branch": [{"when": {"clicked": "intro"}, "goto": "end"}]},
        email("next", "1d"),
    )
    run = drive(delayed, NO_LIMITS, make_lead(), T("2026-03-02T09:00Z"), events=[CLICK_INTRO])
    assert run.emails == [("intro", T("2026-03-02T09:00Z"))]
    assert run.outcomes("branch") == [PathEntry("route", T("2026-03-03T09:00Z"), "branch", "rule 1 -> end")]
    assert run.ended == "completed"


# --- wait_for ------------------------------------------------------------------------------------------------------------


AWAITING = make_campaign(
    email("invite"),
    {
        "id": "await-click",
        "wait_for": {"event": "email_click", "step": "invite", "timeout": "3d"},
        "on_event": "thanks",
        "on_timeout": "reminder",
    },
    email("reminder", goto="end"),
    email("thanks"),
)


@pytest.mark.parametrize(
    ("events", "expected_entry", "expected_email"),
    [
        (
            [Engagement("email_click", T("2026-03-03T15:00Z"), "camp", "invite")],
            PathEntry("await-click", T("2026-03-03T15:00Z"), "event", "email_click came first"),
            ("thanks", "2026-03-03T15:00Z"),
        ),
        # a click at the very deadline still counts
        (
            [Engagement("email_click", T("2026-03-05T09:00Z"), "camp", "invite")],
            PathEntry("await-click", T("2026-03-05T09:00Z"), "event", "email_click came first"),
            ("thanks", "2026-03-05T09:00Z"),
        ),
        (
            [],
            PathEntry("await-click", T("2026-03-05T09:00Z"), "timeout", "no email_click within 3d"),
            ("reminder", "2026-03-05T09:00Z"),
        ),
        # too late, on another step, from another campaign, or only an open: all time out
        (
            [Engagement("email_click", T("2026-03-05T09:01Z"), "camp", "invite")],
            PathEntry("await-click", T("2026-03-05T09:00Z"), "timeout", "no email_click within 3d"),
            ("reminder", "2026-03-05T09:00Z"),
        ),
        (
            [Engagement("email_click", T("2026-03-03T15:00Z"), "camp", "thanks")],
            PathEntry("await-click", T("2026-03-05T09:00Z"), "timeout", "no email_click within 3d"),
            ("reminder", "2026-03-05T09:00Z"),
        ),
        (
            [Engagement("email_click", T("2026-03-03T15:00Z"), "other-campaign", "invite")],
            PathEntry("await-click", T("2026-03-05T09:00Z"), "timeout", "no email_click within 3d"),
            ("reminder", "2026-03-05T09:00Z"),
        ),
        (
            [Engagement("email_open", T("2026-03-03T15:00Z"), "camp", "invite")],
            PathEntry("await-click", T("2026-03-05T09:00Z"), "timeout", "no email_click within 3d"),
            ("reminder", "2026-03-05T09:00Z"),
        ),
    ],
)
def test_wait_for_takes_the_event_or_the_timeout_whichever_comes_first(
    events: list[Engagement], expected_entry: PathEntry, expected_email: tuple[str, str]
) -> None:
    run = drive(AWAITING, NO_LIMITS, make_lead(), T("2026-03-02T09:00Z"), events=events)
    assert [e for e in run.state.path if e.step == "await-click"] == [expected_entry]
    assert run.emails == [("invite", T("2026-03-02T09:00Z")), (expected_email[0], T(expected_email[1]))]
    assert run.ended == "completed"


def test_wait_for_reports_what_it_waits_for_and_until_when() -> None:
    state = EnrollmentState(step_id="await-click", arrived_at=T("2026-03-02T09:00Z"), enrolled_at=T("2026-03-02T09:00Z"))
    result = advance(AWAITING, NO_LIMITS, state, make_lead(), History(), T("2026-03-03T09:00Z"))
    assert (result.waiting_for, result.next_due_at, result.actions) == ("email_click", T("2026-03-05T09:00Z"), [])


def test_wait_for_an_event_of_any_campaign() -> None:
    campaign = make_campaign(
        {"id": "webinar", "wait_for": {"event": "webinar_attended", "timeout": "7d"}, "on_timeout": "end"},
        email("recording"),
    )
    attended = Engagement("webinar_attended", T("2026-03-04T17:00Z"))
    run = drive(campaign, NO_LIMITS, make_lead(), T("2026-03-02T09:00Z"), events=[attended])
    assert run.emails == [("recording", T("2026-03-04T17:00Z"))]
    run = drive(campaign, NO_LIMITS, make_lead(), T("2026-03-02T09:00Z"))
    assert run.emails == []
    assert run.ended == "completed"


# --- content streams -----------------------------------------------------------------------------------------------------


STREAM = make_campaign(
    {
        "id": "stream",
        "stream": {
            "cadence": {"days": ["tue"], "at": "10:00"},
            "content": [
                {"id": "c1", "title": "One", "template": "s/c1.html.j2", "subject": "One"},
                {"id": "c2", "title": "Two", "template": "s/c2.html.j2", "subject": "Two"},
                {"id": "c3", "title": "Three", "template": "s/c3.html.j2", "subject": "Three"},
            ],
        },
    },
    email("after"),
)


@pytest.mark.parametrize(
    ("start", "sends", "events", "expected"),
    [
        (
            "2026-03-02T12:00Z",
            [],
            [],
            [
                ("stream/c1", "2026-03-03T10:00+01:00"),
                ("stream/c2", "2026-03-10T10:00+01:00"),
                ("stream/c3", "2026-03-17T10:00+01:00"),
                ("after", "2026-03-17T10:00+01:00"),
            ],
        ),
        # Tuesday 10:00 on the lead's clock, before and after the EU change
        (
            "2026-03-23T12:00Z",
            [],
            [],
            [
                ("stream/c1", "2026-03-24T10:00+01:00"),
                ("stream/c2", "2026-03-31T10:00+02:00"),
                ("stream/c3", "2026-04-07T10:00+02:00"),
                ("after", "2026-04-07T10:00+02:00"),
            ],
        ),
        # a piece the lead already got from another campaign is skipped
        (
            "2026-03-02T12:00Z",
            [Send(T("2026-02-10T10:00Z"), "other-campaign", "digest", "c1")],
            [],
            [("stream/c2", "2026-03-03T10:00+01:00"), ("stream/c3", "2026-03-10T10:00+01:00"),
             ("after", "2026-03-10T10:00+01:00")],
        ),
        # so is a piece the lead downloaded
        (
            "2026-03-02T12:00Z",
            [],
            [Engagement("content_download", T("2026-02-20T10:00Z"), properties={"content": "c2"})],
            [("stream/c1", "2026-03-03T10:00+01:00"), ("stream/c3", "2026-03-10T10:00+01:00"),
             ("after", "2026-03-10T10:00+01:00")],
        ),
        # nothing left to send: the stream is exhausted at its first slot and the campaign goes on
        (
            "2026-03-02T12:00Z",
            [Send(T("2026-02-10T10:00Z"), "other-campaign", "digest", "c1"),
             Send(T("2026-02-11T10:00Z"), "other-campaign", "digest", "c3")],
            [Engagement("content_download", T("2026-02-20T10:00Z"), properties={"content": "c2"})],
            [("after", "2026-03-03T10:00+01:00")],
        ),
    ],
)
def test_a_stream_sends_unseen_pieces_in_order_at_its_cadence_then_moves_on(
    start: str, sends: list[Send], events: list[Engagement], expected: list[tuple[str, str]]
) -> None:
    run = drive(STREAM, NO_LIMITS, make_lead("Europe/Berlin"), T(start), sends=sends, events=events)
    assert run.emails == [(key, T(at)) for key, at in expected]
    assert [e.step for e in run.outcomes("exhausted")] == ["stream"]
    assert run.ended == "completed"


def test_a_stream_email_carries_its_content_piece() -> None:
    run = drive(STREAM, NO_LIMITS, make_lead("Europe/Berlin"), T("2026-03-02T12:00Z"), until=T("2026-03-04T00:00Z"))
    [action] = run.actions
    assert (action.kind, action.step_id, action.template, action.subject) == ("email", "stream", "s/c1.html.j2", "One")
    assert action.content is not None and action.content.id == "c1"


# --- A/B variants --------------------------------------------------------------------------------------------------------


AB = make_campaign(
    {
        "id": "pitch",
        "email": {
            "template": "pitch.html.j2",
            "subject": "Default subject",
            "variants": [
                {"id": "a", "weight": 3, "subject": "Subject A"},
                {"id": "b", "weight": 1, "template": "pitch_b.html.j2"},
            ],
        },
    }
)


def variant_of(key: str, at: str = "2026-03-02T09:00Z") -> Action:
    result = advance(AB, NO_LIMITS, EnrollmentState.start(AB, T(at)), LeadView(key=key, email=f"{key}@example.com"),
                     History(), T(at))
    [action] = result.actions
    return action


def test_a_variant_takes_the_missing_parts_from_the_email() -> None:
    by_variant = {}
    for n in range(50):
        action = variant_of(f"lead-{n}")
        by_variant[action.variant] = (action.template, action.subject)
    assert by_variant == {"a": ("pitch.html.j2", "Subject A"), "b": ("pitch_b.html.j2", "Default subject")}


def test_a_leads_variant_is_fixed() -> None:
    for n in range(20):
        first = variant_of(f"lead-{n}")
        again = variant_of(f"lead-{n}", "2026-07-15T13:00Z")
        assert again.variant == first.variant
        assert choose_variant(f"lead-{n}:camp:pitch", AB.steps[0].email.resolved_variants())[0] == first.variant


def test_variant_weights_are_roughly_respected() -> None:
    counts = {"a": 0, "b": 0}
    for n in range(1000):
        counts[str(variant_of(f"lead-{n}").variant)] += 1
    assert 650 <= counts["a"] <= 850, counts
    assert counts["a"] + counts["b"] == 1000


def test_the_variant_is_recorded_in_the_path() -> None:
    action = variant_of("lead-7")
    result = advance(AB, NO_LIMITS, EnrollmentState.start(AB, T("2026-03-02T09:00Z")), LeadView("lead-7", "x@example.com"),
                     History(), T("2026-03-02T09:00Z"))
    assert result.notes == [PathEntry("pitch", T("2026-03-02T09:00Z"), "sent", f"variant {action.variant}")]


def test_a_single_row_is_its_own_variant() -> None:
    row = (None, 1, "t.html.j2", "s")
    assert choose_variant("anything", [row]) == row


# --- exits ---------------------------------------------------------------------------------------------------------------


EXITING = make_campaign(email("intro", "1d"), email("later", "1d"), exit={"events": ["demo_request"]})
ENROLLED = T("2026-03-02T09:00Z")
DUE = T("2026-03-03T09:00Z")


@pytest.mark.parametrize(
    ("lead_fields", "events", "expected"),
    [
        ({"unsubscribed": True}, [], "unsubscribed"),
        ({"bounced": True}, [], "bounced"),
        ({"stage": "sql"}, [], "stage:sql"),
        ({"stage": "customer"}, [], "stage:customer"),
        ({}, [Engagement("demo_request", T("2026-03-02T12:00Z"))], "goal:demo_request"),
        ({}, [Engagement("unsubscribe", T("2026-03-02T12:00Z"))], "unsubscribed"),
        ({}, [Engagement("bounce", T("2026-03-02T12:00Z"))], "bounced"),
        ({}, [Engagement("spam_complaint", T("2026-03-02T12:00Z"))], "spam_complaint"),
        # a goal reached before enrolling is no reason to leave; neither is an event not counted as a goal
        ({}, [Engagement("demo_request", T("2026-03-01T12:00Z"))], None),
        ({}, [Engagement("webinar_attended", T("2026-03-02T12:00Z"))], None),
        ({"stage": "mql"}, [], None),
    ],
)
def test_exit_reasons(lead_fields: dict[str, Any], events: list[Engagement], expected: str | None) -> None:
    state = EnrollmentState.start(EXITING, ENROLLED)
    result = advance(EXITING, NO_LIMITS, state, make_lead(**lead_fields), History(events), DUE)
    assert result.ended == expected
    expected_emails = [] if expected else [("intro", DUE)]
    assert [(a.step_key, a.at) for a in result.actions] == expected_emails


def test_a_goal_event_in_the_future_of_now_does_not_count_yet() -> None:
    state = EnrollmentState.start(EXITING, ENROLLED)
    later = Engagement("demo_request", T("2026-03-04T12:00Z"))
    assert advance(EXITING, NO_LIMITS, state, make_lead(), History([later]), DUE).ended is None


def test_exit_stages_are_the_campaigns() -> None:
    campaign = make_campaign(email("intro"), email("later", "1d"), exit={"stages": ["customer"]})
    state = EnrollmentState.start(campaign, ENROLLED)
    assert advance(campaign, NO_LIMITS, state, make_lead(stage="sql"), History(), ENROLLED).ended is None
    assert advance(campaign, NO_LIMITS, state, make_lead(stage="customer"), History(), ENROLLED).ended == "stage:customer"


# --- catch-up after downtime ---------------------------------------------------------------------------------------------


CATCH_UP = make_campaign(email("a"), email("b", "2d"), email("c", "2d"))


@pytest.mark.parametrize(
    ("max_late", "now", "expected_action", "expected_entry"),
    [
        ("3d", "2026-03-04T09:00Z", True, PathEntry("a", T("2026-03-04T09:00Z"), "sent")),
        ("3d", "2026-03-05T09:00Z", True, PathEntry("a", T("2026-03-05T09:00Z"), "sent")),
        (
            "3d",
            "2026-03-05T09:00:01Z",
            False,
            PathEntry("a", T("2026-03-05T09:00:01Z"), "late", "due 2026-03-02T09:00:00+00:00, more than 3d late"),
        ),
        (None, "2026-04-30T09:00Z", True, PathEntry("a", T("2026-04-30T09:00Z"), "sent")),
    ],
)
def test_an_email_more_than_max_late_late_is_skipped_and_recorded(
    max_late: str | None, now: str, expected_action: bool, expected_entry: PathEntry
) -> None:
    policy = Policy.model_validate({"frequency_cap": None, "catch_up": {"max_late": max_late}})
    state = EnrollmentState.start(CATCH_UP, T("2026-03-02T09:00Z"))
    result = advance(CATCH_UP, policy, state, make_lead(), History(), T(now))
    assert [a.step_key for a in result.actions] == (["a"] if expected_action else [])
    assert result.notes == [expected_entry]
    # either way the lead goes on to b, counting its wait from now
    assert result.state.step_id == "b"
    assert result.next_due_at == T(now) + timedelta(days=2)


def test_after_downtime_a_long_enrolled_lead_gets_one_email_and_the_next_after_its_wait() -> None:
    state = EnrollmentState.start(CATCH_UP, T("2026-01-05T09:00Z"))  # everything has been due for weeks
    run = drive(CATCH_UP, NO_LIMITS, make_lead(), T("2026-03-02T09:00Z"), state=state)
    assert run.emails == [("a", T("2026-03-02T09:00Z")), ("b", T("2026-03-04T09:00Z")), ("c", T("2026-03-06T09:00Z"))]


def test_after_downtime_the_first_advance_sends_one_email_only() -> None:
    state = EnrollmentState.start(CATCH_UP, T("2026-01-05T09:00Z"))
    result = advance(CATCH_UP, NO_LIMITS, state, make_lead(), History(), T("2026-03-02T09:00Z"))
    assert [a.step_key for a in result.actions] == ["a"]
    assert result.next_due_at == T("2026-03-04T09:00Z")


# --- loops ---------------------------------------------------------------------------------------------------------------


def test_a_goto_loop_without_waits_does_not_hang() -> None:
    campaign = make_campaign(
        {"id": "tag", "update": {"add_tags": ["looping"]}, "goto": "route"},
        {"id": "route", "branch": [{"goto": "tag"}]},
    )
    now = T("2026-03-02T09:00Z")
    result = advance(campaign, NO_LIMITS, EnrollmentState.start(campaign, now), make_lead(), History(), now)
    # the loop is reported once and the enrollment ends, instead of running again every minute
    assert result.ended is not None and result.ended.startswith("loop:")
    assert result.next_due_at is None
    assert len(result.state.path) == MAX_STEPS_PER_ADVANCE


def test_an_email_loop_without_waits_is_held_back_by_the_cap() -> None:
    campaign = make_campaign(email("again", goto="again"))
    run = drive(campaign, Policy(), make_lead(), T("2026-03-02T09:00Z"), until=T("2026-03-04T12:00Z"))
    assert run.emails == [("again", T("2026-03-02T09:00Z")), ("again", T("2026-03-03T09:00Z")),
                          ("again", T("2026-03-04T09:00Z"))]


# --- editing a live campaign ---------------------------------------------------------------------------------------------


V1 = make_campaign(email("a"), email("b", "1d"), email("c", "2d"), email("d", "1d"))


def waiting_on_c() -> EnrollmentState:
    """A lead that got a (Mon) and b (Tue) and waits on c (due Thu 2026-03-05 09:00)."""
    run = drive(V1, NO_LIMITS, make_lead(), T("2026-03-02T09:00Z"), until=T("2026-03-04T09:00Z"))
    assert run.state.step_id == "c" and run.state.arrived_at == T("2026-03-03T09:00Z")
    return run.state


# The engine meets a removed step only when the version the lead ran under is unknown (recorded before versions were
# kept; nurture.core.changes moves the others when the new version comes into force): it follows ``replaces`` or lets
# the lead leave, and never guesses.


@pytest.mark.parametrize(
    ("steps", "expected", "reason"),
    [
        ([email("a"), email("b"), email("d")], None, "step_removed:c"),  # no guess, even with a plain email after b
        ([email("a"), email("x", replaces=["c"]), email("d")], "x", None),
        ([email("a"), email("b"), email("d", replaces=["old", "c"])], "d", None),
        ([email("a"), email("b", replaces=["other"])], None, "step_removed:c"),
    ],
)
def test_relocate_without_the_old_version(steps: list[dict[str, Any]], expected: str | None, reason: str | None) -> None:
    state = EnrollmentState("c", T("2026-03-03T09:00Z"), T("2026-03-02T09:00Z"),
                            tuple(PathEntry(s, T("2026-03-02T09:00Z"), "sent") for s in ("a", "b")))
    relocation = relocate(make_campaign(*steps), state)
    assert (relocation.target, relocation.end_reason) == (expected, reason)


def test_editing_a_live_campaign_a_kept_step_that_moved_runs_with_its_new_definition() -> None:
    v2 = make_campaign(
        email("welcome-back"), email("a"), email("b", "1d"),
        {"id": "c", "wait": "3d", "email": {"template": "c2.html.j2", "subject": "C, rewritten"}},
        email("d", "1d"),
    )
    run = drive(v2, NO_LIMITS, make_lead(), T("2026-03-05T09:00Z"), state=waiting_on_c())
    assert run.emails == [("c", T("2026-03-06T09:00Z")), ("d", T("2026-03-07T09:00Z"))]
    assert (run.actions[0].template, run.actions[0].subject) == ("c2.html.j2", "C, rewritten")
    assert run.outcomes("relocated") == []


def test_editing_a_live_campaign_a_removed_step_goes_on_with_the_step_that_replaces_it() -> None:
    v2 = make_campaign(email("a"), email("b", "1d"), email("x", "3d", replaces=["c"]), email("d", "1d"))
    run = drive(v2, NO_LIMITS, make_lead(), T("2026-03-05T09:00Z"), state=waiting_on_c())
    assert run.outcomes("relocated") == [
        PathEntry("c", T("2026-03-05T09:00Z"), "relocated", "step 'c' was removed: 'x' replaces it")
    ]
    # x's wait counts from when the lead arrived at c (Tue)
    assert run.emails == [("x", T("2026-03-06T09:00Z")), ("d", T("2026-03-07T09:00Z"))]
    assert run.ended == "completed"


def test_editing_a_live_campaign_a_removed_step_without_replacement_ends_the_enrollment_when_its_version_is_unknown() -> None:
    v2 = make_campaign(email("a"), email("b", "1d"), email("d", "1d"))
    run = drive(v2, NO_LIMITS, make_lead(), T("2026-03-05T09:00Z"), state=waiting_on_c())
    assert run.emails == []
    assert [e.outcome for e in run.state.path] == ["sent", "sent", "relocated"]
    assert run.ended == "step_removed:c"


def test_the_state_survives_its_json_round_trip() -> None:
    events = [Engagement("email_open", T("2026-03-02T11:00Z"), "camp", "intro")]
    run = drive(CONDITIONAL, NO_LIMITS, make_lead(), T("2026-03-02T09:00Z"), events=events, until=T("2026-03-03T12:00Z"))
    v2 = make_campaign(email("intro"), email("follow-up", "1d"), email("new-last", "1d"))
    moved = advance(v2, NO_LIMITS, run.state, make_lead(), History(events), T("2026-03-03T12:00Z")).state
    for state in (run.state, moved):
        stored = json.loads(json.dumps(state.to_json()))
        restored = EnrollmentState.from_row(state.step_id, state.arrived_at, state.enrolled_at, stored)
        assert restored == state
        assert len(restored.path) >= 2
        later = T("2026-03-05T09:00Z")
        assert advance(v2, NO_LIMITS, restored, make_lead(), History(events), later) == advance(
            v2, NO_LIMITS, state, make_lead(), History(events), later
        )


def test_a_state_without_stored_json_has_an_empty_path() -> None:
    state = EnrollmentState.from_row("a", T("2026-03-02T09:00Z"), T("2026-03-02T09:00Z"), {})
    assert state.path == ()


# --- conditions ----------------------------------------------------------------------------------------------------------


SINCE = T("2026-03-02T09:00Z")
NOW = T("2026-03-10T09:00Z")
OPENED_A = Engagement("email_open", T("2026-03-03T10:00Z"), "camp", "a")
CLICKED_A = Engagement("email_click", T("2026-03-03T10:00Z"), "camp", "a")
CLICKED_A_ELSEWHERE = Engagement("email_click", T("2026-03-03T10:00Z"), "other-campaign", "a")
CLICKED_A_BEFORE = Engagement("email_click", T("2026-03-01T10:00Z"), "camp", "a")
CLICKED_A_LATER = Engagement("email_click", T("2026-03-11T10:00Z"), "camp", "a")
CLICKED_PIECE = Engagement("email_click", T("2026-03-03T10:00Z"), "camp", "stream/c1")
WEBINAR = Engagement("webinar_attended", T("2026-03-04T17:00Z"))


@pytest.mark.parametrize(
    ("condition", "lead_fields", "events", "expected"),
    [
        ({"opened": "a"}, {}, [OPENED_A], True),
        ({"opened": "a"}, {}, [CLICKED_A], True),  # a click counts as an open
        ({"opened": "a"}, {}, [], False),
        ({"opened": "a"}, {}, [CLICKED_A_ELSEWHERE], False),
        ({"opened": "a"}, {}, [CLICKED_A_BEFORE], False),
        ({"opened": "a"}, {}, [CLICKED_A_LATER], False),
        ({"clicked": "a"}, {}, [OPENED_A], False),
        ({"clicked": "stream"}, {}, [CLICKED_PIECE], True),  # a click on a stream piece is a click on the stream step
        ({"clicked": ["a", "b"]}, {}, [CLICKED_A], False),  # every step listed
        ({"not_opened": "a"}, {}, [], True),
        ({"not_opened": "a"}, {}, [OPENED_A], False),
        ({"not_clicked": "a"}, {}, [OPENED_A], True),
        ({"event": "webinar_attended"}, {}, [WEBINAR], True),
        ({"event": ["demo_request", "webinar_attended"]}, {}, [WEBINAR], True),  # any of them
        ({"event": "webinar_attended"}, {}, [], False),
        ({"no_event": "webinar_attended"}, {}, [WEBINAR], False),
        ({"no_event": "webinar_attended"}, {}, [], True),
        ({"score": {"gte": 40}}, {"score": 40}, [], True),
        ({"score": {"gte": 40}}, {"score": 39.5}, [], False),
        ({"score": {"gt": 10, "lt": 20}}, {"score": 15}, [], True),
        ({"lead": {"industry": "software"}}, {"attributes": {"industry": " Software "}}, [], True),
        ({"lead": {"country": ["US", "CA"]}}, {"attributes": {"country": "ca"}}, [], True),
        ({"lead": {"country": ["US", "CA"]}}, {"attributes": {"country": "DE"}}, [], False),
        ({"lead": {"company_size": {"gte": 200}}}, {"attributes": {"company_size": 250}}, [], True),
        ({"lead": {"company_size": {"gte": 200}}}, {"attributes": {"company_size": "n/a"}}, [], False),
        ({"lead": {"tags": "vip"}}, {"tags": ("partner", "VIP")}, [], True),
        ({"lead": {"fleet_size": {"gt": 100}}}, {"custom": {"fleet_size": 140}}, [], True),
        ({"lead": {"tags": {"not_in": ["nurtured"]}}}, {"tags": ("vip", "Nurtured")}, [], False),
        ({"lead": {"tags": {"not_in": ["nurtured"]}}}, {"tags": ("vip",)}, [], True),
        ({"lead": {"nickname": "x"}}, {}, [], False),
        ({"lead": {"stage": {"in": ["mql", "sql"]}}}, {}, [], True),
        ({"lead": {"stage": {"not_in": ["mql"]}}}, {}, [], False),
        ({"lead": {"stage": {"ne": "MQL"}}}, {}, [], False),
        ({"any": [{"clicked": "a"}, {"score": {"gte": 40}}]}, {"score": 50}, [], True),
        ({"any": [{"clicked": "a"}, {"score": {"gte": 40}}]}, {"score": 5}, [], False),
        ({"all": [{"opened": "a"}, {"score": {"gte": 40}}]}, {"score": 50}, [OPENED_A], True),
        ({"all": [{"opened": "a"}, {"score": {"gte": 40}}]}, {"score": 5}, [OPENED_A], False),
        ({"not": {"opened": "a"}}, {}, [], True),
        ({"not": {"opened": "a"}}, {}, [OPENED_A], False),
        ({"opened": "a", "score": {"gte": 40}}, {"score": 10}, [OPENED_A], False),  # several keys: all must hold
    ],
)
def test_evaluate(condition: dict[str, Any], lead_fields: dict[str, Any], events: list[Engagement], expected: bool) -> None:
    parsed = Condition.model_validate(condition)
    lead = make_lead(**lead_fields)
    assert evaluate(parsed, lead=lead, history=History(events), campaign_id="camp", since=SINCE, now=NOW) is expected


@pytest.mark.parametrize(
    ("value", "test", "expected"),
    [
        ("Software", {"eq": "software"}, True),
        (5, {"eq": 5}, True),
        ("abc", {"gt": 1}, False),
        (True, {"gte": 0}, False),  # a boolean is not a number
        ("42", {"gte": 40}, True),  # numeric text is a number
        (None, {"lt": 10}, False),
        ("DE", {"not_in": ["us", "ca"]}, True),
    ],
)
def test_compare(value: Any, test: dict[str, Any], expected: bool) -> None:
    assert compare(value, Comparison.model_validate(test)) is expected


def test_field_matches_any_item_of_a_list_field() -> None:
    assert field_matches(["a", "B"], "b") is True
    assert field_matches(["a", "B"], ["c", "d"]) is False


@pytest.mark.parametrize(
    ("where", "lead_fields", "events", "expected"),
    [
        (None, {}, [], True),
        ({"industry": ["software", "logistics"]}, {"attributes": {"industry": "Logistics"}}, [], True),
        ({"industry": ["software"]}, {"attributes": {"industry": "Logistics"}}, [], False),
        ({"industry": ["software"]}, {}, [], False),
        ({"country": ["US"]}, {"attributes": {"country": "us"}}, [], True),
        ({"company_size": {"gte": 50}}, {"attributes": {"company_size": 49}}, [], False),
        ({"tags": ["ebook", "vip"]}, {"tags": ("VIP",)}, [], True),
        ({"tags": ["ebook"]}, {"tags": ("vip",)}, [], False),
        ({"had_event": ["content_download"]}, {}, [Engagement("content_download", SINCE)], True),
        ({"had_event": ["content_download"]}, {}, [WEBINAR], False),
        ({"fields": {"crm_source": "hubspot"}}, {"custom": {"crm_source": "HubSpot"}}, [], True),
    ],
)
def test_filter_matches(where: dict[str, Any] | None, lead_fields: dict[str, Any], events: list[Engagement],
                        expected: bool) -> None:
    campaign = make_campaign(email("a"), entry={"stage": "mql", "where": where})
    assert filter_matches(campaign.entry.where, make_lead(**lead_fields), History(events)) is expected


@pytest.mark.parametrize(
    ("campaign_fields", "lead_fields", "expected"),
    [
        ({}, {}, True),
        ({"paused": True}, {}, False),
        ({}, {"unsubscribed": True}, False),
        ({}, {"bounced": True}, False),
        ({}, {"stage": "lead"}, False),
        ({"entry": {"stage": ["lead", "mql"]}}, {"stage": "lead"}, True),
        ({"entry": {"where": {"country": ["US"]}}}, {"attributes": {"country": "FR"}}, False),
    ],
)
def test_entry_matches(campaign_fields: dict[str, Any], lead_fields: dict[str, Any], expected: bool) -> None:
    campaign = make_campaign(email("a"), **campaign_fields)
    assert entry_matches(campaign, make_lead(**lead_fields), History()) is expected
