"""The one clock: what it tells, and that nothing else in nurture reads the wall clock for dates."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import nurture
from nurture.clock import SYSTEM_CLOCK, Clock, FixedClock, SystemClock

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)


def test_the_system_clock_tells_aware_utc_time_now() -> None:
    before = datetime.now(timezone.utc)
    now = SystemClock()()
    assert now.tzinfo is not None and now.utcoffset() == timedelta(0)
    assert before <= now <= datetime.now(timezone.utc)
    assert SYSTEM_CLOCK() >= now


def test_a_fixed_clock_says_what_it_is_told() -> None:
    clock = FixedClock(T0)
    assert clock() == clock() == T0
    assert clock.advance(days=1, seconds=-1) == T0 + timedelta(days=1, seconds=-1) == clock()
    clock.now = T0
    assert clock() == T0


def test_a_fixed_clock_refuses_naive_time() -> None:
    with pytest.raises(ValueError, match="naive"):
        FixedClock(datetime(2026, 3, 2, 12, 0))


def test_any_callable_that_tells_the_time_is_a_clock() -> None:
    clocks: list[Clock] = [SYSTEM_CLOCK, FixedClock(T0), lambda: T0]
    assert all(isinstance(clock(), datetime) for clock in clocks)


WALL_CLOCK = re.compile(r"\b(?:datetime|date)\s*\.\s*(?:now|utcnow|today)\s*\(|\btime\s*\.\s*time\s*\(")
"""Reading the wall clock for a date; ``time.monotonic``/``time.perf_counter`` measure durations and are allowed."""


def test_only_the_clock_module_reads_the_wall_clock() -> None:
    root = Path(nurture.__file__).parent
    readers = []
    for path in sorted(root.rglob("*.py")):
        if path == root / "clock.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if WALL_CLOCK.search(line):
                readers.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert readers == [], "read the time from a Clock passed in (nurture.clock), not the wall clock:\n" + "\n".join(readers)


def test_the_guard_sees_wall_clock_reads() -> None:
    for line in ("datetime.now(timezone.utc)", "datetime.utcnow()", "x = time.time()", "date.today()",
                 "datetime.datetime.now(UTC)"):
        assert WALL_CLOCK.search(line), line
    for line in ("time.monotonic()", "time.perf_counter()", "now=ctx.clock()", "SYSTEM_CLOCK()", "utcnow = x"):
        assert not WALL_CLOCK.search(line), line
