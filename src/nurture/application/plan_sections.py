"""The sections ``nurture plan`` adds beside the campaigns and files: the scoring and sales impact of an edited
``scoring.yaml`` or ``sales.yaml`` (also what ``nurture run`` logs and records when it applies one), and, with
``--replay``, the replay of the last days' enrollments under the versions in force and the files on disk.

The old side is always what the database last ran, rebuilt from the texts stored with the versions in force
(:mod:`nurture.storage.versions`): the scoring and sales rules, the campaigns and the policy. A project file with no
version recorded is compared as the worker ran without it: the empty rules (scoring nothing, promoting nobody), so
adding ``scoring.yaml`` to a database that holds leads shows what it does to them; a database the worker never ran on
(no version of anything recorded) has no baseline, and no section. A campaign whose version in force
was recorded without its text (before texts were kept) cannot be rebuilt: the replay takes the file on disk for both
sides and names the campaign. Everything here reads, never writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from nurture.definitions.loader import Catalog, validate_document
from nurture.definitions.policy import Policy
from nurture.definitions.sales import SalesRules, validate_sales
from nurture.definitions.scoring import ScoringRules, validate_scoring
from nurture.definitions.sources import DefinitionSource, campaign_from_text
from nurture.definitions.yamlsource import parse_yaml
from nurture.storage import versions
from nurture.storage.database import transaction

if TYPE_CHECKING:  # these types only annotate; the impact and the replay are imported when a section is counted
    from sqlalchemy.engine import Engine

    from nurture.core.replay_report import ReplayReport
    from nurture.core.score_impact import ScoringImpact

RULE_FILES = ("scoring", "sales")


@dataclass(frozen=True)
class RulesVersion:
    """One rules file: the version in force (None: none recorded, or its file was removed) and the one on disk (None:
    no file), and whether a version of it is recorded at all."""

    kind: str
    old_version: str | None
    new_version: str | None
    recorded: bool  # a version of this file is in force in the database

    def to_json(self) -> dict[str, Any]:
        """As ``nurture plan --json`` shows it."""
        return {"kind": self.kind, "from": self.old_version, "to": self.new_version, "recorded": self.recorded}


@dataclass
class ScoringSection:
    """What the edited ``scoring.yaml``/``sales.yaml`` change for the leads there are (``nurture plan``'s
    "N leads change score band, M become MQL, K would be promoted"). ``impact`` is None when the version in force was
    stored without its text (or no longer validates): then nothing can be counted, and the section is live so that
    someone reviews the edit."""

    files: list[RulesVersion]
    impact: ScoringImpact | None
    key: str = "scoring"

    @property
    def live(self) -> bool:
        """Whether any lead changes score band, becomes an MQL, would be promoted or disqualified."""
        if self.impact is None:
            return True
        counts = (self.impact.band_changes, self.impact.become_mql, self.impact.promoted, self.impact.disqualified)
        return any(count.count for count in counts)

    def version_of(self, kind: str) -> RulesVersion | None:
        """The versions compared for one file."""
        return next((found for found in self.files if found.kind == kind), None)

    def to_json(self) -> dict[str, Any]:
        """As ``nurture plan --json`` shows it (and as it is recorded with the new version when applied)."""
        return {"live": self.live, "files": [found.to_json() for found in self.files],
                **(self.impact.to_json() if self.impact is not None else {"impact": None})}

    def lines(self) -> list[str]:
        """For people: which files are compared, then the impact's summary and its example lead ids."""
        compared = ", ".join(f"{found.kind}.yaml {found.old_version or '(none)'} -> {found.new_version or '(none)'}"
                             for found in self.files)
        lines = [f"scoring and sales impact ({compared}):"]
        if self.impact is None:
            return [*lines, "  the version in force no longer validates or was recorded without its text: the impact "
                            "cannot be counted"]
        return [*lines, *(f"  {line}" for line in self.impact.lines())]


@dataclass
class ReplaySection:
    """``nurture plan --replay``: the period's enrollments replayed under the versions in force (old) and the files on
    disk (new). Never live: it shows what the edit would have done over past days, while what it does to the leads
    there are now is counted by the campaign sections, so ``--replay`` never changes the exit code."""

    report: ReplayReport
    not_rebuilt: list[str] = field(default_factory=list)  # campaigns in force without their text
    key: str = "replay"
    live: bool = False

    def to_json(self) -> dict[str, Any]:
        """As ``nurture plan --json`` shows it: ``nurture replay --json``'s report, and the campaigns not rebuilt."""
        return {**self.report.to_json(), "not_rebuilt": list(self.not_rebuilt)}

    def lines(self) -> list[str]:
        """For people: ``nurture replay``'s table, under the heading of the versions compared."""
        lines = ["replay under the versions in force (old) and the files on disk (new):"]
        lines += [f"  {line}" if line else "" for line in self.report.lines()]
        for campaign_id in self.not_rebuilt:
            lines.append(f"  campaign {campaign_id}: its version in force was recorded without its text; "
                         "replayed with the file on disk on both sides")
        return lines


