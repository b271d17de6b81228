"""``nurture check``, ``schema`` and ``preview`` through the installed console script, in a subprocess, on real files.

Every problem path the validator has is covered at the library level in ``test_definitions.py``; here we check what the
command prints for them (``path:line: message`` on stdout, a count on stderr, exit 1), how it finds the folders
(options, environment, defaults) and the preview command's output and errors.

Starting the command costs most of a second, so the invocations that only read files run together, in parallel, against
one set of project folders built once (``ran``); each test then judges the output of its own invocation.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from nurture.application.authoring import preview, sample_lead_view
from nurture.definitions.loader import Catalog, load_catalog
from nurture.errors import InvalidInput

NURTURE = Path(sys.executable).with_name("nurture")
SHIPPED_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"

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

SHOWCASE = """\
id: showcase
name: Showcase
steps:
  - id: pitch
    email:
      template: ebook/case_study.html.j2
      subject: "Default, {{ lead.first_name }}"
      variants:
        - {id: numbers, subject: "18% less churn at {{ lead.company }}"}
        - {id: question}
  - id: await
    wait_for: {event: email_click, step: pitch, timeout: 3d}
  - id: stream
    stream:
      cadence: {days: [tue], at: "10:00"}
      content:
        - id: guide
          title: The guide
          template: stream/piece.html.j2
          subject: "New: {{ content.title }}"
          link: https://example.com/guide
        - {id: checklist, title: The checklist, template: stream/piece.html.j2, subject: "{{ content.title }}"}
