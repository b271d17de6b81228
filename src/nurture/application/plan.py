"""``nurture plan``: compare the definitions on disk with the versions in force in the database, and count what each
change does to live leads. The same report is what ``nurture run`` applies at start-up
(:mod:`nurture.application.apply_versions`), logs and records.

Read-only: it decides through :mod:`nurture.core.changes` and counts through storage.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from nurture.application.enroll import count_enrollable
from nurture.application.plan_report import CampaignPlan, Effect, FilePlan, Move, PlanReport
from nurture.application.plan_sections import replay_section, scoring_section
from nurture.core.changes import CampaignDiff, Change, Relocation, continuation, diff, relocate_removed
from nurture.core.enrollment import audience_key
from nurture.definitions.campaign import Campaign
from nurture.definitions.durations import Duration, format_duration, parse_duration
from nurture.definitions.loader import Catalog
from nurture.definitions.sources import PROJECT_FILES, DefinitionSource, campaign_from_text
from nurture.storage import entry_reads, versions
from nurture.storage import live_enrollments as live
from nurture.storage.database import transaction
from nurture.storage.entry_reads import AUDIENCE_PREFIX

if TYPE_CHECKING:  # the connection types only annotate: the queries are storage's
    from sqlalchemy.engine import Connection, Engine


def _leads(count: int, what: str = "lead") -> str:
    return f"{count:,} {what}{'' if count == 1 else 's'}"


def plan(engine: Engine, catalog: Catalog, sources: Sequence[DefinitionSource], now: datetime, *,
         replay_since: datetime | None = None, default_tz: str = "UTC") -> PlanReport:
    """What putting the definitions on disk in force would change, counted from the database, which it only reads:
    the campaigns and files, the scoring and sales impact when either rules file changed, and with ``replay_since``
    the replay of the enrollments of [replay_since, now] under the versions in force and the definitions on disk."""
    with transaction(engine, read_only=True) as conn:
        report = build_plan(conn, catalog, sources, now)
    scoring = scoring_section(engine, sources, now)
    if scoring is not None:
        report.sections.append(scoring)
    if replay_since is not None:
        report.sections.append(replay_section(engine, catalog, since=replay_since, now=now, default_tz=default_tz))
    return report


def build_plan(conn: Connection, catalog: Catalog, sources: Sequence[DefinitionSource], now: datetime) -> PlanReport:
    """The plan, on ``conn`` (the applying transaction uses the very counts it reports)."""
    in_force = versions.in_force(conn)
    report = PlanReport()
    for campaign_id in sorted(catalog.campaigns):
        row = in_force.get(("campaign", campaign_id))
        report.campaigns.append(_campaign_plan(conn, catalog, catalog.campaigns[campaign_id], row, now))
    for (kind, name), row in sorted(in_force.items()):
        if kind == "campaign" and name not in catalog.campaigns:
            active = sum(count for _v, _s, count in live.waiting(conn, name))
            effects = [Effect("campaign_removed", active, f"{_leads(active, 'active enrollment')} stop receiving "
                                                          "(the campaign's file was removed)")]
            report.campaigns.append(CampaignPlan(name, "removed", row.content_hash, None, effects=effects))
    by_kind = {source.kind: source for source in sources if source.kind in PROJECT_FILES}
    for kind in PROJECT_FILES:
        file_plan = _file_plan(kind, by_kind.get(kind), in_force.get((kind, kind)))
        if file_plan is not None:
            report.files.append(file_plan)
    return report


def _file_plan(kind: str, source: DefinitionSource | None, row: Any) -> FilePlan | None:
    if source is None and row is None:
        return None
    if source is None:
        return FilePlan(kind, "removed", row.content_hash, None)
    if row is not None and row.content_hash == source.content_hash:
        return None
    old_text = row.text if row is not None and row.text is not None else ""
    lines = list(difflib.unified_diff(old_text.splitlines(), source.text.splitlines(), f"{kind}.yaml (in force)",
                                      f"{kind}.yaml (on disk)", lineterm=""))
    added = sum(1 for line in lines if line.startswith("+") and not line.startswith("+++"))
    removed = sum(1 for line in lines if line.startswith("-") and not line.startswith("---"))
    return FilePlan(kind, "changed" if row is not None else "new", row.content_hash if row is not None else None,
                    source.content_hash, added, removed, lines)


def _campaign_plan(conn: Connection, catalog: Catalog, new: Campaign, row: Any, now: datetime) -> CampaignPlan:
    version = catalog.version(new.id)
    if row is not None and row.content_hash == version:
        # Unchanged: only the enrollments at steps it lacks may need moving (under another version, or this one when
        # a worker with an older catalog moved them on), and no effect counts where the others wait. What every
        # worker start asks of each campaign, read without the enrollments at its steps.
        waiting = live.waiting_elsewhere(conn, new.id, version, [step.id for step in new.steps])
    else:
        waiting = live.waiting(conn, new.id)
    at = Counter[str]()
    for _version, step_id, count in waiting:
        if step_id is not None:
            at[step_id] += count
    total = sum(count for _v, _s, count in waiting)
    old: Campaign | None = None
    if row is None:
        plan = CampaignPlan(new.id, "new", None, version)
        if not new.paused and _audience_considered(conn, new):
            # an import that began without leads enrolled every lead it could as this campaign is: the sweep will
            # not consider them again, so none is enrolled now (and no lead is read to count them)
            plan.effects.append(Effect("enroll", 0, f"{_leads(0)} will be enrolled (every lead was considered for "
                                                    "its entry as it is, when imported)"))
        elif not new.paused:
            count = count_enrollable(conn, new, now)
            plan.effects.append(Effect("enroll", count, f"{_leads(count)} match entry and will be enrolled"))
    else:
        if row.content_hash == version and row.text is not None:
            old = new  # the text in force is the file's text: the campaign it describes is the one loaded from it
        else:
            old = campaign_from_text(row.text, f"{new.id} ({row.content_hash})") if row.text is not None else None
        changes = diff(old, new) if old is not None else None
        if row.content_hash == version:
            status = "unchanged"
        elif changes is not None:
            status = "text" if changes.empty else "changed"
        else:
            status = "text" if row.fingerprint == catalog.fingerprint(new.id) else "changed"
        plan = CampaignPlan(new.id, status, row.content_hash, version, diff=changes)
        if status == "changed":
            plan.effects += _step_effects(changes, old, new, at) if changes is not None and old is not None else [Effect(
                "step", total, f"{_leads(total, 'active enrollment')} are planned again with the new version")]
            plan.effects += _campaign_effects(conn, changes, old, new, total, now)
    _relocations(conn, plan, new, (row, old), waiting)
    return plan


def _audience_considered(conn: Connection, campaign: Campaign) -> bool:
    """Whether every lead was recorded as considered for this campaign's entry as it is now (its audience key)."""
    return entry_reads.bookmarks(conn).get(AUDIENCE_PREFIX + campaign.id) == audience_key(campaign)


