"""What a replay found, per campaign and per step: the emails each version would have sent (beside the ones the
database recorded), which of them would have gone earlier, later or not at all, and where the leads would now stand.

Filled one enrollment at a time (:meth:`ReplayReport.add`), so a replay over many enrollments keeps only counts and a
few examples. Examples name enrollment and lead ids, never emails.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nurture.core.replay import RecordedEnrollment, Replayed, step_of

EXAMPLES = 5
"""Enrollments shown per campaign whose emails differ between the versions."""


def _iso(at: datetime | None) -> str | None:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z") if at is not None else None


def _short(at: datetime | None) -> str:
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M}Z" if at is not None else "-"


@dataclass
class StepReplay:
    """One step's emails over the period: recorded, under the old version, under the new one, and how they moved."""

    step: str
    recorded: int = 0
    old: int = 0
    new: int = 0
    earlier: int = 0  # sent under both, earlier under the new version
    later: int = 0  # sent under both, later under the new version
    only_old: int = 0  # sent under the old version only
    only_new: int = 0  # sent under the new version only

    def to_json(self) -> dict[str, Any]:
        """As ``--json`` prints it."""
        return {"step": self.step, "recorded": self.recorded, "old": self.old, "new": self.new,
                "earlier": self.earlier, "later": self.later, "only_old": self.only_old, "only_new": self.only_new}


@dataclass(frozen=True)
class Difference:
    """One email that differs between the versions for one enrollment: its times under each (None: not sent)."""

    enrollment_id: int
    lead_id: int
    step_key: str
    old_at: datetime | None
    new_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        """As ``--json`` prints it."""
        return {"enrollment": self.enrollment_id, "lead": self.lead_id, "step": self.step_key,
                "old_at": _iso(self.old_at), "new_at": _iso(self.new_at)}


def _standings_json(standings: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, int]] = {"at": {}, "ended": {}}
    for (kind, name), count in sorted(standings.items()):
        found[kind][name] = count
    return found


@dataclass
class CampaignReplay:
    """One campaign's replay."""

    campaign: str
    step_order: list[str] = field(default_factory=list)  # the new version's steps, then the old version's others
    enrollments: int = 0
    changed: int = 0  # enrollments with at least one email sent differently
    steps: dict[str, StepReplay] = field(default_factory=dict)
    old_standing: Counter[tuple[str, str]] = field(default_factory=Counter)
    new_standing: Counter[tuple[str, str]] = field(default_factory=Counter)
    examples: list[Difference] = field(default_factory=list)

    def step(self, step_id: str) -> StepReplay:
        """The counts of one step (created at 0)."""
        found = self.steps.get(step_id)
        if found is None:
            found = self.steps[step_id] = StepReplay(step_id)
        return found

    def ordered_steps(self) -> list[StepReplay]:
        """The steps in the campaign's order (new version first), then any other step that recorded an email."""
        known = [self.steps[step] for step in self.step_order if step in self.steps]
        return known + [self.steps[step] for step in sorted(set(self.steps) - set(self.step_order))]

    def add(self, record: RecordedEnrollment, old: Replayed, new: Replayed, recorded: Iterable[str]) -> None:
        """Count one enrollment: ``recorded`` are the step keys of its recorded emails in the period."""
        self.enrollments += 1
        for key in recorded:
            self.step(step_of(key)).recorded += 1
        old_at = {send.step_key: send.at for send in old.sends}
        new_at = {send.step_key: send.at for send in new.sends}
        for send in old.sends:
            self.step(step_of(send.step_key)).old += 1
        for send in new.sends:
            self.step(step_of(send.step_key)).new += 1
        differences: list[Difference] = []
        for key in [*old_at, *(k for k in new_at if k not in old_at)]:
            before, after = old_at.get(key), new_at.get(key)
            if before == after:
                continue
            counts = self.step(step_of(key))
            if before is None:
                counts.only_new += 1
            elif after is None:
                counts.only_old += 1
            elif after < before:
                counts.earlier += 1
            else:
                counts.later += 1
            differences.append(Difference(record.id, record.lead_id, key, before, after))
        if differences:
            self.changed += 1
            if len(self.examples) < EXAMPLES:
                self.examples.append(differences[0])
        self.old_standing[old.standing] += 1
        self.new_standing[new.standing] += 1

    def to_json(self) -> dict[str, Any]:
        """As ``--json`` prints it."""
        return {
            "campaign": self.campaign, "enrollments": self.enrollments, "changed": self.changed,
            "steps": [step.to_json() for step in self.ordered_steps()],
            "standing": {"old": _standings_json(self.old_standing), "new": _standings_json(self.new_standing)},
            "examples": [example.to_json() for example in self.examples],
        }

    def lines(self) -> list[str]:
        """The printed form."""
        out = [f"{self.campaign}: {self.enrollments} enrollment(s), {self.changed} with emails sent differently"]
        out.append(f"  {'step':24} {'recorded':>8} {'old':>6} {'new':>6} {'earlier':>7} {'later':>6} "
                   f"{'only old':>8} {'only new':>8}")
        for s in self.ordered_steps():
            out.append(f"  {s.step:24} {s.recorded:>8} {s.old:>6} {s.new:>6} {s.earlier:>7} {s.later:>6} "
                       f"{s.only_old:>8} {s.only_new:>8}")
        out.append(f"  {'now standing':24} {'old':>8} {'new':>6}")
        for kind, name in sorted(set(self.old_standing) | set(self.new_standing)):
            label = f"at {name}" if kind == "at" else f"ended: {name}"
            out.append(f"  {label:24} {self.old_standing[(kind, name)]:>8} {self.new_standing[(kind, name)]:>6}")
        for example in self.examples:
            out.append(f"  e.g. enrollment {example.enrollment_id} (lead {example.lead_id}) {example.step_key}: "
                       f"old {_short(example.old_at)}, new {_short(example.new_at)}")
        return out


@dataclass
class ReplayReport:
    """The whole replay: the period and each campaign's replay (campaigns without enrollments in it are left out)."""

    since: datetime
    until: datetime
    campaigns: dict[str, CampaignReplay] = field(default_factory=dict)

    def campaign(self, campaign_id: str, step_order: Sequence[str] = ()) -> CampaignReplay:
        """One campaign's replay (created empty, with its steps' order)."""
        found = self.campaigns.get(campaign_id)
        if found is None:
            found = self.campaigns[campaign_id] = CampaignReplay(campaign_id, list(step_order))
        return found

    @property
    def enrollments(self) -> int:
        """Enrollments replayed, over every campaign."""
        return sum(c.enrollments for c in self.campaigns.values())

    def to_json(self) -> dict[str, Any]:
        """As ``--json`` prints it."""
        return {"since": _iso(self.since), "until": _iso(self.until), "enrollments": self.enrollments,
                "campaigns": [self.campaigns[c].to_json() for c in sorted(self.campaigns)]}

    def lines(self) -> list[str]:
        """The printed form: a header, then each campaign's table."""
        out = [f"Replay {_short(self.since)} .. {_short(self.until)}: {self.enrollments} enrollment(s) in "
               f"{len(self.campaigns)} campaign(s)"]
        for campaign_id in sorted(self.campaigns):
            out.append("")
            out.extend(self.campaigns[campaign_id].lines())
        return out
