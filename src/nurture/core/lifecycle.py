"""The lifecycle's order, and whether a stage given from outside may apply to a lead (pure).

A lead moves forward along ``lead < mql < sql < opportunity < customer``. ``recycled`` and ``disqualified`` are off
that line: only scoring and the sales rules (disqualification), sales' verdicts (reject) and an admin's explicit
override (``nurture leads stage``) put a lead there or take it out.

A stage *from outside* is one a person or another system states about a lead: a CSV import's ``stage`` column,
``POST /v1/leads``, ``nurture leads add --stage``. :func:`outside_stage_refusal` is the one rule every such path asks
before writing it: for a new lead the stated stage applies (except ``recycled`` and ``disqualified``); for a lead
nurture knows, only a move forward applies, so re-importing an old file never undoes what promotion and sales did.
A refused value is skipped, not an error: the rest of the row or request is written, and the caller reports the
:class:`StageNotApplied` (its :attr:`~StageNotApplied.message` names the reason and the stages).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FUNNEL = ("lead", "mql", "sql", "opportunity", "customer")
"""The stages a lead moves forward through, in order."""

SET_BY_RULES_OR_SALES = ("recycled", "disqualified")
"""The stages only the rules, sales' verdicts or an admin's override set: never a file or the API."""

STAGES = (*FUNNEL, *SET_BY_RULES_OR_SALES)
"""Every lifecycle stage."""

_RANK = {stage: rank for rank, stage in enumerate(FUNNEL)}

BACKWARDS = "backwards"
"""The stated stage comes before the lead's own in the funnel."""
KEPT = "kept"
"""The lead is recycled or disqualified: a stage from outside does not take it out."""
RESERVED = "reserved"
"""The stated stage is recycled or disqualified, which only the rules, sales or an override set."""


@dataclass(frozen=True)
class StageNotApplied:
    """A stage from outside that was not written, and why (``reason``: :data:`BACKWARDS`, :data:`KEPT` or
    :data:`RESERVED`). ``stage`` is the lead's stage, which it keeps (``lead`` for a new lead)."""

    reason: str
    stage: str
    given: str

    @property
    def message(self) -> str:
        """The reason for people, naming the stages: ``would move backwards: sql → lead``."""
        if self.reason == BACKWARDS:
            return f"would move backwards: {self.stage} → {self.given}"
        if self.reason == KEPT:
            return f"set by rules or sales: {self.stage}; given {self.given}"
        return f"only rules or sales set {self.given}"

    def to_json(self) -> dict[str, Any]:
        """For the API and ``--json`` forms."""
        return {"reason": self.reason, "stage": self.stage, "given": self.given, "message": self.message}


def rank(stage: str) -> int | None:
    """The stage's place in :data:`FUNNEL` (0 for ``lead``), None for ``recycled`` and ``disqualified``."""
    return _RANK.get(stage)


def outside_stage_refusal(current: str | None, given: str | None) -> StageNotApplied | None:
    """Why ``given``, a stage from a file or the API, must not be written over ``current`` (None: a new lead); None
    when it may (or when nothing is given, or it is the lead's stage already: there is nothing to write then).

    - ``recycled`` and ``disqualified`` are never taken from outside (:data:`RESERVED`);
    - a new lead takes any other stage;
    - a recycled or disqualified lead keeps its stage (:data:`KEPT`);
    - otherwise the stage applies only when it is further along the funnel (else :data:`BACKWARDS`).
    """
    if given is None or given == current:
        return None
    if given not in STAGES:
        raise ValueError(f"unknown stage {given!r}")
    if given not in _RANK:
        return StageNotApplied(RESERVED, current or FUNNEL[0], given)
    if current is None:
        return None
    current_rank = _RANK.get(current)
    if current_rank is None:
        return StageNotApplied(KEPT, current, given)
    if _RANK[given] < current_rank:
        return StageNotApplied(BACKWARDS, current, given)
    return None
