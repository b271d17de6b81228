"""Enrolling leads into campaigns: who may enter which campaign now (entry stages and filter, re-entry policy, a
recycled lead's wait), and how many would enter a campaign now (``nurture plan``).

The rules are the core's (:mod:`nurture.core.enrollment`, :func:`nurture.core.conditions.filter_matches`). The
database first leaves out the leads that cannot enter (:mod:`nurture.storage.entry_sql`: stages, suppression, tags
and field tests as SQL); Python decides on the rest, reading their past enrollments and the events their filters
name (:mod:`nurture.storage.entry_reads`). A lead is considered when something that can change its eligibility
happens (:mod:`nurture.application.enroll_sweep` lists the triggers); :func:`enroll_leads` without ids considers
every lead, in ranges of ids, one short transaction each.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from nurture.core.conditions import filter_matches
from nurture.core.enrollment import blocked, waiting_to_recycle
from nurture.core.facts import Engagement, History, LeadView
from nurture.core.holdout import held_out
from nurture.definitions.campaign import Campaign
from nurture.definitions.loader import Catalog
from nurture.storage import enrollments as store
from nurture.storage import entry_reads
from nurture.storage.database import transaction
from nurture.storage.entry_sql import EntrySql, entry_sql
from nurture.storage.rows import lead_view

if TYPE_CHECKING:  # the connection types only annotate: the queries are storage's
    from sqlalchemy.engine import Connection, Engine

CHUNK = 2000
"""Leads decided per statement when they are given by id or email."""
WINDOW = 5000
"""Lead ids per transaction when every lead (or a campaign's whole audience) is considered."""


def active_campaigns(catalog: Catalog, campaign_ids: Collection[str] | None = None) -> list[Campaign]:
    """The campaigns that enroll (not paused), highest priority first; only ``campaign_ids`` when given."""
    return [c for c in sorted(catalog.campaigns.values(), key=lambda c: -c.priority)
            if not c.paused and (campaign_ids is None or c.id in campaign_ids)]


_SQL: dict[tuple[int, int, tuple[str, ...]], tuple[Catalog, Any, EntrySql]] = {}


def _sql(catalog: Catalog, campaigns: list[Campaign], dialect: Any) -> EntrySql:
    """The SQL that narrows the leads to those that may enter one of ``campaigns`` (built once per catalog and
    database dialect)."""
    key = (id(catalog), id(dialect), tuple(c.id for c in campaigns))
    cached = _SQL.get(key)
    if cached is None or cached[0] is not catalog or cached[1] is not dialect:
        if len(_SQL) >= 32:
            _SQL.clear()
        cached = _SQL[key] = (catalog, dialect, entry_sql(campaigns, dialect))
    return cached[2]


def _entry_types(campaigns: list[Campaign]) -> set[str]:
    return {t for c in campaigns if c.entry.where and c.entry.where.had_event for t in c.entry.where.had_event}


_NO_HISTORY = History()


def decide(catalog: Catalog, campaigns: list[Campaign], leads: Sequence[Any], past: dict[tuple[int, str], list[Any]],
           events: dict[int, list[Any]], now: datetime) -> list[dict[str, Any]]:
    """The new enrollments of these lead rows (the rows of :func:`nurture.storage.enrollments.start`): for each
    campaign (in the order given) each lead in an entry stage, neither unsubscribed nor bounced, not waiting to
    recycle, not kept out by its ``past`` enrollments there, that passes the entry filter with its ``events`` since
    it last entered. A row's ``may_<index>`` flag, when false, says the SQL already ruled that campaign out."""
    rules = [(set(c.entry.stages()), c.entry.where, f"may_{index}") for index, c in enumerate(campaigns)]
    chosen: list[list[int]] = [[] for _ in campaigns]
    for lead in leads:
        values = lead._mapping
        if values["unsubscribed_at"] is not None or values["bounced_at"] is not None:
            continue
        lead_id, stage = values["id"], values["stage"]
        if stage == "recycled" and waiting_to_recycle(lead, now):
            continue
        view: LeadView | None = None
        for index, (stages, where, flag) in enumerate(rules):
            if stage not in stages or not values.get(flag, True):
                continue
            mine = past.get((lead_id, campaigns[index].id))
            if mine and blocked(campaigns[index], mine, now):
                continue
            history = _NO_HISTORY
            if where is not None and where.had_event:
                last_entry = max((e.enrolled_at for e in mine or ()), default=None)
                history = History([Engagement(e.type, e.occurred_at) for e in events.get(lead_id, [])
                                   if last_entry is None or e.occurred_at > last_entry])
            if view is None:
                view = lead_view(lead)
            if filter_matches(where, view, history):
                chosen[index].append(lead_id)
    rows = []
    for campaign, lead_ids in zip(campaigns, chosen):
        version, first = catalog.version(campaign.id), campaign.steps[0].id
        rows += [dict(lead_id=lead_id, campaign_id=campaign.id, step_id=first, campaign_version=version,
                      priority=campaign.priority, held_out=held_out(str(lead_id), campaign.id, campaign.holdout))
                 for lead_id in lead_ids]
    return rows


def _decided(conn: Connection, catalog: Catalog, campaigns: list[Campaign], leads: Sequence[Any], now: datetime,
             *, window: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """The new enrollments of these candidate rows (read only); ``window``: the range of ids they were read from."""
    if not leads:
        return []
    known = [row.id for row in leads]
    past = entry_reads.past_enrollments(conn, known, window=window)
    types = _entry_types(campaigns)
    events = entry_reads.entry_events(conn, known, types, window=window) if types else {}
    return decide(catalog, campaigns, leads, past, events, now)


def _enroll_rows(conn: Connection, catalog: Catalog, campaigns: list[Campaign], leads: Sequence[Any], now: datetime,
                 *, window: tuple[int, int] | None = None) -> int:
    """Enroll these candidate rows; ``window``: the range of ids they were read from."""
    rows = _decided(conn, catalog, campaigns, leads, now, window=window)
    return store.start(conn, now, rows) if rows else 0


def count_enrollable(conn: Connection, campaign: Campaign, now: datetime) -> int:
    """How many leads would enter ``campaign`` (as it is given, paused or not) if it were in force now: the same
    decision as :func:`enroll_leads`, read only, for ``nurture plan``."""
    catalog = Catalog(campaigns={campaign.id: campaign})
    bounds = entry_reads.lead_id_bounds(conn)
    if bounds is None:
        return 0
    sql = entry_sql([campaign], conn.dialect)
    count, after, last = 0, bounds[0] - 1, bounds[1]
    while after < last:
        leads = entry_reads.leads_in_range(conn, after, after + WINDOW, sql)
        count += len(_decided(conn, catalog, [campaign], leads, now, window=(after, after + WINDOW)))
        after += WINDOW
    return count


def enroll_in_transaction(conn: Connection, catalog: Catalog, lead_ids: Sequence[int], now: datetime, *,
                          campaign_ids: Collection[str] | None = None) -> int:
    """Enroll these leads inside the caller's transaction (intake: the event and its consequences commit together);
    only into ``campaign_ids`` when given. Returns how many enrollments were created."""
    campaigns = active_campaigns(catalog, campaign_ids)
    wanted = sorted(set(lead_ids))
    if not campaigns or not wanted:
        return 0
    sql = _sql(catalog, campaigns, conn.dialect)
    created = 0
    for start in range(0, len(wanted), CHUNK):
        leads = entry_reads.leads_by_ids(conn, wanted[start : start + CHUNK], sql)
        created += _enroll_rows(conn, catalog, campaigns, leads, now)
    return created


def enroll_imported(conn: Connection, catalog: Catalog, updated_ids: Sequence[int], inserted: tuple[int, int],
                    now: datetime) -> int:
    """Enroll the leads an import batch just wrote, inside its transaction: the existing leads it updated
    (``updated_ids``) and those it inserted, whose ids are in the range ``inserted`` (after, up to): read as a range
    of the primary key, and their enrollments and events as that range of lead ids (for new leads, an index probe
    that finds nothing), not looked up one email at a time."""
    campaigns = active_campaigns(catalog)
    if not campaigns:
        return 0
    sql = _sql(catalog, campaigns, conn.dialect)
    created = 0
    wanted = sorted(set(updated_ids))
    for start in range(0, len(wanted), CHUNK):
        leads = entry_reads.leads_by_ids(conn, wanted[start : start + CHUNK], sql)
        created += _enroll_rows(conn, catalog, campaigns, leads, now)
    after, last = inserted
    while after < last:
        up_to = min(after + WINDOW, last)
        leads = entry_reads.leads_in_range(conn, after, up_to, sql)
        created += _enroll_rows(conn, catalog, campaigns, leads, now, window=(after, up_to))
        after = up_to
    return created


def enroll_leads(engine: Engine, catalog: Catalog, now: datetime, lead_ids: Iterable[int] | None = None, *,
                 campaign_ids: Collection[str] | None = None, stopping: Callable[[], bool] | None = None) -> int:
    """Enroll every matching lead (or just ``lead_ids``) into every campaign (or ``campaign_ids``) it may enter now;
    return how many.

    New enrollments are due at once: the dispatcher's first look at them plans the first step properly. Given leads
    are decided in transactions of :data:`CHUNK`; every lead, in ranges of :data:`WINDOW` ids, one transaction each,
    so other writers take turns with it. ``stopping`` is asked between ranges: when it says so the rest is left
    """
    campaigns = active_campaigns(catalog, campaign_ids)
    if not campaigns:
        return 0
    created = 0
    if lead_ids is not None:
        wanted = sorted(set(lead_ids))
        for start in range(0, len(wanted), CHUNK):
            with transaction(engine) as conn:
                created += enroll_in_transaction(conn, catalog, wanted[start : start + CHUNK], now,
                                                 campaign_ids=campaign_ids)
        return created
    created, _ = enroll_every_lead(engine, catalog, campaigns, now, stopping=stopping)
    return created


def enroll_every_lead(engine: Engine, catalog: Catalog, campaigns: list[Campaign], now: datetime, *,
                      stopping: Callable[[], bool] | None = None) -> tuple[int, bool]:
    """Consider every lead for ``campaigns``, a range of ids at a time; return (created, whether it went to the end).

    Leads created after it began were enrolled by whatever created them. Many new enrollments refresh the
    planner's statistics of the table at the end."""
    with transaction(engine, read_only=True) as conn:
        bounds = entry_reads.lead_id_bounds(conn)
    if bounds is None:
        return 0, True
    sql = _sql(catalog, campaigns, engine.dialect)
    created, after, last = 0, bounds[0] - 1, bounds[1]
    while after < last:
        if stopping is not None and stopping():
            return created, False
        with transaction(engine) as conn:
            leads = entry_reads.leads_in_range(conn, after, after + WINDOW, sql)
            created += _enroll_rows(conn, catalog, campaigns, leads, now, window=(after, after + WINDOW))
        after += WINDOW
    if created >= WINDOW:
        with transaction(engine) as conn:
            entry_reads.refresh_enrollment_statistics(conn)
    return created, True

