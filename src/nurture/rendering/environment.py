"""Render marketers' Jinja email templates, safely and fast.

Templates are written by marketers, not by developers, so they run in Jinja's sandbox (no ``__class__`` walks to the
interpreter, no mutation of the lead passed in) with ``StrictUndefined`` (a misspelt field fails loudly instead of
mailing "Hi ,"). HTML templates are autoescaped, text templates and subjects are not; ``trim_blocks`` and
``lstrip_blocks`` are on, so block tags on their own lines leave no blank lines behind. The worker renders thousands of
emails a second with one :class:`EmailRenderer`, so templates are compiled once and never re-checked on disk: restart
the process to pick up edits.

Every failure becomes a :class:`~nurture.errors.TemplateRenderError` whose message starts with ``file:line``.
"""

from __future__ import annotations

import os
import re
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    nodes,
    pass_context,
    select_autoescape,
)
from jinja2.runtime import Context
from markupsafe import escape

from nurture.errors import Problem, TemplateRenderError
from nurture.rendering.limits import BudgetedSandbox, RenderLimits, _Budget
from nurture.rendering.links import LinkBuilder
from nurture.rendering.text import html_to_text

SUBJECT_PATH = "<subject>"
_SUBJECT_CACHE_LIMIT = 2048
_DERIVED_CACHE_LIMIT = 512
_MARKER = re.compile("\ue000(\\d+)\ue001")


_Split = tuple[tuple[str, ...], tuple[int, ...]]


def _split_markers(text: str) -> _Split:
    """``text`` cut at its markers: the text around them (one more than the markers) and the markers' numbers."""
    parts = _MARKER.split(text)
    return tuple(parts[0::2]), tuple(int(number) for number in parts[1::2])


def _fill_markers(split: _Split, values: list[str]) -> str:
    """The text ``split`` was cut from, each marker replaced by its value: ``_MARKER.sub`` without a regex scan and a
    callback per marker (an IndexError for a marker without a value, as there)."""
    texts, numbers = split
    out = [texts[0]]
    for number, text in zip(numbers, texts[1:]):
        out.append(values[number])
        out.append(text)
    return "".join(out)


class _Placeholders:
    """The values a render printed with ``{{ }}``, replaced in the output by numbered private-use markers.

    Deriving the text part from HTML costs more than rendering it, yet every lead who takes the same branches gets the
    same HTML apart from those values (names, signed links). So the text is derived once from the HTML *with markers*
    (the skeleton) and the values are put back into the text. Values that could change the derived text beyond their
    own place (markup, edge whitespace, line breaks) make the render uncacheable and the text is derived directly.
    """

    __slots__ = ("cacheable", "count_output", "index", "values")

    def __init__(self, count_output: Callable[[int], None]) -> None:
        self.count_output = count_output  # the values count towards the output's size, as they are put back
        self.values: list[str] = []
        self.index: dict[str, int] = {}
        self.cacheable = True

    def marker(self, value: Any) -> Any:
        if type(value) is str:
            text = value
        else:
            if value is None:
                return ""
            if hasattr(value, "__html__"):
                self.cacheable = False
                return value
            text = str(value)  # StrictUndefined raises here exactly as it would when printed
        if (not text or text != text.strip() or "\n" in text or "  " in text or "\ue000" in text
                or text.startswith(("#", "javascript:"))):
            self.cacheable = False
            return value
        self.count_output(len(text))
        # One marker per distinct value, so "link text equals its URL" reads the same in the skeleton.
        number = self.index.get(text)
        if number is None:
            number = self.index[text] = len(self.values)
            self.values.append(text)
        return f"\ue000{number}\ue001"


_REWORKING_NODES = (nodes.FilterBlock, nodes.AssignBlock, nodes.CallBlock, nodes.Macro)
_INCLUDING_NODES = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)


