"""Who may enter a campaign again: the re-entry policy and the wait of a recycled lead (time passed in)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from nurture.definitions.campaign import Campaign

RECYCLE_AT = "recycle_at"
"""The custom field sales' reject sets (ISO UTC): a recycled lead enters no campaign before that time."""


def recycle_pending(stage: str, fields: Mapping[str, Any] | None, now: datetime) -> bool:
    """Whether a recycled lead still waits out the ``recycle_after`` of the reason sales rejected it for (the
    ``recycle_at`` custom field the rejection set): until then it enters no campaign, and scoring does not promote it.

    Only the recycled stage waits: a gate left over from an earlier rejection must not keep a lead that has since moved
    on (to sql, opportunity, customer) out of that stage's campaigns. A value that is not a time is no gate.
    """
    value = (fields or {}).get(RECYCLE_AT) if stage == "recycled" else None
    if not isinstance(value, str):
        return False
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return False
    return (at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)) > now


def waiting_to_recycle(lead: Any, now: datetime) -> bool:
    """:func:`recycle_pending` for a lead row (anything with ``stage`` and ``fields``)."""
    return recycle_pending(lead.stage, lead.fields, now)


def blocked(campaign: Campaign, past: Sequence[Any], now: datetime) -> bool:
    """Whether a lead's enrollments in the campaign (each with ``status`` and ``ended_at``) keep it from entering
    again (the re-entry policy)."""
    if any(e.status == "active" for e in past):
        return True
    policy = campaign.reentry
    if policy.policy == "always":
        return False
    if policy.policy == "after" and policy.after is not None:
        since = now - policy.after.as_timedelta()
        return any(e.ended_at is not None and e.ended_at > since for e in past)
    return bool(past)


def reentry_delay(campaign: Campaign) -> timedelta | None:
    """How long after an enrollment in the campaign ends the lead may enter it again (``always``: at once), or None
    when it never may: the moment an ended enrollment lets its lead in again is ``ended_at`` plus this."""
    policy = campaign.reentry
    if policy.policy == "always":
        return timedelta(0)
    if policy.policy == "after" and policy.after is not None:
        return policy.after.as_timedelta()
    return None


def audience_key(campaign: Campaign) -> str:
    """A hash of what decides who may enter the campaign (its entry stages and filter, its re-entry policy, whether
    it is paused), so that an edit of anything else (steps, subjects) does not enroll its audience again."""
    decisive = campaign.model_dump(mode="json", by_alias=True, include={"entry", "reentry", "paused"})
    return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:16]


def reads_score(campaign: Campaign) -> bool:
    """Whether the campaign's entry filter tests the lead's score (``where: {fields: {score: ...}}``): then a new
    score alone, without a new stage, may let a lead in."""
    where = campaign.entry.where
    return where is not None and "score" in (where.fields or {})
