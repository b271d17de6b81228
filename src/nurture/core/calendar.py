"""Calendar arithmetic in the lead's timezone: send windows, waits and weekly slots.

Everything here is pure: instants are passed in as timezone-aware datetimes and returned in UTC. Local wall-clock times are
turned into instants only through :func:`localize`, so every function treats DST gaps and repeated hours the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nurture.durations import Duration

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

# Long enough to reach every weekday twice, so a day whose window falls wholly inside a DST gap can be skipped.
_SEARCH_DAYS = 15


@dataclass(frozen=True)
class SendWindow:
    """Days of the week and local hours during which email may go out.

    ``days`` are 0=Monday .. 6=Sunday; ``start`` is inclusive and ``end`` exclusive, both lead-local. A window may not span
    midnight (``end`` must be after ``start``).
    """

    days: frozenset[int]
    start: time
    end: time

    def __post_init__(self) -> None:
        if not self.days:
            raise ValueError("a send window needs at least one day")
        if not self.days <= frozenset(range(7)):
            raise ValueError(f"send window days must be 0 (Monday) to 6 (Sunday), got {sorted(self.days)}")
        if self.end <= self.start:
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
    tokens = []
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


def parse_hours(text: str) -> tuple[time, time]:
    """Parse send hours such as ``"09:00-17:00"`` into (start, end); raise ValueError if malformed or end <= start."""
    parts = text.split("-") if isinstance(text, str) else []
    if len(parts) != 2:
        raise ValueError(f"invalid hours {text!r}: use START-END such as '09:00-17:00'")
    start, end = parse_time_of_day(parts[0]), parse_time_of_day(parts[1])
    if end <= start:
        raise ValueError(f"invalid hours {text!r}: the end must be after the start (windows may not span midnight)")
    return start, end


def load_zone(name: str) -> ZoneInfo:
    """The IANA timezone called ``name``; raise ValueError("unknown timezone ...") for anything else, including ``""``."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"unknown timezone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as error:
        # ZoneInfo reports bad keys variously: not found, a path it refuses, a directory such as "America".
        raise ValueError(f"unknown timezone {name!r}") from error


def resolve_zone(lead_tz: str | None, campaign_tz: str | None, default_tz: str) -> ZoneInfo:
    """The zone to schedule a lead in: the lead's own if valid, else the campaign's if valid, else ``default_tz``.

    A missing or invalid lead (or campaign) timezone never raises, because it comes from lead data we do not control;
    an invalid ``default_tz`` does, because it is configuration.
    """
    for candidate in (lead_tz, campaign_tz):
        if candidate:
            try:
                return load_zone(candidate)
            except ValueError:
                pass
    return load_zone(default_tz)


def localize(naive_local: datetime, zone: ZoneInfo) -> datetime:
    """Attach ``zone`` to a naive local wall-clock time, deciding deliberately what DST changes do to it.

    - A time that does not exist (in the spring-forward gap, such as 02:30 on 2026-03-08 in America/New_York) is moved
      forward by the length of the gap: 02:30 becomes 03:30 EDT.
    - An ambiguous time (in the repeated hour at fall-back, such as 01:30 on 2026-11-01 in America/New_York) is taken at
      its first occurrence (``fold=0``, 01:30 EDT).

    Returns an aware datetime in ``zone`` (compare it with other zones only after converting to UTC).
    """
    if naive_local.tzinfo is not None:
        raise ValueError(f"localize expects a naive local time, got {naive_local.isoformat()}")
    # With fold=0 a gap time is read with the offset in force before the gap, so the round trip through UTC lands the
    # gap's length later; an ambiguous time is read at its first occurrence and the round trip leaves it unchanged.
    return naive_local.replace(tzinfo=zone, fold=0).astimezone(UTC).astimezone(zone)


def add_wait(start: datetime, wait: Duration, zone: ZoneInfo) -> datetime:
    """``start`` plus ``wait``, in UTC: the calendar days on the local wall clock in ``zone``, then the elapsed seconds.

    So 09:00 local plus ``1d`` is 09:00 local the next day across a DST change, while ``24h`` is exactly 24 hours later.
    A local time landing in a DST gap or repeated hour is resolved by :func:`localize`.
    """
    moved = _as_utc(start, "start")
    if wait.days:
        local = moved.astimezone(zone).replace(tzinfo=None)
        moved = localize(local + timedelta(days=wait.days), zone).astimezone(UTC)
    return moved + timedelta(seconds=wait.seconds)


def in_window(at: datetime, window: SendWindow | None, zone: ZoneInfo) -> bool:
    """Whether ``at`` falls in ``window`` on the local clock in ``zone`` (start inclusive, end exclusive); None is always."""
    if window is None:
        return True
    local = _as_utc(at, "at").astimezone(zone)
    return local.weekday() in window.days and window.start <= local.time() < window.end


def next_window_open(at: datetime, window: SendWindow | None, zone: ZoneInfo) -> datetime:
    """The earliest instant at or after ``at`` when ``window`` is open in ``zone``, in UTC.

    That is ``at`` itself if it is inside the window (or there is no window); otherwise the window's start on the next
    allowed local day, which is today if ``at`` is before today's start. A start inside a DST gap is moved forward by the
    gap's length, as :func:`localize` does; a day whose whole window falls inside the gap has no opening and is skipped.
    The result always satisfies :func:`in_window`.
    """
    at_utc = _as_utc(at, "at")
    if window is None or in_window(at_utc, window, zone):
        return at_utc
    today = at_utc.astimezone(zone).date()
    for day in _following_days(today, window.days):
        opens = localize(datetime.combine(day, window.start), zone).astimezone(UTC)
        if opens > at_utc and in_window(opens, window, zone):
            return opens
    raise AssertionError("unreachable: a non-empty window opens within two weeks")


def next_weekly(after: datetime, days: frozenset[int], at: time, zone: ZoneInfo) -> datetime:
    """The first slot strictly after ``after`` at local time ``at`` on one of ``days`` (0=Monday) in ``zone``, in UTC.

    For cadences such as "every Tuesday 10:00 lead-local". Each local day has one slot, resolved by :func:`localize`: a time
    in a DST gap comes the gap's length later, and a repeated time counts only at its first occurrence (so a stream never
    sends twice on the fall-back day).
    """
    if not days:
        raise ValueError("next_weekly needs at least one day")
    after_utc = _as_utc(after, "after")
    today = after_utc.astimezone(zone).date()
    for day in _following_days(today, days):
        slot = localize(datetime.combine(day, at), zone).astimezone(UTC)
        if slot > after_utc:
            return slot
    raise AssertionError("unreachable: a non-empty set of days recurs within two weeks")


def _following_days(first: date, days: frozenset[int]) -> Iterable[date]:
    """``first`` and the days after it, up to two weeks, that fall on one of ``days``."""
    for offset in range(_SEARCH_DAYS):
        day = first + timedelta(days=offset)
        if day.weekday() in days:
            yield day


def _as_utc(moment: datetime, name: str) -> datetime:
    # A naive datetime would silently be read as the server's local time by astimezone(); refuse it instead.
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {moment.isoformat()}")
    return moment.astimezone(UTC)
