"""The whole report: its window and its sections, in order; every output (table, JSON, CSV, dashboard) walks the
list."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from nurture.core.metrics.periods import Window
from nurture.core.metrics.tables import CSV_HEADER, Section


@dataclass
class Report:
    """Everything ``nurture report`` prints."""

    window: Window
    sections: list[Section] = field(default_factory=list)

    def section(self, key: str) -> Any:
        """The section with this JSON key; KeyError when there is none."""
        for section in self.sections:
            if section.key == key:
                return section
        raise KeyError(key)

    def to_json(self) -> dict[str, Any]:
        """``{"period": ..., "<section>": ..., ..., "definitions": {"<section>": [...]}}``."""
        data: dict[str, Any] = {"period": self.window.to_json()}
        for section in self.sections:
            data[section.key] = section.to_json()
        data["definitions"] = {s.key: [d.to_json() for d in s.definitions()] for s in self.sections}
        return data

    def long_rows(self) -> Iterator[tuple[Any, ...]]:
        """Every table of every section as CSV lines (section, table, period, item, metric, value)."""
        for section in self.sections:
            for table in section.tables():
                yield from table.long_rows(section.key)

    def to_csv(self) -> str:
        """The long ("tidy") CSV: a header, then one line per table row and metric."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for row in self.long_rows():
            writer.writerow(["true" if v is True else "false" if v is False else v for v in row])
        return out.getvalue()
