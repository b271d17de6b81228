"""The scoring rules (``campaigns/scoring.yaml``): behaviour points per event, fit points per lead field, thresholds.

The shape marketers write::

    behaviour:
      half_life: 30d                             # optional: behaviour points halve every 30 days
      events:
        email_click: 3                           # points only
        page_view: {points: 1, max_per_day: 5}   # points and a daily cap
        content_download:                        # rules on the event's properties, first match wins
          - {when: {content: {contains: buyers-guide}}, points: 20}
          - {points: 10}
    fit:
      - {label: "company size 200+", when: {company_size: {gte: 200}}, points: 15}
      - {label: "executive", when: {title: {contains: [chief, vp]}}, points: 15, group: seniority}
      - {label: "manager", when: {title: {contains: manager}}, points: 8, group: seniority}
    thresholds:
      mql: 40                                    # total score that makes a lead an MQL
      mql_min_fit: 10                            # optional: and at least this many fit points
    floor: -100                                  # optional: the lowest total a lead can have

A missing file means no points and no thresholds. Problems come back as ``scoring.yaml:line: message``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from nurture.definitions.conditions import Comparison, Scalar
from nurture.definitions.durations import Duration
from nurture.definitions.fields import DurationField, Strict
from nurture.definitions.loader import validation_problems
from nurture.definitions.yamlsource import YamlDocument, load_yaml
from nurture.errors import Problem

SCORING_FILE = "scoring.yaml"

Points = Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""A number of points: an int or a float, never text or a boolean (``points: "10"`` is a typo worth reporting)."""

_EVENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")


def _event_type(name: str) -> str:
    if not _EVENT_TYPE.match(name):
        raise ValueError(f"event type '{name}': write it as the intake records it, in lower case (like page_view)")
    return name


EventType = Annotated[str, AfterValidator(_event_type)]


def _not_null(value: Any) -> Any:
    if value is None:
        raise ValueError("nothing to test: write a value, a list (one of) or a comparison such as {gte: 200}")
    return value


def _test_kind(value: Any) -> str:
    if isinstance(value, (dict, Comparison)):
        return "comparison"
    return "list" if isinstance(value, list) else "value"


ValueTest = Annotated[
    Annotated[Comparison, Tag("comparison")] | Annotated[list[Scalar], Tag("list")] | Annotated[Scalar, Tag("value")],
    Discriminator(_test_kind),
    BeforeValidator(_not_null),
]
"""The same test as a campaign's ``lead:`` condition (a value, a list: one of, or a comparison), chosen by its YAML shape
so that a mistake inside a comparison is reported once, at its own line, instead of once per alternative."""


def _some_tests(tests: dict[str, Any]) -> dict[str, Any]:
    if not tests:
        raise ValueError("'when' needs at least one test, such as {industry: software}")
    return tests


Tests = Annotated[dict[str, ValueTest], AfterValidator(_some_tests)]


class EventRule(Strict):
    """Points for one event type: ``{points: 1, max_per_day: 5}``, optionally only ``when`` the event's properties match."""

    when: Tests | None = Field(None, description="Tests on the event's properties (url, content, ...); all must hold.")
    points: Points
    max_per_day: int | None = Field(
        None, ge=1, strict=True,
        description="Events of this type beyond this many scored on one UTC day score 0 (counted over all its rules).",
    )


