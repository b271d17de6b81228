"""``nurture simulate``: the library function on a virtual clock, and the command through the real console script.

The campaign is the issue's ebook example grown by a wait for a click on the case study, so events change the path.
Times worked out by hand (America/New_York is EST, UTC-5, until Sunday 2026-03-08, then EDT, UTC-4; 2026-03-02 is a Monday):

    welcome      Mon 03-02 09:00 EST  (the start)
    case-study   Wed 03-04 09:00 EST  (2d later)
    await-click  until Sat 03-07 09:00 EST (3d)   -- a click first: demo-invite 1d after the click
    checklist    Sun 03-08 09:00 EDT  (1d after the timeout, a calendar day across the DST change)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from nurture.core.engine import Action
from nurture.core.facts import Engagement, LeadView
from nurture.core.simulate import parse_event, parse_time, simulate
from nurture.definitions.campaign import Campaign
from nurture.definitions.policy import Policy
from nurture.errors import InvalidInput

NURTURE = Path(sys.executable).with_name("nurture")
SHIPPED_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def T(text: str) -> datetime:
    """An instant written in ISO 8601 with its offset."""
    return datetime.fromisoformat(text)


EBOOK = """\
id: ebook-nurture
name: Ebook downloaders
entry: {stage: mql}
exit: {events: [demo_request]}
steps:
  - id: welcome
    wait: 0s
    email: {template: ebook/welcome.html.j2, subject: "Your guide, {{ lead.first_name }}"}
  - id: case-study
    wait: 2d
    email: {template: ebook/case_study.html.j2, subject: "How Acme cut churn"}
  - id: await-click
    wait_for: {event: email_click, step: case-study, timeout: 3d}
    on_event: demo-invite
  - id: checklist
    wait: 1d
    email: {template: ebook/checklist.html.j2, subject: "A checklist for {{ lead.company }}"}
    goto: end
  - id: demo-invite
    wait: 1d
    email: {template: ebook/demo.html.j2, subject: "Worth 20 minutes, {{ lead.first_name }}?"}
