"""Rows of the lead table as the core sees them: the one row -> :class:`~nurture.core.facts.LeadView` mapper."""

from __future__ import annotations

from typing import Any

from nurture.core.facts import LeadView
from nurture.core.lead_fields import LEAD_ATTRIBUTES

LEAD_COLUMNS = LEAD_ATTRIBUTES
"""The lead columns a LeadView carries as ``attributes`` (:data:`nurture.core.lead_fields.LEAD_ATTRIBUTES`)."""


def lead_view(row: Any) -> LeadView:
    """A LeadView from a row of the lead table."""
    return LeadView(
        key=str(row.id),
        email=row.email,
        stage=row.stage,
        score=float(row.score or 0),
        timezone=row.timezone,
        tags=tuple(row.tags or ()),
        attributes={name: getattr(row, name) for name in LEAD_COLUMNS if getattr(row, name) is not None},
        custom=dict(row.fields or {}),
        unsubscribed=row.unsubscribed_at is not None,
        bounced=row.bounced_at is not None,
    )
