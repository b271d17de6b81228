"""What an edit of the scoring or sales rules does to the leads there are (pure): each lead's score under the old and
the new rules, its score band, whether it would become an MQL, be promoted to SQL or be disqualified.

Points are fixed when an event is recorded, so an edited ``scoring.yaml`` changes what the next events are worth, not
the history. To compare the two versions, both rescore the recorded history as if they had been in force all along:
each event is awarded its points again (:func:`nurture.core.scoring.event_points`, the daily caps counted as intake
counts them), except events whose points are a decision rather than a rule (a sales verdict), which keep theirs. With
the rules that really ran, the old score is the stored one.

The counts compare the versions with each other, so an unchanged file changes nothing: a band is the side of the
``thresholds.mql`` score a lead is on (``scoring.yaml`` names its thresholds; there is one), "becomes an MQL" is what
scoring would do to a lead or recycled lead under the new rules and not under the old, "promoted" and "disqualified"
what the sales rules' score-and-fit and disqualification rules would decide (intent triggers fire when their event is
recorded, never again for past events). A recycled lead still waiting out ``recycle_after`` is neither.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from nurture.core.facts import Engagement, LeadView
from nurture.core.promotion import DISQUALIFY, PROMOTE, Decision, decide
from nurture.core.scoring import ScoreAccumulator, ScoreBreakdown, event_points, fit_items, stage_after_scoring, utc_day
from nurture.definitions.sales import SalesRules
from nurture.definitions.scoring import ScoringRules

EXAMPLES = 5
"""Lead ids shown per count."""
NO_THRESHOLD = "no mql threshold"


def rescored(rules: ScoringRules, lead: LeadView, events: Sequence[tuple[Engagement, float]], now: datetime, *,
             kept_types: Collection[str] = ()) -> ScoreBreakdown:
    """The lead's score at ``now`` had ``rules`` awarded the points of its ``events`` (oldest first, each with its
    stored points): every event scored again, with the daily caps, except ``kept_types``, which keep their points."""
    behaviour = ScoreAccumulator(rules, now)
    scored_today: Counter[tuple[str, Any]] = Counter()
    for event, stored in events:
        if event.type in kept_types:
            points = stored
        else:
            day = (event.type, utc_day(event.at))
            points, _why = event_points(rules, event, scored_today[day])
            if points:
                scored_today[day] += 1
        behaviour.add(event.type, event.at, points)
    return behaviour.breakdown(rules, fit_items(rules, lead))


def scored_types(rules: ScoringRules) -> set[str]:
    """The event types the rules give points to (the others score nothing under them)."""
    return set(rules.behaviour.events)


def band(rules: ScoringRules, total: float) -> str:
    """The score band of ``total``: at or over the MQL threshold (``mql``), below it, or no threshold."""
    threshold = rules.thresholds.mql
    if threshold is None:
        return NO_THRESHOLD
    return "mql" if total >= threshold else "below mql"


@dataclass(frozen=True)
class LeadImpact:
    """One lead under both versions."""

    old: ScoreBreakdown
    new: ScoreBreakdown
    old_band: str
    new_band: str
    becomes_mql: bool
    promoted: bool
    disqualified: bool


def _stage_and_decision(rules: ScoringRules, sales: SalesRules | None, lead: LeadView, breakdown: ScoreBreakdown,
                        waiting: bool) -> tuple[bool, Decision | None]:
    """Whether scoring makes the lead an MQL, and what the sales rules then decide (with no event)."""
    mql = stage_after_scoring(rules, lead.stage, breakdown) is not None and not waiting
    if sales is None:
        return mql, None
    view = replace(lead, stage="mql" if mql else lead.stage, score=breakdown.total)
    decision = decide(sales, view, breakdown, None)
    if decision is not None and decision.kind == PROMOTE and waiting:
        decision = None  # a lead sales said "not now" to is promoted by a hand-raise only
    return mql, decision


def lead_impact(old_rules: ScoringRules, new_rules: ScoringRules, old_sales: SalesRules | None,
                new_sales: SalesRules | None, lead: LeadView, events: Sequence[tuple[Engagement, float]],
                now: datetime, *, kept_types: Collection[str] = (), waiting: bool = False) -> LeadImpact:
    """One lead's score, band and stage decisions under the old and the new rules. ``waiting``: a recycled lead still
    waiting out its ``recycle_after`` (scoring and score-and-fit rules leave it be)."""
    old = rescored(old_rules, lead, events, now, kept_types=kept_types)
    new = rescored(new_rules, lead, events, now, kept_types=kept_types)
    old_mql, old_decision = _stage_and_decision(old_rules, old_sales, lead, old, waiting)
    new_mql, new_decision = _stage_and_decision(new_rules, new_sales, lead, new, waiting)

    def kind(decision: Decision | None) -> str | None:
        return decision.kind if decision is not None else None

    return LeadImpact(
        old, new, band(old_rules, old.total), band(new_rules, new.total), new_mql and not old_mql,
        kind(new_decision) == PROMOTE and kind(old_decision) != PROMOTE,
        kind(new_decision) == DISQUALIFY and kind(old_decision) != DISQUALIFY,
    )


@dataclass
class Count:
    """How many leads something applies to, with the first few lead ids."""

    count: int = 0
    examples: list[int] = field(default_factory=list)

    def add(self, lead_id: int) -> None:
        """Count one more lead."""
        self.count += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(lead_id)

    def to_json(self) -> dict[str, Any]:
        """As ``--json`` prints it."""
        return {"count": self.count, "examples": list(self.examples)}


@dataclass
class ScoringImpact:
    """What the new scoring and sales rules change for the leads there are, compared with the old ones."""

    leads: int = 0
    band_changes: Count = field(default_factory=Count)
    moves: Counter[tuple[str, str]] = field(default_factory=Counter)  # (old band, new band) -> leads
    become_mql: Count = field(default_factory=Count)
    promoted: Count = field(default_factory=Count)
    disqualified: Count = field(default_factory=Count)
    score_changes: Count = field(default_factory=Count)

    def add(self, lead_id: int, impact: LeadImpact) -> None:
        """Count one lead."""
        self.leads += 1
        if impact.old.total != impact.new.total:
            self.score_changes.add(lead_id)
        if impact.old_band != impact.new_band:
            self.band_changes.add(lead_id)
            self.moves[(impact.old_band, impact.new_band)] += 1
        if impact.becomes_mql:
            self.become_mql.add(lead_id)
        if impact.promoted:
            self.promoted.add(lead_id)
        if impact.disqualified:
            self.disqualified.add(lead_id)

    def to_json(self) -> dict[str, Any]:
        """As ``--json`` prints it."""
        return {
            "leads": self.leads, "score_changes": self.score_changes.to_json(),
            "band_changes": {**self.band_changes.to_json(),
                             "moves": [{"from": old, "to": new, "count": count}
                                       for (old, new), count in sorted(self.moves.items())]},
            "become_mql": self.become_mql.to_json(), "promoted": self.promoted.to_json(),
            "disqualified": self.disqualified.to_json(),
        }

    def lines(self) -> list[str]:
        """The printed form: the summary sentence, then each count with example lead ids."""
        out = [f"{self.band_changes.count} leads change score band, {self.become_mql.count} become MQL, "
               f"{self.promoted.count} would be promoted"
               + (f", {self.disqualified.count} would be disqualified" if self.disqualified.count else "")
               + f" (of {self.leads} leads; {self.score_changes.count} change score)"]
        for (old, new), count in sorted(self.moves.items()):
            out.append(f"  {old} -> {new}: {count}")
        for label, counted in (("score band", self.band_changes), ("become MQL", self.become_mql),
                               ("promoted", self.promoted), ("disqualified", self.disqualified),
                               ("score", self.score_changes)):
            if counted.examples:
                out.append(f"  {label}: e.g. lead {', '.join(map(str, counted.examples))}")
        return out