def _relocations(conn: Connection, plan: CampaignPlan, new: Campaign, in_force: tuple[Any, Campaign | None],
                 waiting: list[tuple[str | None, str | None, int]]) -> None:
    """Where the leads at steps the new version lacks go (under whichever version they ran), and the removed steps
    no lead waits at, so the plan shows the rule before it is needed."""
    removed_here = [(version, step, count) for version, step, count in waiting
                    if step is not None and new.index_of(step) is None]
    row, old = in_force
    olds: dict[str | None, Campaign | None] = {row.content_hash: old} if row is not None else {}
    wanted = {version for version, _s, _c in removed_here if version is not None and version not in olds}
    for stored, text in versions.texts(conn, "campaign", new.id, wanted).items():
        olds[stored] = campaign_from_text(text, f"{new.id} ({stored})") if text is not None else None
    totals: dict[tuple[str, str | None, str | None], list[Any]] = {}
    for version, step, count in removed_here:
        assert step is not None
        relocation = relocate_removed(olds.get(version), new, step)
        plan.moves.append(Move(version, relocation, count))
        key = (step, relocation.target, relocation.end_reason)
        totals.setdefault(key, [relocation, 0])[1] += count
    for step in plan.diff.removed if plan.diff is not None else []:
        if not any(key[0] == step for key in totals):
            relocation = relocate_removed(old, new, step)
            totals[(step, relocation.target, relocation.end_reason)] = [relocation, 0]
    for relocation, count in totals.values():
        plan.effects.append(_removed_effect(relocation, count))
    plan.effects.sort(key=lambda effect: effect.kind != "removed_step")


def _removed_effect(relocation: Relocation, count: int) -> Effect:
    who = f"{_leads(count)} waiting at removed step '{relocation.removed}'"
    if relocation.target is not None:
        text = f"{who} will continue at '{relocation.target}' ({relocation.why})"
    elif relocation.end_reason == "completed":
        text = f"{who} will complete the campaign ({relocation.why})"
    else:
        text = f"{who} will leave the campaign as {relocation.end_reason} ({relocation.why})"
    return Effect("removed_step", count, text, relocation.removed, {"to": relocation.target,
                                                                    "end_reason": relocation.end_reason})


