"""Holdout groups: which entering leads a campaign holds out, and the lift it causes.

A campaign with ``holdout: 10%`` enrolls every lead that enters, but for about one in ten (a hash of lead and
campaign: the same on every worker and after every restart, and the same lead again when it re-enters) it sends
nothing; the enrollment walks the campaign's path all the same, so exits and goals apply to both groups alike.

The lift (:func:`lift`): the MQL→SQL conversion of the leads sent to against the held-out ones (a lead counts once,
at its first enrollment in the period; it converted when it became an SQL after entering), the difference with
Newcombe's interval and the two-proportion z-test's p-value, each group's median time to SQL, and a verdict.
"""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from nurture.core.proportions import newcombe, z_test

MIN_GROUP = 30
"""The leads each group needs before the lift is judged (a rule of thumb for the normal approximation)."""


def held_out(lead_key: str, campaign_id: str, share: float | None) -> bool:
    """Whether the lead is in the campaign's holdout group: a uniform hash of lead and campaign below ``share``."""
    if not share:
        return False
    digest = hashlib.sha256(f"holdout:{campaign_id}:{lead_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


@dataclass(frozen=True)
class GroupFigures:
    """One group of a holdout test: leads, how many became an SQL, and the median time it took them."""

    leads: int
    converted: int
    median_hours_to_sql: float | None

    @property
    def rate(self) -> float | None:
        """converted / leads (None for an empty group)."""
        return self.converted / self.leads if self.leads else None


def group_figures(entries: Sequence[tuple[datetime, datetime | None]]) -> GroupFigures:
    """A group's figures from (entered at, became an SQL at or None) of each of its leads."""
    hours = [(sql - entered).total_seconds() / 3600 for entered, sql in entries if sql is not None]
    return GroupFigures(len(entries), len(hours), round(statistics.median(hours), 2) if hours else None)


def first_sql_after(entered: datetime, sql_times: Sequence[datetime], until: datetime) -> datetime | None:
    """When a lead that entered at ``entered`` became an SQL (the first time at or after it, before ``until``)."""
    return min((at for at in sql_times if entered <= at < until), default=None)


@dataclass(frozen=True)
class Lift:
    """Sent against held out: the difference of conversion rates (sent minus held out) and the verdict."""

    difference: float | None
    low: float | None
    high: float | None
    p_value: float | None
    verdict: str


def _points(value: float) -> str:
    return f"{value * 100:+.1f} points"


def lift(sent: GroupFigures, held: GroupFigures, *, confidence: float = 0.95, min_group: int = MIN_GROUP) -> Lift:
    """The campaign's lift on MQL→SQL conversion, and whether it is measurable at ``confidence``."""
    level = f"{confidence * 100:g}%"
    if sent.leads == 0 or held.leads == 0:
        more = max(0, min_group - held.leads) + max(0, min_group - sent.leads)
        return Lift(None, None, None, None, f"not enough data: {more} more leads (at least {min_group} in each group)")
    difference = sent.converted / sent.leads - held.converted / held.leads
    low, high = newcombe(sent.converted, sent.leads, held.converted, held.leads, confidence)
    p_value = z_test(sent.converted, sent.leads, held.converted, held.leads)[1]
    rates = f"{sent.rate * 100:.1f}% sent against {held.rate * 100:.1f}% held out" if sent.rate is not None \
        and held.rate is not None else ""
    interval = f"{level} interval {low * 100:+.1f} to {high * 100:+.1f} points"
    if held.leads < min_group or sent.leads < min_group:
        more = max(0, min_group - held.leads) + max(0, min_group - sent.leads)
        return Lift(difference, low, high, p_value,
                    f"not enough data: {more} more leads (at least {min_group} in each group)")
    if p_value < 1 - confidence and difference > 0:
        verdict = f"the campaign lifts MQL→SQL conversion by {_points(difference)} ({rates}), {level} confidence"
    elif p_value < 1 - confidence:
        verdict = (f"held-out leads convert better: the campaign lowers MQL→SQL conversion by "
                   f"{_points(-difference).lstrip('+')} ({rates}), {level} confidence")
    else:
        verdict = f"no measurable lift yet: {_points(difference)} ({rates}; {interval})"
    return Lift(difference, low, high, p_value, verdict)
