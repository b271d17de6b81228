"""Conditions on engagement, score and lead fields, as written in campaign YAML (``when:``, branch rules, entry filters)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from nurture.definitions.fields import Strict

Scalar = str | int | float | bool


class Comparison(Strict):
    """A test on one value: ``{gte: 50}``, ``{in: [US, CA]}``, ``{eq: software}``; several keys must all hold.

    ``contains`` is a case-insensitive substring test (a list: any of them); ``matches`` is a regular expression searched
    anywhere in the value (case-sensitive unless it starts with ``(?i)``).
    """

    eq: Scalar | None = None
    ne: Scalar | None = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    in_: list[Scalar] | None = Field(None, alias="in")
    not_in: list[Scalar] | None = None
    contains: str | list[str] | None = Field(None, description="Substring, case-insensitive; a list: any of them.")
    matches: str | None = Field(None, description="A regular expression searched in the value, e.g. '(?i)\\bvp\\b'.")

    @field_validator("contains")
    @classmethod
    def _has_text(cls, needles: str | list[str] | None) -> str | list[str] | None:
        if needles is not None and not all([needles] if isinstance(needles, str) else needles or [""]):
            raise ValueError("contains needs a non-empty text (or a list of them)")
        return needles

    @field_validator("matches")
    @classmethod
    def _regex_compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return pattern

    @model_validator(mode="after")
    def _not_empty(self) -> Comparison:
        if not self.model_fields_set:
            raise ValueError("a comparison needs at least one of eq, ne, gt, gte, lt, lte, in, not_in, contains, matches")
        return self


FieldTest = Comparison | list[Scalar] | Scalar
"""A lead-field test: a plain value (equals, case-insensitive for text), a list (one of), or a comparison."""

StepRefs = str | list[str]


class Condition(Strict):
    """All the keys given must hold. ``any``/``all``/``not`` combine conditions.

    Engagement keys name email steps of the same campaign: ``opened: welcome`` holds once the lead opened the email of
    step ``welcome``; ``clicked`` likewise; ``not_opened`` / ``not_clicked`` are their negations.
    """

    opened: StepRefs | None = None
    clicked: StepRefs | None = None
    not_opened: StepRefs | None = None
    not_clicked: StepRefs | None = None
    event: StepRefs | None = Field(None, description="The lead recorded an event of this type since it was enrolled.")
    no_event: StepRefs | None = Field(None, description="The lead recorded no event of this type since it was enrolled.")
    score: Comparison | None = None
    lead: dict[str, FieldTest] | None = Field(None, description="Tests on lead fields (custom fields by name too).")
    any: list[Condition] | None = None
    all: list[Condition] | None = None
    not_: Condition | None = Field(None, alias="not")

    @model_validator(mode="after")
    def _not_empty(self) -> Condition:
        if not self.model_fields_set:
            raise ValueError("a condition needs at least one test (opened, clicked, score, lead, any, ...)")
        return self

    def located_step_refs(self) -> list[tuple[tuple[str | int, ...], str, str]]:
        """Every (where in the condition, key, step id) this condition names, nested ones included."""
        refs: list[tuple[tuple[str | int, ...], str, str]] = []
        for key in ("opened", "clicked", "not_opened", "not_clicked"):
            value = getattr(self, key)
            if isinstance(value, str):
                refs.append(((key,), key, value))
            for index, step_id in enumerate(value if isinstance(value, list) else []):
                refs.append(((key, index), key, step_id))
        children = [("any", i, child) for i, child in enumerate(self.any or [])]
        children += [("all", i, child) for i, child in enumerate(self.all or [])]
        for name, index, child in children:
            refs.extend(((name, index, *loc), key, ref) for loc, key, ref in child.located_step_refs())
        if self.not_ is not None:
            refs.extend((("not", *loc), key, ref) for loc, key, ref in self.not_.located_step_refs())
        return refs


def as_list(value: Any) -> list[Any]:
    """A YAML value that may be one item or a list, as a list."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
