"""The event batch's bulk reads and writes (:mod:`nurture.application.record_events`): a handful of statements per
request, whatever its size.

:class:`EventBulk` runs them through SQLAlchemy Core on any database (and is the reference the faster writers are
tested against); :class:`nurture.storage.event_bulk_pg.PostgresEventBulk` and
:class:`nurture.storage.event_bulk_sqlite.SqliteEventBulk` hand PostgreSQL's and SQLite's statements to the driver
itself.
:func:`nurture.storage.dialect.bulk_writer` picks one for a dialect.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from operator import itemgetter
from typing import Any

from sqlalchemy import Float, and_, bindparam, case, cast, exists, func, literal_column, select, update
from sqlalchemy.engine import Connection, Dialect

from nurture.core.scoring import decayed, utc_day
from nurture.storage.dialect import single_writer, sums_history_in_sql, upsert_insert
from nurture.storage.enrollments import wake_all
from nurture.storage.scores import scored_points
from nurture.storage.tables import E, EV, L, SC

CHUNK = 900  # ids per IN (...) list: SQLite allows 999 parameters per statement in old builds


class AlreadyRecorded(Exception):
    """Client ids the database already holds although the batch took them for new: it starts over, with these ids
    looked up (duplicates). ``ids`` is None when the database only said how many rows it refused."""

    def __init__(self, ids: set[str] | None) -> None:
        super().__init__(f"{len(ids) if ids is not None else 'some'} event id(s) recorded already")
        self.ids = ids


@dataclass(frozen=True)
class Statements:
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


LEAD_STATE_COLUMNS = ("score", "stage", "stage_changed_at", "unsubscribed_at", "bounced_at", "updated_at",
                       "score_state")
NURTURED = "nurtured"  # the label of "has an active enrollment" next to each locked lead row


def nurtured_column() -> Any:
    """Whether the lead has an active enrollment, as a column. ``'active'`` is written into the SQL: bound as a
    parameter it could decide whether the partial index on active enrollments applies, so SQLite would prepare
    the statement again at every execution (measured: 45 µs of a 60 µs look-up)."""
    return exists().where(and_(E.c.lead_id == L.c.id, E.c.status == literal_column("'active'"))).label(NURTURED)


@lru_cache(maxsize=4)
def statements(dialect: str) -> Statements:
    # SQLite runs one writer at a time, so the shortcut is exact there. On PostgreSQL a request that waited for another
    # one's row lock re-reads the lead but not this EXISTS (READ COMMITTED): an enrollment the other request just
    # created would be missed and its exits and wake-ups skipped. There every known lead counts as nurtured (the
    # column is left out; its absence means "maybe"): asking in a statement of its own once the locks are held would
    # see what such a request committed, but not an enrollment that a writer which does not lock the lead (the
    # enrollment sweep) commits while the batch runs, which the batch's own UPDATEs do see until it commits.
    columns = (L, nurtured_column()) if single_writer(dialect) else (L,)
    return Statements(
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
            {name: bindparam(f"b_{name}") for name in LEAD_STATE_COLUMNS}
        ),
    )


EVENT_COLUMNS = ("lead_id", "type", "occurred_at", "recorded_at", "external_id", "campaign_id", "step_key",
                  "delivery_id", "properties", "points")
STAGE_CHANGE_COLUMNS = ("lead_id", "from_stage", "to_stage", "at", "reason", "actor")
NEW_LEAD_COLUMNS = ("email", "tags", "fields", "stage", "score", "created_at", "updated_at", "stage_changed_at")


class EventBulk:
    """The batch's bulk reads and writes, through SQLAlchemy Core (any database)."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.sql = statements(dialect)
        self.sums_in_sql = sums_history_in_sql(dialect)

    def lock_leads(self, conn: Connection, emails: Sequence[str]) -> dict[str, Any]:
        """The rows of the leads with these emails (locked until the transaction ends), each with ``nurtured``."""
        if len(emails) == 1:
            row = conn.execute(self.sql.lock_lead, {"email": emails[0]}).first()
            return {row.email: row} if row is not None else {}
        found: dict[str, Any] = {}
        for start in range(0, len(emails), CHUNK):
            rows = conn.execute(self.sql.lock_leads, {"emails": list(emails[start : start + CHUNK])})
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
        if not self.sums_in_sql:  # the reference: the rows, summed here as ScoreAccumulator.add sums them
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
        found: list[tuple[int, str, float, float, int, datetime]] = []
        for start in range(0, len(lead_ids), CHUNK):
            rows = conn.execute(query, {"lead_ids": list(lead_ids[start : start + CHUNK]), "now": now,
                                        "half_life": half_life_seconds})
            found.extend((lead_id, kind, float(points), float(raw), int(count), latest)
                         for lead_id, kind, points, raw, count, latest in rows)
        return found

    def scored_counts(self, conn: Connection, lead_ids: Sequence[int], types: Sequence[str] | None,
                      days: Sequence[date]) -> list[tuple[int, str, date, int]]:
        """How many events of these types (None: of every type) scored on these UTC days, per lead: (lead id, type,
        day, count), what daily caps count from."""
        wanted_types, wanted_days = set(types) if types is not None else None, set(days)
        if not self.sums_in_sql:  # the reference: counted here from the rows
            counts: Counter[tuple[int, str, date]] = Counter()
            for lead_id, event_type, at, _points in scored_points(conn, lead_ids):
                day = utc_day(at)
                if (wanted_types is None or event_type in wanted_types) and day in wanted_days:
                    counts[(lead_id, event_type, day)] += 1
            return [(*key, count) for key, count in counts.items()]
        day_text = func.to_char(func.timezone("UTC", EV.c.occurred_at), "YYYY-MM-DD")
        query = (select(EV.c.lead_id, EV.c.type, day_text, func.count())
                 .where(EV.c.lead_id.in_(bindparam("lead_ids", expanding=True)), EV.c.points != 0,
                        EV.c.occurred_at >= bindparam("since", type_=EV.c.occurred_at.type),
                        EV.c.occurred_at < bindparam("until", type_=EV.c.occurred_at.type))
                 .group_by(EV.c.lead_id, EV.c.type, day_text))
        parameters: dict[str, Any] = {}
        if wanted_types is not None:
            query = query.where(EV.c.type.in_(bindparam("types", expanding=True)))
            parameters["types"] = sorted(wanted_types)
        since, until = day_bounds(wanted_days)
        found = []
        for start in range(0, len(lead_ids), CHUNK):
            rows = conn.execute(query, {**parameters, "lead_ids": list(lead_ids[start : start + CHUNK]),
                                        "since": since, "until": until})
            for lead_id, kind, text_day, count in rows:
                if (day_value := date.fromisoformat(text_day)) in wanted_days:
                    found.append((lead_id, kind, day_value, int(count)))
        return found

    def insert_events(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Insert event rows (in order); :class:`AlreadyRecorded` if the database holds some of their ids."""
        ids = {row["external_id"] for row in rows if row["external_id"] is not None}
        if not ids:
            conn.execute(self.sql.insert_events, rows)
        elif len(rows) == 1:
            if conn.execute(self.sql.insert_events_ids, rows[0]).first() is None:
                raise AlreadyRecorded(ids)
        else:
            refused = ids.difference(conn.execute(self.sql.insert_events_ids, rows).scalars())
            if refused:
                raise AlreadyRecorded(refused)

    def insert_leads(self, conn: Connection, rows: list[dict[str, Any]]) -> dict[str, int]:
        """Insert leads unless their email exists; the ids of those inserted, by email."""
        return {row.email: row.id for row in conn.execute(self.sql.insert_leads, rows)}

    def insert_stage_changes(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        conn.execute(self.sql.insert_stage_change, rows)

    def insert_stage_change(self, conn: Connection, row: Mapping[str, Any]) -> int:
        """Insert one stage change (a history row); its id."""
        return int(conn.execute(self.sql.insert_stage_change_id, row).scalar_one())

    def known_ids(self, conn: Connection, ids: set[str]) -> dict[str, tuple[int, float]]:
        """Of these client ids, those recorded already, with their lead's id and their points."""
        ordered = sorted(ids)
        known: dict[str, tuple[int, float]] = {}
        for start in range(0, len(ordered), CHUNK):
            rows = conn.execute(self.sql.known_ids, {"ids": ordered[start : start + CHUNK]})
            known.update({row.external_id: (row.lead_id, float(row.points)) for row in rows})
        return known

    def update_leads(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Write back each lead's ``LEAD_STATE_COLUMNS`` (keys ``b_<column>``, and ``b_id``)."""
        conn.execute(self.sql.update_lead, rows)

    def wake_all(self, conn: Connection, wakes: list[dict[str, Any]]) -> None:
        """:func:`nurture.storage.enrollments.wake_all`."""
        wake_all(conn, wakes)



def driver_sql(statement: Any, dialect: Dialect,
                keys: Sequence[str]) -> tuple[str, Callable[[Mapping[str, Any]], tuple[Any, ...]]]:
    """A statement's SQL for the driver, and what turns a row (a mapping of ``keys``) into its parameters."""
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    order = tuple(compiled.positiontup or ())
    if not compiled.positional or sorted(order) != sorted(keys):
        raise RuntimeError(f"parameters {order}, expected {tuple(keys)}")
    getter = itemgetter(*order)
    return compiled.string, (getter if len(order) > 1 else lambda row: (getter(row),))


def day_bounds(days: set[date]) -> tuple[datetime, datetime]:
    """From the start of the first of these UTC days to the end of the last."""
    first, last = min(days), max(days)
    start = datetime(first.year, first.month, first.day, tzinfo=timezone.utc)
    return start, datetime(last.year, last.month, last.day, tzinfo=timezone.utc) + timedelta(days=1)

