"""Enrollment costs what changed: a lead changed after the last sweep is still enrolled, by each kind of change, on
SQLite and PostgreSQL, with a fixed clock.

Every test first runs a sweep (the "last sweep"), then changes a lead (or a campaign, or lets time pass) through the
path nurture takes for it, and checks two things: the lead is enrolled where it now belongs, and a sweep over every
lead (:func:`nurture.application.enroll.enroll_leads` without ids, what the worker ran every ten minutes before)
finds nothing more to enroll: the incremental path missed no eligibility.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from db_fixtures import engine, migrated_url, postgres_available, postgres_template  # noqa: F401
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine
from worker_world import T0, Project, dispatch_config, write_project

from nurture.application.enroll import enroll_leads
from nurture.application.enroll_sweep import MARGIN, sweep
from nurture.application.event_input import EventIn
from nurture.application.import_leads import import_leads_csv
from nurture.application.override_stage import override_stage
from nurture.application.plan import plan
from nurture.application.record_events import record_events
from nurture.application.rescore import rescore_all
from nurture.application.save_lead import save_lead
from nurture.clock import FixedClock
from nurture.definitions.loader import Catalog, load_catalog
from nurture.definitions.scoring import ScoringRules, load_scoring
from nurture.definitions.sources import catalog_sources
from nurture.storage.database import transaction
from nurture.storage.enrollments import exit_enrollments
from nurture.storage.models import Enrollment, Lead
from nurture.worker.runner import Worker

SCORING = """\
behaviour:
  events:
    content_download: 10
    webinar_attended: 15
    page_view: 1
fit: []
thresholds:
  mql: 40
"""

STEP = """
steps:
  - id: hello
    wait: 1d
    email: {template: welcome.html.j2, subject: "Hello"}
