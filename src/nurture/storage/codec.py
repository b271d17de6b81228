"""How values are written as the database's text and read back: the one serializer of timestamps and JSON for the
writes and reads that go past SQLAlchemy's types (the intake's bulk statements on SQLite).

:class:`nurture.storage.database.UTCDateTime` stores UTC on SQLite as SQLAlchemy's ``DATETIME`` writes it
(``2024-05-01 12:00:00.000000``, the offset dropped so the text sorts); :func:`sqlite_time` writes that same text and
:func:`time_from_text` reads it back as the type does, so rows written either way are the same rows. The score state
(:mod:`nurture.core.score_state`) counts time in microseconds since :data:`EPOCH` instead: a number parses faster
than a timestamp's text.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timezone
from functools import lru_cache
from typing import Any, overload

import orjson


def aware_utc(value: datetime) -> datetime:
    """``value`` in UTC; ValueError for a naive datetime (a missing time zone is a bug to hear about, not guess)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: nurture stores aware datetimes only")
    return value.astimezone(timezone.utc)


def sqlite_time(value: datetime | None) -> str | None:
    """A timestamp as :class:`nurture.storage.database.UTCDateTime` stores it on SQLite: UTC, as SQLAlchemy's SQLite
    ``DATETIME`` writes it (``2024-05-01 12:00:00.000000``)."""
    if value is None:
        return None
    return aware_utc(value).replace(tzinfo=None).isoformat(" ", "microseconds")


class TimeText:
    """:func:`sqlite_time`, remembering its answers: the rows of a batch share most of their timestamps."""

    __slots__ = ("_known",)

    def __init__(self) -> None:
        self._known: dict[datetime, str] = {}

    def __call__(self, value: datetime | None) -> str | None:
        if value is None:
            return None
        found = self._known.get(value)  # equal datetimes are the same instant: the same text
        if found is None:
            found = self._known[value] = sqlite_time(value)  # type: ignore[assignment]
        return found


@overload
def time_from_text(value: str) -> datetime: ...


@overload
def time_from_text(value: None) -> None: ...


def time_from_text(value: str | None) -> datetime | None:
    """A timestamp SQLite holds as text, read back as :class:`nurture.storage.database.UTCDateTime` reads it."""
    return datetime.fromisoformat(value).replace(tzinfo=timezone.utc) if value is not None else None


@lru_cache(maxsize=1024)
def day_from_text(text: str) -> date:
    """A UTC day as ``YYYY-MM-DD`` text."""
    return date.fromisoformat(text)


def json_value(value: str | None) -> Any:
    """A JSON column's text read back (NULL as None), as :func:`json.loads` reads it.

    orjson parses in C, several times faster. What it reads otherwise is read by :func:`json.loads`, so the values
    are the same either way: a text with 19 digits in a row (it may hold a whole number beyond 64 bits, which orjson
    would read as a float), and what orjson refuses (``NaN``, ``Infinity``, unpaired surrogate escapes)."""
    if value is None:
        return None
    if value == "[]":  # most leads' tags
        return []
    if value == "{}":  # and fields
        return {}
    if _LONG_DIGITS.search(value) is None:
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            pass
    return json.loads(value)


_LONG_DIGITS = re.compile(r"\d{19}")


def json_text(value: Any) -> str | None:
    """A JSON column's value as SQLAlchemy's ``JSON(none_as_null=True)`` stores it: None as NULL."""
    if value is None:
        return None
    if not value and type(value) is dict:  # most events' properties: json.dumps costs microseconds to say so
        return "{}"
    return json.dumps(value)
