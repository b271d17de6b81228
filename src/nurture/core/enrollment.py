"""Who may enter a campaign again: the re-entry policy and the wait of a recycled lead (time passed in)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
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
