"""The experiment keys of a campaign file: an A/B step's ``goal`` and ``winner``, and a campaign's ``holdout``.

```yaml
holdout: 10%                       # a campaign key: this share of entering leads is enrolled and sent nothing
steps:
  - id: welcome
    email:
      template: welcome.html.j2
      subject: Welcome
      variants: [{id: a}, {id: b, subject: "Your guide is here"}]
      goal: click                  # click (default) | open | {event: demo_request, within: 14d} | {sql_within: 14d}
      winner: {confidence: 95%, min_sends: 500}   # send the winner to later leads once the call is made
```
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Discriminator, Field, PlainSerializer, Tag, WithJsonSchema

from nurture.definitions.durations import Duration
from nurture.definitions.fields import DurationField, Strict

DEFAULT_CONFIDENCE = 0.95
DEFAULT_MIN_SENDS = 100
"""The sends each variant needs before any call, when the step says nothing (``winner.min_sends`` otherwise)."""
DEFAULT_EVENT_WINDOW = Duration(days=30)

_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def _share(low: float, high: float, what: str, *, low_included: bool) -> Any:
    """A validator of ``'10%'`` or ``0.1`` into a fraction in (low, high) (``[low, high)`` if ``low_included``)."""

    def parse(value: Any) -> float:
        if isinstance(value, str):
            match = _PERCENT.match(value)
            if match is None:
                raise ValueError(f"{what} must be a percentage such as '10%' (or a fraction such as 0.1), not {value!r}")
            share = float(match.group(1)) / 100
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            share = float(value)
        else:
            raise ValueError(f"{what} must be a percentage such as '10%' (or a fraction such as 0.1), not {value!r}")
        if not ((low <= share if low_included else low < share) and share < high):
            shown = f"at least {low * 100:g}%" if low_included else f"more than {low * 100:g}%"
            raise ValueError(f"{what} must be {shown} and less than {high * 100:g}%, not {value!r}")
        return share

    return parse


def _percent_schema(pattern: str, description: str, minimum: dict[str, float]) -> dict[str, Any]:
    return {
        "anyOf": [{"type": "string", "pattern": pattern}, {"type": "number", **minimum, "exclusiveMaximum": 1}],
        "description": description,
    }


# '0.5%' .. '99.9%' (no '0%', no '100%'), or a fraction
_HOLDOUT_PATTERN = r"^\s*(?:[1-9][0-9]?(?:\.[0-9]+)?|0*\.[0-9]*[1-9][0-9]*|0+[1-9][0-9]?(?:\.[0-9]+)?)\s*%\s*$"
# '50%' .. '99.99%'
_CONFIDENCE_PATTERN = r"^\s*[5-9][0-9](?:\.[0-9]+)?\s*%\s*$"

HoldoutShare = Annotated[
    float,
    BeforeValidator(_share(0.0, 1.0, "holdout", low_included=False)),
    PlainSerializer(lambda share: f"{share * 100:g}%", return_type=str),
    WithJsonSchema(_percent_schema(
        _HOLDOUT_PATTERN,
        "The share of entering leads held out (enrolled, sent nothing) to measure the campaign's lift: '10%' or 0.1.",
        {"exclusiveMinimum": 0},
    )),
]

Confidence = Annotated[
    float,
    BeforeValidator(_share(0.5, 1.0, "confidence", low_included=True)),
    PlainSerializer(lambda share: f"{share * 100:g}%", return_type=str),
    WithJsonSchema(_percent_schema(
        _CONFIDENCE_PATTERN, "The confidence a call needs: '95%' or 0.95 (from 50% to below 100%).", {"minimum": 0.5},
    )),
]


class EventGoal(Strict):
    """The lead records ``event`` (e.g. demo_request) within ``within`` after the email was sent."""

    event: str = Field(min_length=1, max_length=100, description="Event type, e.g. demo_request.")
    within: DurationField = Field(default=DEFAULT_EVENT_WINDOW, description="How long after the send it counts.")


class SqlGoal(Strict):
    """The lead becomes an SQL within ``sql_within`` after the email was sent."""

    sql_within: DurationField


GOAL_FORMS = "click, open, {event: TYPE, within: 14d} or {sql_within: 14d}"
EMAIL_GOALS = ("click", "open")


def _email_goal(value: str) -> str:
    if value not in EMAIL_GOALS:
        raise ValueError(f"goal must be {GOAL_FORMS}, not {value!r}")
    return value


def _goal_form(value: Any) -> str | None:
    """Which form a goal is written in, so that a mistake is reported against that form alone."""
    if isinstance(value, str):
        return "word"
    if isinstance(value, dict):
        return "sql" if "sql_within" in value else "event"
    return None


Goal = Annotated[
    Annotated[str, AfterValidator(_email_goal), WithJsonSchema({"enum": list(EMAIL_GOALS)}), Tag("word")]
    | Annotated[EventGoal, Tag("event")]
    | Annotated[SqlGoal, Tag("sql")],
    Discriminator(_goal_form, custom_error_type="goal", custom_error_message=f"goal must be {GOAL_FORMS}"),
]
"""What an A/B step's variants are compared on."""


def goal_label(goal: Goal) -> str:
    """The goal in words, for verdicts: ``clicks``, ``opens``, ``demo_request within 14d``, ``SQL within 14d``."""
    if goal == "click":
        return "clicks"
    if goal == "open":
        return "opens"
    if isinstance(goal, EventGoal):
        return f"{goal.event} within {goal.within}"
    assert isinstance(goal, SqlGoal)
    return f"SQL within {goal.sql_within}"


def goal_window(goal: Goal) -> Duration | None:
    """How long after a send its goal may come, for the goals that have a window (events, SQL); None for clicks and
    opens, which belong to the email itself."""
    if isinstance(goal, EventGoal):
        return goal.within
    if isinstance(goal, SqlGoal):
        return goal.sql_within
    return None


class WinnerSpec(Strict):
    """Send the winning variant to every later lead once the test has a winner at ``confidence`` and every variant
    was sent to at least ``min_sends`` leads. Leads already sent keep their variant."""

    metric: Goal | None = Field(None, description="What the winner is chosen on: the step's goal (the default).")
    confidence: Confidence = Field(default=DEFAULT_CONFIDENCE)
    min_sends: int = Field(DEFAULT_MIN_SENDS, ge=1, le=10_000_000,
                           description="Leads each variant must have been sent to before any call.")
