"""What an edit of a live campaign changes: the step-level diff of two versions, and where the leads waiting at a
removed step go on.

Where the leads waiting at a removed step go (the rule ``nurture plan`` shows and ``nurture run`` applies):

1. To the step of the new version whose ``replaces`` names the removed step, if one does.
2. Otherwise along the removed step's *unconditional* continuation in the version they ran under: the step that
   follows it whatever happens there (an email, update, webhook or stream step, a ``when`` that skips to the same
   place, a branch or ``wait_for`` whose outcomes all lead to one step), through further removed steps, to the first
   step that still exists. If that continuation is the end of the campaign, the enrollment completes.
3. Where what follows depends on an outcome (a branch, a ``wait_for`` whose ``on_event`` and ``on_timeout`` differ),
   or the version the leads ran under is unknown, they leave the campaign with the end reason ``step_removed:<id>``:
   no lead is sent on a path it did not earn.

Pure: campaigns in, decisions out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from nurture.definitions.campaign import END, Campaign, Step

STEP_REMOVED = "step_removed"
"""The end reason's prefix for leads that left because their step was removed: ``step_removed:<id>``."""


@dataclass(frozen=True)
class Relocation:
    """Where the leads waiting at a removed step go: ``target``, or (``target`` None) out, with ``end_reason``."""

    removed: str
    target: str | None
    end_reason: str | None
    why: str

    def to_json(self) -> dict[str, Any]:
        """As ``nurture plan --json`` and the recorded summary show it."""
        return {"removed": self.removed, "to": self.target, "end_reason": self.end_reason, "why": self.why}


def _next_in_order(campaign: Campaign, step: Step) -> str:
    index = campaign.index_of(step.id)
    assert index is not None
    return campaign.steps[index + 1].id if index + 1 < len(campaign.steps) else END


def continuation(campaign: Campaign, step: Step) -> tuple[set[str], str]:
    """Every step ``step`` can lead to (``end`` for the end of the campaign), and what decides between them ("" when
    it leads to one place whatever happens)."""
    after = _next_in_order(campaign, step)

    def target(jump: str | None) -> str:
        return jump if jump else after

    if step.branch is not None:
        outcomes = {target(rule.goto) for rule in step.branch}
        if not any(rule.when is None for rule in step.branch):
            outcomes.add(after)  # no rule matched: the next step
        return outcomes, "" if len(outcomes) == 1 else "the branch it takes"
    if step.wait_for is not None:
        outcomes = {target(step.on_event or step.goto), target(step.on_timeout or step.goto)}
        spec = step.wait_for
        return outcomes, "" if len(outcomes) == 1 else f"whether {spec.event} comes within {spec.timeout}"
    return {target(step.goto)}, ""


def relocate_removed(old: Campaign | None, new: Campaign, removed: str) -> Relocation:
    """Where the leads waiting at ``removed`` (a step of ``old``, the version they ran under, that ``new`` lacks) go
    on (see the module docstring)."""
    leave = f"{STEP_REMOVED}:{removed}"
    replacement = new.replacement_of(removed)
    if replacement is not None:
        return Relocation(removed, replacement, None, f"'{replacement}' replaces it")
    if old is None or old.index_of(removed) is None:
        return Relocation(removed, None, leave, "the version they ran under is unknown, and no step replaces it")
    current, seen = removed, {removed}
    while True:
        outcomes, decided_by = continuation(old, old.step(current))
        if decided_by:
            where = "it" if current == removed else f"'{current}'"
            return Relocation(removed, None, leave, f"what follows {where} depends on {decided_by}, and no step "
                                                    "replaces it")
        following = next(iter(outcomes))
        if following == END:
            return Relocation(removed, None, "completed", "nothing followed it but the end of the campaign")
        if new.index_of(following) is not None:
            return Relocation(removed, following, None, f"'{following}' followed it whatever happened")
        replacement = new.replacement_of(following)
        if replacement is not None:
            return Relocation(removed, replacement, None, f"'{following}' followed it and '{replacement}' replaces that")
        if following in seen or old.index_of(following) is None:
            return Relocation(removed, None, leave, "no step that still exists follows it")
        seen.add(following)
        current = following


@dataclass(frozen=True)
class Change:
    """One value that differs between two versions: a step's ``wait``, a campaign's ``paused``, ..."""

    field: str
    old: Any
    new: Any

    def to_json(self) -> dict[str, Any]:
        """As ``nurture plan --json`` shows it."""
        return {"field": self.field, "old": self.old, "new": self.new}

    def __str__(self) -> str:
        return f"{self.field}: {_shown(self.old)} -> {_shown(self.new)}"


