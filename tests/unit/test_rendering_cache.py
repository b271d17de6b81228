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
