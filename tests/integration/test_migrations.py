"""Migrations produce exactly the models' schema on both back-ends, and the schema check refuses a stale one."""

from __future__ import annotations

import io
import shutil
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from db_fixtures import db_url, pg_url, postgres_available  # noqa: F401

from nurture.errors import SchemaOutOfDate
from nurture.storage import migrate
from nurture.storage.database import make_engine
from nurture.storage.migrate import current_revision, ensure_current, head_revision, open_database, upgrade
from nurture.storage.tables import METADATA

EXTRA_REVISION = '''"""Add a note to leads."""
import sqlalchemy as sa
from alembic import op

revision = "0900"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("lead", sa.Column("note", sa.String(), nullable=True))


def downgrade() -> None:
    op.drop_column("lead", "note")
'''


def schema_differences(engine: sa.Engine) -> list:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, METADATA)


def test_migrations_create_exactly_the_models(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        assert schema_differences(engine) == []
        with engine.begin() as connection:  # and the comparison does notice a difference
            connection.exec_driver_sql("DROP INDEX ix_enrollment_status_next_due_at")
        assert [diff[0] for diff in schema_differences(engine)] == ["add_index"]
    finally:
        engine.dispose()


def test_upgrade_reports_what_it_did_and_is_idempotent(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) is None
        first = upgrade(engine)
        assert (first.before, first.after, first.changed) == (None, head_revision(), True)
        assert first.applied[0].startswith("0001: Initial schema")
        assert first.applied[-1].startswith(f"{head_revision()}: ")
        again = upgrade(engine)
        assert (again.before, again.after, again.applied) == (head_revision(), head_revision(), ())
    finally:
        engine.dispose()


def test_ensure_current_refuses_an_empty_database(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with pytest.raises(SchemaOutOfDate, match="run `nurture db upgrade`"):
            ensure_current(engine)
        with pytest.raises(SchemaOutOfDate):
            open_database(db_url)
        upgrade(engine)
        ensure_current(engine)
        open_database(db_url).dispose()
    finally:
        engine.dispose()


def test_ensure_current_refuses_a_schema_behind_or_ahead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    upgrade(engine)  # at the head of the shipped migrations
    shipped = head_revision()
    migrations = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    (migrations / "versions" / "0900_note.py").write_text(EXTRA_REVISION.format(head=shipped))
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", migrations)
    migrate._scripts.cache_clear()
    try:
        expected = rf"database schema is at {shipped}, this nurture needs 0900: run `nurture db upgrade`"
        with pytest.raises(SchemaOutOfDate, match=expected):
            ensure_current(engine)
        result = upgrade(engine)
        assert result.applied == ("0900: Add a note to leads.",)
        ensure_current(engine)
        with engine.begin() as connection:
            connection.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
        with pytest.raises(SchemaOutOfDate, match="newer nurture"):
            ensure_current(engine)
    finally:
        migrate._scripts.cache_clear()
        engine.dispose()


def test_upgrading_from_0001_keeps_leads_and_gives_them_no_score_state(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine, "0001")
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "INSERT INTO lead (email, tags, fields, stage, score, created_at, updated_at, stage_changed_at) "
                "VALUES ('old@example.com', '[]', '{}', 'mql', 42.0, '2026-01-01 00:00:00+00', "
                "'2026-01-01 00:00:00+00', '2026-01-01 00:00:00+00')")
        result = upgrade(engine)
        assert (result.before, result.after) == ("0001", head_revision())
        assert result.applied[0].startswith("0002: ")
        assert schema_differences(engine) == []
        with engine.connect() as connection:
            row = connection.exec_driver_sql("SELECT email, stage, score, score_state FROM lead").one()
        assert tuple(row) == ("old@example.com", "mql", 42.0, None)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_concurrent_upgrades_on_postgresql_do_not_collide(pg_url: str) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            upgrade(pg_url)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    engine = make_engine(pg_url)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_developer_alembic_ini_runs_online_and_offline(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'dev.db'}"
    config = Config(str(migrate.MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "head")
    engine = make_engine(url)
    assert current_revision(engine) == head_revision()
    engine.dispose()
    for dialect_url in (url, "postgresql://postgres@127.0.0.1/unused"):
        buffer = io.StringIO()
        offline = Config(str(migrate.MIGRATIONS_DIR / "alembic.ini"), output_buffer=buffer)
        offline.set_main_option("sqlalchemy.url", dialect_url)
        command.upgrade(offline, "head", sql=True)
        assert "CREATE TABLE enrollment" in buffer.getvalue()
        assert "WHERE status = 'active'" in buffer.getvalue()


def test_the_head_read_from_the_revision_files_is_alembics(tmp_path: Path) -> None:
    """ensure_current's fast answer reads the revision files itself; it must name the head Alembic names, and give
    way to Alembic where it cannot read a plain chain (a merge point lists two parents)."""
    assert migrate._head_of_files(migrate.MIGRATIONS_DIR) == migrate._scripts().get_current_head()
    migrations = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    (migrations / "versions" / "0901_merge.py").write_text(
        f'revision = "0901"\ndown_revision = ("{head_revision()}", "0900")\n')
    assert migrate._head_of_files(migrations) is None


@pytest.mark.postgres
def test_lead_pages_keep_room_for_updated_rows_on_postgresql(pg_url: str) -> None:
    engine = make_engine(pg_url)

    def options() -> list[str] | None:
        with engine.connect() as connection:
            return connection.exec_driver_sql("SELECT reloptions FROM pg_class WHERE relname = 'lead'").scalar_one()

    try:
        upgrade(engine, "0011_waiting_index")
        assert options() is None
        upgrade(engine)
        assert options() == ["fillfactor=80"]
        config = migrate.alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0011_waiting_index")
        assert options() is None
    finally:
        engine.dispose()