def _reworks_output(loader_source: Callable[[str], str], parse: Callable[[str, str], nodes.Template], name: str,
                    seen: set[str]) -> bool:
    """Whether template ``name``, or one it extends, includes or imports, hands rendered output to other template
    code before it is written: a ``{% filter %}`` block, a captured ``{% set %}``, a macro or ``{% call %}`` block,
    ``super()``, ``caller()`` or ``self.<block>()``. That output holds :class:`_Placeholders`' markers, which a filter
    (``upper``, ``length``, ``replace``) would take for the text: such a template is rendered without them."""
    if name in seen:
        return False
    seen.add(name)
    try:
        tree = parse(loader_source(name), name)
    except Exception:  # noqa: BLE001 - whatever fails here fails the render too, and is reported there
        return True
    if next(tree.find_all(_REWORKING_NODES), None) is not None:
        return True
    for call in tree.find_all(nodes.Call):
        target = call.node
        if isinstance(target, nodes.Name) and target.name in ("super", "caller"):
            return True
        if isinstance(target, nodes.Getattr) and isinstance(target.node, nodes.Name) and target.node.name == "self":
            return True
    for node in tree.find_all(_INCLUDING_NODES):
        other = getattr(node, "template", None)  # each of them names the template it reads
        if not (isinstance(other, nodes.Const) and isinstance(other.value, str)):
            return True  # named only when it renders
        if _reworks_output(loader_source, parse, other.value, seen):
            return True
    return False


class _EmailBudget:
    """Enters the parts' budget, then the subject's (the same deadline); leaves them in the reverse order."""

    __slots__ = ("parts", "subject")

    def __init__(self, parts: _Budget, subject: _Budget) -> None:
        self.parts, self.subject = parts, subject

    def __enter__(self) -> None:
        self.parts.__enter__()
        try:
            self.subject.__enter__()
        except BaseException:
            self.parts.__exit__()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            self.subject.__exit__(*exc)
        finally:
            self.parts.__exit__(*exc)


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    """The three rendered parts of one email."""

    subject: str
    html: str
    text: str


class _RenderFailure(TemplateRenderError):
    """A render error located in a template: ``template`` is the name (None for a subject), ``line`` 0 when unknown."""

    def __init__(self, template: str | None, line: int, detail: str) -> None:
        self.template = template
        self.line = line
        self.detail = detail
        where = template if template is not None else "subject"
        super().__init__(f"{where}:{line}: {detail}" if line else f"{where}: {detail}")


@pass_context
def _track_filter(context: Context, url: str) -> str:
    return context["track"](url)


def _none_as_empty(value: Any) -> Any:
    return "" if value is None else value


def _sibling_text_name(name: str) -> str | None:
    for html_suffix, text_suffix in ((".html.j2", ".txt.j2"), (".html", ".txt")):
        if name.endswith(html_suffix):
            return name[: -len(html_suffix)] + text_suffix
    return None


def _clean_subject(subject: str) -> str:
    # str.split() breaks on CR, LF and every other Unicode line separator: a subject can never start a new header.
    collapsed = " ".join(subject.split())
    if collapsed.isprintable():  # no control character (Cc) is printable: nothing to take out
        return collapsed
    return "".join(ch for ch in collapsed if unicodedata.category(ch) != "Cc")


