"""Every step counted: per campaign, enrollments and how they ended (with readable labels); per email step and A/B
variant, sent, opened and clicked; per branch and wait-for step, the leads that went each way."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nurture.core.metrics.facts import DeliveryCount, EnrollmentCount, OutcomeCount
from nurture.core.metrics.tables import Column, Definition, Table, rate

_EXIT_LABELS = {
    "completed": "finished every step",
    "unsubscribed": "unsubscribed",
    "bounced": "email bounced",
    "spam_complaint": "marked as spam",
    "lead deleted": "lead deleted",
    "stage:sql": "became an SQL",
    "stage:opportunity": "became an opportunity",
    "stage:customer": "became a customer",
    "stage:disqualified": "disqualified",
    "stage:recycled": "recycled by sales",
}


def _words(code: str) -> str:
    return code.replace("_", " ").replace("-", " ")


def exit_label(reason: str | None) -> str:
    """How an enrollment's end reason reads: ``goal:pricing_request`` -> ``reached goal: pricing request``."""
    if not reason:
        return "ended"
    if reason in _EXIT_LABELS:
        return _EXIT_LABELS[reason]
    kind, _, rest = reason.partition(":")
    if kind == "goal" and rest:
        return f"reached goal: {_words(rest)}"
    if kind == "stage" and rest:
        return f"moved to stage {rest}"
    return reason


def outcome_label(outcome: str, detail: str) -> tuple[str, str]:
    """(the kind of step, how the way a lead went reads) for a path outcome."""
    if outcome == "branch":
        return "branch", detail.replace("->", "→")
    if outcome == "event":
        return "wait for", f"event: {detail}"
    if outcome == "timeout":
        return "wait for", f"timeout: {detail}"
    if outcome == "late":
        return "skipped", "too late after downtime (catch_up.max_late)"
    return "skipped", detail or "condition not met"


@dataclass
class Steps:
    """Campaigns and their steps over the period."""

    campaigns: list[dict[str, Any]] = field(default_factory=list)
    exits: list[dict[str, Any]] = field(default_factory=list)
    emails: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)

    key = "steps"
    title = "Campaigns and steps"

    def to_json(self) -> dict[str, Any]:
        """JSON, keys named for people."""
        return {"campaigns": self.campaigns, "exits": self.exits, "email_steps": self.emails,
                "step_outcomes": self.outcomes}

    def tables(self) -> list[Table]:
        """Campaigns, exits, email steps (variants side by side) and branch / wait-for outcomes."""
        rates = [Column("open_rate", "Open", "rate"), Column("click_rate", "Click", "rate")]
        return [
            Table("campaigns", "Campaigns",
                  [Column("campaign", "Campaign", "text"), Column("enrolled", "Enrolled"), Column("active", "Active now"),
                   Column("completed", "Completed"), Column("exited", "Exited"), Column("sent", "Sent"), *rates],
                  self.campaigns, items=("campaign",)),
            Table("exits", "Why enrollments ended",
                  [Column("campaign", "Campaign", "text"), Column("reason", "Reason", "text"),
                   Column("code", "Code", "text"), Column("leads", "Leads")], self.exits, items=("campaign", "reason")),
            Table("email_steps", "Email steps (A/B variants side by side)",
                  [Column("campaign", "Campaign", "text"), Column("step", "Step", "text"),
                   Column("variant", "Variant", "text"), Column("sent", "Sent"), Column("failed", "Failed"),
                   Column("opened", "Opened"), Column("clicked", "Clicked"), *rates],
                  self.emails, items=("campaign", "step", "variant")),
            Table("step_outcomes", "Branch and wait-for steps: leads per outcome",
                  [Column("campaign", "Campaign", "text"), Column("step", "Step", "text"),
                   Column("kind", "Kind", "text"), Column("outcome", "Outcome", "text"), Column("leads", "Leads"),
                   Column("share", "Share", "rate")], self.outcomes, items=("campaign", "step", "outcome")),
        ]

    def definitions(self) -> list[Definition]:
        """How the figures are computed."""
        return [
            Definition("Enrolled, completed, exited", "enrollments started, and ended, in the period; active: now"),
            Definition("Open and click rates", "emails of the period opened (a click counts as an open: images may be "
                       "blocked) or clicked at least once, ÷ emails sent"),
            Definition("Outcomes", "the way each lead went at a branch (the rule that matched) or a wait-for step "
                       "(the event came first, or the timeout), in the period; share of that step's leads"),
        ]


