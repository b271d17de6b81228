"""What an event batch keeps while it works (:mod:`nurture.application.record_events`): each lead as the batch changes
it, the enrollment wake-ups it queues, and what it asks of the loaded definitions, worked out once per catalog or set
of rules rather than once per batch."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property
from types import SimpleNamespace
from typing import Any

from nurture.core.attribution import ATTRIBUTION_FIELDS, attribution_from_properties, has_attribution
from nurture.core.enrollment import reads_score
from nurture.core.facts import History, LeadView
from nurture.core.frozen import quick_init
from nurture.core.promotion import FieldChecks
from nurture.core.scoring import ScoreAccumulator, utc_day
from nurture.definitions.campaign import EntryFilter
from nurture.definitions.loader import Catalog
from nurture.definitions.sales import SalesRules
from nurture.definitions.scoring import ScoringRules
from nurture.storage.rows import lead_view


def _new_counter() -> Counter[Any]:
    """An empty Counter, without ``Counter.__init__`` (which calls ``update`` with nothing): one per lead of a batch."""
    return Counter.__new__(Counter)


@dataclass
class BatchLead:
    """A lead as the batch changes it; written back once when the batch ends."""

    row: Any
    created: bool
    stage: str
    score: float
    stage_changed_at: datetime
    unsubscribed_at: datetime | None
    bounced_at: datetime | None
    nurtured: bool  # had an active enrollment when the batch began: only then can events change enrollments
    behaviour: ScoreAccumulator
    caps: Counter[tuple[str, date]] = field(default_factory=_new_counter)  # scored events per (type, UTC day)
    counted_since: date | None = None  # caps holds every (type, day) count from this day on
    recorded: bool = False
    recorded_types: set[str] = field(default_factory=set)
    fit: list[Any] | None = None  # the fit items: they depend on the lead's fields, which a batch does not change
    stage_changed: bool = False
    promoted: bool = False  # moved to sql in this batch (promotion also sets the owner)
    source_given: bool = False  # its acquisition source came from an event of this batch (entry filters may test it)
    dirty: bool = False
    attributed: bool = False  # its acquisition was looked for in this batch's events already
    checks: FieldChecks | None = None  # the sales rules' tests on its fields (:meth:`sales_checks`)
    decided: bool = False  # the sales rules decided on it once in this batch
    _base: LeadView | None = None
    _view: LeadView | None = None

    @cached_property
    def id(self) -> int:
        """The lead's id (its row's, which the batch does not change)."""
        return int(self.row.id)

    def scored_on(self, event_type: str, day: date) -> int:
        """How many events of this type scored (points other than 0) on this UTC day: what daily caps count."""
        return self.caps[(event_type, day)]

    def add_scored(self, event_type: str, at: datetime, points: float, day: date | None = None) -> None:
        """Count an event that scored into the running score and the daily caps (``day``: ``at``'s UTC day, when the
        caller has it)."""
        if points:
            self.behaviour.add(event_type, at, points)
            self.caps[(event_type, day if day is not None else utc_day(at))] += 1

    def acquisition_from(self, properties: Mapping[str, Any]) -> dict[str, Any] | None:
        """The lead's source, medium and campaign from an event's UTM properties (a row for
        :func:`~nurture.storage.lead_rows.set_missing_attribution`), when the lead has none yet; else None."""
        if self.attributed or not properties:  # no properties: no UTM parameters, whatever the row holds
            return None
        if has_attribution({name: getattr(self.row, name, None) for name in ATTRIBUTION_FIELDS}):
            self.attributed = True
            return None
        found = attribution_from_properties(properties)
        if found is None:
            return None
        self.attributed = True
        return {"a_id": self.id, **found}

    def sales_checks(self, sales: SalesRules) -> FieldChecks | None:
        """The sales rules' answers on the lead's fields, kept for the batch from the lead's second decision on (its
        views differ in their stage, score and suppressions only: they are all built from the row the batch read).
        None at its first: most leads of a batch have one event, and keeping answers for one decision costs a third
        more than deciding (3.9 µs rather than 2.9 µs)."""
        if self.checks is None or self.checks.rules is not sales:
            if not self.decided:
                self.decided = True
                return None
            self.checks = FieldChecks(sales)
        return self.checks

    def view(self) -> LeadView:
        """The lead as conditions read it, with the batch's stage, score and suppressions.

        Only these differ between a lead's views in one batch, all else is the row the batch read: the sales rules'
        answers kept for the batch (:meth:`sales_checks`, :class:`nurture.core.promotion.FieldChecks`) rely on it. A
        view that showed a field the batch changes must leave those answers behind."""
        if self._base is None:
            row = self.row
            # the bulk reads' rows hold their columns in their __dict__: lead_view reads it as a row's mapping
            self._base = lead_view(_Columns(vars(row)) if type(row) is SimpleNamespace else row)
        base, last = self._base, self._view
        unsubscribed, bounced = self.unsubscribed_at is not None, self.bounced_at is not None
        if last is None:
            last = base  # the row's own view, as long as the batch has not changed what it shows
        if (last.stage, last.score, last.unsubscribed, last.bounced) == (self.stage, self.score, unsubscribed, bounced):
            self._view = last
            return last  # views are frozen: the same state, the same view
        self._view = LeadView(
            key=base.key, email=base.email, stage=self.stage, score=self.score, timezone=base.timezone, tags=base.tags,
            attributes=base.attributes, custom=base.custom, unsubscribed=unsubscribed, bounced=bounced,
        )
        return self._view


class _Columns:
    """A row's columns by name as :func:`nurture.storage.rows.lead_view` reads a result row's (``_mapping``)."""

    __slots__ = ("_mapping",)

    def __init__(self, mapping: Mapping[str, Any]) -> None:
        self._mapping = mapping


@quick_init
@dataclass(frozen=True)
class Wake:
    """A queued wake-up (:func:`nurture.storage.enrollments.wake_all`): the lead's enrollments waiting for
    ``event_type`` become due at ``at``."""

    lead_id: int
    event_type: str
    at: datetime


@quick_init
@dataclass(frozen=True)
class StageMove:
    """A queued stage change whose history row's id nothing asks for (the row of ``insert_stage_changes``)."""

    row: dict[str, Any]