def _shown(value: Any, width: int = 100) -> str:
    if value is None:
        return "(none)"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[: width - 3] + "..."


_STEP_FIELDS = ("when", "email", "wait_for", "goto", "on_event", "on_timeout", "branch", "stream", "webhook",
                "update", "send_window", "replaces")
_SPLIT = {"email": ("subject", "template", "variants", "goal", "winner"), "wait_for": ("event", "step", "timeout")}
"""Actions compared key by key when both versions have them (a changed subject, a changed timeout)."""
_CAMPAIGN_FIELDS = ("name", "paused", "priority", "holdout", "entry", "exit", "reentry", "timezone",
                    "send_window")


def _written(model: Any) -> dict[str, Any]:
    """A model's values as a file would write them (keys that are not set left out)."""
    return dict(model.model_dump(mode="json", by_alias=True, exclude_none=True))


def _step_changes(old: Step, new: Step) -> list[Change]:
    before, after = _written(old), _written(new)
    changes = [Change("action", old.action, new.action)] if old.action != new.action else []
    if before["wait"] != after["wait"]:
        changes.append(Change("wait", before["wait"], after["wait"]))
    for key in _STEP_FIELDS:
        was, now = before.get(key), after.get(key)
        if was == now:
            continue
        if key in _SPLIT and was is not None and now is not None:
            changes += [Change(f"{key}.{part}", was.get(part), now.get(part))
                        for part in _SPLIT[key] if was.get(part) != now.get(part)]
        else:
            changes.append(Change(key, was, now))
    return changes


def _moved(old_ids: list[str], new_ids: list[str]) -> list[str]:
    """The kept steps whose order changed: those outside a longest common subsequence of the two orders."""
    kept_old = [i for i in old_ids if i in new_ids]
    kept_new = [i for i in new_ids if i in old_ids]
    n, m = len(kept_old), len(kept_new)
    lengths = [[0] * (m + 1) for _ in range(n + 1)]
    for a in range(n - 1, -1, -1):
        for b in range(m - 1, -1, -1):
            lengths[a][b] = lengths[a + 1][b + 1] + 1 if kept_old[a] == kept_new[b] else \
                max(lengths[a + 1][b], lengths[a][b + 1])
    in_order, a, b = set(), 0, 0
    while a < n and b < m:
        if kept_old[a] == kept_new[b]:
            in_order.add(kept_old[a])
            a, b = a + 1, b + 1
        elif lengths[a + 1][b] >= lengths[a][b + 1]:
            a += 1
        else:
            b += 1
    return [i for i in kept_new if i not in in_order]


@dataclass
class CampaignDiff:
    """The step-level difference between two versions of a campaign."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    steps: dict[str, list[Change]] = field(default_factory=dict)  # kept step id -> what changed in it
    campaign: list[Change] = field(default_factory=list)  # entry, exit, priority, paused, ...

    @property
    def empty(self) -> bool:
        """Whether the two versions do the same (an edit of comments or layout only)."""
        return not (self.added or self.removed or self.moved or self.steps or self.campaign)

    def changed(self, field_name: str) -> Change | None:
        """The campaign-level change of ``field_name``, if any."""
        return next((c for c in self.campaign if c.field == field_name), None)

    def to_json(self) -> dict[str, Any]:
        """As ``nurture plan --json`` shows it."""
        return {"added": self.added, "removed": self.removed, "moved": self.moved,
                "steps": {step: [c.to_json() for c in changes] for step, changes in self.steps.items()},
                "campaign": [c.to_json() for c in self.campaign]}

    def lines(self) -> list[str]:
        """One line per difference, for people."""
        lines = [f"{c}" for c in self.campaign]
        lines += [f"step '{s}' added" for s in self.added]
        lines += [f"step '{s}' removed" for s in self.removed]
        lines += [f"step '{s}' moved" for s in self.moved]
        lines += [f"step '{s}': {c}" for s, changes in self.steps.items() for c in changes]
        return lines


def diff(old: Campaign, new: Campaign) -> CampaignDiff:
    """What differs between two versions of a campaign, step by step (steps are matched by id)."""
    old_ids, new_ids = [s.id for s in old.steps], [s.id for s in new.steps]
    result = CampaignDiff(
        added=[i for i in new_ids if i not in old_ids],
        removed=[i for i in old_ids if i not in new_ids],
        moved=_moved(old_ids, new_ids),
    )
    for step in new.steps:
        if step.id in old_ids:
            changes = _step_changes(old.step(step.id), step)
            if changes:
                result.steps[step.id] = changes
    before, after = _written(old), _written(new)
    result.campaign = [Change(key, before.get(key), after.get(key)) for key in _CAMPAIGN_FIELDS
                       if before.get(key) != after.get(key)]
    return result
