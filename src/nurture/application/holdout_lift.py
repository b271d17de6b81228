"""The figures of the report's ``holdouts`` section (:class:`nurture.core.metrics.experiments.Holdouts`): for each
campaign with a holdout group, the MQL→SQL conversion and time to SQL of the leads it sent to against the leads it
held out, and the lift it causes.

A lead counts once per campaign, at its first enrollment that entered in the period, in the group that enrollment was
in; it converted when it became an SQL at or after entering, before the end of the period. The statistics and the
verdict are :mod:`nurture.core.holdout`'s.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from nurture.core.holdout import GroupFigures, first_sql_after, group_figures, lift
from nurture.definitions.loader import Catalog
from nurture.storage import experiments as store
from nurture.storage.database import transaction

if TYPE_CHECKING:  # the connection types only annotate: the queries are storage's
    from sqlalchemy.engine import Connection, Engine

CONFIDENCE = 0.95


def _group(figures: GroupFigures) -> dict[str, Any]:
    return dict(leads=figures.leads, sql=figures.converted,
                rate=None if figures.rate is None else round(figures.rate, 6),
                median_hours_to_sql=figures.median_hours_to_sql)


def holdouts_section(engine: Engine, catalog: Catalog | None, *, since: datetime, until: datetime,
                     confidence: float = CONFIDENCE, campaign: str | None = None) -> list[dict[str, Any]]:
    """The ``holdouts`` section of ``nurture report`` in a transaction of its own (see :func:`holdouts_of`)."""
    with transaction(engine, read_only=True) as conn:
        return holdouts_of(conn, catalog, since=since, until=until, confidence=confidence, campaign=campaign)


def holdouts_of(conn: Connection, catalog: Catalog | None, *, since: datetime, until: datetime,
                confidence: float = CONFIDENCE, campaign: str | None = None) -> list[dict[str, Any]]:
    """Sent against held out, per campaign (``campaign`` alone if given) that declares a holdout or held a lead out
    in [since, until)."""
    declared = {c.id: c.holdout for c in (catalog.campaigns.values() if catalog is not None else ()) if c.holdout}
    found = set(declared) | set(store.holdout_campaigns(conn, since=since, until=until, campaign=campaign))
    section = []
    for campaign_id in sorted(c for c in found if campaign is None or c == campaign):
        first: dict[int, Any] = {}
        for entry in store.campaign_entries(conn, campaign_id, since=since, until=until):
            first.setdefault(entry.lead_id, entry)
        sql = store.sql_times(conn, list(first), until=until)
        groups: dict[bool, list[tuple[datetime, datetime | None]]] = {True: [], False: []}
        for lead_id, entry in first.items():
            groups[bool(entry.held_out)].append(
                (entry.enrolled_at, first_sql_after(entry.enrolled_at, sql.get(lead_id, []), until)))
        sent, held = group_figures(groups[False]), group_figures(groups[True])
        result = lift(sent, held, confidence=confidence)
        share = declared.get(campaign_id)
        section.append(dict(
            campaign=campaign_id, holdout=None if share is None else round(share, 6),
            sent=_group(sent), held_out=_group(held),
            lift=None if result.difference is None else round(result.difference, 6),
            low=None if result.low is None else round(result.low, 6),
            high=None if result.high is None else round(result.high, 6),
            p_value=None if result.p_value is None else round(result.p_value, 6),
            confidence=confidence, verdict=result.verdict,
        ))
    return section
