"""Promotion to SQL, disqualification, and what sales' verdict does (pure; the rules come from ``sales.yaml``).

:func:`decide` is asked after anything that can change the answer (an event recorded, fields updated, a score
recomputed) and says what should happen to the lead's stage, with the rule and a reason a rep can read. The caller
writes the stage change, routes the lead (:mod:`nurture.core.routing`) and queues the handoff.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nurture.core.conditions import field_matches
from nurture.core.facts import Engagement, LeadView
from nurture.core.scoring import ScoreBreakdown, typed_values_key
from nurture.definitions.conditions import Comparison
from nurture.definitions.durations import Duration
from nurture.definitions.sales import DOMAIN, RESET_BEHAVIOUR, SalesRules

PROMOTE, DISQUALIFY = "promote", "disqualify"
ACCEPT, REJECT = "accept", "reject"

PROMOTABLE_STAGES = ("lead", "mql", "recycled")
"""Stages the rules may move to ``sql``: later stages belong to sales, and ``disqualified`` is final."""
KEPT_STAGES = ("opportunity", "customer", "disqualified")
"""Stages the disqualification rules leave alone: a deal in progress or won is sales' call, not a domain list's."""


@dataclass(frozen=True)
class Decision:
    """A stage change the rules call for."""

    kind: str  # "promote" (to sql) | "disqualify"
    rule: str  # "intent:demo_request", "score-and-fit:enterprise-ready", "disqualify:competitor"
    reason: str  # for people: "demo_request (explicit intent)"


@dataclass(frozen=True)
class FeedbackOutcome:
    """What a rep's accept or reject does to the lead."""

    stage: str  # "opportunity" | "recycled" | "disqualified"
    score_adjustment: float  # points added to the score (negative: taken off)
    set_fields: Mapping[str, Any]  # lead fields to set (rejection_reason among them on a reject)
    reason: str  # for people and the lead's history
    recycle_after: Duration | None = None  # recycled: wait this long before recycle campaigns and promotion
    reset_behaviour: bool = False  # drop every behaviour point (fit stays), before score_adjustment

    def to_json(self) -> dict[str, Any]:
        """For the API and ``nurture sales`` output."""
        return {
            "stage": self.stage, "score_adjustment": self.score_adjustment, "set_fields": dict(self.set_fields),
            "reason": self.reason, "recycle_after": str(self.recycle_after) if self.recycle_after is not None else None,
            "reset_behaviour": self.reset_behaviour,
        }


def lead_value(lead: LeadView, name: str) -> Any:
    """A lead field as the sales rules test it; ``domain`` is the email's domain (lower case)."""
    if name == DOMAIN:
        _, at, domain = lead.email.rpartition("@")
        return domain.strip().lower() if at and domain.strip() else None
    return lead.get(name)


def _present(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, (list, tuple, set)):
        return bool(value)
    return value is not None


def holds(value: Any, test: Any) -> bool:
    """One test on one value; a value that is missing (None, blank, an empty list) fails every test.

    That is the difference from campaign conditions: ``country: {not_in: [IR]}`` must not pass a lead with no country,
    or a disqualification on it would catch every short form.
    """
    return _present(value) and field_matches(value, test)


def lead_holds(lead: LeadView, tests: Mapping[str, Any] | None) -> bool:
    """Whether every test on lead fields holds (no tests: True). A loop rather than ``all()`` of a generator: the
    intake asks after every event, and the first test usually fails (a field the lead does not have)."""
    if tests:
        for name, test in tests.items():
            if not holds(lead_value(lead, name), test):
                return False
    return True


_OPERATORS = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "in": "in", "not_in": "not in",
              "contains": "contains", "matches": "matches"}


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_shown(item) for item in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def describe(name: str, test: Any) -> str:
    """A test as a rep reads it: ``company_size >= 200``, ``budget in confirmed, approved``."""
    if isinstance(test, Comparison):
        parts = test.model_dump(by_alias=True, exclude_none=True)
        return " and ".join(f"{name} {_OPERATORS[key]} {_shown(value)}" for key, value in parts.items())
    if isinstance(test, list):
        return f"{name} in {_shown(test)}"
    return f"{name} = {_shown(test)}"


def _describe_all(tests: Mapping[str, Any] | None) -> str:
    return ", ".join(describe(name, test) for name, test in (tests or {}).items())


