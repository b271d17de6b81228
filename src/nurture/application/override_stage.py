"""An admin's explicit stage change (``nurture leads stage EMAIL STAGE --reason TEXT``).

Files and the API only ever move a lead forward (:mod:`nurture.core.lifecycle`); this is the one way to set any stage
by hand: back along the funnel, or into or out of ``recycled`` and ``disqualified``. It is recorded and followed like
a sales verdict (:mod:`nurture.application.sales_feedback`), in one transaction: the stage history row (actor
``admin``, the reason as given), the lead's stage, the campaigns whose ``exit.stages`` list the new stage exited
(``stage:<stage>``). After the commit the lead enters the campaigns it now matches, by their entry stages, filters
and re-entry policies. Scoring and the sales rules apply again at the lead's next event or update, as for any lead
(a lead set back to ``lead`` with a score over the MQL threshold becomes an MQL then); a move to ``sql`` here
notifies nobody (only promotion hands a lead to sales), though sales may accept or reject it as any SQL.

The log line names the lead by id with both stages; the email and the reason (free text, which may name people) are
only in the database.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from nurture.application.enroll import enroll_in_transaction
from nurture.core.lead_fields import clean_stage, clean_text, normalize_email
from nurture.definitions.loader import Catalog
from nurture.errors import InvalidInput, LeadNotFound
from nurture.storage import feedback_rows as store
from nurture.storage.database import transaction
from nurture.storage.enrollments import exit_enrollments

if TYPE_CHECKING:  # the engine type only annotates: the queries are storage's
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

ADMIN = "admin"
"""The stage history's actor of an override."""

MAX_REASON = 2000
"""The longest reason an override takes (characters)."""


@dataclass(frozen=True)
class StageOverride:
    """What an override did: ``changed`` is False when the lead was at ``stage`` already (nothing written)."""

    email: str
    lead_id: int
    from_stage: str
    stage: str
    reason: str
    changed: bool
    exited: int = 0  # enrollments ended by the new stage
    enrolled: int = 0  # campaigns entered after it


def clean_override(stage: str, reason: str) -> tuple[str, str]:
    """The stage and reason of an override, or :class:`InvalidInput` naming what is wrong (pure; nothing is read)."""
    problems = []
    cleaned_stage = None
    try:
        cleaned_stage = clean_stage(stage)
        if cleaned_stage is None:
            problems.append("give the stage to set")
    except InvalidInput as exc:
        problems.append(str(exc))
    cleaned_reason = None
    try:
        cleaned_reason = clean_text(reason)
        if cleaned_reason is None:
            problems.append("give a reason (--reason): it is kept in the lead's stage history")
        elif len(cleaned_reason) > MAX_REASON:
            problems.append(f"the reason is {len(cleaned_reason)} characters long: at most {MAX_REASON}")
    except InvalidInput as exc:
        problems.append(f"reason: {exc}")
    if problems:
        raise InvalidInput("; ".join(problems))
    assert cleaned_stage is not None and cleaned_reason is not None
    return cleaned_stage, cleaned_reason


def override_stage(engine: Engine, catalog: Catalog, *, email: str, stage: str, reason: str,
                   now: datetime) -> StageOverride:
    """Set the lead's stage to ``stage`` whatever it is now, with ``reason`` in its history (actor ``admin``), and
    follow it as any stage change: exits and enrollment in the same transaction.

    Raises :class:`InvalidInput` for an unknown stage or a missing, multi-line or too long reason, and
    :class:`LeadNotFound`. A lead at ``stage`` already is left as it is (``changed`` False).
    """
    stage, reason = clean_override(stage, reason)
    with transaction(engine) as conn:
        lead = store.lock_lead(conn, email=normalize_email(email))
        if lead is None:
            raise LeadNotFound(f"no lead with email {normalize_email(email)!r}")
        result = StageOverride(lead.email, lead.id, lead.stage, stage, reason, changed=lead.stage != stage)
        if not result.changed:
            return result
        store.insert_stage_change(conn, lead_id=lead.id, from_stage=lead.stage, to_stage=stage, at=now,
                                  reason=reason, actor=ADMIN)
        store.update_lead(conn, lead.id, {"stage": stage, "stage_changed_at": now, "updated_at": now})
        exits = [c.id for c in catalog.campaigns.values() if stage in c.exit.stages]
        exited = exit_enrollments(conn, lead.id, f"stage:{stage}", now, campaign_ids=exits) if exits else 0
        enrolled = enroll_in_transaction(conn, catalog, [lead.id], now)  # with the change, in its transaction
    log.warning("lead %d: stage overridden by an admin, %s -> %s (%d enrollment(s) exited); the reason is in its "
                "stage history", result.lead_id, result.from_stage, stage, exited)
    return replace(result, exited=exited, enrolled=enrolled)
