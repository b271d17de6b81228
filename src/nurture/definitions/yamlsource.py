"""YAML loading that remembers where every key was written, so problems are reported as ``path:line: message``.

PyYAML's composer gives each node its position; we build plain Python values from the node tree ourselves and keep a map
from the path of each value (``("steps", 1, "wait")``) to the 1-based line of its key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nurture.errors import Problem

Loc = tuple[str | int, ...]


@dataclass
class YamlDocument:
    """A parsed YAML file: its data, where each path was written, and problems found while reading."""

    path: str
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    text: str | None = field(default=None, repr=False)  # what was parsed (stored as a definition version)

    def line_of(self, loc: Loc) -> int:
        """The line of the deepest known ancestor of ``loc`` (the key that holds the bad value), 1 if none."""
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), 1)

    def problem(self, loc: Loc, message: str) -> Problem:
        """A problem at the line of ``loc``."""
        return Problem(self.path, self.line_of(loc), message)


def content_hash(text: str) -> str:
    """The short hash that names a version of a definition file: its text's SHA-256, 16 hex digits."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


MAX_BYTES = 1024 * 1024
"""The largest definition file read (a campaign is a few kilobytes)."""
MAX_VALUES = 100_000
"""The most values (mappings, lists, scalars) a file may hold once its aliases are expanded."""
MAX_DEPTH = 64
"""The deepest nesting of mappings and lists, aliases expanded."""
MAX_ALIASES = 1_000
"""The most aliases (``*name``) a file may use."""

_MERGE_TAG = "tag:yaml.org,2002:merge"


class LimitExceeded(yaml.YAMLError):
    """A file is past one of the limits above: reported at ``mark`` without reading further."""

    def __init__(self, mark: Any, message: str) -> None:
        super().__init__(message)
        self.line = mark.line + 1 if mark is not None else 0
        self.message = message


class UnreadableValue(LimitExceeded):
    """A scalar YAML parses but cannot make into a value (``!!int abc``, a 5,000-digit number, month 13 of a
    ``!!timestamp``): reported at the value's line, the file is not read further."""


