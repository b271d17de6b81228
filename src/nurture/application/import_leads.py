"""Bulk import of leads from CSV: validate every row, upsert the good ones in large batches, report the rest.

Speed comes from doing per batch a handful of statements (:mod:`nurture.storage.lead_rows`: one SELECT of the
existing leads, locked, one executemany upsert, one insert of stage changes) instead of ORM objects per row. A blank
cell never erases what a lead already has. Batches commit one by one, so a long import does not hold SQLite's write
lock for minutes; re-importing the same file is harmless.

A stage from the file is judged by :func:`nurture.core.lifecycle.outside_stage_refusal`: it starts a new lead there
and moves an existing one only forward, never out of (or into) recycled and disqualified. A stage not applied is
counted by reason in :attr:`ImportReport.stage_not_applied`, and the rest of the row is imported.

**The last row of an email counts.** A first, quick pass over the file notes the last line of each email (as cleaned:
``Ada@Example.com`` and ``ada@example.com`` are one email); earlier rows with that email are skipped and reported
(:attr:`ImportReport.repeated`), even when the last row is rejected for a bad value: fix it and import again.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nurture.application.enroll import enroll_imported
from nurture.application.enroll_sweep import considered_every_lead
from nurture.application.rescore import rescore_by_email
from nurture.clock import Clock
from nurture.core.lead_fields import (
    FIELD_ALIASES,
    FIELD_CLEANERS,
    LEAD_FIELDS,
    clean_email,
    clean_text,
    normalize_email,
)
from nurture.core.lifecycle import StageNotApplied, outside_stage_refusal
from nurture.core.scoring import NewLeadScores
from nurture.definitions.loader import Catalog
from nurture.definitions.scoring import ScoringRules
from nurture.errors import InvalidInput
from nurture.storage import lead_rows
from nurture.storage.batch_rollups import counted_at_once
from nurture.storage.database import transaction
from nurture.storage.entry_reads import forget_audiences

if TYPE_CHECKING:  # the connection types only annotate: the queries are storage's
    from sqlalchemy.engine import Connection, Engine

_KEEP_UNLESS_GIVEN = tuple(name for name in LEAD_FIELDS if name not in ("email", "stage", "tags"))
"""The columns a blank cell leaves as the lead has them."""
_BLANK_ROW: dict[str, Any] = dict.fromkeys(("email", *_KEEP_UNLESS_GIVEN, "stage", "tags"))


@dataclass
class ImportReport:
    """The outcome of an import. ``inserted + updated + len(rejected) + skipped`` is the number of data rows."""

    inserted: int = 0
    updated: int = 0  # rows for an email already in the database
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (file line number, problem)
    mql_lead_ids: list[int] = field(default_factory=list)  # leads that entered the mql stage by this import
    repeated: dict[int, list[int]] = field(default_factory=dict)
    """The line of an email's last row -> the earlier lines with that email, skipped."""
    stage_not_applied: dict[str, list[int]] = field(default_factory=dict)
    """Why a row's stage was not applied (:attr:`nurture.core.lifecycle.StageNotApplied.message`) -> its lines."""
    enrolled: int = 0  # enrollments started (with a catalog)

    @property
    def imported(self) -> int:
        """Rows written (inserted or updated)."""
        return self.inserted + self.updated

    @property
    def skipped(self) -> int:
        """Rows skipped because a later row has the same email."""
        return sum(len(lines) for lines in self.repeated.values())

    def note_stage_not_applied(self, refusal: StageNotApplied, line: int) -> None:
        """Count a stage value of line ``line`` that was not applied."""
        self.stage_not_applied.setdefault(refusal.message, []).append(line)


