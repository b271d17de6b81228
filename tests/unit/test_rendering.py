from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

import nurture.rendering
from nurture.errors import Problem, TemplateRenderError
from nurture.rendering import (
    EmailRenderer,
    LinkBuilder,
    decode_click,
    decode_open,
    decode_unsubscribe,
    html_to_text,
    sample_lead,
)
from nurture.signing import BadSignature, Signer

SHIPPED_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
CLICK_LINK = re.compile(r"https://t\.example\.com/t/c/([A-Za-z0-9_.-]+)")

WELCOME_HTML = """\
{% extends "_layout.html.j2" %}
{% block preheader %}Your guide is inside{% endblock %}
{% block content %}
<h1>Hi {{ lead.first_name }},</h1>
<p>Here is <a href="{{ track("https://example.com/guide?utm_source=nurture&x=1") }}">your guide</a>.</p>
<p>Also: {{ "https://example.com/webinar" | track }}</p>
{% endblock %}
"""


@pytest.fixture
def templates_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "templates"
    directory.mkdir()
    for layout in ("_layout.html.j2", "_layout.txt.j2"):
        shutil.copy(SHIPPED_TEMPLATES / layout, directory / layout)
    return directory


def write(templates_dir: Path, name: str, source: str) -> None:
    path = templates_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source, encoding="utf-8")


@pytest.fixture
def renderer(templates_dir: Path) -> EmailRenderer:
    return EmailRenderer(templates_dir)


@pytest.fixture
def signer() -> Signer:
    return Signer("test-secret")


@pytest.fixture
def links(signer: Signer) -> LinkBuilder:
    return LinkBuilder("https://t.example.com/", signer, "dlv-42")


@pytest.fixture
def context() -> dict[str, Any]:
    return {
        "lead": sample_lead(),
        "campaign": {"id": "ebook", "name": "Ebook nurture"},
        "step": {"id": "welcome"},
        "content": {"id": "guide", "title": "The Routing Guide", "link": "https://example.com/guide"},
    }


# --- rendering with the layout


def test_email_extending_the_layout_fills_its_blocks(renderer: EmailRenderer, templates_dir: Path,
                                                     context: dict, links: LinkBuilder) -> None:
    write(templates_dir, "ebook/welcome.html.j2", WELCOME_HTML)
    email = renderer.render("ebook/welcome.html.j2", "Welcome", context, links)

    assert "<title>Ebook nurture</title>" in email.html
    assert "Your guide is inside" in email.html
    assert "<h1>Hi Dana,</h1>" in email.html
    assert f'href="{links.unsubscribe()}"' in email.html
    assert f'<img src="{links.open_pixel()}" width="1" height="1" alt=""' in email.html
    assert "max-width:600px" in email.html
    assert context["lead"]["email"] in email.html  # why the lead gets this mail


def test_derived_text_part_has_content_and_links_but_no_pixel_or_preheader(
    renderer: EmailRenderer, templates_dir: Path, context: dict, links: LinkBuilder
) -> None:
    write(templates_dir, "ebook/welcome.html.j2", WELCOME_HTML)
    text = renderer.render("ebook/welcome.html.j2", "Welcome", context, links).text

    assert text.startswith("Hi Dana,\n\nHere is your guide (https://t.example.com/t/c/")
    assert f"Unsubscribe ({links.unsubscribe()})" in text
    assert "/t/o/" not in text
    assert "Your guide is inside" not in text
    assert "<" not in text


def test_sibling_text_template_is_preferred_over_derivation(
    renderer: EmailRenderer, templates_dir: Path, context: dict, links: LinkBuilder
) -> None:
    write(templates_dir, "ebook/welcome.html.j2", WELCOME_HTML)
    write(templates_dir, "ebook/welcome.txt.j2", """\
{% extends "_layout.txt.j2" %}
{% block content %}
Hello {{ lead.first_name }}, hand-written text part.
Guide: {{ track(content.link) }}
{% endblock %}
""")
    text = renderer.render("ebook/welcome.html.j2", "Welcome", context, links).text

    assert text.startswith("Hello Dana, hand-written text part.\nGuide: https://t.example.com/t/c/")
    assert f"Unsubscribe: {links.unsubscribe()}" in text
    assert "Hi Dana," not in text
    assert "/t/o/" not in text


