"""The JSON Schemas ``nurture schema`` prints accept what ``nurture check`` accepts and refuse what it refuses.

Each snippet is a whole file: a campaign (``campaigns/x.yaml``) or a policy (``campaigns/policy.yaml``). The schema's
verdict comes from the ``jsonschema`` library (what an editor's yaml-language-server does with the schema), the check's
from :func:`nurture.application.authoring.check`, the function ``nurture check`` runs. Both must agree.

A schema cannot say everything check does (references between steps, templates, timezone names, a window's end after
its start): those snippets are listed apart, schema-valid and check-invalid, so the gap is known and stays small.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from nurture.application.authoring import check
from nurture.definitions.schemas import file_schema

SHIPPED_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"

EMAIL_STEP = "  - id: a\n    email: {template: email.html.j2, subject: Hi}\n"
AB_STEP = ("  - id: a\n    email:\n      template: email.html.j2\n      subject: Hi\n"
           "      variants: [{id: a}, {id: b, subject: Hello}]\n")


def campaign(top: str = "", step: str = "", steps: str | None = None) -> str:
    """A campaign file: ``top`` lines after the id and name, ``step`` lines added to its one email step."""
    return f"id: x\nname: X\n{top}steps:\n" + (steps if steps is not None else EMAIL_STEP + step)


def stream(cadence: str) -> str:
    return (
        "  - id: s\n    stream:\n"
        f"      cadence: {cadence}\n"
        "      content:\n        - {id: p, title: P, template: email.html.j2, subject: Hi}\n"
    )


# (file text, what check says: True = no problems)
CAMPAIGNS = [
    # reentry: the README's three forms, and the object forms the model reads
    pytest.param(campaign("reentry: never\n"), True, id="reentry-never"),
    pytest.param(campaign("reentry: always\n"), True, id="reentry-always"),
    pytest.param(campaign("reentry: {after: 30d}\n"), True, id="reentry-after"),
    pytest.param(campaign("reentry: {policy: after, after: 1w}\n"), True, id="reentry-policy-after"),
    pytest.param(campaign("reentry: {policy: always}\n"), True, id="reentry-policy-always"),
    pytest.param(campaign("reentry: sometimes\n"), False, id="reentry-unknown-word"),
    pytest.param(campaign("reentry: Never\n"), False, id="reentry-capitalised"),
    pytest.param(campaign("reentry:\n"), False, id="reentry-empty"),
    pytest.param(campaign("reentry: {after: 30}\n"), False, id="reentry-after-number"),
    pytest.param(campaign("reentry: {after: 30 days}\n"), False, id="reentry-after-bad-duration"),
    pytest.param(campaign("reentry: {after: }\n"), False, id="reentry-after-empty"),
    pytest.param(campaign("reentry: {policy: after}\n"), False, id="reentry-policy-after-without-duration"),
    pytest.param(campaign("reentry: {policy: never, after: 2d}\n"), False, id="reentry-never-with-duration"),
    pytest.param(campaign("reentry: {afterr: 2d}\n"), False, id="reentry-unknown-key"),
    # replaces: a list of the ids of removed steps (README, "Editing a live campaign")
    pytest.param(campaign("", "    replaces: [old-step]\n"), True, id="replaces-one"),
    pytest.param(campaign("", "    replaces: [old-step, older_step]\n"), True, id="replaces-several"),
    pytest.param(campaign("", "    replaces: []\n"), True, id="replaces-empty"),
    pytest.param(campaign("", "    replaces: old-step\n"), False, id="replaces-not-a-list"),
    pytest.param(campaign("", "    replaces: [Old Step]\n"), False, id="replaces-not-an-id"),
    pytest.param(campaign("", "    replaces: [1]\n"), False, id="replaces-a-number"),
    # send windows: always, hours up to 24:00, day names, ranges, aliases, lists and comma lists, any case
    pytest.param(campaign("send_window: always\n"), True, id="window-always"),
    pytest.param(campaign("", "    send_window: always\n"), True, id="step-window-always"),
    pytest.param(campaign("send_window: {days: mon-fri, hours: '09:00-17:00'}\n"), True, id="window-mapping"),
    pytest.param(campaign("send_window: {hours: '09:00-24:00'}\n"), True, id="window-until-midnight"),
    pytest.param(campaign("send_window: {days: daily, hours: '00:00-24:00'}\n"), True, id="window-whole-day"),
    pytest.param(campaign("send_window: {hours: ' 9:30 - 24:00 '}\n"), True, id="window-spaces-one-digit-hour"),
    pytest.param(campaign("send_window: {days: [mon, wed, FRI]}\n"), True, id="days-list"),
    pytest.param(campaign("send_window: {days: 'mon, wed,fri'}\n"), True, id="days-comma-list"),
    pytest.param(campaign("send_window: {days: Monday-Thursday}\n"), True, id="days-full-names-range"),
    pytest.param(campaign("send_window: {days: fri-mon}\n"), True, id="days-wrapping-range"),
    pytest.param(campaign("send_window: {days: 'mon - fri'}\n"), True, id="days-range-with-spaces"),
    pytest.param(campaign("send_window: {days: [weekdays, sat]}\n"), True, id="days-alias-and-name"),
    pytest.param(campaign("send_window: {days: weekends}\n"), True, id="days-weekends"),
    pytest.param(campaign("send_window: {days: all}\n"), True, id="days-all"),
    pytest.param(campaign("send_window: {days: [Daily]}\n"), True, id="days-alias-any-case"),
    pytest.param(campaign("send_window: allways\n"), False, id="window-misspelt-always"),
    pytest.param(campaign("send_window: never\n"), False, id="window-never"),
    pytest.param(campaign("send_window: {hours: '9-17'}\n"), False, id="hours-without-minutes"),
    pytest.param(campaign("send_window: {hours: '09:00-24:01'}\n"), False, id="hours-past-midnight"),
    pytest.param(campaign("send_window: {hours: '24:00-24:00'}\n"), False, id="hours-start-at-24"),
    pytest.param(campaign("send_window: {hours: '09:00-25:00'}\n"), False, id="hours-25"),
    pytest.param(campaign("send_window: {hours: '09:60-10:00'}\n"), False, id="hours-minute-60"),
    pytest.param(campaign("send_window: {hours: '09:00'}\n"), False, id="hours-no-end"),
    pytest.param(campaign("send_window: {hours: '09:00-12:00-13:00'}\n"), False, id="hours-three-times"),
    pytest.param(campaign("send_window: {hours: '009:00-10:00'}\n"), False, id="hours-three-digits"),
    pytest.param(campaign("send_window: {days: funday}\n"), False, id="days-unknown-name"),
    pytest.param(campaign("send_window: {days: []}\n"), False, id="days-empty-list"),
    pytest.param(campaign("send_window: {days: ' , '}\n"), False, id="days-only-commas"),
    pytest.param(campaign("send_window: {days: mon-}\n"), False, id="days-half-range"),
    pytest.param(campaign("send_window: {days: weekdays-sun}\n"), False, id="days-alias-in-range"),
    pytest.param(campaign("send_window: {days: [1, 2]}\n"), False, id="days-numbers"),
    pytest.param(campaign("send_window: {days: mon, hour: '09:00-17:00'}\n"), False, id="window-unknown-key"),
    pytest.param(campaign("", "    send_window: {hours: '09:00-24:00'}\n"), True, id="step-window-until-midnight"),
    pytest.param(campaign("", "    send_window: sometimes\n"), False, id="step-window-unknown-word"),
    # stream cadences: a time of day (24:00 is not one)
    pytest.param(campaign(steps=stream("{days: [tue], at: '10:00'}")), True, id="cadence"),
    pytest.param(campaign(steps=stream("{days: 'tue,thu', at: '9:05'}")), True, id="cadence-one-digit-hour"),
    pytest.param(campaign(steps=stream("{days: [tue], at: '24:00'}")), False, id="cadence-at-24"),
    pytest.param(campaign(steps=stream("{days: [tue], at: '10'}")), False, id="cadence-without-minutes"),
    pytest.param(campaign(steps=stream("{days: [], at: '10:00'}")), False, id="cadence-no-days"),
    # steps: exactly one action; keys that go with one action only
    pytest.param(campaign(steps="  - id: a\n    wait: 2d\n"), False, id="step-without-action"),
    pytest.param(campaign("", "    update: {add_tags: [x]}\n"), False, id="step-with-two-actions"),
    pytest.param(campaign("", "    on_event: end\n"), False, id="on-event-without-wait-for"),
    pytest.param(
        campaign(steps="  - id: a\n    update: {add_tags: [x]}\n    send_window: always\n"), False,
        id="send-window-on-a-non-email-step",
    ),
    pytest.param(campaign(steps="  - id: a\n    branch: [{goto: end}]\n    goto: end\n"), False,
                 id="branch-with-goto"),
    pytest.param(campaign(steps="  - id: a\n    branch: [{goto: end}]\n"), True, id="branch"),
    pytest.param(campaign(steps="  - id: a\n    email: null\n    update: {add_tags: [x]}\n"), True,
                 id="null-action-is-no-action"),
    pytest.param(campaign("", "    on_event: ''\n    on_timeout: null\n"), True, id="empty-on-event-is-none"),
    pytest.param(campaign(steps="  - id: a\n    wait_for: null\n    on_timeout: end\n    update: {add_tags: [x]}\n"),
                 False, id="on-timeout-with-null-wait-for"),
    # the rest of the file's shape
    pytest.param(campaign("timezone: Europe/Berlin\npriority: 3\npaused: true\n"), True, id="top-level-keys"),
    pytest.param(campaign("entry: {stage: [lead, mql], where: {company_size: {gte: 50}}}\n"), True, id="entry"),
    pytest.param(campaign("entry: {stage: mqll}\n"), False, id="entry-unknown-stage"),
    pytest.param(campaign("nmae: X\n"), False, id="unknown-key"),
    pytest.param(campaign("", "    wait: 1d12h\n"), True, id="combined-duration"),
    pytest.param(campaign("", "    wait: 2 days\n"), False, id="bad-duration"),
    pytest.param(campaign("", "    wait: 2\n"), False, id="duration-without-unit"),
    pytest.param("id: Bad-Id\nname: X\nsteps:\n" + EMAIL_STEP, False, id="id-upper-case"),
    pytest.param("id: x\nname: X\nsteps: []\n", False, id="no-steps"),
    # holdout, and an A/B step's goal and winner: the README's forms
    pytest.param(campaign("holdout: 10%\n"), True, id="holdout-percent"),
    pytest.param(campaign("holdout: 2.5%\n"), True, id="holdout-decimal-percent"),
    pytest.param(campaign("holdout: 0.1\n"), True, id="holdout-fraction"),
    pytest.param(campaign("holdout: 0%\n"), False, id="holdout-zero"),
    pytest.param(campaign("holdout: 100%\n"), False, id="holdout-everyone"),
    pytest.param(campaign("holdout: 10\n"), False, id="holdout-bare-number"),
    pytest.param(campaign("holdout: ten percent\n"), False, id="holdout-words"),
    pytest.param(campaign(steps=AB_STEP), True, id="ab-default-goal"),
    pytest.param(campaign(steps=AB_STEP + "      goal: click\n"), True, id="goal-click"),
    pytest.param(campaign(steps=AB_STEP + "      goal: open\n"), True, id="goal-open"),
    pytest.param(campaign(steps=AB_STEP + "      goal: {event: demo_request}\n"), True, id="goal-event"),
    pytest.param(campaign(steps=AB_STEP + "      goal: {event: demo_request, within: 14d}\n"), True,
                 id="goal-event-within"),
    pytest.param(campaign(steps=AB_STEP + "      goal: {sql_within: 14d}\n"), True, id="goal-sql-within"),
    pytest.param(campaign(steps=AB_STEP + "      goal: clicks\n"), False, id="goal-misspelt"),
    pytest.param(campaign(steps=AB_STEP + "      goal: {sql_within: 14}\n"), False, id="goal-sql-without-unit"),
    pytest.param(campaign(steps=AB_STEP + "      goal: {event: demo_request, within: 2 weeks}\n"), False,
                 id="goal-event-bad-window"),
    pytest.param(campaign(steps=AB_STEP + "      goal: {sql: 14d}\n"), False, id="goal-unknown-key"),
    pytest.param(campaign(steps=AB_STEP + "      goal: 3\n"), False, id="goal-number"),
    pytest.param(campaign(steps=AB_STEP + "      winner: {confidence: 95%, min_sends: 500}\n"), True, id="winner"),
    pytest.param(campaign(steps=AB_STEP + "      winner: {}\n"), True, id="winner-defaults"),
    pytest.param(campaign(steps=AB_STEP + "      winner: {metric: {sql_within: 14d}, confidence: 0.99}\n"), True,
                 id="winner-metric-and-fraction"),
    pytest.param(campaign(steps=AB_STEP + "      winner: {confidence: 101%}\n"), False, id="winner-confidence-over"),
    pytest.param(campaign(steps=AB_STEP + "      winner: {confidence: 40%}\n"), False, id="winner-confidence-low"),
    pytest.param(campaign(steps=AB_STEP + "      winner: {min_sends: 0}\n"), False, id="winner-min-sends-zero"),
    pytest.param(campaign(steps=AB_STEP + "      winner: {min_send: 10}\n"), False, id="winner-unknown-key"),
    pytest.param(campaign(steps="  - id: a\n    email: {template: email.html.j2, subject: Hi, goal: click}\n"),
                 False, id="goal-without-variants"),
    pytest.param(campaign(steps="  - id: a\n    email: {template: email.html.j2, subject: Hi, winner: {}}\n"),
                 False, id="winner-without-variants"),
]

POLICIES = [
    pytest.param("send_window: always\n", True, id="policy-window-always"),
    pytest.param("send_window: {days: mon-fri, hours: '09:00-24:00'}\n", True, id="policy-window-until-midnight"),
    pytest.param("send_window: {days: [Monday, wednesday], hours: '08:00-18:00'}\n", True, id="policy-window-days"),
    pytest.param(
        "timezone: America/New_York\nfrequency_cap: {max: 2, per: 1d}\ncatch_up: {max_late: 3d}\n", True,
        id="policy-every-key",
    ),
    pytest.param("frequency_cap: null\n", True, id="policy-no-cap"),
    pytest.param("send_window: allways\n", False, id="policy-window-misspelt-always"),
    pytest.param("send_window: {hours: '9-17'}\n", False, id="policy-hours-without-minutes"),
    pytest.param("send_window: {hours: '09:00-24:30'}\n", False, id="policy-hours-past-midnight"),
    pytest.param("frequency_cap: {max: 0}\n", False, id="policy-cap-zero"),
    pytest.param("frequency_cap: {per: 1 day}\n", False, id="policy-cap-bad-duration"),
    pytest.param("catch_up: {max_lat: 2d}\n", False, id="policy-unknown-nested-key"),
    pytest.param("timezon: UTC\n", False, id="policy-unknown-key"),
    # soft_bounces: a limit that is a whole number from 1, a window of one number and a unit from 1s up to 365d
    pytest.param("soft_bounces: {limit: 1, within: 365d}\n", True, id="soft-bounces-longest-window"),
    pytest.param("soft_bounces: {limit: 5, within: 52w}\n", True, id="soft-bounces-window-in-weeks"),
    pytest.param("soft_bounces: {within: 8760h}\n", True, id="soft-bounces-window-in-hours"),
    pytest.param("soft_bounces: {within: 31536000s}\n", True, id="soft-bounces-window-in-seconds"),
    pytest.param("soft_bounces: {within: 30m}\n", True, id="soft-bounces-window-in-minutes"),
    pytest.param("soft_bounces: {within: 0s}\n", False, id="soft-bounces-window-zero"),
    pytest.param("soft_bounces: {within: 0d}\n", False, id="soft-bounces-window-zero-days"),
    pytest.param("soft_bounces: {within: 366d}\n", False, id="soft-bounces-window-past-a-year"),
    pytest.param("soft_bounces: {within: 53w}\n", False, id="soft-bounces-window-past-a-year-in-weeks"),
    pytest.param("soft_bounces: {within: 8761h}\n", False, id="soft-bounces-window-past-a-year-in-hours"),
    pytest.param("soft_bounces: {within: 31536001s}\n", False, id="soft-bounces-window-past-a-year-in-seconds"),
    pytest.param("soft_bounces: {within: 1000000d}\n", False, id="soft-bounces-window-a-million-days"),
    pytest.param("soft_bounces: {within: 300d100d}\n", False, id="soft-bounces-window-combined"),
    pytest.param("soft_bounces: {within: 07d}\n", False, id="soft-bounces-window-leading-zero"),
    pytest.param("soft_bounces: {limit: '3'}\n", False, id="soft-bounces-limit-as-text"),
    pytest.param("soft_bounces: {limit: true}\n", False, id="soft-bounces-limit-as-boolean"),
    pytest.param("soft_bounces: {limit: 0}\n", False, id="soft-bounces-limit-zero"),
    pytest.param("soft_bounces: {limit: 1001}\n", False, id="soft-bounces-limit-past-1000"),
]

# What only check can tell: each is valid for the schema and a problem for check.
CHECK_ONLY = [
    pytest.param(campaign(steps=EMAIL_STEP + EMAIL_STEP), id="duplicate-step-ids"),
    pytest.param(campaign("", "    goto: nowhere\n"), id="goto-unknown-step"),
    pytest.param(campaign(steps="  - id: a\n    email: {template: gone.html.j2, subject: Hi}\n"), id="missing-template"),
    pytest.param(campaign("timezone: Mars/Olympus\n"), id="unknown-timezone"),
    pytest.param(campaign("send_window: {hours: '17:00-09:00'}\n"), id="window-end-before-start"),
    pytest.param(campaign("", "    when: {clicked: b}\n"), id="condition-names-no-step"),
    pytest.param(campaign(steps="  - id: a\n    update: {add_tags: [x]}\n    goto: a\n"), id="loop-without-wait"),
    pytest.param(campaign("", "    replaces: [a]\n"), id="replaces-a-step-that-exists"),
    pytest.param(campaign(steps=EMAIL_STEP + "    replaces: [gone]\n  - id: b\n    replaces: [gone]\n"
                          "    email: {template: email.html.j2, subject: Hi}\n"), id="replaces-one-step-twice"),
    pytest.param(campaign(steps=AB_STEP + "      goal: click\n      winner: {metric: open}\n"),
                 id="winner-metric-differs-from-goal"),
]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """campaigns/ and templates/ with one template, email.html.j2, that renders for the sample lead."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "campaigns").mkdir()
    templates = tmp_path / "templates"
    templates.mkdir()
    for layout in ("_layout.html.j2", "_layout.txt.j2"):
        shutil.copy(SHIPPED_TEMPLATES / layout, templates / layout)
    (templates / "email.html.j2").write_text("<p>Hi {{ lead.first_name }}</p>\n", encoding="utf-8")
    return tmp_path


