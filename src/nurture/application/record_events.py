"""Recording engagement: one transaction writes a batch of events and everything they cause.

For every event of a batch, in order: the event is written once (idempotent on its client ``id``), an unknown email
becomes a new lead, scoring gives the event its points, the lead's score is recomputed and may promote it,
suppression events (unsubscribe, bounce, spam complaint) end every enrollment, goal events end the campaigns that
list them, and enrollments waiting for that event type become due. All of it commits together or not at all;
nothing external happens inside the transaction. New leads and leads that may now match a campaign are enrolled in
the same transaction, at its end.

How a batch is written (a handful of statements per request, whatever its size): the client ids already recorded
are looked up at once; the batch's leads are read (and locked) at once, the unknown ones created with one insert;
the scored history of the known ones is read at once. Events are then worked through in order in memory: their rows
and the enrollment updates they cause are queued and written together (one insert for the rows, then the updates
in order) at the end, or earlier whenever something reads the database through :attr:`_Batch.conn` (a promotion
building its brief, a stage change, a tracking-burst check), so every read sees the batch as it stands. Enrollment
updates are only issued for leads that had an active enrollment when the batch began (no other lead can have one
before the batch enrolls at its end), and leads are enrolled only when some campaign's stage and lead-field
filters could let them in.

Scores: each lead's score keeps running sums per event type (:class:`nurture.core.scoring.ScoreAccumulator`), so
rescoring after an event adds one event. The history before the batch comes from the lead's score state (those sums
and recent days' cap counts as the last batch left them, :mod:`nurture.storage.score_state`), whatever the length of
the history; without a state that can be used, the database sums the history per type (decay included) and counts
the caps' days, and the batch writes the state back. Either way the result is :func:`nurture.core.scoring.score`
over the lead's whole history, up to the order of float additions and, when the database summed it on SQLite, event
ages taken to the millisecond (``julianday``).

Concurrency: the batch's leads are locked in email order at the start (``FOR UPDATE`` on PostgreSQL; SQLite's
``BEGIN IMMEDIATE`` already serializes writers), so two batches touching one lead compute its score one after the
other. A deadlock or serialization failure reported by PostgreSQL retries the whole batch; so does a client id that
a concurrent batch recorded between our look-up and our insert (the retry finds it recorded: a duplicate).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from operator import itemgetter
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Float, and_, bindparam, case, cast, column, exists, func, literal_column, select, update
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import DBAPIError

from nurture.core.conditions import filter_matches
from nurture.core.facts import BOUNCE, COMPLAINT, UNSUBSCRIBE, Engagement, History, LeadView
from nurture.core.scoring import (
    ScoreAccumulator,
    decayed,
    half_life_seconds,
    event_points,
    fit_items,
    stage_after_scoring,
    utc_day,
)
from nurture.definitions.campaign import EntryFilter
from nurture.definitions.loader import Catalog
from nurture.definitions.sales import SalesRules
from nurture.definitions.scoring import ScoringRules
from nurture.handoff import Handoff
from nurture.application import promote
from nurture.storage import score_state
from nurture.storage.database import session, transaction
from nurture.storage.dialect import upsert_insert
from nurture.application.enroll import enroll_in_transaction
from nurture.core.enrollment import recycle_pending
from nurture.storage.enrollments import exit_enrollments, wake_all
from nurture.storage.events import (
    DUPLICATE,
    MAX_BATCH,
    MAX_ID_LENGTH,
    RECORDED,
    EventIn,
    EventResult,
    InvalidEvents,
    clean_event,
    clean_events,
    clean_properties,
)
from nurture.application.lead_input import clean_lead_data, upsert_lead
from nurture.storage.models import STAGE_ACTORS
from nurture.storage.rows import lead_view
from nurture.storage.scores import rescore_all, score_breakdown, scored_points
from nurture.storage.tables import E, EV, L, SC

__all__ = [
    "DUPLICATE", "MAX_BATCH", "MAX_ID_LENGTH", "RECORDED", "EventIn", "EventResult", "InvalidEvents", "SavedLead",
    "clean_event", "clean_events", "clean_properties", "record_events", "rescore_all", "save_lead", "score_breakdown",
]

log = logging.getLogger(__name__)


SUPPRESSION_REASONS = {UNSUBSCRIBE: "unsubscribed", BOUNCE: "bounced", COMPLAINT: "spam_complaint"}
"""Event types that stop all email to the lead, and the end reason their enrollments get."""

_RETRIES = 3
_RETRYABLE_SQLSTATES = {"40P01", "40001"}  # deadlock detected, serialization failure (PostgreSQL)
_CHUNK = 900  # ids per IN (...) list: SQLite allows 999 parameters per statement in old builds


def _as_engagement(event: EventIn) -> Engagement:
    assert event.occurred_at is not None
    return Engagement(event.type, event.occurred_at, event.campaign_id, event.step_key, dict(event.properties))


class _AlreadyRecorded(Exception):
    """Client ids the database already holds although the batch took them for new: it starts over, with these ids
    looked up (duplicates). ``ids`` is None when the database only said how many rows it refused."""

    def __init__(self, ids: set[str] | None) -> None:
        super().__init__(f"{len(ids) if ids is not None else 'some'} event id(s) recorded already")
        self.ids = ids


@dataclass(frozen=True)
class _Statements:
    """The statements a batch runs, built once per dialect: building one costs more than running it."""

    insert_events: Any
    insert_events_ids: Any
    insert_leads: Any
    lock_leads: Any
    lock_lead: Any
    known_ids: Any
    insert_stage_change: Any
    insert_stage_change_id: Any
    update_lead: Any


_LEAD_STATE_COLUMNS = ("score", "stage", "stage_changed_at", "unsubscribed_at", "bounced_at", "updated_at",
                       "score_state")
_NURTURED = "nurtured"  # the label of "has an active enrollment" next to each locked lead row


def _nurtured() -> Any:
    """Whether the lead has an active enrollment, as a column. ``'active'`` is written into the SQL: bound as a
    parameter it could decide whether the partial index on active enrollments applies, so SQLite would prepare
    the statement again at every execution (measured: 45 µs of a 60 µs look-up)."""
    return exists().where(and_(E.c.lead_id == L.c.id, E.c.status == literal_column("'active'"))).label(_NURTURED)


@lru_cache(maxsize=4)
def _statements(dialect: str) -> _Statements:
    # SQLite runs one writer at a time, so the shortcut is exact there. On PostgreSQL a request that waited for another
    # one's row lock re-reads the lead but not this EXISTS (READ COMMITTED): an enrollment the other request just
    # created would be missed and its exits and wake-ups skipped. There every known lead counts as nurtured (the
    # column is left out; its absence means "maybe"): asking in a statement of its own once the locks are held would
    # see what such a request committed, but not an enrollment that a writer which does not lock the lead (the
    # enrollment sweep) commits while the batch runs, which the batch's own UPDATEs do see until it commits.
    columns = (L, _nurtured()) if dialect == "sqlite" else (L,)
    return _Statements(
        insert_events=EV.insert(),
        insert_events_ids=upsert_insert(EV, dialect).on_conflict_do_nothing(index_elements=["external_id"])
        .returning(EV.c.external_id),
        insert_leads=upsert_insert(L, dialect).on_conflict_do_nothing(index_elements=["email"])
        .returning(L.c.id, L.c.email),
        insert_stage_change=SC.insert(),
        insert_stage_change_id=SC.insert().returning(SC.c.id),
        lock_leads=select(*columns).where(L.c.email.in_(bindparam("emails", expanding=True))).order_by(L.c.email)
        .with_for_update(of=L),
        lock_lead=select(*columns).where(L.c.email == bindparam("email")).with_for_update(of=L),
        known_ids=select(EV.c.external_id, EV.c.lead_id, EV.c.points).where(
            EV.c.external_id.in_(bindparam("ids", expanding=True))),
        update_lead=update(L).where(L.c.id == bindparam("b_id")).values(
            {name: bindparam(f"b_{name}") for name in _LEAD_STATE_COLUMNS}
        ),
    )


_EVENT_COLUMNS = ("lead_id", "type", "occurred_at", "recorded_at", "external_id", "campaign_id", "step_key",
                  "delivery_id", "properties", "points")
_STAGE_CHANGE_COLUMNS = ("lead_id", "from_stage", "to_stage", "at", "reason", "actor")
_NEW_LEAD_COLUMNS = ("email", "tags", "fields", "stage", "score", "created_at", "updated_at", "stage_changed_at")


class _Bulk:
    """The batch's bulk reads and writes, through SQLAlchemy Core (any database)."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.sql = _statements(dialect)

    def lock_leads(self, conn: Connection, emails: Sequence[str]) -> dict[str, Any]:
        """The rows of the leads with these emails (locked until the transaction ends), each with ``nurtured``."""
        if len(emails) == 1:
            row = conn.execute(self.sql.lock_lead, {"email": emails[0]}).first()
            return {row.email: row} if row is not None else {}
        found: dict[str, Any] = {}
        for start in range(0, len(emails), _CHUNK):
            rows = conn.execute(self.sql.lock_leads, {"emails": list(emails[start : start + _CHUNK])})
            found.update({row.email: row for row in rows})
        return found

    def scored_points(self, conn: Connection, lead_ids: Sequence[int]) -> list[tuple[int, str, datetime, float]]:
        """:func:`nurture.storage.scores.scored_points`."""
        return scored_points(conn, lead_ids)

    def scored_groups(self, conn: Connection, lead_ids: Sequence[int], now: datetime,
                      half_life_seconds: float | None) -> list[tuple[int, str, float, float, int, datetime]]:
        """Each lead's scored events summed per type: (lead id, type, points decayed to ``now``, raw points, count,
        latest time), what :meth:`nurture.core.scoring.ScoreAccumulator.add_group` folds in. The database does the
        sums (the rows stay there): a lead's long history costs SQLite's or PostgreSQL's time, not Python's."""
        if self.dialect != "postgresql":  # the reference: the rows, summed here as ScoreAccumulator.add sums them
            sums: dict[tuple[int, str], list[Any]] = {}
            for lead_id, event_type, at, points in scored_points(conn, lead_ids):
                group = sums.setdefault((lead_id, event_type), [0.0, 0.0, 0, at])
                group[0] += decayed(points, (now - at).total_seconds(), half_life_seconds)
                group[1] += points
                group[2] += 1
                group[3] = max(group[3], at)
            return [(lead_id, event_type, *group) for (lead_id, event_type), group in sums.items()]
        age = func.greatest(0.0, cast(func.extract("epoch", bindparam("now", type_=EV.c.occurred_at.type)
                                                       - EV.c.occurred_at), Float))
        halvings = age / bindparam("half_life", type_=Float)
        # PostgreSQL raises on a float underflow where Python gives 0.0: 0.5 ** 1000 is ~1e-301, as good as nothing
        decayed_points = (case((halvings > 1000, 0.0), else_=EV.c.points * func.power(0.5, halvings))
                          if half_life_seconds else EV.c.points)
        query = (select(EV.c.lead_id, EV.c.type, func.sum(decayed_points), func.sum(EV.c.points), func.count(),
                        func.max(EV.c.occurred_at))
                 .where(EV.c.lead_id.in_(bindparam("lead_ids", expanding=True)), EV.c.points != 0)
                 .group_by(EV.c.lead_id, EV.c.type))
        found = []
        for start in range(0, len(lead_ids), _CHUNK):
            rows = conn.execute(query, {"lead_ids": list(lead_ids[start : start + _CHUNK]), "now": now,
                                        "half_life": half_life_seconds})
            found.extend((lead_id, kind, float(points), float(raw), int(count), latest)
                         for lead_id, kind, points, raw, count, latest in rows)
        return found

    def scored_counts(self, conn: Connection, lead_ids: Sequence[int], types: Sequence[str] | None,
                      days: Sequence[date]) -> list[tuple[int, str, date, int]]:
        """How many events of these types (None: of every type) scored on these UTC days, per lead: (lead id, type,
        day, count), what daily caps count from."""
        wanted_types, wanted_days = set(types) if types is not None else None, set(days)
        if self.dialect != "postgresql":  # the reference: counted here from the rows
            counts: Counter[tuple[int, str, date]] = Counter()
            for lead_id, event_type, at, _points in scored_points(conn, lead_ids):
                day = utc_day(at)
                if (wanted_types is None or event_type in wanted_types) and day in wanted_days:
                    counts[(lead_id, event_type, day)] += 1
            return [(*key, count) for key, count in counts.items()]
        day = func.to_char(func.timezone("UTC", EV.c.occurred_at), "YYYY-MM-DD")
        query = (select(EV.c.lead_id, EV.c.type, day, func.count())
                 .where(EV.c.lead_id.in_(bindparam("lead_ids", expanding=True)), EV.c.points != 0,
                        EV.c.occurred_at >= bindparam("since", type_=EV.c.occurred_at.type),
                        EV.c.occurred_at < bindparam("until", type_=EV.c.occurred_at.type))
                 .group_by(EV.c.lead_id, EV.c.type, day))
        parameters: dict[str, Any] = {}
        if wanted_types is not None:
            query = query.where(EV.c.type.in_(bindparam("types", expanding=True)))
            parameters["types"] = sorted(wanted_types)
        since, until = _day_bounds(wanted_days)
        found = []
        for start in range(0, len(lead_ids), _CHUNK):
            rows = conn.execute(query, {**parameters, "lead_ids": list(lead_ids[start : start + _CHUNK]),
                                        "since": since, "until": until})
            for lead_id, kind, text_day, count in rows:
                if (day_value := date.fromisoformat(text_day)) in wanted_days:
                    found.append((lead_id, kind, day_value, int(count)))
        return found

    def insert_events(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Insert event rows (in order); :class:`_AlreadyRecorded` if the database holds some of their ids."""
        ids = {row["external_id"] for row in rows if row["external_id"] is not None}
        if not ids:
            conn.execute(self.sql.insert_events, rows)
        elif len(rows) == 1:
            if conn.execute(self.sql.insert_events_ids, rows[0]).first() is None:
                raise _AlreadyRecorded(ids)
        else:
            refused = ids.difference(conn.execute(self.sql.insert_events_ids, rows).scalars())
            if refused:
                raise _AlreadyRecorded(refused)

    def insert_leads(self, conn: Connection, rows: list[dict[str, Any]]) -> dict[str, int]:
        """Insert leads unless their email exists; the ids of those inserted, by email."""
        return {row.email: row.id for row in conn.execute(self.sql.insert_leads, rows)}

    def insert_stage_changes(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        conn.execute(self.sql.insert_stage_change, rows)

    def update_leads(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Write back each lead's ``_LEAD_STATE_COLUMNS`` (keys ``b_<column>``, and ``b_id``)."""
        conn.execute(self.sql.update_lead, rows)


class _SqliteBulk(_Bulk):
    """The same writes on SQLite, with the values made ready here and handed to the driver as they are.

    SQLAlchemy converts each value of each row on its way to the driver (timestamps to text, JSON to text), and
    back, which costs more than SQLite's work itself; here the conversions are the ones SQLAlchemy's types make (the
    same text ends up stored and the same values are read, which ``tests/test_intake_batches.py`` checks), done once
    per row in plain Python. The reads take their list of emails or ids as one JSON array (``json_each``), so
    SQLite prepares each statement once, whatever the batch's size. These statements go to the sqlite3 connection
    itself (:func:`_driver`): SQLAlchemy's ``before_cursor_execute`` listeners do not see them.
    """

    def __init__(self, dialect: Dialect) -> None:
        super().__init__(dialect.name)
        self.events = _driver_sql(upsert_insert(EV, dialect).on_conflict_do_nothing(index_elements=["external_id"]),
                                  dialect, _EVENT_COLUMNS)
        self.stage_changes = _driver_sql(SC.insert(), dialect, _STAGE_CHANGE_COLUMNS)
        self.update = _driver_sql(self.sql.update_lead, dialect, [f"b_{name}" for name in _LEAD_STATE_COLUMNS]
                                  + ["b_id"])
        nurtured = _nurtured()
        emails = select(column("value")).select_from(func.json_each(bindparam("emails"))).scalar_subquery()
        compiled = select(L, nurtured).where(L.c.email.in_(emails)).order_by(L.c.email).compile(dialect=dialect)
        self.leads_by_email = (compiled.string, tuple(compiled.positiontup or ()), dict(compiled.params))
        compiled = select(L, nurtured).where(L.c.email == bindparam("email")).compile(dialect=dialect)
        self.lead_by_email = (compiled.string, tuple(compiled.positiontup or ()), dict(compiled.params))
        self.lead_columns = tuple(column.key for column in L.c) + (_NURTURED,)
        ids = select(column("value")).select_from(func.json_each(bindparam("ids"))).scalar_subquery()
        compiled = (select(EV.c.lead_id, EV.c.type, EV.c.occurred_at, EV.c.points)
                    .where(EV.c.lead_id.in_(ids), EV.c.points != 0)
                    .order_by(EV.c.lead_id, EV.c.occurred_at, EV.c.id).compile(dialect=dialect))
        self.points_by_lead = (compiled.string, tuple(compiled.positiontup or ()), dict(compiled.params))
        # Sums per lead and type, in SQLite (pow: its math functions, or the one storage.database registers)
        groups = ("SELECT lead_id, type, SUM(points{weight}), SUM(points), COUNT(*), MAX(occurred_at) "
                  "FROM engagement_event WHERE lead_id IN (SELECT value FROM json_each(?)) AND points != 0 "
                  "GROUP BY lead_id, type")
        self._groups_raw = groups.format(weight="")
        self._groups_decayed = ("SELECT lead_id, type, SUM(points * pow(0.5, max(0.0, (julianday(?1) - "
                                "julianday(occurred_at)) * 86400.0) / ?2)), SUM(points), COUNT(*), MAX(occurred_at) "
                                "FROM engagement_event WHERE lead_id IN (SELECT value FROM json_each(?3)) "
                                "AND points != 0 GROUP BY lead_id, type")
        counts = ("SELECT lead_id, type, substr(occurred_at, 1, 10), COUNT(*) FROM engagement_event "
                  "WHERE lead_id IN (SELECT value FROM json_each(?)) AND points != 0{types} "
                  "AND occurred_at >= ? AND occurred_at < ? GROUP BY lead_id, type, substr(occurred_at, 1, 10)")
        self._counts = counts.format(types=" AND type IN (SELECT value FROM json_each(?))")
        self._counts_all_types = counts.format(types="")
        sql, values = _driver_sql(
            upsert_insert(L, dialect).on_conflict_do_nothing(index_elements=["email"]).returning(L.c.id, L.c.email),
            dialect, _NEW_LEAD_COLUMNS)
        start = sql.index(" VALUES (") + len(" VALUES ")
        end = sql.index(")", start) + 1
        self.leads = (sql[:start], sql[start:end], sql[end:], values)  # the head, one row's "(?, ...)", the rest

    def lock_leads(self, conn: Connection, emails: Sequence[str]) -> dict[str, Any]:
        if len(emails) == 1:  # one lead (a single-event request): a plain look-up by email
            queries = [(self.lead_by_email, {"email": emails[0]})]
        else:
            queries = [(self.leads_by_email, {"emails": json.dumps(list(emails[start : start + 10_000]))})
                       for start in range(0, len(emails), 10_000)]
        found: dict[str, Any] = {}
        for (sql, order, params), values in queries:
            bound = {**params, **values}
            for row_values in _driver(conn, sql, tuple(bound[name] for name in order)):
                row = self._row(row_values)
                found[row.email] = row
        return found

    def _row(self, values: Sequence[Any]) -> SimpleNamespace:
        """A lead's row as SQLite returned it, with its values as SQLAlchemy's types read them."""
        row = SimpleNamespace(**dict(zip(self.lead_columns, values)))
        row.tags, row.fields, row.score_state = _json(row.tags), _json(row.fields), _json(row.score_state)
        row.unsubscribed_at, row.bounced_at = _time(row.unsubscribed_at), _time(row.bounced_at)
        row.created_at, row.updated_at = _time(row.created_at), _time(row.updated_at)
        row.stage_changed_at, row.nurtured = _time(row.stage_changed_at), bool(row.nurtured)
        return row

    def scored_points(self, conn: Connection, lead_ids: Sequence[int]) -> list[tuple[int, str, datetime, float]]:
        sql, order, params = self.points_by_lead
        found: list[tuple[int, str, datetime, float]] = []
        for start in range(0, len(lead_ids), 10_000):
            bound = {**params, "ids": json.dumps(list(lead_ids[start : start + 10_000]))}
            rows = _driver(conn, sql, tuple(bound[name] for name in order))
            found.extend((lead_id, event_type, _time(at), float(points)) for lead_id, event_type, at, points in rows)
        return found

    def scored_groups(self, conn: Connection, lead_ids: Sequence[int], now: datetime,
                      half_life_seconds: float | None) -> list[tuple[int, str, float, float, int, datetime]]:
        # julianday() keeps milliseconds: an age off by less than one, against half-lives of hours or days
        sql = self._groups_decayed if half_life_seconds else self._groups_raw
        found = []
        for start in range(0, len(lead_ids), 10_000):
            params = (_sqlite_time(now), half_life_seconds, json.dumps(list(lead_ids[start : start + 10_000])))
            found.extend((lead_id, kind, points, raw, count, _time(latest))
                         for lead_id, kind, points, raw, count, latest in _driver(
                             conn, sql, params if half_life_seconds else params[2:]))
        return found

    def scored_counts(self, conn: Connection, lead_ids: Sequence[int], types: Sequence[str] | None,
                      days: Sequence[date]) -> list[tuple[int, str, date, int]]:
        wanted_days = set(days)
        since, until = _day_bounds(wanted_days)
        sql = self._counts if types is not None else self._counts_all_types
        found = []
        for start in range(0, len(lead_ids), 10_000):
            params = (json.dumps(list(lead_ids[start : start + 10_000])),
                      *((json.dumps(sorted(set(types))),) if types is not None else ()),
                      _sqlite_time(since), _sqlite_time(until))
            for lead_id, kind, text_day, count in _driver(conn, sql, params):
                if (day := _day(text_day)) in wanted_days:
                    found.append((lead_id, kind, day, count))
        return found

    def insert_events(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        sql, values = self.events
        text = _TimeText()
        params = [
            values({**row, "occurred_at": text(row["occurred_at"]), "recorded_at": text(row["recorded_at"]),
                    "properties": json.dumps(row["properties"])})
            for row in rows
        ]
        if len(params) == 1:
            written = _driver(conn, sql, params[0]).rowcount
        else:
            written = _driver(conn, sql, params, many=True).rowcount  # sqlite3 sums executemany's row counts
        if written != len(rows):
            if len(rows) == 1:
                raise _AlreadyRecorded({rows[0]["external_id"]})
            raise _AlreadyRecorded(None)

    def insert_leads(self, conn: Connection, rows: list[dict[str, Any]]) -> dict[str, int]:
        # one INSERT ... VALUES (...), (...) ... RETURNING: the driver's executemany cannot return the new ids
        head, group, tail, values = self.leads
        text = _TimeText()
        inserted: dict[str, int] = {}
        for start in range(0, len(rows), 500):
            chunk = rows[start : start + 500]
            params: list[Any] = []
            for row in chunk:
                params += values({**row, "tags": json.dumps(row["tags"]), "fields": json.dumps(row["fields"]),
                                  "created_at": text(row["created_at"]),
                                  "updated_at": text(row["updated_at"]),
                                  "stage_changed_at": text(row["stage_changed_at"])})
            sql = head + ", ".join([group] * len(chunk)) + tail
            inserted.update({email: lead_id for lead_id, email in _driver(conn, sql, tuple(params))})
        return inserted

    def insert_stage_changes(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        sql, values = self.stage_changes
        text = _TimeText()
        _driver(conn, sql, [values({**row, "at": text(row["at"])}) for row in rows], many=True)

    def update_leads(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        sql, values = self.update
        text = _TimeText()
        _driver(conn, sql, many=True, params=[
            values({**row, "b_stage_changed_at": text(row["b_stage_changed_at"]),
                    "b_unsubscribed_at": text(row["b_unsubscribed_at"]),
                    "b_bounced_at": text(row["b_bounced_at"]), "b_updated_at": text(row["b_updated_at"]),
                    "b_score_state": _json_text(row["b_score_state"])})
            for row in rows
        ])


_PG_ARRAY_TYPES = {"score": "float8", "stage": "text", "stage_changed_at": "timestamptz", "unsubscribed_at": "timestamptz",
                   "bounced_at": "timestamptz", "updated_at": "timestamptz", "score_state": "text"}
_PG_JSON = {"score_state"}  # sent as text, cast to json
_PG_UPDATE_LEADS = (  # every one of _LEAD_STATE_COLUMNS must have its array type: a KeyError at import otherwise
    "UPDATE lead SET " + ", ".join(f"{name} = v.{name}" + ("::json" if name in _PG_JSON else "")
                                   for name in _LEAD_STATE_COLUMNS)
    + " FROM unnest(%(id)s::bigint[], "
    + ", ".join(f"%({name})s::{_PG_ARRAY_TYPES[name]}[]" for name in _LEAD_STATE_COLUMNS)
    + ") AS v(id, " + ", ".join(_LEAD_STATE_COLUMNS) + ") WHERE lead.id = v.id"
)


class _PostgresBulk(_Bulk):
    """PostgreSQL: the leads of a batch written back in one statement over arrays (``unnest``) rather than one
    ``UPDATE`` per lead (an executemany costs the driver a round of work per row)."""

    def update_leads(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        if len(rows) == 1:
            super().update_leads(conn, rows)
            return
        arrays: dict[str, list[Any]] = {"id": [row["b_id"] for row in rows]}
        for name in _LEAD_STATE_COLUMNS:
            values = [row[f"b_{name}"] for row in rows]
            arrays[name] = [_json_text(value) for value in values] if name in _PG_JSON else values
        arrays["score"] = [float(value) for value in arrays["score"]]  # a list of one type (0 may be an int)
        conn.exec_driver_sql(_PG_UPDATE_LEADS, arrays)


def _driver(conn: Connection, sql: str, params: Any, *, many: bool = False) -> Any:
    """Run ``sql`` on the transaction's own sqlite3 connection, past SQLAlchemy's execution machinery (which costs
    several times SQLite's work for these statements); a driver error is raised as SQLAlchemy would raise it."""
    driver = conn.connection.driver_connection
    try:
        return driver.executemany(sql, params) if many else driver.execute(sql, params)
    except Exception as exc:
        if isinstance(exc, conn.dialect.loaded_dbapi.Error):
            raise DBAPIError.instance(sql, params, exc, conn.dialect.loaded_dbapi.Error, hide_parameters=True,
                                      dialect=conn.dialect) from exc
        raise


def _driver_sql(statement: Any, dialect: Dialect,
                keys: Sequence[str]) -> tuple[str, Callable[[Mapping[str, Any]], tuple[Any, ...]]]:
    """A statement's SQL for the driver, and what turns a row (a mapping of ``keys``) into its parameters."""
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    order = tuple(compiled.positiontup or ())
    if not compiled.positional or sorted(order) != sorted(keys):
        raise RuntimeError(f"parameters {order}, expected {tuple(keys)}")
    getter = itemgetter(*order)
    return compiled.string, (getter if len(order) > 1 else lambda row: (getter(row),))


def _sqlite_time(value: datetime | None) -> str | None:
    """A timestamp as :class:`nurture.storage.database.UTCDateTime` stores it on SQLite: UTC, as SQLAlchemy's SQLite
    ``DATETIME`` writes it (``2024-05-01 12:00:00.000000``)."""
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: nurture stores aware datetimes only")
    return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat(" ", "microseconds")


class _TimeText:
    """:func:`_sqlite_time`, remembering its answers: the rows of a batch share most of their timestamps."""

    __slots__ = ("_known",)

    def __init__(self) -> None:
        self._known: dict[datetime, str] = {}

    def __call__(self, value: datetime | None) -> str | None:
        if value is None:
            return None
        found = self._known.get(value)  # equal datetimes are the same instant: the same text
        if found is None:
            found = self._known[value] = _sqlite_time(value)  # type: ignore[assignment]
        return found


@lru_cache(maxsize=1024)
def _day(text: str) -> date:
    return date.fromisoformat(text)


def _day_bounds(days: set[date]) -> tuple[datetime, datetime]:
    """From the start of the first of these UTC days to the end of the last."""
    first, last = min(days), max(days)
    start = datetime(first.year, first.month, first.day, tzinfo=timezone.utc)
    return start, datetime(last.year, last.month, last.day, tzinfo=timezone.utc) + timedelta(days=1)


def _json(value: str | None) -> Any:
    return json.loads(value) if value is not None else None


def _json_text(value: Any) -> str | None:
    """A JSON column's value as SQLAlchemy's ``JSON(none_as_null=True)`` stores it: None as NULL."""
    return json.dumps(value) if value is not None else None


def _time(value: str | None) -> datetime | None:
    """A timestamp SQLite holds as text, read back as :class:`nurture.storage.database.UTCDateTime` reads it."""
    return datetime.fromisoformat(value).replace(tzinfo=timezone.utc) if value is not None else None


@lru_cache(maxsize=8)
def _bulk_for(dialect: Dialect) -> _Bulk:
    if dialect.name == "sqlite":
        return _SqliteBulk(dialect)
    return _PostgresBulk(dialect.name) if dialect.name == "postgresql" else _Bulk(dialect.name)


@dataclass
class _LeadState:
    """A lead as the batch changes it; written back once when the batch ends."""

    row: Any
    created: bool
    stage: str
    score: float
    stage_changed_at: datetime
    unsubscribed_at: datetime | None
    bounced_at: datetime | None
    nurtured: bool  # had an active enrollment when the batch began: only then can events change enrollments
    behaviour: ScoreAccumulator
    caps: Counter[tuple[str, date]] = field(default_factory=Counter)  # scored events per (type, UTC day)
    counted_since: date | None = None  # caps holds every (type, day) count from this day on
    recorded: bool = False
    recorded_types: set[str] = field(default_factory=set)
    fit: list[Any] | None = None  # the fit items: they depend on the lead's fields, which a batch does not change
    stage_changed: bool = False
    promoted: bool = False  # moved to sql in this batch (promotion also sets the owner)
    dirty: bool = False
    _base: LeadView | None = None
    _view: LeadView | None = None

    @property
    def id(self) -> int:
        return int(self.row.id)

    def scored_on(self, event_type: str, day: date) -> int:
        """How many events of this type scored (points other than 0) on this UTC day: what daily caps count."""
        return self.caps[(event_type, day)]

    def add_scored(self, event_type: str, at: datetime, points: float) -> None:
        """Count an event that scored into the running score and the daily caps."""
        if points:
            self.behaviour.add(event_type, at, points)
            self.caps[(event_type, utc_day(at))] += 1

    def view(self) -> LeadView:
        if self._base is None:
            self._base = lead_view(self.row)
        base, last = self._base, self._view
        unsubscribed, bounced = self.unsubscribed_at is not None, self.bounced_at is not None
        if last is not None and (last.stage, last.score, last.unsubscribed, last.bounced) == (
                self.stage, self.score, unsubscribed, bounced):
            return last  # views are frozen: the same state, the same view
        self._view = LeadView(
            key=base.key, email=base.email, stage=self.stage, score=self.score, timezone=base.timezone, tags=base.tags,
            attributes=base.attributes, custom=base.custom, unsubscribed=unsubscribed, bounced=bounced,
        )
        return self._view


_LEAD_COLUMN_NAMES = tuple(column.key for column in L.c)


@dataclass(frozen=True)
class _Wake:
    """A queued wake-up (:func:`nurture.storage.enrollments.wake_all`): the lead's enrollments waiting for
    ``event_type`` become due at ``at``."""

    lead_id: int
    event_type: str
    at: datetime


def _new_lead(lead_id: int, values: Mapping[str, Any]) -> SimpleNamespace:
    """The row of a lead just inserted with ``values`` (the other columns are empty), without reading it back."""
    return SimpleNamespace(**{**dict.fromkeys(_LEAD_COLUMN_NAMES), **values, "id": lead_id})


class _Batch:
    """One batch being recorded inside one transaction."""

    def __init__(self, conn: Connection, catalog: Catalog, rules: ScoringRules, now: datetime, actor: str, *,
                 sales: SalesRules | None = None, handoff: Handoff | None = None) -> None:
        self._conn, self.catalog, self.rules, self.now, self.actor = conn, catalog, rules, now, actor
        self.sales, self.handoff = sales, handoff
        self.look_up_ids = True
        """Whether :meth:`prepare` looks the client ids up; without, a recorded id shows when its insert is refused
        (:class:`_AlreadyRecorded`), and the batch starts over with the look-up: one statement less for batches of
        new events, the usual case, and a second attempt for retried ones."""
        self.leads: dict[str, _LeadState] = {}
        self.by_id: dict[int, _LeadState] = {}
        self.sql = _statements(conn.dialect.name)
        self.bulk = _bulk_for(conn.dialect)
        self._rows: list[dict[str, Any]] = []  # event rows not written yet
        self._updates: list[Callable[[Connection], Any] | _Wake] = []  # enrollment updates that follow those rows
        self.campaigns = _campaign_facts(catalog)

    @property
    def conn(self) -> Connection:
        """The transaction's connection, once every queued event row and enrollment update is written: whatever
        reads through it (promotion, stage changes, burst checks) sees the batch as it stands."""
        self.flush()
        return self._conn

    def flush(self) -> None:
        """Write the queued event rows (one insert), then the enrollment updates they caused, in order.

        :class:`_AlreadyRecorded` when a client id turns out recorded already (by an earlier request, when the
        batch did not look its ids up, or by a concurrent batch since it did): the caller starts over.
        """
        conn = self._conn
        if self._rows:
            rows, self._rows = self._rows, []
            self.bulk.insert_events(conn, rows)
        while self._updates:
            updates, self._updates = self._updates, []
            wakes: list[dict[str, Any]] = []  # consecutive wake-ups go in one statement, in order
            for apply in updates:
                if isinstance(apply, _Wake):
                    wakes.append(dict(w_lead_id=apply.lead_id, w_type=apply.event_type, w_at=apply.at))
                    continue
                if wakes:
                    wake_all(conn, wakes)
                    wakes = []
                apply(conn)
            if wakes:
                wake_all(conn, wakes)

    # Leads are locked (or created) in email order before anything else, so concurrent batches never deadlock on them.
    def prepare(self, events: Sequence[EventIn]) -> dict[str, tuple[int, float]]:
        """Find the client ids already recorded (when :attr:`look_up_ids`), then lock or create the leads of the
        other events."""
        known = self.known_ids({e.id for e in events if e.id is not None}) if self.look_up_ids else {}
        first_type = {}
        for event in events:
            if event.id is None or event.id not in known:
                first_type.setdefault(event.email, event.type)
        emails = sorted(first_type)
        found = self._lock_leads(emails)
        missing = [email for email in emails if email not in found]
        created = self.create_leads({email: f"created by a {first_type[email]} event" for email in missing})
        found.update(created)
        if len(found) < len(emails):  # created by a concurrent batch since we looked: lock theirs
            found.update(self._lock_leads([email for email in missing if email not in created]))
        for email in emails:
            self.track(found[email], email in created)
        return known

    def known_ids(self, ids: set[str]) -> dict[str, tuple[int, float]]:
        """Of these client ids, those recorded already, with their lead's id and their points."""
        ordered = sorted(ids)
        known: dict[str, tuple[int, float]] = {}
        for start in range(0, len(ordered), _CHUNK):
            rows = self._conn.execute(self.sql.known_ids, {"ids": ordered[start : start + _CHUNK]})
            known.update({row.external_id: (row.lead_id, float(row.points)) for row in rows})
        return known

    def _lock_leads(self, emails: Sequence[str]) -> dict[str, Any]:
        return self.bulk.lock_leads(self._conn, emails) if emails else {}

    def create_leads(self, reasons: Mapping[str, str]) -> dict[str, Any]:
        """Insert leads at stage ``lead``, each with a first history row naming the actor and ``reasons[email]``;
        return the rows inserted by email (a lead a concurrent batch inserted first is theirs)."""
        if not reasons:
            return {}
        now = self.now
        rows = [dict(email=email, tags=[], fields={}, stage="lead", score=0.0, created_at=now, updated_at=now,
                     stage_changed_at=now) for email in sorted(reasons)]
        values = {row["email"]: row for row in rows}
        inserted = {email: _new_lead(lead_id, values[email])
                    for email, lead_id in self.bulk.insert_leads(self._conn, rows).items()}
        if inserted:
            self.bulk.insert_stage_changes(self._conn, [
                dict(lead_id=inserted[email].id, from_stage=None, to_stage="lead", at=now, actor=self.actor,
                     reason=reasons[email])
                for email in sorted(inserted)
            ])
        return inserted

    def track(self, row: Any, created: bool) -> _LeadState:
        """Follow this lead's changes through the batch."""
        nurtured = getattr(row, _NURTURED, None)
        state = _LeadState(
            row=row, created=created, stage=row.stage, score=float(row.score or 0), stage_changed_at=row.stage_changed_at,
            unsubscribed_at=row.unsubscribed_at, bounced_at=row.bounced_at,
            nurtured=not created and (nurtured is None or bool(nurtured)),
            behaviour=ScoreAccumulator(self.rules, self.now),
        )
        self.leads[row.email] = state
        self.by_id[int(row.id)] = state
        return state

    def load_history(self, events: Sequence[EventIn] = ()) -> None:
        """Load what scoring needs of the history of every lead of the batch that existed before it: its scored events
        summed per type, and the counts the daily caps of ``events`` compare against. A lead's stored score state
        (:mod:`nurture.storage.score_state`) answers both; the history is read (in one go for the batch's leads)
        only for leads without a state that can be used, and for cap counts of days older than the state keeps."""
        now, by_id = self.now, self.by_id
        window = score_state.window_start(now)
        half_life = half_life_seconds(self.rules)
        to_read: list[int] = []
        for lead in by_id.values():
            if lead.created:
                lead.counted_since = window  # no history: every count is known
                continue
            loaded = score_state.load(lead.row.score_state, now, half_life)
            if loaded is None:
                to_read.append(lead.id)
                continue
            loaded.add_to(lead.behaviour)
            lead.caps.update(loaded.counts)
            lead.counted_since = loaded.since
        capped = _capped_types(self.rules)
        days = {utc_day(event.occurred_at) for event in events if event.type in capped and event.occurred_at}
        read = set(to_read)  # these leads' counts for the batch's days are read with their history
        if to_read:
            to_read.sort()
            for lead_id, event_type, points, raw, count, latest in self.bulk.scored_groups(
                    self._conn, to_read, now, half_life):
                by_id[lead_id].behaviour.add_group(event_type, points, raw, count, latest)
            # every type's counts over the window a state keeps (so the state can be written), and the batch's days
            window_days = {window + timedelta(days=offset) for offset in range(score_state.DAYS)}
            for lead_id, event_type, day, count in self.bulk.scored_counts(
                    self._conn, to_read, None, sorted(window_days | days)):
                by_id[lead_id].caps[(event_type, day)] = count
            for lead_id in to_read:
                by_id[lead_id].counted_since = window
        # a late event of a capped type, from a day before what its lead's state counts: that day's counts, read
        late: dict[int, set[date]] = {}
        for event in events:
            lead = self.leads.get(event.email)
            if (event.type in capped and event.occurred_at and lead is not None and not lead.created
                    and lead.counted_since is not None and lead.id not in read):
                if (day := utc_day(event.occurred_at)) < lead.counted_since:
                    late.setdefault(lead.id, set()).add(day)
        if late:
            types = sorted({event.type for event in events if event.type in capped})
            for lead_id, event_type, day, count in self.bulk.scored_counts(
                    self._conn, sorted(late), types, sorted(set().union(*late.values()))):
                by_id[lead_id].caps[(event_type, day)] = count  # the database's count: right for any lead asked

    def run(self, events: Sequence[EventIn], known: dict[str, tuple[int, float]]) -> list[EventResult]:
        """Record every event in order and write what they cause; one result per event."""
        results = [self.record(index, event, known) for index, event in enumerate(events)]
        self.flush()
        return results

    def record(self, index: int, event: EventIn, known: dict[str, tuple[int, float]]) -> EventResult:
        """Queue one event and its consequences; a repeated id is a duplicate and changes nothing."""
        if event.id is not None and event.id in known:
            lead_id, points = known[event.id]
            return self._duplicate(index, event, lead_id, points)
        lead = self.leads[event.email]
        at = event.occurred_at
        assert at is not None
        engagement = _as_engagement(event)
        if event.dedupe_within is not None:
            burst = self._burst(lead, event)
            if burst is not None:
                return self._duplicate(index, event, lead.id, burst)
        points, _why = event_points(self.rules, engagement, lead.caps[(event.type, utc_day(at))])
        self._rows.append(dict(
            lead_id=lead.id, type=event.type, occurred_at=at, recorded_at=self.now, external_id=event.id,
            campaign_id=event.campaign_id, step_key=event.step_key, delivery_id=event.delivery_id,
            properties=engagement.properties, points=points,
        ))
        if event.id is not None:
            known[event.id] = (lead.id, points)
        lead.recorded = lead.dirty = True
        lead.recorded_types.add(event.type)
        lead.add_scored(event.type, at, points)
        if lead.nurtured:
            self._consequences(lead, event)
        elif event.type in SUPPRESSION_REASONS:
            self._suppress(lead, event.type, at)
        changed = self.rescore(lead, engagement)
        return EventResult(index, RECORDED, lead.row.email, event.type, event.id, points, lead.score, lead.stage, changed)

    def _burst(self, lead: _LeadState, event: EventIn) -> float | None:
        """The points of an event this one repeats within its dedupe window, None if it is new."""
        assert event.occurred_at is not None and event.dedupe_within is not None
        query = select(EV.c.properties, EV.c.points).where(
            EV.c.lead_id == lead.id, EV.c.type == event.type,
            EV.c.occurred_at >= event.occurred_at - event.dedupe_within,
            EV.c.occurred_at <= event.occurred_at + event.dedupe_within,
        )
        if event.delivery_id is None:
            query = query.where(EV.c.delivery_id.is_(None))
        else:
            query = query.where(EV.c.delivery_id == event.delivery_id)
        url = event.properties.get("url")
        for row in self.conn.execute(query):
            if (row.properties or {}).get("url") == url:
                return float(row.points)
        return None

    def _duplicate(self, index: int, event: EventIn, lead_id: int, points: float) -> EventResult:
        lead = self.by_id.get(lead_id)
        if lead is not None:
            return EventResult(index, DUPLICATE, lead.row.email, event.type, event.id, points, lead.score, lead.stage,
                               False)
        row = self._conn.execute(select(L.c.email, L.c.score, L.c.stage).where(L.c.id == lead_id)).one()
        return EventResult(index, DUPLICATE, row.email, event.type, event.id, points, float(row.score), row.stage, False)

    def _suppress(self, lead: _LeadState, event_type: str, at: datetime) -> None:
        if event_type == UNSUBSCRIBE and lead.unsubscribed_at is None:
            lead.unsubscribed_at = at
        elif event_type in (BOUNCE, COMPLAINT) and lead.bounced_at is None:
            lead.bounced_at = at

    def _consequences(self, lead: _LeadState, event: EventIn) -> None:
        """Suppression, goal exits and waking the enrollments that wait for this event type (queued in order)."""
        at = event.occurred_at
        assert at is not None
        lead_id, now = lead.id, self.now
        reason = SUPPRESSION_REASONS.get(event.type)
        if reason is not None:
            self._suppress(lead, event.type, at)
            self._updates.append(lambda conn: exit_enrollments(conn, lead_id, reason, now))
            return
        goal_of = self.campaigns.goals.get(event.type)
        if goal_of:
            goal = f"goal:{event.type}"

            def reach(conn: Connection) -> None:
                # Only enrollments that began before the event: a late-arriving old event does not end a newer one.
                reached = conn.execute(
                    select(E.c.campaign_id).where(
                        E.c.lead_id == lead_id, E.c.status == "active", E.c.campaign_id.in_(goal_of),
                        E.c.enrolled_at <= at,
                    )
                ).scalars().all()
                if reached:
                    exit_enrollments(conn, lead_id, goal, now, campaign_ids=reached)

            self._updates.append(reach)
        if event.type in self.campaigns.awaited:  # only a wait_for step sets an enrollment's waiting_for
            self._updates.append(_Wake(lead_id, event.type, at))

    def rescore(self, lead: _LeadState, event: Engagement | None = None) -> bool:
        """Recompute the lead's score; scoring may make it an MQL, then the sales rules an SQL (with its handoff) or
        disqualified (:func:`nurture.application.promote.after_rescore`). True when its stage changed."""
        view = lead.view()
        if lead.fit is None:
            lead.fit = fit_items(self.rules, view)
        breakdown = lead.behaviour.breakdown(self.rules, lead.fit)
        lead.score = breakdown.total
        changed = False
        decision = stage_after_scoring(self.rules, lead.stage, breakdown)
        if decision is not None and decision[0] != lead.stage and not promote.recycling(
                lead.stage, lead.row.fields, self.now):  # sales said "not now": it waits out recycle_after
            self.move(lead, decision[0], decision[1], actor="rule")
            changed = True
        return promote.after_rescore(self, lead, breakdown, event) or changed

    def move(self, lead: _LeadState, stage: str, reason: str, *, actor: str) -> int:
        """Move the lead to ``stage`` (with its history row) and end the campaigns that stage exits; return the
        history row's id."""
        conn = self.conn
        change_id = conn.execute(self.sql.insert_stage_change_id, dict(
            lead_id=lead.id, from_stage=lead.stage, to_stage=stage, at=self.now, reason=reason, actor=actor,
        )).scalar_one()
        lead.stage, lead.stage_changed_at = stage, self.now
        lead.stage_changed = lead.dirty = True
        if stage == promote.SQL:
            lead.promoted = True
        exits = [c.id for c in self.catalog.campaigns.values() if stage in c.exit.stages]
        if exits and lead.nurtured:
            exit_enrollments(conn, lead.id, f"stage:{stage}", self.now, campaign_ids=exits)
        return int(change_id)

    def finish(self) -> None:
        """Write every changed lead back (one statement for the batch)."""
        self.flush()
        rows = [
            dict(b_id=lead.id, b_score=lead.score, b_stage=lead.stage, b_stage_changed_at=lead.stage_changed_at,
                 b_unsubscribed_at=lead.unsubscribed_at, b_bounced_at=lead.bounced_at, b_updated_at=self.now,
                 b_score_state=score_state.dump(lead.behaviour, lead.caps, lead.counted_since))
            for lead in self.by_id.values() if lead.dirty
        ]
        if rows:
            self.bulk.update_leads(self._conn, rows)

    def to_enroll(self, *, include_unchanged: bool = False) -> list[int]:
        """Leads that may enter a campaign now: created, moved to another stage, or with a new event of a type an
        entry filter reads (``had_event``); and, unless promoted in this batch, passing some campaign's stage and
        lead-field filters (what enrolling would check first). Other events change nothing that entry depends on:
        no enrollment work for them."""
        entry_stages, entry_events = self.campaigns.entry_stages, self.campaigns.entry_events
        return sorted(
            lead.id for lead in self.by_id.values()
            if (include_unchanged or lead.created or lead.stage_changed or lead.recorded_types & entry_events)
            and lead.stage in entry_stages
            and lead.unsubscribed_at is None and lead.bounced_at is None
            and (lead.promoted or self._may_enter(lead))
        )

    def _may_enter(self, lead: _LeadState) -> bool:
        """Whether some campaign's stages and lead-field filters let the lead in (its history and past enrollments
        aside): a necessary condition of :func:`nurture.storage.enrollments.enroll_in_transaction` enrolling it."""
        if recycle_pending(lead.stage, lead.row.fields, self.now):
            return False
        view = lead.view()
        for stages, where in self.campaigns.entry_filters:
            if lead.stage in stages and filter_matches(where, view, _NO_HISTORY):
                return True
        return False


_NO_HISTORY = History([])


_DERIVED: dict[tuple[str, int], tuple[Any, Any]] = {}


def _derived(name: str, source: Any, build: Callable[[Any], Any]) -> Any:
    """``build(source)``, worked out once per loaded ``source`` (rules or catalog: they do not change once loaded)
    rather than once per batch. A process loads one set of definitions, tests a few: the cache stays small."""
    cached = _DERIVED.get((name, id(source)))
    if cached is None or cached[0] is not source:
        if len(_DERIVED) >= 16:
            _DERIVED.clear()
        cached = _DERIVED[(name, id(source))] = (source, build(source))
    return cached[1]


def _capped_types(rules: ScoringRules) -> frozenset[str]:
    """The event types some rule caps per day."""
    return _derived("capped", rules, lambda rules: frozenset(
        kind for kind, event_rules in rules.behaviour.events.items()
        if any(rule.max_per_day is not None for rule in event_rules)))


@dataclass(frozen=True)
class _CampaignFacts:
    """What a batch asks of the campaigns, worked out once per catalog rather than once per batch."""

    goals: dict[str, list[str]]  # event type -> the campaigns it is a goal of (exit.events)
    awaited: frozenset[str]  # event types some step waits for (wait_for)
    entry_stages: frozenset[str]  # stages some campaign that is not paused enrolls from
    entry_events: frozenset[str]  # event types an entry filter of such a campaign reads (had_event)
    entry_filters: list[tuple[frozenset[str], EntryFilter | None]]  # each such campaign's stages and filter without had_event


def _campaign_facts(catalog: Catalog) -> _CampaignFacts:
    return _derived("campaigns", catalog, _build_campaign_facts)


def _build_campaign_facts(catalog: Catalog) -> _CampaignFacts:
    campaigns = list(catalog.campaigns.values())
    goals: dict[str, list[str]] = {}
    for campaign in campaigns:
        for event_type in campaign.exit.events:
            goals.setdefault(event_type, []).append(campaign.id)
    active = [c for c in campaigns if not c.paused]
    filters = []
    for campaign in active:
        where = campaign.entry.where
        if where is not None and where.had_event is not None:
            where = where.model_copy(update={"had_event": None})
        filters.append((frozenset(campaign.entry.stages()), where))
    return _CampaignFacts(
        goals=goals,
        awaited=frozenset(step.wait_for.event for c in campaigns for step in c.steps if step.wait_for is not None),
        entry_stages=frozenset(stage for c in active for stage in c.entry.stages()),
        entry_events=frozenset(t for c in active if c.entry.where and c.entry.where.had_event
                               for t in c.entry.where.had_event),
        entry_filters=filters,
    )


def _retryable(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


def record_events(
    engine: Engine | Connection, catalog: Catalog, rules: ScoringRules, events: Sequence[EventIn], *, now: datetime,
    actor: str, sales: SalesRules | None = None, handoff: Handoff | None = None,
) -> list[EventResult]:
    """Record a batch of events and their consequences in one transaction; return one result per event, in order.

    ``engine`` may be a connection outside any transaction (:func:`nurture.storage.database.transaction`).

    With ``sales`` rules, a lead may become an SQL (or be disqualified) in the same transaction, its handoff queued in
    the outbox with ``handoff``'s signed links (see :mod:`nurture.application.promote`).

    Every event is validated first: one bad event rejects the whole batch with :class:`InvalidEvents` (naming each
    bad item by its index) and nothing is written. A client ``id`` seen before makes the event a ``duplicate`` that
    changes nothing. New and promoted leads are enrolled in the campaigns they now match in the same transaction.
    """
    if actor not in STAGE_ACTORS:
        raise ValueError(f"unknown actor {actor!r}")
    cleaned = clean_events(events, now)
    if not cleaned:
        return []
    refused: set[str] = set()  # ids an insert found recorded already
    look_up = any(event.id is not None and event.dedupe_within is not None for event in cleaned)
    failures = refusals = 0
    while True:
        try:
            with transaction(engine) as conn:
                batch = _Batch(conn, catalog, rules, now, actor, sales=sales, handoff=handoff)
                # A first attempt takes the ids for new; a burst check must not answer for an id recorded before.
                batch.look_up_ids = look_up
                known = batch.prepare(cleaned)
                if refused - known.keys():  # recorded by a concurrent batch since prepare looked
                    known.update(batch.known_ids(refused - known.keys()))
                batch.load_history(cleaned)
                results = batch.run(cleaned, known)
                batch.finish()
                created = enroll_in_transaction(conn, catalog, batch.to_enroll(), now)
            break
        except _AlreadyRecorded as exc:
            refusals += 1
            if refusals > _RETRIES:  # looked up after the leads were locked, and still refused
                raise RuntimeError("event ids refused by the database although not recorded") from None
            look_up = True
            refused |= exc.ids if exc.ids is not None else {event.id for event in cleaned if event.id is not None}
            log.debug("event batch holds id(s) recorded already; recording it again with its ids looked up")
        except DBAPIError as exc:
            failures += 1
            if failures == _RETRIES or not _retryable(exc):
                raise
            log.info("event batch hit a %s; retrying", type(exc.orig).__name__)
    if log.isEnabledFor(logging.INFO):
        recorded = [r for r in results if r.status == RECORDED]
        log.info("recorded %d event(s), %d duplicate(s); types: %s", len(recorded), len(results) - len(recorded),
                 ", ".join(sorted({r.type for r in recorded})) or "-")
    if created:
        log.info("enrolled %d lead(s) after recording events", created)
    return results


# --- leads through the API ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SavedLead:
    """What :func:`save_lead` did."""

    email: str
    created: bool
    stage: str
    score: float
    stage_changed: bool
    enrolled: int


def save_lead(
    engine: Engine, catalog: Catalog, rules: ScoringRules, data: Mapping[str, Any], *, now: datetime, actor: str,
    sales: SalesRules | None = None, handoff: Handoff | None = None,
) -> SavedLead:
    """Create or update a lead (fields as :func:`nurture.storage.leads.clean_lead_data` accepts them) and rescore it.

    The fields are written by :func:`nurture.storage.leads.upsert_lead` (an explicit stage is recorded with
    ``actor``); then the new score, fit points included, may promote the lead (to MQL; with ``sales`` rules to SQL,
    or disqualify it, as :func:`record_events` does). A stage that a campaign exits on ends that enrollment at once.
    After the commit the lead is enrolled in every campaign it now matches.
    """
    if actor not in STAGE_ACTORS:
        raise ValueError(f"unknown actor {actor!r}")
    email = clean_lead_data(data)["email"]  # InvalidInput before any transaction
    for attempt in range(_RETRIES):
        try:
            with session(engine) as orm_session:
                conn = orm_session.connection()
                before = conn.execute(select(L.c.stage).where(L.c.email == email).with_for_update()).scalar()
                upsert_lead(orm_session, data, actor=actor, now=now)
                batch = _Batch(conn, catalog, rules, now, actor, sales=sales, handoff=handoff)
                # tracked as a lead that existed: its history and state are read even when `before` saw none, since
                # on PostgreSQL a concurrent batch may have created it (with scored events) after that read
                lead = batch.track(conn.execute(select(L).where(L.c.email == email)).one(), False)
                if before is not None and lead.stage != before:
                    lead.stage_changed = True
                    exits = [c.id for c in catalog.campaigns.values() if lead.stage in c.exit.stages]
                    if exits:
                        exit_enrollments(conn, lead.id, f"stage:{lead.stage}", now, campaign_ids=exits)
                batch.load_history()
                batch.rescore(lead)
                lead.dirty = True
                batch.finish()
                enrolled = enroll_in_transaction(conn, catalog, batch.to_enroll(include_unchanged=True), now)
            break
        except DBAPIError as exc:
            if attempt + 1 == _RETRIES or not _retryable(exc):
                raise
    return SavedLead(email, before is None, lead.stage, lead.score, lead.stage_changed, enrolled)
