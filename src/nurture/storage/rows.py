"""Rows of the lead table as the core sees them: the one row -> :class:`~nurture.core.facts.LeadView` mapper."""

from __future__ import annotations

from typing import Any

from nurture.core.facts import LeadView
from nurture.core.lead_fields import LEAD_ATTRIBUTES

LEAD_COLUMNS = LEAD_ATTRIBUTES
"""The lead columns a LeadView carries as ``attributes`` (:data:`nurture.core.lead_fields.LEAD_ATTRIBUTES`)."""


def lead_view(row: Any) -> LeadView:
    """A LeadView from a row of the lead table (a result row, read through its mapping: a row's attributes cost
    microseconds each; or anything with the columns as attributes)."""
    values = getattr(row, "_mapping", None)
    if values is None:
        values = {name: getattr(row, name) for name in VIEW_COLUMNS}
    attributes = {name: value for name in LEAD_COLUMNS if (value := values[name]) is not None}
    return LeadView(
        key=str(values["id"]),
        email=values["email"],
        stage=values["stage"],
        score=float(values["score"] or 0),
        timezone=values["timezone"],
        tags=tuple(values["tags"] or ()),
        attributes=attributes,
        custom=dict(values["fields"] or {}),
        unsubscribed=values["unsubscribed_at"] is not None,
        bounced=values["bounced_at"] is not None,
    )


VIEW_COLUMNS = ("id", "email", "stage", "score", "timezone", "tags", "fields", "unsubscribed_at", "bounced_at",
                *LEAD_COLUMNS)
"""The lead columns :func:`lead_view` reads: what a query that only builds views selects (not the score state, not
the row's own times)."""
