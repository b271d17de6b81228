"""Engines, sessions and transactions, and the column types every table shares.

What differs between SQLite and PostgreSQL is decided in :mod:`nurture.storage.dialect`, not here. SQLite has no time
zones: :class:`UTCDateTime` stores UTC and hands back aware UTC datetimes on both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, DateTime, TypeDecorator, create_engine, literal, literal_column
from sqlalchemy.engine import Connection, Dialect, Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ColumnElement, Insert
from sqlalchemy.types import TypeEngine

from nurture.errors import ConfigError
from nurture.storage.codec import aware_utc, json_bytes_value, json_value
from nurture.storage.dialect import READ_ONLY, configure_postgresql, configure_sqlite, stored_utc

if TYPE_CHECKING:  # the ORM is imported by the code that opens a session: queries run without it
    from sqlmodel import Session

DEFAULT_BUSY_TIMEOUT = 30.0
"""Seconds a SQLite writer waits for another writer's lock before giving up."""

log = logging.getLogger(__name__)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC that always reads back as an aware UTC datetime.

    Naive datetimes are refused: a missing time zone is a bug we want to hear about, not guess around.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return stored_utc(aware_utc(value), dialect)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return utc_value(value)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Callable[[Any], datetime | None]:
        """:meth:`process_result_value` as one call per value, after the dialect's own processor if it has one
        (SQLite's, which parses the text): :class:`TypeDecorator`'s processor wraps it in a second call, and a
        dispatch batch reads a few timestamps per email."""
        parse = self.impl_instance.result_processor(dialect, coltype)
        if parse is None:
            return utc_value
        return lambda value: utc_value(parse(value))


def utc_value(value: datetime | None) -> datetime | None:
    """A timestamp read back as an aware UTC datetime (a naive one is UTC: SQLite stores no offset): what
    :class:`UTCDateTime` and the reads past SQLAlchemy's types (:mod:`nurture.storage.event_bulk_pg`) hand on. In a
    session in UTC (:func:`nurture.storage.dialect.configure_postgresql`) psycopg's value is passed on as it is."""
    if value is None:
        return None
    zone = value.tzinfo
    if zone is timezone.utc:
        return value
    if zone is None:
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
        # hide_parameters: an error must not print the lead data it was writing into the log; JSON columns are read
        # as json.loads reads them, by orjson where it can (codec.json_value: the CSV import reads back every lead)
        engine = create_engine(parsed, echo=echo, connect_args={"timeout": busy_timeout}, hide_parameters=True,
                               json_deserializer=json_value)
        configure_sqlite(engine, busy_timeout)
        return engine
    if backend == "postgresql":
        # JSON columns read by orjson where it reads them as json.loads does (codec.json_bytes_value), psycopg's
        # loader for every connection of the engine
        engine = create_engine(parsed, echo=echo, pool_pre_ping=True, hide_parameters=True,
                               json_deserializer=json_bytes_value)
        configure_postgresql(engine)
        return engine
    raise ConfigError(f"unsupported database {backend!r} in {url!r}: use sqlite:///FILE or postgresql://...")


def _bind(engine: Engine, read_only: bool) -> Engine:
    return engine.execution_options(**{READ_ONLY: True}) if read_only else engine


@contextmanager
def session(engine: Engine, *, read_only: bool = False) -> Iterator[Session]:
    """An ORM session in one transaction: committed when the block ends, rolled back if it raises.

    ``read_only=True`` only reads: on SQLite it runs on a snapshot without taking the write lock (writing in
    it anyway may fail with ``database is locked``). Objects stay usable after the commit.
    """
    from sqlmodel import Session

    with Session(_bind(engine, read_only), expire_on_commit=False) as orm_session, orm_session.begin():
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


def executemany_prepared(connection: Connection, statement: Insert, rows: list[dict[str, Any]]) -> int:
    """Run ``statement`` for every row through the driver's executemany, without SQLAlchemy's per-row
    parameter processing (which costs more than SQLite's insert itself); return the rows it wrote (the drivers'
    total over the rows: sqlite3's, and psycopg's since 3.1).

    The values must already be what the driver takes: str, int, float or None (JSON serialized, constants such
    as timestamps written into the statement with :func:`inline_constant`). Every row has the same keys.
    """
    if not rows:
        return 0
    compiled = statement.compile(dialect=connection.dialect, column_keys=list(rows[0]))
    if compiled.positional:
        order = compiled.positiontup or []
        if len(order) == 1:
            result = connection.exec_driver_sql(compiled.string, [(row[order[0]],) for row in rows])
        else:
            result = connection.exec_driver_sql(compiled.string, list(map(itemgetter(*order), rows)))
    else:
        result = connection.exec_driver_sql(compiled.string, rows)
    return max(result.rowcount, 0)


def driver(conn: Connection, sql: str, params: Any, *, many: bool = False, planned_each_time: bool = False) -> Any:
    """Run ``sql`` on the transaction's own driver connection (sqlite3's or psycopg's), past SQLAlchemy's execution
    machinery (which costs several times the database's work for bulk statements); a driver error is raised as
    SQLAlchemy would raise it.

    ``planned_each_time`` (psycopg only): never prepared, so PostgreSQL plans each execution for the tables as they
    are then. psycopg prepares a statement on the server after a few executions, and PostgreSQL may then keep one
    generic plan for the connection's life, made for the tables' sizes at that moment, until their statistics change
    (an ``ANALYZE``, which never comes where autovacuum is off). A statement over a list (``= ANY(array)``,
    ``FROM unnest(...)``) whose generic plan was made while its table was small then scans the whole table at every
    execution once the table has grown: measured on the intake's lead look-up and lead update, a sequential scan of
    every lead for each request. Planned each time it reads the index once the table is large, for the cost of
    planning it (tens of microseconds, once per list)."""
    driver: Any = conn.connection.driver_connection  # sqlite3's or psycopg's connection (untyped DB-API)
    try:
        if many:
            return driver.executemany(sql, params)
        return driver.execute(sql, params, prepare=False) if planned_each_time else driver.execute(sql, params)
    except Exception as exc:
        if isinstance(exc, conn.dialect.loaded_dbapi.Error):
            raise DBAPIError.instance(sql, params, exc, conn.dialect.loaded_dbapi.Error, hide_parameters=True,
                                      dialect=conn.dialect) from exc
        raise


def display_url(engine_or_url: Engine | str) -> str:
    """The database URL with any password masked, for messages."""
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else make_url(normalize_url(engine_or_url))
    return url.render_as_string(hide_password=True)
