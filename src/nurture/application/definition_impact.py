"""The live impact of an edit of ``scoring.yaml`` or ``sales.yaml``: how many leads change score band, become MQL,
would be promoted to SQL or disqualified, with a few lead ids for each (never emails).

It reads, never writes: leads a page at a time in id order (short read-only transactions), with their events of the
types either version scores (and sales verdicts, whose points are kept); each lead is decided by
:func:`nurture.core.score_impact.lead_impact` (the worker's scoring, promotion and disqualification rules) and only
counts are kept, so a million leads never sit in memory at once.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine

from nurture.application.event_input import RESERVED_TYPES
from nurture.core.enrollment import recycle_pending
from nurture.core.score_impact import ScoringImpact, lead_impact, scored_types
from nurture.definitions.sales import SalesRules
from nurture.definitions.scoring import ScoringRules
from nurture.storage import scores
from nurture.storage.database import transaction
from nurture.storage.rows import lead_view

PAGE = 1000
"""Leads read (and decided) at a time."""


def scoring_impact(
    engine: Engine,
    old_rules: ScoringRules,
    new_rules: ScoringRules,
    old_sales: SalesRules | None,
    new_sales: SalesRules | None,
    *,
    now: datetime,
    page: int = PAGE,
) -> ScoringImpact:
    """Compare every lead's score and stage decisions under the old and the new rules, as of ``now``."""
    types = sorted(scored_types(old_rules) | scored_types(new_rules) | set(RESERVED_TYPES))
    impact = ScoringImpact()
    last_id = 0
    while True:
        with transaction(engine, read_only=True) as conn:
            rows = scores.leads_page(conn, last_id, page)
            if not rows:
                break
            events = scores.events_of_types(conn, [row.id for row in rows], types)
        for row in rows:
            lead = lead_view(row)
            impact.add(row.id, lead_impact(old_rules, new_rules, old_sales, new_sales, lead, events[row.id], now,
                                           kept_types=RESERVED_TYPES,
                                           waiting=recycle_pending(row.stage, row.fields, now)))
        last_id = rows[-1].id
        if len(rows) < page:
            break
    return impact
