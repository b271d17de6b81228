"""The event batch's bulk statements on PostgreSQL (:class:`PostgresEventBulk`), past SQLAlchemy's per-value work.

Every statement here has one text whatever the batch's size: lists go as arrays (``= ANY(%s)``, ``unnest(...)``), so
psycopg parses each text once. The inserts run as prepared statements after a few executions (psycopg's
``prepare_threshold``); the statements that read or update rows by a list are planned at each execution, for the
tables as they are (``planned_each_time``: a generic plan made while the lead table was small scanned every lead).
SQLAlchemy's expanding ``IN (...)`` and its multi-row ``VALUES`` wrote a new text for every size of batch, which
psycopg parsed again each time (by profile, most of the client's time for a batch of 100: 3-4 ms per statement).
Values go as they are (psycopg adapts them); JSON as the text SQLAlchemy's ``JSON`` type would bind; rows come back
with the types SQLAlchemy's types give (``tests/integration/test_intake_batches.py`` checks both). Each list goes as
one text, PostgreSQL's array input (:func:`array_text`), cast in the statement: psycopg's own adaptation of a Python
list finds the elements' type and dumps each element in Python, which cost more than the rest of the statement's
client time (by profile, 40% of recording a group of single events). Rows are fetched at once (``fetchall``):
iterating a cursor asks psycopg for each row with a call of its own, ~0.4 µs a row.
These statements go to the psycopg connection itself (:func:`nurture.storage.database.driver`): SQLAlchemy's
``before_cursor_execute`` listeners do not see them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from sqlalchemy.engine import Connection

from nurture.storage.codec import json_text, json_value, list_text
from nurture.storage.database import driver, utc_value
from nurture.storage.event_bulk import (
    EVENT_COLUMNS,
    LEAD_STATE_COLUMNS,
    NEW_LEAD_COLUMNS,
    STAGE_CHANGE_COLUMNS,
    AlreadyRecorded,
    EventBulk,
)
from nurture.storage.pg_arrays import array_text
from nurture.storage.tables import L

LEAD_COLUMNS = tuple(column.name for column in L.c)
_LEAD_TIMES = ("unsubscribed_at", "bounced_at", "created_at", "updated_at", "stage_changed_at")
_LEAD_JSON = ("tags", "fields", "score_state")  # read as their text, parsed by codec.json_value
_LEAD_TIME_POSITIONS = tuple(LEAD_COLUMNS.index(name) for name in _LEAD_TIMES)
_LEAD_JSON_POSITIONS = tuple(LEAD_COLUMNS.index(name) for name in _LEAD_JSON)
_EMAIL_POSITION = LEAD_COLUMNS.index("email")


_SELECT_LEADS = ("SELECT " + ", ".join(f'"{name}"::text' if name in _LEAD_JSON else f'"{name}"' for name in LEAD_COLUMNS)
                 + " FROM lead")

# the array type of each column a statement sends as a list
_TYPES = {"lead_id": "bigint", "type": "text", "occurred_at": "timestamptz", "recorded_at": "timestamptz",
          "external_id": "text", "campaign_id": "text", "step_key": "text", "delivery_id": "bigint",
          "properties": "text", "points": "float8", "email": "text", "tags": "text", "fields": "text", "stage": "text",
          "score": "float8", "created_at": "timestamptz", "updated_at": "timestamptz",
          "stage_changed_at": "timestamptz", "from_stage": "text", "to_stage": "text", "at": "timestamptz",
          "reason": "text", "actor": "text", "unsubscribed_at": "timestamptz", "bounced_at": "timestamptz",
          "score_state": "text"}
_JSON = frozenset({"properties", "tags", "fields", "score_state"})  # sent as text, cast to json


def _insert_from_arrays(table: str, columns: Sequence[str], tail: str = "") -> str:
    """``INSERT INTO table (columns) SELECT ... FROM unnest(%s::type[], ...)``: one row per array position, in order."""
    names = ", ".join(f'"{name}"' for name in columns)
    values = ", ".join(f"v.{name}::json" if name in _JSON else f"v.{name}" for name in columns)
    arrays = ", ".join(f"%s::{_TYPES[name]}[]" for name in columns)
    return (f"INSERT INTO {table} ({names}) SELECT {values} FROM unnest({arrays}) "
            f"WITH ORDINALITY AS v({', '.join(columns)}, position) ORDER BY v.position{tail}")


_INSERT_EVENTS = _insert_from_arrays("engagement_event", EVENT_COLUMNS)
_INSERT_EVENTS_IDS = _insert_from_arrays("engagement_event", EVENT_COLUMNS,
                                         " ON CONFLICT (external_id) DO NOTHING RETURNING external_id")
_INSERT_LEADS = _insert_from_arrays("lead", NEW_LEAD_COLUMNS, " ON CONFLICT (email) DO NOTHING RETURNING id, email")
_INSERT_STAGE_CHANGES = _insert_from_arrays("stage_change", STAGE_CHANGE_COLUMNS)
_INSERT_STAGE_CHANGE = ("INSERT INTO stage_change (" + ", ".join(STAGE_CHANGE_COLUMNS) + ") VALUES ("
                        + ", ".join(["%s"] * len(STAGE_CHANGE_COLUMNS)) + ") RETURNING id")
_KNOWN_IDS = "SELECT external_id, lead_id, points FROM engagement_event WHERE external_id = ANY(%s::text[])"
_LOCK_LEADS = f"{_SELECT_LEADS} WHERE email = ANY(%s::text[]) ORDER BY email FOR UPDATE OF lead"
_LOCK_LEAD = f"{_SELECT_LEADS} WHERE email = %s FOR UPDATE OF lead"
_UPDATE_LEADS = (  # every one of LEAD_STATE_COLUMNS must have its array type: a KeyError at import otherwise
    "UPDATE lead SET " + ", ".join(f"{name} = v.{name}" + ("::json" if name in _JSON else "")
                                   for name in LEAD_STATE_COLUMNS)
    + " FROM unnest(%s::bigint[], " + ", ".join(f"%s::{_TYPES[name]}[]" for name in LEAD_STATE_COLUMNS)
    + ") AS v(id, " + ", ".join(LEAD_STATE_COLUMNS) + ") WHERE lead.id = v.id"
)
_WAKE_ALL = ("UPDATE enrollment SET next_due_at = w.at FROM unnest(%s::bigint[], %s::text[], %s::timestamptz[]) "
             "AS w(lead_id, type, at) WHERE enrollment.lead_id = w.lead_id AND enrollment.status = 'active' "
             "AND enrollment.waiting_for = w.type")


def _columns(rows: Sequence[Mapping[str, Any]], names: Sequence[str], prefix: str = "") -> list[str]:
    """The rows' values as one array text per column (JSON columns as the text SQLAlchemy's JSON type binds)."""
    arrays = []
    for name in names:
        key = prefix + name
        values = [row[key] for row in rows]
        if name == "score_state":  # lists the batch built (core.score_state.dump)
            values = [list_text(value) if type(value) is list else json_text(value) for value in values]
        elif name in _JSON:
            values = [json_text(value) for value in values]
        arrays.append(array_text(values, _TYPES[name]))
    return arrays


class PostgresEventBulk(EventBulk):
    """The batch's statements on PostgreSQL, each with one text and its lists as arrays."""

    def __init__(self) -> None:
        super().__init__("postgresql")

    def lock_leads(self, conn: Connection, emails: Sequence[str]) -> dict[str, Any]:
        if len(emails) == 1:
            rows = driver(conn, _LOCK_LEAD, (emails[0],))
        else:
            rows = driver(conn, _LOCK_LEADS, (array_text(emails, "text"),), planned_each_time=True)
        found = {}
        for fetched in rows.fetchall():
            values = list(fetched)
            for position in _LEAD_TIME_POSITIONS:  # aware, in UTC, as storage.database.UTCDateTime reads them
                values[position] = utc_value(values[position])
            for position in _LEAD_JSON_POSITIONS:  # as SQLAlchemy's JSON type reads them (psycopg's is json.loads)
                values[position] = json_value(values[position])
            row = SimpleNamespace()
            row.__dict__.update(zip(LEAD_COLUMNS, values))
            found[values[_EMAIL_POSITION]] = row
        return found

    def known_ids(self, conn: Connection, ids: set[str]) -> dict[str, tuple[int, float]]:
        rows = driver(conn, _KNOWN_IDS, (array_text(sorted(ids), "text"),), planned_each_time=True).fetchall()
        return {external_id: (lead_id, float(points)) for external_id, lead_id, points in rows}

    def insert_events(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        ids = {row["external_id"] for row in rows if row["external_id"] is not None}
        arrays = _columns(rows, EVENT_COLUMNS)
        if not ids:
            driver(conn, _INSERT_EVENTS, arrays)
            return
        cursor = driver(conn, _INSERT_EVENTS_IDS, arrays)
        if cursor.rowcount == len(rows):  # every row inserted: no id was refused (the usual case), none to read
            return
        refused = ids.difference(external_id for (external_id,) in cursor.fetchall())
        if refused:
            raise AlreadyRecorded(refused)

    def insert_leads(self, conn: Connection, rows: list[dict[str, Any]]) -> dict[str, int]:
        inserted = driver(conn, _INSERT_LEADS, _columns(rows, NEW_LEAD_COLUMNS)).fetchall()
        return {email: lead_id for lead_id, email in inserted}

    def insert_stage_changes(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        driver(conn, _INSERT_STAGE_CHANGES, _columns(rows, STAGE_CHANGE_COLUMNS))

    def insert_stage_change(self, conn: Connection, row: Mapping[str, Any]) -> int:
        (change_id,) = driver(conn, _INSERT_STAGE_CHANGE, tuple(row[name] for name in STAGE_CHANGE_COLUMNS)).fetchone()
        return int(change_id)

    def update_leads(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Every lead of the batch in one ``UPDATE ... FROM unnest(...)`` rather than one ``UPDATE`` per lead."""
        driver(conn, _UPDATE_LEADS, [array_text([row["b_id"] for row in rows], "bigint"),
                                     *_columns(rows, LEAD_STATE_COLUMNS, "b_")], planned_each_time=True)

    def wake_all(self, conn: Connection, wakes: list[dict[str, Any]]) -> None:
        """One ``UPDATE ... FROM unnest(...)``. Applied in order, the last wake-up of a lead and event type sets the
        time (a wake-up changes nothing else): so only that one is sent, as an UPDATE joining one row twice would
        pick either."""
        last = {(wake["w_lead_id"], wake["w_type"]): wake["w_at"] for wake in wakes}
        driver(conn, _WAKE_ALL, [array_text([lead_id for lead_id, _ in last], "bigint"),
                                 array_text([kind for _, kind in last], "text"),
                                 array_text(list(last.values()), "timestamptz")], planned_each_time=True)
