"""Loading and validating campaign folders: every problem ``nurture check`` can report, each at its ``path:line``.

Each test writes real files into a temporary project (``campaigns/`` and ``templates/``), runs the same library function
the command runs (:func:`nurture.application.authoring.check`) from inside it, and compares the printed problems exactly. The
command-line wrapper itself is covered in ``test_cli_authoring.py``.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from nurture.application.authoring import check
from nurture.definitions.durations import Duration
from nurture.definitions.loader import fingerprint, load_catalog
from nurture.definitions.yamlsource import parse_yaml
from nurture.errors import DefinitionError, InvalidInput

SHIPPED_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
BAD = "campaigns/bad.yaml"

ISSUE_EXAMPLE = """\
id: ebook-nurture
name: Ebook downloaders
entry: {stage: mql}
steps:
  - id: welcome
    wait: 0s
    email: {template: ebook/welcome.html.j2, subject: "Your guide, {{ lead.first_name }}"}
  - id: case-study
    wait: 2d
    email: {template: ebook/case_study.html.j2, subject: "How Acme cut churn"}
"""

BASE_TEMPLATES = {
    "email.html.j2": "<p>Hi {{ lead.first_name }}</p>\n",
    "ebook/welcome.html.j2": (
        '{% extends "_layout.html.j2" %}\n'
        "{% block content %}<p>Hi {{ lead.first_name }}, here is your guide.</p>{% endblock %}\n"
    ),
    "ebook/welcome.txt.j2": (
        '{% extends "_layout.txt.j2" %}\n{% block content %}Hi {{ lead.first_name }}, here is your guide.{% endblock %}\n'
    ),
    "ebook/case_study.html.j2": (
        '{% extends "_layout.html.j2" %}\n'
        '{% block content %}<p>Read <a href="{{ track("https://example.com/acme") }}">the story</a>.</p>{% endblock %}\n'
    ),
}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder, made the working directory so problems are printed with short relative paths."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "campaigns").mkdir()
    templates = tmp_path / "templates"
    templates.mkdir()
    for layout in ("_layout.html.j2", "_layout.txt.j2"):
        shutil.copy(SHIPPED_TEMPLATES / layout, templates / layout)
    write_all(tmp_path / "templates", BASE_TEMPLATES)
    return tmp_path


def write_all(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def problems(project: Path, campaigns: dict[str, str], templates: dict[str, str] | None = None) -> list[str]:
    """Write the files, run ``check`` and return what ``nurture check`` would print."""
    write_all(project / "campaigns", campaigns)
    write_all(project / "templates", templates or {})
    return [str(problem) for problem in check(Path("campaigns"), Path("templates")).problems]


def yaml_text(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


EMAIL = "    email: {template: email.html.j2, subject: Hi}\n"
HEAD = "id: bad\nname: Bad\nsteps:\n"  # lines 1-3; the first step starts on line 4


# Each case: the text of campaigns/bad.yaml and exactly what check reports for it.
CASES = [
    # --- the file itself
    pytest.param(
        HEAD + "  - id: a\n    email: {template: email.html.j2, subject: Hi\n  - id: b\n",
        [f"{BAD}:6: YAML syntax error: expected ',' or '}}', but got ':'"],
        id="yaml-syntax-error",
    ),
    pytest.param(
        HEAD + "\t- id: a\n",
        [f"{BAD}:4: YAML syntax error: found character '\\t' that cannot start any token"],
        id="yaml-tab",
    ),
    pytest.param("", [f"{BAD}:1: the file is empty"], id="empty-file"),
    pytest.param("# nothing here yet\n", [f"{BAD}:1: the file is empty"], id="comments-only"),
    pytest.param(
        "- id: bad\n- name: Bad\n",
        [f"{BAD}:1: expected a mapping of keys (id, name, steps, ...) at the top level"],
        id="top-level-list",
    ),
    pytest.param(
        "just some text\n", [f"{BAD}:1: expected a mapping of keys (id, name, steps, ...) at the top level"],
        id="top-level-scalar",
    ),
    pytest.param(
        "id: bad\nname: Bad\nname: Worse\nsteps:\n  - id: a\n" + EMAIL,
        [f"{BAD}:3: duplicate key 'name' (written twice in the same mapping)"],
        id="duplicate-key",
    ),
    pytest.param(
        HEAD + "  - id: a\n" + EMAIL + "  - id: b\n    wait: 1d\n    wait: 2d\n" + EMAIL,
        [f"{BAD}:8: duplicate key 'wait' (written twice in the same mapping)"],
        id="duplicate-key-in-step",
    ),
    pytest.param("id: bad\nname: Bad\n~: x\nsteps:\n  - id: a\n" + EMAIL, [f"{BAD}:3: unsupported key None"], id="null-key"),
    # --- keys
    pytest.param(
        "id: bad\nnmae: Bad\nsteps:\n  - id: a\n" + EMAIL,
        [f"{BAD}:1: missing required key 'name'", f"{BAD}:2: unknown key 'nmae' (did you mean 'name'?)"],
        id="unknown-key-with-hint",
    ),
    pytest.param(
        "id: bad\nname: Bad\nflavour: mint\nsteps:\n  - id: a\n" + EMAIL, [f"{BAD}:3: unknown key 'flavour'"],
        id="unknown-key-without-hint",
    ),
    pytest.param(HEAD + "  - id: a\n    wiat: 2d\n" + EMAIL, [f"{BAD}:5: unknown key 'wiat' (did you mean 'wait'?)"],
                 id="unknown-key-in-a-step"),
    pytest.param(HEAD + "  - id: a\n    emial: {template: email.html.j2, subject: Hi}\n",
                 [f"{BAD}:5: unknown key 'emial' (did you mean 'email'?)"], id="unknown-action"),
    pytest.param(HEAD + "  - id: a\n    email:\n      template: email.html.j2\n      subjet: Hi\n",
                 [f"{BAD}:7: unknown key 'subjet' (did you mean 'subject'?)"], id="unknown-key-in-an-email"),
    pytest.param(HEAD + "  - id: a\n" + EMAIL + "  - id: b\n    when: {opend: a}\n" + EMAIL,
                 [f"{BAD}:7: unknown key 'opend' (did you mean 'opened'?)"], id="unknown-key-in-a-condition"),
    # a campaign key written in a step is not suggested back as a step key
    pytest.param(HEAD + "  - id: a\n    description: hello\n" + EMAIL, [f"{BAD}:5: unknown key 'description'"],
                 id="campaign-key-in-a-step"),
    pytest.param("name: Bad\nsteps:\n  - id: a\n" + EMAIL, [f"{BAD}:1: missing required key 'id'"], id="missing-id"),
    pytest.param("id: bad\nsteps:\n  - id: a\n" + EMAIL, [f"{BAD}:1: missing required key 'name'"], id="missing-name"),
    pytest.param("id: bad\nname: Bad\n", [f"{BAD}:1: missing required key 'steps'"], id="missing-steps"),
    pytest.param(
        "# a draft\ndescription: later\n",
        [f"{BAD}:2: missing required key 'id'", f"{BAD}:2: missing required key 'name'",
         f"{BAD}:2: missing required key 'steps'"],
        id="missing-everything",
    ),
    pytest.param(HEAD + "  - wait: 1d\n" + EMAIL, [f"{BAD}:4: missing required key 'id'"], id="missing-step-id"),
    pytest.param(
        HEAD + "  - id: w\n    wait_for: {event: email_click}\n", [f"{BAD}:5: missing required key 'timeout'"],
        id="missing-wait-for-timeout",
    ),
    # --- values
    pytest.param(
        "id: Ebook Nurture\nname: Bad\nsteps:\n  - id: a\n" + EMAIL,
        [f"{BAD}:1: id: 'Ebook Nurture' is not a valid id: use lower-case letters, digits, '-' and '_'"],
        id="bad-campaign-id",
    ),
    pytest.param(
        HEAD + "  - id: Welcome Email\n" + EMAIL,
        [f"{BAD}:4: id: 'Welcome Email' is not a valid id: use lower-case letters, digits, '-' and '_'"],
        id="bad-step-id",
    ),
    pytest.param(
        HEAD + "  - id: a\n    wait: 2 days\n" + EMAIL,
        [f"{BAD}:5: wait: invalid duration '2 days': use a number and a unit (s, m, h, d, w), combined as in '1d12h'"],
        id="duration-2-days",
    ),
    pytest.param(
        HEAD + "  - id: a\n    wait: 2\n" + EMAIL,
        [f"{BAD}:5: wait: duration must be text such as '2d' or '4h30m', not 2"],
        id="duration-bare-number",
    ),
    pytest.param(
        HEAD + "  - id: a\n    wait: -1d\n" + EMAIL,
        [f"{BAD}:5: wait: invalid duration '-1d': use a number and a unit (s, m, h, d, w), combined as in '1d12h'"],
        id="duration-negative",
    ),
    pytest.param(
        HEAD + "  - id: a\n" + EMAIL + "  - id: w\n    wait_for:\n      event: email_click\n      timeout: 3 days\n",
        [f"{BAD}:9: timeout: invalid duration '3 days': use a number and a unit (s, m, h, d, w), combined as in '1d12h'"],
        id="duration-in-wait-for",
    ),
    pytest.param(
        "id: bad\nname: Bad\ntimezone: Mars/Olympus_Mons\nsteps:\n  - id: a\n" + EMAIL,
        [f"{BAD}:3: unknown timezone 'Mars/Olympus_Mons'"],
        id="unknown-timezone",
    ),
    pytest.param(
        "id: bad\nname: Bad\nsend_window: {days: mon-fri, hours: '9-17'}\nsteps:\n  - id: a\n" + EMAIL,
        [f"{BAD}:3: invalid time '9': use 24-hour HH:MM such as '09:00' or '17:30'"],
        id="window-hours-without-minutes",
    ),
    pytest.param(
        "id: bad\nname: Bad\nsend_window: {hours: '17:00-09:00'}\nsteps:\n  - id: a\n" + EMAIL,
        [f"{BAD}:3: invalid hours '17:00-09:00': the end must be after the start (windows may not span midnight)"],
        id="window-hours-reversed",
    ),
    pytest.param(
        HEAD + "  - id: a\n    send_window: {hours: '17:00-09:00'}\n" + EMAIL,
        [f"{BAD}:5: invalid hours '17:00-09:00': the end must be after the start (windows may not span midnight)"],
        id="step-window-hours-reversed",
    ),
    pytest.param(
        "id: bad\nname: Bad\nentry: {stage: hot}\nsteps:\n  - id: a\n" + EMAIL,
        [f"{BAD}:3: Input should be 'lead', 'mql', 'sql', 'opportunity', 'customer', 'recycled' or 'disqualified'"],
        id="entry-stage",
    ),
    pytest.param(
        "id: bad\nname: Bad\nreentry: sometimes\nsteps:\n  - id: a\n" + EMAIL,
        [f"{BAD}:3: Input should be 'never', 'always' or 'after'"],
        id="reentry-word",
    ),
    pytest.param(
        "id: bad\nname: Bad\npriority: high\nsteps:\n  - id: a\n" + EMAIL,
        [f"{BAD}:3: priority: Input should be a valid integer, unable to parse string as an integer"],
        id="priority-not-a-number",
    ),
    pytest.param(
        "id: bad\nname: Bad\nsteps: []\n", [f"{BAD}:3: steps: List should have at least 1 item after validation, not 0"],
        id="no-steps",
    ),
    pytest.param(
        "id: bad\nname: Bad\nsteps: welcome\n", [f"{BAD}:3: steps: Input should be a valid list"], id="steps-not-a-list"
    ),
    pytest.param(
        HEAD + "  - id: w\n    webhook: {url: 'ftp://crm.example.com'}\n",
        [f"{BAD}:5: url: String should match pattern '^https?://'"],
        id="webhook-url",
    ),
    pytest.param(
        HEAD + "  - id: u\n    update: {}\n", [f"{BAD}:5: update needs set, add_tags or remove_tags"], id="empty-update"
    ),
    pytest.param(
        HEAD + "  - id: a\n    when: {}\n" + EMAIL,
        [f"{BAD}:5: when: a condition needs at least one test (opened, clicked, score, lead, any, ...)"],
        id="empty-condition",
    ),
    pytest.param(
        HEAD + "  - id: s\n    stream:\n      cadence: {days: [tue], at: '25:00'}\n      content:\n"
        "        - {id: c1, title: One, template: email.html.j2, subject: One}\n",
        [f"{BAD}:6: cadence: invalid time '25:00': hours run 00-23 and minutes 00-59"],
        id="cadence-time",
    ),
    # --- steps and references
    pytest.param(
        HEAD + "  - id: a\n" + EMAIL + "  - id: a\n" + EMAIL, [f"{BAD}:6: duplicate step id 'a'"], id="duplicate-step-id"
    ),
    pytest.param(
        HEAD + "  - id: a\n    wait: 1d\n",
        [f"{BAD}:4: step 'a' needs exactly one action of email, webhook, update, wait_for, stream, branch (found: none)"],
        id="step-without-action",
    ),
    pytest.param(
        HEAD + "  - id: a\n" + EMAIL + "    webhook: {url: 'https://crm.example.com'}\n",
        [f"{BAD}:4: step 'a' needs exactly one action of email, webhook, update, wait_for, stream, branch "
         "(found: email, webhook)"],
        id="step-with-two-actions",
    ),
    pytest.param(
        HEAD + "  - id: a\n" + EMAIL + "  - id: b\n    branch:\n      - goto: a\n    goto: a\n",
        [f"{BAD}:6: a branch step chooses its target itself: use goto inside the branch rules"],
        id="branch-with-goto",
    ),
    pytest.param(
        HEAD + "  - id: a\n" + EMAIL + "  - id: w\n    send_window: always\n"
        "    wait_for: {event: email_click, step: a, timeout: 2d}\n",
        [f"{BAD}:6: send_window only applies to email steps (streams follow their cadence)"],
        id="send-window-on-a-non-email-step",
    ),
    pytest.param(
        HEAD + "  - id: a\n" + EMAIL + "    goto: nowhere\n",
        [f"{BAD}:6: goto target 'nowhere' is not a step of this campaign"],
        id="goto-target",
    ),
    pytest.param(
        HEAD + "  - id: a\n" + EMAIL
        + "  - id: w\n    wait_for: {event: email_click, step: a, timeout: 2d}\n    on_event: hot\n    on_timeout: cold\n",
        [f"{BAD}:8: on_event target 'hot' is not a step of this campaign",
         f"{BAD}:9: on_timeout target 'cold' is not a step of this campaign"],
        id="on-event-and-on-timeout-targets",
    ),
    pytest.param(
        HEAD + "  - id: a\n" + EMAIL + "  - id: b\n    branch:\n      - when: {clicked: a}\n        goto: gone\n"
        "      - goto: end\n",
        [f"{BAD}:9: branch.goto target 'gone' is not a step of this campaign"],
        id="branch-target",
    ),
    pytest.param(
        HEAD + "  - id: a\n" + EMAIL + "    on_event: a\n", [f"{BAD}:4: on_event / on_timeout only go with wait_for"],
        id="on-event-without-wait-for",
    ),
    pytest.param(
        HEAD + "  - id: a\n    when: {opened: ghost}\n" + EMAIL,
        [f"{BAD}:5: opened: 'ghost' is not an email step of this campaign"],
        id="condition-unknown-step",
    ),
    pytest.param(
        HEAD + "  - id: u\n    update: {add_tags: [x]}\n  - id: a\n    when: {clicked: u}\n" + EMAIL,
        [f"{BAD}:7: clicked: 'u' is not an email step of this campaign"],
        id="condition-not-an-email-step",
    ),
    pytest.param(
        HEAD + "  - id: a\n    when: {not_opened: b}\n" + EMAIL + "  - id: b\n" + EMAIL,
        [f"{BAD}:5: not_opened: 'b' does not come before step 'a'"],
        id="condition-later-step",
    ),
    pytest.param(
        HEAD + "  - id: a\n    when: {opened: a}\n" + EMAIL, [f"{BAD}:5: opened: 'a' does not come before step 'a'"],
        id="condition-own-step",
    ),
    pytest.param(
        HEAD + "  - id: a\n" + EMAIL + "  - id: b\n    when:\n      any:\n        - score: {gte: 40}\n"
        "        - not: {clicked: ghost}\n" + EMAIL,
        [f"{BAD}:10: clicked: 'ghost' is not an email step of this campaign"],
        id="condition-nested",
    ),
    pytest.param(
        HEAD + "  - id: a\n" + EMAIL + "  - id: b\n    wait: 1d\n    branch:\n      - when: {clicked: ghost}\n        goto: a\n",
        [f"{BAD}:9: clicked: 'ghost' is not an email step of this campaign"],
        id="branch-condition-unknown-step",
    ),
    pytest.param(
        HEAD + "  - id: a\n" + EMAIL + "  - id: w\n    wait_for:\n      event: email_click\n      step: ghost\n"
        "      timeout: 2d\n",
        [f"{BAD}:9: wait_for step 'ghost' is not an email step"],
        id="wait-for-unknown-step",
    ),
    pytest.param(
        HEAD + "  - id: u\n    update: {add_tags: [x]}\n"
        "  - id: w\n    wait_for: {event: email_click, step: u, timeout: 2d}\n",
        [f"{BAD}:7: wait_for step 'u' is not an email step"],
        id="wait-for-not-an-email-step",
    ),
    # --- emails
    pytest.param(
        HEAD + "  - id: a\n    email:\n      subject: Hi\n      variants:\n"
        "        - {id: v1, template: email.html.j2}\n        - {id: v2}\n",
        [f"{BAD}:5: email: variant 'v2' has no template"],
        id="variant-without-template",
    ),
    pytest.param(
        HEAD + "  - id: a\n    email:\n      template: email.html.j2\n      variants:\n"
        "        - {id: v1, subject: One}\n        - {id: v2}\n",
        [f"{BAD}:5: email: variant 'v2' has no subject"],
        id="variant-without-subject",
    ),
    pytest.param(
        HEAD + "  - id: a\n    email:\n      template: email.html.j2\n", [f"{BAD}:5: email has no subject"],
        id="email-without-subject",
    ),
    pytest.param(
        HEAD + "  - id: a\n    email:\n      template: email.html.j2\n      subject: Hi\n      variants:\n"
        "        - {id: same}\n        - {id: same}\n",
        [f"{BAD}:5: email: variant ids must be unique"],
        id="duplicate-variant-ids",
    ),
    pytest.param(
        HEAD + "  - id: a\n    email:\n      template: email.html.j2\n      subject: Hi\n      variants:\n"
        "        - {id: only}\n",
        [f"{BAD}:8: variants: List should have at least 2 items after validation, not 1"],
        id="single-variant",
    ),
    pytest.param(
        HEAD + "  - id: s\n    stream:\n      cadence: {days: [tue], at: '10:00'}\n      content:\n"
        "        - {id: c1, title: One, template: email.html.j2, subject: One}\n"
        "        - {id: c1, title: Two, template: email.html.j2, subject: Two}\n",
        [f"{BAD}:7: content ids must be unique: c1"],
        id="duplicate-content-ids",
    ),
    pytest.param(
        HEAD + "  - id: s\n    stream:\n      cadence: {days: [tue], at: '10:00'}\n      content: []\n",
        [f"{BAD}:7: content: List should have at least 1 item after validation, not 0"],
        id="stream-without-content",
    ),
    pytest.param(
        "id: bad\nname: Bad\nreentry: {after: }\nsteps:\n  - id: a\n" + EMAIL,
        [f"{BAD}:3: reentry: re-entry 'after' needs a duration, as in {{after: 30d}}"],
        id="reentry-after-without-duration",
    ),
    pytest.param(
        "id: bad\nname: Bad\nreentry:\n  policy: after\nsteps:\n  - id: a\n" + EMAIL,
        [f"{BAD}:3: reentry: re-entry 'after' needs a duration, as in {{after: 30d}}"],
        id="reentry-policy-after-without-duration",
    ),
    # --- templates
    pytest.param(
        HEAD + "  - id: a\n    email:\n      template: ebook/missing.html.j2\n      subject: Hi\n",
        [f"{BAD}:6: template 'ebook/missing.html.j2' not found in templates"],
        id="template-not-found",
    ),
    pytest.param(
        HEAD + "  - id: a\n    email:\n      template: missing.html.j2\n      subject: Hi\n      variants:\n"
        "        - {id: v1}\n        - {id: v2, template: email.html.j2}\n",
        [f"{BAD}:9: template 'missing.html.j2' not found in templates"],
        id="template-not-found-for-a-variant",
    ),
    pytest.param(
        HEAD + "  - id: s\n    stream:\n      cadence: {days: [tue], at: '10:00'}\n      content:\n"
        "        - {id: c1, title: One, template: email.html.j2, subject: One}\n"
        "        - id: c2\n          title: Two\n          template: stream/missing.html.j2\n          subject: Two\n",
        [f"{BAD}:11: template 'stream/missing.html.j2' not found in templates"],
        id="template-not-found-for-stream-content",
    ),
    # --- replaces: the removed steps a step takes the waiting leads of (README, "Editing a live campaign")
    pytest.param(
        HEAD + "  - id: a\n" + EMAIL + "  - id: b\n    replaces: [gone, a]\n" + EMAIL,
        [f"{BAD}:7: replaces: 'a' is still a step of this campaign (replaces names removed steps; drop it from the list)"],
        id="replaces-a-step-that-exists",
    ),
    pytest.param(
        HEAD + "  - id: a\n    replaces: [gone]\n" + EMAIL + "  - id: b\n    replaces:\n      - other\n      - gone\n" + EMAIL,
        [f"{BAD}:10: replaces: 'gone' is already replaced by step 'a' (each removed step goes to one step)"],
        id="replaces-one-removed-step-twice",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_check_reports_each_problem_at_its_line(project: Path, text: str, expected: list[str]) -> None:
    assert problems(project, {"bad.yaml": text}) == expected


DAY_NAME_CASES = [
    pytest.param("id: bad\nname: Bad\nsend_window:\n  days: [mon, funday]\nsteps:\n  - id: a\n" + EMAIL, 4, id="campaign"),
    pytest.param(HEAD + "  - id: a\n    send_window: {days: [mon, funday]}\n" + EMAIL, 5, id="step"),
]
INVALID_DAY = (
    "invalid day 'funday': use mon, tue, wed, thu, fri, sat, sun, a range such as 'mon-fri', or weekdays/weekends/daily"
)


@pytest.mark.parametrize(("text", "line"), DAY_NAME_CASES)
def test_a_bad_day_name_is_reported_at_its_line(project: Path, text: str, line: int) -> None:
    assert f"{BAD}:{line}: {INVALID_DAY}" in problems(project, {"bad.yaml": text})


LEAD_FIELD_TYPO = HEAD + "  - id: a\n" + EMAIL + "  - id: b\n    when:\n      lead:\n        industry: {gtee: 5}\n" + EMAIL


def test_a_typo_in_a_lead_field_comparison_is_reported_at_its_line(project: Path) -> None:
    found = problems(project, {"bad.yaml": LEAD_FIELD_TYPO})
    assert f"{BAD}:9: unknown key 'gtee'" in [p.split(" (did you mean")[0] for p in found]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        *[pytest.param(case.values[0], [f"{BAD}:{case.values[1]}: {INVALID_DAY}"], id=f"day-name-{case.id}")
          for case in DAY_NAME_CASES],
        pytest.param(LEAD_FIELD_TYPO, [f"{BAD}:9: unknown key 'gtee' (did you mean 'gte'?)"], id="lead-field-comparison"),
    ],
)
def test_a_union_value_gets_only_the_telling_problem(project: Path, text: str, expected: list[str]) -> None:
    assert problems(project, {"bad.yaml": text}) == expected


def test_a_misspelt_always_window_names_always(project: Path) -> None:
    [problem] = problems(project, {"bad.yaml": "id: bad\nname: Bad\nsend_window: allways\nsteps:\n  - id: a\n" + EMAIL})
    assert problem.startswith(f"{BAD}:3: ")
    assert "'always'" in problem and "SendWindowSpec" not in problem


# --- templates -----------------------------------------------------------------------------------------------------------


def one_email(template: str, subject: str = "Hi") -> str:
    return HEAD + f"  - id: a\n    email:\n      template: {template}\n      subject: '{subject}'\n"


def test_a_jinja_syntax_error_is_reported_once_at_the_templates_own_line(project: Path) -> None:
    found = problems(project, {"bad.yaml": one_email("broken.html.j2")},
                     {"broken.html.j2": "<p>Hello</p>\n<p>{{ lead.first_name }</p>\n"})
    assert found == ["templates/broken.html.j2:2: template syntax error: unexpected '}'"]


def test_a_syntax_error_in_a_template_no_campaign_uses_is_reported(project: Path) -> None:
    found = problems(project, {"ok.yaml": one_email("email.html.j2")},
                     {"drafts/unused.html.j2": "line one\nline two\n{{ lead.first_name }\n"})
    assert found == ["templates/drafts/unused.html.j2:3: template syntax error: unexpected '}'"]


def test_a_syntax_error_in_the_layout_is_reported_in_the_layout(project: Path) -> None:
    found = problems(project, {"ok.yaml": one_email("ebook/welcome.html.j2")},
                     {"_layout.html.j2": "<html>\n<title>{{ campaign.name }</title>\n{% block content %}{% endblock %}\n"})
    assert found and all(p.startswith("templates/_layout.html.j2:2: ") for p in found)
    assert any("unexpected '}'" in p for p in found)


@pytest.mark.parametrize(
    ("templates", "expected"),
    [
        (
            {"t.html.j2": "<p>Hi</p>\n\n<p>{{ lead.nickname }}</p>\n"},
            ["templates/t.html.j2:3: 'dict object' has no attribute 'nickname'"],
        ),
        ({"t.html.j2": "<p>Hi</p>\n<p>{{ coupon_code }}</p>\n"}, ["templates/t.html.j2:2: 'coupon_code' is undefined"]),
        # the text part is rendered too, from its own file
        (
            {"t.html.j2": "<p>Hi {{ lead.first_name }}</p>\n", "t.txt.j2": "Hi {{ lead.first_name }}\n\n{{ lead.nick }}\n"},
            ["templates/t.txt.j2:3: 'dict object' has no attribute 'nick'"],
        ),
        # the sandbox: no walking from a string to the interpreter
        (
            {"t.html.j2": "<p>Hi</p>\n{{ ''.__class__.__mro__ }}\n"},
            ["templates/t.html.j2:2: access to attribute '__class__' of 'str' object is unsafe."],
        ),
        (
            {"t.html.j2": "{{ lead.__class__.__init__.__globals__ }}\n"},
            ["templates/t.html.j2:1: access to attribute '__init__' of 'StrictUndefined' object is unsafe."],
        ),
    ],
)
def test_rendering_problems_are_reported_at_the_template_line(
    project: Path, templates: dict[str, str], expected: list[str]
) -> None:
    assert problems(project, {"bad.yaml": one_email("t.html.j2")}, templates) == expected


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Hi {{ lead.first_name ", "subject: unexpected end of template, expected 'end of print statement'."),
        ("Hi {{ lead.nickname }}", "subject: 'dict object' has no attribute 'nickname'"),
        ('Hi {{ "".__class__ }}', "subject: access to attribute '__class__' of 'str' object is unsafe."),
    ],
)
def test_a_subject_problem_is_reported_at_the_subject_line_of_the_campaign(
    project: Path, subject: str, expected: str
) -> None:
    assert problems(project, {"bad.yaml": one_email("email.html.j2", subject)}) == [f"{BAD}:7: {expected}"]


def test_a_variant_subject_problem_is_reported_at_the_variants_subject_line(project: Path) -> None:
    text = (HEAD + "  - id: a\n    email:\n      template: email.html.j2\n      subject: Hi\n      variants:\n"
            "        - id: v1\n        - id: v2\n          subject: 'Hi {{ lead.nope }}'\n")
    assert problems(project, {"bad.yaml": text}) == [f"{BAD}:11: subject: 'dict object' has no attribute 'nope'"]


def test_a_stream_subject_can_use_its_content(project: Path) -> None:
    text = (HEAD + "  - id: s\n    stream:\n      cadence: {days: [tue], at: '10:00'}\n      content:\n"
            "        - {id: c1, title: One, template: email.html.j2, subject: '{{ content.title }}'}\n"
            "        - id: c2\n          title: Two\n          template: email.html.j2\n"
            "          subject: '{{ content.titel }}'\n")
    assert problems(project, {"bad.yaml": text}) == [f"{BAD}:12: subject: 'dict object' has no attribute 'titel'"]


# --- several files -------------------------------------------------------------------------------------------------------


def test_two_files_with_the_same_campaign_id(project: Path) -> None:
    text = "# the copy\nid: same\nname: Same\nsteps:\n  - id: a\n" + EMAIL
    found = problems(project, {"a.yaml": text, "b.yaml": "\n" + text})
    assert found == ["campaigns/b.yaml:3: campaign id 'same' is already used by campaigns/a.yaml:2"]


def test_every_file_is_checked_and_problems_come_sorted(project: Path) -> None:
    found = problems(project, {
        "b.yaml": "id: b\nname: B\nsteps:\n  - id: a\n    wait: 2\n" + EMAIL,
        "a.yaml": "id: a\nname: A\nsteps:\n  - id: a\n" + EMAIL + "    goto: nowhere\n",
        "c.yml": "",
    })
    assert found == [
        "campaigns/a.yaml:6: goto target 'nowhere' is not a step of this campaign",
        "campaigns/b.yaml:5: wait: duration must be text such as '2d' or '4h30m', not 2",
        "campaigns/c.yml:1: the file is empty",
    ]


def test_reserved_and_underscored_files_are_not_campaigns(project: Path) -> None:
    write_all(project / "campaigns", {"scoring.yaml": "points: the scoring rules are checked on their own\n"})
    catalog = load_catalog(Path("campaigns"), Path("templates"))
    assert (catalog.campaigns, catalog.problems) == ({}, [])
    (project / "campaigns" / "scoring.yaml").unlink()
    found = problems(project, {
        "ok.yaml": ISSUE_EXAMPLE,
        "routing.yaml": "owners: not a campaign\n",
        "_draft.yaml": "half: written\n",
        "notes.txt": "not yaml at all: [\n",
    })
    assert found == []
    assert list(load_catalog(Path("campaigns")).campaigns) == ["ebook-nurture"]


POLICY_CASES = [
    pytest.param("timezone: Nowhere/City\n", ["campaigns/policy.yaml:1: unknown timezone 'Nowhere/City'"], id="timezone"),
    pytest.param(
        "frequency_cap:\n  max: 0\n  per: 1 day\n",
        ["campaigns/policy.yaml:2: max: Input should be greater than or equal to 1",
         "campaigns/policy.yaml:3: per: invalid duration '1 day': use a number and a unit (s, m, h, d, w), combined "
         "as in '1d12h'"],
        id="frequency-cap",
    ),
    pytest.param(
        "catch_up: {max_lat: 2d}\n", ["campaigns/policy.yaml:1: unknown key 'max_lat' (did you mean 'max_late'?)"],
        id="unknown-nested-key",
    ),
    pytest.param(
        "# defaults\ntimezon: UTC\n", ["campaigns/policy.yaml:2: unknown key 'timezon' (did you mean 'timezone'?)"],
        id="unknown-key",
    ),
    pytest.param(
        "send_window: {hours: '9-17'}\n",
        ["campaigns/policy.yaml:1: invalid time '9': use 24-hour HH:MM such as '09:00' or '17:30'"],
        id="window",
    ),
    pytest.param("timezone: UTC\ntimezone: UTC\n",
                 ["campaigns/policy.yaml:2: duplicate key 'timezone' (written twice in the same mapping)"], id="duplicate"),
    pytest.param("- a list\n",
                 ["campaigns/policy.yaml:1: expected a mapping of keys (id, name, steps, ...) at the top level"],
                 id="not-a-mapping"),
]


@pytest.mark.parametrize(("text", "expected"), POLICY_CASES)
def test_policy_problems(project: Path, text: str, expected: list[str]) -> None:
    assert problems(project, {"policy.yaml": text, "ok.yaml": ISSUE_EXAMPLE}) == expected


# --- what passes ---------------------------------------------------------------------------------------------------------


def test_the_issue_example_passes(project: Path) -> None:
    write_all(project / "campaigns", {"ebook-nurture.yaml": ISSUE_EXAMPLE})
    report = check(Path("campaigns"), Path("templates"))
    assert report.problems == []
    assert report.emails == 2
    campaign = report.catalog.campaign("ebook-nurture")
    assert [(s.id, s.wait, s.email.subject if s.email else None) for s in campaign.steps] == [
        ("welcome", Duration(), "Your guide, {{ lead.first_name }}"),
        ("case-study", Duration(days=2), "How Acme cut churn"),
    ]
    assert campaign.entry.stages() == ["mql"]


FULL_FEATURE = """\
id: full-feature
name: Every feature at once
description: A campaign that uses every key a campaign file can have.
paused: false
priority: 10
timezone: Europe/Berlin
send_window: {days: mon-fri, hours: "09:00-17:00"}
entry:
  stage: [lead, mql]
  where:
    industry: [software, logistics]
    country: [US, DE]
    company_size: {gte: 50}
    tags: [ebook-download]
    had_event: [content_download]
    fields: {crm_source: hubspot, fleet_size: {gt: 10}}