class EmailRenderer:
    """Renders the subject, HTML and text parts of emails from the templates in ``templates_dir``."""

    def __init__(self, templates_dir: Path, limits: RenderLimits | None = None) -> None:
        self.templates_dir = Path(templates_dir)
        self.limits = limits or RenderLimits()
        self._autoescape = select_autoescape(
            # every template but a text part is HTML: one named welcome.j2 must escape lead data too
            enabled_extensions=("html", "htm", "html.j2"), disabled_extensions=("txt", "txt.j2"), default=True
        )
        self.environment = BudgetedSandbox(
            self.limits,
            loader=FileSystemLoader(os.fspath(templates_dir)),
            undefined=StrictUndefined,
            autoescape=self._autoescape,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
            cache_size=-1,
            finalize=self._finalize,
        )
        self.environment.filters["track"] = _track_filter
        self._local = threading.local()
        self._derived: dict[str, _Split] = {}  # HTML skeleton -> derived text skeleton, split at its markers
        self._html_splits: dict[str, _Split] = {}  # HTML skeleton -> itself split at its markers
        self.subject_environment = BudgetedSandbox(
            self.limits, undefined=StrictUndefined, autoescape=False, finalize=_none_as_empty
        )
        self._subjects: dict[str, Template] = {}
        # Template name -> compiled text sibling, or None when the text part is derived from the HTML.
        self._text_templates: dict[str, Template | None] = {}
        self._reworking: dict[str, bool] = {}  # template name -> whether it is rendered without placeholders

    def render(self, template: str, subject: str, context: dict, links: LinkBuilder) -> RenderedEmail:
        """Render one email for ``context``; raise :class:`TemplateRenderError` naming ``file:line`` on any failure,
        going over the rendering budget (:class:`~nurture.rendering.limits.RenderLimits`) included."""
        namespace = self._namespace(context, links)
        with self._budget():
            html, skeleton = self._render_html_skeleton(template, namespace)
            return RenderedEmail(
                subject=self._render_subject(subject, context),
                html=html,
                text=self._render_text(template, namespace, html, skeleton),
            )

    def check(self, template: str, subject: str, context: dict, links: LinkBuilder) -> list[Problem]:
        """Render every part as :meth:`render` would and return what fails, paths as ``templates_dir / name``."""
        namespace = self._namespace(context, links)
        problems: list[Problem] = []
        html: str | None = None
        with self._budget():
            try:
                html = self._render_html(template, namespace)
            except _RenderFailure as failure:
                problems.append(self._problem(failure))
            try:
                self._render_text(template, namespace, html)
            except _RenderFailure as failure:
                problems.append(self._problem(failure))
            try:
                self._render_subject(subject, context)
            except _RenderFailure as failure:
                problems.append(self._problem(failure))
        return problems

    def _budget(self) -> _EmailBudget:
        """One email's time budget, shared by its subject and both parts."""
        budget = self.environment.budget()
        return _EmailBudget(budget, self.subject_environment.budget(budget.deadline))

    def _problem(self, failure: _RenderFailure) -> Problem:
        path = str(self.templates_dir / failure.template) if failure.template is not None else SUBJECT_PATH
        return Problem(path, failure.line, failure.detail)

    @staticmethod
    def _namespace(context: dict, links: LinkBuilder) -> dict[str, Any]:
        # The helpers come last so a context key can never shadow the real tracking or unsubscribe links.
        return {
            **context,
            "track": links.click,
            "unsubscribe_url": links.unsubscribe(),
            "open_pixel_url": links.open_pixel(),
        }

    def _finalize(self, value: Any) -> Any:
        # A known field without a value (None) prints as nothing, never as "None"; an unknown name still fails.
        placeholders: _Placeholders | None = getattr(self._local, "placeholders", None)
        if placeholders is None:
            return "" if value is None else value
        return placeholders.marker(value)

    def _render_html(self, name: str, namespace: dict[str, Any]) -> str:
        html, _skeleton = self._render_html_skeleton(name, namespace)
        return html

    def _render_html_skeleton(self, name: str, namespace: dict[str, Any]) -> tuple[str, tuple[str, list[str]] | None]:
        """The HTML, and (skeleton, values) when the derived text may be taken from the skeleton cache."""
        if self._text_template_or_none(name) is not None or self._reworks(name):
            return self._guarded(name, lambda: self.environment.render(self.environment.get_template(name), namespace)), None
        placeholders = self._local.placeholders = _Placeholders(self.environment.count_output)
        try:
            template = self._guarded(name, lambda: self.environment.get_template(name))
            skeleton = self._guarded(name, lambda: self.environment.render(template, namespace))
        finally:
            self._local.placeholders = None
        values = placeholders.values
        escaped = [str(escape(v)) for v in values] if self._autoescape(name) else values
        if not placeholders.cacheable:  # the skeleton holds this lead's own values: no other render will share it
            return _MARKER.sub(lambda m: escaped[int(m.group(1))], skeleton), None
        split = self._html_splits.get(skeleton)
        if split is None:
            if len(self._html_splits) >= _DERIVED_CACHE_LIMIT:
                self._html_splits.clear()
            split = self._html_splits[skeleton] = _split_markers(skeleton)
        return _fill_markers(split, escaped), (skeleton, values)

    def _reworks(self, name: str) -> bool:
        """:func:`_reworks_output` for this template, worked out once (templates are never reloaded)."""
        known = self._reworking.get(name)
        if known is None:
            environment = self.environment
            loader = environment.loader
            assert loader is not None

            def source(template_name: str) -> str:
                return loader.get_source(environment, template_name)[0]

            known = self._reworking[name] = _reworks_output(source, environment.parse, name, set())
        return known

    def _text_template_or_none(self, name: str) -> Template | None:
        try:
            return self._text_template(name)
        except Exception:  # noqa: BLE001 - any failure: reported by _render_text
            return None  # reported by _render_text with its location

    def _derive_text(self, html: str, skeleton: tuple[str, list[str]] | None) -> str:
        if skeleton is None:
            return html_to_text(html)
        source, values = skeleton
        derived = self._derived.get(source)
        if derived is None:
            if len(self._derived) >= _DERIVED_CACHE_LIMIT:
                self._derived.clear()
            derived = self._derived[source] = _split_markers(html_to_text(source))
        return _fill_markers(derived, values)

    def _render_text(
        self, name: str, namespace: dict[str, Any], html: str | None, skeleton: tuple[str, list[str]] | None = None
    ) -> str:
        text_template = self._guarded(name, lambda: self._text_template(name))
        if text_template is None:
            return self._derive_text(html, skeleton) if html is not None else ""
        return self._guarded(text_template.name or name, lambda: self.environment.render(text_template, namespace))

    def _text_template(self, name: str) -> Template | None:
        try:
            return self._text_templates[name]
        except KeyError:
            pass
        sibling = _sibling_text_name(name)
        text_template: Template | None = None
        if sibling is not None:
            try:
                text_template = self.environment.get_template(sibling)
            except TemplateNotFound as exc:
                if exc.name != sibling:
                    raise
        self._text_templates[name] = text_template
        return text_template

    def _render_subject(self, source: str, context: dict) -> str:
        def render() -> str:
            compiled = self._subjects.get(source)
            if compiled is None:
                if len(self._subjects) >= _SUBJECT_CACHE_LIMIT:
                    self._subjects.clear()  # subjects come from campaign files; this only bounds a pathological caller
                compiled = self._subjects[source] = self.subject_environment.from_string(source)
            return _clean_subject(self.subject_environment.render(compiled, context))

        return self._guarded(None, render)

    def _guarded(self, name: str | None, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except Exception as exc:
            template, line = self._locate(exc, name)
            raise _RenderFailure(template, line, _describe(exc)) from exc

    def _locate(self, exc: Exception, fallback: str | None) -> tuple[str | None, int]:
        """The template name and line where ``exc`` was raised: the innermost template frame Jinja put on the stack."""
        if isinstance(exc, TemplateSyntaxError):
            return (exc.name if exc.filename else fallback), exc.lineno or 0
        located: tuple[str | None, int] = (fallback, 0)
        tb: TracebackType | None = exc.__traceback__
        while tb is not None:
            # Jinja replaces template frames with fake ones whose globals carry the exception being raised.
            if tb.tb_frame.f_globals.get("__jinja_exception__") is exc:
                located = (self._template_name(tb.tb_frame.f_code.co_filename), tb.tb_lineno)
            tb = tb.tb_next
        return located

    def _template_name(self, filename: str) -> str | None:
        if filename.startswith("<"):
            return None  # a template compiled from a string: a subject
        try:
            return Path(filename).relative_to(self.templates_dir).as_posix()
        except ValueError:
            return filename


def _describe(exc: Exception) -> str:
    if isinstance(exc, TemplateNotFound):
        return f"template {exc.name!r} not found"
    if isinstance(exc, TemplateError):
        return exc.message or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


def sample_lead() -> dict[str, Any]:
    """A realistic lead for ``nurture check`` and ``nurture preview``: every standard field filled in."""
    return {
        "email": "dana.whitfield@northwind-logistics.com",
        "first_name": "Dana",
        "last_name": "Whitfield",
        "company": "Northwind Logistics",
        "title": "Head of Operations",
        "industry": "Logistics",
        "company_size": "201-500",
        "country": "US",
        "timezone": "America/Chicago",
        "tags": ["webinar-2024", "ebook-download", "pricing-page"],
        "fields": {"fleet_size": 140, "crm_source": "hubspot", "preferred_language": "en"},
    }
