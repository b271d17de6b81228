"""Definition versions on real SQLite and PostgreSQL: the migration keeps the fingerprints already recorded, putting a
new version in force moves the leads of removed steps as the plan said (the plan itself writes nothing), and the
history counts what ran under each version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from db_fixtures import db_url, migrated_url, postgres_available, postgres_template  # noqa: F401

from nurture.application.apply_versions import apply_versions
from nurture.application.history import campaign_history
from nurture.application.plan import plan
from nurture.definitions.loader import Catalog, load_catalog
from nurture.definitions.sources import catalog_sources
from nurture.storage.database import make_engine, transaction
from nurture.storage.migrate import upgrade
from nurture.storage.models import DefinitionVersion, Enrollment, Lead

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
E, DV, L = Enrollment.__table__, DefinitionVersion.__table__, Lead.__table__

V1 = """\
id: trial
name: Trial
steps:
  - id: welcome
    email: {template: t.html.j2, subject: Welcome}
  - id: w
    wait_for: {event: email_click, step: welcome, timeout: 2d}
    on_event: clicked
    on_timeout: cold
  - id: clicked
    email: {template: t.html.j2, subject: You clicked}
    goto: end
  - id: cold
    wait: 1d
    email: {template: t.html.j2, subject: Still there}
"""
WITHOUT_W = V1.replace("""  - id: w
    wait_for: {event: email_click, step: welcome, timeout: 2d}
    on_event: clicked
    on_timeout: cold
