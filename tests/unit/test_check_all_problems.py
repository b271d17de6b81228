"""``nurture check`` reports every problem of a file in one run, each at its own line: a schema error does not hide the
file's reference problems, a step's bad value does not hide the rules between its keys, a duplicate key does not hide
the rest, and a jump or a condition is reported at the line that names the missing step."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nurture.application.authoring import check

SHIPPED_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"

# Every line of this file that has a mistake ends with its number, as a comment.
MANY_MISTAKES = """\
id: many
name: Many mistakes
name: Twice                                     # 3: duplicate key
priority: high                                  # 4: not a number
steps:
  - id: welcome
    email: {template: email.html.j2, subject: Hi}
    goto: nowhere                               # 8: unknown goto target
  - id: follow-up
    wait: 2 days                                # 10: bad duration (its template is checked once it is valid)
    email: {template: missing.html.j2, subject: Hi}
  - id: two-actions                             # 12: two actions...
    wait: soon                                  # 13: ...and a bad duration
    email: {template: email.html.j2, subject: Hi}
    update: {add_tags: [x]}
  - id: route
    wait: 1d
    branch:
      - when:
          any:
            - score: {gte: 40}
            - clicked: ghost                    # 22: not an email step
        goto: welcome
      - goto: gone                              # 24: unknown branch target
  - id: wait
    wait_for: {event: email_click, step: route, timeout: 2d}   # 26: not an email step
    on_timeout: lost                            # 27: unknown target
"""

DURATION = "invalid duration '{}': use a number and a unit (s, m, h, d, w), combined as in '1d12h'"
EXPECTED = [
    "campaigns/many.yaml:3: duplicate key 'name' (written twice in the same mapping)",
    "campaigns/many.yaml:4: priority: Input should be a valid integer, unable to parse string as an integer",
    "campaigns/many.yaml:8: goto target 'nowhere' is not a step of this campaign",
    f"campaigns/many.yaml:10: wait: {DURATION.format('2 days')}",
    "campaigns/many.yaml:12: step 'two-actions' needs exactly one action of email, webhook, update, wait_for, "
    "stream, branch (found: email, update)",
    f"campaigns/many.yaml:13: wait: {DURATION.format('soon')}",
    "campaigns/many.yaml:22: clicked: 'ghost' is not an email step of this campaign",
    "campaigns/many.yaml:24: branch.goto target 'gone' is not a step of this campaign",
    "campaigns/many.yaml:26: wait_for step 'route' is not an email step",
    "campaigns/many.yaml:27: on_timeout target 'lost' is not a step of this campaign",
]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "campaigns").mkdir()
    templates = tmp_path / "templates"
    shutil.copytree(SHIPPED_TEMPLATES, templates)
    (templates / "email.html.j2").write_text("<p>Hi {{ lead.first_name }}</p>\n", encoding="utf-8")
    return tmp_path


def problems(project: Path, text: str) -> list[str]:
    (project / "campaigns" / "many.yaml").write_text(text, encoding="utf-8")
    return [str(problem) for problem in check(Path("campaigns"), Path("templates")).problems]


def test_every_problem_of_a_file_is_reported_in_one_run_at_its_own_line(project: Path) -> None:
    assert problems(project, MANY_MISTAKES) == EXPECTED


def test_fixing_the_value_errors_reveals_only_the_template_of_the_step_they_made_invalid(project: Path) -> None:
    fixed = MANY_MISTAKES.replace("name: Twice", "description: once").replace("priority: high", "priority: 1")
    fixed = fixed.replace("wait: 2 days", "wait: 2d").replace("wait: soon", "wait: 1h")
    expected = [p for p in EXPECTED if p.split(":")[1] not in ("3", "4", "10", "13")]
    expected.insert(1, "campaigns/many.yaml:11: template 'missing.html.j2' not found in templates")
    assert problems(project, fixed) == expected


def test_a_step_that_is_not_a_mapping_does_not_stop_the_other_checks(project: Path) -> None:
    text = "id: odd\nname: Odd\nsteps:\n  - just text\n  - id: b\n    email: {template: email.html.j2, subject: Hi}\n" \
           "    goto: nowhere\n"
    assert problems(project, text) == [
        "campaigns/many.yaml:4: expected a mapping of keys, not 'just text'",
        "campaigns/many.yaml:7: goto target 'nowhere' is not a step of this campaign",
    ]


# Each step has a bad value, so it does not validate; its jumps are still checked against the steps written.
BAD_VALUES_AND_JUMPS = """\
id: jumps
name: Jumps
steps:
  - id: welcome
    wait: soon                                  # 5: bad duration
    email: {template: email.html.j2, subject: Hi}
    goto: nowhere                               # 7: unknown goto target
  - id: wait
    wait_for: {event: email_click, timeout: later}   # 9: bad duration
    on_event: welcome
    on_timeout: lost                            # 11: unknown target
  - id: route
    wait: 2 days                                # 13: bad duration
    branch:
      - goto: gone                              # 15: unknown branch target
      - goto: end
  - id: odd
    wait: 3 days                                # 18: bad duration
    update: {add_tags: [x]}
    goto: 7                                     # 20: not text: its value problem only
"""


def test_a_bad_value_does_not_hide_a_bad_jump_in_the_same_step(project: Path) -> None:
    assert problems(project, BAD_VALUES_AND_JUMPS) == [
        f"campaigns/many.yaml:5: wait: {DURATION.format('soon')}",
        "campaigns/many.yaml:7: goto target 'nowhere' is not a step of this campaign",
        f"campaigns/many.yaml:9: timeout: {DURATION.format('later')}",
        "campaigns/many.yaml:11: on_timeout target 'lost' is not a step of this campaign",
        f"campaigns/many.yaml:13: wait: {DURATION.format('2 days')}",
        "campaigns/many.yaml:15: branch.goto target 'gone' is not a step of this campaign",
        f"campaigns/many.yaml:18: wait: {DURATION.format('3 days')}",
        "campaigns/many.yaml:20: goto: Input should be a valid string",
    ]
