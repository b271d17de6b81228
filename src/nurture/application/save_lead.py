"""Saving a lead through the API or the CLI: its fields written, its score recomputed, its stage and enrollments
following, in one transaction (the event batch's rescoring, :mod:`nurture.application.record_events`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from nurture.application.enroll import enroll_in_transaction
from nurture.application.lead_input import clean_lead_data, upsert_lead
from nurture.application.record_events import RETRIES, EventBatch
from nurture.core.lifecycle import StageNotApplied
from nurture.definitions.loader import Catalog
from nurture.definitions.sales import SalesRules
from nurture.definitions.scoring import ScoringRules
from nurture.handoff import Handoff
from nurture.storage.database import session
from nurture.storage.dialect import is_retryable
from nurture.storage.enrollments import exit_enrollments
from nurture.storage.lead_state import lead_by_email, stage_for_update
from nurture.storage.vocabulary import STAGE_ACTORS


@dataclass(frozen=True)
class SavedLead:
    """What :func:`save_lead` did."""

    email: str
    created: bool
    stage: str
    score: float
    stage_changed: bool
    enrolled: int
    stage_not_applied: StageNotApplied | None = None
    """The stage the caller gave, when it was not applied (:mod:`nurture.core.lifecycle`)."""


def save_lead(
    engine: Engine, catalog: Catalog, rules: ScoringRules, data: Mapping[str, Any], *, now: datetime, actor: str,
    sales: SalesRules | None = None, handoff: Handoff | None = None,
) -> SavedLead:
    """Create or update a lead (fields as :func:`nurture.core.lead_fields.clean_lead_data` accepts them) and rescore it.

    The fields are written by :func:`nurture.application.lead_input.upsert_lead`: an explicit stage is recorded with
    ``actor`` when it moves the lead forward (or starts a new lead), and otherwise left out and returned as
    ``stage_not_applied``, never an error. Then the new score, fit points included, may promote the lead (to MQL;
    with ``sales`` rules to SQL, or disqualify it, as :func:`nurture.application.record_events.record_events`
    does). A stage that a campaign exits on ends that enrollment at once.
    The lead is enrolled in every campaign it now matches, in the same transaction.
    """
    if actor not in STAGE_ACTORS:
        raise ValueError(f"unknown actor {actor!r}")
    email = clean_lead_data(data)["email"]  # InvalidInput before any transaction
    for attempt in range(RETRIES):
        try:
            with session(engine) as orm_session:
                conn = orm_session.connection()
                before = stage_for_update(conn, email)
                written = upsert_lead(orm_session, data, actor=actor, now=now)
                batch = EventBatch(conn, catalog, rules, now, actor, sales=sales, handoff=handoff)
                # tracked as a lead that existed: its history and state are read even when `before` saw none, since
                # on PostgreSQL a concurrent batch may have created it (with scored events) after that read
                lead = batch.track(lead_by_email(conn, email), False)
                if before is not None and lead.stage != before:
                    lead.stage_changed = True
                    exits = [c.id for c in catalog.campaigns.values() if lead.stage in c.exit.stages]
                    if exits:
                        exit_enrollments(conn, lead.id, f"stage:{lead.stage}", now, campaign_ids=exits)
                batch.load_history()
                batch.rescore(lead)
                lead.dirty = True
                batch.finish()
                enrolled = enroll_in_transaction(conn, catalog, batch.to_enroll(include_unchanged=True), now)
            break
        except DBAPIError as exc:
            if attempt + 1 == RETRIES or not is_retryable(exc):
                raise
    return SavedLead(email, before is None, lead.stage, lead.score, lead.stage_changed, enrolled,
                     written.stage_not_applied)
