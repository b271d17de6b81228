"""Engines, transactions and the few places where SQLite and PostgreSQL differ.

Everything dialect-specific lives here, so the rest of storage writes one query for both back-ends:

- SQLite runs in WAL mode and takes the write lock when a transaction begins (``BEGIN IMMEDIATE``), so a
  transaction that reads and then writes never has to upgrade a read lock (which fails at once with
  ``database is locked`` instead of waiting for the busy timeout). Writers therefore queue up politely.
- PostgreSQL claims rows with ``FOR UPDATE SKIP LOCKED`` so several workers can share the tables.
- SQLite has no time zones: :class:`UTCDateTime` stores UTC and hands back aware UTC datetimes on both.
- Upserts use each dialect's ``INSERT ... ON CONFLICT``; bulk writes can skip per-row parameter processing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from operator import itemgetter
from typing import Any

from sqlalchemy import JSON, DateTime, Table, TypeDecorator, create_engine, event, literal, literal_column, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect, Engine, make_url
from sqlalchemy.sql import ColumnElement, Insert, Select
from sqlalchemy.types import TypeEngine
from sqlmodel import Session

from nurture.errors import ConfigError

SQLITE_BUSY = 5  # the result code of a lock that another connection holds

DEFAULT_BUSY_TIMEOUT = 30.0
"""Seconds a SQLite writer waits for another writer's lock before giving up."""

log = logging.getLogger(__name__)

_READ_ONLY = "nurture_read_only"
_NO_WAIT = "nurture_no_wait"
_MIGRATION_LOCK_ID = 0x6E75727475726500  # "nurture\0": one advisory lock for schema upgrades on PostgreSQL


class WriteLockBusy(Exception):
    """A transaction of :func:`no_wait` found SQLite's write lock held by another connection: nothing was done."""


def utcnow() -> datetime:
    """The current time, aware, in UTC (for defaults of stored timestamps; the core gets its clock passed in)."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC that always reads back as an aware UTC datetime.

    Naive datetimes are refused: a missing time zone is a bug we want to hear about, not guess around.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: nurture stores aware datetimes only")
        value = value.astimezone(timezone.utc)
        # SQLite stores text; dropping the (always UTC) offset keeps the text sortable and comparable.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class SerializedJSON(TypeDecorator[str]):
    """A JSON column's value that the caller already serialized: bulk writes skip the per-row encoder."""

    impl = JSON
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> None:
        return None


def inline_constant(value: Any, type_: TypeEngine[Any], dialect: Dialect) -> ColumnElement[Any]:
    """``value`` written into the SQL text: in an executemany of many rows, binding a constant per row costs more
    than the row itself."""
    rendered = literal(value, type_).compile(dialect=dialect, compile_kwargs={"literal_binds": True})
    return literal_column(str(rendered), type_)


