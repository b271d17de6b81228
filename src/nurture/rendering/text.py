"""Derive the plain-text part of an email from its rendered HTML.

Used when a template has no ``.txt.j2`` sibling. The goal is a readable text part, not a faithful layout: blocks
become lines, lists become ``- `` items, links keep their URL in brackets, and everything invisible to a reader of
the HTML (head, styles, scripts, ``display:none`` preheaders, images such as the open pixel) is left out.
"""

from __future__ import annotations

import html as html_lib
import re

_SKIPPED = frozenset({"head", "title", "style", "script", "template", "noscript"})
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}
)
_PARAGRAPHS = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "blockquote", "table", "hr", "pre"})
_LINES = frozenset(
    {"div", "tr", "section", "article", "header", "footer", "main", "nav", "aside", "center", "dl", "dt", "dd",
     "address", "figure", "figcaption", "tbody", "thead", "tfoot", "form"}
)
_CELLS = frozenset({"td", "th"})

# Break markers; text data never contains them because its whitespace is collapsed to spaces first. Runs of
# markers merge into one break, a blank line if any of them asked for a paragraph.
_LINE = "\n"
_PARAGRAPH = "\v"
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


# A tokenizer rather than html.parser: this runs once per derived email on the dispatcher's hot path, and the regex
# scan is several times faster than HTMLParser for the same result on email HTML.
_TOKEN = re.compile(
    r"<!--.*?(?:-->|$)|<![^>]*>|<\?[^>]*>"
    r"|<(/?)([a-zA-Z][a-zA-Z0-9:-]*)((?:[^>\"']|\"[^\"]*\"|'[^']*')*)>",
    re.DOTALL,
)
_ATTRIBUTE = re.compile(r"""([^\s=/>"']+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+)))?""")


def _attributes(text: str) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    for name, double, single, bare in _ATTRIBUTE.findall(text):
        value = double or single or bare
        has_value = bool(value) or "=" in text
        found.append((name.lower(), html_lib.unescape(value) if has_value else None))
    return found


class _TextExtractor:
    def __init__(self) -> None:
        self.pieces: list[str] = []
        self._skipping: list[str] = []
        self._links: list[tuple[str | None, int]] = []
        self._bullet_pending = False
        self._open_items = 0
        self._open_items_outside: list[int] = []  # per open list, to recover from omitted </li> tags

    def _skip_start(self, tag: str, attrs: list[tuple[str, str | None]]) -> bool:
        if self._skipping:
            if tag == self._skipping[-1] and tag not in _VOID:
                self._skipping.append(tag)
            return True
        style = dict(attrs).get("style") or ""
        hidden = _HIDDEN_STYLE.search(style) is not None or any(name == "hidden" for name, _ in attrs)
        if (tag in _SKIPPED or hidden) and tag not in _VOID:
            self._skipping.append(tag)
            return True
        return tag in _VOID and hidden

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self._skipping.clear()  # an unclosed <head> must not swallow the body
        if self._skip_start(tag, attrs):
            return
        if tag in ("ul", "ol"):
            self._open_items_outside.append(self._open_items)
        if tag == "li":
            self.pieces.append(_LINE)
            self._bullet_pending = True
            self._open_items += 1
        elif self._bullet_pending and (tag in _PARAGRAPHS or tag in _LINES or tag == "br"):
            pass  # the item's first block starts on the bullet's line
        elif tag == "br":
            self.pieces.append(_LINE)
        elif tag in _PARAGRAPHS:
            self.pieces.append(self._paragraph_break())
        elif tag in _LINES:
            self.pieces.append(_LINE)
        elif tag in _CELLS:
            self.pieces.append(" ")
        elif tag == "a":
            self._write_bullet()  # before the link starts, so it is not part of the link's label
            self._links.append((dict(attrs).get("href"), len(self.pieces)))

    def _paragraph_break(self) -> str:
        # Inside a list item a paragraph only starts a new line: a blank line would split the list.
        return _LINE if self._open_items else _PARAGRAPH

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._skipping:
            if tag == self._skipping[-1]:
                self._skipping.pop()
            return
        if tag == "li":
            self.pieces.append(_LINE)
            self._bullet_pending = False
            self._open_items = max(0, self._open_items - 1)
        elif tag in _PARAGRAPHS:
            if tag in ("ul", "ol") and self._open_items_outside:
                self._open_items = self._open_items_outside.pop()
                self._bullet_pending = False
            self.pieces.append(self._paragraph_break())
        elif tag in _LINES:
            self.pieces.append(_LINE)
        elif tag in _CELLS:
            self.pieces.append(" ")
        elif tag == "a" and self._links:
            href, start = self._links.pop()
            self._close_link(href, start)

    def _close_link(self, href: str | None, start: int) -> None:
        href = (href or "").strip()
        if not href or href.startswith("#") or href.lower().startswith("javascript:"):
            return
        label = _WHITESPACE.sub(" ", "".join(self.pieces[start:])).strip()
        shown = href[len("mailto:"):] if href.lower().startswith("mailto:") else href
        if not label:
            self._write(shown)
        elif label not in (href, shown):
            self.pieces.append(f" ({shown})")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self._write(_WHITESPACE.sub(" ", data))

    def _write(self, text: str) -> None:
        if text.strip():
            self._write_bullet()
        self.pieces.append(text)

    def _write_bullet(self) -> None:
        if self._bullet_pending:
            self._bullet_pending = False
            self.pieces.append("- ")


def _assemble(pieces: list[str]) -> str:
    lines: list[str] = []
    blank_pending = False
    for chunk in re.split(r"([\n\v]+)", "".join(pieces)):
        if chunk[:1] in (_LINE, _PARAGRAPH):
            blank_pending = blank_pending or _PARAGRAPH in chunk
            continue
        line = re.sub(r" {2,}", " ", chunk).strip()
        if not line:
            continue
        if lines and blank_pending:
            lines.append("")
        lines.append(line)
        blank_pending = False
    return "\n".join(lines)


def _feed(extractor: _TextExtractor, html: str) -> None:
    position = 0
    for match in _TOKEN.finditer(html):
        if match.start() > position:
            extractor.handle_data(html_lib.unescape(html[position : match.start()]))
        position = match.end()
        tag = match.group(2)
        if tag is None:
            continue  # a comment, doctype or processing instruction
        tag = tag.lower()
        if match.group(1):
            extractor.handle_endtag(tag)
            continue
        raw = match.group(3)
        self_closing = raw.rstrip().endswith("/")
        needs_attributes = raw.strip() and (tag == "a" or "style" in raw or "hidden" in raw)
        attrs = _attributes(raw.rstrip().rstrip("/")) if needs_attributes else []
        if self_closing:
            extractor.handle_startendtag(tag, attrs)
        else:
            extractor.handle_starttag(tag, attrs)
    if position < len(html):
        extractor.handle_data(html_lib.unescape(html[position:]))


def html_to_text(html: str) -> str:
    """Return a readable plain-text rendering of ``html``."""
    extractor = _TextExtractor()
    _feed(extractor, html)
    return _assemble(extractor.pieces)
