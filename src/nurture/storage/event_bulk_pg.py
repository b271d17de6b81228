"""The event batch's bulk statements on PostgreSQL (:class:`PostgresEventBulk`), past SQLAlchemy's per-value work.

Every statement here has one text whatever the batch's size: lists go as arrays (``= ANY(%b)``, ``unnest(...)``), so
psycopg parses each text once and PostgreSQL runs it as a prepared statement after a few executions (psycopg's
``prepare_threshold``). SQLAlchemy's expanding ``IN (...)`` and its multi-row ``VALUES`` wrote a new text for every
size of batch, which psycopg parsed again each time (by profile, most of the client's time for a batch of 100: 3-4 ms
per statement). The arrays go in PostgreSQL's binary format (``%b``): psycopg writes the text format of an array in
Python, quoting each element (a third of a second for twelve lists of 5,000 texts), the binary one at a twentieth of
that. Values go as they are (psycopg adapts them); JSON as the text SQLAlchemy's ``JSON`` type would bind;
rows come back with the types SQLAlchemy's types give (``tests/integration/test_intake_batches.py`` checks both).
These statements go to the psycopg connection itself (:func:`nurture.storage.database.driver`): SQLAlchemy's
``before_cursor_execute`` listeners do not see them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timezone
from types import SimpleNamespace
from typing import Any

from sqlalchemy.engine import Connection

from nurture.storage.codec import json_text
from nurture.storage.database import driver
from nurture.storage.event_bulk import (
    EVENT_COLUMNS,
    LEAD_STATE_COLUMNS,
    NEW_LEAD_COLUMNS,
    STAGE_CHANGE_COLUMNS,
    AlreadyRecorded,
    EventBulk,
)
from nurture.storage.tables import L

LEAD_COLUMNS = tuple(column.name for column in L.c)
_LEAD_TIMES = ("unsubscribed_at", "bounced_at", "created_at", "updated_at", "stage_changed_at")
_SELECT_LEADS = "SELECT " + ", ".join(f'"{name}"' for name in LEAD_COLUMNS) + " FROM lead"

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
    """``INSERT INTO table (columns) SELECT ... FROM unnest(%b::type[], ...)``: one row per array position, in order."""
    names = ", ".join(f'"{name}"' for name in columns)
    values = ", ".join(f"v.{name}::json" if name in _JSON else f"v.{name}" for name in columns)
    arrays = ", ".join(f"%b::{_TYPES[name]}[]" for name in columns)
    return (f"INSERT INTO {table} ({names}) SELECT {values} FROM unnest({arrays}) "
            f"WITH ORDINALITY AS v({', '.join(columns)}, position) ORDER BY v.position{tail}")


_INSERT_EVENTS = _insert_from_arrays("engagement_event", EVENT_COLUMNS)
_INSERT_EVENTS_IDS = _insert_from_arrays("engagement_event", EVENT_COLUMNS,
                                         " ON CONFLICT (external_id) DO NOTHING RETURNING external_id")
_INSERT_LEADS = _insert_from_arrays("lead", NEW_LEAD_COLUMNS, " ON CONFLICT (email) DO NOTHING RETURNING id, email")
_INSERT_STAGE_CHANGES = _insert_from_arrays("stage_change", STAGE_CHANGE_COLUMNS)
_INSERT_STAGE_CHANGE = ("INSERT INTO stage_change (" + ", ".join(STAGE_CHANGE_COLUMNS) + ") VALUES ("
                        + ", ".join(["%s"] * len(STAGE_CHANGE_COLUMNS)) + ") RETURNING id")
_KNOWN_IDS = "SELECT external_id, lead_id, points FROM engagement_event WHERE external_id = ANY(%b::text[])"
_LOCK_LEADS = f"{_SELECT_LEADS} WHERE email = ANY(%b::text[]) ORDER BY email FOR UPDATE OF lead"
_LOCK_LEAD = f"{_SELECT_LEADS} WHERE email = %s FOR UPDATE OF lead"
_UPDATE_LEADS = (  # every one of LEAD_STATE_COLUMNS must have its array type: a KeyError at import otherwise
    "UPDATE lead SET " + ", ".join(f"{name} = v.{name}" + ("::json" if name in _JSON else "")
                                   for name in LEAD_STATE_COLUMNS)
    + " FROM unnest(%b::bigint[], " + ", ".join(f"%b::{_TYPES[name]}[]" for name in LEAD_STATE_COLUMNS)
    + ") AS v(id, " + ", ".join(LEAD_STATE_COLUMNS) + ") WHERE lead.id = v.id"
)
_WAKE_ALL = ("UPDATE enrollment SET next_due_at = w.at FROM unnest(%b::bigint[], %b::text[], %b::timestamptz[]) "
             "AS w(lead_id, type, at) WHERE enrollment.lead_id = w.lead_id AND enrollment.status = 'active' "
             "AND enrollment.waiting_for = w.type")


def _columns(rows: Sequence[Mapping[str, Any]], names: Sequence[str], prefix: str = "") -> list[list[Any]]:
    """The rows' values as one list per column (JSON columns as the text SQLAlchemy's JSON type binds)."""
    arrays = []
    for name in names:
        values = [row[prefix + name] for row in rows]
        if name in _JSON:
            values = [json_text(value) for value in values]
        elif _TYPES[name] == "float8":
            values = [float(value) for value in values]  # one type per list (a score of 0 may be an int)
        arrays.append(values)
    return arrays


class PostgresEventBulk(EventBulk):
    """The batch's statements on PostgreSQL, each with one text and its lists as arrays."""

    def __init__(self) -> None:
        super().__init__("postgresql")

    def lock_leads(self, conn: Connection, emails: Sequence[str]) -> dict[str, Any]:
        if len(emails) == 1:
            rows = driver(conn, _LOCK_LEAD, (emails[0],))
        else:
            rows = driver(conn, _LOCK_LEADS, (list(emails),))
        found = {}
        for values in rows:
            row = SimpleNamespace(**dict(zip(LEAD_COLUMNS, values)))
            for name in _LEAD_TIMES:  # aware, in UTC, as storage.database.UTCDateTime reads them
                value = getattr(row, name)
                if value is not None:
                    setattr(row, name, value.astimezone(timezone.utc))
            found[row.email] = row
        return found

    def known_ids(self, conn: Connection, ids: set[str]) -> dict[str, tuple[int, float]]:
        rows = driver(conn, _KNOWN_IDS, (sorted(ids),))
        return {external_id: (lead_id, float(points)) for external_id, lead_id, points in rows}

    def insert_events(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        ids = {row["external_id"] for row in rows if row["external_id"] is not None}
        arrays = _columns(rows, EVENT_COLUMNS)
        if not ids:
            driver(conn, _INSERT_EVENTS, arrays)
            return
        refused = ids.difference(external_id for (external_id,) in driver(conn, _INSERT_EVENTS_IDS, arrays))
        if refused:
            raise AlreadyRecorded(refused)

    def insert_leads(self, conn: Connection, rows: list[dict[str, Any]]) -> dict[str, int]:
        return {email: lead_id for lead_id, email in driver(conn, _INSERT_LEADS, _columns(rows, NEW_LEAD_COLUMNS))}

    def insert_stage_changes(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        driver(conn, _INSERT_STAGE_CHANGES, _columns(rows, STAGE_CHANGE_COLUMNS))

    def insert_stage_change(self, conn: Connection, row: Mapping[str, Any]) -> int:
        (change_id,) = driver(conn, _INSERT_STAGE_CHANGE, tuple(row[name] for name in STAGE_CHANGE_COLUMNS)).fetchone()
        return int(change_id)

    def update_leads(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Every lead of the batch in one ``UPDATE ... FROM unnest(...)`` rather than one ``UPDATE`` per lead."""
        driver(conn, _UPDATE_LEADS, [[row["b_id"] for row in rows], *_columns(rows, LEAD_STATE_COLUMNS, "b_")])

    def wake_all(self, conn: Connection, wakes: list[dict[str, Any]]) -> None:
        """One ``UPDATE ... FROM unnest(...)``. Applied in order, the last wake-up of a lead and event type sets the
        time (a wake-up changes nothing else): so only that one is sent, as an UPDATE joining one row twice would
        pick either."""
        last = {(wake["w_lead_id"], wake["w_type"]): wake["w_at"] for wake in wakes}
        driver(conn, _WAKE_ALL, [[lead_id for lead_id, _ in last], [kind for _, kind in last], list(last.values())])
