"""Schema migrations, driven from code: users run ``nurture db upgrade``, never ``alembic`` with an ini file.

The revisions live in ``nurture/migrations/versions``. Every process that uses the database first calls
:func:`ensure_current` (or :func:`open_database`), so old code never writes into a newer schema or the reverse.
That check reads the revision files' ``revision``/``down_revision`` lines and the ``alembic_version`` row itself;
Alembic is imported only to migrate, or to explain a database that is not at the head.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Engine

from nurture.errors import SchemaOutOfDate
from nurture.storage.database import make_engine
from nurture.storage.dialect import lock_for_migration

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


@dataclass(frozen=True)
class UpgradeResult:
    """What :func:`upgrade` did: the revision before (None for an empty database) and after."""

    before: str | None
    after: str | None
    applied: tuple[str, ...]  # "0002: add foo" for every revision applied, oldest first

    @property
    def changed(self) -> bool:
        """True when at least one revision was applied."""
        return bool(self.applied)


def alembic_config() -> Config:
    """An Alembic configuration pointing at nurture's migrations (no ini file involved)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


@lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


@lru_cache(maxsize=4)
def _head_of_files(migrations: Path) -> str | None:
    """The head revision read from the revision files' ``revision = ...`` and ``down_revision = ...`` assignments
    (without importing them or Alembic); None when that is not one plain chain with one head (Alembic decides then)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted((migrations / "versions").glob("*.py")):
        values: dict[str, object] = {}
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                    and node.targets[0].id in ("revision", "down_revision") and isinstance(node.value, ast.Constant):
                values[node.targets[0].id] = node.value.value
        revision, parent = values.get("revision"), values.get("down_revision", "")
        if not isinstance(revision, str) or not (parent is None or isinstance(parent, str)):
            return None  # not a file we can read this way (a merge point lists its parents): ask Alembic
        revisions.add(revision)
        if parent is not None:
            parents.add(parent)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None


def _stored_revisions(engine: Engine) -> list[str] | None:
    """The revisions recorded in the database's ``alembic_version`` table; None when it cannot be read (no table)."""
    try:
        with engine.connect() as connection:
            return [row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))]
    except Exception:  # noqa: BLE001 - no such table (an empty database), or any other reason: Alembic answers then
        return None


def head_revision() -> str:
    """The newest revision this version of nurture knows."""
    head = _scripts().get_current_head()
    assert head is not None, "nurture ships at least one migration"
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when nurture's schema was never created there."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine_or_url: Engine | str, revision: str = "head") -> UpgradeResult:
    """Bring the schema up to ``revision`` in one transaction (safe to run from several processes at once)."""
    from alembic import command

    engine = make_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    try:
        before = current_revision(engine)
        config = alembic_config()
        with engine.begin() as connection:
            lock_for_migration(connection)
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
        after = current_revision(engine)
    finally:
        if isinstance(engine_or_url, str):
            engine.dispose()
    return UpgradeResult(before=before, after=after, applied=_applied(before, after))


def _applied(before: str | None, after: str | None) -> tuple[str, ...]:
    if before == after or after is None:
        return ()
    scripts = list(_scripts().iterate_revisions(after, before or "base"))
    return tuple(f"{script.revision}: {script.doc}" for script in reversed(scripts))


def ensure_current(engine: Engine) -> None:
    """Raise :class:`SchemaOutOfDate` unless the database is exactly at this nurture's head revision."""
    head_of_files = _head_of_files(MIGRATIONS_DIR)
    if head_of_files is not None and _stored_revisions(engine) == [head_of_files]:
        return  # the common case, answered without importing Alembic
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    if current is None:
        raise SchemaOutOfDate(
            f"the database has no nurture schema yet, this nurture needs {head}: run `nurture db upgrade`"
        )
    known = {script.revision for script in _scripts().walk_revisions()}
    if current not in known:
        raise SchemaOutOfDate(
            f"database schema is at {current}, which this nurture ({head}) does not know: "
            "it was upgraded by a newer nurture; upgrade nurture itself"
        )
    raise SchemaOutOfDate(f"database schema is at {current}, this nurture needs {head}: run `nurture db upgrade`")


def open_database(url: str) -> Engine:
    """An engine for ``url`` whose schema is known to be current (else :class:`SchemaOutOfDate`)."""
    engine = make_engine(url)
    try:
        ensure_current(engine)
    except Exception:
        engine.dispose()
        raise
    return engine
