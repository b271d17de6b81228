"""Database fixtures shared by test modules: real SQLite files and real PostgreSQL databases.

Import the fixtures a module needs (``from db_fixtures import engine, db_url``). Fixtures parametrized over
both back-ends mark the PostgreSQL case ``postgres``; it is skipped when the server is unreachable. Every
PostgreSQL test gets its own database, copied from a migrated template (a few milliseconds), dropped after; every
SQLite test its own file, copied from a file migrated once per test process (migrating takes a tenth of a second).
The names are random, so parallel test processes (pytest-xdist) never share a database or a file.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

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


_POSTGRES_TEMPLATES: dict[int, str] = {}  # per test session (id of its config): the migrated database's name


@pytest.fixture(scope="session")
def postgres_template(request: pytest.FixtureRequest, postgres_available: None) -> str:
    """The name of a database migrated to head, for fresh copies: one per test process, dropped when it ends (the
    modules import this fixture by name, and an imported session fixture runs once per module)."""
    key = id(request.config)
    if key not in _POSTGRES_TEMPLATES:
        url = create_postgres_database()
        request.config.add_cleanup(lambda: drop_postgres_database(url))
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        _POSTGRES_TEMPLATES[key] = make_url(url).database or ""
    return _POSTGRES_TEMPLATES[key]


_SQLITE_TEMPLATES: dict[Path, Path] = {}  # per test session (its base temporary folder): the migrated file


def sqlite_template(request: pytest.FixtureRequest) -> Path:
    """A SQLite file migrated to head once per test process, for fresh copies (:func:`migrated_sqlite_url`).

    A plain function over ``tmp_path_factory`` rather than a session fixture: the modules import the fixtures they
    use by name, and an imported session fixture would run once per module."""
    factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
    base = factory.getbasetemp()
    if base not in _SQLITE_TEMPLATES:
        path = factory.mktemp("sqlite-template") / "nurture.db"
        upgrade(f"sqlite:///{path}")
        _SQLITE_TEMPLATES[base] = path
    return _SQLITE_TEMPLATES[base]


def migrated_sqlite_url(request: pytest.FixtureRequest, path: Path) -> str:
    """Copy the migrated template to ``path`` (a file that must not exist yet) and return its URL."""
    if path.exists():
        raise FileExistsError(path)
    shutil.copyfile(sqlite_template(request), path)
    return f"sqlite:///{path}"


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
        yield migrated_sqlite_url(request, tmp_path / "nurture.db")
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
def sqlite_engine(request: pytest.FixtureRequest, tmp_path) -> Iterator[Engine]:
    """An engine on a fresh, migrated SQLite file."""
    engine = make_engine(migrated_sqlite_url(request, tmp_path / "nurture.db"))
    yield engine
    engine.dispose()
