"""Database fixtures shared by test modules: real SQLite files and real PostgreSQL databases.

Import the fixtures a module needs (``from db_fixtures import engine, db_url``). Fixtures parametrized over
both back-ends mark the PostgreSQL case ``postgres``; it is skipped when the server is unreachable. Every
PostgreSQL test gets its own database, copied from a migrated template (a few milliseconds), dropped after.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from nurture.storage.database import make_engine, normalize_url
from nurture.storage.migrate import upgrade

POSTGRES_URL = normalize_url(
    os.environ.get("NURTURE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
)
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _admin() -> Engine:
    return sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")


def create_postgres_database(template: str | None = None) -> str:
    """Create an empty (or template-copied) database ``nurture_t_<random>`` and return its URL."""
    name = f"nurture_t_{uuid.uuid4().hex[:12]}"
    admin = _admin()
    try:
        with admin.connect() as connection:
            suffix = f" TEMPLATE {template}" if template else ""
            connection.exec_driver_sql(f"CREATE DATABASE {name}{suffix}")
    finally:
        admin.dispose()
    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    """Drop the database of ``url``, disconnecting anyone still on it."""
    name = make_url(url).database
    admin = _admin()
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_available() -> None:
    """Skip the test when the PostgreSQL server cannot be reached."""
    admin = _admin()
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc.orig}")
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_template(postgres_available: None) -> Iterator[str]:
    """The name of a database migrated to head, for fresh copies."""
    url = create_postgres_database()
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield make_url(url).database or ""
    drop_postgres_database(url)


@pytest.fixture
def pg_url(postgres_available: None) -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database (no schema)."""
    url = create_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """URL of a fresh, empty database (no schema): a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'nurture.db'}"
        return
    request.getfixturevalue("postgres_available")
    url = create_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture(params=BACKENDS)
def migrated_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """URL of a fresh database already at the head revision, on each back-end."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'nurture.db'}"
        upgrade(url)
        yield url
        return
    template = request.getfixturevalue("postgres_template")
    url = create_postgres_database(template=template)
    yield url
    drop_postgres_database(url)


@pytest.fixture
def engine(migrated_url: str) -> Iterator[Engine]:
    """An engine on a fresh, migrated database, on each back-end."""
    engine = make_engine(migrated_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_engine(tmp_path) -> Iterator[Engine]:
    """An engine on a fresh, migrated SQLite file."""
    engine = make_engine(f"sqlite:///{tmp_path / 'nurture.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()
