"""Lead scoring (pure): points for each event as it is recorded, the score now (behaviour decayed + fit), MQL promotion.

Points are awarded once, when an event is recorded (:func:`event_points`), and stored with it: editing ``scoring.yaml``
later changes what new events are worth, never the history. The score is recomputed from those stored points whenever
it is needed (:func:`score`), so decay needs no batch job to be right; a periodic job only refreshes the stored total
and notices leads that decayed below a threshold.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from nurture.core.conditions import field_matches
from nurture.core.facts import LEAD_ATTRIBUTES, Engagement, LeadView
from nurture.core.frozen import quick_init
from nurture.definitions.conditions import Comparison
from nurture.definitions.scoring import EventRule, ScoringRules

BEHAVIOUR, FIT = "behaviour", "fit"
PROMOTABLE_STAGES = ("lead", "recycled")
"""Stages scoring may move to ``mql``; every later stage (and ``disqualified``) is decided by people or other rules."""


@dataclass(frozen=True)
class ScoreItem:
    """One line of a score breakdown: an event type's points (all its events folded together) or a fit rule that holds."""

    source: str  # "behaviour" | "fit"
    label: str  # the event type, or the fit rule's label
    points: float  # contribution now (behaviour: after decay)
    raw: float  # points as awarded, before decay; equal to points for fit
    at: datetime | None  # the latest event folded in; None for fit
    count: int = 1  # events folded into this item

    def to_json(self) -> dict[str, Any]:
        """The item as plain JSON values."""
        return {
            "source": self.source, "label": self.label, "points": self.points, "raw": self.raw,
            "at": self.at.isoformat() if self.at else None, "count": self.count,
        }


@quick_init
@dataclass(frozen=True)
class ScoreBreakdown:
    """A lead's score and where it comes from. ``total`` is ``behaviour + fit``, raised to the floor if there is one."""

    total: float
    behaviour: float
    fit: float
    items: tuple[ScoreItem, ...]

    def to_json(self) -> dict[str, Any]:
        """For the API and ``leads show --json``."""
        return {
            "total": self.total, "behaviour": self.behaviour, "fit": self.fit,
            "items": [item.to_json() for item in self.items],
        }


def utc_day(at: datetime) -> date:
    """The UTC calendar day a daily cap counts ``at`` in."""
    return at.astimezone(UTC).date()


def _signed(points: float) -> str:
    return f"{points:+g}"


def _describe(name: str, test: Any) -> str:
    """A short text for one property test, for reasons: ``url contains /pricing``."""
    if not isinstance(test, Comparison):
        return f"{name} in {', '.join(map(str, test))}" if isinstance(test, list) else f"{name} = {test}"
    parts = []
    for key, value in test.model_dump(by_alias=True, exclude_none=True).items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        parts.append(f"{name} {key.replace('_', ' ')} {shown}")
    return " and ".join(parts)


def _rule_matches(rule: EventRule, event: Engagement) -> bool:
    return not rule.when or all(field_matches(event.properties.get(name), test) for name, test in rule.when.items())


def awarded_points(rules: ScoringRules, event: Engagement, scored_today: int) -> float:
    """:func:`event_points`'s points without its reason: what the intake stores with each event (writing the reason
    cost as much as finding the rule)."""
    event_rules = rules.behaviour.events.get(event.type)
    if not event_rules:
        return 0.0
    for rule in event_rules:
        if _rule_matches(rule, event):
            return 0.0 if rule.max_per_day is not None and scored_today >= rule.max_per_day else float(rule.points)
    return 0.0


def event_points(rules: ScoringRules, event: Engagement, scored_today: int) -> tuple[float, str]:
    """Points for ``event`` as it is recorded, and a short reason (``"email_click +3"``).

    ``scored_today`` is how many earlier events of the same type were awarded points for this lead on the same UTC day
    (:func:`utc_day`); the matching rule's ``max_per_day`` compares against it, so with several rules for one type the
    cap counts the events every rule scored. Unknown types, unmatched rules and capped events score 0.
    """
    event_rules = rules.behaviour.events.get(event.type)
    if not event_rules:
        return 0.0, f"no rule for {event.type}"
    rule = next((r for r in event_rules if _rule_matches(r, event)), None)
    if rule is None:
        return 0.0, f"{event.type}: no rule matched"
    if rule.max_per_day is not None and scored_today >= rule.max_per_day:
        return 0.0, f"{event.type}: daily cap of {rule.max_per_day} reached"
    reason = f"{event.type} {_signed(rule.points)}"
    if rule.when:
        reason += f" ({'; '.join(_describe(name, test) for name, test in rule.when.items())})"
    return float(rule.points), reason


