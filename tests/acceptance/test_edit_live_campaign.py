"""Editing a live campaign, end to end: ``nurture plan --json`` predicts what each edit does to the leads in the
database, ``nurture run --once`` (the real worker, sending to the real SMTP sink) then does exactly that, and no lead
receives an email it did not earn.

The campaign has waits, a ``wait_for`` with ``on_event``/``on_timeout`` branches, and live leads at every step that
waits, reached through the worker itself (T0 is Monday 2026-03-02 12:00 UTC; each group of leads is imported on
another day, one group clicks the guide). At the edit, 1 lead waits at ``case-study``, 2 at ``cold``, 3 at
``clicked``, 4 at ``w`` (the ``wait_for``), 5 at ``guide``. The commands run in this process, on the injected clock.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import typer
from replay_world import table_contents
from smtp_sink import SmtpSink
from typer.testing import CliRunner
from worker_world import T0, Clock, deliveries, enrollments, seed_leads, subjects, write_project

from nurture.application.event_input import EventIn
from nurture.application.record_events import record_events
from nurture.definitions.loader import load_catalog
from nurture.definitions.scoring import ScoringRules
from nurture.storage.database import make_engine
from nurture.storage.migrate import upgrade

V1 = """\
id: trial
name: Trial
entry: {stage: mql}
send_window: always
steps:
  - id: welcome
    email: {template: welcome.html.j2, subject: "Welcome"}
  - id: guide
    wait: 1d
    email: {template: followup.html.j2, subject: "The guide"}
  - id: w
    wait_for: {event: email_click, step: guide, timeout: 2d}
    on_event: clicked
    on_timeout: cold
  - id: clicked
    wait: 1d
    email: {template: offer.html.j2, subject: "You clicked"}
    goto: end
  - id: cold
    wait: 1d
    email: {template: news.html.j2, subject: "Still there?"}
  - id: case-study
    wait: 2d
    email: {template: checklist.html.j2, subject: "A case study"}
"""
W_STEP = """\
  - id: w
    wait_for: {event: email_click, step: guide, timeout: 2d}
    on_event: clicked
    on_timeout: cold
"""
GUIDE_EMAIL = '    email: {template: followup.html.j2, subject: "The guide"}\n'
COLD_STEP = '  - id: cold\n    wait: 1d\n    email: {template: news.html.j2, subject: "Still there?"}\n'
CLICKED_STEP = """\
  - id: clicked
    wait: 1d
    email: {template: offer.html.j2, subject: "You clicked"}
    goto: end