def test_lead_fields_are_escaped_in_html_but_not_in_text_or_subject(
    renderer: EmailRenderer, templates_dir: Path, context: dict, links: LinkBuilder
) -> None:
    context["lead"]["first_name"] = "<script>alert(1)</script>"
    write(templates_dir, "x.html.j2", "<p>Hi {{ lead.first_name }}</p>")
    write(templates_dir, "x.txt.j2", "Hi {{ lead.first_name }}")
    email = renderer.render("x.html.j2", "Hi {{ lead.first_name }}", context, links)

    assert email.html == "<p>Hi &lt;script&gt;alert(1)&lt;/script&gt;</p>"
    assert email.text == "Hi <script>alert(1)</script>"
    assert email.subject == "Hi <script>alert(1)</script>"


def test_helpers_cannot_be_shadowed_by_context(renderer: EmailRenderer, templates_dir: Path,
                                               context: dict, links: LinkBuilder) -> None:
    context["unsubscribe_url"] = "https://evil.example/"
    write(templates_dir, "x.html.j2", "{{ unsubscribe_url }}")
    assert renderer.render("x.html.j2", "s", context, links).html == links.unsubscribe()


def test_shipped_layouts_render_with_the_sample_lead(renderer: EmailRenderer, templates_dir: Path,
                                                     context: dict, links: LinkBuilder) -> None:
    write(templates_dir, "plain.html.j2", '{% extends "_layout.html.j2" %}{% block content %}<p>Hi</p>{% endblock %}')
    write(templates_dir, "plain.txt.j2", '{% extends "_layout.txt.j2" %}{% block content %}Hi{% endblock %}')
    context["lead"] = sample_lead()
    assert renderer.check("plain.html.j2", "Hi {{ lead.first_name }}", context, links) == []


def test_sample_lead_has_every_standard_field() -> None:
    lead = sample_lead()
    for field in ("email", "first_name", "last_name", "company", "title", "industry", "company_size", "country",
                  "timezone"):
        assert isinstance(lead[field], str) and lead[field], field
    assert lead["tags"] and all(isinstance(tag, str) for tag in lead["tags"])
    assert isinstance(lead["fields"], dict) and lead["fields"]


# --- errors


def test_undefined_field_names_template_file_and_line(renderer: EmailRenderer, templates_dir: Path,
                                                      context: dict, links: LinkBuilder) -> None:
    write(templates_dir, "ebook/welcome.html.j2", WELCOME_HTML.replace("lead.first_name", "lead.first_nme"))
    with pytest.raises(TemplateRenderError) as caught:
        renderer.render("ebook/welcome.html.j2", "Welcome", context, links)
    assert str(caught.value) == "ebook/welcome.html.j2:4: 'dict object' has no attribute 'first_nme'"


def test_error_inside_the_layout_names_the_layout(renderer: EmailRenderer, templates_dir: Path,
                                                  context: dict, links: LinkBuilder) -> None:
    write(templates_dir, "x.html.j2", WELCOME_HTML)
    del context["campaign"]
    layout_lines = (templates_dir / "_layout.html.j2").read_text().splitlines()
    title_line = next(n for n, line in enumerate(layout_lines, 1) if "{% block title %}" in line)
    with pytest.raises(TemplateRenderError, match=rf"^_layout\.html\.j2:{title_line}: 'campaign' is undefined$"):
        renderer.render("x.html.j2", "s", context, links)


def test_syntax_error_names_file_and_line(renderer: EmailRenderer, templates_dir: Path,
                                          context: dict, links: LinkBuilder) -> None:
    write(templates_dir, "broken.html.j2", "<p>fine</p>\n<p>fine</p>\n{% if %}\n")
    with pytest.raises(TemplateRenderError, match=r"^broken\.html\.j2:3: "):
        renderer.render("broken.html.j2", "s", context, links)


def test_missing_template_is_a_render_error(renderer: EmailRenderer, context: dict, links: LinkBuilder) -> None:
    with pytest.raises(TemplateRenderError, match=r"template 'nope.html.j2' not found"):
        renderer.render("nope.html.j2", "s", context, links)