def _event_rules(value: Any) -> Any:
    """Every way of writing an event type's points, as a list of rules: ``3``, ``{points: 3}``, ``[{...}, ...]``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [{"points": value}]
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and value:
        return value
    if isinstance(value, list):
        raise ValueError("an empty list of rules scores nothing: add a rule or remove the event type")
    raise ValueError(f"expected points (a number), {{points: N, max_per_day: N}} or a list of rules, not {value!r}")


EventRules = Annotated[list[EventRule], BeforeValidator(_event_rules)]


class Behaviour(Strict):
    """Points for what a lead does, by event type; unknown event types score nothing."""

    half_life: DurationField | None = Field(None, description="Behaviour points halve every this long; unset: no decay.")
    events: dict[EventType, EventRules] = Field(default_factory=dict)

    @field_validator("half_life")
    @classmethod
    def _positive(cls, half_life: Duration | None) -> Duration | None:
        if half_life is not None and not half_life:
            raise ValueError("half_life must be longer than 0s (leave it out for no decay)")
        return half_life


class FitRule(Strict):
    """Points for who the lead is: every test in ``when`` (lead fields, custom fields by name) must hold.

    Rules with the same ``group`` are alternatives (bands of company size, levels of seniority): only the first of them
    that holds scores.
    """

    label: str = Field(min_length=1, max_length=80, description="Shown in the score breakdown; unique in the file.")
    when: Tests
    points: Points
    group: str | None = Field(None, min_length=1, description="Only the first rule of a group that holds scores.")


class Thresholds(Strict):
    """Scores that move a lead along the lifecycle."""

    mql: Points | None = Field(None, ge=0, description="A lead (or recycled lead) at or over this total becomes an MQL.")
    mql_min_fit: Points | None = Field(None, ge=0, description="...and only with at least this many fit points.")

    @model_validator(mode="after")
    def _min_fit_needs_mql(self) -> Thresholds:
        if self.mql_min_fit is not None and self.mql is None:
            raise ValueError("mql_min_fit only applies together with an mql threshold")
        return self


class ScoringRules(Strict):
    """The whole scoring file. ``ScoringRules()`` scores nothing and promotes nobody (no file)."""

    behaviour: Behaviour = Field(default_factory=Behaviour)
    fit: list[FitRule] = Field(default_factory=list)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    floor: Points | None = Field(None, le=0, description="The lowest total a lead can have (0 or below); unset: none.")


def best_possible_fit(rules: ScoringRules) -> float:
    """The most fit points any lead can get: every positive rule, but only the best rule of each group."""
    best_of_group: dict[str, float] = {}
    total = 0.0
    for rule in rules.fit:
        if rule.group is None:
            total += max(rule.points, 0)
        else:
            best_of_group[rule.group] = max(best_of_group.get(rule.group, 0), rule.points)
    return total + sum(best_of_group.values())


def _check_rules(rules: ScoringRules, doc: YamlDocument) -> list[Problem]:
    """What a valid shape can still get wrong: duplicate labels, unreachable rules, an unreachable minimum fit."""
    problems: list[Problem] = []
    for event_type, event_rules in rules.behaviour.events.items():
        for index, rule in enumerate(event_rules[:-1]):
            if rule.when is None:
                problems.append(doc.problem(
                    ("behaviour", "events", event_type, index + 1),
                    f"{event_type}: rule {index + 2} can never match: rule {index + 1} has no 'when' and matches every event",
                ))
                break
    seen: dict[str, int] = {}
    for index, fit_rule in enumerate(rules.fit):
        key = fit_rule.label.strip().casefold()
        if key in seen:
            first = doc.line_of(("fit", seen[key], "label"))
            problems.append(doc.problem(("fit", index, "label"), f"duplicate fit label '{fit_rule.label}' (also on line {first})"))
        seen.setdefault(key, index)
    min_fit = rules.thresholds.mql_min_fit
    best_fit = best_possible_fit(rules)
    if min_fit is not None and min_fit > best_fit:
        problems.append(doc.problem(
            ("thresholds", "mql_min_fit"),
            f"mql_min_fit {min_fit:g} can never be reached: the fit rules give at most {best_fit:g} points",
        ))
    return problems


def validate_scoring(doc: YamlDocument) -> tuple[ScoringRules, list[Problem]]:
    """Validate a parsed scoring file; with any problem the rules are ``ScoringRules()`` (score nothing, promote nobody)."""
    if doc.problems or doc.data is None:
        return ScoringRules(), [*doc.problems] or [doc.problem((), "the file is empty (delete it for no scoring)")]
    if not isinstance(doc.data, dict):
        return ScoringRules(), [doc.problem((), "expected a mapping with behaviour, fit, thresholds and floor")]
    try:
        rules = ScoringRules.model_validate(doc.data)
    except ValidationError as exc:
        return ScoringRules(), sorted(validation_problems(doc, exc, ScoringRules))
    problems = _check_rules(rules, doc)
    return (ScoringRules() if problems else rules), problems


def load_scoring(campaigns_dir: Path) -> tuple[ScoringRules, list[Problem]]:
    """Read ``campaigns_dir/scoring.yaml``; a missing file is no scoring at all, not a problem."""
    path = campaigns_dir / SCORING_FILE
    if not path.exists():
        return ScoringRules(), []
    return validate_scoring(load_yaml(path))
