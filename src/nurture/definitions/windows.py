"""Send windows, days of the week, times of day and timezones as campaign files write them: values and their parsers.

Pure and dependency-free, so that the definitions (which validate these values) and the core (which schedules with them)
both build on it without importing each other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_NUMBERS = {name: n for names in (WEEKDAYS, _FULL_DAY_NAMES) for n, name in enumerate(names)}
_DAY_ALIASES = {
    "weekdays": frozenset(range(5)),
    "weekends": frozenset({5, 6}),
    "daily": frozenset(range(7)),
    "all": frozenset(range(7)),
}
_TIME_OF_DAY = re.compile(r"([0-9]{1,2}):([0-9]{2})")
END_OF_DAY = "24:00"
"""How a window's end is written when it runs until midnight (``"09:00-24:00"``); only an end may be 24:00."""


@dataclass(frozen=True)
class SendWindow:
    """Days of the week and local hours during which email may go out.

    ``days`` are 0=Monday .. 6=Sunday; ``start`` is inclusive and ``end`` exclusive, both lead-local; ``end`` None is
    midnight at the end of the day (written ``24:00``). A window may not span midnight (``end`` must be after ``start``).
    """

    days: frozenset[int]
    start: time
    end: time | None

    def __post_init__(self) -> None:
        if not self.days:
            raise ValueError("a send window needs at least one day")
        if not self.days <= frozenset(range(7)):
            raise ValueError(f"send window days must be 0 (Monday) to 6 (Sunday), got {sorted(self.days)}")
        if self.end is not None and self.end <= self.start:
            raise ValueError(
                f"send window end {self.end:%H:%M} must be after start {self.start:%H:%M} (windows may not span midnight)"
            )


def parse_days(values: list[str] | str) -> frozenset[int]:
    """Parse days of the week as written in a campaign file.

    Accepts day names (``mon`` or ``monday``), ranges (``mon-fri``; ``fri-mon`` wraps over the weekend), the aliases
    ``weekdays``, ``weekends``, ``daily`` and ``all``, either as a list or as one comma-separated string; case-insensitive.
    Raise ValueError naming the offending token otherwise.
    """
    tokens = _day_tokens(values)
    if not tokens:
        raise ValueError("no days given: use day names such as 'mon-fri', 'sat' or 'daily'")
    days: set[int] = set()
    for token in tokens:
        days |= _parse_day_token(token)
    return frozenset(days)


def _day_tokens(values: object) -> list[str]:
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, Iterable):
        raise ValueError(f"days must be text such as 'mon-fri' or a list of day names, not {values!r}")
    tokens: list[str] = []
    for value in values:
        if not isinstance(value, str):
            raise ValueError(f"invalid day {value!r}: use day names such as 'mon', 'mon-fri' or 'weekdays'")
        tokens.extend(part.strip().lower() for part in value.split(",") if part.strip())
    return tokens


def _parse_day_token(token: str) -> frozenset[int]:
    if token in _DAY_ALIASES:
        return _DAY_ALIASES[token]
    if token in _DAY_NUMBERS:
        return frozenset({_DAY_NUMBERS[token]})
    first, dash, last = (part.strip() for part in token.partition("-"))
    if dash and first in _DAY_NUMBERS and last in _DAY_NUMBERS:
        start, stop = _DAY_NUMBERS[first], _DAY_NUMBERS[last]
        return frozenset((start + n) % 7 for n in range((stop - start) % 7 + 1))
    raise ValueError(
        f"invalid day {token!r}: use {', '.join(WEEKDAYS)}, a range such as 'mon-fri', or weekdays/weekends/daily"
    )


def parse_time_of_day(text: str) -> time:
    """Parse a 24-hour local time such as ``"09:00"`` or ``"9:30"``; raise ValueError otherwise."""
    match = _TIME_OF_DAY.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"invalid time {text!r}: use 24-hour HH:MM such as '09:00' or '17:30'")
    hour, minute = int(match[1]), int(match[2])
    if hour > 23 or minute > 59:
        raise ValueError(f"invalid time {text!r}: hours run 00-23 and minutes 00-59")
    return time(hour, minute)


def parse_hours(text: str) -> tuple[time, time | None]:
    """Parse send hours such as ``"09:00-17:00"`` into (start, end); raise ValueError if malformed or end <= start.

    The end may be ``24:00``, midnight at the end of the day, returned as None (``"00:00-24:00"`` is the whole day).
    """
    parts = text.split("-") if isinstance(text, str) else []
    if len(parts) != 2:
        raise ValueError(f"invalid hours {text!r}: use START-END such as '09:00-17:00'")
    start = parse_time_of_day(parts[0])
    if parts[1].strip() == END_OF_DAY:
        return start, None
    end = parse_time_of_day(parts[1])
    if end <= start:
        raise ValueError(f"invalid hours {text!r}: the end must be after the start (windows may not span midnight)")
    return start, end


# The same forms as regular expressions, for the JSON Schema (editors run them as JavaScript: no inline flags).
_TIME_RE = r"(?:[01]?[0-9]|2[0-3]):[0-5][0-9]"
TIME_PATTERN = rf"^\s*{_TIME_RE}\s*$"
"""What :func:`parse_time_of_day` accepts."""
HOURS_PATTERN = rf"^\s*{_TIME_RE}\s*-\s*(?:{_TIME_RE}|{END_OF_DAY})\s*$"
"""What :func:`parse_hours` accepts, but for the end coming after the start, which a pattern does not say."""


def _any_case(word: str) -> str:
    return "".join(f"[{c}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


_NAME_RE = "(?:" + "|".join(_any_case(name) for name in sorted(_DAY_NUMBERS, key=len, reverse=True)) + ")"
_DAY_TOKEN_RE = (
    rf"(?:{_NAME_RE}\s*-\s*{_NAME_RE}|{_NAME_RE}"
    "|" + "|".join(_any_case(alias) for alias in _DAY_ALIASES) + ")"
)
DAYS_PATTERN = rf"^[\s,]*{_DAY_TOKEN_RE}(?:\s*,[\s,]*{_DAY_TOKEN_RE})*[\s,]*$"
"""Text :func:`parse_days` accepts: one or more day names, ranges or aliases, separated by commas."""
DAYS_ITEM_PATTERN = rf"^[\s,]*(?:{_DAY_TOKEN_RE}(?:\s*,[\s,]*{_DAY_TOKEN_RE})*[\s,]*)?$"
"""One item of a list of days: like :data:`DAYS_PATTERN`, or blank (the list as a whole needs a day)."""


def load_zone(name: str) -> ZoneInfo:
    """The IANA timezone called ``name``; raise ValueError("unknown timezone ...") for anything else, including ``""``."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"unknown timezone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as error:
        # ZoneInfo reports bad keys variously: not found, a path it refuses, a directory such as "America".
        raise ValueError(f"unknown timezone {name!r}") from error