"""

TEMPLATES = {
    "ebook/welcome.html.j2": (
        '{% extends "_layout.html.j2" %}{% block content %}<p>Hi {{ lead.first_name }}</p>{% endblock %}\n'
    ),
    "ebook/case_study.html.j2": '{% extends "_layout.html.j2" %}{% block content %}<p>Acme</p>{% endblock %}\n',
    "ebook/checklist.html.j2": '{% extends "_layout.html.j2" %}{% block content %}<p>Ten points</p>{% endblock %}\n',
    "ebook/demo.html.j2": '{% extends "_layout.html.j2" %}{% block content %}<p>Book a demo</p>{% endblock %}\n',
}

LEAD = {"email": "ann@example.com", "first_name": "Ann", "company": "Initech", "stage": "mql",
        "timezone": "America/New_York"}
START = "2026-03-02T14:00:00Z"


def ebook() -> Campaign:
    return Campaign.model_validate(yaml.safe_load(EBOOK))


def ann() -> LeadView:
    return LeadView(key="ann", email="ann@example.com", stage="mql", timezone="America/New_York",
                    attributes={"first_name": "Ann", "company": "Initech"})


def run(events: list[str] = (), days: float = 30) -> list[tuple[str, str | None, datetime, str]]:  # type: ignore[assignment]
    """(kind, step, at, subject or detail) of each timeline entry."""
    campaign = ebook()
    timeline = simulate(campaign, Policy(), ann(), start=T(START), days=days,
                        events=[parse_event(e, campaign.id) for e in events])
    return [(e.kind, e.step, e.at, e.subject if e.kind == "email" else e.detail) for e in timeline]


# --- the library ---------------------------------------------------------------------------------------------------------


def test_without_events_the_lead_gets_every_email_and_completes() -> None:
    assert run() == [
        ("email", "welcome", T("2026-03-02T09:00-05:00"), "Your guide, {{ lead.first_name }}"),
        ("email", "case-study", T("2026-03-04T09:00-05:00"), "How Acme cut churn"),
        ("timeout", "await-click", T("2026-03-07T09:00-05:00"), "no email_click within 3d"),
        ("email", "checklist", T("2026-03-08T09:00-04:00"), "A checklist for {{ lead.company }}"),
        ("end", None, T("2026-03-08T09:00-04:00"), "completed"),
    ]


def test_a_click_on_the_case_study_takes_the_lead_to_the_demo_invitation() -> None:
    assert run(["email_click:case-study@2026-03-05T10:00-05:00"]) == [
        ("email", "welcome", T("2026-03-02T09:00-05:00"), "Your guide, {{ lead.first_name }}"),
        ("email", "case-study", T("2026-03-04T09:00-05:00"), "How Acme cut churn"),
        ("input", None, T("2026-03-05T10:00-05:00"), "email_click on case-study"),
        ("event", "await-click", T("2026-03-05T10:00-05:00"), "email_click came first"),
        ("email", "demo-invite", T("2026-03-06T10:00-05:00"), "Worth 20 minutes, {{ lead.first_name }}?"),
        ("end", None, T("2026-03-06T10:00-05:00"), "completed"),
    ]


def test_a_click_on_another_email_changes_nothing() -> None:
    timeline = run(["email_click:welcome@2026-03-05T10:00-05:00"])
    assert [(kind, step) for kind, step, _at, _what in timeline if kind in ("email", "timeout")] == [
        ("email", "welcome"), ("email", "case-study"), ("timeout", "await-click"), ("email", "checklist")
    ]


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ("stage:sql@2026-03-03T12:00Z", "stage:sql"),
        ("unsubscribe@2026-03-03T12:00Z", "unsubscribed"),
        ("demo_request@2026-03-03T12:00Z", "goal:demo_request"),
        ("bounce@2026-03-03T12:00Z", "bounced"),
    ],
)
def test_an_exit_event_ends_the_simulation_at_once(event: str, reason: str) -> None:
    timeline = run([event])
    assert timeline[0][:2] == ("email", "welcome")
    assert timeline[-1] == ("end", "case-study", T("2026-03-03T12:00Z"), reason)
    assert [entry[1] for entry in timeline if entry[0] == "email"] == ["welcome"]


def test_reaching_the_horizon_says_the_lead_is_still_enrolled() -> None:
    timeline = run(days=3)
    assert timeline[-1] == (
        "end", "await-click", T("2026-03-05T14:00Z"),
        "still enrolled at the end of the simulation (waiting on 'await-click')",
    )
    assert [entry[1] for entry in timeline if entry[0] == "email"] == ["welcome", "case-study"]


def test_an_event_after_the_horizon_is_not_played() -> None:
    timeline = run(["stage:sql@2026-03-10T12:00Z"], days=3)
    assert "input" not in [entry[0] for entry in timeline]
    assert timeline[-1][3] == "still enrolled at the end of the simulation (waiting on 'await-click')"


def test_subjects_are_rendered_by_the_callback_with_the_action_and_lead() -> None:
    seen: list[tuple[str, str]] = []

    def render(action: Action, lead: LeadView) -> str:
        seen.append((action.step_id, lead.email))
        return f"[{action.step_id}] {action.subject}"

    timeline = simulate(ebook(), Policy(), ann(), start=T(START), days=3, render_subject=render)
    assert [e.subject for e in timeline if e.kind == "email"] == [
        "[welcome] Your guide, {{ lead.first_name }}", "[case-study] How Acme cut churn"
    ]
    assert seen == [("welcome", "ann@example.com"), ("case-study", "ann@example.com")]


def test_entries_carry_the_lead_local_time_and_serialise_in_utc() -> None:
    first = simulate(ebook(), Policy(), ann(), start=T(START), days=1)[0]
    assert first.local.isoformat() == "2026-03-02T09:00:00-05:00"
    assert first.to_json() == {
        "step": "welcome",
        "at": "2026-03-02T14:00:00Z",
        "local": "2026-03-02T09:00:00-05:00",
        "kind": "email",
        "subject": "Your guide, {{ lead.first_name }}",
        "variant": None,
        "content": None,
        "detail": "",
    }


def test_the_policy_shapes_the_timeline() -> None:
    policy = Policy.model_validate({"send_window": {"days": "mon-fri", "hours": "10:00-16:00"}})
    timeline = simulate(ebook(), policy, ann(), start=T(START), days=30)
    emails = [(e.step, e.at) for e in timeline if e.kind == "email"]
    # 09:00 is before the window: 10:00; the checklist falls on Sunday: Monday 10:00
    assert emails == [
        ("welcome", T("2026-03-02T10:00-05:00")),
        ("case-study", T("2026-03-04T10:00-05:00")),
        ("checklist", T("2026-03-09T10:00-04:00")),
    ]


def test_variants_and_stream_pieces_are_named_in_the_timeline() -> None:
    campaign = Campaign.model_validate(yaml.safe_load(textwrap.dedent("""\
        id: mixed
        name: Mixed
        steps:
          - id: pitch
            email:
              template: p.html.j2
              subject: Pitch
              variants: [{id: only-a, weight: 1000000}, {id: b, weight: 1}]
          - id: stream
            stream:
              cadence: {days: [tue], at: "10:00"}
              content:
                - {id: guide, title: Guide, template: g.html.j2, subject: Guide}
                - {id: checklist, title: Checklist, template: c.html.j2, subject: Checklist}
        """)))
    timeline = simulate(campaign, Policy(), ann(), start=T(START), days=30)
    assert [(e.kind, e.step, e.variant, e.content, e.at) for e in timeline] == [
        ("email", "pitch", "only-a", None, T("2026-03-02T09:00-05:00")),
        ("email", "stream", None, "guide", T("2026-03-03T10:00-05:00")),
        ("email", "stream", None, "checklist", T("2026-03-10T10:00-04:00")),
        ("exhausted", "stream", None, None, T("2026-03-10T10:00-04:00")),
        ("end", None, None, None, T("2026-03-10T10:00-04:00")),
    ]


# --- parsing --dates and --events -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-02T09:00:00Z", "2026-03-02T09:00Z"),
        ("2026-03-02T09:00+01:00", "2026-03-02T08:00Z"),
        ("2026-03-02T09:00", "2026-03-02T09:00Z"),  # no offset: UTC
        ("2026-03-02", "2026-03-02T00:00Z"),
        ("  2026-03-02T09:00Z ", "2026-03-02T09:00Z"),
    ],
)
def test_parse_time(text: str, expected: str) -> None:
    assert parse_time(text) == T(expected)
    assert parse_time(text).utcoffset() is not None


@pytest.mark.parametrize("text", ["yesterday", "03/02/2026", "2026-13-01", ""])
def test_parse_time_rejects(text: str) -> None:
    with pytest.raises(InvalidInput, match=r"invalid time .*use ISO 8601"):
        parse_time(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("email_click:case-study@2026-03-05T15:00Z",
         Engagement("email_click", T("2026-03-05T15:00Z"), campaign_id="ebook-nurture", step_key="case-study")),
        ("email_open:welcome@2026-03-05T16:00+01:00",
         Engagement("email_open", T("2026-03-05T15:00Z"), campaign_id="ebook-nurture", step_key="welcome")),
        ("stage:sql@2026-03-03T12:00", Engagement("stage", T("2026-03-03T12:00Z"), properties={"stage": "sql"})),
        ("content_download:guide@2026-03-03T12:00Z",
         Engagement("content_download", T("2026-03-03T12:00Z"), properties={"content": "guide"})),
        ("unsubscribe@2026-03-03T12:00Z", Engagement("unsubscribe", T("2026-03-03T12:00Z"))),
        ("demo_request@2026-03-03T12:00Z", Engagement("demo_request", T("2026-03-03T12:00Z"))),
    ],
)
def test_parse_event(text: str, expected: Engagement) -> None:
    assert parse_event(text, "ebook-nurture") == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nonsense", "invalid event 'nonsense': use TYPE[:STEP]@ISO8601"),
        ("@2026-03-03T12:00Z", "invalid event '@2026-03-03T12:00Z'"),
        ("email_click@2026-03-03T12:00Z", "email_click needs the step whose email it was"),
        ("demo_request@yesterday", "invalid time 'yesterday'"),
        ("demo_request@", "invalid time ''"),
    ],
)
def test_parse_event_rejects(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_event(text, "ebook-nurture")


# --- the command ---------------------------------------------------------------------------------------------------------
# Starting the command costs most of a second: the invocations run side by side, once, and each test judges its own.

SIMULATE = ["simulate", "ebook-nurture", "--lead", "lead.yaml"]
INVOCATIONS: dict[str, list[str]] = {
    "text": [*SIMULATE, "--start", START, "--days", "10"],
    "json-click": [*SIMULATE, "--start", START, "--json", "--event", "email_click:case-study@2026-03-05T15:00:00Z"],
    "bad-event": [*SIMULATE, "--start", START, "--event", "clicked-it"],
    "bad-start": [*SIMULATE, "--start", "next monday"],
    "unknown-campaign": ["simulate", "ebook-nurtur", "--lead", "lead.yaml", "--start", START],
}


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """A project folder (campaigns/, templates/, lead.yaml) and every invocation's result in it, by name."""
    project = tmp_path_factory.mktemp("simulate")
    (project / "campaigns").mkdir()
    (project / "campaigns" / "ebook-nurture.yaml").write_text(EBOOK, encoding="utf-8")
    templates = project / "templates"
    (templates / "ebook").mkdir(parents=True)
    for layout in ("_layout.html.j2", "_layout.txt.j2"):
        shutil.copy(SHIPPED_TEMPLATES / layout, templates / layout)
    for name, text in TEMPLATES.items():
        (templates / name).write_text(text, encoding="utf-8")
    (project / "lead.yaml").write_text(yaml.safe_dump(LEAD), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env.update(NURTURE_CAMPAIGNS_DIR=str(project / "campaigns"), NURTURE_TEMPLATES_DIR=str(project / "templates"),
               NURTURE_DEFAULT_TIMEZONE="UTC")

    def run_command(args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(NURTURE), *args], cwd=project, env=env, capture_output=True, text=True, timeout=60)

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {name: pool.submit(run_command, args) for name, args in INVOCATIONS.items()}
        return {name: future.result() for name, future in futures.items()}