class _Lines:
    """The file's lines, decoded, counting bytes read (for progress) and remembering lines that are not UTF-8."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self.bytes_read = 0
        self.number = 0
        self.bad_lines: list[int] = []

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        raw = next(self._handle)
        self.bytes_read += len(raw)
        self.number += 1
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.bad_lines.append(self.number)
            text = raw.decode("utf-8", errors="replace")
        return text.lstrip("\ufeff") if self.number == 1 else text


class _Rows:
    """The data rows of an opened CSV file after its header: ``(line, cells)``, or ``(line, problem)`` for a row that
    cannot be read; blank rows are left out. Line numbers are the file's, a quoted cell's line breaks counted."""

    def __init__(self, handle: Any) -> None:
        self.lines = _Lines(handle)
        self._reader = csv.reader(self.lines)
        self.header = next(self._reader, None)

    def __iter__(self) -> Iterator[tuple[int, list[str] | str]]:
        reader, lines = self._reader, self.lines
        previous_end = reader.line_num
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield previous_end + 1, f"malformed CSV: {exc}"
                previous_end = reader.line_num
                continue
            line, previous_end = previous_end + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if lines.bad_lines and lines.bad_lines[-1] >= line:
                yield line, "not UTF-8 text (save the file as UTF-8)"
                continue
            yield line, cells


def import_leads_csv(
    engine: Engine,
    path: str | Path,
    *,
    clock: Clock,
    on_progress: Callable[[int, int], None] | None = None,
    batch_size: int = 5000,
    rules: ScoringRules | None = None,
    catalog: Catalog | None = None,
) -> ImportReport:
    """Import the leads of a CSV file (UTF-8, header on line 1); ``on_progress(bytes_done, bytes_total)`` is called
    after every batch. Bad rows are reported with their line number in the file; the others are imported. With
    scoring ``rules``, each imported lead's stored score is brought up to date in the same transaction (its fields
    give fit points; campaign conditions and entry filters read the stored score). With a ``catalog``, each batch's
    leads are enrolled in the campaigns they may enter, in the batch's transaction (without one, the worker's next
    enrollment sweep considers every lead); when the import began on a database without leads, that is every lead
    for every campaign, and it is recorded so (:func:`~nurture.application.enroll_sweep.considered_every_lead`).
    Each batch is dated by ``clock``
    when it is written. The planner's statistics of the tables it fills are refreshed as they grow and at the end
    (PostgreSQL: :func:`nurture.storage.lead_rows.refresh_statistics`).

    Known columns: email, first_name, last_name, company, title, industry, company_size, country, timezone,
    stage, tags (``;``-separated), owner, source, medium, source_campaign (or ``utm_source``, ``utm_medium``,
    ``utm_campaign``); any other column becomes a custom field. Of the rows with one email, the last counts and the
    earlier ones are skipped (:attr:`ImportReport.repeated`). A stage applies to a new lead (unless recycled or
    disqualified) and to an existing one only when it moves it forward; the others are counted in
    :attr:`ImportReport.stage_not_applied`. Raises :class:`InvalidInput` when the file cannot be read or has no email
    column.
    """
    path = Path(path)
    try:
        handle = path.open("rb")
        total = path.stat().st_size
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from exc
    report = ImportReport()
    scores = NewLeadScores(rules) if rules is not None else None  # a new lead's score is its fit
    statistics = _Statistics(engine)
    first: tuple[datetime, int] | None = None  # when the first batch was written, and the highest lead id before it
    with handle:
        rows = _Rows(handle)
        columns = _Columns.from_header(path, rows.header)
        last_lines = _last_lines(path, columns.email_index)
        batch: dict[str, dict[str, Any]] = {}  # email -> the row's values
        for line, cells in rows:
            if isinstance(cells, str):
                report.rejected.append((line, cells))
                continue
            try:
                row = _clean_row(cells, columns)
            except InvalidInput as exc:
                report.rejected.append((line, str(exc)))
                continue
            email = row["email"]
            last = last_lines.get(email, line)
            if last != line:
                report.repeated.setdefault(last, []).append(line)
                continue
            row["line"] = line
            batch[email] = row
            if len(batch) >= batch_size:
                first = _first_batch(first, _write_batch(engine, batch, path.name, report, clock(), rules, catalog, scores))
                batch = {}
                statistics.after_batch(report.imported)
                if on_progress:
                    on_progress(rows.lines.bytes_read, total)
        if batch:
            first = _first_batch(first, _write_batch(engine, batch, path.name, report, clock(), rules, catalog, scores))
    statistics.at_end(report.imported)
    if catalog is not None and first is not None and first[1] == 0:
        # the import began on a database without leads and considered every lead it wrote for every campaign:
        # the next sweep need not consider them all again
        considered_every_lead(engine, catalog, first[0], report.inserted)
    if catalog is None and report.imported:
        with transaction(engine) as connection:  # not enrolled here: the worker's next sweep considers every lead
            forget_audiences(connection)
    if on_progress:
        on_progress(total, total)
    return report


def _last_lines(path: Path, email_index: int) -> dict[str, int]:
    """The line of the last row of each email that repeats in the file. Emails are compared in their stored form
    (:func:`normalize_email`: what :func:`clean_email` makes of a valid one); rows that cannot be read are not
    counted, nor rows without an email."""
    last: dict[str, int] = {}
    repeated: set[str] = set()
    with path.open("rb") as handle:
        for line, cells in _Rows(handle):
            if isinstance(cells, str) or email_index >= len(cells):
                continue
            email = normalize_email(cells[email_index])
            if not email:
                continue
            if email in last:
                repeated.add(email)
            last[email] = line
    return {email: last[email] for email in repeated}


@dataclass(frozen=True)
class _Columns:
    cleaners: list[tuple[int, str, Callable[[str], Any] | None]]  # (index, name, cleaner; None: a custom field)
    width: int  # cells in the header
    email_index: int  # the email column's

    @classmethod
    def from_header(cls, path: Path, header: list[str] | None) -> _Columns:
        """The columns of the header, or InvalidInput when it is missing, repeats a name or lacks email."""
        if not header:
            raise InvalidInput(f"{path} is empty: the first line must name the columns (email, first_name, ...)")
        columns: list[tuple[int, str, Callable[[str], Any] | None]] = []
        seen: set[str] = set()
        for index, title in enumerate(header):
            name = title.strip()
            key = name.lower().replace(" ", "_").replace("-", "_")
            key = FIELD_ALIASES.get(key, key)
            if not name:
                continue
            cleaner = _clean_row_email if key == "email" else FIELD_CLEANERS.get(key)
            if cleaner is not None and key in _FEW_VALUES:
                cleaner = _Remembered(cleaner)
            name = key if cleaner else name
            if name in seen:
                raise InvalidInput(f"{path}: column {title!r} appears twice in the header")
            seen.add(name)
            columns.append((index, name, cleaner))
        if "email" not in seen:
            raise InvalidInput(f"{path}: the header has no email column (found: {', '.join(header)})")
        return cls(columns, len(header), next(index for index, name, _ in columns if name == "email"))


_FEW_VALUES = ("company_size", "country", "timezone", "stage", "tags")
"""Columns whose cells repeat a few values across a file: their cleaner's answers are remembered by cell."""


