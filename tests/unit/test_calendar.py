"""Tables for the calendar core. Expected instants are worked out by hand from the 2026 DST rules:

- America/New_York: EST (UTC-5) until 2026-03-08 02:00 -> EDT (UTC-4); back to EST at 2026-11-01 02:00 EDT.
- Europe/Berlin: CET (UTC+1) until 2026-03-29 02:00 -> CEST (UTC+2); back to CET at 2026-10-25 03:00 CEST.
- Asia/Tokyo: JST (UTC+9), no DST.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from nurture.core.calendar import (
    add_wait,
    in_window,
    localize,
    next_weekly,
    next_window_open,
    resolve_zone,
)
from nurture.definitions.durations import Duration
from nurture.definitions.windows import WEEKDAYS, SendWindow, load_zone, parse_days, parse_hours, parse_time_of_day

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
TOKYO = ZoneInfo("Asia/Tokyo")
ZONE_UTC = ZoneInfo("UTC")

MON_FRI = frozenset({0, 1, 2, 3, 4})
ALL_DAYS = frozenset(range(7))
OFFICE_HOURS = SendWindow(MON_FRI, time(9), time(17))
DAILY_OFFICE_HOURS = SendWindow(ALL_DAYS, time(9), time(17))


def test_weekdays_are_monday_first() -> None:
    assert WEEKDAYS == ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


# --- parsing -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["mon", "tue"], {0, 1}),
        ("mon-fri", {0, 1, 2, 3, 4}),
        (["mon-fri", "sun"], {0, 1, 2, 3, 4, 6}),
        ("weekdays", {0, 1, 2, 3, 4}),
        ("weekends", {5, 6}),
        ("daily", {0, 1, 2, 3, 4, 5, 6}),
        ("all", {0, 1, 2, 3, 4, 5, 6}),
        ("MON-Fri", {0, 1, 2, 3, 4}),
        (["Sat", "SUN"], {5, 6}),
        ("fri-mon", {4, 5, 6, 0}),
        ("sat - sun", {5, 6}),
        ("mon, wed, fri", {0, 2, 4}),
        (["monday", "Thursday"], {0, 3}),
        (" tue ", {1}),
        ("wed-wed", {2}),
        (["mon", "mon"], {0}),
    ],
)
def test_parse_days(values: list[str] | str, expected: set[int]) -> None:
    assert parse_days(values) == frozenset(expected)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ("funday", "invalid day 'funday'"),
        (["mon", "xyz"], "invalid day 'xyz'"),
        ("mon-", "invalid day 'mon-'"),
        ("-fri", "invalid day '-fri'"),
        ("mon-fri-sat", "invalid day 'mon-fri-sat'"),
        ("mon-funday", "invalid day 'mon-funday'"),
        ("weekday", "invalid day 'weekday'"),
        ("", "no days given"),
        ([], "no days given"),
        ([" , "], "no days given"),
        ([1], "invalid day 1"),
        (None, "days must be text"),
    ],
)
def test_parse_days_rejects(values: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_days(values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("09:00", time(9, 0)),
        ("9:30", time(9, 30)),
        ("17:00", time(17, 0)),
        ("00:00", time(0, 0)),
        ("23:59", time(23, 59)),
        (" 08:15 ", time(8, 15)),
    ],
)
def test_parse_time_of_day(text: str, expected: time) -> None:
    assert parse_time_of_day(text) == expected


@pytest.mark.parametrize(
    "text",
    ["25:00", "24:00", "09:60", "9", "9:5", "09:00:00", "9am", "", "-1:00", "09.00", "\uff10\uff19:00", None],
)
def test_parse_time_of_day_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid time"):
        parse_time_of_day(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("09:00-17:00", (time(9), time(17))),
        ("9:00 - 17:30", (time(9), time(17, 30))),
        ("00:00-23:59", (time(0), time(23, 59))),
        ("08:00-08:01", (time(8), time(8, 1))),
        ("09:00-24:00", (time(9), None)),  # 24:00 as the end: until midnight
        ("00:00 - 24:00", (time(0), None)),
    ],
)
def test_parse_hours(text: str, expected: tuple[time, time]) -> None:
    assert parse_hours(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("17:00-09:00", "end must be after the start"),
        ("09:00-09:00", "end must be after the start"),
        ("22:00-06:00", "may not span midnight"),
        ("09:00", "use START-END"),
        ("09:00-17:00-18:00", "use START-END"),
        ("09:00-", "invalid time ''"),
        ("9-5", "invalid time '9'"),
        ("09:00-25:00", "invalid time '25:00'"),
        ("24:00-24:00", "invalid time '24:00'"),  # 24:00 ends a window, it does not start one
        ("09:00-24:01", "invalid time '24:01'"),
        (None, "use START-END"),
    ],
)
def test_parse_hours_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_hours(text)


@pytest.mark.parametrize(
    ("days", "start", "end", "message"),
    [
        (frozenset(), time(9), time(17), "at least one day"),
        (frozenset({7}), time(9), time(17), "0 \\(Monday\\) to 6"),
        (MON_FRI, time(17), time(9), "must be after start"),
        (MON_FRI, time(9), time(9), "must be after start"),
    ],
)
def test_send_window_rejects(days: frozenset[int], start: time, end: time, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SendWindow(days, start, end)


# --- zones ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["America/New_York", "Europe/Berlin", "Asia/Tokyo", "UTC"])
def test_load_zone(name: str) -> None:
    assert load_zone(name).key == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Mars/Base", "unknown timezone 'Mars/Base'"),
        ("", "unknown timezone ''"),
        ("   ", "unknown timezone '   '"),
        (None, "unknown timezone None"),
        ("America", "unknown timezone 'America'"),
        ("../etc/passwd", "unknown timezone '../etc/passwd'"),
        ("/etc/localtime", "unknown timezone '/etc/localtime'"),
        (" UTC", "unknown timezone ' UTC'"),
    ],
)
def test_load_zone_rejects(name: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        load_zone(name)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("lead_tz", "campaign_tz", "default_tz", "expected"),
    [
        ("Asia/Tokyo", "Europe/Berlin", "UTC", "Asia/Tokyo"),
        (None, "Europe/Berlin", "UTC", "Europe/Berlin"),
        ("", "Europe/Berlin", "UTC", "Europe/Berlin"),
        ("Mars/Base", "Europe/Berlin", "UTC", "Europe/Berlin"),
        ("America", "Europe/Berlin", "UTC", "Europe/Berlin"),
        (None, None, "UTC", "UTC"),
        ("Mars/Base", None, "America/New_York", "America/New_York"),
        ("Mars/Base", "Not/AZone", "UTC", "UTC"),
        (None, "", "Asia/Tokyo", "Asia/Tokyo"),
    ],
)
def test_resolve_zone(lead_tz: str | None, campaign_tz: str | None, default_tz: str, expected: str) -> None:
    assert resolve_zone(lead_tz, campaign_tz, default_tz).key == expected


def test_resolve_zone_rejects_an_invalid_default() -> None:
    with pytest.raises(ValueError, match="unknown timezone 'Mars/Base'"):
        resolve_zone(None, None, "Mars/Base")


# --- localize ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("naive_local", "zone", "expected_utc", "expected_wall", "expected_offset_hours"),
    [
        # ordinary times
        (datetime(2026, 6, 3, 9, 0), NEW_YORK, datetime(2026, 6, 3, 13, 0, tzinfo=UTC), datetime(2026, 6, 3, 9, 0), -4),
        (datetime(2026, 1, 15, 9, 0), BERLIN, datetime(2026, 1, 15, 8, 0, tzinfo=UTC), datetime(2026, 1, 15, 9, 0), 1),
        # spring-forward gap: moved forward by the hour
        (datetime(2026, 3, 8, 2, 30), NEW_YORK, datetime(2026, 3, 8, 7, 30, tzinfo=UTC), datetime(2026, 3, 8, 3, 30), -4),
        (datetime(2026, 3, 8, 2, 0), NEW_YORK, datetime(2026, 3, 8, 7, 0, tzinfo=UTC), datetime(2026, 3, 8, 3, 0), -4),
        (datetime(2026, 3, 8, 3, 0), NEW_YORK, datetime(2026, 3, 8, 7, 0, tzinfo=UTC), datetime(2026, 3, 8, 3, 0), -4),
        (datetime(2026, 3, 8, 1, 59), NEW_YORK, datetime(2026, 3, 8, 6, 59, tzinfo=UTC), datetime(2026, 3, 8, 1, 59), -5),
        (datetime(2026, 3, 29, 2, 30), BERLIN, datetime(2026, 3, 29, 1, 30, tzinfo=UTC), datetime(2026, 3, 29, 3, 30), 2),
        # fall-back repeated hour: the first occurrence (summer time)
        (datetime(2026, 11, 1, 1, 30), NEW_YORK, datetime(2026, 11, 1, 5, 30, tzinfo=UTC), datetime(2026, 11, 1, 1, 30), -4),
        (datetime(2026, 11, 1, 1, 0), NEW_YORK, datetime(2026, 11, 1, 5, 0, tzinfo=UTC), datetime(2026, 11, 1, 1, 0), -4),
        (datetime(2026, 11, 1, 2, 0), NEW_YORK, datetime(2026, 11, 1, 7, 0, tzinfo=UTC), datetime(2026, 11, 1, 2, 0), -5),
        (datetime(2026, 10, 25, 2, 30), BERLIN, datetime(2026, 10, 25, 0, 30, tzinfo=UTC), datetime(2026, 10, 25, 2, 30), 2),
        (datetime(2026, 10, 25, 3, 0), BERLIN, datetime(2026, 10, 25, 2, 0, tzinfo=UTC), datetime(2026, 10, 25, 3, 0), 1),
    ],
)
def test_localize(
    naive_local: datetime, zone: ZoneInfo, expected_utc: datetime, expected_wall: datetime, expected_offset_hours: int
) -> None:
    result = localize(naive_local, zone)
    assert result.tzinfo is zone
    assert result.astimezone(UTC) == expected_utc
    assert result.replace(tzinfo=None) == expected_wall
    assert result.utcoffset() == timedelta(hours=expected_offset_hours)


def test_localize_rejects_an_aware_datetime() -> None:
    with pytest.raises(ValueError, match="naive local time"):
        localize(datetime(2026, 6, 3, 9, 0, tzinfo=UTC), NEW_YORK)


# --- add_wait ------------------------------------------------------------------------------------------------------------

HOURS_4 = Duration(seconds=4 * 3600)
HOURS_24 = Duration(seconds=24 * 3600)
DAY_AND_12_HOURS = Duration(days=1, seconds=12 * 3600)


@pytest.mark.parametrize(
    ("start", "wait", "zone", "expected"),
    [
        # US spring forward: 09:00 EST Saturday + 1d = 09:00 EDT Sunday; + 24h = 10:00 EDT
        (datetime(2026, 3, 7, 14, 0, tzinfo=UTC), Duration(days=1), NEW_YORK, datetime(2026, 3, 8, 13, 0, tzinfo=UTC)),
        (datetime(2026, 3, 7, 14, 0, tzinfo=UTC), HOURS_24, NEW_YORK, datetime(2026, 3, 8, 14, 0, tzinfo=UTC)),
        # US fall back: 09:00 EDT Saturday + 1d = 09:00 EST Sunday; + 24h = 08:00 EST
        (datetime(2026, 10, 31, 13, 0, tzinfo=UTC), Duration(days=1), NEW_YORK, datetime(2026, 11, 1, 14, 0, tzinfo=UTC)),
        (datetime(2026, 10, 31, 13, 0, tzinfo=UTC), HOURS_24, NEW_YORK, datetime(2026, 11, 1, 13, 0, tzinfo=UTC)),
        # EU spring forward: 09:00 CET + 1d = 09:00 CEST; + 24h = 10:00 CEST
        (datetime(2026, 3, 28, 8, 0, tzinfo=UTC), Duration(days=1), BERLIN, datetime(2026, 3, 29, 7, 0, tzinfo=UTC)),
        (datetime(2026, 3, 28, 8, 0, tzinfo=UTC), HOURS_24, BERLIN, datetime(2026, 3, 29, 8, 0, tzinfo=UTC)),
        # EU fall back: 09:00 CEST + 1d = 09:00 CET; + 24h = 08:00 CET
        (datetime(2026, 10, 24, 7, 0, tzinfo=UTC), Duration(days=1), BERLIN, datetime(2026, 10, 25, 8, 0, tzinfo=UTC)),
        (datetime(2026, 10, 24, 7, 0, tzinfo=UTC), HOURS_24, BERLIN, datetime(2026, 10, 25, 7, 0, tzinfo=UTC)),
        # a start given in local time rather than UTC
        (datetime(2026, 3, 28, 9, 0, tzinfo=BERLIN), Duration(days=1), BERLIN, datetime(2026, 3, 29, 7, 0, tzinfo=UTC)),
        # 1w from Monday 09:00 EST = Monday 09:00 EDT
        (datetime(2026, 3, 2, 14, 0, tzinfo=UTC), Duration(days=7), NEW_YORK, datetime(2026, 3, 9, 13, 0, tzinfo=UTC)),
        # 1d12h: the day on the wall clock (09:00 EDT Sunday), then 12 elapsed hours
        (datetime(2026, 3, 7, 14, 0, tzinfo=UTC), DAY_AND_12_HOURS, NEW_YORK, datetime(2026, 3, 9, 1, 0, tzinfo=UTC)),
        # 4h over the gap is 4 elapsed hours: 00:30 EST -> 05:30 EDT
        (datetime(2026, 3, 8, 5, 30, tzinfo=UTC), HOURS_4, NEW_YORK, datetime(2026, 3, 8, 9, 30, tzinfo=UTC)),
        # + 1d landing in the gap: 02:30 EST -> 03:30 EDT
        (datetime(2026, 3, 7, 7, 30, tzinfo=UTC), Duration(days=1), NEW_YORK, datetime(2026, 3, 8, 7, 30, tzinfo=UTC)),
        # + 1d landing in the repeated hour: 01:30 EDT -> 01:30 EDT (first occurrence)
        (datetime(2026, 10, 31, 5, 30, tzinfo=UTC), Duration(days=1), NEW_YORK, datetime(2026, 11, 1, 5, 30, tzinfo=UTC)),
        # no days: the second 01:30 (EST) stays where it is instead of being re-read as the first
        (datetime(2026, 11, 1, 6, 30, tzinfo=UTC), Duration(), NEW_YORK, datetime(2026, 11, 1, 6, 30, tzinfo=UTC)),
        (datetime(2026, 11, 1, 6, 30, tzinfo=UTC), Duration(seconds=60), NEW_YORK, datetime(2026, 11, 1, 6, 31, tzinfo=UTC)),
        # the local date decides: 00:00 UTC is 09:00 JST
        (datetime(2026, 3, 7, 0, 0, tzinfo=UTC), Duration(days=1), TOKYO, datetime(2026, 3, 8, 0, 0, tzinfo=UTC)),
    ],
)
def test_add_wait(start: datetime, wait: Duration, zone: ZoneInfo, expected: datetime) -> None:
    result = add_wait(start, wait, zone)
    assert result == expected
    assert result.tzinfo is UTC


# --- send windows --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "window", "zone", "expected"),
    [
        # Wednesday 2026-06-03, EDT: the window is 13:00-21:00 UTC
        (datetime(2026, 6, 3, 12, 59, 59, tzinfo=UTC), OFFICE_HOURS, NEW_YORK, False),
        (datetime(2026, 6, 3, 13, 0, tzinfo=UTC), OFFICE_HOURS, NEW_YORK, True),
        (datetime(2026, 6, 3, 20, 59, 59, tzinfo=UTC), OFFICE_HOURS, NEW_YORK, True),
        (datetime(2026, 6, 3, 21, 0, tzinfo=UTC), OFFICE_HOURS, NEW_YORK, False),
        # Saturday 12:00 EDT
        (datetime(2026, 6, 6, 16, 0, tzinfo=UTC), OFFICE_HOURS, NEW_YORK, False),
        # Friday 20:00 EDT is Saturday in UTC: the local day counts
        (datetime(2026, 6, 6, 0, 0, tzinfo=UTC), SendWindow(MON_FRI, time(9), time(21)), NEW_YORK, True),
        # both 01:30s of the fall-back night are 01:30 on the wall clock
        (datetime(2026, 11, 1, 5, 30, tzinfo=UTC), SendWindow(ALL_DAYS, time(1), time(2)), NEW_YORK, True),
        (datetime(2026, 11, 1, 6, 30, tzinfo=UTC), SendWindow(ALL_DAYS, time(1), time(2)), NEW_YORK, True),
        (datetime(2026, 6, 6, 16, 0, tzinfo=UTC), None, NEW_YORK, True),
    ],
)
def test_in_window(at: datetime, window: SendWindow | None, zone: ZoneInfo, expected: bool) -> None:
    assert in_window(at, window, zone) is expected


@pytest.mark.parametrize(
    ("at", "window", "zone", "expected"),
    [
        # inside: Wednesday 12:00 EDT
        (datetime(2026, 6, 3, 16, 0, tzinfo=UTC), OFFICE_HOURS, NEW_YORK, datetime(2026, 6, 3, 16, 0, tzinfo=UTC)),
        # given in local time, inside: returned as the same instant in UTC
        (datetime(2026, 6, 3, 12, 0, tzinfo=NEW_YORK), OFFICE_HOURS, NEW_YORK, datetime(2026, 6, 3, 16, 0, tzinfo=UTC)),
        # exactly at opening
        (datetime(2026, 6, 3, 13, 0, tzinfo=UTC), OFFICE_HOURS, NEW_YORK, datetime(2026, 6, 3, 13, 0, tzinfo=UTC)),
        # before opening the same day: 07:15 EDT -> 09:00 EDT
        (datetime(2026, 6, 3, 11, 15, tzinfo=UTC), OFFICE_HOURS, NEW_YORK, datetime(2026, 6, 3, 13, 0, tzinfo=UTC)),
        # after closing: Wednesday 18:00 EDT -> Thursday 09:00 EDT
        (datetime(2026, 6, 3, 22, 0, tzinfo=UTC), OFFICE_HOURS, NEW_YORK, datetime(2026, 6, 4, 13, 0, tzinfo=UTC)),
        # exactly at closing (end is exclusive) -> Thursday
        (datetime(2026, 6, 3, 21, 0, tzinfo=UTC), OFFICE_HOURS, NEW_YORK, datetime(2026, 6, 4, 13, 0, tzinfo=UTC)),
        # Friday evening 19:00 EDT -> Monday 09:00 EDT
        (datetime(2026, 6, 5, 23, 0, tzinfo=UTC), OFFICE_HOURS, NEW_YORK, datetime(2026, 6, 8, 13, 0, tzinfo=UTC)),
        # Friday 22:30 EDT is already Saturday in UTC -> Monday
        (datetime(2026, 6, 6, 2, 30, tzinfo=UTC), OFFICE_HOURS, NEW_YORK, datetime(2026, 6, 8, 13, 0, tzinfo=UTC)),
        # Saturday 10:00 EDT -> Monday
        (datetime(2026, 6, 6, 14, 0, tzinfo=UTC), OFFICE_HOURS, NEW_YORK, datetime(2026, 6, 8, 13, 0, tzinfo=UTC)),
        # one allowed day, after its close -> a week later
        (
            datetime(2026, 6, 3, 22, 0, tzinfo=UTC),
            SendWindow(frozenset({2}), time(9), time(17)),
            NEW_YORK,
            datetime(2026, 6, 10, 13, 0, tzinfo=UTC),
        ),
        # opens on the spring-forward day: Saturday 18:00 EST -> Sunday 09:00 EDT
        (datetime(2026, 3, 7, 23, 0, tzinfo=UTC), DAILY_OFFICE_HOURS, NEW_YORK, datetime(2026, 3, 8, 13, 0, tzinfo=UTC)),
        # opens on the fall-back day: Saturday 18:00 EDT -> Sunday 09:00 EST
        (datetime(2026, 10, 31, 22, 0, tzinfo=UTC), DAILY_OFFICE_HOURS, NEW_YORK, datetime(2026, 11, 1, 14, 0, tzinfo=UTC)),
        # EU: Saturday 18:00 CET -> Sunday 09:00 CEST; Saturday 18:00 CEST -> Sunday 09:00 CET
        (datetime(2026, 3, 28, 17, 0, tzinfo=UTC), DAILY_OFFICE_HOURS, BERLIN, datetime(2026, 3, 29, 7, 0, tzinfo=UTC)),
        (datetime(2026, 10, 24, 16, 0, tzinfo=UTC), DAILY_OFFICE_HOURS, BERLIN, datetime(2026, 10, 25, 8, 0, tzinfo=UTC)),
        # the opening time itself is in the gap: 02:30 -> 03:30 EDT
        (
            datetime(2026, 3, 8, 6, 0, tzinfo=UTC),
            SendWindow(ALL_DAYS, time(2, 30), time(6)),
            NEW_YORK,
            datetime(2026, 3, 8, 7, 30, tzinfo=UTC),
        ),
        # the whole window is in the gap that day: skipped to Monday 02:00 EDT
        (
            datetime(2026, 3, 8, 6, 0, tzinfo=UTC),
            SendWindow(ALL_DAYS, time(2), time(2, 45)),
            NEW_YORK,
            datetime(2026, 3, 9, 6, 0, tzinfo=UTC),
        ),
        # no window: now, in UTC
        (datetime(2026, 6, 6, 3, 0, tzinfo=BERLIN), None, BERLIN, datetime(2026, 6, 6, 1, 0, tzinfo=UTC)),
    ],
)
def test_next_window_open(at: datetime, window: SendWindow | None, zone: ZoneInfo, expected: datetime) -> None:
    result = next_window_open(at, window, zone)
    assert result == expected
    assert result.tzinfo is UTC


@pytest.mark.parametrize(
    ("at", "lead_tz", "expected"),
    [
        # Friday 03:00 UTC is Friday 12:00 JST: open for a Tokyo lead, before opening under the UTC default
        (datetime(2026, 6, 5, 3, 0, tzinfo=UTC), "Asia/Tokyo", datetime(2026, 6, 5, 3, 0, tzinfo=UTC)),
        (datetime(2026, 6, 5, 3, 0, tzinfo=UTC), None, datetime(2026, 6, 5, 9, 0, tzinfo=UTC)),
        # Friday 10:00 UTC is Friday 19:00 JST: Monday 09:00 JST for a Tokyo lead, now under the UTC default
        (datetime(2026, 6, 5, 10, 0, tzinfo=UTC), "Asia/Tokyo", datetime(2026, 6, 8, 0, 0, tzinfo=UTC)),
        (datetime(2026, 6, 5, 10, 0, tzinfo=UTC), None, datetime(2026, 6, 5, 10, 0, tzinfo=UTC)),
        # an invalid lead timezone falls back to the default
        (datetime(2026, 6, 5, 10, 0, tzinfo=UTC), "Mars/Base", datetime(2026, 6, 5, 10, 0, tzinfo=UTC)),
    ],
)
def test_next_window_open_in_the_lead_zone(at: datetime, lead_tz: str | None, expected: datetime) -> None:
    zone = resolve_zone(lead_tz, None, "UTC")
    assert next_window_open(at, OFFICE_HOURS, zone) == expected


# --- weekly slots --------------------------------------------------------------------------------------------------------

TUESDAY = frozenset({1})
TUE_THU = frozenset({1, 3})
SUNDAY = frozenset({6})


@pytest.mark.parametrize(
    ("after", "days", "at", "zone", "expected"),
    [
        # Monday -> Tuesday 10:00 EDT
        (datetime(2026, 6, 1, 12, 0, tzinfo=UTC), TUESDAY, time(10), NEW_YORK, datetime(2026, 6, 2, 14, 0, tzinfo=UTC)),
        # just before the slot -> the slot
        (datetime(2026, 6, 2, 13, 59, 59, tzinfo=UTC), TUESDAY, time(10), NEW_YORK, datetime(2026, 6, 2, 14, 0, tzinfo=UTC)),
        # exactly the slot -> strictly after: next week
        (datetime(2026, 6, 2, 14, 0, tzinfo=UTC), TUESDAY, time(10), NEW_YORK, datetime(2026, 6, 9, 14, 0, tzinfo=UTC)),
        (datetime(2026, 6, 2, 10, 0, tzinfo=NEW_YORK), TUESDAY, time(10), NEW_YORK, datetime(2026, 6, 9, 14, 0, tzinfo=UTC)),
        (
            datetime(2026, 6, 2, 14, 0, 0, 1, tzinfo=UTC),
            TUESDAY,
            time(10),
            NEW_YORK,
            datetime(2026, 6, 9, 14, 0, tzinfo=UTC),
        ),
        # two days a week
        (datetime(2026, 6, 2, 14, 0, tzinfo=UTC), TUE_THU, time(10), NEW_YORK, datetime(2026, 6, 4, 14, 0, tzinfo=UTC)),
        # across spring forward: Tuesday 10:00 EST -> Tuesday 10:00 EDT
        (datetime(2026, 3, 3, 15, 0, tzinfo=UTC), TUESDAY, time(10), NEW_YORK, datetime(2026, 3, 10, 14, 0, tzinfo=UTC)),
        # across fall back: Tuesday 10:00 EDT -> Tuesday 10:00 EST
        (datetime(2026, 10, 27, 14, 0, tzinfo=UTC), TUESDAY, time(10), NEW_YORK, datetime(2026, 11, 3, 15, 0, tzinfo=UTC)),
        # a slot in the EU gap: Sunday 02:30 -> 03:30 CEST
        (datetime(2026, 3, 28, 12, 0, tzinfo=UTC), SUNDAY, time(2, 30), BERLIN, datetime(2026, 3, 29, 1, 30, tzinfo=UTC)),
        # a slot in the EU repeated hour: the first 02:30 (CEST) ...
        (datetime(2026, 10, 24, 12, 0, tzinfo=UTC), SUNDAY, time(2, 30), BERLIN, datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
        # ... and only once: after it comes next Sunday 02:30 CET, not the second 02:30 that night
        (datetime(2026, 10, 25, 0, 30, tzinfo=UTC), SUNDAY, time(2, 30), BERLIN, datetime(2026, 11, 1, 1, 30, tzinfo=UTC)),
        # Monday 23:00 UTC is already Tuesday 08:00 JST -> Tuesday 10:00 JST
        (datetime(2026, 6, 1, 23, 0, tzinfo=UTC), TUESDAY, time(10), TOKYO, datetime(2026, 6, 2, 1, 0, tzinfo=UTC)),
        (datetime(2026, 6, 1, 23, 0, tzinfo=UTC), TUESDAY, time(10), ZONE_UTC, datetime(2026, 6, 2, 10, 0, tzinfo=UTC)),
    ],
)
def test_next_weekly(after: datetime, days: frozenset[int], at: time, zone: ZoneInfo, expected: datetime) -> None:
    result = next_weekly(after, days, at, zone)
    assert result == expected
    assert result.tzinfo is UTC


# --- misuse --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: next_weekly(datetime(2026, 6, 1, tzinfo=UTC), frozenset(), time(10), NEW_YORK), "at least one day"),
        (lambda: next_weekly(datetime(2026, 6, 1), TUESDAY, time(10), NEW_YORK), "after must be timezone-aware"),
        (lambda: next_window_open(datetime(2026, 6, 1), OFFICE_HOURS, NEW_YORK), "at must be timezone-aware"),
        (lambda: in_window(datetime(2026, 6, 1), OFFICE_HOURS, NEW_YORK), "at must be timezone-aware"),
        (lambda: add_wait(datetime(2026, 6, 1), Duration(days=1), NEW_YORK), "start must be timezone-aware"),
    ],
)
def test_rejects_misuse(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


def test_a_window_ending_at_24_00_is_open_to_the_last_instant_of_its_days() -> None:
    evening = SendWindow(MON_FRI, time(20), None)
    friday_late = datetime(2026, 3, 6, 23, 59, 59, 999999, tzinfo=UTC)
    assert in_window(friday_late, evening, load_zone("UTC"))
    assert not in_window(datetime(2026, 3, 7, 0, 0, tzinfo=UTC), evening, load_zone("UTC"))  # Saturday
    assert next_window_open(datetime(2026, 3, 6, 12, tzinfo=UTC), evening, load_zone("UTC")) == datetime(
        2026, 3, 6, 20, tzinfo=UTC)
    assert next_window_open(datetime(2026, 3, 7, 0, tzinfo=UTC), evening, load_zone("UTC")) == datetime(
        2026, 3, 9, 20, tzinfo=UTC)
