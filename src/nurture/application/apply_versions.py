"""Putting edited definitions in force (``nurture run`` at start-up): the plan ``nurture plan`` prints, applied in one
transaction with the very counts it reports.

Each campaign, policy, scoring and sales file whose text differs from the version in force is stored as a new version
(with that campaign's part of the plan as its summary); the leads waiting at removed steps go where
:func:`nurture.core.changes.relocate_removed` says (or leave, with the reason); the campaign's other active
enrollments are put under the new version and made due, so the engine plans them again with it.

When ``scoring.yaml`` or ``sales.yaml`` changed, the scoring and sales impact (:func:`scoring_section`: counts and lead
ids) is counted first, in its own read-only transactions, added to the report (so ``nurture run`` logs it) and
recorded under ``impact`` in the summary of each new rules version, provided the versions it compared are still those
in force when the change is applied. It reads every lead with its scored events, so it can be skipped
(``with_impact=False``, ``NURTURE_START_SCORING_IMPACT=false``) where that would slow start-up too much.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from nurture.application.plan import build_plan
from nurture.application.plan_report import CampaignPlan, FilePlan, PlanReport
from nurture.application.plan_sections import ScoringSection, scoring_section
from nurture.core.engine import PathEntry
from nurture.definitions.loader import Catalog
from nurture.definitions.sources import DefinitionSource
from nurture.storage import live_enrollments as live
from nurture.storage import versions
from nurture.storage.database import transaction
from nurture.storage.dialect import lock_for_versions

if TYPE_CHECKING:  # the connection types only annotate: the queries are storage's
    from sqlalchemy.engine import Connection, Engine


def apply_versions(engine: Engine, catalog: Catalog, sources: Sequence[DefinitionSource], now: datetime, *,
                   with_impact: bool = True) -> PlanReport:
    """Put the definitions on disk in force; return what it did (the plan, as ``nurture plan`` printed it, with the
    scoring and sales impact unless ``with_impact`` is False)."""
    impact = scoring_section(engine, sources, now) if with_impact else None
    with transaction(engine) as conn:
        lock_for_versions(conn)
        report = build_plan(conn, catalog, sources, now)
        texts = {(source.kind, source.name): source for source in sources}
        for plan in report.changed():
            _apply_campaign(conn, catalog, plan, texts.get(("campaign", plan.campaign)), now)
        for file_plan in report.files:
            source = texts.get((file_plan.kind, file_plan.kind))
            if source is None:
                versions.end(conn, file_plan.kind, file_plan.kind, now)
            else:
                versions.record(conn, kind=source.kind, name=source.name, content_hash=source.content_hash,
                                fingerprint=None, text=source.text, now=now, summary=_summary(file_plan, impact))
    if impact is not None and any(_compared(file_plan, impact) for file_plan in report.files):
        report.sections.append(impact)
    return report


def _compared(file_plan: FilePlan, impact: ScoringSection) -> bool:
    """Whether ``impact`` compared the very versions this file change goes from and to."""
    found = impact.version_of(file_plan.kind)
    return found is not None and (found.old_version, found.new_version) == (file_plan.old_version,
                                                                          file_plan.new_version)


def _summary(file_plan: FilePlan, impact: ScoringSection | None) -> dict[str, Any]:
    summary = file_plan.to_json()
    if impact is not None and _compared(file_plan, impact):
        summary["impact"] = impact.to_json()
    return summary


def _apply_campaign(conn: Connection, catalog: Catalog, plan: CampaignPlan, source: DefinitionSource | None,
                    now: datetime) -> None:
    for move in plan.moves:
        relocation = move.relocation
        note = PathEntry(relocation.removed, now, "relocated",
                         f"step '{relocation.removed}' was removed: {relocation.why}").to_json()
        if relocation.target is not None:
            live.move(conn, plan.campaign, move.version, relocation.removed, target=relocation.target, note=note,
                      now=now)
        else:
            status = "completed" if relocation.end_reason == "completed" else "exited"
            live.end(conn, plan.campaign, move.version, relocation.removed, status=status,
                     reason=relocation.end_reason or "completed", note=note, now=now)
    if plan.status == "removed":
        versions.end(conn, "campaign", plan.campaign, now, summary=plan.to_json())
        return
    if source is not None and plan.status != "unchanged":
        versions.record(conn, kind="campaign", name=plan.campaign, content_hash=source.content_hash,
                        fingerprint=source.fingerprint, text=source.text, now=now, summary=plan.to_json())
    campaign = catalog.campaigns[plan.campaign]
    live.relabel(conn, plan.campaign, catalog.version(plan.campaign), priority=campaign.priority,
                 due_at=now if plan.replans else None)