class _Remembered:
    """A column's cleaner that remembers its answer for each cell text (a bad cell is judged again each time: its
    InvalidInput is not kept); a list answer (tags) is copied for each row."""

    SIZE = 4096

    def __init__(self, cleaner: Callable[[str], Any]) -> None:
        self.cleaner = cleaner
        self.known: dict[str, Any] = {}

    def __call__(self, cell: str) -> Any:
        try:
            value = self.known[cell]
        except KeyError:
            value = self.cleaner(cell)
            if len(self.known) >= self.SIZE:
                self.known.clear()
            self.known[cell] = value
        return list(value) if type(value) is list else value


def _clean_row(cells: list[str], columns: _Columns) -> dict[str, Any]:
    """The row's values, validated, with None for blank or absent columns and ``custom`` for its custom fields;
    or InvalidInput naming every problem of the row."""
    values = dict(_BLANK_ROW)
    custom: dict[str, str] = {}
    problems: list[str] = []
    count = len(cells)
    for index, name, cleaner in columns.cleaners:
        cell = cells[index] if index < count else ""
        if cleaner is None:  # a custom field
            if cell and not cell.isspace():
                custom[name] = cell.strip()
            continue
        if cleaner is clean_text:  # inlined: most columns are free text
            values[name] = cell.strip() or None
            continue
        try:
            values[name] = cleaner(cell)
        except InvalidInput as exc:
            problems.append(str(exc))
    if count > columns.width and any(cell.strip() for cell in cells[columns.width :]):
        problems.append(f"{count} values but the header has {columns.width} columns")
    if problems:
        raise InvalidInput("; ".join(problems))
    values["custom"] = custom
    return values


def _clean_row_email(cell: str) -> str:
    if not cell.strip():
        raise InvalidInput("email is empty")
    return clean_email(cell)


class _Statistics:
    """When to refresh the planner's statistics during an import: each time the leads it wrote doubled (from
    :data:`FIRST_REFRESH` on), so the plans of its later batches (and of everything after it) see the rows as they
    are, for a few refreshes in all; and once at the end."""

    FIRST_REFRESH = 20_000

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.next_at = self.FIRST_REFRESH
        self.refreshed_at = 0

    def after_batch(self, written: int) -> None:
        if written >= self.next_at:
            self._refresh(written)
            self.next_at = 2 * written

    def at_end(self, written: int) -> None:
        if written > self.refreshed_at:
            self._refresh(written)

    def _refresh(self, written: int) -> None:
        with transaction(self.engine) as connection:
            lead_rows.refresh_statistics(connection)
        self.refreshed_at = written


