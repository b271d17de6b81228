"""Scores from stored points: one lead's breakdown (explainability) and the periodic refresh of every stored score.

Points are fixed when an event is recorded; the score is recomputed from them (decay is a function of the time), so
these only read events (or, to rescore, a lead's score state: its events summed per type) and, for
:func:`rescore_all`, write the lead's ``score`` column (queries in :mod:`nurture.storage.scores`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine

from nurture.application.enroll import enroll_in_transaction
from nurture.core import score_state
from nurture.core.enrollment import reads_score
from nurture.core.scoring import ScoreAccumulator, ScoreBreakdown, fit_items, half_life_seconds, score
from nurture.definitions.loader import Catalog
from nurture.definitions.scoring import ScoringRules
from nurture.errors import LeadNotFound
from nurture.storage import scores
from nurture.storage.database import transaction
from nurture.storage.leads import normalize_email
from nurture.storage.schedule import lead_view

log = logging.getLogger(__name__)


def score_breakdown(engine: Engine, rules: ScoringRules, email: str, now: datetime) -> ScoreBreakdown:
    """The lead's score as of ``now``, item by item (which events and fit rules gave how many points)."""
    with transaction(engine, read_only=True) as conn:
        row = scores.lead_by_email(conn, normalize_email(email))
        if row is None:
            raise LeadNotFound(f"no lead with email {normalize_email(email)!r}")
        scored = scores.scored_events(conn, [row.id])[row.id]
    return score(rules, lead_view(row), scored, now)


def rescore_by_email(conn: Connection, rules: ScoringRules, emails: Sequence[str], now: datetime) -> int:
    """Recompute the stored scores of these leads as of ``now``, in the caller's transaction (a lead import: new
    fields may change fit points); return how many changed."""
    changed = 0
    for rows in scores.leads_by_email(conn, emails):
        changed += len(_rescore_rows(conn, rules, rows, now))
    return changed


def _rescore_rows(conn: Connection, rules: ScoringRules, rows: Sequence[Any], now: datetime) -> list[int]:
    """Store the score as of ``now`` of these lead rows where it changed; return their ids. A lead's behaviour points
    come from its score state when it has one that can be used (:mod:`nurture.core.score_state`), from its
    scored events otherwise."""
    half_life = half_life_seconds(rules)
    states = {row.id: score_state.load(row.score_state, now, half_life) for row in rows}
    history = scores.scored_events(conn, [row.id for row in rows if states[row.id] is None])
    updates = []
    for row in rows:
        state = states[row.id]
        if state is None:
            total = score(rules, lead_view(row), history[row.id], now).total
        else:
            behaviour = ScoreAccumulator(rules, now)
            state.add_to(behaviour)
            total = behaviour.breakdown(rules, fit_items(rules, lead_view(row))).total
        if not math.isclose(total, float(row.score or 0), rel_tol=1e-9, abs_tol=1e-9):
            updates.append({"lead_id": row.id, "new_score": total})
    if updates:
        scores.store_scores(conn, updates)
    return [update["lead_id"] for update in updates]


def rescore_all(engine: Engine, rules: ScoringRules, now: datetime, *, chunk: int = 1000,
                catalog: Catalog | None = None) -> int:
    """Recompute every lead's stored score as of ``now`` (decay, edited rules); return how many scores changed.
    With a ``catalog`` whose entry filters test the score, the leads whose score changed are enrolled where they now
    may enter, in the same transaction.

    Runs in short transactions of ``chunk`` leads, so intake is never blocked for long; leads that intake holds at
    that moment are skipped (intake rescores them itself). Promotion is left to the lead's next event or update:
    decay only lowers scores. Safe to run again at any time.
    """
    changed = 0
    last_id = 0
    enroll_on_score = [c.id for c in catalog.campaigns.values() if reads_score(c)] if catalog is not None else []
    while True:
        with transaction(engine) as conn:
            rows = scores.leads_after(conn, last_id, chunk)
            if not rows:
                break
            last_id = rows[-1].id
            ids = _rescore_rows(conn, rules, rows, now)
            changed += len(ids)
            if ids and enroll_on_score and catalog is not None:
                enroll_in_transaction(conn, catalog, ids, now, campaign_ids=enroll_on_score)
        if len(rows) < chunk:
            break
    log.info("rescored leads: %d score(s) changed", changed)
    return changed