"""

TEMPLATES = {
    "ebook/welcome.html.j2": (
        '{% extends "_layout.html.j2" %}\n'
        "{% block content %}<p>Hi {{ lead.first_name }}, here is your guide.</p>{% endblock %}\n"
    ),
    "ebook/welcome.txt.j2": (
        '{% extends "_layout.txt.j2" %}\n{% block content %}Hi {{ lead.first_name }}, here is your guide.{% endblock %}\n'
    ),
    "ebook/case_study.html.j2": (
        '{% extends "_layout.html.j2" %}\n'
        '{% block content %}<p>How <a href="{{ track("https://example.com/acme") }}">Acme</a> did it.</p>{% endblock %}\n'
    ),
    "stream/piece.html.j2": (
        '{% extends "_layout.html.j2" %}\n{% block content %}<h1>{{ content.title }}</h1>\n'
        '{% if content.link %}<a href="{{ track(content.link) }}">Read it</a>{% endif %}{% endblock %}\n'
    ),
}


def write_all(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def make_project(root: Path, campaigns: dict[str, str], templates: dict[str, str] | None = None) -> Path:
    """A project folder: campaigns/, templates/ (the shipped layouts, the emails above and ``templates``), lead.yaml."""
    write_all(root / "campaigns", campaigns)
    (root / "templates").mkdir(parents=True)
    for layout in ("_layout.html.j2", "_layout.txt.j2"):
        shutil.copy(SHIPPED_TEMPLATES / layout, root / "templates" / layout)
    write_all(root / "templates", {**TEMPLATES, **(templates or {})})
    (root / "lead.yaml").write_text("email: Ann@Example.com\nfirst_name: Ann\ncompany: Initech\n", encoding="utf-8")
    return root


def nurture(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed console script in ``cwd``, with no NURTURE_* variables but those given."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    environment.update(env or {})
    return subprocess.run([str(NURTURE), *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=60)


FOLDERS = ("--campaigns", "campaigns", "--templates", "templates")

BROKEN_CAMPAIGNS = {
    "a-syntax.yaml": "id: a\nname: A\nsteps:\n  - id: x\n    email: {template: t.html.j2\n",
    "b-keys.yaml": "id: b\nnmae: B\nsteps:\n  - id: x\n    wait: 2 days\n"
                   "    email: {template: ebook/welcome.html.j2, subject: Hi}\n",
    "c-steps.yaml": "id: c\nname: C\nsteps:\n  - id: x\n    email: {template: ebook/welcome.html.j2, subject: Hi}\n"
                    "    goto: nowhere\n  - id: y\n    when: {clicked: z}\n"
                    "    email: {template: ebook/gone.html.j2, subject: Hi}\n",
    "d-render.yaml": "id: d\nname: D\nsteps:\n  - id: x\n    email:\n      template: undefined.html.j2\n"
                     "      subject: 'Hi {{ lead.nick }}'\n  - id: y\n    email: {template: escape.html.j2, subject: Hi}\n"
                     "  - id: z\n    email: {template: unclosed.html.j2, subject: Hi}\n",
    "ebook-nurture.yaml": ISSUE_EXAMPLE,
    "f-copy.yaml": ISSUE_EXAMPLE,
    "policy.yaml": "timezone: Atlantis/Capital\n",
}
BROKEN_TEMPLATES = {
    "undefined.html.j2": "<p>Hello</p>\n<p>{{ offer_code }}</p>\n",
    "escape.html.j2": "{{ ''.__class__.__mro__ }}\n",
    "unclosed.html.j2": "<p>One</p>\n<p>Two</p>\n{% if lead.first_name %}\n",
}

BUDGET_CAMPAIGN = ("id: budget\nname: Budget\nsteps:\n  - id: huge\n    email: {template: huge.html.j2, subject: Hi}\n"
                   "  - id: slow\n    email: {template: slow.html.j2, subject: Hi}\n"
                   "  - id: pad\n    email: {template: pad.html.j2, subject: Hi}\n")
BUDGET_TEMPLATES = {
    "huge.html.j2": "<p>Hi {{ lead.first_name }}</p>\n<p>{{ 'a' * 10**9 }}</p>\n",
    "slow.html.j2": "<p>Hi</p>\n{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}\n",
    "pad.html.j2": "<p>{{ '-' * 5000 }}</p>\n",
}

DIGITS = "1" * 5000
UNREADABLE_CAMPAIGNS = {  # scalars YAML parses but cannot make into values
    "a-digits.yaml": f"id: a\nname: A\npriority: {DIGITS}\nsteps: []\n",
    "b-month.yaml": "id: b\nname: B\nsteps:\n  - id: x\n    wait: !!timestamp 2020-13-45\n",
    "c-int.yaml": "id: c\nname: C\npriority: !!int abc\nsteps: []\n",
    "d-float.yaml": "id: d\nname: D\nsteps:\n  - id: x\n    update: {add_score: !!float abc}\n",
}

# name: (project folder, arguments, environment)
INVOCATIONS: dict[str, tuple[str, list[str], dict[str, str] | None]] = {
    "check-from-environment": ("elsewhere", ["check"], {"NURTURE_CAMPAIGNS_DIR": "{root}/issue/campaigns",
                                                        "NURTURE_TEMPLATES_DIR": "{root}/issue/templates"}),
    "check-defaults-quiet": ("main", ["check", "-q"], None),
    "check-broken": ("broken", ["check", *FOLDERS], None),
    "check-given-file": ("with-broken", ["check", "campaigns/ebook-nurture.yaml", *FOLDERS], None),
    "check-budget": ("budget", ["check", *FOLDERS], {"NURTURE_RENDER_TIMEOUT": "0.5"}),
    "check-budget-small": ("budget", ["check", *FOLDERS], {"NURTURE_RENDER_TIMEOUT": "0.5",
                                                          "NURTURE_RENDER_MAX_CHARS": "4000"}),
    "check-unreadable": ("unreadable", ["check", *FOLDERS], None),
    "preview-unreadable-lead": ("main", ["preview", "ebook-nurture", "welcome", "--lead", "odd-lead.yaml", *FOLDERS],
                                None),
    "schema": ("elsewhere", ["schema"], None),
    "preview-sample-lead": ("main", ["preview", "ebook-nurture", "welcome", *FOLDERS], None),
    "preview-lead-html-out": ("main", ["preview", "ebook-nurture", "case-study", "--lead", "lead.yaml", "--html-out",
                                       "{root}/case-study.html", *FOLDERS], None),
    "preview-stream-piece": ("main", ["preview", "showcase", "stream", "--variant", "guide", *FOLDERS], None),
    "preview-unknown-step": ("main", ["preview", "ebook-nurture", "nope", *FOLDERS], None),
    "preview-unknown-variant": ("main", ["preview", "showcase", "pitch", "--variant", "zzz", *FOLDERS], None),
    "preview-unknown-campaign": ("main", ["preview", "ebook", "welcome", *FOLDERS], None),
    "preview-broken-folder": ("with-broken", ["preview", "ebook-nurture", "welcome", *FOLDERS], None),
    "preview-variant-without-variants": ("main", ["preview", "ebook-nurture", "welcome", "--variant", "b", *FOLDERS],
                                         None),
}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project folders the invocations run in."""
    root = tmp_path_factory.mktemp("cli")
    make_project(root / "issue", {"ebook-nurture.yaml": ISSUE_EXAMPLE})
    make_project(root / "main", {"ebook-nurture.yaml": ISSUE_EXAMPLE, "showcase.yaml": SHOWCASE})
    make_project(root / "broken", BROKEN_CAMPAIGNS, BROKEN_TEMPLATES)
    make_project(root / "with-broken", {"ebook-nurture.yaml": ISSUE_EXAMPLE,
                                        "broken.yaml": "id: broken\nname: Broken\nsteps: []\n"})
    make_project(root / "budget", {"budget.yaml": BUDGET_CAMPAIGN}, BUDGET_TEMPLATES)
    make_project(root / "unreadable", UNREADABLE_CAMPAIGNS)
    (root / "main" / "odd-lead.yaml").write_text(f"email: ann@example.com\nfirst_name: Ann\nemployees: {DIGITS}\n",
                                                 encoding="utf-8")
    (root / "elsewhere").mkdir()
    return root


