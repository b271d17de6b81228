"""A/B tests of email steps: measuring a step's variants on its goal, calling the winner of a step with ``winner:``
(recorded once, then given to every later lead), and the figures of the report's ``ab_tests`` section
(:class:`nurture.core.metrics.experiments.AbTests`).

The statistics and the rule are :mod:`nurture.core.abtest`'s; the reads and the one write are
:mod:`nurture.storage.experiments`'. The worker calls :func:`decide_winners` at start-up and every minute; the
dispatcher reads :func:`recorded_winners` once per batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from nurture.core.abtest import AbVerdict, VariantCount, count_goal, evaluate
from nurture.core.facts import CLICK, OPEN
from nurture.definitions.campaign import Campaign, EmailSpec
from nurture.definitions.experiments import (
    DEFAULT_CONFIDENCE,
    DEFAULT_MIN_SENDS,
    EventGoal,
    Goal,
    SqlGoal,
    goal_label,
    goal_window,
)
from nurture.definitions.loader import Catalog
from nurture.errors import NurtureError
from nurture.storage import experiments as store
from nurture.storage.database import transaction
from nurture.storage.dialect import missing_sqlite_file
from nurture.storage.migrate import open_database

if TYPE_CHECKING:  # the connection types only annotate: the queries are storage's
    from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)


def measure(conn: Connection, campaign_id: str, step_id: str, *, variants: Sequence[str] | None, goal: Goal,
            confidence: float, min_sends: int, since: datetime | None, until: datetime,
            as_of: datetime | None = None) -> AbVerdict:
    """The step's A/B test on ``goal`` with the emails sent in [since, until), as of ``as_of`` (default: until)."""
    if goal_window(goal) is None:  # a click or an open on the step's own emails: counted in the database
        wanted = [CLICK] if goal == "click" else [OPEN, CLICK]  # a click is an open (images may be blocked)
        found = store.engagement_by_variant(conn, campaign_id, step_id, since=since, until=until,
                                            as_of=as_of or until, types=wanted)
        arms = list(variants) if variants is not None else sorted(found)
        return evaluate([VariantCount(v, *found.get(v, (0, 0))) for v in arms], goal_label=goal_label(goal),
                        confidence=confidence, min_sends=min_sends)
    sends = store.step_sends(conn, campaign_id, step_id, since=since, until=until)
    until = as_of or until
    names = list(variants) if variants is not None else sorted({s.variant for s in sends})
    engaged: dict[int, set[str]] = {}
    times: dict[int, list[datetime]] = {}
    leads = [s.lead_id for s in sends]
    if isinstance(goal, EventGoal):
        times = store.event_times(conn, leads, goal.event, until=until)
    elif isinstance(goal, SqlGoal):
        times = store.sql_times(conn, leads, until=until)
    else:
        engaged = store.engaged_deliveries(conn, [s.delivery_id for s in sends], until=until)
    counts = count_goal(sends, goal, until, variants=names, engaged=engaged, goal_times=times)
    return evaluate(counts, goal_label=goal_label(goal), confidence=confidence, min_sends=min_sends)


def _test_of(email: EmailSpec) -> tuple[list[str], Goal, float, int]:
    """(variant ids, goal, confidence, min_sends) of an A/B email step."""
    variants = [v for v, _w, _t, _s in email.resolved_variants() if v is not None]
    winner = email.winner
    confidence = winner.confidence if winner is not None else DEFAULT_CONFIDENCE
    min_sends = winner.min_sends if winner is not None else DEFAULT_MIN_SENDS
    return variants, email.ab_goal(), confidence, min_sends


def figures(verdict: AbVerdict) -> dict[str, Any]:
    """A verdict as JSON-ready figures (kept with a recorded winner, printed by the report)."""
    return {
        "variants": [dict(variant=c.variant, sends=c.sends, conversions=c.conversions,
                          rate=None if c.rate is None else round(c.rate, 6)) for c in verdict.counts],
        "leader": verdict.leader,
        "comparisons": [{k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(c).items()}
                        for c in verdict.comparisons],
        "more_sends_needed": verdict.more_sends,
        "verdict": verdict.verdict,
    }


def recorded_winners(engine: Engine) -> dict[str, dict[str, str]]:
    """Campaign id -> step id -> the variant recorded as the winner of that step's A/B test."""
    with transaction(engine, read_only=True) as conn:
        rows = store.decisions(conn)
    found: dict[str, dict[str, str]] = {}
    for row in rows:
        found.setdefault(row.campaign_id, {})[row.step_id] = row.winner
    return found


def winners_in_database(url: str) -> tuple[dict[str, dict[str, str]], str]:
    """The recorded winners of the database at ``url`` for ``nurture simulate`` and ``preview`` (which need no
    database): (winners, a note saying where they come from). A SQLite file that does not exist is not created."""
    if missing_sqlite_file(url):
        return {}, "no database: no A/B winner recorded"
    try:
        engine = open_database(url)
    except (NurtureError, SQLAlchemyError) as exc:
        return {}, f"A/B winners not read ({type(exc).__name__}: the database is unreachable or not upgraded)"
    try:
        return recorded_winners(engine), "A/B winners as recorded in the database"
    except SQLAlchemyError as exc:
        return {}, f"A/B winners not read ({type(exc).__name__})"
    finally:
        engine.dispose()


