"""A campaign's entry criteria as SQL on the lead table: a *necessary* condition of entering, so that the database
leaves out the leads that cannot enter and Python decides only on the rest.

Python (:func:`nurture.core.conditions.filter_matches`, :func:`nurture.core.enrollment.blocked`, the recycle wait)
keeps the last word; what is written here only has to let through every lead it would let in. So each test is
translated where SQL can mirror it exactly, and lets the lead through where it cannot:

- entry stages, and neither unsubscribed nor bounced: as they are;
- ``tags`` (any of) and text tests on custom fields: the value must appear in the JSON text, compared in lower case;
  JSON holding an escape or a character outside printable ASCII (whose Unicode case folding SQL cannot mirror)
  always passes;
- ``industry``, ``country`` and text tests on other lead columns: the trimmed, lower-cased column is one of the
  values (unusual text passes); a lead without the column passes when its custom fields name it (the view falls
  back to them);
- ``company_size`` and ``score`` bounds (``gt``, ``gte``, ``lt``, ``lte``) as comparisons;
- ``had_event`` is not tested here (the events are read for the leads that pass), nor is the re-entry policy
  (the leads' enrollments are read for them), so no query joins leads to enrollments or events: no plan of the
  database can turn a look-up per lead into a scan per lead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Float, Text, and_, cast, false, func, or_, true
from sqlalchemy.engine import Dialect

from nurture.definitions.campaign import Campaign, EntryFilter
from nurture.definitions.conditions import Comparison
from nurture.storage.dialect import ascii_lower, contains_text, unusual_text
from nurture.storage.rows import LEAD_COLUMNS
from nurture.storage.tables import L

_BUILT_IN = ("email", "stage", "timezone")  # text columns the view always reads from the column
_TEXT_ATTRIBUTES = tuple(name for name in LEAD_COLUMNS if name != "company_size")  # text columns, else custom fields


def entry_condition(campaign: Campaign, dialect: Dialect) -> Any:
    """SQL on the lead table that every lead able to enter ``campaign`` now satisfies.

    It filters the leads a query selects by ids, emails or a range of ids, and must not select them itself: the
    stage is compared as ``stage || ''``, so that no plan reads the stage index once per campaign of an ``OR`` (every
    lead in those stages, for each batch of an import) instead of looking the given leads up."""
    stage = L.c.stage.concat("")
    tests = [stage.in_(campaign.entry.stages()), L.c.unsubscribed_at.is_(None), L.c.bounced_at.is_(None)]
    if campaign.entry.where is not None:
        tests += _filter_tests(campaign.entry.where, dialect)
    return and_(*tests)


@dataclass(frozen=True)
class EntrySql:
    """What a read of leads for enrollment adds to its query: ``where`` (the lead may enter one of the campaigns)
    and ``flags``, one column per campaign, in order, named ``may_<index>``: whether it may enter that one."""

    where: Any
    flags: list[Any]


def entry_sql(campaigns: list[Campaign], dialect: Dialect) -> EntrySql:
    """The :class:`EntrySql` of these campaigns."""
    conditions = [entry_condition(c, dialect) for c in campaigns]
    return EntrySql(or_(*conditions) if conditions else false(),
                    [condition.label(f"may_{index}") for index, condition in enumerate(conditions)])


def _norm(value: str) -> str:
    return value.strip().casefold()


def _plain(value: str) -> bool:
    """Whether SQL's ASCII lower-casing and a substring test mirror Python's for this (folded) value exactly."""
    return all(" " <= ch <= "~" for ch in value) and '"' not in value and "\\" not in value


def _json_text(column: Any) -> Any:
    return cast(column, Text)


def _json_mentions(column: Any, values: list[str], dialect: Dialect) -> Any:
    """SQL: one of the (folded) ``values`` occurs in the column's JSON text, lower-cased, or the text is unusual."""
    text = _json_text(column)
    lowered = ascii_lower(text, dialect)
    found = [contains_text(lowered, value, dialect) for value in values if _plain(value)]
    return or_(*found, unusual_text(text, dialect))


def _custom_has(name: str, dialect: Dialect) -> Any:
    """SQL: the custom fields may hold ``name`` (the key occurs in their JSON text, or the text is unusual)."""
    text = _json_text(L.c.fields)
    if not _plain(name):
        return true()
    return or_(contains_text(text, f'"{name}"', dialect), unusual_text(text, dialect))


def _column_is_one_of(name: str, values: list[str], dialect: Dialect, *, fallback: bool) -> Any:
    """SQL: the text column, trimmed and lower-cased, is one of ``values`` (folded); unusual text passes; with
    ``fallback``, so does a lead without the column whose custom fields name it."""
    column = L.c[name]
    plain = sorted({value for value in values if _plain(value)})
    tests = [unusual_text(column, dialect)]
    if plain:
        tests.append(ascii_lower(func.trim(column), dialect).in_(plain))
    if fallback:
        tests.append(and_(column.is_(None), _custom_has(name, dialect)))
    return or_(*tests)


def _text_values(test: Any) -> list[str] | None:
    """The (folded) texts one of which the field must equal for ``test`` to hold, or None when the test does not
    narrow that way (numbers, negations, substrings, patterns)."""
    if isinstance(test, str):
        return [_norm(test)]
    if isinstance(test, list):
        return [_norm(v) for v in test] if test and all(isinstance(v, str) for v in test) else None
    if isinstance(test, Comparison):
        if isinstance(test.eq, str):
            return [_norm(test.eq)]
        if test.in_ and all(isinstance(v, str) for v in test.in_):
            return [_norm(str(v)) for v in test.in_]
    return None


def _bounds(value: Any, test: Comparison) -> list[Any]:
    tests = []
    for bound, holds in ((test.gt, value.__gt__), (test.gte, value.__ge__), (test.lt, value.__lt__),
                         (test.lte, value.__le__)):
        if bound is not None:
            tests.append(holds(bound))
    return tests


def _filter_tests(where: EntryFilter, dialect: Dialect) -> list[Any]:
    tests: list[Any] = []
    if where.tags is not None:
        tests.append(_json_mentions(L.c.tags, [_norm(t) for t in where.tags], dialect))
    if where.industry is not None:
        tests.append(_column_is_one_of("industry", [_norm(v) for v in where.industry], dialect, fallback=True))
    if where.country is not None:
        tests.append(_column_is_one_of("country", [_norm(v) for v in where.country], dialect, fallback=True))
    if where.company_size is not None:
        bounds = _bounds(L.c.company_size, where.company_size)
        if bounds:
            tests.append(or_(and_(*bounds), and_(L.c.company_size.is_(None), _custom_has("company_size", dialect))))
    for name, test in (where.fields or {}).items():
        narrowed = _field_test(name, test, dialect)
        if narrowed is not None:
            tests.append(narrowed)
    return tests


def _field_test(name: str, test: Any, dialect: Dialect) -> Any:
    """SQL narrowing one ``fields`` test, or None when it does not narrow."""
    if name == "score":
        if isinstance(test, Comparison):
            bounds = _bounds(cast(func.coalesce(L.c.score, 0), Float), test)
            return and_(*bounds) if bounds else None
        return None
    values = _text_values(test)
    if values is None:
        return None
    if name == "tags":
        return _json_mentions(L.c.tags, values, dialect)
    if name in _BUILT_IN:
        return _column_is_one_of(name, values, dialect, fallback=False)
    if name in _TEXT_ATTRIBUTES:
        return _column_is_one_of(name, values, dialect, fallback=True)
    if name in ("score", "company_size"):
        return None
    return _json_mentions(L.c.fields, values, dialect)