def test_missing_layout_is_reported_at_the_extends_line(renderer: EmailRenderer, templates_dir: Path,
                                                        context: dict, links: LinkBuilder) -> None:
    write(templates_dir, "x.html.j2", "{# comment #}\n{% extends '_nope.html.j2' %}")
    with pytest.raises(TemplateRenderError, match=r"^x\.html\.j2:2: template '_nope\.html\.j2' not found$"):
        renderer.render("x.html.j2", "s", context, links)


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ lead.__class__.__base__.__subclasses__() }}",
        "{{ track.__self__.signer }}",
        "{{ track.__globals__ }}",
        "{{ lead.update({'email': 'x@evil.example'}) }}",
        "{{ lead.tags.append('owned') }}",
    ],
)
def test_sandbox_blocks_escapes_and_mutation(renderer: EmailRenderer, templates_dir: Path, context: dict,
                                             links: LinkBuilder, source: str) -> None:
    write(templates_dir, "evil.html.j2", f"<p>before</p>\n{source}\n")
    lead_before = {**context["lead"], "tags": list(context["lead"]["tags"])}
    with pytest.raises(TemplateRenderError, match=r"^evil\.html\.j2:2: .*unsafe") as caught:
        renderer.render("evil.html.j2", "s", context, links)
    assert "<class" not in str(caught.value)
    assert "subclasses" not in str(caught.value).replace("__subclasses__", "")
    assert context["lead"] == lead_before


def test_sandbox_applies_to_subjects(renderer: EmailRenderer, templates_dir: Path,
                                     context: dict, links: LinkBuilder) -> None:
    write(templates_dir, "x.html.j2", "hi")
    with pytest.raises(TemplateRenderError, match="unsafe"):
        renderer.render("x.html.j2", "{{ ''.__class__.__mro__[1].__subclasses__() }}", context, links)


def test_tracking_a_non_http_url_in_a_template_is_a_render_error(
    renderer: EmailRenderer, templates_dir: Path, context: dict, links: LinkBuilder
) -> None:
    write(templates_dir, "x.html.j2", "<p>ok</p>\n<a href=\"{{ track('javascript:alert(1)') }}\">x</a>")
    with pytest.raises(TemplateRenderError, match=r"^x\.html\.j2:2: ValueError: only absolute http\(s\) URLs"):
        renderer.render("x.html.j2", "s", context, links)


# --- check()


def test_check_returns_problems_for_every_part_instead_of_raising(
    renderer: EmailRenderer, templates_dir: Path, context: dict, links: LinkBuilder
) -> None:
    write(templates_dir, "ebook/x.html.j2", "<p>\n</p>\n\n<p>{{ lead.nope }}</p>")
    write(templates_dir, "ebook/x.txt.j2", "Hi\n{{ lead.first_name }} {{ oops }}")
    problems = renderer.check("ebook/x.html.j2", "Hi {{ lead.frist_name }}", context, links)

    assert problems == [
        Problem(str(templates_dir / "ebook/x.html.j2"), 4, "'dict object' has no attribute 'nope'"),
        Problem(str(templates_dir / "ebook/x.txt.j2"), 2, "'oops' is undefined"),
        Problem("<subject>", 1, "'dict object' has no attribute 'frist_name'"),
    ]


def test_check_reports_syntax_errors_and_missing_templates(renderer: EmailRenderer, templates_dir: Path,
                                                          context: dict, links: LinkBuilder) -> None:
    write(templates_dir, "bad.html.j2", "line 1\n{% for x in %}\n{% endfor %}")
    [syntax] = renderer.check("bad.html.j2", "s", context, links)
    assert (syntax.path, syntax.line) == (str(templates_dir / "bad.html.j2"), 2)

    [missing] = renderer.check("gone.html.j2", "s", context, links)
    assert missing == Problem(str(templates_dir / "gone.html.j2"), 0, "template 'gone.html.j2' not found")


def test_check_of_a_good_email_is_empty(renderer: EmailRenderer, templates_dir: Path,
                                        context: dict, links: LinkBuilder) -> None:
    write(templates_dir, "ebook/welcome.html.j2", WELCOME_HTML)
    assert renderer.check("ebook/welcome.html.j2", "Hi {{ lead.first_name }}", context, links) == []


