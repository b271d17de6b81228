"""The report of ``nurture plan`` (and the summary ``nurture run`` logs and records when it applies a change): one
section per campaign and per project file, each with its lines for people and its JSON for CI.

A section is anything with ``key`` (where its JSON goes), ``live`` (whether it changes something for leads in the
database), ``to_json()`` and ``lines()``: other reports (the scoring and sales impact, a replay) add theirs to
:attr:`PlanReport.sections`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from nurture.core.changes import CampaignDiff, Relocation


class PlanSection(Protocol):
    """A part of the plan that CI and people read."""

    key: str

    @property
    def live(self) -> bool:
        """Whether it changes something for leads in the database."""
        ...

    def to_json(self) -> dict[str, Any]:
        """Its part of ``nurture plan --json``."""
        ...

    def lines(self) -> list[str]:
        """Its lines of ``nurture plan``."""
        ...


@dataclass(frozen=True)
class Effect:
    """What a change does to the leads in the database, counted there: ``leads`` of them are concerned.

    Kinds: ``removed_step`` (``to`` and ``end_reason`` say where they go), ``wait`` and ``timeout`` (``by``: how much
    later, negative when sooner), ``content`` (subject, template or variants), ``step`` (another change of the step
    they wait at), ``moved``, ``next`` (what follows the step they wait at: ``next``, and what did: ``was``),
    ``paused``, ``unpaused``, ``enroll`` (leads that will be enrolled), ``exit`` (enrollments that will end),
    ``priority``, ``timing`` (timezone or send window), ``campaign_removed``.
    """

    kind: str
    leads: int
    text: str
    step: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """As ``nurture plan --json`` shows it."""
        return {"kind": self.kind, "step": self.step, "leads": self.leads, **self.detail, "text": self.text}


@dataclass(frozen=True)
class Move:
    """The enrollments of one campaign version waiting at a removed step, and where they go (what applying does)."""

    version: str | None
    relocation: Relocation
    leads: int


@dataclass
class CampaignPlan:
    """One campaign: its version in force, the one on disk, the step-level diff and the effects on live leads."""

    campaign: str
    status: str  # new | changed | text (an edit of comments or layout only) | removed | unchanged
    old_version: str | None
    new_version: str | None
    diff: CampaignDiff | None = None  # None for a new or removed campaign, or an old version kept without its text
    effects: list[Effect] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    key: str = "campaigns"

    @property
    def live(self) -> bool:
        """Whether any lead in the database is concerned."""
        return any(effect.leads for effect in self.effects)

    @property
    def replans(self) -> bool:
        """Whether applying it makes the campaign's active enrollments due, to be planned again."""
        return self.status == "changed" or bool(self.moves)

    def to_json(self) -> dict[str, Any]:
        """As ``nurture plan --json`` shows it (and as it is recorded with the version when applied)."""
        return {"campaign": self.campaign, "status": self.status, "from": self.old_version, "to": self.new_version,
                "live": self.live, "diff": self.diff.to_json() if self.diff is not None else None,
                "effects": [effect.to_json() for effect in self.effects]}

    def lines(self) -> list[str]:
        """For people: a heading, the diff, then the effects on live leads."""
        versions = " -> ".join(v for v in (self.old_version, self.new_version) if v)
        lines = [f"campaign {self.campaign}: {self.status} ({versions})"]
        if self.status == "text":
            lines.append("  only comments or layout changed: nothing changes for leads")
        elif self.status == "changed" and self.diff is None:
            lines.append("  the version in force was recorded without its text: no step-level diff")
        lines += [f"  {line}" for line in (self.diff.lines() if self.diff is not None else [])]
        lines += [f"  > {effect.text}" for effect in self.effects]
        return lines


@dataclass
class FilePlan:
    """policy.yaml, scoring.yaml or sales.yaml: whether it changed, and how its text differs."""

    kind: str
    status: str  # new | changed | removed
    old_version: str | None
    new_version: str | None
    added_lines: int = 0
    removed_lines: int = 0
    diff: list[str] = field(default_factory=list)  # the unified diff of the texts
    key: str = "files"
    live: bool = False  # what it does to leads is counted by the scoring and sales impact, not here

    def to_json(self) -> dict[str, Any]:
        """As ``nurture plan --json`` shows it."""
        return {"kind": self.kind, "status": self.status, "from": self.old_version, "to": self.new_version,
                "added_lines": self.added_lines, "removed_lines": self.removed_lines, "diff": self.diff}

    def lines(self, *, shown: int = 20) -> list[str]:
        """For people: a heading and the first ``shown`` lines of the diff."""
        versions = " -> ".join(v for v in (self.old_version, self.new_version) if v)
        lines = [f"{self.kind}.yaml: {self.status} ({versions}), +{self.added_lines} -{self.removed_lines} lines"]
        if self.status != "changed":
            return lines
        lines += [f"  {line}" for line in self.diff[:shown]]
        if len(self.diff) > shown:
            lines.append(f"  ... {len(self.diff) - shown} more diff lines (--json has them all)")
        return lines


@dataclass
class PlanReport:
    """Everything ``nurture plan`` found: one section per changed campaign and file, and any others added."""

    campaigns: list[CampaignPlan] = field(default_factory=list)
    files: list[FilePlan] = field(default_factory=list)
    sections: list[PlanSection] = field(default_factory=list)  # further reports, under their own keys

    def changed(self) -> list[CampaignPlan]:
        """The campaigns whose version on disk is not the one in force, or that have leads to move."""
        return [plan for plan in self.campaigns if plan.status != "unchanged" or plan.moves]

    def shown(self) -> list[PlanSection]:
        """The sections with something to say: the changed campaigns, the changed files, the others."""
        return [*self.changed(), *self.files, *self.sections]

    @property
    def live(self) -> bool:
        """Whether anything changes for leads in the database (``nurture plan`` exits 2 then)."""
        every: list[PlanSection] = [*self.campaigns, *self.files, *self.sections]
        return any(section.live for section in every)

    def to_json(self) -> dict[str, Any]:
        """``nurture plan --json``."""
        data: dict[str, Any] = {"live": self.live, "campaigns": [plan.to_json() for plan in self.changed()],
                                "files": [plan.to_json() for plan in self.files]}
        for section in self.sections:
            data.setdefault(section.key, []).append(section.to_json())
        return data

    def lines(self) -> list[str]:
        """``nurture plan``."""
        lines: list[str] = []
        for section in self.shown():
            lines += section.lines()
        if not lines:
            return ["nothing changed: the definitions on disk are the versions in force"]
        verdict = "live leads are concerned: review before applying" if self.live else "no live lead is concerned"
        return [*lines, verdict]


__all__ = ["CampaignPlan", "Effect", "FilePlan", "Move", "PlanReport", "PlanSection"]