def fit_items(rules: ScoringRules, lead: LeadView) -> list[ScoreItem]:
    """The fit rules that hold for ``lead`` (every test in ``when``; custom fields by name), in file order.

    Of the rules sharing a ``group`` only the first that holds counts. The answer depends only on the values of the
    fields the rules read, so it is remembered by those values (with their types: ``1``, ``1.0`` and ``True``
    compare differently): leads that share them, such as every lead known by its email alone, cost a look-up.
    """
    cache = _fit_cache(rules)
    if cache.fields_only and not (lead.attributes or lead.custom or lead.tags):
        key: tuple[Any, ...] | None = _NO_FIELDS
    else:
        key = _fit_key(cache.names, lead)
    if key is not None:
        found = cache.items.get(key)
        if found is None:
            if len(cache.items) >= _FIT_CACHE_SIZE:
                cache.items.clear()
            found = cache.items[key] = tuple(_fit_items(rules, lead))
        return list(found)
    return _fit_items(rules, lead)


def _fit_items(rules: ScoringRules, lead: LeadView) -> list[ScoreItem]:
    items = []
    groups_scored: set[str] = set()
    for rule in rules.fit:
        if rule.group is not None and rule.group in groups_scored:
            continue
        if all(field_matches(lead.get(name), test) for name, test in rule.when.items()):
            items.append(ScoreItem(FIT, rule.label, float(rule.points), float(rule.points), None))
            if rule.group is not None:
                groups_scored.add(rule.group)
    return items


_FIT_CACHE_SIZE = 4096
_SCALARS = (str, int, float, bool, type(None))


@dataclass
class _FitCache:
    rules: ScoringRules
    names: tuple[str, ...]  # the fields the fit rules read
    items: dict[tuple[Any, ...], tuple[ScoreItem, ...]]
    fields_only: bool  # the rules read lead fields only (not email, stage, score or timezone)


_FIT_CACHES: dict[int, _FitCache] = {}


def _fit_cache(rules: ScoringRules) -> _FitCache:
    cache = _FIT_CACHES.get(id(rules))
    if cache is None or cache.rules is not rules:
        if len(_FIT_CACHES) >= 8:  # a process loads one set of rules, tests a few: keep it small
            _FIT_CACHES.clear()
        names = tuple(dict.fromkeys(name for rule in rules.fit for name in rule.when))
        built_in = {"email", "stage", "score", "timezone"} & set(names)
        cache = _FIT_CACHES[id(rules)] = _FitCache(rules, names, {}, not built_in)
    return cache


_NO_FIELDS = ("no fields",)  # the key of every lead without fields (when the rules read fields only)


def _fit_key(names: tuple[str, ...], lead: LeadView) -> tuple[Any, ...] | None:
    """The values the fit rules read, each with its type; None when one is not a plain value."""
    get = lead.get
    return typed_values_key([get(name) for name in names])


_SCALAR_TYPES = frozenset(_SCALARS)
_ALL_SCALARS = "scalars"  # marks the key of values that are all scalars (its other parts: their types, the values)


def typed_values_key(values: Iterable[Any]) -> tuple[Any, ...] | None:
    """A memo key of field values, each with its type (``1``, ``1.0`` and ``True`` test differently; lists item by
    item); None when one is not a plain value."""
    values = tuple(values)
    types = tuple(map(type, values))
    if _SCALAR_TYPES.issuperset(types):  # the common case, in three C calls: the types and the values side by side
        return (_ALL_SCALARS, types, values)
    key: list[Any] = []
    for value in values:
        if isinstance(value, (list, tuple)):
            if not all(type(item) in _SCALARS for item in value):
                return None
            key.append((type(value), tuple((type(item), item) for item in value)))
        elif type(value) in _SCALARS:
            key.append((type(value), value))
        else:
            return None
    return tuple(key)


def half_life_seconds(rules: ScoringRules) -> float | None:
    """The half-life behaviour points decay with, in seconds (None: no decay)."""
    half_life = rules.behaviour.half_life
    return half_life.as_timedelta().total_seconds() if half_life else None


def decayed(points: float, age_seconds: float, half_life_seconds: float | None) -> float:
    """``points`` after ``age_seconds`` with a half-life; no half-life or no age: unchanged."""
    if not half_life_seconds or age_seconds <= 0:
        return points
    return points * 0.5 ** (age_seconds / half_life_seconds)


@dataclass
class _Group:
    """Running sums for one event type while a score is computed."""

    latest: datetime
    points: float = 0.0
    raw: float = 0.0
    count: int = 0
    item: ScoreItem | None = None  # this group's line of the breakdown, until the group changes


def _item_order(item: ScoreItem) -> tuple[float, str]:
    return -item.points, item.label


