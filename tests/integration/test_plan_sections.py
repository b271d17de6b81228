"""The sections ``nurture plan`` adds, on real SQLite and PostgreSQL: the old side rebuilt from the texts stored with
the versions in force (campaigns, policy, scoring and sales rules), what a version recorded without its text does,
and that applying records the scoring and sales impact with the new rules version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from db_fixtures import migrated_url, postgres_available, postgres_template  # noqa: F401

from nurture.application.apply_versions import apply_versions
from nurture.application.plan import plan
from nurture.application.plan_sections import catalog_in_force, scoring_section
from nurture.definitions.durations import Duration
from nurture.definitions.loader import Catalog, load_catalog
from nurture.definitions.sources import catalog_sources
from nurture.storage.database import make_engine, transaction
from nurture.storage.models import DefinitionVersion

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
DV = DefinitionVersion.__table__
V1 = """\
id: trial
name: Trial
steps:
  - id: welcome
    email: {template: t.html.j2, subject: Welcome}
  - id: later
    wait: 2d
    email: {template: t.html.j2, subject: Later}
"""
SCORING = "behaviour:\n  events:\n    email_click: 10\nthresholds:\n  mql: 40\n"


def project(folder: Path, campaign: str, policy: str, scoring: str | None) -> Catalog:
    (folder / "trial.yaml").write_text(campaign, encoding="utf-8")
    (folder / "policy.yaml").write_text(policy, encoding="utf-8")
    if scoring is None:
        (folder / "scoring.yaml").unlink(missing_ok=True)
    else:
        (folder / "scoring.yaml").write_text(scoring, encoding="utf-8")
    return load_catalog(folder).raise_for_problems()


def test_the_old_side_is_rebuilt_from_the_texts_in_force(migrated_url: str, tmp_path: Path) -> None:
    engine = make_engine(migrated_url)
    try:
        v1 = project(tmp_path, V1, "catch_up: {max_late: 3d}\n", SCORING)
        apply_versions(engine, v1, catalog_sources(v1, tmp_path)[0], T0)
        with transaction(engine) as conn:  # a campaign of before texts were kept, no longer on disk
            conn.execute(DV.insert().values(kind="campaign", name="legacy", content_hash="legacy",
                                            fingerprint="legacy", loaded_at=T0))
        v2 = project(tmp_path, V1.replace("wait: 2d", "wait: 1d"), "catch_up: {max_late: 2d}\n", SCORING)
        old, not_rebuilt = catalog_in_force(engine, v2)
        assert sorted(old.campaigns) == ["trial"] and not_rebuilt == ["legacy"]
        assert old.campaigns["trial"].steps[1].wait == Duration(days=2)
        assert old.policy.catch_up.max_late == Duration(days=3)
        assert scoring_section(engine, catalog_sources(v2, tmp_path)[0], T0) is None, "scoring.yaml is unchanged"
    finally:
        engine.dispose()


def test_a_rules_edit_is_counted_and_recorded_with_the_new_version(migrated_url: str, tmp_path: Path) -> None:
    engine = make_engine(migrated_url)
    try:
        v1 = project(tmp_path, V1, "{}\n", SCORING)
        apply_versions(engine, v1, catalog_sources(v1, tmp_path)[0], T0)
        v2 = project(tmp_path, V1, "{}\n", SCORING.replace("10", "20"))
        sources = catalog_sources(v2, tmp_path)[0]
        section = scoring_section(engine, sources, T0)
        assert section is not None and section.impact is not None and section.impact.leads == 0
        assert not section.live, "no lead: nothing changes band"
        assert [(f.kind, f.old_version is not None, f.new_version is not None) for f in section.files] == [
            ("scoring", True, True), ("sales", False, False)]
        assert not plan(engine, v2, sources, T0).live

        apply_versions(engine, v2, sources, T0 + timedelta(hours=1))
        with transaction(engine, read_only=True) as conn:
            summary = conn.execute(sa.select(DV.c.summary).where(DV.c.kind == "scoring", DV.c.ended_at.is_(None))
                                   ).scalar_one()
        assert summary["status"] == "changed" and summary["impact"] == section.to_json()

        removed = project(tmp_path, V1, "{}\n", None)
        gone = scoring_section(engine, catalog_sources(removed, tmp_path)[0], T0)
        assert gone is not None and [(f.kind, f.new_version) for f in gone.files] == [("scoring", None), ("sales", None)]
    finally:
        engine.dispose()


def test_a_rules_version_recorded_without_its_text_cannot_be_counted_and_asks_for_a_review(
        migrated_url: str, tmp_path: Path) -> None:
    engine = make_engine(migrated_url)
    try:
        with transaction(engine) as conn:
            conn.execute(DV.insert().values(kind="scoring", name="scoring", content_hash="legacy", loaded_at=T0))
        v2 = project(tmp_path, V1, "{}\n", SCORING)
        report = plan(engine, v2, catalog_sources(v2, tmp_path)[0], T0)
        [section] = report.sections
        assert section.key == "scoring" and section.live and report.live
        assert section.to_json()["impact"] is None
        assert "recorded without its text" in section.lines()[-1]
    finally:
        engine.dispose()


def test_a_database_the_worker_never_ran_on_has_no_rules_baseline_and_no_section(migrated_url: str,
                                                                                 tmp_path: Path) -> None:
    engine = make_engine(migrated_url)
    try:
        v1 = project(tmp_path, V1, "{}\n", SCORING)
        sources = catalog_sources(v1, tmp_path)[0]
        assert scoring_section(engine, sources, T0) is None, "no version of anything recorded: nothing to compare"
        report = apply_versions(engine, v1, sources, T0)
        assert not any(section.key == "scoring" for section in report.sections)
        edited = project(tmp_path, V1, "{}\n", SCORING.replace("10", "20"))
        assert scoring_section(engine, catalog_sources(edited, tmp_path)[0], T0) is not None, "now there is one"
    finally:
        engine.dispose()
