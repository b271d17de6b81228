"""Funnel and campaign metrics for ``nurture report`` (and the dashboard): closing the loop between marketing and sales.

- Funnel: leads that became MQL / SQL / opportunity / customer in the period, MQL→SQL conversion, SQL acceptance
  (accepted by sales vs rejected), median time from MQL to SQL, lead velocity (new MQLs per week, and the change from
  the previous period).
- Campaigns: enrollments, how they ended, emails sent, unique open and click rates.
- Steps: the same per email step and A/B variant, so variants can be compared.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from nurture.storage.database import transaction
from nurture.storage.tables import D, E, EV, SC


@dataclass
class Funnel:
    """Lifecycle movement in a period."""

    new_mql: int = 0
    new_sql: int = 0
    accepted: int = 0  # sql -> opportunity
    rejected: int = 0  # sql -> recycled / disqualified by sales
    customers: int = 0
    mql_to_sql_rate: float | None = None
    sql_acceptance_rate: float | None = None
    median_hours_mql_to_sql: float | None = None
    mql_per_week: float = 0.0
    mql_velocity_change: float | None = None  # vs the previous period of the same length (0.1 = +10 %)


@dataclass
class StepStats:
    """One email step (and variant) of a campaign."""

    campaign: str
    step: str
    variant: str | None
    sent: int = 0
    failed: int = 0
    opened: int = 0
    clicked: int = 0
    open_rate: float | None = None
    click_rate: float | None = None


@dataclass
class CampaignStats:
    """One campaign."""

    campaign: str
    enrolled: int = 0
    active: int = 0
    completed: int = 0
    exited: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    open_rate: float | None = None
    click_rate: float | None = None


@dataclass
class Report:
    """Everything ``nurture report`` prints."""

    since: datetime
    until: datetime
    funnel: Funnel
    campaigns: list[CampaignStats]
    steps: list[StepStats]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        data = asdict(self)
        data["since"], data["until"] = self.since.isoformat(), self.until.isoformat()
        return data


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _funnel(conn: Any, since: datetime, until: datetime) -> Funnel:
    funnel = Funnel()
    changes = list(conn.execute(
        select(SC.c.lead_id, SC.c.from_stage, SC.c.to_stage, SC.c.at, SC.c.actor)
        .where(SC.c.at >= since - (until - since), SC.c.at < until).order_by(SC.c.at)
    ))
    current = [c for c in changes if c.at >= since]
    previous_mql = sum(1 for c in changes if c.at < since and c.to_stage == "mql")
    funnel.new_mql = sum(1 for c in current if c.to_stage == "mql")
    funnel.new_sql = sum(1 for c in current if c.to_stage == "sql")
    funnel.accepted = sum(1 for c in current if c.from_stage == "sql" and c.to_stage == "opportunity")
    funnel.rejected = sum(1 for c in current if c.from_stage == "sql" and c.to_stage in ("recycled", "disqualified"))
    funnel.customers = sum(1 for c in current if c.to_stage == "customer")
    funnel.mql_to_sql_rate = _rate(funnel.new_sql, funnel.new_mql)
    funnel.sql_acceptance_rate = _rate(funnel.accepted, funnel.accepted + funnel.rejected)
    first_mql: dict[int, datetime] = {}
    for row in conn.execute(select(SC.c.lead_id, func.min(SC.c.at)).where(SC.c.to_stage == "mql", SC.c.at < until)
                            .group_by(SC.c.lead_id)):
        first_mql[row[0]] = row[1]
    waits = [(c.at - first_mql[c.lead_id]).total_seconds() / 3600 for c in current
             if c.to_stage == "sql" and c.lead_id in first_mql and first_mql[c.lead_id] <= c.at]
    funnel.median_hours_mql_to_sql = round(statistics.median(waits), 2) if waits else None
    weeks = max((until - since) / timedelta(weeks=1), 1 / 7)
    funnel.mql_per_week = round(funnel.new_mql / weeks, 2)
    funnel.mql_velocity_change = round((funnel.new_mql - previous_mql) / previous_mql, 4) if previous_mql else None
    return funnel


def _engagement(conn: Any, since: datetime, until: datetime) -> dict[int, set[str]]:
    """Delivery id -> the engagement types recorded for it (opens count clicks too: image blocking)."""
    found: dict[int, set[str]] = defaultdict(set)
    rows = conn.execute(
        select(EV.c.delivery_id, EV.c.type).where(
            EV.c.delivery_id.is_not(None), EV.c.type.in_(("email_open", "email_click")), EV.c.occurred_at >= since
        ).distinct()
    )
    for row in rows:
        found[row.delivery_id].add(row.type)
        if row.type == "email_click":
            found[row.delivery_id].add("email_open")
    return found


def build_report(engine: Engine, *, since: datetime, until: datetime) -> Report:
    """Metrics for the period [since, until)."""
    with transaction(engine, read_only=True) as conn:
        funnel = _funnel(conn, since, until)
        engaged = _engagement(conn, since, until)
        steps: dict[tuple[str, str, str | None], StepStats] = {}
        campaigns: dict[str, CampaignStats] = {}
        for row in conn.execute(
            select(D.c.id, D.c.campaign_id, D.c.step_id, D.c.variant, D.c.status)
            .where(D.c.channel == "email", D.c.created_at >= since, D.c.created_at < until)
        ):
            key = (row.campaign_id, row.step_id, row.variant)
            stats = steps.setdefault(key, StepStats(*key))
            if row.status == "sent":
                stats.sent += 1
                kinds = engaged.get(row.id, set())
                stats.opened += "email_open" in kinds
                stats.clicked += "email_click" in kinds
            elif row.status == "failed":
                stats.failed += 1
        for stats in steps.values():
            stats.open_rate, stats.click_rate = _rate(stats.opened, stats.sent), _rate(stats.clicked, stats.sent)
        for row in conn.execute(
            select(E.c.campaign_id, E.c.status, E.c.end_reason, func.count())
            .where(E.c.enrolled_at < until, (E.c.ended_at.is_(None)) | (E.c.ended_at >= since))
            .group_by(E.c.campaign_id, E.c.status, E.c.end_reason)
        ):
            campaign = campaigns.setdefault(row[0], CampaignStats(row[0]))
            count = row[3]
            campaign.enrolled += count
            if row.status == "active":
                campaign.active += count
            elif row.status == "completed":
                campaign.completed += count
            else:
                reason = row.end_reason or "exited"
                campaign.exited[reason] = campaign.exited.get(reason, 0) + count
    per_campaign: dict[str, Counter[str]] = defaultdict(Counter)
    for stats in steps.values():
        per_campaign[stats.campaign].update(sent=stats.sent, opened=stats.opened, clicked=stats.clicked)
    for campaign_id, totals in per_campaign.items():
        campaign = campaigns.setdefault(campaign_id, CampaignStats(campaign_id))
        campaign.sent = totals["sent"]
        campaign.open_rate, campaign.click_rate = _rate(totals["opened"], totals["sent"]), _rate(totals["clicked"], totals["sent"])
    return Report(since, until, funnel, sorted(campaigns.values(), key=lambda c: c.campaign),
                  sorted(steps.values(), key=lambda s: (s.campaign, s.step, s.variant or "")))
