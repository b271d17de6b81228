"""Every place where SQLite and PostgreSQL differ, so the rest of storage writes one query for both back-ends.

- SQLite runs in WAL mode and takes the write lock when a transaction begins (``BEGIN IMMEDIATE``), so a
  transaction that reads and then writes never has to upgrade a read lock (which fails at once with
  ``database is locked`` instead of waiting for the busy timeout). Writers therefore queue up politely.
  :func:`no_wait` transactions give up at once instead (:class:`WriteLockBusy`).
- PostgreSQL claims rows with ``FOR UPDATE SKIP LOCKED`` so several workers can share the tables, and serializes
  what must run once at a time with advisory locks.
- Upserts use each dialect's ``INSERT ... ON CONFLICT``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeAlias

from sqlalchemy import BigInteger, Date, Table, Text, all_, any_, bindparam, event, func, literal, or_, text
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Select

from nurture.errors import ConfigError

if TYPE_CHECKING:  # each dialect's module is imported where it is used: SQLite runs without PostgreSQL's
    from sqlalchemy.dialects import postgresql, sqlite

SQLITE_BUSY = 5  # the result code of a lock that another connection holds

READ_ONLY = "nurture_read_only"
_NO_WAIT = "nurture_no_wait"
_MIGRATION_LOCK_ID = 0x6E75727475726500  # "nurture\0": one advisory lock for schema upgrades on PostgreSQL

log = logging.getLogger(__name__)


class WriteLockBusy(Exception):
    """A transaction of :func:`no_wait` found SQLite's write lock held by another connection: nothing was done."""


def configure_sqlite(engine: Engine, busy_timeout: float) -> None:
    """WAL, a busy timeout, foreign keys, and transactions that begin with the write lock (or a snapshot)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 module, which would otherwise issue a deferred BEGIN before DML only.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
        ensure_pow(dbapi_connection)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        options = connection.get_execution_options()
        if options.get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")  # a WAL snapshot: never blocks, never blocks writers
        elif options.get(_NO_WAIT):
            driver: Any = connection.connection.driver_connection  # the sqlite3 connection (untyped DB-API)
            if driver.in_transaction:
                # a kept connection (no pool check-in resets it) whose last COMMIT failed without SQLite rolling back
                # would hold the write lock for ever: undo it before going on
                log.warning("a no-wait connection was still inside a transaction: rolled back")
                driver.rollback()
            driver.execute("PRAGMA busy_timeout=0")
            try:
                driver.execute("BEGIN IMMEDIATE")
            except driver.OperationalError as exc:
                code = getattr(exc, "sqlite_errorcode", None)  # an extended code: the primary one is its low byte
                if (code is not None and code & 0xFF == SQLITE_BUSY) or "locked" in str(exc):
                    raise WriteLockBusy("another connection holds the write lock") from exc
                raise
            finally:
                driver.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def configure_postgresql(engine: Engine) -> None:
    """Sessions in UTC (``SET TIME ZONE 'UTC'``, committed, once per new connection).

    psycopg hands a timestamp back in the session's time zone: in ``UTC`` as an aware datetime in
    :data:`datetime.timezone.utc`, which :class:`nurture.storage.database.UTCDateTime` passes on as it is; in any
    other zone (the server's default, ``Etc/UTC`` included) as a datetime that it converts: 5-7% of a dispatch
    batch's CPU, by profile. Nothing depends on the setting but that cost: every query names UTC where a day is
    taken from a time, and a session in another zone (a pooler that drops the setting) reads the same instants."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'UTC'")
        dbapi_connection.commit()  # a rolled-back SET would be undone at the connection's first reset


def ensure_pow(dbapi_connection: Any) -> None:
    """Give an SQLite connection ``pow()`` when its library was built without the math functions: the intake sums
    decayed points in SQL (:mod:`nurture.application.record_events`)."""
    try:
        dbapi_connection.execute("SELECT pow(0.5, 1.0)")
    except dbapi_connection.OperationalError:
        dbapi_connection.create_function("pow", 2, math.pow, deterministic=True)


def no_wait(bind: Engine | Connection) -> Any:
    """``bind`` (an engine, or a connection, which is changed) for transactions that take SQLite's write lock only if
    it is free at once, raising :class:`WriteLockBusy` instead of waiting for it (the caller can then wait elsewhere).
    Other databases: ``bind`` as it is."""
    return bind.execution_options(**{_NO_WAIT: True}) if bind.dialect.name == "sqlite" else bind


