"""Group commit: the events of several requests recorded in one transaction, each request answered on its own.

A transaction costs round trips and a COMMIT (on PostgreSQL an fsync) whatever its size, so requests that arrive
together are cheaper recorded together (the HTTP intake's writer threads group what queued while they were busy:
:mod:`nurture.intake.group_commit`). Each request still gets exactly the answer it would get alone, as if the
requests had been recorded one after the other in the order given:

- a request with an invalid event is refused alone (:class:`nurture.application.event_input.InvalidEvents`), before
  anything is written, and takes no part in the group;
- the others' events are recorded in order in one batch (:func:`nurture.application.record_events.record_cleaned`):
  an event id that an earlier request of the group recorded is a duplicate, as it would be a moment later;
- when that transaction fails before its COMMIT (one request's data refused by the database, or anything else),
  nothing of it was written, and each request is recorded again alone in a transaction of its own: one bad request
  fails only itself;
- when the COMMIT itself fails, whether it was written is not known (the connection may have dropped after the
  server committed): every request of the group gets the error, none is answered as recorded. Recording them again
  could record events without ids twice.

No request is answered before its transaction has committed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.engine import Connection, Engine

from nurture.application.batch_state import Committing
from nurture.application.event_input import EventIn, EventResult, clean_events
from nurture.application.record_events import record_cleaned
from nurture.definitions.loader import Catalog
from nurture.definitions.sales import SalesRules
from nurture.definitions.scoring import ScoringRules
from nurture.errors import InvalidInput
from nurture.handoff import Handoff
from nurture.storage.vocabulary import STAGE_ACTORS

log = logging.getLogger(__name__)

Outcome = list[EventResult] | Exception
"""What became of one request: its results (indexes within the request), or the exception it raises."""


def record_together(
    engine: Engine | Connection, catalog: Catalog, rules: ScoringRules, requests: Sequence[Sequence[EventIn]], *, now: datetime,
    actor: str, sales: SalesRules | None = None, handoff: Handoff | None = None,
) -> list[Outcome]:
    """Record each request's events (a request is what one call of
    :func:`nurture.application.record_events.record_events` would record) in one transaction when possible; one
    outcome per request, in order (see the module's description). ``engine`` may be a connection outside any
    transaction, whose transactions the group and its requests then run on."""
    if actor not in STAGE_ACTORS:
        raise ValueError(f"unknown actor {actor!r}")
    outcomes: list[Outcome] = [[] for _ in requests]
    pending: list[tuple[int, list[EventIn]]] = []
    for position, events in enumerate(requests):
        try:
            cleaned = clean_events(events, now)
        except InvalidInput as exc:
            outcomes[position] = exc
            continue
        if cleaned:
            pending.append((position, cleaned))
    options = dict(now=now, actor=actor, sales=sales, handoff=handoff)
    if len(pending) > 1:
        committing = Committing()
        try:
            results = record_cleaned(engine, catalog, rules, [event for _, cleaned in pending for event in cleaned],
                                     committing=committing, **options)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - every request gets its own answer below
            if committing.now:
                log.warning("the COMMIT of a group of %d requests failed: %s", len(pending), type(exc).__name__)
                for position, _ in pending:
                    outcomes[position] = exc
                return outcomes
            log.info("a group of %d requests failed (%s): recording each alone", len(pending), type(exc).__name__)
        else:
            offset = 0
            for position, cleaned in pending:
                outcomes[position] = [_reindexed(result, offset) for result in results[offset : offset + len(cleaned)]]
                offset += len(cleaned)
            return outcomes
    for position, cleaned in pending:
        try:
            outcomes[position] = record_cleaned(engine, catalog, rules, cleaned, **options)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - the request's own answer
            outcomes[position] = exc
    return outcomes


def _reindexed(result: EventResult, offset: int) -> EventResult:
    """``result`` numbered within its request (``dataclasses.replace`` does the same at several times the cost)."""
    return EventResult(index=result.index - offset, status=result.status, email=result.email, type=result.type,
                       id=result.id, points=result.points, score=result.score, stage=result.stage,
                       stage_changed=result.stage_changed)