exit:
  stages: [sql, customer]
  events: [demo_request]
reentry: {after: 30d}
steps:
  - id: welcome
    wait: 0s
    send_window: always
    email: {template: ebook/welcome.html.j2, subject: "Your guide, {{ lead.first_name }}"}
  - id: case-study
    wait: 2d
    email:
      template: ebook/case_study.html.j2
      subject: "How Acme cut churn"
      variants:
        - {id: numbers, weight: 3, subject: "18% less churn in two quarters"}
        - {id: question, template: ebook/case_study_b.html.j2}
  - id: await-click
    wait_for: {event: email_click, step: case-study, timeout: 3d}
    on_event: demo
    on_timeout: route
  - id: route
    wait: 1d12h
    branch:
      - when:
          any:
            - clicked: [welcome]
            - score: {gte: 40}
            - lead: {industry: software, country: [US, CA], company_size: {gte: 200}}
          all:
            - event: [webinar_attended, content_download]
        goto: demo
      - when: {not: {opened: welcome}, no_event: demo_request}
        goto: stream
      - goto: end
  - id: demo
    when: {not_clicked: case-study}
    send_window: {days: [tue, wed, thu], hours: "10:00-12:00"}
    email:
      template: ebook/demo.html.j2
      subject: "Worth 20 minutes{% if lead.first_name %}, {{ lead.first_name }}{% endif %}?"
  - id: notify-crm
    webhook:
      url: https://crm.example.com/hooks/nurture
      method: PUT
      payload: {task: call, priority: high}
  - id: tag
    update:
      set: {nurture_last_offer: demo}
      add_tags: [demo-invited]
      remove_tags: [cold]
    goto: end
  - id: stream
    stream:
      cadence: {days: [tue, thu], at: "10:00"}
      content:
        - id: guide
          title: The guide
          template: stream/piece.html.j2
          subject: "{{ content.title }}"
          link: https://example.com/guide
        - id: checklist
          title: The checklist
          template: stream/piece.html.j2
          subject: "{{ content.title }} for {{ lead.company }}"