# --- subjects


def test_subject_is_templated_collapsed_and_stripped(renderer: EmailRenderer, templates_dir: Path,
                                                     context: dict, links: LinkBuilder) -> None:
    write(templates_dir, "x.html.j2", "hi")
    context["lead"]["first_name"] = "Dana\r\nBcc: victim@example.com\n"
    subject = "  {{ lead.first_name }},\n your copy of {{ content.title }} & more\t "
    email = renderer.render("x.html.j2", subject, context, links)
    assert email.subject == "Dana Bcc: victim@example.com , your copy of The Routing Guide & more"


@pytest.mark.parametrize("separator", ["\r", "\n", "\r\n", "\u2028", "\x0b", "\x85"])
def test_subject_never_contains_a_line_break(renderer: EmailRenderer, templates_dir: Path, context: dict,
                                             links: LinkBuilder, separator: str) -> None:
    write(templates_dir, "x.html.j2", "hi")
    context["lead"]["company"] = f"Acme{separator}X-Injected: yes"
    subject = renderer.render("x.html.j2", "{{ lead.company }}", context, links).subject
    assert subject == "Acme X-Injected: yes"


def test_compiled_subjects_are_cached_by_source(renderer: EmailRenderer, templates_dir: Path, context: dict,
                                                links: LinkBuilder, monkeypatch: pytest.MonkeyPatch) -> None:
    write(templates_dir, "x.html.j2", "hi")
    compiled: list[str] = []
    real = renderer.subject_environment.from_string

    def counting_from_string(source: str, *args: Any, **kwargs: Any) -> Any:
        compiled.append(source)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(renderer.subject_environment, "from_string", counting_from_string)
    for _ in range(20):
        renderer.render("x.html.j2", "Hi {{ lead.first_name }}", context, links)
        renderer.render("x.html.j2", "Bye {{ lead.first_name }}", context, links)
    assert compiled == ["Hi {{ lead.first_name }}", "Bye {{ lead.first_name }}"]


# --- compiled template reuse


def test_templates_are_loaded_and_compiled_once(renderer: EmailRenderer, templates_dir: Path, context: dict,
                                                links: LinkBuilder, monkeypatch: pytest.MonkeyPatch) -> None:
    write(templates_dir, "ebook/welcome.html.j2", WELCOME_HTML)
    loads: list[str] = []
    loader = renderer.environment.loader
    assert loader is not None
    real = loader.get_source

    def counting_get_source(environment: Any, name: str) -> Any:
        loads.append(name)
        return real(environment, name)

    monkeypatch.setattr(loader, "get_source", counting_get_source)
    first = renderer.render("ebook/welcome.html.j2", "s", context, links)
    after_first = list(loads)
    for _ in range(50):
        assert renderer.render("ebook/welcome.html.j2", "s", context, links) == first
    assert loads == after_first  # nothing read again after the first render
    # each read to be compiled, the HTML ones once more to see whether they hand rendered output on (a filter block)
    assert sorted(set(loads)) == ["_layout.html.j2", "ebook/welcome.html.j2", "ebook/welcome.txt.j2"]
    assert max(loads.count(name) for name in set(loads)) <= 2


# --- links


def test_track_links_decode_to_the_url_and_delivery(renderer: EmailRenderer, templates_dir: Path,
                                                    context: dict, signer: Signer, links: LinkBuilder) -> None:
    write(templates_dir, "ebook/welcome.html.j2", WELCOME_HTML)
    email = renderer.render("ebook/welcome.html.j2", "s", context, links)
    tokens = CLICK_LINK.findall(email.html)

    assert [decode_click(signer, token) for token in tokens] == [
        ("dlv-42", "https://example.com/guide?utm_source=nurture&x=1"),
        ("dlv-42", "https://example.com/webinar"),
    ]
    assert CLICK_LINK.findall(email.text) == tokens