def _later(old: Any, new: Any) -> tuple[str, str]:
    """How much later (or sooner) a changed duration makes things: ('1d later', '+1d')."""
    delta = parse_duration(new or "0s").as_timedelta() - parse_duration(old or "0s").as_timedelta()
    size = abs(delta)
    shown = format_duration(Duration(days=size.days, seconds=size.seconds))
    return (f"{shown} later", f"+{shown}") if delta.total_seconds() >= 0 else (f"{shown} sooner", f"-{shown}")


_CONTENT = {"email.subject": "subject", "email.template": "template", "email.variants": "variants"}


def _following(campaign: Campaign, step_id: str) -> list[str]:
    return sorted(continuation(campaign, campaign.step(step_id))[0])


def _step_effects(changes: CampaignDiff, old: Campaign, new: Campaign, at: Counter[str]) -> list[Effect]:
    effects = []
    for step, step_changes in changes.steps.items():
        count, who = at[step], f"{_leads(at[step])} waiting at '{step}'"
        rest: list[Change] = []
        for change in step_changes:
            if change.field == "wait":
                later, by = _later(change.old, change.new)
                effects.append(Effect("wait", count, f"{who} will now go on {later} (wait {change.old} -> "
                                                     f"{change.new})", step, {"by": by}))
            elif change.field == "wait_for.timeout":
                later, by = _later(change.old, change.new)
                effects.append(Effect("timeout", count, f"{who} will now time out {later}", step, {"by": by}))
            elif change.field not in _CONTENT:
                rest.append(change)
        content = [_CONTENT[c.field] for c in step_changes if c.field in _CONTENT]
        if content:
            effects.append(Effect("content", count, f"{who} will get the new {' and '.join(content)}", step,
                                  {"fields": content}))
        if rest:
            fields = [c.field for c in rest]
            effects.append(Effect("step", count, f"{who} go on with its new {', '.join(fields)}", step,
                                  {"fields": fields}))
    for step in changes.moved:
        effects.append(Effect("moved", at[step], f"{_leads(at[step])} waiting at '{step}' (moved) go on from its "
                                                 "new place", step))
    for kept in [s.id for s in new.steps if old.index_of(s.id) is not None]:
        # a move, an added or removed step or a new jump can change what comes after the step a lead waits at
        was, now = _following(old, kept), _following(new, kept)
        if was != now:
            effects.append(Effect("next", at[kept], f"{_leads(at[kept])} waiting at '{kept}' will go on to "
                                                    f"{' or '.join(now)} after it (was {' or '.join(was)})",
                                  kept, {"next": now, "was": was}))
    return effects


def _campaign_effects(conn: Connection, changes: CampaignDiff | None, old: Campaign | None, new: Campaign,
                      total: int, now: datetime) -> list[Effect]:
    if changes is None or old is None:
        return []
    effects = []
    active = _leads(total, "active enrollment")
    paused = changes.changed("paused")
    if paused is not None:
        effects.append(Effect("paused", total, f"{active} stop receiving (paused)") if new.paused
                       else Effect("unpaused", total, f"{active} resume receiving (unpaused)"))
    if not new.paused and (paused is not None or changes.changed("entry") or changes.changed("reentry")):
        count = count_enrollable(conn, new, now)
        effects.append(Effect("enroll", count, f"{_leads(count)} now match entry and will be enrolled"))
    if changes.changed("exit"):
        stages = sorted(set(new.exit.stages) - set(old.exit.stages))
        events = sorted(set(new.exit.events) - set(old.exit.events))
        count = live.exiting(conn, new.id, stages, events)
        reasons = ", ".join([*(f"stage {s}" for s in stages), *(f"goal {e}" for e in events)]) or "fewer exits"
        effects.append(Effect("exit", count, f"{_leads(count, 'active enrollment')} will end ({reasons})",
                              detail={"stages": stages, "events": events}))
    priority = changes.changed("priority")
    if priority is not None:
        effects.append(Effect("priority", total, f"{active} compete for the frequency cap at priority "
                                                 f"{priority.new} (was {priority.old})"))
    timing = [c.field for c in changes.campaign if c.field in ("timezone", "send_window")]
    if timing:
        effects.append(Effect("timing", total, f"{active} are planned with the new {' and '.join(timing)}",
                              detail={"fields": timing}))
    return effects
