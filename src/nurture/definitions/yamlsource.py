"""YAML loading that remembers where every key was written, so problems are reported as ``path:line: message``.

PyYAML's composer gives each node its position; we build plain Python values from the node tree ourselves and keep a map
from the path of each value (``("steps", 1, "wait")``) to the 1-based line of its key.
"""

from __future__ import annotations

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


def _build(node: yaml.Node, loc: Loc, doc: YamlDocument, loader: yaml.SafeLoader) -> Any:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<: *anchor)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                doc.problems.append(Problem(doc.path, key_node.start_mark.line + 1, f"unsupported key {key!r}"))
                continue
            key_loc = (*loc, key) if isinstance(key, (str, int)) else (*loc, str(key))
            if key in result:
                doc.problems.append(
                    Problem(doc.path, key_node.start_mark.line + 1, f"duplicate key '{key}' (written twice in the same mapping)")
                )
            doc.lines[key_loc] = key_node.start_mark.line + 1
            result[key] = _build(value_node, key_loc, doc, loader)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item_node in enumerate(node.value):
            item_loc = (*loc, index)
            doc.lines[item_loc] = item_node.start_mark.line + 1
            items.append(_build(item_node, item_loc, doc, loader))
        return items
    return loader.construct_object(node, deep=True)


def load_yaml(path: str | Path, *, display_path: str | None = None) -> YamlDocument:
    """Read one YAML file; syntax errors become problems with the line PyYAML reports (never an exception)."""
    shown = display_path or str(path)
    doc = YamlDocument(path=shown, data=None)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        doc.problems.append(Problem(shown, 0, f"cannot read file: {exc}"))
        return doc
    return parse_yaml(text, shown)


def parse_yaml(text: str, display_path: str) -> YamlDocument:
    """Parse YAML text (see :func:`load_yaml`)."""
    doc = YamlDocument(path=display_path, data=None)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            doc.lines[()] = node.start_mark.line + 1
            doc.data = _build(node, (), doc, loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        doc.problems.append(Problem(display_path, line, f"YAML syntax error: {exc.problem or exc}"))
    except yaml.YAMLError as exc:
        doc.problems.append(Problem(display_path, 0, f"YAML error: {exc}"))
    finally:
        loader.dispose()
    return doc