def for_update_skip_locked(statement: Select[Any], dialect: Dialect | str) -> Select[Any]:
    """``statement`` with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, unchanged on SQLite.

    On SQLite the claiming transaction already holds the database's only write lock (``BEGIN IMMEDIATE``),
    so concurrent claimers are serialized and cannot pick the same rows.
    """
    name = dialect if isinstance(dialect, str) else dialect.name
    if name == "postgresql":
        return statement.with_for_update(skip_locked=True)
    return statement


def in_ids(column: Any, name: str, dialect: Dialect) -> Any:
    """SQL: ``column`` (an id) is one of the list bound as ``name``. On PostgreSQL the list goes as one array
    (``column = ANY(%(name)s::BIGINT[])``), so the statement has one text whatever the list's length: psycopg parses
    it once and the server runs it prepared. An expanding ``IN (...)`` (SQLite's) writes a new text for every length,
    which psycopg parsed again each time (tens of ms for a thousand ids)."""
    if dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(bindparam(name, type_=ARRAY(BigInteger())))
    return column.in_(bindparam(name, expanding=True))


def not_in_ids(column: Any, name: str, dialect: Dialect) -> Any:
    """SQL: ``column`` is none of the ids bound as ``name`` (:func:`in_ids` negated: ``<> ALL`` on PostgreSQL)."""
    if dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return column != all_(bindparam(name, type_=ARRAY(BigInteger())))
    return column.not_in(bindparam(name, expanding=True))


@lru_cache(maxsize=8)
def dispatch_writer(dialect: Dialect) -> Any:
    """The dispatcher's bulk writes as one statement per batch with arrays (PostgreSQL:
    :class:`nurture.storage.schedule_pg.PostgresDispatchWrites`), or None: the generic statements of
    :mod:`nurture.storage.schedule` (an executemany, which SQLite runs in-process at no round trip's cost)."""
    if dialect.name == "postgresql":
        from nurture.storage.schedule_pg import PostgresDispatchWrites

        return PostgresDispatchWrites()
    return None


UpsertInsert: TypeAlias = "postgresql.Insert | sqlite.Insert"
"""An INSERT with ``on_conflict_do_update``/``_do_nothing`` and ``excluded``: both dialects offer them, alike."""


def upsert_insert(table: Table, dialect: Dialect | str) -> UpsertInsert:
    """An INSERT for ``table`` in the dialect's flavour, which offers ``on_conflict_do_update``/``_do_nothing``."""
    name = dialect if isinstance(dialect, str) else dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(table)
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)
    raise ConfigError(f"unsupported database dialect {name!r}")


