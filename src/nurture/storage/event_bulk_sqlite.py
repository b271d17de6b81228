"""The event batch's bulk statements on SQLite (:class:`SqliteEventBulk`), past SQLAlchemy's per-value work."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam, column, func, select
from sqlalchemy.engine import Connection, Dialect

from nurture.storage.codec import TimeText, day_from_text, json_text, json_value, sqlite_time, time_from_text
from nurture.storage.database import driver
from nurture.storage.dialect import upsert_insert
from nurture.storage.event_bulk import (
    EVENT_COLUMNS,
    LEAD_STATE_COLUMNS,
    NEW_LEAD_COLUMNS,
    NURTURED,
    STAGE_CHANGE_COLUMNS,
    AlreadyRecorded,
    EventBulk,
    day_bounds,
    driver_sql,
    nurtured_column,
)
from nurture.storage.tables import EV, L, SC


class SqliteEventBulk(EventBulk):
    """The same writes on SQLite, with the values made ready here and handed to the driver as they are.

    SQLAlchemy converts each value of each row on its way to the driver (timestamps to text, JSON to text), and
    back, which costs more than SQLite's work itself; here the conversions are the ones SQLAlchemy's types make (the
    same text ends up stored and the same values are read, which ``tests/integration/test_intake_batches.py`` checks), done once
    per row in plain Python. The reads take their list of emails or ids as one JSON array (``json_each``), so
    SQLite prepares each statement once, whatever the batch's size. These statements go to the sqlite3 connection
    itself (:func:`nurture.storage.database.driver`): SQLAlchemy's ``before_cursor_execute`` listeners do not see them.
    """

    def __init__(self, dialect: Dialect) -> None:
        super().__init__("sqlite")
        self.events = driver_sql(upsert_insert(EV, dialect).on_conflict_do_nothing(index_elements=["external_id"]),
                                 dialect, EVENT_COLUMNS)
        self.stage_changes = driver_sql(SC.insert(), dialect, STAGE_CHANGE_COLUMNS)
        self.update = driver_sql(self.sql.update_lead, dialect, [f"b_{name}" for name in LEAD_STATE_COLUMNS]
                                 + ["b_id"])
        nurtured = nurtured_column()
        emails = select(column("value")).select_from(func.json_each(bindparam("emails"))).scalar_subquery()
        compiled = select(L, nurtured).where(L.c.email.in_(emails)).order_by(L.c.email).compile(dialect=dialect)
        self.leads_by_email = (compiled.string, tuple(compiled.positiontup or ()), dict(compiled.params))
        compiled = select(L, nurtured).where(L.c.email == bindparam("email")).compile(dialect=dialect)
        self.lead_by_email = (compiled.string, tuple(compiled.positiontup or ()), dict(compiled.params))
        self.lead_columns = (*(column.key for column in L.c), NURTURED)
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
        sql, values = driver_sql(
            upsert_insert(L, dialect).on_conflict_do_nothing(index_elements=["email"]).returning(L.c.id, L.c.email),
            dialect, NEW_LEAD_COLUMNS)
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
            for row_values in driver(conn, sql, tuple(bound[name] for name in order)):
                row = self._row(row_values)
                found[row.email] = row
        return found

    def _row(self, values: Sequence[Any]) -> SimpleNamespace:
        """A lead's row as SQLite returned it, with its values as SQLAlchemy's types read them."""
        row = SimpleNamespace(**dict(zip(self.lead_columns, values)))
        row.tags, row.fields, row.score_state = json_value(row.tags), json_value(row.fields), json_value(row.score_state)
        row.unsubscribed_at, row.bounced_at = time_from_text(row.unsubscribed_at), time_from_text(row.bounced_at)
        row.created_at, row.updated_at = time_from_text(row.created_at), time_from_text(row.updated_at)
        row.stage_changed_at, row.nurtured = time_from_text(row.stage_changed_at), bool(row.nurtured)
        return row

    def scored_points(self, conn: Connection, lead_ids: Sequence[int]) -> list[tuple[int, str, datetime, float]]:
        sql, order, params = self.points_by_lead
        found: list[tuple[int, str, datetime, float]] = []
        for start in range(0, len(lead_ids), 10_000):
            bound = {**params, "ids": json.dumps(list(lead_ids[start : start + 10_000]))}
            rows = driver(conn, sql, tuple(bound[name] for name in order))
            found.extend((lead_id, event_type, time_from_text(at), float(points)) for lead_id, event_type, at, points in rows)
        return found

    def scored_groups(self, conn: Connection, lead_ids: Sequence[int], now: datetime,
                      half_life_seconds: float | None) -> list[tuple[int, str, float, float, int, datetime]]:
        # julianday() keeps milliseconds: an age off by less than one, against half-lives of hours or days
        sql = self._groups_decayed if half_life_seconds else self._groups_raw
        found: list[tuple[int, str, float, float, int, datetime]] = []
        for start in range(0, len(lead_ids), 10_000):
            params = (sqlite_time(now), half_life_seconds, json.dumps(list(lead_ids[start : start + 10_000])))
            found.extend((lead_id, kind, points, raw, count, time_from_text(latest))
                         for lead_id, kind, points, raw, count, latest in driver(
                             conn, sql, params if half_life_seconds else params[2:]))
        return found

    def scored_counts(self, conn: Connection, lead_ids: Sequence[int], types: Sequence[str] | None,
                      days: Sequence[date]) -> list[tuple[int, str, date, int]]:
        wanted_days = set(days)
        since, until = day_bounds(wanted_days)
        sql = self._counts if types is not None else self._counts_all_types
        found = []
        for start in range(0, len(lead_ids), 10_000):
            params = (json.dumps(list(lead_ids[start : start + 10_000])),
                      *((json.dumps(sorted(set(types))),) if types is not None else ()),
                      sqlite_time(since), sqlite_time(until))
            for lead_id, kind, text_day, count in driver(conn, sql, params):
                if (day := day_from_text(text_day)) in wanted_days:
                    found.append((lead_id, kind, day, count))
        return found

    def insert_events(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        sql, values = self.events
        text = TimeText()
        params = [
            values({**row, "occurred_at": text(row["occurred_at"]), "recorded_at": text(row["recorded_at"]),
                    "properties": json.dumps(row["properties"])})
            for row in rows
        ]
        if len(params) == 1:
            written = driver(conn, sql, params[0]).rowcount
        else:
            written = driver(conn, sql, params, many=True).rowcount  # sqlite3 sums executemany's row counts
        if written != len(rows):
            if len(rows) == 1:
                raise AlreadyRecorded({rows[0]["external_id"]})
            raise AlreadyRecorded(None)

    def insert_leads(self, conn: Connection, rows: list[dict[str, Any]]) -> dict[str, int]:
        # one INSERT ... VALUES (...), (...) ... RETURNING: the driver's executemany cannot return the new ids
        head, group, tail, values = self.leads
        text = TimeText()
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
            inserted.update({email: lead_id for lead_id, email in driver(conn, sql, tuple(params))})
        return inserted

    def insert_stage_changes(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        sql, values = self.stage_changes
        text = TimeText()
        driver(conn, sql, [values({**row, "at": text(row["at"])}) for row in rows], many=True)

    def update_leads(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        sql, values = self.update
        text = TimeText()
        driver(conn, sql, many=True, params=[
            values({**row, "b_stage_changed_at": text(row["b_stage_changed_at"]),
                    "b_unsubscribed_at": text(row["b_unsubscribed_at"]),
                    "b_bounced_at": text(row["b_bounced_at"]), "b_updated_at": text(row["b_updated_at"]),
                    "b_score_state": json_text(row["b_score_state"])})
            for row in rows
        ])


