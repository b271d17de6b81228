"""An admin's stage override (application/override_stage.py) on SQLite files and PostgreSQL: recorded with the actor
and reason, followed like any stage change (exits by the campaigns' exit stages, entry and re-entry), logged by id."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest
from db_fixtures import engine, migrated_url, postgres_available, postgres_template  # noqa: F401
from intake_world import T0, enrollments_of, lead_row, stage_history

from nurture.application.enroll import enroll_leads
from nurture.application.lead_input import upsert_lead
from nurture.application.override_stage import MAX_REASON, override_stage
from nurture.definitions.loader import Catalog, load_catalog
from nurture.errors import InvalidInput, LeadNotFound
from nurture.storage.database import session
from nurture.storage.leads import lead_summary

CAMPAIGNS = {
    "onboarding.yaml": """\
id: onboarding
name: Customer onboarding
entry: {stage: customer}
exit: {stages: [recycled, disqualified]}
steps:
  - {id: hello, wait: 1d, email: {template: hello.html.j2, subject: Hello}}
""",
    "comeback.yaml": """\
id: comeback
name: Recycled leads
entry: {stage: recycled}
steps:
  - {id: hello, wait: 30d, email: {template: hello.html.j2, subject: "Still there?"}}
""",
    "care.yaml": """\
id: care
name: MQL care
entry: {stage: mql}
reentry: always
steps:
  - {id: hello, wait: 1d, email: {template: hello.html.j2, subject: Welcome}}
""",
}

EMAIL = "ada@example.com"


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    folder = tmp_path / "campaigns"
    folder.mkdir()
    for name, text in CAMPAIGNS.items():
        (folder / name).write_text(text, encoding="utf-8")
    return load_catalog(folder).raise_for_problems()


def add_lead(engine, stage: str, email: str = EMAIL) -> int:
    with session(engine) as db:
        lead_id = upsert_lead(db, {"email": email, "stage": stage}, actor="cli", now=T0).lead.id
    assert lead_id is not None
    return lead_id


def active(engine, email: str = EMAIL) -> list[str]:
    return sorted(e.campaign_id for e in enrollments_of(engine, email) if e.status == "active")


def test_an_override_moves_a_lead_anywhere_and_is_followed_like_any_stage_change(engine, catalog) -> None:
    lead_id = add_lead(engine, "customer")
    assert enroll_leads(engine, catalog, T0) == 1 and active(engine) == ["onboarding"]

    # back to recycled, which no file or API may set: onboarding exits on it, the recycle campaign takes the lead
    result = override_stage(engine, catalog, email=" ADA@example.com", stage="Recycled",
                            reason="churned, win back", now=T0 + timedelta(hours=1))
    assert (result.lead_id, result.from_stage, result.stage, result.changed) == (lead_id, "customer", "recycled", True)
    assert (result.exited, result.enrolled) == (1, 1)
    assert active(engine) == ["comeback"]
    ended = [e for e in enrollments_of(engine, EMAIL) if e.campaign_id == "onboarding"]
    assert [(e.status, e.end_reason) for e in ended] == [("exited", "stage:recycled")]
    row = lead_row(engine, EMAIL)
    assert (row.stage, row.stage_changed_at) == ("recycled", T0 + timedelta(hours=1))

    # out of recycled to mql: the recycle campaign does not exit on mql, the mql campaign takes it
    override_stage(engine, catalog, email=EMAIL, stage="mql", reason="asked for the newsletter",
                   now=T0 + timedelta(hours=2))
    assert active(engine) == ["care", "comeback"]

    # customer again: both exit (the default exit stages list customer); onboarding's re-entry (never) keeps it out
    result = override_stage(engine, catalog, email=EMAIL, stage="customer", reason="signed again",
                            now=T0 + timedelta(hours=3))
    assert (result.exited, result.enrolled) == (2, 0)
    assert active(engine) == []

    history = [(c.from_stage, c.to_stage, c.actor, c.reason) for c in stage_history(engine, EMAIL)]
    assert history == [
        (None, "customer", "cli", "set by cli"),
        ("customer", "recycled", "admin", "churned, win back"),
        ("recycled", "mql", "admin", "asked for the newsletter"),
        ("mql", "customer", "admin", "signed again"),
    ]
    with session(engine, read_only=True) as db:  # what `leads show` and GET /v1/leads/{email} print
        shown = lead_summary(db, EMAIL)["stage_history"]
    assert [(c["to_stage"], c["actor"], c["reason"]) for c in shown][1] == ("recycled", "admin", "churned, win back")


def test_an_override_to_the_lead_s_own_stage_changes_nothing(engine, catalog) -> None:
    add_lead(engine, "sql")
    result = override_stage(engine, catalog, email=EMAIL, stage="sql", reason="check", now=T0)
    assert not result.changed and (result.exited, result.enrolled) == (0, 0)
    assert [c.to_stage for c in stage_history(engine, EMAIL)] == ["sql"]


@pytest.mark.parametrize(("stage", "reason", "message"), [
    ("mql", "", "give a reason"),
    ("mql", "   ", "give a reason"),
    ("mql", "x" * (MAX_REASON + 1), f"at most {MAX_REASON}"),
    ("mql", "tab\x07bell", "control characters"),
    ("hot", "because", "unknown stage 'hot'"),
    ("", "because", "give the stage"),
])
def test_an_override_needs_a_known_stage_and_a_reason(engine, catalog, stage: str, reason: str,
                                                      message: str) -> None:
    add_lead(engine, "customer")
    with pytest.raises(InvalidInput, match=message):
        override_stage(engine, catalog, email=EMAIL, stage=stage, reason=reason, now=T0)
    assert [c.to_stage for c in stage_history(engine, EMAIL)] == ["customer"]


def test_an_override_of_an_unknown_lead_is_refused(engine, catalog) -> None:
    with pytest.raises(LeadNotFound, match=r"nobody@example\.com"):
        override_stage(engine, catalog, email="Nobody@example.com", stage="mql", reason="why", now=T0)


def test_an_override_is_logged_by_lead_id_without_the_email_or_the_reason(engine, catalog, caplog) -> None:
    lead_id = add_lead(engine, "opportunity")
    with caplog.at_level(logging.INFO, logger="nurture"):
        override_stage(engine, catalog, email=EMAIL, stage="lead", reason="Ada Lovelace asked us to", now=T0)
    logged = [r.getMessage() for r in caplog.records if r.name == "nurture.application.override_stage"]
    assert len(logged) == 1 and f"lead {lead_id}:" in logged[0] and "opportunity -> lead" in logged[0]
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert "ada" not in everything.lower() and "Lovelace" not in everything