"""

FULL_FEATURE_TEMPLATES = {
    "ebook/case_study_b.html.j2": '{% extends "_layout.html.j2" %}{% block content %}B{% endblock %}\n',
    "ebook/demo.html.j2": (
        '{% extends "_layout.html.j2" %}\n{% block content %}\n'
        '<p>{{ lead.company }} and {{ lead.fields.fleet_size }} trucks?</p>\n'
        '<a href="{{ "https://example.com/demo" | track }}">Book</a>\n{% endblock %}\n'
    ),
    "stream/piece.html.j2": (
        '{% extends "_layout.html.j2" %}\n{% block content %}\n<h1>{{ content.title }}</h1>\n'
        '{% if content.link %}<a href="{{ track(content.link) }}">Read</a>{% endif %}\n{% endblock %}\n'
    ),
}

FULL_POLICY = """\
timezone: America/New_York
send_window: {days: weekdays, hours: "09:00-17:00"}
frequency_cap: {max: 2, per: 1d}
catch_up: {max_late: 3d}
"""


def test_a_campaign_with_every_feature_passes(project: Path) -> None:
    write_all(project / "campaigns", {"full.yaml": FULL_FEATURE, "ebook.yaml": ISSUE_EXAMPLE, "policy.yaml": FULL_POLICY})
    write_all(project / "templates", FULL_FEATURE_TEMPLATES)
    report = check(Path("campaigns"), Path("templates"))
    assert [str(p) for p in report.problems] == []
    assert sorted(report.catalog.campaigns) == ["ebook-nurture", "full-feature"]
    # welcome, two case-study variants, demo and two stream pieces; plus the two emails of the issue's example
    assert report.emails == 6 + 2
    full = report.catalog.campaign("full-feature")
    assert [s.action for s in full.steps] == [
        "email", "email", "wait_for", "branch", "email", "webhook", "update", "stream"
    ]
    assert full.reentry.policy == "after" and full.reentry.after == Duration(days=30)
    assert report.catalog.policy.frequency_cap is not None and report.catalog.policy.frequency_cap.max == 2


def test_a_missing_templates_folder_is_a_problem(project: Path) -> None:
    write_all(project / "campaigns", {"ebook.yaml": ISSUE_EXAMPLE})
    report = check(Path("campaigns"), Path("no-templates"))
    assert [str(p) for p in report.problems] == [
        "campaigns/ebook.yaml:7: template 'ebook/welcome.html.j2' not found in no-templates",
        "campaigns/ebook.yaml:10: template 'ebook/case_study.html.j2' not found in no-templates",
        "no-templates:0: templates folder not found",
    ]


def test_a_missing_campaigns_folder_is_a_problem(project: Path) -> None:
    report = check(Path("elsewhere"), Path("templates"))
    assert [str(p) for p in report.problems] == ["elsewhere:0: campaigns folder not found"]


def test_checking_given_files_only_still_reads_the_folders_policy(project: Path) -> None:
    write_all(project / "campaigns", {
        "ok.yaml": ISSUE_EXAMPLE,
        "bad.yaml": "id: bad\n",
        "policy.yaml": "timezone: Europe/Berlin\n",
    })
    report = check(Path("campaigns"), Path("templates"), files=[Path("campaigns/ok.yaml"), Path("campaigns/gone.yaml")])
    assert [str(p) for p in report.problems] == ["campaigns/gone.yaml:0: file not found"]
    assert list(report.catalog.campaigns) == ["ebook-nurture"]
    assert report.catalog.policy.timezone == "Europe/Berlin"


def test_an_unreadable_file_is_a_problem_not_a_crash(project: Path) -> None:
    (project / "campaigns" / "latin1.yaml").write_bytes("id: caf\xe9\n".encode("latin-1"))
    [problem] = problems(project, {})
    assert problem.startswith("campaigns/latin1.yaml:0: cannot read file:")


# --- the catalog and the line map ----------------------------------------------------------------------------------------


def test_asking_the_catalog_for_an_unknown_campaign_names_the_known_ones(project: Path) -> None:
    write_all(project / "campaigns", {"ebook.yaml": ISSUE_EXAMPLE, "b.yaml": ISSUE_EXAMPLE.replace("ebook-nurture", "b")})
    catalog = load_catalog(Path("campaigns"), Path("templates")).raise_for_problems()
    with pytest.raises(InvalidInput, match=r"no campaign 'nope' \(known: b, ebook-nurture\)"):
        catalog.campaign("nope")


def test_raise_for_problems_carries_every_problem(project: Path) -> None:
    write_all(project / "campaigns", {"a.yaml": "", "b.yaml": "- x\n"})
    with pytest.raises(DefinitionError) as caught:
        load_catalog(Path("campaigns")).raise_for_problems()
    assert str(caught.value) == (
        "campaigns/a.yaml:1: the file is empty\n"
        "campaigns/b.yaml:1: expected a mapping of keys (id, name, steps, ...) at the top level"
    )


def test_the_fingerprint_changes_with_the_content_only(project: Path) -> None:
    write_all(project / "campaigns", {"a.yaml": ISSUE_EXAMPLE})
    first = fingerprint(load_catalog(Path("campaigns")).campaign("ebook-nurture"))
    write_all(project / "campaigns", {"a.yaml": "# a comment changes nothing\n" + ISSUE_EXAMPLE})
    assert fingerprint(load_catalog(Path("campaigns")).campaign("ebook-nurture")) == first
    write_all(project / "campaigns", {"a.yaml": ISSUE_EXAMPLE.replace("wait: 2d", "wait: 3d")})
    assert fingerprint(load_catalog(Path("campaigns")).campaign("ebook-nurture")) != first


@pytest.mark.parametrize(
    ("loc", "line"),
    [
        ((), 2),
        (("id",), 2),
        (("steps",), 4),
        (("steps", 0), 5),
        (("steps", 0, "email"), 7),
        (("steps", 0, "email", "subject"), 9),
        (("steps", 0, "email", "no-such-key"), 7),  # the deepest known ancestor
        (("steps", 1, "wait"), 11),
        (("steps", 7), 4),
    ],
)
def test_line_of(loc: tuple[str | int, ...], line: int) -> None:
    doc = parse_yaml(
        "# comment\nid: x\nname: X\nsteps:\n  - id: a\n    wait: 0s\n    email:\n      template: t.html.j2\n"
        "      subject: S\n  - id: b\n    wait: 2d\n",
        "x.yaml",
    )
    assert doc.problems == []
    assert doc.line_of(loc) == line


def test_merge_keys_are_resolved() -> None:
    doc = parse_yaml("base: &base\n  wait: 2d\n  goto: end\nstep:\n  <<: *base\n  id: a\n", "x.yaml")
    assert doc.problems == []
    assert doc.data["step"] == {"wait": "2d", "goto": "end", "id": "a"}
