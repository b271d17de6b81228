"""A/B tests of email steps: each variant's rate on the step's goal, the comparison of the leader with every other
variant, the rule that makes a call, and the verdict in plain words.

Counting (:func:`count_goal`): a lead counts once per step, in the variant it was sent first; it converted when its
goal came (a click or an open on that step's email; an event or becoming an SQL within the goal's window after the
send). For goals with a window, only sends whose window is over count, so that every counted lead had the same time
to convert; clicks and opens count from the send.

The rule (:func:`evaluate`): no call before every variant was sent to ``min_sends`` leads. Then the variant with the
highest rate is compared with each other one by the two-proportion z-test; it wins when every comparison is
significant at ``confidence``. With more than two variants the level of each comparison is Bonferroni-corrected
(``1 - (1 - confidence) / (k - 1)``), so the call as a whole keeps ``confidence``. The difference's interval is
Newcombe's at the same level; the probability to beat (Beta-Binomial, uniform priors) is shown beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from nurture.core.facts import CLICK, OPEN
from nurture.core.proportions import newcombe, probability_to_beat, z_test
from nurture.definitions.experiments import Goal, goal_window


@dataclass(frozen=True)
class StepSend:
    """One sent email of an A/B step: to which lead, which variant, which delivery, when."""

    lead_id: int
    variant: str
    delivery_id: int
    sent_at: datetime


@dataclass(frozen=True)
class VariantCount:
    """A variant's leads sent to and converted on the goal."""

    variant: str
    sends: int
    conversions: int

    @property
    def rate(self) -> float | None:
        """conversions / sends (None before any send)."""
        return self.conversions / self.sends if self.sends else None


def count_goal(
    sends: Sequence[StepSend], goal: Goal, now: datetime, *, variants: Sequence[str],
    engaged: Mapping[int, set[str]], goal_times: Mapping[int, Sequence[datetime]],
) -> list[VariantCount]:
    """Each variant's leads and conversions on ``goal`` at ``now``, in the order of ``variants``.

    ``engaged``: delivery id -> the email event types recorded on it; ``goal_times``: lead id -> when it recorded the
    goal event or became an SQL (for those goals).
    """
    first: dict[int, StepSend] = {}
    deliveries: dict[int, list[int]] = {}
    for send in sorted(sends, key=lambda s: (s.sent_at, s.delivery_id)):
        first.setdefault(send.lead_id, send)
        deliveries.setdefault(send.lead_id, []).append(send.delivery_id)
    window = goal_window(goal)
    leads = dict.fromkeys(variants, 0)
    converted = dict.fromkeys(variants, 0)
    for lead_id, send in first.items():
        if send.variant not in leads:
            continue  # a variant since removed from the campaign
        if window is None:
            wanted = {CLICK} if goal == "click" else {OPEN, CLICK}  # a click is an open (images may be blocked)
            hit = any(engaged.get(d, set()) & wanted for d in deliveries[lead_id])
        else:
            closes = send.sent_at + window.as_timedelta()
            if closes > now:
                continue  # its window is still open: not counted yet
            hit = any(send.sent_at <= at <= closes for at in goal_times.get(lead_id, ()))
        leads[send.variant] += 1
        converted[send.variant] += hit
    return [VariantCount(v, leads[v], converted[v]) for v in variants]


@dataclass(frozen=True)
class Comparison:
    """The leader against one other variant: the difference of rates with its interval, the test's p-value and the
    probability that the leader's true rate is the higher."""

    variant: str
    against: str
    difference: float
    low: float
    high: float
    p_value: float
    probability_to_beat: float


@dataclass(frozen=True)
class AbVerdict:
    """What an A/B test says now."""

    counts: tuple[VariantCount, ...]
    leader: str | None
    comparisons: tuple[Comparison, ...]
    more_sends: int  # sends still needed before any call (0: enough)
    winner: str | None  # the variant that won, at the confidence asked for
    verdict: str


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def _names(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def evaluate(counts: Sequence[VariantCount], *, goal_label: str, confidence: float, min_sends: int) -> AbVerdict:
    """The comparison of the variants and the call, if one can be made (see the module docstring)."""
    level = f"{confidence * 100:g}%"
    more = sum(max(0, min_sends - c.sends) for c in counts)
    ranked = sorted(counts, key=lambda c: (-(c.rate if c.rate is not None else -1.0), c.variant))
    leader = ranked[0] if ranked and ranked[0].sends else None
    others = list(ranked[1:])
    alpha = (1 - confidence) / max(1, len(others))
    comparisons = tuple(
        Comparison(
            leader.variant, other.variant,
            (leader.rate or 0.0) - (other.rate or 0.0),
            *newcombe(leader.conversions, leader.sends, other.conversions, other.sends, 1 - alpha),
            z_test(leader.conversions, leader.sends, other.conversions, other.sends)[1],
            probability_to_beat(leader.conversions, leader.sends, other.conversions, other.sends),
        )
        for other in others
    ) if leader is not None else ()
    name = leader.variant if leader is not None else None
    if len(counts) < 2 or more:
        return AbVerdict(tuple(counts), name, comparisons, more,
                         None, f"not enough data: {more} more sends (at least {min_sends} per variant)")
    assert leader is not None
    if all(c.difference > 0 and c.p_value < alpha for c in comparisons):
        beaten = _names([c.against for c in comparisons])
        return AbVerdict(tuple(counts), name, comparisons, 0, leader.variant,
                         f"{leader.variant} beats {beaten} on {goal_label}, {level} confidence")
    closest = max(comparisons, key=lambda c: c.p_value)
    second = next(c for c in counts if c.variant == closest.against)
    if closest.difference <= 0:
        detail = f"{leader.variant} and {second.variant} are level at {_pct(leader.rate)}"
    else:
        detail = (f"{leader.variant} {_pct(leader.rate)} against {second.variant} {_pct(second.rate)}, "
                  f"p = {closest.p_value:.3f}; a call at {level} confidence needs p < {alpha:.3g}")
    return AbVerdict(tuple(counts), name, comparisons, 0, None,
                     f"no significant difference on {goal_label} yet: {detail}")