def build_steps(enrollments: Iterable[EnrollmentCount], deliveries: Iterable[DeliveryCount],
                outcomes: Iterable[OutcomeCount], *, campaign_order: Mapping[str, int] | None = None) -> Steps:
    """Campaigns and steps from the period's counts; ``campaign_order``: campaign id -> step order (for sorting)."""
    per_campaign: dict[str, Counter[str]] = defaultdict(Counter)
    exits: Counter[tuple[str, str]] = Counter()
    for row in enrollments:
        c = per_campaign[row.campaign_id]
        if row.kind == "started":
            c["enrolled"] += row.count
        elif row.kind == "active":
            c["active"] += row.count
        elif row.status == "completed":
            c["completed"] += row.count
            exits[(row.campaign_id, row.end_reason or "completed")] += row.count
        else:
            c["exited"] += row.count
            exits[(row.campaign_id, row.end_reason or "")] += row.count
    per_step: dict[tuple[str, str, str | None], Counter[str]] = defaultdict(Counter)
    for d in deliveries:
        s = per_step[(d.campaign_id, d.step_id, d.variant)]
        if d.status == "sent":
            s["sent"] += d.count
            s["opened"] += d.opened
            s["clicked"] += d.clicked
        elif d.status == "failed":
            s["failed"] += d.count
        per_campaign.setdefault(d.campaign_id, Counter())  # listed even with no enrollment in the period
    for (campaign, _step, _variant), s in per_step.items():
        per_campaign[campaign].update(sent=s["sent"], opened=s["opened"], clicked=s["clicked"])
    steps = Steps()
    steps.campaigns = [
        {"campaign": cid, "enrolled": c["enrolled"], "active": c["active"], "completed": c["completed"],
         "exited": c["exited"], "sent": c["sent"], "open_rate": rate(c["opened"], c["sent"]),
         "click_rate": rate(c["clicked"], c["sent"])} for cid, c in sorted(per_campaign.items())
    ]
    steps.exits = [{"campaign": cid, "reason": exit_label(code), "code": code, "leads": n}
                   for (cid, code), n in sorted(exits.items(), key=lambda item: (item[0][0], -item[1], item[0][1]))]
    order = campaign_order or {}
    steps.emails = [
        {"campaign": cid, "step": sid, "variant": variant, "sent": s["sent"], "failed": s["failed"],
         "opened": s["opened"], "clicked": s["clicked"], "open_rate": rate(s["opened"], s["sent"]),
         "click_rate": rate(s["clicked"], s["sent"])}
        for (cid, sid, variant), s in sorted(per_step.items(), key=lambda item: (
            item[0][0], order.get(f"{item[0][0]}/{item[0][1]}", 0), item[0][1], item[0][2] or ""))
    ]
    per_outcome: Counter[tuple[str, str, str, str]] = Counter()
    for o in outcomes:
        kind, label = outcome_label(o.outcome, o.detail)
        per_outcome[(o.campaign_id, o.step_id, kind, label)] += o.count
    step_totals: Counter[tuple[str, str]] = Counter()
    for (cid, sid, _kind, _label), n in per_outcome.items():
        step_totals[(cid, sid)] += n
    steps.outcomes = [
        {"campaign": cid, "step": sid, "kind": kind, "outcome": label, "leads": n,
         "share": rate(n, step_totals[(cid, sid)])}
        for (cid, sid, kind, label), n in sorted(per_outcome.items(), key=lambda item: (
            item[0][0], order.get(f"{item[0][0]}/{item[0][1]}", 0), item[0][1], -item[1], item[0][3]))
    ]
    return steps