def check_passes(project: Path, files: dict[str, str]) -> tuple[bool, list[str]]:
    for name, text in files.items():
        (project / "campaigns" / name).write_text(text, encoding="utf-8")
    problems = [str(problem) for problem in check(Path("campaigns"), Path("templates")).problems]
    return not problems, problems


def schema_passes(kind: str, text: str) -> tuple[bool, list[str]]:
    validator = jsonschema.Draft202012Validator(file_schema(kind))
    errors = [f"{list(error.absolute_path)}: {error.message}" for error in validator.iter_errors(yaml.safe_load(text))]
    return not errors, errors


def test_the_schemas_are_valid_json_schemas() -> None:
    for kind in ("campaign", "policy"):
        jsonschema.Draft202012Validator.check_schema(file_schema(kind))


@pytest.mark.parametrize(("text", "valid"), CAMPAIGNS)
def test_the_campaign_schema_agrees_with_check(project: Path, text: str, valid: bool) -> None:
    checked, problems = check_passes(project, {"x.yaml": text})
    assert checked is valid, problems  # the table itself is right about check
    schema_ok, errors = schema_passes("campaign", text)
    assert schema_ok is valid, errors


@pytest.mark.parametrize(("text", "valid"), POLICIES)
def test_the_policy_schema_agrees_with_check(project: Path, text: str, valid: bool) -> None:
    checked, problems = check_passes(project, {"policy.yaml": text, "x.yaml": campaign()})
    assert checked is valid, problems
    schema_ok, errors = schema_passes("policy", text)
    assert schema_ok is valid, errors


@pytest.mark.parametrize("text", CHECK_ONLY)
def test_what_only_check_can_tell(project: Path, text: str) -> None:
    checked, _problems = check_passes(project, {"x.yaml": text})
    schema_ok, errors = schema_passes("campaign", text)
    assert (checked, schema_ok) == (False, True), errors


def test_the_days_default_is_written_as_days() -> None:
    days: dict[str, Any] = file_schema("campaign")["$defs"]["SendWindowSpec"]["properties"]["days"]
    assert days["default"] == "mon-fri"