def _disqualification(rules: SalesRules, lead: LeadView) -> Decision | None:
    """The first disqualification rule that holds. Remembered by the values of the fields the rules read (with their
    types), so a lead's later events cost a look-up: intake asks after every event."""
    names, known = _disqualify_cache(rules)
    key = _values_key(lead, names)
    if key is None:
        return _first_disqualification(rules, lead)
    try:
        return known[key]
    except KeyError:
        pass
    if len(known) >= _DISQUALIFY_CACHE_SIZE:
        known.clear()
    decision = known[key] = _first_disqualification(rules, lead)  # another thread may clear it: return ours
    return decision


_DISQUALIFY_CACHE_SIZE = 65536
_DISQUALIFY_CACHES: dict[int, tuple[SalesRules, tuple[str, ...], dict[tuple[Any, ...], Decision | None]]] = {}


def _disqualify_cache(rules: SalesRules) -> tuple[tuple[str, ...], dict[tuple[Any, ...], Decision | None]]:
    cached = _DISQUALIFY_CACHES.get(id(rules))
    if cached is None or cached[0] is not rules:
        if len(_DISQUALIFY_CACHES) >= 8:  # a process loads one sales file, tests a few
            _DISQUALIFY_CACHES.clear()
        names = tuple(dict.fromkeys(name for rule in rules.disqualify for name in rule.when))
        cached = _DISQUALIFY_CACHES[id(rules)] = (rules, names, {})
    return cached[1], cached[2]


def _values_key(lead: LeadView, names: tuple[str, ...]) -> tuple[Any, ...] | None:
    """The values of these lead fields with their types, as a memo key (None when one is not a plain value)."""
    return typed_values_key([lead_value(lead, name) for name in names])


_STATE_FIELDS = frozenset({"stage", "score"})
"""The fields :meth:`LeadView.get` reads that change while a lead is scored event after event (its other fields,
and its email, do not)."""
_UNKNOWN: Any = object()


class FieldChecks:
    """The sales rules' tests on one lead's fields, each answered once: for a caller that asks :func:`decide` again
    and again about views of one lead that differ in their stage and score only (the intake batch asks after each of
    a lead's events, and the same tests failed the same way every time). With the answers kept, a decision takes
    0.9 µs rather than 2.9 µs (microbenchmark). Tests that read the stage or the score are answered afresh each time.
    The answers are kept by the id of the tests' mapping, a field of the rules: the rules keep it alive."""

    __slots__ = ("_disqualification", "_held", "rules")

    def __init__(self, rules: SalesRules) -> None:
        self.rules = rules
        self._held: dict[int, bool] = {}  # id of a tests mapping of the rules -> whether it holds
        self._disqualification: Decision | None = _UNKNOWN

    def lead_holds(self, lead: LeadView, tests: Mapping[str, Any] | None) -> bool:
        """:func:`lead_holds`, remembered."""
        if not tests:
            return True
        held = self._held.get(id(tests))
        if held is None:
            held = lead_holds(lead, tests)
            if _STATE_FIELDS.isdisjoint(tests):
                self._held[id(tests)] = held
        return held

    def disqualification(self, lead: LeadView) -> Decision | None:
        """The first disqualification rule that holds, remembered."""
        decision = self._disqualification
        if decision is _UNKNOWN:
            decision = _disqualification(self.rules, lead)
            if _STATE_FIELDS.isdisjoint(_disqualify_cache(self.rules)[0]):
                self._disqualification = decision
        return decision


def _first_disqualification(rules: SalesRules, lead: LeadView) -> Decision | None:
    for rule in rules.disqualify:
        if lead_holds(lead, rule.when):
            values = ", ".join(f"{name} {_shown(lead_value(lead, name))}" for name in rule.when)
            return Decision(DISQUALIFY, f"disqualify:{rule.name}", f"{rule.name}: {values}")
    return None


def _intent(rules: SalesRules, lead: LeadView, event: Engagement, checks: FieldChecks | None) -> Decision | None:
    holds_for = checks.lead_holds if checks is not None else lead_holds
    for trigger in rules.promotion.intent:
        if trigger.event != event.type or not holds_for(lead, trigger.when):
            continue
        properties = trigger.properties or {}
        if not all(holds(event.properties.get(name), test) for name, test in properties.items()):
            continue
        conditions = "; ".join(text for text in (_describe_all(trigger.when), _describe_all(properties)) if text)
        detail = f"explicit intent; {conditions}" if conditions else "explicit intent"
        return Decision(PROMOTE, f"intent:{event.type}", f"{event.type} ({detail})")
    return None