def normalize_url(url: str) -> str:
    """Rewrite ``postgres://`` and ``postgresql://`` to the psycopg 3 driver; leave other URLs alone."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT, echo: bool = False) -> Engine:
    """An engine for ``url`` (SQLite file or PostgreSQL), configured the way the rest of nurture expects.

    ``busy_timeout`` (seconds) is how long a SQLite writer waits for the lock; tests pass a short one.
    """
    try:
        parsed = make_url(normalize_url(url))
    except Exception as exc:  # sqlalchemy raises ArgumentError; any failure here is a configuration problem
        raise ConfigError(f"invalid database URL {url!r}: {exc}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        # hide_parameters: an error must not print the lead data it was writing into the log
        engine = create_engine(parsed, echo=echo, connect_args={"timeout": busy_timeout}, hide_parameters=True)
        _configure_sqlite(engine, busy_timeout)
        return engine
    if backend == "postgresql":
        return create_engine(parsed, echo=echo, pool_pre_ping=True, hide_parameters=True)
    raise ConfigError(f"unsupported database {backend!r} in {url!r}: use sqlite:///FILE or postgresql://...")


def _configure_sqlite(engine: Engine, busy_timeout: float) -> None:
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
        if options.get(_READ_ONLY):
            connection.exec_driver_sql("BEGIN")  # a WAL snapshot: never blocks, never blocks writers
        elif options.get(_NO_WAIT):
            driver = connection.connection.driver_connection
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


def ensure_pow(dbapi_connection: Any) -> None:
    """Give an SQLite connection ``pow()`` when its library was built without the math functions: the intake sums
    decayed points in SQL (:mod:`nurture.storage.intake`)."""
    try:
        dbapi_connection.execute("SELECT pow(0.5, 1.0)")
    except dbapi_connection.OperationalError:
        dbapi_connection.create_function("pow", 2, math.pow, deterministic=True)


def no_wait(bind: Engine | Connection) -> Any:
    """``bind`` (an engine, or a connection, which is changed) for transactions that take SQLite's write lock only if
    it is free at once, raising :class:`WriteLockBusy` instead of waiting for it (the caller can then wait elsewhere).
    Other databases: ``bind`` as it is."""
    return bind.execution_options(**{_NO_WAIT: True}) if bind.dialect.name == "sqlite" else bind


def _bind(engine: Engine, read_only: bool) -> Engine:
    return engine.execution_options(**{_READ_ONLY: True}) if read_only else engine


@contextmanager
def session(engine: Engine, *, read_only: bool = False) -> Iterator[Session]:
    """An ORM session in one transaction: committed when the block ends, rolled back if it raises.

    ``read_only=True`` only reads: on SQLite it runs on a snapshot without taking the write lock (writing in
    it anyway may fail with ``database is locked``). Objects stay usable after the commit.
    """
    with Session(_bind(engine, read_only), expire_on_commit=False) as orm_session:
        with orm_session.begin():
            yield orm_session


@contextmanager
def transaction(bind: Engine | Connection, *, read_only: bool = False) -> Iterator[Connection]:
    """A Core connection in one transaction: committed when the block ends, rolled back if it raises.

    Given a connection rather than an engine, the transaction runs on it (with its execution options), and it stays
    open afterwards: what a caller that records many transactions in a row can keep, instead of a pool checkout and
    check-in for each."""
    if isinstance(bind, Connection):
        if read_only:
            raise ValueError("read_only applies to an engine's transactions, not to a connection's")
        with bind.begin():
            yield bind
        return
    with _bind(bind, read_only).begin() as connection:
        yield connection


def for_update_skip_locked(statement: Select[Any], dialect: Dialect | str) -> Select[Any]:
    """``statement`` with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, unchanged on SQLite.

    On SQLite the claiming transaction already holds the database's only write lock (``BEGIN IMMEDIATE``),
    so concurrent claimers are serialized and cannot pick the same rows.
    """
    name = dialect if isinstance(dialect, str) else dialect.name
    if name == "postgresql":
        return statement.with_for_update(skip_locked=True)
    return statement


def upsert_insert(table: Table, dialect: Dialect | str) -> Insert:
    """An INSERT for ``table`` in the dialect's flavour, which offers ``on_conflict_do_update``/``_do_nothing``."""
    name = dialect if isinstance(dialect, str) else dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise ConfigError(f"unsupported database dialect {name!r}")


def executemany_prepared(connection: Connection, statement: Insert, rows: list[dict[str, Any]]) -> None:
    """Run ``statement`` for every row through the driver's executemany, without SQLAlchemy's per-row
    parameter processing (which costs more than SQLite's insert itself).

    The values must already be what the driver takes: str, int, float or None (JSON serialized, constants such
    as timestamps written into the statement with :func:`inline_constant`). Every row has the same keys.
    """
    if not rows:
        return
    compiled = statement.compile(dialect=connection.dialect, column_keys=list(rows[0]))
    if compiled.positional:
        order = compiled.positiontup or []
        if len(order) == 1:
            connection.exec_driver_sql(compiled.string, [(row[order[0]],) for row in rows])
        else:
            connection.exec_driver_sql(compiled.string, list(map(itemgetter(*order), rows)))
    else:
        connection.exec_driver_sql(compiled.string, rows)


def lock_for_migration(connection: Connection) -> None:
    """Serialize schema upgrades started at once by several processes (inside the upgrade's transaction).

    SQLite needs nothing: the upgrade's ``BEGIN IMMEDIATE`` already holds the only write lock.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_ID})


def display_url(engine_or_url: Engine | str) -> str:
    """The database URL with any password masked, for messages."""
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else make_url(normalize_url(engine_or_url))
    return url.render_as_string(hide_password=True)