def _rules(kind: str, text: str | None, where: str) -> ScoringRules | SalesRules | None:
    """The rules of a stored or loaded text: the empty rules for no file, None for a text that no longer validates
    (it cannot be compared)."""
    if text is None:
        return ScoringRules() if kind == "scoring" else SalesRules()
    validate = validate_scoring if kind == "scoring" else validate_sales
    rules, problems = validate(parse_yaml(text, where))
    return None if problems else rules


def _in_force(engine: Engine) -> dict[tuple[str, str], Any]:
    with transaction(engine, read_only=True) as conn:
        return versions.in_force(conn)


def rules_changed(in_force: dict[tuple[str, str], Any], sources: Sequence[DefinitionSource]) -> list[RulesVersion]:
    """Both rules files, when the text on disk of either is not the version in force (or it was removed); empty when
    neither changed."""
    on_disk = {source.kind: source for source in sources if source.kind in RULE_FILES}
    found = []
    for kind in RULE_FILES:
        row, source = in_force.get((kind, kind)), on_disk.get(kind)
        found.append(RulesVersion(kind, row.content_hash if row is not None else None,
                                  source.content_hash if source is not None else None, row is not None))
    return found if any(f.old_version != f.new_version for f in found) else []


def scoring_section(engine: Engine, sources: Sequence[DefinitionSource], now: datetime) -> ScoringSection | None:
    """The scoring and sales impact of putting the rules files on disk in force, or None when neither changed."""
    in_force = _in_force(engine)
    files = rules_changed(in_force, sources)
    if not files or not in_force:  # nothing recorded at all: the worker never ran on this database, no baseline
        return None
    on_disk = {source.kind: source for source in sources if source.kind in RULE_FILES}
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    for kind in RULE_FILES:
        row, source = in_force.get((kind, kind)), on_disk.get(kind)
        if row is not None and row.text is None:
            return ScoringSection(files, None)
        old[kind] = _rules(kind, row.text if row is not None else None, f"{kind}.yaml (in force {row.content_hash})"
                           if row is not None else f"{kind}.yaml")
        new[kind] = _rules(kind, source.text if source is not None else None,
                           source.path if source is not None else f"{kind}.yaml")
        if old[kind] is None or new[kind] is None:
            return ScoringSection(files, None)
    from nurture.application.definition_impact import scoring_impact

    impact = scoring_impact(engine, old["scoring"], new["scoring"], old["sales"], new["sales"], now=now)
    return ScoringSection(files, impact)


def catalog_in_force(engine: Engine, new: Catalog) -> tuple[Catalog, list[str]]:
    """The campaigns and policy the database last ran, rebuilt from their stored texts, and the ids of the campaigns
    that cannot be (recorded without text, or no longer parsing: ``new``'s campaign stands in for them)."""
    in_force = _in_force(engine)
    old = Catalog()
    not_rebuilt: list[str] = []
    for (kind, name), row in sorted(in_force.items()):
        if kind == "campaign":
            campaign = campaign_from_text(row.text, f"{name} ({row.content_hash})") if row.text is not None else None
            if campaign is not None:
                old.campaigns[name] = campaign
            else:
                not_rebuilt.append(name)
                if name in new.campaigns:
                    old.campaigns[name] = new.campaigns[name]
        elif kind == "policy":
            policy = validate_document(parse_yaml(row.text, f"policy.yaml ({row.content_hash})"), Policy)[0] \
                if row.text is not None else None
            old.policy = policy if policy is not None else new.policy
    return old, not_rebuilt


def replay_section(engine: Engine, catalog: Catalog, *, since: datetime, now: datetime,
                   default_tz: str = "UTC") -> ReplaySection:
    """The enrollments of [since, now] replayed under the versions in force and the definitions on disk."""
    old, not_rebuilt = catalog_in_force(engine, catalog)
    from nurture.application.replay import replay

    report = replay(engine, old, catalog, since=since, now=now, default_tz=default_tz)
    return ReplaySection(report, not_rebuilt)


__all__ = ["ReplaySection", "RulesVersion", "ScoringSection", "catalog_in_force", "replay_section", "rules_changed",
           "scoring_section"]
