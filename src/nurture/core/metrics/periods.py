"""The calendar of a report: its window, UTC days, ISO weeks and months."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

DAY = timedelta(days=1)


@dataclass(frozen=True)
class Window:
    """The period ``[since, until)`` a report covers, and the nurture campaign it is narrowed to (None: all)."""

    since: datetime
    until: datetime
    campaign: str | None = None

    @property
    def first_day(self) -> date:
        """The UTC day the window starts on."""
        return self.since.astimezone(timezone.utc).date()

    @property
    def last_day(self) -> date:
        """The UTC day the window ends on (its last instant)."""
        return (self.until.astimezone(timezone.utc) - timedelta(microseconds=1)).date()

    def to_json(self) -> dict[str, str | None]:
        """For the report's JSON."""
        return {"since": self.since.isoformat(), "until": self.until.isoformat(), "campaign": self.campaign}


def day_start(day: date) -> datetime:
    """Midnight UTC at the start of ``day``."""
    return datetime.combine(day, time(), tzinfo=timezone.utc)


def week_key(day: date) -> str:
    """``2026-W10``: the ISO week of a day."""
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def week_start(day: date) -> date:
    """The Monday of the day's ISO week."""
    return day - timedelta(days=day.weekday())


def month_key(day: date) -> str:
    """``2026-03``."""
    return f"{day.year:04d}-{day.month:02d}"


def month_start(day: date) -> date:
    """The first day of the day's month."""
    return day.replace(day=1)


def next_month(first: date) -> date:
    """The first day of the month after the month starting on ``first``."""
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def previous_month(first: date) -> date:
    """The first day of the month before."""
    return (first - DAY).replace(day=1)


def months(first_day: date, last_day: date) -> list[date]:
    """The first days of every month from ``first_day``'s to ``last_day``'s."""
    found, current = [], month_start(first_day)
    while current <= last_day:
        found.append(current)
        current = next_month(current)
    return found


def weeks(first_day: date, last_day: date) -> list[date]:
    """The Mondays of every ISO week from ``first_day``'s to ``last_day``'s."""
    found, current = [], week_start(first_day)
    while current <= last_day:
        found.append(current)
        current += timedelta(weeks=1)
    return found


def overlap(start: datetime, end: datetime, since: datetime, until: datetime) -> timedelta:
    """How much of ``[start, end)`` lies in ``[since, until)``."""
    return max(min(end, until) - max(start, since), timedelta(0))