class ScoreAccumulator:
    """A lead's behaviour points at one time ``now``, summed one event at a time.

    :func:`score` is this accumulator fed with every event in order; a caller that records events one after another
    (the intake batch) keeps one per lead and adds each new event, so rescoring after an event costs one addition
    and a sum over the event types instead of a pass over the whole history. Given the same events in the same
    order, :meth:`breakdown` is exactly :func:`score`'s result: the same additions in the same order. Sums folded in
    with :meth:`add_group` give the same result up to the order of the additions.
    """

    __slots__ = ("_groups", "_half_life_seconds", "_now")

    def __init__(self, rules: ScoringRules, now: datetime) -> None:
        self._half_life_seconds = half_life_seconds(rules)
        self._now = now
        self._groups: dict[str, _Group] = {}

    @classmethod
    def decaying(cls, half_life: float | None, now: datetime) -> ScoreAccumulator:
        """``ScoreAccumulator(rules, now)`` for rules whose :func:`half_life_seconds` is ``half_life``: a caller that
        keeps one per lead works the half-life out once (it costs microseconds: a pydantic model and a duration)."""
        accumulator = cls.__new__(cls)
        accumulator._half_life_seconds = half_life
        accumulator._now = now
        accumulator._groups = {}
        return accumulator

    def add(self, event_type: str, at: datetime, awarded: float) -> None:
        """Fold in one event that was awarded ``awarded`` points at ``at`` (0 points: left out)."""
        if not awarded:
            return
        group = self._groups.get(event_type)
        if group is None:
            group = self._groups[event_type] = _Group(latest=at)
        group.points += decayed(awarded, (self._now - at).total_seconds(), self._half_life_seconds)
        group.raw += awarded
        if at > group.latest:
            group.latest = at
        group.count += 1
        group.item = None

    def add_group(self, event_type: str, points: float, raw: float, count: int, latest: datetime) -> None:
        """Fold in ``count`` events of one type summed beforehand (by the database): ``points`` decayed to this
        accumulator's ``now`` as :meth:`add` decays them, ``raw`` as awarded, ``latest`` the newest of them. Equal to
        adding them one by one up to the order of the additions (the last bits of a float)."""
        if not count:
            return
        group = self._groups.get(event_type)
        if group is None:  # a new group's sums are 0.0 plus these (0.0 + -0.0 is 0.0)
            self._groups[event_type] = _Group(latest, 0.0 + points, 0.0 + raw, 0 + count)
            return
        group.points += points
        group.raw += raw
        if latest > group.latest:
            group.latest = latest
        group.count += count
        group.item = None

    @property
    def half_life_seconds(self) -> float | None:
        """The half-life points decay with, in seconds (None: no decay)."""
        return self._half_life_seconds

    @property
    def now(self) -> datetime:
        """The time the points are decayed to."""
        return self._now

    def groups(self) -> list[tuple[str, float, float, int, datetime]]:
        """The sums so far, per event type: (type, points decayed to :attr:`now`, points as awarded, count, latest
        time), what :meth:`add_group` takes back."""
        return [(kind, g.points, g.raw, g.count, g.latest) for kind, g in self._groups.items()]

    def breakdown(self, rules: ScoringRules, fit: Sequence[ScoreItem]) -> ScoreBreakdown:
        """The score from the events added so far and the lead's ``fit`` items (:func:`fit_items`)."""
        groups = self._groups
        behaviour_items: list[ScoreItem] = []
        for kind, g in groups.items():
            item = g.item
            if item is None:
                item = g.item = ScoreItem(BEHAVIOUR, kind, round(g.points, 2), round(g.raw, 2), g.latest, g.count)
            behaviour_items.append(item)
        behaviour_items.sort(key=_item_order)
        fits = list(fit)
        return ScoreBreakdown(*self._sums(rules, fits), (*behaviour_items, *fits))

    def totals(self, rules: ScoringRules, fit: Sequence[ScoreItem]) -> ScoreBreakdown:
        """:meth:`breakdown` without its items (``items`` is empty): the same ``total``, ``behaviour`` and ``fit`` to
        the last bit, for decisions that read only those (:func:`stage_after_scoring`, the promotion rules). Building
        and sorting the items is most of a breakdown's cost, and the intake asks after every event."""
        return ScoreBreakdown(*self._sums(rules, fit), ())

    def _sums(self, rules: ScoringRules, fit: Sequence[ScoreItem]) -> tuple[float, float, float]:
        """The score, its behaviour part and its fit part, as both :meth:`breakdown` and :meth:`totals` give them."""
        behaviour = sum([group.points for group in self._groups.values()])  # a list sums faster than a generator
        fit_total = sum([item.points for item in fit]) if fit else 0  # the sum of nothing, as sum() gives it
        return _total(rules, behaviour, fit_total), round(behaviour, 2), round(fit_total, 2)


