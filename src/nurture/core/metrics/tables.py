"""What every section prints: tables of rows, and the definitions printed beside the numbers.

A table has dimension columns (an optional period, such as a month or week, and the item a row is about, such as a
source or a campaign's step) and metric columns. The CSV output is long ("tidy"): one line per table row and metric,
``section,table,period,item,metric,value``, so a spreadsheet pivots it on any of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

KINDS = ("text", "count", "rate", "money", "hours", "number", "points", "p_value")

CSV_HEADER = ("section", "table", "period", "item", "metric", "value")

SOURCE_ARTICLE = "'MQL vs SQL: Decoding the Key Differences for Brands', Crucial Metrics for Success"
"""Where the metric definitions come from (the background articles of the project)."""


@dataclass(frozen=True)
class Column:
    """A column: its JSON/CSV key, its heading, and what kind of value it holds (how it is printed)."""

    key: str
    label: str
    kind: str = "count"


@dataclass(frozen=True)
class Table:
    """Rows of one breakdown. ``period`` names the column holding the period (or None); ``items`` the columns that
    together name what a row is about; the other columns are metrics."""

    key: str
    title: str
    columns: Sequence[Column]
    rows: list[dict[str, Any]]
    period: str | None = None
    items: Sequence[str] = ()
    note: str = ""
    json_path: str = ""  # where the rows are in the section's JSON, dotted (default: the key)

    @property
    def path(self) -> str:
        """The rows' place in the section's JSON."""
        return self.json_path or self.key

    def long_rows(self, section: str) -> Iterator[tuple[Any, ...]]:
        """The table as CSV lines: (section, table, period, item, metric, value)."""
        dimensions = {self.period, *self.items}
        for row in self.rows:
            period = row.get(self.period, "") if self.period else ""
            item = " / ".join(str(row.get(key) if row.get(key) is not None else "") for key in self.items)
            for column in self.columns:
                if column.key in dimensions:
                    continue
                value = row.get(column.key)
                yield section, self.key, period, item, column.key, "" if value is None else value


@dataclass(frozen=True)
class Definition:
    """How a figure is computed, and where the definition comes from."""

    term: str
    meaning: str
    source: str = ""

    def to_json(self) -> dict[str, str]:
        """For the report's JSON."""
        return {"term": self.term, "meaning": self.meaning, "source": self.source}


class Section(Protocol):
    """One part of the report: the funnel, money, velocity and trends, the sales side, steps, A/B tests, holdouts."""

    key: str
    title: str

    def to_json(self) -> Any: ...  # an object, or a list of objects (one per A/B step or campaign)

    def tables(self) -> list[Table]: ...

    def definitions(self) -> list[Definition]: ...


@dataclass
class Headline:
    """A figure shown large (dashboard tiles, the first lines of the table output); ``key`` is its place in the
    section's JSON, dotted (``total.spend``)."""

    key: str
    label: str
    value: Any
    kind: str = "count"
    note: str = ""


@dataclass
class Summary:
    """Headline figures of a section, in order."""

    items: list[Headline] = field(default_factory=list)

    def add(self, key: str, label: str, value: Any, kind: str = "count", note: str = "") -> None:
        """Append a figure."""
        self.items.append(Headline(key, label, value, kind, note))


def rate(part: float, whole: float) -> float | None:
    """``part / whole`` to four decimals (0.4 is 40 %), None when ``whole`` is 0."""
    return round(part / whole, 4) if whole else None


def cost(amount: float | None, count: int) -> float | None:
    """Spend per unit, to the cent; None without spend or without units."""
    return round(amount / count, 2) if amount is not None and count else None


def format_value(value: Any, kind: str) -> str:
    """A value as the table output and the dashboard show it: rates as percentages, differences of rates in signed
    percentage points, money to the cent with thousands separators, hours to a tenth, p-values to three decimals;
    '-' for no value."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if kind == "rate":
        return f"{value * 100:.1f}%"
    if kind == "money":
        return f"{value:,.2f}"
    if kind == "hours":
        return f"{value:,.1f} h"
    if kind == "points":  # a difference of two rates
        return f"{value * 100:+.1f} pts"
    if kind == "p_value":
        return "< 0.001" if value < 0.001 else f"{value:.3f}"
    if kind == "count" and isinstance(value, int):
        return f"{value:,}"
    return str(value)