def _construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    """The value of a scalar node; UnreadableValue where PyYAML's constructor fails with a Python error."""
    try:
        return loader.construct_object(node, deep=True)
    except (ValueError, ArithmeticError, LookupError, TypeError) as exc:
        text = str(node.value) if isinstance(node, yaml.ScalarNode) else ""
        shown = repr(text if len(text) <= 40 else text[:40] + "...") + (f" ({len(text):,} characters)"
                                                                          if len(text) > 40 else "")
        kind = node.tag.rsplit(":", 1)[-1]
        reason = str(exc).split(";")[0] or type(exc).__name__
        raise UnreadableValue(node.start_mark, f"the value {shown} cannot be read as {kind}: {reason}") from exc


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that measures each node while composing it: how many values it holds and how deep it
    goes, aliases expanded. A file past a limit stops at the alias or node that passes it, before anything is built,
    so an alias bomb (a few lines that expand to billions of values) costs what its text costs."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._values = 0  # values composed so far, each alias counted as the values it stands for
        self._aliases = 0
        self._depth = 0
        self._reach = 0  # the deepest level the node being composed reaches
        self._measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values, height)

    def _count(self, values: int, mark: Any) -> None:
        self._values += values
        if self._values > MAX_VALUES:
            raise LimitExceeded(mark, f"the file holds more than {MAX_VALUES:,} values once its aliases are "
                                      "expanded: refusing to read it")

    def _reach_to(self, depth: int, mark: Any) -> None:
        if depth > MAX_DEPTH:
            raise LimitExceeded(mark, f"mappings and lists are nested more than {MAX_DEPTH} levels deep "
                                      "(aliases expanded): refusing to read it")
        self._reach = max(self._reach, depth)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:  # an undefined alias is PyYAML's own error
                measured = self._measured.get(id(target))
                if measured is None:
                    raise LimitExceeded(event.start_mark, f"alias '*{event.anchor}' refers to a node that contains it")
                self._aliases += 1
                if self._aliases > MAX_ALIASES:
                    raise LimitExceeded(event.start_mark, f"the file uses more than {MAX_ALIASES:,} aliases")
                self._count(measured[0], event.start_mark)
                self._reach_to(self._depth + measured[1], event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        outer_reach, self._reach = self._reach, 0
        self._reach_to(self._depth, event.start_mark)
        before = self._values
        self._count(1, event.start_mark)
        node = super().compose_node(parent, index)
        self._measured[id(node)] = (self._values - before, self._reach - self._depth + 1)
        self._reach = max(outer_reach, self._reach)
        self._depth -= 1
        return node


def _merged_pairs(node: yaml.MappingNode) -> list[tuple[yaml.Node, yaml.Node]]:
    """A mapping's key/value nodes with YAML merge keys (``<<: *defaults``) resolved: its own keys win, then the
    earlier merged mappings. Keys merged from several places are kept once, so merging never multiplies a file."""
    own: list[tuple[yaml.Node, yaml.Node]] = []
    sources: list[yaml.Node] = []
    for key_node, value_node in node.value:
        if key_node.tag != _MERGE_TAG:
            own.append((key_node, value_node))
        elif isinstance(value_node, yaml.SequenceNode):
            sources.extend(value_node.value)
        else:
            sources.append(value_node)
    if not sources:
        return own
    seen = {(k.tag, k.value) for k, _v in own if isinstance(k, yaml.ScalarNode)}
    merged: list[tuple[yaml.Node, yaml.Node]] = []
    for source in sources:
        if not isinstance(source, yaml.MappingNode):
            raise yaml.constructor.ConstructorError(
                None, None, "a merge key (<<) takes a mapping or a list of mappings", source.start_mark)
        for key_node, value_node in _merged_pairs(source):
            identity = (key_node.tag, key_node.value) if isinstance(key_node, yaml.ScalarNode) else None
            if identity is None or identity not in seen:
                merged.append((key_node, value_node))
            if identity is not None:
                seen.add(identity)
    return merged + own


def _build(node: yaml.Node, loc: Loc, doc: YamlDocument, loader: yaml.SafeLoader) -> Any:
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in _merged_pairs(node):
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                doc.problems.append(Problem(doc.path, line, "unsupported key: a key must be text or a number"))
                continue
            key = _construct(loader, key_node)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                doc.problems.append(Problem(doc.path, line, f"unsupported key {key!r}"))
                continue
            key_loc = (*loc, key) if isinstance(key, (str, int)) else (*loc, str(key))
            if key in result:
                doc.problems.append(Problem(doc.path, line, f"duplicate key '{key}' (written twice in the same mapping)"))
            doc.lines[key_loc] = line
            result[key] = _build(value_node, key_loc, doc, loader)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item_node in enumerate(node.value):
            item_loc = (*loc, index)
            doc.lines[item_loc] = item_node.start_mark.line + 1
            items.append(_build(item_node, item_loc, doc, loader))
        return items
    return _construct(loader, node)


def read_text(path: str | Path, *, display_path: str | None = None) -> tuple[str | None, Problem | None]:
    """A definition file's text, or the problem that stops it being read (at most ``MAX_BYTES`` are read, whatever
    the file is: a device, a pipe, a file still growing)."""
    shown = display_path or str(path)
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            return None, Problem(shown, 1, _too_large())
        return raw.decode("utf-8"), None
    except (OSError, UnicodeDecodeError) as exc:
        return None, Problem(shown, 0, f"cannot read file: {exc}")


def load_yaml(path: str | Path, *, display_path: str | None = None) -> YamlDocument:
    """Read one YAML file; syntax errors and files past the limits become problems at their line (never an exception)."""
    shown = display_path or str(path)
    text, problem = read_text(path, display_path=shown)
    if text is None:
        return YamlDocument(path=shown, data=None, problems=[problem] if problem else [])
    return parse_yaml(text, shown)


def _too_large() -> str:
    return f"the file is larger than {MAX_BYTES:,} bytes, the most a definition file may be: refusing to read it"


def parse_yaml(text: str, display_path: str) -> YamlDocument:
    """Parse YAML text (see :func:`load_yaml`)."""
    doc = YamlDocument(path=display_path, data=None, text=text)
    if len(text) > MAX_BYTES and len(text.encode("utf-8")) > MAX_BYTES:
        doc.problems.append(Problem(display_path, 1, _too_large()))
        return doc
    fast = _parsed_by_libyaml(text, display_path)
    if fast is not None:
        return fast
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            doc.lines[()] = node.start_mark.line + 1
            doc.data = _build(node, (), doc, loader)
    except LimitExceeded as exc:
        doc.data = None
        doc.problems.append(Problem(display_path, exc.line, exc.message))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        doc.problems.append(Problem(display_path, line, f"YAML syntax error: {exc.problem or exc}"))
    except yaml.YAMLError as exc:
        doc.problems.append(Problem(display_path, 0, f"YAML error: {exc}"))
    finally:
        loader.dispose()
    return doc


_CSafeLoader: Any = getattr(yaml, "CSafeLoader", None)
"""PyYAML's loader on libyaml (None when PyYAML was built without it)."""
_LIBYAML_MAX_BRACKETS = 4096
"""libyaml nests flow collections without a bound (the Python loader stops at :data:`MAX_DEPTH`): a file with more
brackets than this is left to the Python loader, so that thousands of nested ``[`` cost what they cost there."""


def _parsed_by_libyaml(text: str, display_path: str) -> YamlDocument | None:
    """:func:`parse_yaml`'s document, composed by libyaml (about ten times faster than PyYAML's Python parser), when the
    file has nothing to report; None otherwise (libyaml missing, a syntax error, a limit passed, an unreadable value, a
    duplicate key...), and the Python parser reads the file again, with its own messages and lines.

    libyaml composes aliases as shared nodes, so composing costs what the text costs; the limits are then measured on
    that graph as the Python loader measures them while composing (aliases expanded), before anything is built."""
    if _CSafeLoader is None or text.count("[") + text.count("{") > _LIBYAML_MAX_BRACKETS:
        return None
    loader = _CSafeLoader(text)
    try:
        node = loader.get_single_node()
        doc = YamlDocument(path=display_path, data=None, text=text)
        if node is not None:
            if not _within_limits(node):
                return None
            doc.lines[()] = node.start_mark.line + 1
            doc.data = _build(node, (), doc, loader)
    except Exception:  # noqa: BLE001  (whatever libyaml says, the Python parser says it as the messages expect)
        return None
    finally:
        loader.dispose()
    return doc if not doc.problems else None


def _within_limits(root: yaml.Node) -> bool:
    """Whether a composed node graph stays within :data:`MAX_VALUES`, :data:`MAX_DEPTH` and :data:`MAX_ALIASES`, its
    aliases (nodes reached more than once) expanded; False as soon as one is passed, or on a node that contains
    itself."""
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values, height)
    open_nodes: set[int] = set()
    references = 0

    def measure(node: yaml.Node, depth: int) -> tuple[int, int] | None:
        nonlocal references
        references += 1
        key = id(node)
        found = measured.get(key)
        if found is not None:
            return found if depth + found[1] - 1 <= MAX_DEPTH else None
        if key in open_nodes or depth > MAX_DEPTH:
            return None
        values, height = 1, 1
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            open_nodes.add(key)
            children = [part for pair in node.value for part in pair] if isinstance(node, yaml.MappingNode) \
                else node.value
            for child in children:
                inner = measure(child, depth + 1)
                if inner is None:
                    return None
                values += inner[0]
                height = max(height, inner[1] + 1)
                if values > MAX_VALUES:
                    return None
            open_nodes.discard(key)
        measured[key] = (values, height)
        return values, height

    total = measure(root, 1)
    return total is not None and references - len(measured) <= MAX_ALIASES