def _first_batch(first: tuple[datetime, int] | None, written: tuple[datetime, int]) -> tuple[datetime, int]:
    return first if first is not None else written


def _write_batch(engine: Engine, batch: dict[str, dict[str, Any]], source: str, report: ImportReport, now: datetime,
                 rules: ScoringRules | None = None, catalog: Catalog | None = None,
                 scores: NewLeadScores | None = None) -> tuple[datetime, int]:
    """Upsert one batch of distinct emails and record the stage changes it makes, in one transaction; return ``now``
    and the highest lead id before the batch (0: there was no lead).

    The rows become the statement's parameters in place: blank stage and tags fall back to the lead's own, and so
    does a stage the lifecycle's rule does not apply (counted in ``report``).
    """
    with transaction(engine) as connection, counted_at_once(connection):  # the batch's rollups: once, at its end
        existing = lead_rows.existing(connection, list(batch), lock=True)  # no stage changes under the rule's feet
        for email, row in batch.items():
            old = existing.get(email)
            custom, line = row.pop("custom"), row.pop("line")
            old_stage = old["stage"] if old is not None else None
            refusal = outside_stage_refusal(old_stage, row["stage"])
            if refusal is not None:
                report.note_stage_not_applied(refusal, line)
                row["stage"] = None
            if old is None:
                report.inserted += 1
                row["stage"] = row["stage"] or "lead"
                tags, fields = row["tags"], custom
                # a new lead has no events: its score is its fit (existing leads keep theirs here, rescored below)
                row["score"] = 0.0 if scores is None else scores(row["email"], row, tags or (), fields)
                tags_text = _tags_text(tags) if tags else "[]"  # the file's tags: text, as cleaned
            else:
                report.updated += 1
                row["stage"] = row["stage"] or old_stage
                tags, fields = row["tags"] or old["tags"], {**old["fields"], **custom}
                row["score"] = 0.0  # not written over an existing lead's score
                tags_text = json.dumps(tags) if tags else "[]"
            row["tags"] = tags_text
            row["fields"] = json.dumps(fields) if fields else "{}"
        params = list(batch.values())
        before = lead_rows.highest_id(connection)
        lead_rows.upsert(connection, params, now, keep_unless_given=_KEEP_UNLESS_GIVEN)
        _record_stage_changes(connection, params, existing, source, now, report)
        if rules is not None and existing:
            rescore_by_email(connection, rules, sorted(existing), now)
        if catalog is not None:
            report.enrolled += enroll_imported(connection, catalog, [old["id"] for old in existing.values()],
                                               (before, lead_rows.highest_id(connection)), now)
    return now, before


@lru_cache(maxsize=4096)
def _tags_text_of(tags: tuple[str, ...]) -> str:
    return json.dumps(list(tags))


def _tags_text(tags: list[str]) -> str:
    """The JSON text (:func:`json.dumps`) of tags read from the file (text, so equal tuples are equal tags),
    remembered: an import's leads share a few sets of tags."""
    return _tags_text_of(tuple(tags))


def _record_stage_changes(
    connection: Connection,
    params: list[dict[str, Any]],
    existing: dict[str, dict[str, Any]],
    source: str,
    now: datetime,
    report: ImportReport,
) -> None:
    """Stage history for leads whose stage this batch changed (new leads: when they start past "lead")."""
    moves: list[tuple[str, str | None, str]] = []
    for row in params:
        old = existing.get(row["email"])
        old_stage = old["stage"] if old else None
        if row["stage"] != (old_stage or "lead"):
            moves.append((row["email"], old_stage, row["stage"]))
    if not moves:
        return
    ids = {email: old["id"] for email, old in existing.items()}
    new_emails = [email for email, old_stage, _ in moves if old_stage is None]
    if new_emails:
        ids |= {row.email: row.id for row in lead_rows.ids(connection, new_emails)}
    reason = f"imported from {source}"
    lead_rows.insert_stage_changes(connection, [
        {"lead_id": ids[email], "from_stage": old_stage, "to_stage": stage, "at": now, "reason": reason,
         "actor": "import"}
        for email, old_stage, stage in moves
    ])
    report.mql_lead_ids.extend(ids[email] for email, _, stage in moves if stage == "mql")