def _score_and_fit(rules: SalesRules, lead: LeadView, breakdown: ScoreBreakdown,
                   checks: FieldChecks | None) -> Decision | None:
    holds_for = checks.lead_holds if checks is not None else lead_holds
    for rule in rules.promotion.score_and_fit:
        if breakdown.total < rule.score:
            continue
        if rule.min_fit is not None and breakdown.fit < rule.min_fit:
            continue
        if not holds_for(lead, rule.fit):
            continue
        reason = f"score {_shown(breakdown.total)} >= {_shown(rule.score)}"
        fit = [f"{_shown(breakdown.fit)} fit points >= {_shown(rule.min_fit)}"] if rule.min_fit is not None else []
        fit += [describe(name, test) for name, test in (rule.fit or {}).items()]
        if fit:
            reason += f" and fit: {', '.join(fit)}"
        return Decision(PROMOTE, f"score-and-fit:{rule.name}", reason)
    return None


def decide(
    rules: SalesRules, lead: LeadView, breakdown: ScoreBreakdown, event: Engagement | None,
    checks: FieldChecks | None = None,
) -> Decision | None:
    """Whether the lead should now be disqualified or promoted to SQL; None when nothing changes.

    In order: the disqualification rules (from any stage but opportunity, customer and disqualified; a disqualified
    lead is never promoted, whatever it asks for), then, for leads, MQLs and recycled leads only, the intent trigger
    for ``event`` (the event just recorded, or None), then the score-and-fit rules on ``breakdown``. First match wins.
    ``checks``: this lead's answers so far (:class:`FieldChecks` of these rules), when the caller keeps them.
    """
    if checks is not None and checks.rules is not rules:
        checks = None
    if lead.stage not in KEPT_STAGES:
        disqualified = checks.disqualification(lead) if checks is not None else _disqualification(rules, lead)
        if disqualified is not None:
            return disqualified
    if lead.stage not in PROMOTABLE_STAGES:
        return None
    if event is not None:
        promoted = _intent(rules, lead, event, checks)
        if promoted is not None:
            return promoted
    return _score_and_fit(rules, lead, breakdown, checks)


def reject_reasons(rules: SalesRules) -> list[str]:
    """The codes a rep can reject a lead with, in the file's order."""
    return list(rules.feedback.reject_reasons)


REJECTED_BY_SALES = "rejected by sales: "
NOTE = "; note: "
"""What follows a decision's reason in its stage change when sales wrote a note."""
"""How the stage change of a rejection begins; the reason code follows (then its label in parentheses)."""


def rejection_code(history_reason: str) -> str | None:
    """The reject reason code of a rejection's stage change (``rejected by sales: no_budget (No budget); note: ...``
    -> ``no_budget``); None for another stage change."""
    if not history_reason.startswith(REJECTED_BY_SALES):
        return None
    return history_reason[len(REJECTED_BY_SALES):].split(NOTE, 1)[0].split(" (", 1)[0].strip() or None


def feedback(rules: SalesRules, verdict: str, reason: str | None) -> FeedbackOutcome:
    """What sales' verdict on an SQL does to it.

    ``accept``: it becomes an opportunity (``reason`` is an optional note). ``reject``: ``reason`` must be one of the
    configured codes, whose stage, score change, delay and fields apply; ``rejection_reason`` is always set to the code,
    so recycle campaigns can select on it. Anything else raises ValueError naming what is allowed.
    """
    if verdict == ACCEPT:
        note = (reason or "").strip()
        return FeedbackOutcome("opportunity", 0, {}, f"accepted by sales: {note}" if note else "accepted by sales")
    if verdict != REJECT:
        raise ValueError(f"unknown verdict {verdict!r}: use {ACCEPT} or {REJECT}")
    codes = reject_reasons(rules)
    configured = rules.feedback.reject_reasons.get(reason or "")
    if configured is None:
        given = f"unknown reject reason {reason!r}" if reason else "a rejection needs a reason"
        raise ValueError(f"{given}: use one of {', '.join(codes)}")
    assert reason is not None
    reset = configured.score == RESET_BEHAVIOUR
    adjustment = 0.0 if reset else float(configured.score)
    return FeedbackOutcome(
        stage=configured.stage,
        score_adjustment=adjustment,
        set_fields={**configured.set, "rejection_reason": reason},
        reason=f"{REJECTED_BY_SALES}{reason}" + (f" ({configured.label})" if configured.label else ""),
        recycle_after=configured.recycle_after if configured.stage == "recycled" else None,
        reset_behaviour=reset,
    )