"""


def campaign(campaign_id: str, entry: str, extra: str = "") -> str:
    return f"id: {campaign_id}\nname: {campaign_id}\nentry: {entry}\n{extra}{STEP}"


@dataclass
class World:
    engine: Engine
    project: Project
    clock: FixedClock
    rules: ScoringRules
    catalog: Catalog

    def reload(self) -> Catalog:
        self.catalog = load_catalog(self.project.campaigns_dir, self.project.templates_dir).raise_for_problems()
        return self.catalog

    def sweep(self) -> int:
        return sweep(self.engine, self.catalog, self.clock()).enrolled

    def enrolled(self, email: str) -> list[tuple[str, str]]:
        with transaction(self.engine) as conn:
            rows = conn.execute(select(Enrollment.__table__.c.campaign_id, Enrollment.__table__.c.status)
                                .join(Lead.__table__).where(Lead.__table__.c.email == email)
                                .order_by(Enrollment.__table__.c.id))
            return [(row.campaign_id, row.status) for row in rows]

    def nothing_missed(self) -> None:
        assert enroll_leads(self.engine, self.catalog, self.clock()) == 0, "a sweep over every lead found more"

    def save(self, **data: object) -> None:
        save_lead(self.engine, self.catalog, self.rules, data, now=self.clock(), actor="api")

    def event(self, email: str, kind: str) -> None:
        record_events(self.engine, self.catalog, self.rules, [EventIn(email=email, type=kind)], now=self.clock(),
                      actor="api")

    def import_rows(self, tmp_path: Path, rows: list[dict[str, str]]) -> None:
        path = tmp_path / f"import-{self.clock().timestamp():.0f}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=sorted({key for row in rows for key in row}))
            writer.writeheader()
            writer.writerows(rows)
        report = import_leads_csv(self.engine, path, clock=self.clock, rules=self.rules, catalog=self.catalog)
        assert not report.rejected, report.rejected


@pytest.fixture
def make_world(engine: Engine, tmp_path: Path) -> Iterator[object]:
    def make(campaigns: dict[str, str]) -> World:
        project = write_project(tmp_path / "project", campaigns)
        (project.campaigns_dir / "scoring.yaml").write_text(SCORING, encoding="utf-8")
        rules, problems = load_scoring(project.campaigns_dir)
        assert not problems, problems
        world = World(engine, project, FixedClock(T0), rules, load_catalog(project.campaigns_dir,
                                                                           project.templates_dir))
        world.catalog.raise_for_problems()
        world.save(email="old@example.com", stage="mql")  # a lead from before, to sweep over
        assert world.sweep() >= 0  # the last sweep
        return world

    yield make


TAGGED = campaign("tagged", "{stage: [lead, mql], where: {tags: [vip]}}")


def test_an_imported_lead_new_or_updated_is_enrolled_by_the_import(make_world, tmp_path: Path) -> None:
    world = make_world({"tagged": TAGGED, "mql": campaign("mql", "{stage: mql}")})
    world.save(email="later@example.com", stage="lead")
    world.clock.advance(minutes=5)
    world.import_rows(tmp_path, [{"email": "new@example.com", "stage": "mql", "tags": "VIP "},
                                 {"email": "later@example.com", "stage": "", "tags": "vip"}])
    assert sorted(world.enrolled("new@example.com")) == [("mql", "active"), ("tagged", "active")]
    assert world.enrolled("later@example.com") == [("tagged", "active")]
    world.nothing_missed()


def test_a_lead_updated_through_the_api_is_enrolled_with_the_update(make_world) -> None:
    world = make_world({"tagged": TAGGED})
    world.save(email="ada@example.com", stage="lead")
    assert world.enrolled("ada@example.com") == []
    world.clock.advance(hours=1)
    world.save(email="ada@example.com", tags=["VIP"])
    assert world.enrolled("ada@example.com") == [("tagged", "active")]
    world.nothing_missed()


def test_a_stage_change_by_scoring_enrolls_the_lead(make_world) -> None:
    world = make_world({"mql": campaign("mql", "{stage: mql}")})
    world.save(email="ada@example.com", stage="lead")
    world.clock.advance(hours=1)
    for _ in range(4):
        world.event("ada@example.com", "content_download")  # 40 points: an MQL
    assert world.enrolled("ada@example.com") == [("mql", "active")]
    world.nothing_missed()


def test_a_custom_field_set_through_the_api_enrolls_the_lead(make_world) -> None:
    world = make_world({"pro": campaign("pro", "{stage: [lead, mql], where: {fields: {plan: pro}}}")})
    world.save(email="ada@example.com", stage="lead", fields={"plan": "free"})
    assert world.enrolled("ada@example.com") == []
    world.clock.advance(hours=1)
    world.save(email="ada@example.com", fields={"plan": "Pro"})
    assert world.enrolled("ada@example.com") == [("pro", "active")]
    world.nothing_missed()


def test_an_event_an_entry_filter_names_enrolls_the_lead(make_world) -> None:
    world = make_world({"attended": campaign("attended", "{stage: [lead, mql], where: {had_event: [webinar_attended]}}")})
    world.save(email="ada@example.com", stage="lead")
    world.event("ada@example.com", "page_view")
    assert world.enrolled("ada@example.com") == []
    world.clock.advance(hours=1)
    world.event("ada@example.com", "webinar_attended")
    assert world.enrolled("ada@example.com") == [("attended", "active")]
    world.nothing_missed()


def test_a_new_score_alone_enrolls_the_lead_when_a_filter_tests_the_score(make_world) -> None:
    world = make_world({"warm": campaign("warm", "{stage: [lead], where: {fields: {score: {gte: 10}}}}")})
    world.save(email="ada@example.com", stage="lead")
    world.clock.advance(hours=1)
    world.event("ada@example.com", "content_download")  # 10 points, still a lead
    assert world.enrolled("ada@example.com") == [("warm", "active")]
    world.nothing_missed()


def test_the_nightly_rescoring_enrolls_leads_whose_score_fell_into_a_filter(make_world) -> None:
    world = make_world({"cold": campaign("cold", "{stage: [lead], where: {fields: {score: {lte: 5}}}}")})
    (world.project.campaigns_dir / "scoring.yaml").write_text(SCORING.replace("events:", "half_life: 1d\n  events:"),
                                                             encoding="utf-8")
    world.rules, _ = load_scoring(world.project.campaigns_dir)
    world.event("ada@example.com", "content_download")  # a new lead, 10 points: not cold
    assert world.enrolled("ada@example.com") == []
    world.clock.advance(days=3)  # decayed to 1.25 points
    assert rescore_all(world.engine, world.rules, world.clock(), catalog=world.catalog) >= 1
    assert world.enrolled("ada@example.com") == [("cold", "active")]
    world.nothing_missed()


def test_a_tag_set_by_an_update_step_enrolls_the_lead_in_the_dispatchers_transaction(make_world, tmp_path: Path) -> None:
    handoff = ("id: handoff\nname: handoff\nentry: {stage: mql}\nsteps:\n"
               "  - id: tag\n    update: {add_tags: [vip]}\n")
    world = make_world({"handoff": handoff, "tagged": TAGGED})
    worker = Worker(world.project.settings(str(world.engine.url.render_as_string(hide_password=False)),
                                           f"file://{tmp_path / 'mail'}"),
                    clock=world.clock, catalog=world.catalog, config=dispatch_config())
    try:
        worker.dispatcher.drain(world.clock)
    finally:
        worker.dispatcher.close()
        worker.transport.close()
        worker.webhooks.close()
        worker.engine.dispose()
    assert world.enrolled("old@example.com") == [("handoff", "completed"), ("tagged", "active")]
    world.nothing_missed()


def test_a_campaign_edit_and_a_new_campaign_enroll_their_audience_at_the_next_sweep(make_world) -> None:
    world = make_world({"tagged": TAGGED})
    world.save(email="ada@example.com", stage="lead", tags=["partner"])
    world.project.write_campaign("tagged", TAGGED.replace("[vip]", "[vip, partner]"))
    world.project.write_campaign("mql", campaign("mql", "{stage: mql}"))
    world.reload()
    world.clock.advance(minutes=10)
    assert world.sweep() == 2
    assert world.enrolled("ada@example.com") == [("tagged", "active")]
    assert world.enrolled("old@example.com") == [("mql", "active")]
    world.nothing_missed()
    assert world.sweep() == 0  # recorded: the audiences are not enrolled again


def test_a_step_edit_does_not_enroll_the_audience_again(make_world) -> None:
    world = make_world({"mql": campaign("mql", "{stage: mql}")})
    with transaction(world.engine) as conn:  # left the campaign, as if long ago: it may not enter again (never)
        exit_enrollments(conn, 1, "test", world.clock())
    world.project.write_campaign("mql", campaign("mql", "{stage: mql}").replace('"Hello"', '"Hello again"'))
    world.reload()
    report = sweep(world.engine, world.catalog, world.clock())
    assert report.audiences == [] and report.enrolled == 0


@pytest.mark.parametrize("policy, wait", [("{after: 7d}", timedelta(days=7)), ("always", timedelta(0))])
def test_a_lead_whose_reentry_wait_ends_is_enrolled_by_the_sweep_after(make_world, policy: str,
                                                                       wait: timedelta) -> None:
    world = make_world({"again": campaign("again", "{stage: mql}", f"reentry: {policy}\n")})
    assert world.enrolled("old@example.com") == [("again", "active")]
    world.clock.advance(hours=1)
    with transaction(world.engine) as conn:
        exit_enrollments(conn, 1, "goal", world.clock())
    if wait:
        world.clock.advance(seconds=wait.total_seconds() - 1)
        assert world.sweep() == 0  # not yet
    world.clock.advance(seconds=2)
    assert world.sweep() == 1
    assert world.enrolled("old@example.com") == [("again", "exited"), ("again", "active")]
    world.nothing_missed()


def test_an_ended_wait_committed_late_is_still_seen_within_the_margin(make_world) -> None:
    world = make_world({"again": campaign("again", "{stage: mql}", "reentry: always\n")})
    world.clock.advance(hours=1)
    ended_at = world.clock() - MARGIN + timedelta(minutes=1)  # dated before the last sweep, committed after it
    with transaction(world.engine) as conn:
        exit_enrollments(conn, 1, "goal", ended_at)
    assert world.sweep() == 1
    world.nothing_missed()


def test_a_recycled_lead_is_enrolled_by_the_sweep_after_its_wait(make_world) -> None:
    world = make_world({"recycled": campaign("recycled", "{stage: recycled}")})
    until = world.clock() + timedelta(days=30)
    world.save(email="ada@example.com", fields={"recycle_at": until.isoformat()})
    # recycled is set by rules or sales only (never from the API): an admin's override puts the lead there
    override_stage(world.engine, world.catalog, email="ada@example.com", stage="recycled", reason="no budget yet",
                   now=world.clock())
    assert world.enrolled("ada@example.com") == []
    world.clock.now = until - timedelta(seconds=1)
    assert world.sweep() == 0
    world.clock.now = until + timedelta(seconds=1)
    assert world.sweep() == 1
    assert world.enrolled("ada@example.com") == [("recycled", "active")]
    world.nothing_missed()


def test_without_a_record_of_the_last_sweep_every_lead_is_considered(make_world) -> None:
    world = make_world({"mql": campaign("mql", "{stage: mql}")})
    world.save(email="new@example.com", stage="lead")
    with transaction(world.engine) as conn:  # written by another tool, the sweep's record lost: no trigger saw it
        conn.execute(update(Lead.__table__).where(Lead.__table__.c.email == "new@example.com").values(stage="mql"))
        conn.exec_driver_sql("DELETE FROM meta WHERE key = 'enrollment_checked_at'")
    assert world.sweep() == 1
    world.nothing_missed()


def test_an_import_without_campaigns_leaves_every_lead_to_the_next_sweep(make_world, tmp_path: Path) -> None:
    world = make_world({"mql": campaign("mql", "{stage: mql}")})
    path = tmp_path / "plain.csv"
    path.write_text("email,stage\nplain@example.com,mql\n", encoding="utf-8")
    import_leads_csv(world.engine, path, clock=world.clock)  # no catalog: not enrolled here
    assert world.enrolled("plain@example.com") == []
    world.clock.advance(minutes=1)
    assert world.sweep() == 1
    world.nothing_missed()


def test_an_audience_cut_short_by_a_shutdown_is_taken_up_again_at_the_next_sweep(make_world) -> None:
    world = make_world({"tagged": TAGGED})
    with transaction(world.engine) as conn:  # leads far apart: a range of ids of the sweep each
        conn.execute(insert(Lead.__table__), [dict(id=lead_id, email=f"l{lead_id}@example.com", stage="lead",
                                                   tags=["partner"], fields={}, score=0.0)
                                              for lead_id in (8_000, 12_000, 16_000)])
    world.project.write_campaign("tagged", TAGGED.replace("[vip]", "[vip, partner]"))
    world.reload()
    asked: list[int] = []
    report = sweep(world.engine, world.catalog, world.clock(), stopping=lambda: asked.append(1) or len(asked) > 2)
    assert not report.finished and report.audience_enrolled == 1  # two ranges of ids done, then the stop
    again = sweep(world.engine, world.catalog, world.clock())
    assert again.finished and again.audiences == ["tagged"] and again.audience_enrolled == 2
    assert sweep(world.engine, world.catalog, world.clock()).audiences == []
    world.nothing_missed()


@pytest.mark.parametrize("known", [False, True], ids=["new-lead", "existing-lead"])
def test_a_source_given_by_an_event_s_utm_properties_enrolls_the_lead(make_world, known: bool) -> None:
    world = make_world({"google": campaign("google", "{stage: [lead, mql], where: {fields: {source: google}}}")})
    if known:
        world.save(email="ada@example.com", stage="lead")
        assert world.enrolled("ada@example.com") == []
        world.clock.advance(hours=1)
    record_events(world.engine, world.catalog, world.rules,
                  [EventIn(email="ada@example.com", type="page_view", properties={"utm_source": "google"})],
                  now=world.clock(), actor="api")
    assert world.enrolled("ada@example.com") == [("google", "active")]
    world.nothing_missed()


def _fresh_world(engine: Engine, tmp_path: Path, campaigns: dict[str, str]) -> World:
    """A world whose database has no lead and was never swept (what `nurture db upgrade` leaves)."""
    project = write_project(tmp_path / "project", campaigns)
    (project.campaigns_dir / "scoring.yaml").write_text(SCORING, encoding="utf-8")
    rules, problems = load_scoring(project.campaigns_dir)
    assert not problems, problems
    return World(engine, project, FixedClock(T0), rules,
                 load_catalog(project.campaigns_dir, project.templates_dir).raise_for_problems())


def _enroll_effects(world: World) -> dict[str, tuple[int, str]]:
    """What the plan at the worker's first start says each new campaign enrolls."""
    sources, problems = catalog_sources(world.catalog, world.project.campaigns_dir)
    assert not problems
    report = plan(world.engine, world.catalog, sources, world.clock())
    return {p.campaign: (e.leads, e.text) for p in report.campaigns for e in p.effects if e.kind == "enroll"}


