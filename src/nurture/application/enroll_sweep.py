"""When leads are considered for enrollment, and the sweep that covers what no write triggers.

A lead is considered when something that can change its eligibility happens, in the transaction that changes it:
an import (each batch's leads), a lead saved through the API or the CLI, recorded events (a new lead, a new stage,
an event of a type a ``had_event`` filter names, a new score when a filter tests the score), a campaign's
``update`` step (tags, fields), a sales verdict, the nightly rescoring when a filter tests the score.

What changes with time or with the definitions has no write to ride on; :func:`sweep` (at the worker's start-up and
every ``NURTURE_SWEEP_INTERVAL``) covers it, at a cost that grows with what changed, not with the leads:

- a new or edited campaign (its :func:`~nurture.core.enrollment.audience_key` differs from the one recorded when
  its audience was last enrolled): every lead is considered for it once, a range of ids per transaction, and the
  key is recorded when the whole range is done (a pass cut short by a shutdown starts again at the next start-up);
- a re-entry wait that ends (``reentry: {after: D}``: an enrollment that ended D ago; ``always``: one that ended):
  the enrollments whose end falls in the window since the last sweep (read by the index on campaign and status);
- a recycle wait that ends (the ``recycle_at`` a sales rejection set): the recycled leads whose time fell in it.

An import that began on a database without leads, with the campaigns at hand, considered every lead there is for each
of them, batch by batch: it records their audience keys (:func:`considered_every_lead`), so the first sweep after it
does not consider every lead again. Leads another writer added meanwhile were considered by that writer.

Each window reaches back :data:`MARGIN` before the last sweep, so a change dated before a sweep and committed after
it (a long batch) is still seen; considering a lead twice does nothing the second time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from nurture.application.enroll import active_campaigns, enroll_every_lead, enroll_leads
from nurture.core.enrollment import RECYCLE_AT, audience_key, recycle_pending, reentry_delay
from nurture.definitions.loader import Catalog
from nurture.storage import entry_reads
from nurture.storage.database import transaction
from nurture.storage.entry_reads import AUDIENCE_PREFIX, CHECKED_AT

if TYPE_CHECKING:  # the connection types only annotate: the queries are storage's
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

MARGIN = timedelta(minutes=15)
"""How far before the last sweep each window reaches back: longer than any transaction that dates its writes when
it starts (a dispatcher batch within its lease, an import batch)."""


@dataclass
class SweepReport:
    """What one sweep did."""

    audiences: list[str] = field(default_factory=list)  # campaigns whose whole audience was considered
    audience_enrolled: int = 0
    waits_ended: int = 0  # leads whose re-entry or recycle wait ended since the last sweep
    due_enrolled: int = 0
    finished: bool = True  # False when asked to stop before the audiences were done

    @property
    def enrolled(self) -> int:
        return self.audience_enrolled + self.due_enrolled


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)


def sweep(engine: Engine, catalog: Catalog, now: datetime, *, stopping: Callable[[], bool] | None = None) -> SweepReport:
    """Enroll the audiences of new or edited campaigns, and the leads whose wait to enter ended since the last
    sweep; record where it got to. Without a record of the last sweep (a database that never had one, or one dated
    more than :data:`MARGIN` after ``now``) every campaign's audience is considered."""
    report = SweepReport()
    campaigns = active_campaigns(catalog)
    with transaction(engine, read_only=True) as conn:
        marks = entry_reads.bookmarks(conn)
    checked = _parse(marks.get(CHECKED_AT))
    keys = {c.id: audience_key(c) for c in campaigns}
    if checked is None or checked > now + MARGIN:
        report.audiences = list(keys)
    else:
        report.audiences = [cid for cid, key in keys.items() if marks.get(AUDIENCE_PREFIX + cid) != key]
    if report.audiences:
        report.audience_enrolled, report.finished = enroll_every_lead(
            engine, catalog, active_campaigns(catalog, report.audiences), now, stopping=stopping)
        if not report.finished:
            return report
    current = [c for c in campaigns if c.id not in report.audiences]
    if checked is not None and current:
        since = min(checked, now) - MARGIN
        ended = _waits_ended(engine, catalog, [c.id for c in current], since, now)
        report.waits_ended = len(ended)
        if ended:
            report.due_enrolled = enroll_leads(engine, catalog, now, lead_ids=ended,
                                               campaign_ids=[c.id for c in current])
    with transaction(engine) as conn:
        entry_reads.drop_bookmarks(conn, [key for key in marks if key.startswith(AUDIENCE_PREFIX)
                                          and key[len(AUDIENCE_PREFIX):] not in keys])
        for campaign_id in report.audiences:
            entry_reads.set_bookmark(conn, AUDIENCE_PREFIX + campaign_id, keys[campaign_id])
        entry_reads.set_bookmark(conn, CHECKED_AT, max(checked or now, now).isoformat())
    return report


def _waits_ended(engine: Engine, catalog: Catalog, campaign_ids: list[str], since: datetime, now: datetime) -> list[int]:
    """Leads whose re-entry wait in one of these campaigns, or whose recycle wait, ended in (``since``, ``now``]."""
    found: set[int] = set()
    campaigns = [catalog.campaigns[cid] for cid in campaign_ids]
    with transaction(engine, read_only=True) as conn:
        for campaign in campaigns:
            delay = reentry_delay(campaign)
            if delay is not None:
                found.update(entry_reads.ended_between(conn, campaign.id, since - delay, now - delay))
        if any("recycled" in c.entry.stages() for c in campaigns):
            for lead_id, value in entry_reads.recycle_times(conn):
                gate = {RECYCLE_AT: value}
                if recycle_pending("recycled", gate, since) and not recycle_pending("recycled", gate, now):
                    found.add(lead_id)
    return sorted(found)


def considered_every_lead(engine: Engine, catalog: Catalog, since: datetime, leads: int) -> bool:
    """Record that every lead was considered for each campaign of ``catalog`` as it is now, as the sweep does after
    a campaign's audience: what an import that began on a database without leads at ``since``, inserted ``leads``
    and enrolled each of its batches with ``catalog`` may say, provided they are still all the leads there are (else
    another writer, such as an import without campaigns, added some: nothing is recorded, the sweep considers every
    lead). Without a record of the last sweep, ``since`` becomes it, so that waits to enter (again) that end after
    it are still looked for. Returns whether it recorded."""
    campaigns = active_campaigns(catalog)
    with transaction(engine) as conn:
        if entry_reads.lead_count(conn) != leads:
            return False
        marks = entry_reads.bookmarks(conn)
        for campaign in campaigns:
            entry_reads.set_bookmark(conn, AUDIENCE_PREFIX + campaign.id, audience_key(campaign))
        if _parse(marks.get(CHECKED_AT)) is None:
            entry_reads.set_bookmark(conn, CHECKED_AT, since.isoformat())
    return True
