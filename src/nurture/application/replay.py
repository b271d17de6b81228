"""Replay: the last days' real enrollments run again under an old and a new version of the campaigns, to see per step
how many emails each would have sent and where the leads would now stand, before the new version goes live.

It reads, never writes: enrollments a page at a time (by id, in short read-only transactions), with what their leads
went through (events, email deliveries, stage changes); each enrollment is run through both versions with the
worker's engine on a virtual clock (:func:`nurture.core.replay.replay_enrollment`) and counted into the report. Only
counts and a few examples are kept, so memory stays bounded however many enrollments the period holds.

Which enrollments: those of a campaign in either version (or of ``campaign_ids``) enrolled by ``now`` and not ended
before ``since``. One enrolled inside the period replays from its enrollment; one enrolled before starts where its
recorded path says it stood at ``since`` (see :mod:`nurture.core.replay`). Entry rules are not replayed: the leads
are those the campaign really took in. The other campaigns' emails are the recorded ones (for the frequency cap).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from nurture.core.engine import PathEntry
from nurture.core.facts import Engagement, Send
from nurture.core.replay import RecordedEnrollment, StageChangeAt, lead_at, replay_enrollment
from nurture.core.replay_report import ReplayReport
from nurture.definitions.loader import Catalog
from nurture.storage import replay_rows
from nurture.storage.database import transaction
from nurture.storage.rows import lead_view

PAGE = 500
"""Enrollments read (and replayed) at a time."""
_COUNTED = ("claimed", "sent", "retry")  # deliveries the frequency cap counts, as the worker's own read does


def _record(row: Any) -> RecordedEnrollment:
    path = tuple(PathEntry.from_json(entry) for entry in (row.state or {}).get("path", []))
    return RecordedEnrollment(row.id, row.lead_id, row.campaign_id, row.step_id, row.arrived_at, row.enrolled_at,
                              row.ended_at, row.end_reason, path, bool(row.held_out))


def _send(row: Any) -> Send:
    content = row.step_key.split("/", 1)[1] if "/" in row.step_key else None
    return Send(row.sent_at or row.created_at, row.campaign_id, row.step_key, content)


def _step_order(old: Catalog, new: Catalog, campaign_id: str) -> list[str]:
    order: list[str] = []
    for catalog in (new, old):
        campaign = catalog.campaigns.get(campaign_id)
        order += [step.id for step in campaign.steps if step.id not in order] if campaign else []
    return order


def replay(
    engine: Engine,
    old: Catalog,
    new: Catalog,
    *,
    since: datetime,
    now: datetime,
    default_tz: str = "UTC",
    campaign_ids: Iterable[str] | None = None,
    page: int = PAGE,
) -> ReplayReport:
    """Replay the enrollments active in [since, now] under ``old`` and ``new`` (each with its own policy)."""
    wanted = sorted(set(old.campaigns) | set(new.campaigns))
    if campaign_ids is not None:
        wanted = sorted(set(campaign_ids))
    report = ReplayReport(since, now)
    last_id = 0
    while wanted:
        with transaction(engine, read_only=True) as conn:
            rows = replay_rows.enrollments_page(conn, wanted, since, now, after_id=last_id, limit=page)
            if not rows:
                break
            lead_ids = sorted({row.lead_id for row in rows})
            leads = replay_rows.leads(conn, lead_ids)
            events = replay_rows.events(conn, lead_ids, min(row.enrolled_at for row in rows), now)
            deliveries = replay_rows.email_deliveries(conn, lead_ids, now)
            stages = replay_rows.stage_changes(conn, lead_ids)
        for row in rows:
            if row.lead_id in leads:
                _replay_one(report, old, new, _record(row), leads[row.lead_id], events[row.lead_id],
                            deliveries[row.lead_id], stages[row.lead_id], since=since, now=now, default_tz=default_tz)
        last_id = rows[-1].id
        if len(rows) < page:
            break
    return report


def _replay_one(report: ReplayReport, old: Catalog, new: Catalog, record: RecordedEnrollment, lead_row: Any,
                events: Sequence[Any], deliveries: Sequence[Any], stages: Sequence[Any], *, since: datetime,
                now: datetime, default_tz: str) -> None:
    """Replay one enrollment under both versions and count it into ``report``."""
    start = max(record.enrolled_at, since)
    lead, changes = lead_at(lead_view(lead_row), [StageChangeAt(s.at, s.from_stage, s.to_stage) for s in stages],
                            unsubscribed_at=lead_row.unsubscribed_at, bounced_at=lead_row.bounced_at, at=start,
                            until=now)
    history = [Engagement(e.type, e.occurred_at, e.campaign_id, e.step_key, e.properties or {})
               for e in events if e.occurred_at >= record.enrolled_at]
    # the lead's other emails, and this enrollment's before the start: the replay makes its own from the start on
    sends = [_send(d) for d in deliveries
             if d.status in _COUNTED and (d.enrollment_id != record.id or d.created_at < start)]
    recorded = [d.step_key for d in deliveries if d.enrollment_id == record.id and since <= d.created_at <= now]
    replayed = [
        replay_enrollment(catalog.campaigns.get(record.campaign_id), catalog.policy, record, lead, since=since,
                          until=now, events=history, changes=changes, sends=sends, default_tz=default_tz)
        for catalog in (old, new)
    ]
    campaign = report.campaign(record.campaign_id, _step_order(old, new, record.campaign_id))
    campaign.add(record, replayed[0], replayed[1], recorded)
