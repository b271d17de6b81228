"""A lead's score state: what recording its next event needs of its scored history, kept on the lead row (pure: the
state's format and arithmetic; storage only reads and writes the JSON).

Scoring an event needs two things of the lead's history: its scored events summed per type with decay (the score),
and how many events of the event's type scored on the event's UTC day (the daily caps). Read from the events, both
cost time that grows with the history. The state keeps them as of the last batch that wrote the lead, as one flat
JSON array (it is read and written with every batch that touches the lead, so it is kept small and quick to parse)::

    [1, <at>, <half-life in seconds, or null: no decay>, <since>,
     [<type>, <points decayed to at>, <points as awarded>, <count>, <latest>, <type>, ...],
     [<type>, <day>, <count>, <type>, ...]]

Times (``at``, ``latest``) are microseconds since 1970-01-01 UTC; days (``since``, ``day``) are proleptic Gregorian
ordinals (:meth:`datetime.date.toordinal`) of UTC days. The counts hold every scored event per type on each UTC day
from ``since`` on, completely: a day or type missing there had none. Decaying the sums from ``at`` to a later time is
exact (``0.5 ** (a / h) * 0.5 ** (b / h)`` is ``0.5 ** ((a + b) / h)``, up to the last bits of a float), so a batch
folds the state in instead of reading the history, whatever its length.

A state is used only when it was written with the half-life now in force, at or before the batch's time; otherwise,
or when it is NULL (a lead stored before states existed, or one whose history another writer changed: sales
feedback clears it), the batch reads the history as before and writes the state again. No state is written while
the lead holds an event stamped after the batch's time: such an event counts in full until its time comes, which a
sum decayed from ``at`` cannot follow. Events of a day before ``since`` (late arrivals) read that day's counts from
the history.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from nurture.core.frozen import quick_init
from nurture.core.scoring import ScoreAccumulator, decayed, utc_day

VERSION = 1
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
"""What the state's times count microseconds from (a number parses faster than a timestamp's text)."""
MICROSECOND = timedelta(microseconds=1)
DAYS = 3
"""Days of cap counts a state keeps: the batch's UTC day and the two before (events arrive late, rarely older)."""


@quick_init
@dataclass(frozen=True)
class Loaded:
    """A state read back for a batch at ``now``: the sums decayed to ``now`` and the daily counts from ``since``."""

    groups: list[tuple[str, float, float, int, datetime]]  # (type, points at now, points as awarded, count, latest)
    since: date
    counts: dict[tuple[str, date], int]

    def add_to(self, behaviour: ScoreAccumulator) -> None:
        """Fold the sums into an accumulator decayed to the same ``now``."""
        for group in self.groups:
            behaviour.add_group(*group)


def window_start(now: datetime) -> date:
    """The first day of cap counts a state written at ``now`` keeps."""
    return utc_day(now) - timedelta(days=DAYS - 1)


def load(value: Any, now: datetime, half_life_seconds: float | None) -> Loaded | None:
    """The state of a lead row (a list, its JSON text, or None) as of ``now``; None when it cannot be used."""
    if value is None:
        return None
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, list) or len(value) != 6 or value[0] != VERSION or value[2] != half_life_seconds:
        return None
    _version, at, _half_life, since, groups, counts = value
    age = _moment(now).micros - at
    if age < 0:  # written by a batch stamped later (another clock): read the history
        return None
    factor = decayed(1.0, age / 1e6, half_life_seconds)
    return Loaded(
        [(groups[i], groups[i + 1] * factor, groups[i + 2], groups[i + 3], EPOCH + timedelta(0, 0, groups[i + 4]))
         for i in range(0, len(groups), 5)],
        date.fromordinal(since),
        {(counts[i], date.fromordinal(counts[i + 1])): counts[i + 2] for i in range(0, len(counts), 3)},
    )


def dump(behaviour: ScoreAccumulator, counts: Mapping[tuple[str, date], int], counted_since: date | None) -> list | None:
    """The state to store after a batch: ``behaviour`` holds the lead's whole scored history (decayed to its
    ``now``), ``counts`` its scored events per (type, UTC day), complete from ``counted_since`` on. None when no
    state can stand for the history (an event stamped after ``now``, or counts not complete over the window)."""
    now = behaviour.now
    moment = _moment(now)
    if counted_since is None or counted_since > moment.since:
        return None
    groups: list[Any] = []
    for kind, points, raw, count, latest in behaviour.groups():
        if latest > now:
            return None
        groups += (kind, points, raw, count, (latest - EPOCH) // MICROSECOND)
    first, last = moment.first, moment.last
    days: list[Any] = []
    for (kind, day), count in counts.items():
        if count:
            ordinal = day.toordinal()
            if ordinal > last:
                return None
            if ordinal >= first:
                days += (kind, ordinal, count)
    return [VERSION, moment.whole_micros, behaviour.half_life_seconds, first, groups, days]


@quick_init
@dataclass(frozen=True)
class _Moment:
    """What :func:`load` and :func:`dump` work out from a batch's time alone."""

    micros: float  # microseconds since EPOCH, as (now - EPOCH) / MICROSECOND gives them
    whole_micros: int  # and as (now - EPOCH) // MICROSECOND does
    since: date  # window_start(now)
    first: int  # its ordinal
    last: int  # the ordinal of now's UTC day


_LAST_MOMENT: tuple[datetime | None, _Moment | None] = (None, None)


def _moment(now: datetime) -> _Moment:
    """``now``'s :class:`_Moment`, remembered for the last time asked: a batch loads and dumps the state of each of
    its leads at one time (worked out per lead, they cost about a microsecond of each load and dump). The pair is
    replaced as a whole, so a thread reading it while another batch replaces it sees one or the other."""
    global _LAST_MOMENT  # noqa: PLW0603 - a one-entry memo
    last_now, moment = _LAST_MOMENT
    if last_now is now and moment is not None:
        return moment
    since = window_start(now)
    moment = _Moment((now - EPOCH) / MICROSECOND, (now - EPOCH) // MICROSECOND, since, since.toordinal(),
                     utc_day(now).toordinal())
    _LAST_MOMENT = (now, moment)
    return moment