def lock_for_migration(connection: Connection) -> None:
    """Serialize schema upgrades started at once by several processes (inside the upgrade's transaction).

    SQLite needs nothing: the upgrade's ``BEGIN IMMEDIATE`` already holds the only write lock.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_ID})


# --- claims of due enrollments, stored timestamps, schema changes ---------------------------------------------------

CLAIM_LOCK = 0x6E75727475726501
"""The PostgreSQL advisory lock (transaction-scoped) that claims of due enrollments take first, one claim at a time."""


def lock_for_claim(connection: Connection) -> None:
    """Serialize claims of due enrollments (inside the claim's transaction), so a claim sees the leases of the one
    before. SQLite needs nothing: the claim's ``BEGIN IMMEDIATE`` already holds the only write lock."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CLAIM_LOCK})


VERSIONS_LOCK = 0x6E75727475726502
"""The PostgreSQL advisory lock (transaction-scoped) that putting new definition versions in force takes."""


def lock_for_versions(connection: Connection) -> None:
    """Serialize workers that start at once with edited definitions, so that one puts each new version in force and
    moves its leads, and the next one sees that it did. SQLite's ``BEGIN IMMEDIATE`` does it already."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": VERSIONS_LOCK})


@contextmanager
def without_parallel_workers(connection: Connection) -> Iterator[None]:
    """Statements run in this block start no parallel workers (PostgreSQL; the transaction's setting is put back
    after it). Starting them costs 20-30 ms, more than a look-up of a few index entries that the planner took for
    thousands of rows: its statistics of a column such as an enrollment's version mix every campaign's. A statement
    that fails in the block leaves the setting alone: the transaction is aborted, and its rollback undoes it."""
    if connection.dialect.name != "postgresql":
        yield
        return
    before = connection.execute(text("SELECT current_setting('max_parallel_workers_per_gather')")).scalar_one()
    connection.execute(text("SELECT set_config('max_parallel_workers_per_gather', '0', true)"))
    yield
    connection.execute(text("SELECT set_config('max_parallel_workers_per_gather', :value, true)"), {"value": before})


def stored_utc(value: datetime, dialect: Dialect) -> datetime:
    """An aware UTC datetime as the column keeps it: SQLite has no time zones and stores text, so the (always UTC)
    offset is dropped to keep that text sortable and comparable; PostgreSQL keeps the aware value."""
    return value.replace(tzinfo=None) if dialect.name == "sqlite" else value


def alters_by_copy(dialect: Dialect) -> bool:
    """Whether a migration changes a table by copying it (SQLite's ALTER TABLE cannot change most of a table)."""
    return dialect.name == "sqlite"


# -- the event batch and its callers (nurture.application.record_events, nurture.intake.context) ---------------------

_RETRYABLE_SQLSTATES = {"40P01", "40001"}  # deadlock detected, serialization failure (PostgreSQL)


def is_retryable(exc: DBAPIError) -> bool:
    """Whether a transaction that failed with ``exc`` may succeed when run again from the start: PostgreSQL broke a
    deadlock or a serialization conflict by failing it."""
    return getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


def single_writer(bind: Engine | Connection | Dialect | str) -> bool:
    """Whether the database runs one writing transaction at a time (SQLite: ``BEGIN IMMEDIATE`` takes its only write
    lock), so what a writer read at its start stays true until it commits, and a process's writers may as well take
    turns in one thread."""
    if isinstance(bind, str):
        return bind == "sqlite"
    dialect = bind if isinstance(bind, Dialect) else bind.dialect
    return dialect.name == "sqlite"


def sends_arrays(bind: Connection | Dialect) -> bool:
    """Whether the import's bulk statements send a batch's lists as arrays, in one statement of one SQL text
    (PostgreSQL: :mod:`nurture.storage.lead_bulk_pg`), rather than as an executemany of one row each (SQLite, whose
    executemany runs in the process at the cost of the rows' own writes)."""
    dialect = bind if isinstance(bind, Dialect) else bind.dialect
    return dialect.name == "postgresql"


def sums_history_in_sql(dialect: str) -> bool:
    """Whether the event batch's generic statements sum a lead's scored history in the database (PostgreSQL: its
    ``power`` and ``extract``); elsewhere they sum the rows in Python (SQLite's own writer sums in its SQL)."""
    return dialect == "postgresql"


@lru_cache(maxsize=8)
def bulk_writer(dialect: Dialect) -> Any:
    """The event batch's bulk statements for this dialect (:mod:`nurture.storage.event_bulk`), built once."""
    from nurture.storage.event_bulk import EventBulk
    from nurture.storage.event_bulk_pg import PostgresEventBulk
    from nurture.storage.event_bulk_sqlite import SqliteEventBulk

    if dialect.name == "sqlite":
        return SqliteEventBulk(dialect)
    return PostgresEventBulk() if dialect.name == "postgresql" else EventBulk(dialect.name)


def missing_sqlite_file(url: str) -> bool:
    """Whether ``url`` names a SQLite file that does not exist (opening it would create an empty one): commands that
    only read what is recorded, such as ``nurture simulate``, leave it alone."""
    from pathlib import Path

    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return False
    return not parsed.database or parsed.database == ":memory:" or not Path(parsed.database).exists()


def utc_day(column: Any, dialect: Dialect) -> Any:
    """The UTC day of a timestamp column as ``YYYY-MM-DD`` text, for grouping by day: SQLite stores UTC text whose
    first ten characters are the day; PostgreSQL formats the instant in UTC."""
    if dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.substr(column, 1, 10)


# -- the report's daily rollups: triggers keep them (migration 0006_rollup), storage/rollups.py rebuilds them ---------

def utc_day_sql(column: str, dialect: Dialect) -> str:
    """SQL text for the UTC day of a timestamp column (or ``NEW.column`` in a trigger), as a date: SQLite's stored UTC
    text begins with it; PostgreSQL converts the instant."""
    if dialect.name == "postgresql":
        return f"CAST(({column} AT TIME ZONE 'UTC') AS date)"
    return f"substr({column}, 1, 10)"


def millis_between_sql(start: str, end: str, dialect: Dialect) -> str:
    """SQL text for the whole milliseconds from one timestamp to another (NULL when either is)."""
    if dialect.name == "postgresql":
        return f"CAST(round(EXTRACT(EPOCH FROM ({end} - {start})) * 1000) AS bigint)"
    return f"CAST(round((julianday({end}) - julianday({start})) * 86400000) AS INTEGER)"


def text_before_sql(value: str, separator: str, dialect: Dialect) -> str:
    """SQL text for ``value`` up to the first ``separator`` (a literal without quotes), or all of it without one."""
    if dialect.name == "postgresql":
        return f"split_part({value}, '{separator}', 1)"
    return (f"CASE WHEN instr({value}, '{separator}') > 0 THEN substr({value}, 1, instr({value}, '{separator}') - 1) "
            f"ELSE {value} END")


def joined_sql(column: str, from_where: str, dialect: Dialect) -> str:
    """SQL text for a scalar subquery: the distinct values of ``column`` in ``FROM ... WHERE ...``, sorted and joined
    with commas (NULL when there is none)."""
    if dialect.name == "postgresql":
        return f"(SELECT string_agg(DISTINCT {column}, ',' ORDER BY {column}) {from_where})"
    return f"(SELECT group_concat(v, ',') FROM (SELECT DISTINCT {column} AS v {from_where} ORDER BY v))"


def row_trigger(dialect: Dialect, name: str, table: str, event: str, when: str, statements: list[str]) -> list[str]:
    """The DDL of an ``AFTER event ON table FOR EACH ROW WHEN (when)`` trigger running ``statements`` (SQL both
    databases accept, reading ``NEW``/``OLD``): SQLite's trigger body, or a PL/pgSQL function and its trigger."""
    if dialect.name == "postgresql":
        body = "".join(f"{statement};\n" for statement in statements)
        return [f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n{body}RETURN NULL;\nEND\n$$",
                f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW WHEN ({when}) EXECUTE FUNCTION {name}()"]
    body = "".join(f"{statement};\n" for statement in statements)
    return [f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW WHEN {when}\nBEGIN\n{body}END"]


def sums_in_statement_triggers(dialect: Dialect) -> bool:
    """Whether a trigger can run once per statement and read the rows the statement wrote (PostgreSQL's transition
    tables), so a rollup adds a statement's rows grouped, one upsert per key, rather than one per row."""
    return dialect.name == "postgresql"


def statement_trigger(name: str, table: str, event: str, statements: list[str], new_rows: str = "new_rows") -> list[str]:
    """PostgreSQL DDL of an ``AFTER event ON table FOR EACH STATEMENT`` trigger running ``statements``, which read the
    statement's rows as ``new_rows`` (and ``old_rows`` for an UPDATE); for :func:`sums_in_statement_triggers`."""
    body = "".join(f"{statement};\n" for statement in statements)
    tables = f"OLD TABLE AS old_rows NEW TABLE AS {new_rows}" if event == "UPDATE" else f"NEW TABLE AS {new_rows}"
    return [f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n{body}RETURN NULL;\nEND\n$$",
            f"CREATE TRIGGER {name} AFTER {event} ON {table} REFERENCING {tables} FOR EACH STATEMENT "
            f"EXECUTE FUNCTION {name}()"]


def insert_trigger(dialect: Dialect, name: str, table: str, row_statements: list[str],
                   set_statements: list[str]) -> list[str]:
    """The DDL of an ``AFTER INSERT ON table`` trigger that counts the inserted rows. PostgreSQL runs it once per
    statement, ``set_statements`` reading the statement's inserted rows as the table ``inserted``: a row trigger there
    updates one rollup row once per inserted row, and each update of a row in one transaction adds a version that
    the next one walks past (a batch of n rows costs n^2/2 visits: 1.5 s of the server's CPU for 5,000 leads).
    SQLite updates in place: a row trigger running ``row_statements`` (reading ``NEW``)."""
    if sums_in_statement_triggers(dialect):
        return statement_trigger(name, table, "INSERT", set_statements, new_rows="inserted")
    return row_trigger(dialect, name, table, "INSERT", "1 = 1", row_statements)


def drop_row_trigger(dialect: Dialect, name: str, table: str) -> list[str]:
    """The DDL that removes a trigger made by :func:`row_trigger` or :func:`insert_trigger`."""
    if dialect.name == "postgresql":
        return [f"DROP TRIGGER IF EXISTS {name} ON {table}", f"DROP FUNCTION IF EXISTS {name}()"]
    return [f"DROP TRIGGER IF EXISTS {name}"]


@contextmanager
def row_triggers_set_aside(connection: Connection, names: Collection[str]) -> Iterator[frozenset[str]]:
    """SQLite: the row triggers of ``names`` that the database holds are dropped for the block, inside the caller's
    transaction, and created again after it from the very text the database held; yields their names, for the caller
    to count at once what they would have counted row by row. The transaction holds the write lock (``BEGIN
    IMMEDIATE``), so no other connection writes while they are away; readers see their snapshot's schema; a rollback
    puts them back as well. PostgreSQL: nothing is set aside (yields an empty set): its insert triggers count a
    statement's rows at once (:func:`sums_in_statement_triggers`)."""
    if sums_in_statement_triggers(connection.dialect) or not names:
        yield frozenset()
        return
    marks = ", ".join("?" * len(names))
    kept = connection.exec_driver_sql(
        f"SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name IN ({marks}) ORDER BY name",
        tuple(names)).all()
    for name, _ in kept:
        connection.exec_driver_sql(f'DROP TRIGGER "{name}"')

    def put_back() -> None:
        for _, sql in kept:
            connection.exec_driver_sql(sql)

    try:
        yield frozenset(name for name, _ in kept)
    except BaseException:
        with suppress(Exception):  # the transaction rolls back anyway, which puts them back too
            put_back()
        raise
    put_back()


def trigger_names(connection: Connection) -> set[str]:
    """The names of the triggers the database holds (to check that a migration left them in place)."""
    if connection.dialect.name == "postgresql":
        query = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
    else:
        query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
    return {row[0] for row in connection.exec_driver_sql(query)}


def utc_date(column: Any, dialect: Dialect) -> Any:
    """The UTC day of a timestamp column as a date (what the rollups' ``day`` holds): SQLite's is its text's first ten
    characters, which its date columns store."""
    if dialect.name == "postgresql":
        return func.cast(func.timezone("UTC", column), Date)
    return func.substr(column, 1, 10)


HELD_OUT_INDEX: dict[str, Any] = {"sqlite_where": text("held_out = 1"), "postgresql_where": text("held_out = true")}
"""The condition of the partial index of held-out enrollments, written as each database writes ``held_out == true()``
(SQLite uses a partial index only for a query that repeats its condition term for term)."""


# -- entry filters in SQL and planner statistics (nurture.storage.entry_sql, nurture.application.enroll) -------------


def ascii_lower(value: Any, dialect: Dialect) -> Any:
    """SQL: ``value`` with the ASCII letters lower-cased and nothing else changed, whatever the database's locale
    (SQLite's ``lower`` is ASCII-only; PostgreSQL's follows the collation, so it is asked in the "C" one)."""
    if dialect.name == "postgresql":
        return func.lower(value.collate("C"))
    return func.lower(value)


def unusual_text(value: Any, dialect: Dialect) -> Any:
    """SQL: ``value`` holds a character outside printable ASCII, or a backslash (a JSON escape): text whose case
    folding or JSON decoding SQL cannot mirror exactly, left for Python to judge."""
    if dialect.name == "postgresql":
        return or_(value.op("~")(literal("[^ -~]")), func.strpos(value, "\\") > 0)
    return or_(value.op("GLOB")(literal("*[^ -~]*")), func.instr(value, "\\") > 0)


def contains_text(haystack: Any, needle: str, dialect: Dialect) -> Any:
    """SQL: ``needle`` occurs in ``haystack`` (exactly, case-sensitive)."""
    position = func.strpos if dialect.name == "postgresql" else func.instr
    return position(haystack, literal(needle)) > 0


def refresh_statistics(connection: Connection, tables: list[str]) -> None:
    """Refresh the planner's statistics of these tables after a bulk write (PostgreSQL ``ANALYZE``), so that it
    plans with the rows as they now are: without statistics it guesses that every lead has 0.5% of the enrollment
    table. SQLite needs nothing: without ``sqlite_stat1`` its planner takes every index to be selective, which is
    what nurture's look-ups by lead are."""
    if connection.dialect.name == "postgresql" and tables:
        connection.execute(text("ANALYZE " + ", ".join(f'"{name}"' for name in tables)))


def json_text(column: Any, key: str, dialect: Dialect) -> Any:
    """SQL: the top-level ``key`` of a JSON column as SQL text or number (NULL when absent or JSON null), to be read
    back and judged in Python (SQLite ``json_extract``, PostgreSQL ``->>``)."""
    if dialect.name == "postgresql":
        return column.op("->>", return_type=Text())(literal(key))
    return func.json_extract(column, literal('$."' + key.replace('"', '""') + '"'))


def fillfactor_sql(dialect: Dialect, table: str, percent: int | None) -> list[str]:
    """The statements that keep ``100 - percent`` % of each page of ``table`` that PostgreSQL fills from now on free
    for the new versions of its rows (its ``fillfactor``; None: back to full pages). Nothing on SQLite, which has no
    such setting (it rewrites a row in place)."""
    if dialect.name != "postgresql":
        return []
    if percent is None:
        return [f'ALTER TABLE "{table}" RESET (fillfactor)']
    return [f'ALTER TABLE "{table}" SET (fillfactor = {int(percent)})']