def _total(rules: ScoringRules, behaviour: float, fit_total: float) -> float:
    """The score from its two parts: their sum, no lower than the floor, to two decimals."""
    total = behaviour + fit_total
    if rules.floor is not None:
        total = max(total, rules.floor)
    return float(round(total, 2))  # a float even when every part is 0 (sums of nothing are the int 0)


def score_without_events(rules: ScoringRules, lead: LeadView) -> float:
    """``score(rules, lead, [], now).total`` without building its breakdown: a lead no event has scored yet (a new
    lead of an import, where this runs once per row)."""
    return _total(rules, 0, sum(item.points for item in fit_items(rules, lead)))


class NewLeadScores:
    """:func:`score_without_events` of many new leads (an import's), given as their values rather than as a
    :class:`LeadView` each: remembered by the values of the fields the fit rules read (with their types, as
    :func:`fit_items` remembers them), so the leads that share those cost a look-up and no view is built for them.

    ``columns`` holds the lead's columns by name (``stage``, ``timezone``, the attributes; None when blank): a field
    is read as :meth:`LeadView.get` reads the view the lead would have (its ``key`` and ``email`` the email, score 0,
    the columns that are not None its attributes, ``custom`` its custom fields)."""

    _SIZE = 4096

    def __init__(self, rules: ScoringRules) -> None:
        self.rules = rules
        self.names = _fit_cache(rules).names
        self.known: dict[tuple[Any, ...], float] = {}

    def __call__(self, email: str, columns: Mapping[str, Any], tags: Sequence[str],
                 custom: Mapping[str, Any]) -> float:
        key = typed_values_key([self._value(name, email, columns, tags, custom) for name in self.names])
        found = self.known.get(key) if key is not None else None
        if found is None:
            attributes = {name: columns[name] for name in LEAD_ATTRIBUTES if columns.get(name) is not None}
            view = LeadView(key=email, email=email, stage=columns["stage"], timezone=columns.get("timezone"),
                            tags=tuple(tags), attributes=attributes, custom=custom)
            found = score_without_events(self.rules, view)
            if key is not None:
                if len(self.known) >= self._SIZE:
                    self.known.clear()
                self.known[key] = found
        return found

    @staticmethod
    def _value(name: str, email: str, columns: Mapping[str, Any], tags: Sequence[str],
               custom: Mapping[str, Any]) -> Any:
        if name == "email":
            return email
        if name in ("stage", "timezone"):
            return columns.get(name)
        if name == "score":
            return 0.0
        if name == "tags":
            return list(tags)
        if name in LEAD_ATTRIBUTES:
            value = columns.get(name)
            if value is not None:
                return value
        return custom.get(name)


def score(
    rules: ScoringRules, lead: LeadView, events: Sequence[tuple[Engagement, float]], now: datetime,
    *, fit: Sequence[ScoreItem] | None = None,
) -> ScoreBreakdown:
    """The lead's score at ``now`` from its events (each with the points it was awarded) and its fields.

    Behaviour points decay from the event's time with the configured half-life; an event stamped after ``now`` (a
    client clock slightly ahead) counts in full rather than growing. Events that were awarded 0 points are left out of
    the items. Items: one per event type (largest contribution first), then the fit rules that hold. ``fit``: the
    lead's :func:`fit_items` when the caller already has them (they depend on its fields only).
    """
    accumulator = ScoreAccumulator(rules, now)
    for event, awarded in events:
        accumulator.add(event.type, event.at, awarded)
    return accumulator.breakdown(rules, fit if fit is not None else fit_items(rules, lead))


def stage_after_scoring(rules: ScoringRules, stage: str, breakdown: ScoreBreakdown) -> tuple[str, str] | None:
    """``("mql", reason)`` when a lead or recycled lead reaches the MQL threshold (and the minimum fit); None otherwise.

    Scoring only ever promotes to ``mql``: it never demotes (a decayed score does not undo a hand-off) and never
    decides ``sql`` or later, which belong to sales feedback and the promotion rules.
    """
    threshold = rules.thresholds.mql
    if stage not in PROMOTABLE_STAGES or threshold is None or breakdown.total < threshold:
        return None
    reason = f"score {breakdown.total} >= mql threshold {threshold:g}"
    min_fit = rules.thresholds.mql_min_fit
    if min_fit is not None:
        if breakdown.fit < min_fit:
            return None
        reason += f", fit {breakdown.fit} >= {min_fit:g}"
    return "mql", reason