def timeline_of(ran: dict[str, subprocess.CompletedProcess[str]], name: str) -> list[dict[str, Any]]:
    result = ran[name]
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_command_prints_the_timeline(ran: dict[str, subprocess.CompletedProcess[str]]) -> None:
    result = ran["text"]
    assert result.returncode == 0, result.stderr
    lines = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert lines == [
        f"ebook-nurture for ann@example.com, from {START} for 10 days",
        "2026-03-02 14:00Z Mon 2026-03-02 09:00 EST welcome email: Your guide, Ann",
        "2026-03-04 14:00Z Wed 2026-03-04 09:00 EST case-study email: How Acme cut churn",
        "2026-03-07 14:00Z Sat 2026-03-07 09:00 EST await-click timeout (no email_click within 3d)",
        "2026-03-08 13:00Z Sun 2026-03-08 09:00 EDT checklist email: A checklist for Initech",
        "2026-03-08 13:00Z Sun 2026-03-08 09:00 EDT - end (completed)",
    ]


def test_the_json_timeline_has_step_utc_time_and_rendered_subject(
    ran: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    timeline = timeline_of(ran, "json-click")
    emails = [(e["step"], e["at"], e["subject"]) for e in timeline if e["kind"] == "email"]
    assert emails == [
        ("welcome", "2026-03-02T14:00:00Z", "Your guide, Ann"),
        ("case-study", "2026-03-04T14:00:00Z", "How Acme cut churn"),
        ("demo-invite", "2026-03-06T15:00:00Z", "Worth 20 minutes, Ann?"),
    ]
    for entry in timeline:
        assert {"step", "at", "subject", "kind", "local", "detail"} <= entry.keys()
        assert entry["at"].endswith("Z") and T(entry["at"]).utcoffset().total_seconds() == 0
    assert [e["kind"] for e in timeline if e["kind"] != "email"] == ["input", "event", "end"]
    assert timeline[-1]["detail"] == "completed"


@pytest.mark.parametrize(
    ("invocation", "message"),
    [
        ("bad-event",
         "error: invalid event 'clicked-it': use TYPE[:STEP]@ISO8601, e.g. email_click:welcome@2026-03-02T10:00Z"),
        ("bad-start", "error: invalid time 'next monday': use ISO 8601, e.g. 2026-03-02T09:00:00Z"),
        ("unknown-campaign", "error: no campaign 'ebook-nurtur' (known: ebook-nurture)"),
    ],
)
def test_bad_input_is_a_message_and_exit_1_not_a_traceback(
    ran: dict[str, subprocess.CompletedProcess[str]], invocation: str, message: str
) -> None:
    result = ran[invocation]
    assert (result.returncode, result.stdout, result.stderr.splitlines()) == (1, "", [message])


def test_a_goto_loop_without_waits_is_not_replayed_every_minute() -> None:
    campaign = Campaign.model_validate({
        "id": "loop",
        "name": "Loop",
        "steps": [
            {"id": "tag", "update": {"add_tags": ["looping"]}, "goto": "route"},
            {"id": "route", "branch": [{"goto": "tag"}]},
        ],
    })
    timeline = simulate(campaign, Policy(), ann(), start=T(START), days=0.05)  # 72 minutes
    assert len(timeline) <= 2 * 64 + 1
