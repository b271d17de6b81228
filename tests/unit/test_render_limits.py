"""The rendering budget (``nurture.rendering.limits``): hostile templates fail fast, at their line, with the setting
that stopped them; ordinary templates render as before. Each case here used to run for minutes or take gigabytes."""

from __future__ import annotations

import re
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

# Two lists, each nesting the one before twice over, 40 times: 2**40 items each, made in 80 steps.
DOUBLED = ("{% set ns = namespace(l=[1], m=[1]) %}"
           "{% for i in range(40) %}{% set ns.l = [ns.l, ns.l] %}{% set ns.m = [ns.m, ns.m] %}{% endfor %}")

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
    # Lists nested in lists: cheap to make (references to one list), but huge once printed, joined or compared.
    "nested list multiplication, counted": "{% set a = [[[[[1] * 100] * 100] * 100] * 100] * 100 %}{{ a|length }}",
    "nested list multiplication, printed": "{% set a = [[[[[1] * 100] * 100] * 100] * 100] * 100 %}{{ a }}",
    "a list of a million-item lists": "{% set l = [[[[1] * 1000] * 1000] * 1000] %}{{ l }}",
    "summed nested lists": "{{ (([[1] * 3000] * 3000)|sum(start=[]))|length }}",
    **{f"doubled nesting, {use}": DOUBLED + use for use in (
        "{{ ns.l }}", "{{ ns.l|string }}", "{{ ns.l|tojson }}", "{{ ns.l|pprint }}", "{{ ns.l|join(',') }}",
        "{{ ns.l|list }}", "{{ 'x' ~ ns.l }}", "{{ ','.join(ns.l|map('string')) }}", "{{ ns.l == ns.m }}",
        "{{ [ns.l, ns.m]|sort }}", "{{ '%s' % (ns.l,) }}", "{{ '{}'.format(ns.l) }}")},
    "sum of doubled lists": "{% set ns = namespace(l=[[1] * 900]) %}{% for i in range(12) %}{% set ns.l = ns.l + ns.l %}"
                            "{% endfor %}{{ (ns.l|sum(start=[]))|length }}",
}


@pytest.fixture
def renderer(tmp_path: Path) -> EmailRenderer:
    # A time limit far above what any case here needs, so that it is the size limit (or the bits of a number) that
    # stops each one even on a loaded machine; how fast that happens is measured in CPU time, not on the wall clock.
    return EmailRenderer(tmp_path, RenderLimits(seconds=60.0))


@pytest.mark.parametrize("source", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_template_that_would_blow_up_fails_at_once_at_its_line(renderer: EmailRenderer, source: str) -> None:
    (renderer.templates_dir / "bad.html.j2").write_text(f"<p>Hi {{{{ lead.first_name }}}}</p>\n{source}\n")
    started = time.process_time()
    with pytest.raises(TemplateRenderError) as failure:
        renderer.render("bad.html.j2", "Hi", CONTEXT, LINKS)
    assert time.process_time() - started < 2
    assert str(failure.value).startswith("bad.html.j2:2: ")
    assert SIZE in str(failure.value) or "bits" in str(failure.value)


# A short template repeating one long value: the values substituted count, not only the widths, so the gigabyte is
# refused before it is made (the number reported stops just past the limit).
REPEATED = {
    "str.format": "{{ ('{0}' * 1000).format(x) }}",
    "str.format_map": "{{ ('{x}' * 1000).format_map({'x': x}) }}",
    "'%' formatting": "{{ ('%(a)s' * 1000) % {'a': x} }}",
    "the filter 'format'": "{{ ('%(a)s' * 1000)|format(a=x) }}",
}


@pytest.mark.parametrize(("what", "source"), REPEATED.items(), ids=REPEATED.keys())
def test_formatting_that_repeats_a_long_value_is_refused_before_it_is_made(
        renderer: EmailRenderer, what: str, source: str) -> None:
    (renderer.templates_dir / "bad.html.j2").write_text(f"{{% set x = 'a' * 999999 %}}\n{source}\n")
    with pytest.raises(TemplateRenderError) as failure:
        renderer.render("bad.html.j2", "Hi", CONTEXT, LINKS)
    assert re.match(rf"bad.html.j2:2: {re.escape(what)} would make 1,00\d,\d{{3}} characters.*{SIZE}", str(failure.value))


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


def test_a_large_number_given_to_a_filter_is_a_value_not_a_width(tmp_path: Path) -> None:
    (tmp_path / "numbers.html.j2").write_text(
        "{{ '%d employees'|format(lead.company_size) }}|{{ lead.not_set|default(1500000) }}"
        "|{{ 'a-b'|replace('-', 2500000) }}|{{ [1, 2]|join(3000000) }}|{{ 5000000|string }}")
    context = {"lead": {"company_size": 2100000}}
    html = EmailRenderer(tmp_path).render("numbers.html.j2", "Hi", context, LINKS).html
    assert html == "2100000 employees|1500000|a2500000b|130000002|5000000"


def test_nested_lists_and_repeated_values_within_the_limit_still_render(tmp_path: Path) -> None:
    (tmp_path / "nested.html.j2").write_text(
        "{{ [[0] * 3] * 2 }}|{{ ([[1, 2]] * 2)|sum(start=[]) }}|{{ ('{0}' * 3).format('ab') }}"
        "|{{ ('%(a)s' * 2) % {'a': 'cd'} }}|{{ [['x']]|tojson }}|{{ [1] == [1] }}|{{ 'a' ~ 1 ~ [2] }}")
    html = EmailRenderer(tmp_path).render("nested.html.j2", "Hi", CONTEXT, LINKS).html
    assert html == '[[0, 0, 0], [0, 0, 0]]|[1, 2, 1, 2]|ababab|cdcd|[["x"]]|True|a1[2]'


def test_check_reports_a_template_over_the_budget_as_a_problem_at_its_line(renderer: EmailRenderer) -> None:
    (renderer.templates_dir / "bad.html.j2").write_text("<p>Hi</p>\n{{ 'a' * 10**9 }}\n")
    [problem] = renderer.check("bad.html.j2", "Hi", CONTEXT, LINKS)
    assert (problem.path, problem.line) == (str(renderer.templates_dir / "bad.html.j2"), 2)
    assert SIZE in problem.message