def write_updates(conn: Any, bulk: Any, updates: list[Any]) -> None:
    """Apply queued updates (callables of the connection, :class:`Wake` and :class:`StageMove`) in order, consecutive
    wake-ups in one statement and consecutive stage changes in one insert (``bulk``: the batch's writer)."""
    wakes: list[dict[str, Any]] = []
    moves: list[dict[str, Any]] = []

    def write_pending() -> None:
        if wakes:
            bulk.wake_all(conn, list(wakes))
            wakes.clear()
        if moves:
            bulk.insert_stage_changes(conn, list(moves))
            moves.clear()

    for apply in updates:
        if isinstance(apply, Wake):
            wakes.append(dict(w_lead_id=apply.lead_id, w_type=apply.event_type, w_at=apply.at))
        elif isinstance(apply, StageMove):
            moves.append(apply.row)
        else:
            write_pending()
            apply(conn)
    write_pending()


class Committing:
    """Set once a batch's statements have all run and its transaction is committing
    (:func:`nurture.application.record_events.record_cleaned`): an exception after that came from the COMMIT."""

    def __init__(self) -> None:
        self.now = False


NO_HISTORY = History([])
"""The history entry filters are first tested against: what a lead's fields alone decide."""


_DERIVED: dict[tuple[str, int], tuple[Any, Any]] = {}


def _derived(name: str, source: Any, build: Callable[[Any], Any]) -> Any:
    """``build(source)``, worked out once per loaded ``source`` (rules or catalog: they do not change once loaded)
    rather than once per batch. A process loads one set of definitions, tests a few: the cache stays small."""
    cached = _DERIVED.get((name, id(source)))
    if cached is None or cached[0] is not source:
        if len(_DERIVED) >= 16:
            _DERIVED.clear()
        cached = _DERIVED[(name, id(source))] = (source, build(source))
    return cached[1]


def capped_types(rules: ScoringRules) -> frozenset[str]:
    """The event types some rule caps per day."""
    return _derived("capped", rules, lambda rules: frozenset(
        kind for kind, event_rules in rules.behaviour.events.items()
        if any(rule.max_per_day is not None for rule in event_rules)))


@dataclass(frozen=True)
class CampaignFacts:
    """What a batch asks of the campaigns, worked out once per catalog rather than once per batch."""

    goals: dict[str, list[str]]  # event type -> the campaigns it is a goal of (exit.events)
    awaited: frozenset[str]  # event types some step waits for (wait_for)
    entry_stages: frozenset[str]  # stages some campaign that is not paused enrolls from
    entry_events: frozenset[str]  # event types an entry filter of such a campaign reads (had_event)
    entry_filters: list[tuple[frozenset[str], EntryFilter | None]]  # each such campaign's stages and filter without had_event
    entry_reads_score: bool = False  # an entry filter of such a campaign tests the score: a new score may let a lead in


def campaign_facts(catalog: Catalog) -> CampaignFacts:
    return _derived("campaigns", catalog, _build_campaign_facts)


def _build_campaign_facts(catalog: Catalog) -> CampaignFacts:
    campaigns = list(catalog.campaigns.values())
    goals: dict[str, list[str]] = {}
    for campaign in campaigns:
        for event_type in campaign.exit.events:
            goals.setdefault(event_type, []).append(campaign.id)
    active = [c for c in campaigns if not c.paused]
    filters = []
    for campaign in active:
        where = campaign.entry.where
        if where is not None and where.had_event is not None:
            where = where.model_copy(update={"had_event": None})
        filters.append((frozenset(campaign.entry.stages()), where))
    return CampaignFacts(
        goals=goals,
        awaited=frozenset(step.wait_for.event for c in campaigns for step in c.steps if step.wait_for is not None),
        entry_stages=frozenset(stage for c in active for stage in c.entry.stages()),
        entry_events=frozenset(t for c in active if c.entry.where and c.entry.where.had_event
                               for t in c.entry.where.had_event),
        entry_filters=filters,
        entry_reads_score=any(reads_score(c) for c in active),
    )