"""

# Every edit of the issue, as the marketer would write it
EDITS = {
    "remove-wait-for": V1.replace(W_STEP, "").replace(GUIDE_EMAIL, GUIDE_EMAIL + "    goto: cold\n"),
    "remove-wait-for-replaced": V1.replace(W_STEP, "").replace(GUIDE_EMAIL, GUIDE_EMAIL + "    goto: cold\n")
    .replace("  - id: cold\n", "  - id: cold\n    replaces: [w]\n"),
    "change-wait": V1.replace("    wait: 2d\n", "    wait: 3d\n"),
    "change-subject": V1.replace('subject: "Still there?"', 'subject: "Are you still there?"'),
    "pause": V1.replace("send_window: always\n", "send_window: always\npaused: true\n"),
    "change-entry": V1.replace("entry: {stage: mql}", "entry: {stage: [mql, lead]}"),
    "remove-email-step": V1.replace(COLD_STEP, "").replace("on_timeout: cold", "on_timeout: case-study"),
    # clicked to the end; case-study, no longer last, ends the campaign explicitly
    "move-step": V1.replace(CLICKED_STEP, "").replace('subject: "A case study"}\n', 'subject: "A case study"}\n'
                                                      '    goto: end\n') + CLICKED_STEP,
    "move-step-alone": V1.replace(CLICKED_STEP, "") + CLICKED_STEP,
}

GROUPS = {"cs": 1, "cold": 2, "clk": 3, "w": 4, "guide": 5}
"""Lead groups by the step they wait at when the campaign is edited, and how many leads each has."""
WELCOME_GUIDE = ["Welcome", "The guide"]
V1_JOURNEYS = {
    "cs": [*WELCOME_GUIDE, "Still there?", "A case study"],
    "cold": [*WELCOME_GUIDE, "Still there?", "A case study"],
    "clk": [*WELCOME_GUIDE, "You clicked"],
    "w": [*WELCOME_GUIDE, "Still there?", "A case study"],
    "guide": [*WELCOME_GUIDE, "Still there?", "A case study"],
}
"""What each group receives from its first day to the last, without any edit."""
EDIT_AT = T0 + timedelta(days=4, hours=1)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def world(tmp_path: Path, clock: Clock, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The project and database, the commands on the injected clock, and the leads placed at every waiting step."""
    from nurture.cli import app as cli_app
    from nurture.cli.commands import modules_for
    from nurture.settings import get_settings

    url = f"sqlite:///{tmp_path / 'nurture.db'}"
    upgrade(url)
    project = write_project(tmp_path / "project", {"trial": V1}, policy="frequency_cap: null\n")
    for name, value in project.env(url, smtp_sink.url).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(cli_app, "clock", clock)
    # the command's logging set-up would point the root logger at the runner's captured (then closed) stderr
    monkeypatch.setattr("nurture.cli.commands.run.configure_logging", lambda level: None)
    get_settings.cache_clear()
    app = typer.Typer()
    for module in modules_for(None):
        module.register(app)

    def nurture(*args: str, code: int = 0) -> str:
        result = CliRunner().invoke(app, list(args))
        assert result.exit_code == code, (result.output, result.exception)
        return result.output

    emails: dict[str, list[str]] = {}

    def day(days: float, group: str | None = None) -> None:
        clock.now = T0 + timedelta(days=days)
        if group is not None:
            emails[group] = seed_leads(url, tmp_path, GROUPS[group], prefix=group)
        nurture("run", "--once")

    day(0, "cs")
    day(1, "cold")
    day(2, "clk")
    day(3, "w")
    clock.now = T0 + timedelta(days=3, hours=6)  # the clk group clicks the guide, as its tracked link records it
    engine = make_engine(url)
    catalog = load_catalog(project.campaigns_dir, project.templates_dir)
    record_events(engine, catalog, ScoringRules(), [EventIn(email=e, type="email_click", campaign_id="trial",
                                                            step_key="guide") for e in emails["clk"]],
                  now=clock.now, actor="system")
    nurture("run", "--once")
    day(4, "guide")
    waiting = {(e.email.split("0")[0], e.step_id) for e in enrollments(engine) if e.status == "active"}
    assert waiting == {("cs", "case-study"), ("cold", "cold"), ("clk", "clicked"), ("w", "w"), ("guide", "guide")}
    clock.now = EDIT_AT
    yield {"project": project, "engine": engine, "nurture": nurture, "emails": emails, "url": url,
           "tmp_path": tmp_path}
    engine.dispose()
    get_settings.cache_clear()


def plan_json(world: dict[str, Any]) -> dict[str, Any]:
    code = 2  # every edit here concerns live leads: review required
    return json.loads(world["nurture"]("plan", "--json", code=code))


def effects(plan: dict[str, Any]) -> dict[tuple[str, str | None], dict[str, Any]]:
    (campaign,) = plan["campaigns"]
    return {(effect["kind"], effect["step"]): effect for effect in campaign["effects"]}


def run_to_the_end(world: dict[str, Any], clock: Clock) -> None:
    """Run the worker at the edit, then at every moment something falls due, until nothing is left."""
    for at in (EDIT_AT, T0 + timedelta(days=4, hours=6), *(T0 + timedelta(days=d) for d in range(5, 13))):
        clock.now = at
        world["nurture"]("run", "--once")


