"""The sales side: SQLs waiting for sales per owner, their age against the SLA; rejection reasons, by count and by
the nurture campaign the lead came through; acceptance by owner and by promotion rule."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from nurture.core.metrics.facts import Decision, WaitingSql
from nurture.core.metrics.tables import Column, Definition, Summary, Table, rate

UNASSIGNED = "(no owner)"
NO_RULE = "(by hand)"
NOT_NURTURED = "(not nurtured)"
QUEUE_LIMIT = 50
"""The longest-waiting SQLs listed one by one (every one is counted per owner)."""


def _hours(delta: timedelta) -> float:
    return round(delta.total_seconds() / 3600, 1)


def _acceptance(rows: Mapping[str, Counter[str]], key: str) -> list[dict[str, Any]]:
    return [{key: name, "accepted": c["accepted"], "rejected": c["rejected"],
             "sql_acceptance_rate": rate(c["accepted"], c["accepted"] + c["rejected"])}
            for name, c in sorted(rows.items())]


@dataclass
class SalesSide:
    """What sales did with the SQLs, and what waits for them."""

    sla_hours: float | None = None
    waiting: int = 0
    over_sla: int = 0
    queue_by_owner: list[dict[str, Any]] = field(default_factory=list)
    queue: list[dict[str, Any]] = field(default_factory=list)
    rejection_reasons: list[dict[str, Any]] = field(default_factory=list)
    rejections_by_campaign: list[dict[str, Any]] = field(default_factory=list)
    acceptance_by_owner: list[dict[str, Any]] = field(default_factory=list)
    acceptance_by_rule: list[dict[str, Any]] = field(default_factory=list)

    key = "sales"
    title = "Sales side"

    def to_json(self) -> dict[str, Any]:
        """JSON, keys named for people."""
        return {"sla_hours": self.sla_hours, "waiting_for_sales": self.waiting, "over_sla": self.over_sla,
                "queue_by_owner": self.queue_by_owner, "longest_waiting": self.queue,
                "rejection_reasons": self.rejection_reasons, "rejections_by_campaign": self.rejections_by_campaign,
                "acceptance_by_owner": self.acceptance_by_owner, "acceptance_by_rule": self.acceptance_by_rule}

    def summary(self) -> Summary:
        """The headline figures."""
        summary = Summary()
        summary.add("waiting_for_sales", "Waiting for sales", self.waiting)
        summary.add("over_sla", "Over the SLA", self.over_sla, "count",
                    f"SLA {self.sla_hours:g} h" if self.sla_hours is not None else "no SLA in sales.yaml")
        return summary

    def tables(self) -> list[Table]:
        """The queue, rejections and acceptance."""
        accept = [Column("accepted", "Accepted"), Column("rejected", "Rejected"),
                  Column("sql_acceptance_rate", "Acceptance", "rate")]
        return [
            Table("queue_by_owner", "Waiting for sales, per owner",
                  [Column("owner", "Owner", "text"), Column("waiting", "Waiting"), Column("over_sla", "Over SLA"),
                   Column("median_age_hours", "Median age", "hours"), Column("oldest_hours", "Oldest", "hours")],
                  self.queue_by_owner, items=("owner",)),
            Table("longest_waiting", f"Longest waiting (up to {QUEUE_LIMIT})",
                  [Column("lead_id", "Lead id", "text"), Column("owner", "Owner", "text"),
                   Column("promoted_at", "SQL since", "text"), Column("age_hours", "Age", "hours"),
                   Column("over_sla", "Over SLA", "text"), Column("rule", "Promoted by", "text")],
                  self.queue, items=("lead_id",)),
            Table("rejection_reasons", "Rejection reasons",
                  [Column("reason", "Reason", "text"), Column("label", "Label", "text"), Column("rejected", "Rejected"),
                   Column("share", "Share", "rate")], self.rejection_reasons, items=("reason",)),
            Table("rejections_by_campaign", "Rejections by nurture campaign of origin",
                  [Column("campaign", "Campaign", "text"), Column("reason", "Reason", "text"),
                   Column("rejected", "Rejected")], self.rejections_by_campaign, items=("campaign", "reason")),
            Table("acceptance_by_owner", "Acceptance by owner", [Column("owner", "Owner", "text"), *accept],
                  self.acceptance_by_owner, items=("owner",)),
            Table("acceptance_by_rule", "Acceptance by promotion rule", [Column("rule", "Rule", "text"), *accept],
                  self.acceptance_by_rule, items=("rule",)),
        ]

    def definitions(self) -> list[Definition]:
        """How the figures are computed."""
        return [
            Definition("Waiting for sales", "leads at stage sql now, aged from their latest promotion; over the SLA "
                       "when older than sales.yaml's handoff.sla"),
            Definition("Rejections, acceptance", "sales' decisions in the period; a rejection's campaign of origin is "
                       "the nurture campaign the lead was in when it became an SQL; the rule is the promotion rule of "
                       "the SQL decided"),
        ]


def build_sales(waiting: Iterable[WaitingSql], decisions: Iterable[Decision], *, now: datetime,
                sla: timedelta | None, labels: Mapping[str, str]) -> SalesSide:
    """The sales side from the SQLs waiting now and the decisions of the period; ``labels``: reject code -> label."""
    side = SalesSide(sla_hours=_hours(sla) if sla else None)
    ages: dict[str, list[timedelta]] = defaultdict(list)
    queue = sorted(waiting, key=lambda w: (w.promoted_at, w.lead_id))
    for sql in queue:
        ages[sql.owner or UNASSIGNED].append(now - sql.promoted_at)
    side.waiting = len(queue)
    side.over_sla = sum(1 for sql in queue if sla and now - sql.promoted_at > sla)
    side.queue_by_owner = [
        {"owner": owner, "waiting": len(found), "over_sla": sum(1 for age in found if sla and age > sla),
         "median_age_hours": round(statistics.median(age.total_seconds() for age in found) / 3600, 1),
         "oldest_hours": _hours(max(found))}
        for owner, found in sorted(ages.items())
    ]
    side.queue = [{"lead_id": sql.lead_id, "owner": sql.owner or UNASSIGNED, "promoted_at": sql.promoted_at.isoformat(),
                   "age_hours": _hours(now - sql.promoted_at), "over_sla": bool(sla and now - sql.promoted_at > sla),
                   "rule": sql.rule or NO_RULE} for sql in queue[:QUEUE_LIMIT]]
    reasons: Counter[str] = Counter()
    by_campaign: Counter[tuple[str, str]] = Counter()
    owners: dict[str, Counter[str]] = defaultdict(Counter)
    rules: dict[str, Counter[str]] = defaultdict(Counter)
    for decision in decisions:
        verdict, n = "accepted" if decision.accepted else "rejected", decision.count
        owners[decision.owner or UNASSIGNED][verdict] += n
        rules[decision.rule or NO_RULE][verdict] += n
        if not decision.accepted:
            code = decision.reason_code or "(none)"
            reasons[code] += n
            for campaign in decision.campaigns or (NOT_NURTURED,):
                by_campaign[(campaign, code)] += n
    total = sum(reasons.values())
    side.rejection_reasons = [{"reason": code, "label": labels.get(code, code), "rejected": n, "share": rate(n, total)}
                              for code, n in sorted(reasons.items(), key=lambda item: (-item[1], item[0]))]
    side.rejections_by_campaign = [{"campaign": c, "reason": code, "rejected": n}
                                   for (c, code), n in sorted(by_campaign.items())]
    side.acceptance_by_owner = _acceptance(owners, "owner")
    side.acceptance_by_rule = _acceptance(rules, "rule")
    return side
