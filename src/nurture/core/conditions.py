"""Evaluate campaign conditions and entry filters against a lead and its history (pure)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from nurture.core.facts import CLICK, OPEN, Engagement, History, LeadView
from nurture.definitions.campaign import Campaign, EntryFilter
from nurture.definitions.conditions import Comparison, Condition, as_list


def _norm(value: Any) -> Any:
    return value.strip().casefold() if isinstance(value, str) else value


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str | None:
    """A value as text for substring and pattern tests; None (never matches) when there is nothing to search."""
    if value is None or isinstance(value, bool):
        return None
    return value if isinstance(value, str) else str(value)


def compare(value: Any, test: Comparison) -> bool:
    """Whether ``value`` passes every key of the comparison (text compared case-insensitively)."""
    if test.eq is not None and _norm(value) != _norm(test.eq):
        return False
    if test.ne is not None and _norm(value) == _norm(test.ne):
        return False
    # lists, not sets: a custom field may hold a mapping or a list, which cannot be hashed
    if test.in_ is not None and _norm(value) not in [_norm(v) for v in test.in_]:
        return False
    if test.not_in is not None and _norm(value) in [_norm(v) for v in test.not_in]:
        return False
    if test.contains is not None or test.matches is not None:
        text = _text(value)
        if text is None:
            return False
        needles = [test.contains] if isinstance(test.contains, str) else test.contains or []
        if needles and not any(needle.casefold() in text.casefold() for needle in needles):
            return False
        if test.matches is not None and re.search(test.matches, text) is None:
            return False
    bounds = [(test.gt, lambda a, b: a > b), (test.gte, lambda a, b: a >= b), (test.lt, lambda a, b: a < b),
              (test.lte, lambda a, b: a <= b)]
    for bound, holds in bounds:
        if bound is None:
            continue
        number = _number(value)
        if number is None or not holds(number, bound):
            return False
    return True


_POSITIVE_KEYS = ("eq", "gt", "gte", "lt", "lte", "in_", "contains", "matches")


def field_matches(value: Any, test: Any) -> bool:
    """A lead-field test: a value (equals), a list (one of), or a Comparison.

    On a list-valued field (tags) a positive test holds if any item passes, and ``ne`` / ``not_in`` hold only if no
    item is excluded: ``tags: {not_in: [nurtured]}`` is false for a lead tagged ``nurtured`` among others.
    """
    if isinstance(value, (list, tuple, set)):
        if isinstance(test, Comparison) and (test.ne is not None or test.not_in is not None):
            negative = Comparison.model_construct(ne=test.ne, not_in=test.not_in)
            if not all(compare(item, negative) for item in value):
                return False
            positive = test.model_copy(update={"ne": None, "not_in": None})
            if any(getattr(positive, key) is not None for key in _POSITIVE_KEYS):
                return any(compare(item, positive) for item in value)
            return True
        return any(field_matches(item, test) for item in value)
    if isinstance(test, Comparison):
        return compare(value, test)
    if isinstance(test, list):
        return _norm(value) in [_norm(t) for t in test]
    return _norm(value) == _norm(test)


def _events(history: History, since: datetime, now: datetime) -> list[Engagement]:
    return [e for e in history.events if since <= e.at <= now]


def _engaged(events: list[Engagement], campaign_id: str, step_id: str, types: tuple[str, ...]) -> bool:
    for event in events:
        if (
            event.type in types
            and event.campaign_id == campaign_id
            and event.step_key is not None
            and (event.step_key == step_id or event.step_key.startswith(step_id + "/"))
        ):
            return True
    return False


def evaluate(
    condition: Condition, *, lead: LeadView, history: History, campaign_id: str, since: datetime, now: datetime
) -> bool:
    """Whether every test in ``condition`` holds at ``now`` (engagement counted from ``since``, the enrollment).

    A click counts as an open too: image-blocking clients record clicks without the open pixel.
    """
    events = _events(history, since, now)
    opened = (OPEN, CLICK)
    for step_id in as_list(condition.opened):
        if not _engaged(events, campaign_id, step_id, opened):
            return False
    for step_id in as_list(condition.clicked):
        if not _engaged(events, campaign_id, step_id, (CLICK,)):
            return False
    for step_id in as_list(condition.not_opened):
        if _engaged(events, campaign_id, step_id, opened):
            return False
    for step_id in as_list(condition.not_clicked):
        if _engaged(events, campaign_id, step_id, (CLICK,)):
            return False
    types = {e.type for e in events}
    if condition.event is not None and not set(as_list(condition.event)) & types:
        return False
    if condition.no_event is not None and set(as_list(condition.no_event)) & types:
        return False
    if condition.score is not None and not compare(lead.score, condition.score):
        return False
    for name, test in (condition.lead or {}).items():
        if not field_matches(lead.get(name), test):
            return False
    if condition.all is not None and not all(
        evaluate(c, lead=lead, history=history, campaign_id=campaign_id, since=since, now=now) for c in condition.all
    ):
        return False
    if condition.any is not None and not any(
        evaluate(c, lead=lead, history=history, campaign_id=campaign_id, since=since, now=now) for c in condition.any
    ):
        return False
    if condition.not_ is not None and evaluate(
        condition.not_, lead=lead, history=history, campaign_id=campaign_id, since=since, now=now
    ):
        return False
    return True


def filter_matches(where: EntryFilter | None, lead: LeadView, history: History) -> bool:
    """Whether a lead passes a campaign's entry filter."""
    if where is None:
        return True
    if where.industry is not None and not field_matches(lead.get("industry"), list(where.industry)):
        return False
    if where.country is not None and not field_matches(lead.get("country"), list(where.country)):
        return False
    if where.company_size is not None and not compare(lead.get("company_size"), where.company_size):
        return False
    if where.tags is not None and not {_norm(t) for t in lead.tags} & {_norm(t) for t in where.tags}:
        return False
    if where.had_event is not None and not {e.type for e in history.events} & set(where.had_event):
        return False
    for name, test in (where.fields or {}).items():
        if not field_matches(lead.get(name), test):
            return False
    return True


def entry_matches(campaign: Campaign, lead: LeadView, history: History) -> bool:
    """Whether a lead may enter a campaign now (stage, filters, not suppressed, campaign not paused)."""
    if campaign.paused or lead.unsubscribed or lead.bounced:
        return False
    if lead.stage not in campaign.entry.stages():
        return False
    return filter_matches(campaign.entry.where, lead, history)
