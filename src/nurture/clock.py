"""The one clock: what time it is, read at the edges (the CLI, the worker, the HTTP intake) and passed on as ``now``.

Everything below the edges takes the time as an argument, so a test (or ``nurture simulate``) decides what time it is.
:class:`SystemClock` is the only place nurture reads the wall clock for dates; durations are measured with
``time.monotonic``/``time.perf_counter``, which are not dates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """A callable that says what time it is now: an aware datetime in UTC."""

    def __call__(self) -> datetime: ...


class SystemClock:
    """The wall clock, in UTC."""

    __slots__ = ()

    def __call__(self) -> datetime:
        return datetime.now(UTC)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()
"""The process's wall clock (stateless: one instance serves every edge, and the stored timestamps' defaults)."""


@dataclass
class FixedClock:
    """A clock that says what it is told: set ``now``, or move it with :meth:`advance` (tests)."""

    now: datetime

    def __post_init__(self) -> None:
        if self.now.tzinfo is None or self.now.utcoffset() is None:
            raise ValueError(f"naive datetime {self.now!r}: a clock tells aware UTC time")

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        """Move the clock forward by ``timedelta(**delta)``; return the new time."""
        self.now += timedelta(**delta)
        return self.now
