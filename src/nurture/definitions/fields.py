"""Field types shared by the definition models: durations, stages, step ids, timezones, send windows."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema, model_validator

from nurture.definitions import windows
from nurture.definitions.durations import Duration, parse_duration

STAGES = ("lead", "mql", "sql", "opportunity", "customer", "recycled", "disqualified")
Stage = Literal["lead", "mql", "sql", "opportunity", "customer", "recycled", "disqualified"]

DurationField = Annotated[
    Duration,
    BeforeValidator(parse_duration),
    PlainSerializer(str, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\s*(\d+\s*[smhdw]\s*)+$",
            "description": "A duration: number + unit (s, m, h, d, w), combined as in '1d12h'. Days are calendar days.",
            "examples": ["0s", "30m", "4h", "2d", "1w"],
        }
    ),
]

SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
Slug = Annotated[str, Field(pattern=SLUG_PATTERN, max_length=64)]


def _check_zone(value: Any) -> Any:
    if value is not None:
        windows.load_zone(value)
    return value


TimezoneName = Annotated[
    str,
    BeforeValidator(_check_zone),
    WithJsonSchema({"type": "string", "description": "An IANA timezone name such as Europe/Berlin."}),
]


class Strict(BaseModel):
    """Base of every definition model: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


_DAYS_SCHEMA = {
    "anyOf": [
        {"type": "string", "pattern": windows.DAYS_PATTERN},
        {
            "type": "array",
            "items": {"type": "string", "pattern": windows.DAYS_ITEM_PATTERN},
            "contains": {"type": "string", "pattern": windows.DAYS_PATTERN},
        },
    ],
    "description": "Days of the week: ['mon', 'tue'], 'mon-fri', 'mon,wed', 'weekdays', 'weekends' or 'daily'.",
}


def _days(value: Any) -> Any:
    if isinstance(value, (list, str)):
        return windows.parse_days(value)
    return value


DaysField = Annotated[
    frozenset[int],
    BeforeValidator(_days),
    PlainSerializer(lambda days: [windows.WEEKDAYS[d] for d in sorted(days)], return_type=list),
    WithJsonSchema(_DAYS_SCHEMA),
]


class SendWindowSpec(Strict):
    """When email may go out, in the lead's own timezone: ``{days: mon-fri, hours: "09:00-17:00"}`` (end 24:00: midnight)."""

    days: DaysField = Field(default=frozenset(range(5)), json_schema_extra={"default": "mon-fri"})
    hours: str = Field(
        "09:00-17:00",
        description="Local opening hours, 'HH:MM-HH:MM'; the end may be 24:00 (midnight).",
        json_schema_extra={"pattern": windows.HOURS_PATTERN},
    )

    @model_validator(mode="after")
    def _hours_valid(self) -> SendWindowSpec:
        windows.parse_hours(self.hours)
        if not self.days:
            raise ValueError("a send window needs at least one day")
        return self

    def window(self) -> windows.SendWindow:
        """The window as the calendar functions take it."""
        start, end = windows.parse_hours(self.hours)
        return windows.SendWindow(days=self.days, start=start, end=end)


_TIME_RE = re.compile(r"^\d{1,2}:\d{2}$")


class CadenceSpec(Strict):
    """A weekly cadence in the lead's timezone: ``{days: [tue], at: "10:00"}``."""

    days: DaysField
    at: str = Field(description="Local time of day, 'HH:MM'.", json_schema_extra={"pattern": windows.TIME_PATTERN})

    @model_validator(mode="after")
    def _at_valid(self) -> CadenceSpec:
        windows.parse_time_of_day(self.at)
        if not self.days:
            raise ValueError("a cadence needs at least one day")
        return self