def test_link_shapes_handle_a_trailing_slash(signer: Signer) -> None:
    for base in ("https://t.example.com", "https://t.example.com/"):
        links = LinkBuilder(base, signer, "dlv-7")
        assert re.fullmatch(r"https://t\.example\.com/t/c/[\w-]+\.[\w-]+", links.click("https://example.com/"))
        assert re.fullmatch(r"https://t\.example\.com/t/o/[\w-]+\.[\w-]+\.gif", links.open_pixel())
        assert re.fullmatch(r"https://t\.example\.com/u/[\w-]+\.[\w-]+", links.unsubscribe())


def test_open_and_unsubscribe_tokens_decode_to_the_delivery(signer: Signer, links: LinkBuilder) -> None:
    pixel_token = links.open_pixel().rsplit("/", 1)[1]
    assert decode_open(signer, pixel_token) == "dlv-42"
    assert decode_open(signer, pixel_token.removesuffix(".gif")) == "dlv-42"
    assert decode_unsubscribe(signer, links.unsubscribe().rsplit("/", 1)[1]) == "dlv-42"


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        " javascript:alert(1)",
        "/relative/path",
        "guide.html",
        "//evil.example/phish",
        "mailto:someone@example.com",
        "ftp://example.com/file",
        "data:text/html,<script>alert(1)</script>",
        "https://",
        "https://example.com/\r\nLocation: https://evil.example",
        "",
    ],
)
def test_click_refuses_anything_but_absolute_http_urls(links: LinkBuilder, url: str) -> None:
    with pytest.raises(ValueError):
        links.click(url)


def test_click_accepts_http_and_https(signer: Signer, links: LinkBuilder) -> None:
    for url in ("http://example.com", "HTTPS://Example.com/a?b=c#d"):
        token = links.click(url).rsplit("/", 1)[1]
        assert decode_click(signer, token) == ("dlv-42", url)


def test_tokens_only_decode_for_their_own_purpose(signer: Signer, links: LinkBuilder) -> None:
    click = links.click("https://example.com/").rsplit("/", 1)[1]
    pixel = links.open_pixel().rsplit("/", 1)[1]
    unsubscribe = links.unsubscribe().rsplit("/", 1)[1]
    for decode, wrong in ((decode_click, pixel), (decode_click, unsubscribe), (decode_open, click),
                          (decode_open, unsubscribe), (decode_unsubscribe, click), (decode_unsubscribe, pixel)):
        with pytest.raises(BadSignature):
            decode(signer, wrong)


def test_tokens_from_another_secret_or_altered_are_rejected(signer: Signer) -> None:
    forged = LinkBuilder("https://t.example.com", Signer("attacker"), "dlv-42")
    click_token = forged.click("https://evil.example/").rsplit("/", 1)[1]
    for decode, token in ((decode_click, click_token),
                          (decode_open, forged.open_pixel().rsplit("/", 1)[1]),
                          (decode_unsubscribe, forged.unsubscribe().rsplit("/", 1)[1])):
        with pytest.raises(BadSignature):
            decode(signer, token)
    genuine = LinkBuilder("https://t.example.com", signer, "dlv-42").click("https://example.com/")
    token = genuine.rsplit("/", 1)[1]
    for broken in (token[:-3], token[5:], token.replace(".", ""), token + "x", "x" + token):
        with pytest.raises(BadSignature):
            decode_click(signer, broken)


def test_signed_click_payload_with_bad_shape_is_rejected(signer: Signer) -> None:
    for payload in ({"d": "dlv-42", "u": "javascript:alert(1)"}, {"d": "dlv-42"}, {"u": "https://example.com"},
                    {"d": 42, "u": "https://example.com"}):
        with pytest.raises(BadSignature):
            decode_click(signer, signer.sign(payload, purpose="click"))


