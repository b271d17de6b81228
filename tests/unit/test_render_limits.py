"""The rendering budget (``nurture.rendering.limits``): hostile templates fail fast, at their line, with the setting
that stopped them; ordinary templates render as before. Each case here used to run for minutes or take gigabytes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from nurture.errors import TemplateRenderError
from nurture.rendering import EmailRenderer, LinkBuilder, RenderLimits
from nurture.signing import Signer

pytestmark = pytest.mark.unit

LINKS = LinkBuilder("https://t.acme.test", Signer("k"), "1")
CONTEXT = {"lead": {"first_name": "Dana", "tags": ["a", "b"]}}
SIZE = "NURTURE_RENDER_MAX_CHARS"
TIME = "NURTURE_RENDER_TIMEOUT"

HOSTILE = {
    "string multiplication": "{{ 'a' * 10**9 }}",
    "list multiplication": "{{ ([1] * 10**8)|length }}",
    "multiplication from the right": "{{ (10**9 * 'ab')|length }}",
    "'%*s' width": "{{ '%*s' % (10**9, 'a') }}",
    "'%' width": "{{ '%0999999999d' % 1 }}",
    "format filter width": "{{ '%999999999s'|format('a') }}",
    "str.format width": "{{ '{:>999999999}'.format('a') }}",
    "str.format nested width": "{{ '{:>{}}'.format('a', 999999999) }}",
    "str.format_map width": "{{ '{x:>999999999}'.format_map({'x': 1}) }}",
    "center filter": "{{ 'a'|center(999999999) }}",
    "ljust method": "{{ 'a'.ljust(999999999) }}",
    "zfill method": "{{ '1'.zfill(999999999) }}",
    "expandtabs method": "{{ ('\\t' * 99999).expandtabs(99999) }}",
    "indent filter": "{% set s = 'a\\n' * 400000 %}{{ s|indent(999999) }}",
    "join of a huge range": "{{ range(99999)|join('a' * 99999) }}",
    "str.join of a huge range": "{{ ('a' * 99999).join(range(99999)|map('string')) }}",
    "replace filter": "{% set s = 'a' * 900000 %}{{ s|replace('a', s) }}",
    "replace method": "{% set s = 'a' * 900000 %}{{ s.replace('a', s) }}",
    "translate method": "{{ ('a' * 9999).translate({97: 'b' * 9999}) }}",
    "wordwrap filter": "{{ ('a' * 99999)|wordwrap(1, wrapstring='b' * 9999) }}",
    "batch filter": "{{ [1]|batch(999999999, 'x')|list|length }}",
    "tojson indent": "{{ range(99999)|list|tojson(indent=99999) }}",
    "lipsum": "{{ lipsum(100000) }}",
    "doubling with ~": "{% set ns = namespace(s='a') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "doubling with +": "{% set ns = namespace(s='a') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "output of a loop": "{% set s = 'a' * 900000 %}{% for i in range(2000) %}{{ s }}{% endfor %}",
    "huge power": "{{ 10 ** (10 ** 8) }}",
    "repeated squaring": "{% set ns = namespace(n=10**300) %}{% for i in range(30) %}{% set ns.n = ns.n * ns.n %}{% endfor %}",
}


@pytest.fixture
def renderer(tmp_path: Path) -> EmailRenderer:
    return EmailRenderer(tmp_path, RenderLimits(seconds=1.0))


@pytest.mark.parametrize("source", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_template_that_would_blow_up_fails_at_once_at_its_line(renderer: EmailRenderer, source: str) -> None:
    (renderer.templates_dir / "bad.html.j2").write_text(f"<p>Hi {{{{ lead.first_name }}}}</p>\n{source}\n")
    started = time.monotonic()
    with pytest.raises(TemplateRenderError) as failure:
        renderer.render("bad.html.j2", "Hi", CONTEXT, LINKS)
    assert time.monotonic() - started < 5
    assert str(failure.value).startswith("bad.html.j2:2: ")
    assert SIZE in str(failure.value) or "bits" in str(failure.value)


LOOPS = {
    "nested ranges": "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
    "nested loops over strings": "{% for i in 'x' * 900000 %}{% for j in 'y' * 900000 %}{% endfor %}{% endfor %}",
    "a macro in a loop": "{% macro m() %}{% for i in range(99999) %}{% endfor %}{% endmacro %}"
                         "{% for i in range(99999) %}{{ m() }}{% endfor %}",
}


@pytest.mark.parametrize("source", LOOPS.values(), ids=LOOPS.keys())
def test_a_template_that_runs_too_long_is_stopped_at_the_time_limit(tmp_path: Path, source: str) -> None:
    renderer = EmailRenderer(tmp_path, RenderLimits(seconds=0.3))
    (tmp_path / "slow.html.j2").write_text(f"<p>Hi</p>\n{source}\n")
    started = time.monotonic()
    with pytest.raises(TemplateRenderError, match=rf"^slow.html.j2:2: rendering took longer than 0.3 s \({TIME}\)"):
        renderer.render("slow.html.j2", "Hi", CONTEXT, LINKS)
    assert time.monotonic() - started < 3


def test_the_time_budget_is_one_per_email_and_starts_again_for_the_next(tmp_path: Path) -> None:
    renderer = EmailRenderer(tmp_path, RenderLimits(seconds=0.3))
    (tmp_path / "slow.html.j2").write_text("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}")
    (tmp_path / "fine.html.j2").write_text("<p>Hi {{ lead.first_name }}</p>{% for t in lead.tags %}{{ t }}{% endfor %}")
    with pytest.raises(TemplateRenderError):
        renderer.render("slow.html.j2", "Hi", CONTEXT, LINKS)
    assert renderer.render("fine.html.j2", "Hi {{ lead.first_name }}", CONTEXT, LINKS).html == "<p>Hi Dana</p>ab"


def test_a_subject_is_bounded_too(renderer: EmailRenderer) -> None:
    (renderer.templates_dir / "ok.html.j2").write_text("<p>ok</p>")
    with pytest.raises(TemplateRenderError, match=rf"^subject:1: '\*' would make 1,000,000,000 characters.*{SIZE}"):
        renderer.render("ok.html.j2", "{{ 'a' * 10**9 }}", CONTEXT, LINKS)


def test_the_size_limit_is_the_configured_one(tmp_path: Path) -> None:
    (tmp_path / "pad.html.j2").write_text("{{ 'a' * 5000 }}")
    assert len(EmailRenderer(tmp_path).render("pad.html.j2", "Hi", CONTEXT, LINKS).html) == 5000
    with pytest.raises(TemplateRenderError, match=r"would make 5,000 characters, over the limit of 4,000"):
        EmailRenderer(tmp_path, RenderLimits(max_chars=4000)).render("pad.html.j2", "Hi", CONTEXT, LINKS)


def test_ordinary_templates_still_render_loops_joins_and_padding(tmp_path: Path) -> None:
    (tmp_path / "fine.html.j2").write_text(
        "{% for t in lead.tags %}{{ loop.index }}/{{ loop.length }}:{{ t }} {% else %}none{% endfor %}"
        "|{{ lead.tags|join(', ') }}|{{ 'x'|center(5) }}|{{ '%5s' % 'y' }}|{{ '{:>3}'.format('z') }}|{{ 'a' ~ 'b' }}"
        "|{{ 'n'.ljust(3, '.') }}|{{ [1, 2] * 2 }}|{{ 2 ** 10 }}|{{ 'ab'|replace('b', 'cd') }}")
    html = EmailRenderer(tmp_path).render("fine.html.j2", "Hi", CONTEXT, LINKS).html
    assert html == "1/2:a 2/2:b |a, b|  x  |    y|  z|ab|n..|[1, 2, 1, 2]|1024|acd"


def test_check_reports_a_template_over_the_budget_as_a_problem_at_its_line(renderer: EmailRenderer) -> None:
    (renderer.templates_dir / "bad.html.j2").write_text("<p>Hi</p>\n{{ 'a' * 10**9 }}\n")
    [problem] = renderer.check("bad.html.j2", "Hi", CONTEXT, LINKS)
    assert (problem.path, problem.line) == (str(renderer.templates_dir / "bad.html.j2"), 2)
    assert SIZE in problem.message