def received(world: dict[str, Any], sink: SmtpSink) -> dict[str, list[list[str]]]:
    """The subjects each lead of each group received, in order."""
    return {group: [subjects(sink, email) for email in emails] for group, emails in world["emails"].items()}


def assert_journeys(world: dict[str, Any], sink: SmtpSink, **changed: list[str]) -> None:
    """Each group received its V1 journey (or the one given), and nobody but those who clicked got 'You clicked'."""
    got = received(world, sink)
    for group, count in GROUPS.items():
        assert got[group] == [changed.get(group, V1_JOURNEYS[group])] * count, group
    clicked = set(world["emails"]["clk"])
    for message in sink.messages:
        if message.parsed()["Subject"] == "You clicked":
            assert set(message.rcpt_tos) <= clicked, "an email sent on a branch the lead did not earn"


def edit(world: dict[str, Any], name: str) -> None:
    world["project"].write_campaign("trial", EDITS[name])


def test_without_an_edit_each_group_gets_its_journey(world: dict[str, Any], clock: Clock, smtp_sink: SmtpSink) -> None:
    assert world["nurture"]("plan") == "nothing changed: the definitions on disk are the versions in force\n"
    run_to_the_end(world, clock)
    assert_journeys(world, smtp_sink)


def test_removing_the_wait_for_step_ends_its_leads_instead_of_sending_them_down_a_branch(
        world: dict[str, Any], clock: Clock, smtp_sink: SmtpSink) -> None:
    edit(world, "remove-wait-for")
    found = effects(plan_json(world))
    assert found[("removed_step", "w")]["leads"] == 4
    assert (found[("removed_step", "w")]["to"], found[("removed_step", "w")]["end_reason"]) == (None, "step_removed:w")
    assert found[("step", "guide")]["leads"] == 5  # its new goto
    run_to_the_end(world, clock)
    ended = [e for e in enrollments(world["engine"]) if e.end_reason == "step_removed:w"]
    assert len(ended) == 4 and {e.email.split("0")[0] for e in ended} == {"w"}
    assert_journeys(world, smtp_sink, w=WELCOME_GUIDE)


def test_removing_the_wait_for_step_with_replaces_sends_its_leads_to_the_named_step(
        world: dict[str, Any], clock: Clock, smtp_sink: SmtpSink) -> None:
    edit(world, "remove-wait-for-replaced")
    found = effects(plan_json(world))
    assert (found[("removed_step", "w")]["leads"], found[("removed_step", "w")]["to"]) == (4, "cold")
    world["nurture"]("run", "--once")
    at_cold = [e for e in enrollments(world["engine"]) if e.step_id == "cold" and e.email.startswith("w")]
    assert len(at_cold) == 4
    run_to_the_end(world, clock)
    assert_journeys(world, smtp_sink)


def test_a_changed_wait_applies_to_the_leads_waiting_at_that_step(world: dict[str, Any], clock: Clock,
                                                                 smtp_sink: SmtpSink) -> None:
    edit(world, "change-wait")
    found = effects(plan_json(world))
    assert (found[("wait", "case-study")]["leads"], found[("wait", "case-study")]["by"]) == (1, "+1d")
    run_to_the_end(world, clock)
    assert_journeys(world, smtp_sink)
    (case_study,) = [d for d in deliveries(world["engine"], world["emails"]["cs"][0]) if d.step_id == "case-study"]
    assert case_study.sent_at == T0 + timedelta(days=7), "cold went out on day 4: 3 days later, not 2"


def test_a_changed_subject_reaches_the_leads_waiting_at_that_step(world: dict[str, Any], clock: Clock,
                                                                 smtp_sink: SmtpSink) -> None:
    edit(world, "change-subject")
    found = effects(plan_json(world))
    assert (found[("content", "cold")]["leads"], found[("content", "cold")]["fields"]) == (2, ["subject"])
    run_to_the_end(world, clock)
    new = [*WELCOME_GUIDE, "Are you still there?", "A case study"]
    assert_journeys(world, smtp_sink, cold=new, w=new, guide=new)


