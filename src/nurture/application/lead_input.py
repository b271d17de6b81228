"""Creating or updating one lead by hand (``leads add``, the HTTP API): its fields cleaned, its stage judged by the
lifecycle's rule (:func:`nurture.core.lifecycle.outside_stage_refusal`), then written."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from nurture.core.lead_fields import clean_lead_data
from nurture.core.lifecycle import StageNotApplied, outside_stage_refusal
from nurture.storage.leads import lead_to_write, write_lead
from nurture.storage.models import STAGE_ACTORS, Lead

if TYPE_CHECKING:  # the session type only annotates: the writing is storage's
    from sqlmodel import Session

__all__ = ["UpsertedLead", "clean_lead_data", "upsert_lead"]  # the cleaner too: callers that validate first


@dataclass(frozen=True)
class UpsertedLead:
    """What :func:`upsert_lead` wrote: the lead (as the session holds it), whether it is new, and the stage given
    that was not applied (None when none was given or it applied)."""

    lead: Lead
    created: bool
    stage_not_applied: StageNotApplied | None = None


def upsert_lead(
    session: Session, data: Mapping[str, Any], *, actor: str, reason: str = "", now: datetime
) -> UpsertedLead:
    """Create the lead with ``data["email"]`` or update the fields given; a new stage is recorded in its history.

    The fields are cleaned first (:func:`nurture.core.lead_fields.clean_lead_data`: every problem in one
    :class:`~nurture.errors.InvalidInput`, before anything is written). A ``stage`` applies to a new lead (unless
    it is recycled or disqualified) and to an existing one only when it moves the lead forward; otherwise it is
    left out and returned as ``stage_not_applied``, the other fields written all the same. Custom fields are
    merged (a ``None`` value removes one); ``tags`` replace the lead's tags. The lead's row is locked until the
    caller's session commits. ``now`` dates the change.
    """
    if actor not in STAGE_ACTORS:  # a caller's mistake, named before the caller's data is judged
        raise ValueError(f"unknown actor {actor!r}")
    cleaned = clean_lead_data(data)
    lead, created = lead_to_write(session, cleaned["email"], now)
    refusal = outside_stage_refusal(None if created else lead.stage, cleaned.get("stage"))
    if refusal is not None:
        del cleaned["stage"]
    write_lead(session, lead, cleaned, created=created, actor=actor, reason=reason, now=now)
    return UpsertedLead(lead, created, refusal)