""", "").replace("    email: {template: t.html.j2, subject: Welcome}\n",
                 "    email: {template: t.html.j2, subject: Welcome}\n    goto: cold\n")
REPLACED = WITHOUT_W.replace("  - id: cold\n", "  - id: cold\n    replaces: [w]\n")


def catalog_of(folder: Path, text: str, policy: str | None = None) -> Catalog:
    (folder / "trial.yaml").write_text(text, encoding="utf-8")
    if policy is not None:
        (folder / "policy.yaml").write_text(policy, encoding="utf-8")
    return load_catalog(folder)


def seed(engine: sa.Engine, version: str, at_step: dict[str, int]) -> None:
    """Active enrollments of new leads in 'trial', ``count`` waiting at each step, under ``version``."""
    with transaction(engine) as conn:
        number = 0
        for step, count in at_step.items():
            for _ in range(count):
                number += 1
                lead_id = conn.execute(L.insert().values(email=f"l{number}-{step}@example.com", stage="mql", tags=[],
                                                         fields={}).returning(L.c.id)).scalar_one()
                conn.execute(E.insert().values(lead_id=lead_id, campaign_id="trial", status="active", step_id=step,
                                               arrived_at=T0, next_due_at=T0 + timedelta(days=1), state={},
                                               campaign_version=version, enrolled_at=T0))


def enrollment_rows(engine: sa.Engine) -> list[tuple]:
    with transaction(engine, read_only=True) as conn:
        return [tuple(r) for r in conn.execute(sa.select(E.c.step_id, E.c.status, E.c.end_reason, E.c.campaign_version,
                                                         E.c.next_due_at).order_by(E.c.id))]


def test_the_migration_keeps_each_recorded_fingerprint_as_the_version_in_force(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine, "0002")
        with engine.begin() as connection:
            connection.exec_driver_sql("INSERT INTO campaign_version (campaign_id, fingerprint, loaded_at) "
                                       "VALUES ('trial', 'abc123', '2026-01-01 00:00:00+00')")
        upgrade(engine)
        with transaction(engine, read_only=True) as conn:
            rows = [tuple(r) for r in conn.execute(sa.select(DV.c.kind, DV.c.name, DV.c.content_hash, DV.c.fingerprint,
                                                             DV.c.text, DV.c.ended_at))]
        assert rows == [("campaign", "trial", "abc123", "abc123", None, None)]
    finally:
        engine.dispose()


def test_applying_moves_the_leads_of_a_removed_step_as_the_plan_says_and_the_plan_writes_nothing(
        migrated_url: str, tmp_path: Path) -> None:
    engine = make_engine(migrated_url)
    try:
        v1 = catalog_of(tmp_path, V1, policy="catch_up: {max_late: 3d}\n")
        first = apply_versions(engine, v1, catalog_sources(v1, tmp_path)[0], T0)
        assert [(p.campaign, p.status) for p in first.changed()] == [("trial", "new")]
        assert [(f.kind, f.status) for f in first.files] == [("policy", "new")]
        seed(engine, v1.version("trial"), {"welcome": 1, "w": 3, "cold": 2})

        v2 = catalog_of(tmp_path, WITHOUT_W, policy="catch_up: {max_late: 2d}\n")
        sources = catalog_sources(v2, tmp_path)[0]
        before = enrollment_rows(engine)
        report = plan(engine, v2, sources, T0 + timedelta(hours=1))
        assert enrollment_rows(engine) == before, "plan only reads"
        assert report.live
        effects = {(e.kind, e.step): (e.leads, e.detail.get("end_reason")) for e in report.campaigns[0].effects}
        assert effects[("removed_step", "w")] == (3, "step_removed:w")
        assert effects[("step", "welcome")] == (1, None)  # its new goto
        assert [(f.kind, f.status, f.added_lines, f.removed_lines) for f in report.files] == [("policy", "changed", 1, 1)]

        now = T0 + timedelta(hours=2)
        applied = apply_versions(engine, v2, sources, now)
        assert applied.to_json()["campaigns"] == report.to_json()["campaigns"]
        rows = enrollment_rows(engine)
        assert sorted((step, status, reason) for step, status, reason, _v, _due in rows) == sorted(
            [("welcome", "active", None), ("cold", "active", None), ("cold", "active", None)]
            + [("w", "exited", "step_removed:w")] * 3)
        assert {version for _s, status, _r, version, _d in rows if status == "active"} == {v2.version("trial")}
        assert {due for _s, status, _r, _v, due in rows if status == "active"} == {now}, "re-planned"
        assert not plan(engine, v2, sources, now).live, "in force now: nothing left to change"
    finally:
        engine.dispose()


def test_replaces_sends_the_leads_on_and_the_history_counts_each_version(migrated_url: str, tmp_path: Path) -> None:
    engine = make_engine(migrated_url)
    try:
        v1 = catalog_of(tmp_path, V1)
        apply_versions(engine, v1, catalog_sources(v1, tmp_path)[0], T0)
        seed(engine, v1.version("trial"), {"w": 2})
        v2 = catalog_of(tmp_path, REPLACED)
        report = apply_versions(engine, v2, catalog_sources(v2, tmp_path)[0], T0 + timedelta(days=1))
        assert [(e.kind, e.step, e.leads, e.detail.get("to")) for e in report.campaigns[0].effects
                if e.kind == "removed_step"] == [("removed_step", "w", 2, "cold")]
        assert [(s, status) for s, status, _r, _v, _d in enrollment_rows(engine)] == [("cold", "active")] * 2

        runs = campaign_history(engine, "trial")
        assert [(r.content_hash, r.entered, r.active, r.ended_at is None) for r in runs] == [
            (v1.version("trial"), 2, 0, False), (v2.version("trial"), 0, 2, True)]
        assert runs[0].ended_at == runs[1].loaded_at == T0 + timedelta(days=1)
        assert runs[1].summary is not None and runs[1].summary["effects"][0]["to"] == "cold"
    finally:
        engine.dispose()


def test_a_version_recorded_without_its_text_keeps_only_what_replaces_says(migrated_url: str, tmp_path: Path) -> None:
    engine = make_engine(migrated_url)
    try:
        with transaction(engine) as conn:  # as the migration leaves a database of before versions were kept
            conn.execute(DV.insert().values(kind="campaign", name="trial", content_hash="legacy", fingerprint="legacy",
                                            loaded_at=T0))
        seed(engine, "legacy", {"w": 2, "welcome": 1})
        v2 = catalog_of(tmp_path, WITHOUT_W)
        report = apply_versions(engine, v2, catalog_sources(v2, tmp_path)[0], T0 + timedelta(days=1))
        assert report.campaigns[0].status == "changed" and report.campaigns[0].diff is None
        assert [(e.kind, e.step, e.leads, e.detail.get("end_reason")) for e in report.campaigns[0].effects] == [
            ("removed_step", "w", 2, "step_removed:w"),
            ("step", None, 3, None),  # re-planned with the new version, whose changes are not known
        ]
        assert sorted((s, status) for s, status, _r, _v, _d in enrollment_rows(engine)) == [
            ("w", "exited"), ("w", "exited"), ("welcome", "active")]
    finally:
        engine.dispose()


def test_an_unchanged_campaign_still_moves_the_leads_an_older_version_left_at_a_removed_step(
        migrated_url: str, tmp_path: Path) -> None:
    """The version on disk is the one in force, so a worker start reads only the enrollments not at one of its steps
    under it (storage.live_enrollments.waiting_elsewhere): the ones a server with an older catalog enrolled, or a
    worker with it moved on, at a step the version in force lacks, are moved all the same; the others are not
    counted or touched."""
    engine = make_engine(migrated_url)
    try:
        v1 = catalog_of(tmp_path, V1)
        v2 = catalog_of(tmp_path, WITHOUT_W)
        apply_versions(engine, v2, catalog_sources(v2, tmp_path)[0], T0)
        # the last one at 'w': moved on to it by a worker that still had the older text
        seed(engine, v2.version("trial"), {"welcome": 2, "cold": 1, "w": 1})
        seed(engine, v1.version("trial"), {"w": 2, "welcome": 1})  # enrolled meanwhile under the older text
        with transaction(engine) as conn:
            first_w = conn.execute(sa.select(sa.func.min(E.c.id)).where(
                E.c.step_id == "w", E.c.campaign_version == v1.version("trial"))).scalar_one()
            conn.execute(sa.update(E).where(E.c.id == first_w).values(campaign_version=None))  # from before versions
        sources = catalog_sources(v2, tmp_path)[0]
        report = plan(engine, v2, sources, T0 + timedelta(hours=1))
        (trial,) = report.campaigns
        assert trial.status == "unchanged"
        assert sorted(((m.version or ""), m.relocation.removed, m.relocation.target, m.relocation.end_reason, m.leads)
                      for m in trial.moves) == sorted([("", "w", None, "step_removed:w", 1),
                                                       (v1.version("trial"), "w", None, "step_removed:w", 1),
                                                       (v2.version("trial"), "w", None, "step_removed:w", 1)])
        assert [(p.campaign, p.status) for p in report.changed()] == [("trial", "unchanged")]
        apply_versions(engine, v2, sources, T0 + timedelta(hours=2))
        rows = [(step, status, reason, version) for step, status, reason, version, _due in enrollment_rows(engine)]
        assert rows == [("welcome", "active", None, v2.version("trial"))] * 2 + [
            ("cold", "active", None, v2.version("trial")), ("w", "exited", "step_removed:w", v2.version("trial")),
            ("w", "exited", "step_removed:w", None), ("w", "exited", "step_removed:w", v1.version("trial")),
            ("welcome", "active", None, v2.version("trial"))]
    finally:
        engine.dispose()