def test_pausing_stops_every_active_enrollment(world: dict[str, Any], clock: Clock, smtp_sink: SmtpSink) -> None:
    edit(world, "pause")
    found = effects(plan_json(world))
    assert found[("paused", None)]["leads"] == sum(GROUPS.values())
    before = received(world, smtp_sink)
    run_to_the_end(world, clock)
    assert received(world, smtp_sink) == before


def test_a_wider_entry_enrolls_the_leads_it_now_matches(world: dict[str, Any], clock: Clock,
                                                       smtp_sink: SmtpSink) -> None:
    newcomers = seed_leads(world["url"], world["tmp_path"], 6, stage="lead", prefix="new")
    edit(world, "change-entry")
    found = effects(plan_json(world))
    assert found[("enroll", None)]["leads"] == 6
    world["nurture"]("run", "--once")
    assert len([e for e in enrollments(world["engine"]) if e.email.startswith("new")]) == 6
    assert all(subjects(smtp_sink, email) == ["Welcome"] for email in newcomers)
    run_to_the_end(world, clock)
    assert_journeys(world, smtp_sink)


def test_removing_a_plain_email_step_sends_its_leads_on_to_what_followed_it(world: dict[str, Any], clock: Clock,
                                                                           smtp_sink: SmtpSink) -> None:
    edit(world, "remove-email-step")
    found = effects(plan_json(world))
    assert (found[("removed_step", "cold")]["leads"], found[("removed_step", "cold")]["to"]) == (2, "case-study")
    run_to_the_end(world, clock)
    skipped = [*WELCOME_GUIDE, "A case study"]
    assert_journeys(world, smtp_sink, cold=skipped, w=skipped, guide=skipped)


def test_a_moved_step_keeps_its_waiting_leads_and_run_logs_and_records_what_plan_printed(
        world: dict[str, Any], clock: Clock, smtp_sink: SmtpSink, caplog: pytest.LogCaptureFixture) -> None:
    edit(world, "move-step")
    plan = plan_json(world)
    found = effects(plan)
    assert found[("moved", "clicked")]["leads"] == 3
    assert ("next", "case-study") not in found, "case-study still ends the campaign"
    with caplog.at_level(logging.INFO, logger="nurture"):
        world["nurture"]("run", "--once")
    logged = "\n".join(r.getMessage() for r in caplog.records if r.getMessage().startswith("applied: campaign trial"))
    assert "3 leads waiting at 'clicked' (moved) go on from its new place" in logged
    assert "@" not in logged, "no personal data in the log"
    history = json.loads(world["nurture"]("campaigns", "history", "trial", "--json"))
    assert history[-1]["applied"] == plan["campaigns"][0], "run applies, and records, what plan printed"
    run_to_the_end(world, clock)
    assert_journeys(world, smtp_sink)


def test_plan_shows_what_a_move_puts_after_the_steps_leads_wait_at(world: dict[str, Any]) -> None:
    """Moved to the end as it was, clicked would follow case-study: plan says so before it happens."""
    edit(world, "move-step-alone")
    found = effects(plan_json(world))
    assert (found[("next", "case-study")]["leads"], found[("next", "case-study")]["next"],
            found[("next", "case-study")]["was"]) == (1, ["clicked"], ["end"])
    text = world["nurture"]("plan", code=2)
    assert "1 lead waiting at 'case-study' will go on to clicked after it (was end)" in text


def test_plan_exits_1_with_each_problem_at_its_line_and_0_on_a_database_that_runs_the_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    from nurture.cli.commands import versions
    from nurture.settings import get_settings

    url = f"sqlite:///{tmp_path / 'nurture.db'}"
    upgrade(url)
    project = write_project(tmp_path / "project", {"trial": V1})
    for name, value in project.env(url, "console://").items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    app = typer.Typer()
    versions.register(app)
    new = CliRunner().invoke(app, ["plan", "--json"])
    assert new.exit_code == 0, new.output  # a new campaign that nobody matches: no live lead concerned
    assert [(c["campaign"], c["status"]) for c in json.loads(new.output)["campaigns"]] == [("trial", "new")]
    project.write_campaign("trial", V1.replace("  - id: cold\n", "  - id: cold\n    replaces: [guide]\n"))
    result = CliRunner().invoke(app, ["plan"])
    assert result.exit_code == 1
    assert "trial.yaml:20: replaces: 'guide' is still a step of this campaign" in result.output
    get_settings.cache_clear()


