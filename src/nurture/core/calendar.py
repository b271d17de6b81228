"""Calendar arithmetic in the lead's timezone: send windows, waits and weekly slots.

Everything here is pure: instants are passed in as timezone-aware datetimes and returned in UTC. Local wall-clock times are
turned into instants only through :func:`localize`, so every function treats DST gaps and repeated hours the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from nurture.definitions.durations import Duration
from nurture.definitions.windows import SendWindow, load_zone

# Long enough to reach every weekday twice, so a day whose window falls wholly inside a DST gap can be skipped.
_SEARCH_DAYS = 15


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
    """Whether ``at`` falls in ``window`` on the local clock in ``zone`` (start inclusive, end exclusive, an end of None
    is midnight); a window of None is always open."""
    if window is None:
        return True
    local = _as_utc(at, "at").astimezone(zone)
    if local.weekday() not in window.days:
        return False
    clock = local.time()
    return window.start <= clock and (window.end is None or clock < window.end)


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