def winners_of_lead(engine: Engine, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The recorded A/B winners of the campaigns in a lead's summary (``nurture leads show``), each with whether the
    lead's own email of that step was the winner given after the call."""
    campaigns = {e["campaign_id"] for e in summary.get("enrollments", [])}
    with transaction(engine, read_only=True) as conn:
        rows = [row for row in store.decisions(conn) if row.campaign_id in campaigns]
    found = []
    for row in rows:
        mine = [d for d in summary.get("deliveries", []) if d["campaign_id"] == row.campaign_id
                and d["step_key"] == row.step_id]
        given = any(d["variant"] == row.winner and datetime.fromisoformat(d["created_at"]) >= row.decided_at
                    for d in mine)
        found.append(dict(campaign_id=row.campaign_id, step_id=row.step_id, winner=row.winner,
                          decided_at=row.decided_at.isoformat(), metric=row.metric,
                          received=mine[0]["variant"] if mine else None, given_the_winner=given))
    return found


def _winner_steps(campaign: Campaign) -> list[tuple[str, EmailSpec]]:
    return [(step.id, step.email) for step in campaign.steps
            if step.email is not None and step.email.winner is not None and step.email.variants]


def decide_winners(engine: Engine, catalog: Catalog, now: datetime) -> list[Any]:
    """Call the winner of every A/B step with ``winner:`` whose test has one at ``now`` and record it; return the
    decisions recorded now. A step decided already is not measured again; should two workers decide at once, the
    unique key keeps the first winner recorded, and both go on with it."""
    with transaction(engine, read_only=True) as conn:
        decided = {(row.campaign_id, row.step_id) for row in store.decisions(conn)}
    recorded = []
    for campaign in catalog.campaigns.values():
        if campaign.paused:
            continue
        for step_id, email in _winner_steps(campaign):
            if (campaign.id, step_id) in decided:
                continue
            variants, goal, confidence, min_sends = _test_of(email)
            with transaction(engine, read_only=True) as conn:
                verdict = measure(conn, campaign.id, step_id, variants=variants, goal=goal, confidence=confidence,
                                  min_sends=min_sends, since=None, until=now)
            if verdict.winner is None:
                continue
            with transaction(engine) as conn:
                row = store.record_decision(conn, campaign_id=campaign.id, step_id=step_id, winner=verdict.winner,
                                            metric=goal_label(goal), confidence=confidence, decided_at=now,
                                            figures=figures(verdict))
            if row.decided_at == now and row.winner == verdict.winner:
                log.info("A/B winner of %s/%s: %s (%s)", campaign.id, step_id, row.winner, verdict.verdict)
                recorded.append(row)
    return recorded


def ab_tests_section(engine: Engine, catalog: Catalog | None, *, since: datetime, until: datetime,
                     campaign: str | None = None) -> list[dict[str, Any]]:
    """The ``ab_tests`` section of ``nurture report`` in a transaction of its own (see :func:`ab_tests_of`)."""
    with transaction(engine, read_only=True) as conn:
        return ab_tests_of(conn, catalog, since=since, until=until, campaign=campaign)


def ab_tests_of(conn: Connection, catalog: Catalog | None, *, since: datetime, until: datetime,
                campaign: str | None = None) -> list[dict[str, Any]]:
    """Every step (of ``campaign`` if given) that sent variants in [since, until), measured on its goal as of
    ``until``. Once a winner is recorded the test is the emails sent before the call; the emails the winner was sent
    since are counted apart (``sent_after_call``). Without a catalog, every step is measured on clicks."""
    section = []
    decisions = {(row.campaign_id, row.step_id): row for row in store.decisions(conn)}
    for campaign_id, step_id in store.ab_steps(conn, since=since, until=until, campaign=campaign):
        defined = catalog.campaigns.get(campaign_id) if catalog is not None else None
        step = defined.step(step_id) if defined is not None and defined.index_of(step_id) is not None else None
        if step is not None and step.email is not None and step.email.variants:
            variants, goal, confidence, min_sends = _test_of(step.email)
            names: list[str] | None = variants
        else:  # a step no longer in the campaigns: its variants as sent, on clicks
            names, goal, confidence, min_sends = None, "click", DEFAULT_CONFIDENCE, DEFAULT_MIN_SENDS
        decision = decisions.get((campaign_id, step_id))
        cut = min(until, decision.decided_at) if decision is not None else until
        verdict = measure(conn, campaign_id, step_id, variants=names, goal=goal, confidence=confidence,
                          min_sends=min_sends, since=since, until=cut, as_of=until)
        after = 0
        if decision is not None and decision.decided_at < until:
            after = len(store.step_sends(conn, campaign_id, step_id, since=decision.decided_at, until=until))
        winner = None if decision is None else dict(
            variant=decision.winner, decided_at=decision.decided_at.isoformat(), metric=decision.metric,
            confidence=decision.confidence, verdict=(decision.figures or {}).get("verdict"))
        section.append(dict(
            campaign=campaign_id, step=step_id, goal=goal_label(goal), confidence=confidence,
            min_sends=min_sends, **figures(verdict), significant=verdict.winner is not None,
            winner=winner, sent_after_call=after,
        ))
    return section
