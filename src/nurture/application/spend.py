"""Marketing spend in: ``nurture spend import FILE`` (CSV), and the spend a report sets against its leads.

The CSV has a header naming its columns, in any order: ``period``, ``source`` (or ``channel``), ``campaign``
(optional), ``amount`` and ``currency``; values as :mod:`nurture.definitions.spend` accepts them. A file with any bad
row writes nothing: every problem is reported as ``file:line: what is wrong``. Importing a period, source and campaign
again replaces its amount.

Where ``campaigns/spend.yaml`` and the imported spend both give the same period, source and campaign, the import wins:
``spend.yaml`` suits planned or fixed costs reviewed in git, the import the actual figures exported from the ad
platforms, which come later and replace them.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from nurture.definitions.spend import SpendEntry, parse_amount, parse_currency, parse_name, parse_period
from nurture.errors import DefinitionError, InvalidInput, Problem
from nurture.storage import spend as store
from nurture.storage.database import transaction

if TYPE_CHECKING:  # the engine type only annotates: the queries are storage's
    from sqlalchemy.engine import Connection, Engine

COLUMNS = ("period", "source", "campaign", "amount", "currency")
ALIASES = {"channel": "source"}
REQUIRED = ("period", "source", "amount", "currency")
T = TypeVar("T")
MAX_ROWS = 100_000
"""A spend file is a summary (a row per period and source), not a log: more rows than this is a mistake."""


@dataclass(frozen=True)
class SpendImport:
    """What an import wrote."""

    rows: int
    first_day: date | None
    last_day: date | None
    currencies: tuple[str, ...]


def read_spend_csv(path: Path) -> list[SpendEntry]:
    """The entries of a spend CSV; :class:`DefinitionError` listing every bad row (``file:line: ...``)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if not header:
        raise DefinitionError([Problem(str(path), 1, f"the first line must name the columns: {', '.join(COLUMNS)}")])
    names = [ALIASES.get(h.strip().lower(), h.strip().lower()) for h in header]
    problems = [Problem(str(path), 1, f"unknown column {h!r} (known: {', '.join(COLUMNS)}, channel)")
                for h, n in zip(header, names, strict=True) if n not in COLUMNS and n]
    problems += [Problem(str(path), 1, f"column {n!r} appears twice") for n in set(names) if n and names.count(n) > 1]
    problems += [Problem(str(path), 1, f"the header has no {n} column") for n in REQUIRED if n not in names]
    if problems:
        raise DefinitionError(problems)
    entries: list[SpendEntry] = []
    seen: dict[tuple[date, date, str, str], int] = {}
    for line, cells in enumerate(reader, start=2):
        if not any(cell.strip() for cell in cells):
            continue
        if len(entries) + len(problems) >= MAX_ROWS:
            problems.append(Problem(str(path), line, f"more than {MAX_ROWS:,} rows: split the file"))
            break
        row = dict(zip(names, cells, strict=False))
        try:
            entry = _entry(row, len(cells), len(names))
        except ValueError as exc:
            problems.append(Problem(str(path), line, str(exc)))
            continue
        if entry.key in seen:
            problems.append(Problem(str(path), line, f"the same period, source and campaign as line {seen[entry.key]}"))
            continue
        seen[entry.key] = line
        entries.append(entry)
    if problems:
        raise DefinitionError(problems)
    return entries


def _entry(row: dict[str, str], cells: int, width: int) -> SpendEntry:
    """One row as an entry; ValueError naming every problem of the row."""
    if cells != width:
        raise ValueError(f"{cells} cells where the header has {width}")
    problems: list[str] = []

    def parsed(parse: Callable[[str], T], name: str) -> T | None:
        try:
            return parse(row.get(name, "") or "")
        except ValueError as exc:
            problems.append(str(exc))
            return None

    period = parsed(parse_period, "period")
    source = parsed(lambda v: parse_name(v, "source", required=True), "source")
    campaign = parsed(lambda v: parse_name(v, "campaign", required=False), "campaign")
    amount = parsed(parse_amount, "amount")
    currency = parsed(parse_currency, "currency")
    if problems or period is None or source is None or campaign is None or amount is None or currency is None:
        raise ValueError("; ".join(problems))
    return SpendEntry(period[0], period[1], source, campaign, amount, currency, origin="import")


def import_spend(engine: Engine, path: Path, now: datetime) -> SpendImport:
    """Read the CSV and store every row in one transaction, or nothing when any row is bad."""
    entries = read_spend_csv(path)
    with transaction(engine) as conn:
        store.replace_spend(conn, [
            dict(period_start=e.start, period_end=e.end, source=e.source, campaign=e.campaign,
                 amount_cents=e.amount_cents, currency=e.currency) for e in entries
        ], now)
    return SpendImport(len(entries), min((e.start for e in entries), default=None),
                       max((e.end for e in entries), default=None), tuple(sorted({e.currency for e in entries})))


def spend_entries(conn: Connection, yaml_entries: list[SpendEntry], first_day: date, last_day: date
                  ) -> list[SpendEntry]:
    """The spend overlapping the days ``first_day`` to ``last_day`` (read in the caller's transaction): the imported
    rows, and the ``spend.yaml`` entries no imported row replaces (same period, source and campaign)."""
    rows = store.spend_rows(conn, first_day=first_day, last_day=last_day)
    imported = [SpendEntry(r.period_start, r.period_end, r.source, r.campaign, int(r.amount_cents), r.currency,
                           origin="import") for r in rows]
    keys = {e.key for e in imported}
    planned = [e for e in yaml_entries if e.key not in keys and e.end >= first_day and e.start <= last_day]
    return planned + imported
