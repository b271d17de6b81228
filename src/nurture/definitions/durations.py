"""Durations as marketers write them: ``30s``, ``15m``, ``4h``, ``2d``, ``1w`` and combinations such as ``1d12h``.

Days and weeks are *calendar* days in the lead's timezone (a step sent at 09:00 local and followed by ``wait: 1d`` goes out
at 09:00 local the next day, across a DST change); hours, minutes and seconds are elapsed time. So a duration keeps the two
parts apart instead of collapsing into one ``timedelta`` (where ``24h`` and ``1d`` would be the same).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}
_PART = re.compile(r"(\d+)\s*([smhdw])")
_WHOLE = re.compile(r"^\s*(?:\d+\s*[smhdw]\s*)+$")


@dataclass(frozen=True, order=True)
class Duration:
    """A wait: whole calendar ``days`` plus elapsed ``seconds``."""

    days: int = 0
    seconds: int = 0

    def as_timedelta(self) -> timedelta:
        """The duration as elapsed time, counting a day as 24 hours (for caps and rough comparisons)."""
        return timedelta(days=self.days, seconds=self.seconds)

    def __bool__(self) -> bool:
        return bool(self.days or self.seconds)

    def __str__(self) -> str:
        return format_duration(self)


def parse_duration(text: object) -> Duration:
    """Parse ``"2d"``, ``"1w2d"``, ``"1h 30m"`` or ``"0s"``; raise ValueError with a hint otherwise.

    A bare number is rejected on purpose: ``wait: 2`` is ambiguous (2 what?).
    """
    if isinstance(text, Duration):
        return text
    if isinstance(text, bool) or not isinstance(text, str):
        raise ValueError(f"duration must be text such as '2d' or '4h30m', not {text!r}")
    if not _WHOLE.match(text):
        raise ValueError(f"invalid duration {text!r}: use a number and a unit (s, m, h, d, w), combined as in '1d12h'")
    days = seconds = 0
    for number, unit in _PART.findall(text):
        n = int(number)
        if unit == "w":
            days += 7 * n
        elif unit == "d":
            days += n
        else:
            seconds += n * _UNIT_SECONDS[unit]
    return Duration(days=days, seconds=seconds)


def format_duration(duration: Duration) -> str:
    """The inverse of :func:`parse_duration`: ``1w2d3h``, ``0s`` for zero."""
    parts = []
    weeks, days = divmod(duration.days, 7)
    if weeks:
        parts.append(f"{weeks}w")
    if days:
        parts.append(f"{days}d")
    seconds = duration.seconds
    for unit in ("h", "m", "s"):
        n, seconds = divmod(seconds, _UNIT_SECONDS[unit])
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts) or "0s"
