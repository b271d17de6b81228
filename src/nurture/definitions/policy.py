"""The nurture policy (``campaigns/policy.yaml``): rules that hold across every campaign."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PlainSerializer, WithJsonSchema

from nurture.definitions.durations import Duration, parse_duration
from nurture.definitions.fields import DurationField, SendWindowSpec, Strict, TimezoneName


class FrequencyCap(Strict):
    """At most ``max`` nurture emails per lead in any ``per`` period, across all campaigns."""

    max: int = Field(1, ge=1)
    per: DurationField = Field(default=Duration(days=1))


class CatchUp(Strict):
    """What the worker does with steps that fell due while it was down."""

    max_late: DurationField | None = Field(
        None, description="Skip (and record) an email step more than this late; unset: send every late step."
    )


MAX_SOFT_BOUNCE_DAYS = 365
"""The longest ``soft_bounces.within``: a year, so the window around any bounce stays a date."""


def _up_to(limit: int) -> str:
    """A regular expression for the whole numbers 1 to ``limit`` (no leading zeros)."""
    digits = str(limit)
    alternatives = [rf"[1-9]\d{{0,{len(digits) - 2}}}"] if len(digits) > 1 else []
    for i, digit in enumerate(digits):
        low = 1 if i == 0 else 0
        if int(digit) > low:
            alternatives.append(f"{digits[:i]}[{low}-{int(digit) - 1}]" + r"\d" * (len(digits) - i - 1))
    alternatives.append(digits)
    return "(?:" + "|".join(alternatives) + ")"


_UNIT_MAXIMA = {"w": MAX_SOFT_BOUNCE_DAYS // 7, "d": MAX_SOFT_BOUNCE_DAYS, "h": MAX_SOFT_BOUNCE_DAYS * 24,
                "m": MAX_SOFT_BOUNCE_DAYS * 24 * 60, "s": MAX_SOFT_BOUNCE_DAYS * 24 * 3600}
SOFT_BOUNCE_WINDOW_PATTERN = (r"^\s*(?:" + "|".join(f"{_up_to(n)}\\s*{unit}" for unit, n in _UNIT_MAXIMA.items())
                              + r")\s*$")
"""One number and a unit, from 1s up to 365d (52w): the form ``soft_bounces.within`` takes, in check and schema."""
_WINDOW = re.compile(SOFT_BOUNCE_WINDOW_PATTERN, re.ASCII)  # as JSON Schema reads it: \d is 0-9


def _soft_bounce_window(value: Any) -> Duration:
    duration = parse_duration(value)
    if not duration:
        raise ValueError("must be longer than 0s, such as 7d")
    if duration.as_timedelta() > timedelta(days=MAX_SOFT_BOUNCE_DAYS):
        raise ValueError(f"must be at most {MAX_SOFT_BOUNCE_DAYS}d, such as 7d")
    if isinstance(value, str) and not _WINDOW.match(value):
        raise ValueError(f"must be one number and a unit (s, m, h, d, w) such as 7d or 48h, not {value!r}")
    return duration


SoftBounceWindow = Annotated[
    Duration,
    BeforeValidator(_soft_bounce_window),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({
        "type": "string",
        "pattern": SOFT_BOUNCE_WINDOW_PATTERN,
        "description": f"One number and a unit (s, m, h, d, w), from 1s up to {MAX_SOFT_BOUNCE_DAYS}d, such as '7d'.",
        "examples": ["7d", "48h", "2w"],
    }),
]


class SoftBounces(Strict):
    """Temporary delivery failures (a full mailbox, a server refusing for now): ``limit`` of them within ``within``
    suppress the lead for good, as one hard bounce or spam complaint does; fewer are recorded and change nothing."""

    limit: int = Field(3, ge=1, le=1000, strict=True,
                       description="Soft bounces that suppress the lead; 1: every one does.")
    within: SoftBounceWindow = Field(
        default=Duration(days=7), description="The window they must fall within (days count as 24 hours here)."
    )


class Policy(Strict):
    """Defaults and limits for every campaign."""

    timezone: TimezoneName | None = Field(None, description="Default lead timezone; NURTURE_DEFAULT_TIMEZONE if unset.")
    send_window: SendWindowSpec | Literal["always"] | None = Field(
        None, description="Default send window; 'always' or unset means any time."
    )
    frequency_cap: FrequencyCap | None = Field(default_factory=FrequencyCap)
    catch_up: CatchUp = Field(default_factory=CatchUp)
    soft_bounces: SoftBounces = Field(default_factory=SoftBounces)


POLICY_FILE = "policy.yaml"
RESERVED_FILES = {POLICY_FILE, "scoring.yaml", "routing.yaml", "sales.yaml", "spend.yaml"}