# -- the scoring and sales impact, and the replay, in nurture plan -----------------------------------------------------

SCORING_V1 = "behaviour:\n  events:\n    email_click: 10\nthresholds:\n  mql: 40\n"
SALES = "promotion:\n  score_and_fit:\n    - {name: engaged, score: 45}\n"


def put_rules_in_force(world: dict[str, Any], caplog: pytest.LogCaptureFixture) -> str:
    """Add scoring.yaml (a click is worth 10) and sales.yaml, and let the worker put them in force; return its log."""
    campaigns = world["project"].campaigns_dir
    (campaigns / "scoring.yaml").write_text(SCORING_V1, encoding="utf-8")
    (campaigns / "sales.yaml").write_text(SALES, encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="nurture"):
        world["nurture"]("run", "--once")
    return "\n".join(record.getMessage() for record in caplog.records)


def clicks_by_lead(engine: Any) -> dict[int, int]:
    """Each mql lead's recorded clicks, read from the tables (the test's own count, not the impact's)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT l.id, COUNT(e.id) FROM lead l LEFT JOIN engagement_event e ON e.lead_id = l.id "
                                    "AND e.type = 'email_click' WHERE l.stage = 'mql' GROUP BY l.id")).all()
    return {lead_id: clicks for lead_id, clicks in rows}  # noqa: C416 (names the columns)


def rules_summary(engine: Any, kind: str) -> dict[str, Any]:
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT summary FROM definition_version WHERE kind = :kind AND ended_at IS NULL"),
                              {"kind": kind}).scalar_one()
    return json.loads(stored) if isinstance(stored, str) else stored


def test_a_scoring_edit_makes_plan_exit_2_with_the_leads_it_moves_and_run_logs_and_records_them(
        world: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    first = put_rules_in_force(world, caplog)
    # none recorded before: compared with the empty rules the worker ran without the files, every lead gets a band
    assert "15 leads change score band, 0 become MQL, 0 would be promoted (of 15 leads" in first
    assert world["nurture"]("plan") == "nothing changed: the definitions on disk are the versions in force\n"

    (world["project"].campaigns_dir / "scoring.yaml").write_text(SCORING_V1.replace("10", "50"), encoding="utf-8")
    clicks = clicks_by_lead(world["engine"])
    moved = sorted(lead for lead, n in clicks.items() if 10 * n < 40 <= 50 * n)
    promoted = sorted(lead for lead, n in clicks.items() if 10 * n < 45 <= 50 * n)
    assert len(moved) == GROUPS["clk"] and promoted == moved, "the clk group clicked the guide once each"
    before = table_contents(world["engine"])
    plan = json.loads(world["nurture"]("plan", "--json", code=2))
    assert table_contents(world["engine"]) == before, "plan only reads"
    assert plan["live"] is True and plan["campaigns"] == []
    [scoring] = plan["scoring"]
    assert scoring["live"] is True
    assert (scoring["band_changes"]["count"], sorted(scoring["band_changes"]["examples"])) == (len(moved), moved)
    assert scoring["band_changes"]["moves"] == [{"from": "below mql", "to": "mql", "count": len(moved)}]
    assert (scoring["promoted"]["count"], sorted(scoring["promoted"]["examples"])) == (len(promoted), promoted)
    assert scoring["become_mql"]["count"] == 0 and scoring["leads"] == len(clicks)
    assert [f["kind"] for f in scoring["files"]] == ["scoring", "sales"]
    text = world["nurture"]("plan", code=2)
    assert "3 leads change score band, 0 become MQL, 3 would be promoted (of 15 leads; 3 change score)" in text
    assert "@example.com" not in text

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="nurture"):
        world["nurture"]("run", "--once")
    logged = "\n".join(r.getMessage() for r in caplog.records if r.getMessage().startswith("applied: scoring"))
    assert "3 leads change score band, 0 become MQL, 3 would be promoted" in logged
    assert f"promoted: e.g. lead {', '.join(map(str, promoted))}" in logged and "@example.com" not in logged
    recorded = rules_summary(world["engine"], "scoring")
    assert recorded["impact"] == scoring, "run records what plan printed"
    assert world["nurture"]("plan") == "nothing changed: the definitions on disk are the versions in force\n"


def test_the_impact_at_start_up_can_be_skipped(world: dict[str, Any], caplog: pytest.LogCaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from nurture.settings import get_settings

    monkeypatch.setenv("NURTURE_START_SCORING_IMPACT", "false")
    get_settings.cache_clear()
    logged = put_rules_in_force(world, caplog)
    assert "scoring and sales impact not counted (NURTURE_START_SCORING_IMPACT=false)" in logged
    assert "change score band" not in logged
    assert "impact" not in rules_summary(world["engine"], "scoring")
    assert rules_summary(world["engine"], "scoring")["status"] == "new"


GUIDE_LATER = V1.replace("    wait: 1d\n    email: {template: followup.html.j2", "    wait: 2d\n    email: {template: "
                                                                                 "followup.html.j2")


def test_plan_replay_shows_the_same_steps_as_nurture_replay_for_the_versions_in_force_and_the_files(
        world: dict[str, Any]) -> None:
    old = write_project(world["tmp_path"] / "v1", {"trial": V1}, policy="frequency_cap: null\n").campaigns_dir
    world["project"].write_campaign("trial", GUIDE_LATER)
    before = table_contents(world["engine"])
    plan = json.loads(world["nurture"]("plan", "--replay", "30d", "--json", code=2))
    assert table_contents(world["engine"]) == before, "plan --replay only reads"
    replayed = json.loads(world["nurture"]("replay", "--old-campaigns", str(old), "--since", "30d", "--json"))
    [section] = plan["replay"]
    assert section["not_rebuilt"] == []
    assert section["campaigns"] == replayed["campaigns"] and section["since"] == replayed["since"]
    [trial] = section["campaigns"]
    steps = {s["step"]: s for s in trial["steps"]}
    # the guide went a day after welcome; a day later, it would have gone to the groups enrolled on days 0-2 before
    # the edit, and to the one enrolled on day 3 not yet (it went at day 4 under the version in force)
    assert (steps["guide"]["later"], steps["guide"]["only_old"]) == (
        GROUPS["cs"] + GROUPS["cold"] + GROUPS["clk"], GROUPS["w"])
    assert steps["welcome"]["old"] == steps["welcome"]["new"] == sum(GROUPS.values())

    text = world["nurture"]("plan", "--replay", "30d", code=2)
    assert "replay under the versions in force (old) and the files on disk (new):" in text
    assert any(line.split()[:1] == ["guide"] for line in text.splitlines())


def test_replay_differences_alone_leave_the_exit_code_at_0(world: dict[str, Any]) -> None:
    """With no lead left at or before the edited step, the replay shows the difference but no live lead is concerned."""
    world["project"].write_campaign("trial", V1.replace("  - id: welcome\n", "  - id: welcome\n    wait: 1h\n"))
    plan = json.loads(world["nurture"]("plan", "--replay", "30d", "--json", code=0))
    assert plan["live"] is False and [e["kind"] for e in plan["campaigns"][0]["effects"]] == ["wait"]
    [trial] = plan["replay"][0]["campaigns"]
    assert trial["enrollments"] == sum(GROUPS.values())
    assert {s["step"]: s["later"] for s in trial["steps"]}["welcome"] == sum(GROUPS.values())