@pytest.fixture(scope="module")
def ran(root: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every invocation's result, by name; they run side by side."""
    def start(cwd: str, args: list[str], env: dict[str, str] | None) -> subprocess.CompletedProcess[str]:
        args = [a.replace("{root}", str(root)) for a in args]
        env = {k: v.replace("{root}", str(root)) for k, v in (env or {}).items()}
        return nurture(root / cwd, *args, env=env)

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {name: pool.submit(start, *invocation) for name, invocation in INVOCATIONS.items()}
        return {name: future.result() for name, future in futures.items()}


OK_ISSUE = "ok: 1 campaign(s), 2 email(s) rendered, no problems\n"


# --- check ---------------------------------------------------------------------------------------------------------------


def test_check_passes_the_issue_example_found_through_the_environment(
    ran: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    result = ran["check-from-environment"]
    assert (result.returncode, result.stdout, result.stderr) == (0, OK_ISSUE, "")


def test_check_uses_the_folders_in_the_current_directory_by_default_and_quiet_prints_nothing(
    ran: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    result = ran["check-defaults-quiet"]
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_check_prints_every_problem_as_path_line_message_and_exits_1(
    ran: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    result = ran["check-broken"]
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[:12] == [
        "campaigns/a-syntax.yaml:6: YAML syntax error: expected ',' or '}', but got '<stream end>'",
        "campaigns/b-keys.yaml:1: missing required key 'name'",
        "campaigns/b-keys.yaml:2: unknown key 'nmae' (did you mean 'name'?)",
        "campaigns/b-keys.yaml:5: wait: invalid duration '2 days': use a number and a unit (s, m, h, d, w), combined "
        "as in '1d12h'",
        "campaigns/c-steps.yaml:6: goto target 'nowhere' is not a step of this campaign",
        "campaigns/c-steps.yaml:8: clicked: 'z' is not an email step of this campaign",
        "campaigns/c-steps.yaml:9: template 'ebook/gone.html.j2' not found in templates",
        "campaigns/d-render.yaml:7: subject: 'dict object' has no attribute 'nick'",
        "campaigns/f-copy.yaml:1: campaign id 'ebook-nurture' is already used by campaigns/ebook-nurture.yaml:1",
        "campaigns/policy.yaml:1: unknown timezone 'Atlantis/Capital'",
        "templates/escape.html.j2:1: access to attribute '__class__' of 'str' object is unsafe.",
        "templates/unclosed.html.j2:3: template syntax error: Unexpected end of template. Jinja was looking for the "
        "following tags: " + lines[11].split("following tags: ", 1)[-1],  # Jinja lists the tags in no fixed order
    ]
    assert lines[12:] == ["templates/undefined.html.j2:2: 'offer_code' is undefined"]
    assert lines[11].endswith("The innermost block that needs to be closed is 'if'.")
    assert result.stderr == "13 problem(s) found\n"


def test_check_given_files_checks_only_those(ran: dict[str, subprocess.CompletedProcess[str]]) -> None:
    result = ran["check-given-file"]  # campaigns/broken.yaml lies next to it
    assert (result.returncode, result.stdout) == (0, OK_ISSUE)


# --- schema --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema(ran: dict[str, subprocess.CompletedProcess[str]]) -> dict[str, Any]:
    result = ran["schema"]
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_schema_describes_the_campaign_file(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert {"id", "name", "description", "entry", "exit", "reentry", "timezone", "send_window", "steps"} <= set(
        schema["properties"]
    )
    assert schema["additionalProperties"] is False
    assert {"id", "name", "steps"} <= set(schema["required"])


def test_schema_forbids_unknown_keys_at_every_level(schema: dict[str, Any]) -> None:
    objects = {name: d for name, d in schema["$defs"].items() if "properties" in d}
    assert {"Step", "EmailSpec", "Variant", "Condition", "StreamSpec", "WaitForSpec", "Entry"} <= set(objects)
    assert {name: d.get("additionalProperties") for name, d in objects.items()} == dict.fromkeys(objects, False)
    assert {"id", "wait", "when", "email", "webhook", "update", "wait_for", "stream", "branch", "goto"} <= set(
        objects["Step"]["properties"]
    )


def test_schema_uses_the_names_written_in_files(schema: dict[str, Any]) -> None:
    assert "not" in schema["$defs"]["Condition"]["properties"]
    assert "in" in schema["$defs"]["Comparison"]["properties"]


def test_schema_durations_match_what_the_loader_accepts(schema: dict[str, Any]) -> None:
    pattern = re.compile(schema["$defs"]["Step"]["properties"]["wait"]["pattern"])
    assert [bool(pattern.match(text)) for text in ("0s", "2d", "1d12h", "1w", "2 days", "2", "-1d")] == [
        True, True, True, True, False, False, False
    ]


# --- preview -------------------------------------------------------------------------------------------------------------


def test_preview_prints_subject_and_text_for_the_sample_lead(ran: dict[str, subprocess.CompletedProcess[str]]) -> None:
    result = ran["preview-sample-lead"]
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Subject: Your guide, Dana\n\nHi Dana, here is your guide.\n")
    assert "You are receiving this email at dana.whitfield@northwind-logistics.com" in result.stdout
    assert re.search(r"^\(HTML part: \d+ characters; --html to print it, --html-out FILE to save it\)$",
                     result.stdout, re.MULTILINE)


def test_preview_for_a_given_lead_writes_the_html_part(
    root: Path, ran: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    result = ran["preview-lead-html-out"]
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Subject: How Acme cut churn\n\nHow Acme (https://nurture.example/preview/t/c/")
    assert "You are receiving this email at ann@example.com" in result.stdout
    html = (root / "case-study.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert '<p>How <a href="https://nurture.example/preview/t/c/' in html  # links are tracked, with preview keys
    assert "ann@example.com" in html
    assert result.stdout.splitlines()[-1] == f"HTML part written to {root / 'case-study.html'} ({len(html)} characters)"


def test_preview_a_stream_piece(ran: dict[str, subprocess.CompletedProcess[str]]) -> None:
    result = ran["preview-stream-piece"]  # --variant names a piece of a content stream too
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "Subject: New: The guide"


@pytest.mark.parametrize(
    ("invocation", "message"),
    [
        ("preview-unknown-step", "error: campaign 'ebook-nurture' has no step 'nope' (steps: welcome, case-study)"),
        ("preview-unknown-variant", "error: step 'pitch' has no variant or content 'zzz' (has: numbers, question)"),
        ("preview-unknown-campaign", "error: no campaign 'ebook' (known: ebook-nurture, showcase)"),
        ("preview-broken-folder",
         "error: campaigns/broken.yaml:3: steps: List should have at least 1 item after validation, not 0"),
    ],
)
def test_preview_errors_are_a_message_and_exit_1(
    ran: dict[str, subprocess.CompletedProcess[str]], invocation: str, message: str
) -> None:
    result = ran[invocation]
    assert (result.returncode, result.stdout, result.stderr.splitlines()) == (1, "", [message])


def test_preview_an_unknown_variant_of_a_step_without_variants(ran: dict[str, subprocess.CompletedProcess[str]]) -> None:
    result = ran["preview-variant-without-variants"]
    assert result.returncode == 1
    assert result.stderr.startswith("error: step 'welcome' has no variant or content 'b'")
    assert "None" not in result.stderr


# --- preview, the library function behind the command ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog(root: Path) -> Catalog:
    return load_catalog(root / "main" / "campaigns", root / "main" / "templates").raise_for_problems()


@pytest.mark.parametrize(
    ("step", "variant", "subject"),
    [
        ("welcome", None, "Your guide, Dana"),
        ("pitch", None, "18% less churn at Northwind Logistics"),  # the first variant by default
        ("pitch", "numbers", "18% less churn at Northwind Logistics"),
        ("pitch", "question", "Default, Dana"),
        ("stream", None, "New: The guide"),  # the first piece by default
        ("stream", "checklist", "The checklist"),
    ],
)
def test_preview_renders_the_chosen_email(
    root: Path, catalog: Catalog, step: str, variant: str | None, subject: str
) -> None:
    campaign = "ebook-nurture" if step == "welcome" else "showcase"
    email = preview(catalog, root / "main" / "templates", campaign, step, sample_lead_view(), variant=variant,
                    content_id=variant)
    assert email.subject == subject
    assert email.html.startswith("<!DOCTYPE html>") and email.text


def test_preview_of_a_step_that_sends_no_email(root: Path, catalog: Catalog) -> None:
    with pytest.raises(InvalidInput, match=r"^step 'await' sends no email \(it is a wait_for step\)$"):
        preview(catalog, root / "main" / "templates", "showcase", "await", sample_lead_view())


def test_check_renders_within_the_workers_budget_and_reports_what_goes_over_it_at_its_line(
    ran: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    result = ran["check-budget"]
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "templates/huge.html.j2:2: '*' would make 1,000,000,000 characters, over the limit of 1,000,000 "
        "(NURTURE_RENDER_MAX_CHARS)",
        "templates/slow.html.j2:2: rendering took longer than 0.5 s (NURTURE_RENDER_TIMEOUT); a loop or a call runs "
        "too long",
    ]


def test_check_reports_a_value_yaml_cannot_make_at_its_line_without_a_traceback(
    ran: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    result = ran["check-unreadable"]
    assert result.returncode == 1 and "Traceback" not in result.stderr + result.stdout
    digits = "'" + "1" * 40 + "...' (5,000 characters)"
    assert result.stdout.splitlines() == [
        f"campaigns/a-digits.yaml:3: the value {digits} cannot be read as int: Exceeds the limit (4300 digits) for "
        "integer string conversion: value has 5000 digits",
        "campaigns/b-month.yaml:5: the value '2020-13-45' cannot be read as timestamp: month must be in 1..12",
        "campaigns/c-int.yaml:3: the value 'abc' cannot be read as int: invalid literal for int() with base 10: 'abc'",
        "campaigns/d-float.yaml:5: the value 'abc' cannot be read as float: could not convert string to float: 'abc'",
    ]


def test_preview_refuses_a_lead_file_with_a_value_yaml_cannot_make(
    ran: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    result = ran["preview-unreadable-lead"]
    assert result.returncode != 0 and "Traceback" not in result.stderr + result.stdout
    assert "odd-lead.yaml:3: the value '" + "1" * 40 + "...' (5,000 characters) cannot be read as int" in result.stderr


def test_check_takes_the_size_limit_from_nurture_render_max_chars(
    ran: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    result = ran["check-budget-small"]
    assert result.returncode == 1
    assert ("templates/pad.html.j2:1: '*' would make 5,000 characters, over the limit of 4,000 "
            "(NURTURE_RENDER_MAX_CHARS)") in result.stdout.splitlines()
