"""When temporary delivery failures add up to a suppression: the soft bounce rule of ``policy.yaml``.

A hard bounce or a spam complaint suppresses the lead at once. A soft bounce (a full mailbox, a server refusing for
now) does only when ``soft_bounces.limit`` of them fall within ``soft_bounces.within`` of each other.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

SOFT_BOUNCE = "soft_bounce"
"""The event type of a temporary delivery failure."""

_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


def soft_bounce_span(at: datetime, within: timedelta) -> tuple[datetime, datetime]:
    """The times a soft bounce at ``at`` is counted with: every window ``within`` long that holds ``at`` lies in it.

    Clamped to the first and last representable instants, so a bounce dated near year 1 or 9999 has a span too."""
    start = at - within if at - _EARLIEST > within else _EARLIEST
    end = at + within if _LATEST - at > within else _LATEST
    return start, end


def soft_bounces_suppress(times: Iterable[datetime], at: datetime, *, limit: int, within: timedelta) -> bool:
    """Whether the lead's soft bounces at ``times`` (the one at ``at`` among them) reach ``limit`` within one window
    ``within`` long (ends included) that holds ``at``.

    Only windows holding the new soft bounce are asked: one without it would have suppressed the lead already. So a
    late-arriving soft bounce counts with those around the time it happened, not with the newest ones.
    """
    start, end = soft_bounce_span(at, within)
    ordered = sorted(t for t in times if start <= t <= end)
    for index, first in enumerate(ordered):
        if first > at:
            break
        last = first + within if _LATEST - first > within else _LATEST
        if last >= at and bisect_right(ordered, last) - index >= limit:
            return True
    return False