# --- html_to_text


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("", ""),
        ("<p>Hello</p><p>World</p>", "Hello\n\nWorld"),
        ("Line one<br>Line two<br/>Line three", "Line one\nLine two\nLine three"),
        ("<h1>Title</h1><p>Body</p><h2>Next</h2>Tail", "Title\n\nBody\n\nNext\n\nTail"),
        ("<p>Intro</p><ul><li>One</li><li>Two</li></ul><p>After</p>", "Intro\n\n- One\n- Two\n\nAfter"),
        ("<ol><li><p>Para in item</p></li><li>Plain</li></ol>", "- Para in item\n- Plain"),
        ("<ul><li>One<li>Two</ul><p>After</p><p>End</p>", "- One\n- Two\n\nAfter\n\nEnd"),
        ("<ul><li>A<ul><li>A1</li></ul></li><li>B</li></ul>", "- A\n- A1\n- B"),
        ("<ul><li><ul><li>Inner</li></ul></li></ul><p>x</p><p>y</p>", "- Inner\n\nx\n\ny"),
        ("<ul><li></li></ul>Not an item", "Not an item"),
        ('<ul><li><a href="https://x.com">https://x.com</a></li>'
         '<li><a href="https://y.com"><img src="i"></a></li></ul>',
         "- https://x.com\n- https://y.com"),
        ('<p>Read <a href="https://x.com/a">the guide</a>.</p>', "Read the guide (https://x.com/a)."),
        ('<a href="https://x.com/a">https://x.com/a</a>', "https://x.com/a"),
        ('<a href=" https://x.com/a ">  https://x.com/a </a>', "https://x.com/a"),
        ('<a href="mailto:hi@x.com">hi@x.com</a>', "hi@x.com"),
        ('<a href="https://x.com"><img src="logo.png" alt="Logo"></a>', "https://x.com"),
        ('<a href="#top">Back to top</a>', "Back to top"),
        ('<a>No href</a>', "No href"),
        ('<p>Logo <img src="logo.png" alt="Logo"> here</p>', "Logo here"),
        ('<p>Hi</p><img src="https://t.example.com/t/o/x.gif" width="1" height="1" alt="">', "Hi"),
        ("<html><head><title>T</title><style>p { color: red }</style></head><body><p>Hi</p>"
         "<script>var x = '<p>no</p>';</script></body></html>", "Hi"),
        ("<head><title>Unclosed head<body><p>Body</p>", "Body"),
        ("<p>  lots \n of\t\tspace  </p>\n\n\n<p> next </p>", "lots of space\n\nnext"),
        ("<p>Fish &amp; Chips &lt;3 caf&eacute; &#39;q&#39; &nbsp;end</p>", "Fish & Chips <3 café 'q' end"),
        ('<div style="display: none">preheader <div>nested</div> still</div><p>Body</p>', "Body"),
        ("<div hidden>secret</div>Shown", "Shown"),
        ("<table><tr><td>A</td><td>B</td></tr><tr><td>C</td></tr></table>", "A B\nC"),
        ("<div>one</div><div>two</div>", "one\ntwo"),
        ("<p>a</p><br><br><br><p>b</p>", "a\n\nb"),
    ],
)
def test_html_to_text(html: str, text: str) -> None:
    assert html_to_text(html) == text


def test_public_api_is_reexported() -> None:
    assert set(nurture.rendering.__all__) == {
        "EmailRenderer", "LinkBuilder", "RenderedEmail", "decode_click", "decode_open", "decode_unsubscribe",
        "html_to_text", "is_trackable_url", "sample_lead", "RenderLimits", "RenderLimitExceeded", "render_limits",
    }
    for name in nurture.rendering.__all__:
        assert getattr(nurture.rendering, name) is not None


def test_a_deferred_renderer_makes_its_renderer_once_at_the_first_email(templates_dir: Path,
                                                                        context: dict[str, Any],
                                                                        links: LinkBuilder) -> None:
    from nurture.rendering.deferred import DeferredRenderer

    made: list[EmailRenderer] = []

    def make() -> EmailRenderer:
        made.append(EmailRenderer(templates_dir))
        return made[-1]

    write(templates_dir, "x.html.j2", "<p>Hi {{ lead.first_name }}</p>")
    deferred = DeferredRenderer(make)
    assert made == []  # nothing is set up before an email is rendered
    first = deferred.render("x.html.j2", "Hi {{ lead.first_name }}", context, links)
    second = deferred.render("x.html.j2", "Hi {{ lead.first_name }}", context, links)
    assert len(made) == 1 and deferred.renderer is made[0]
    assert first == second == made[0].render("x.html.j2", "Hi {{ lead.first_name }}", context, links)