def test_an_import_into_a_database_without_leads_spares_the_first_sweep_every_lead(engine: Engine,
                                                                                   tmp_path: Path) -> None:
    world = _fresh_world(engine, tmp_path, {"tagged": TAGGED, "mql": campaign("mql", "{stage: mql}")})
    world.import_rows(tmp_path, [{"email": f"l{n}@example.com", "stage": "mql" if n % 2 else "lead",
                                  "tags": "vip" if n % 3 == 0 else ""} for n in range(12)])
    world.clock.advance(minutes=1)
    assert _enroll_effects(world) == {"mql": (0, "0 leads will be enrolled (every lead was considered for its entry "
                                             "as it is, when imported)"), "tagged": (0, "0 leads will be enrolled "
                                             "(every lead was considered for its entry as it is, when imported)")}
    report = sweep(world.engine, world.catalog, world.clock())
    assert (report.audiences, report.enrolled) == ([], 0)  # the import considered them all
    world.nothing_missed()
    # a campaign edited since the import still has its whole audience considered at the next sweep
    (world.project.campaigns_dir / "mql.yaml").write_text(campaign("mql", "{stage: [lead, mql]}"), encoding="utf-8")
    world.reload()
    world.clock.advance(minutes=1)
    report = sweep(world.engine, world.catalog, world.clock())
    assert report.audiences == ["mql"] and report.enrolled == 6
    world.nothing_missed()


def test_an_import_into_a_database_with_leads_never_swept_leaves_them_to_the_first_sweep(engine: Engine,
                                                                                      tmp_path: Path) -> None:
    world = _fresh_world(engine, tmp_path, {"mql": campaign("mql", "{stage: mql}")})
    path = tmp_path / "plain.csv"
    path.write_text("email,stage\nplain@example.com,mql\n", encoding="utf-8")
    import_leads_csv(world.engine, path, clock=world.clock)  # no catalog: left to the sweep
    world.import_rows(tmp_path, [{"email": "new@example.com", "stage": "mql"}])
    assert world.enrolled("plain@example.com") == []
    world.clock.advance(minutes=1)
    assert _enroll_effects(world) == {"mql": (1, "1 lead match entry and will be enrolled")}  # counted, as before
    report = sweep(world.engine, world.catalog, world.clock())
    assert report.audiences == ["mql"] and report.enrolled == 1
    assert world.enrolled("plain@example.com") == [("mql", "active")]
    world.nothing_missed()
