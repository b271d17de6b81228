"""The derived-text cache gives exactly the text that deriving from the final HTML gives, whatever the values."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from markupsafe import Markup

from nurture.rendering import EmailRenderer, LinkBuilder, html_to_text
from nurture.signing import Signer

ROOT = Path(__file__).resolve().parents[2]

TEMPLATE = """{% extends "_layout.html.j2" %}
{% block content %}
<h1>Hi {{ lead.first_name }},</h1>
<p>{{ lead.company }} and <a href="{{ track(lead.url) }}">{{ lead.label }}</a>.</p>
<ul>{% for tag in lead.tags %}<li>{{ tag }}</li>{% endfor %}</ul>
<p><a href="{{ lead.url }}">{{ lead.url }}</a> {{ lead.note }}</p>
{% endblock %}
"""

VALUES = [
    "Dana", "O'Brien", "Smith & Co", "<b>bold</b>", "  padded ", "two  spaces", "line\nbreak", "#anchor",
    "javascript:alert(1)", "https://example.com/a?b=1&c=2", "Zoë", "", "None", "https://example.com/x",
    Markup("<i>safe</i>"), "\ue000", "ünïcode — dash",
]


@pytest.fixture
def renderer(tmp_path: Path) -> EmailRenderer:
    for name in ("_layout.html.j2", "_layout.txt.j2"):
        (tmp_path / name).write_text((ROOT / "templates" / name).read_text())
    (tmp_path / "t.html.j2").write_text(TEMPLATE)
    return EmailRenderer(tmp_path)


def test_cached_text_matches_direct_derivation(renderer: EmailRenderer) -> None:
    rng = random.Random(7)
    signer = Signer("k")
    for number in range(300):
        url = rng.choice(["https://example.com/x", "https://example.com/a?b=1&c=2"])
        lead = {
            "first_name": rng.choice(VALUES), "company": rng.choice(VALUES), "label": rng.choice([*VALUES, url]),
            "url": url, "note": rng.choice(VALUES), "tags": rng.sample([v for v in VALUES if v], 2),
            "email": "a@example.com",
        }
        context = {"lead": lead, "campaign": {"id": "c", "name": "C"}, "step": {"id": "s"}}
        email = renderer.render("t.html.j2", "Hi", context, LinkBuilder("https://t.example", signer, str(number)))
        assert email.text == html_to_text(email.html), lead


def test_the_cache_is_used_for_plain_values(renderer: EmailRenderer) -> None:
    signer = Signer("k")
    for number, name in enumerate(["Ada", "Grace", "Linus"]):
        lead = {"first_name": name, "company": "Acme", "label": "guide", "url": "https://example.com/x", "note": "n",
                "tags": ["a", "b"], "email": "a@example.com"}
        context = {"lead": lead, "campaign": {"id": "c", "name": "C"}, "step": {"id": "s"}}
        email = renderer.render("t.html.j2", "Hi", context, LinkBuilder("https://t.example", signer, str(number)))
        assert f"Hi {name}," in email.text
    assert len(renderer._derived) == 1  # three leads, one derivation


REWORKING = {
    "filter_block": ("{% filter upper %}Hello {{ lead.first_name }}{% endfilter %}", "HELLO ADA"),
    "captured_set": ("{% set who %}{{ lead.first_name }}!{% endset %}{{ who|length }} {{ who|replace('A', 'E') }}",
                     "4 Eda!"),
    "macro": ("{% macro hi(name) %}Hi {{ name }}{% endmacro %}{{ hi(lead.first_name)|upper }}", "HI ADA"),
    "call_block": ("{% macro box() %}[{{ caller()|upper }}]{% endmacro %}{% call box() %}{{ lead.first_name }}"
                   "{% endcall %}", "[ADA]"),
    "included": ("{% include 'part.html.j2' %}", "HELLO ADA"),
}


@pytest.mark.parametrize("name", sorted(REWORKING))
def test_output_handed_to_other_template_code_holds_the_values_not_placeholders(tmp_path: Path, name: str) -> None:
    """A filter block, a captured set, a macro's or a call block's output, and a template that includes one: what
    they hand on is the rendered values (the skeleton cache's markers would be uppercased, counted or replaced)."""
    source, expected = REWORKING[name]
    (tmp_path / "t.html.j2").write_text(source)
    (tmp_path / "part.html.j2").write_text(REWORKING["filter_block"][0])
    renderer = EmailRenderer(tmp_path)
    links = LinkBuilder("https://t.example", Signer("k"), "1")
    for first_name, shown in (("Ada", expected), ("Ada", expected), ("Bo", None)):
        context = {"lead": {"email": "a@example.com", "first_name": first_name}, "campaign": {"id": "c", "name": "C"},
                   "step": {"id": "s", "key": "s"}, "variant": None}
        rendered = renderer.render("t.html.j2", "Hi", context, links)
        if shown is not None:
            assert rendered.html == shown
            assert rendered.text == html_to_text(shown)
        else:
            assert "Bo" in rendered.html.replace("BO", "Bo") and "\ue000" not in rendered.html


def test_the_shipped_templates_keep_the_skeleton_cache() -> None:
    from nurture.rendering.environment import _reworks_output

    renderer = EmailRenderer(ROOT / "templates")
    names = sorted(str(path.relative_to(ROOT / "templates")) for path in (ROOT / "templates").rglob("*.html.j2"))
    assert names
    assert [name for name in names if renderer._reworks(name)] == []
    assert _reworks_output(lambda n: REWORKING["macro"][0], renderer.environment.parse, "x", set())
