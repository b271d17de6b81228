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
from collections.abc import Callable
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
    would read as a float), and what orjson refuses (``NaN``, ``Infinity``, unpaired surrogate escapes).

    The digits are found by mapping the text's bytes to ``0`` (a digit) or a space and looking for 19 zeros, in C
    (0.5 µs on a lead's score state): a regular expression took 7 µs there (its floats and times are runs of 16-17
    digits, each tried from every position), 15 times orjson's parse of it. ASCII digits only: any other digit can
    only be in a string, which both parsers read alike."""
    if value is None:
        return None
    if value == "[]":  # most leads' tags
        return []
    if value == "{}":  # and fields
        return {}
    return _parsed(value, value.encode("utf-8", "surrogatepass"))


def _parsed(value: str | bytes, data: bytes) -> Any:
    """``value`` (its bytes: ``data``) read by orjson unless it holds 19 digits in a row or orjson refuses it, then by
    :func:`json.loads`: the rule :func:`json_value` and :func:`json_bytes_value` share."""
    if _LONG_DIGITS not in data.translate(_DIGITS):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            pass
    return json.loads(value)


_DIGITS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
"""A byte translation table: ASCII digits to ``0``, every other byte to a space."""
_LONG_DIGITS = b"0" * 19


def json_bytes_value(value: bytes | str | None) -> Any:
    """:func:`json_value` for the bytes psycopg hands its JSON loader (every ``json`` column read on PostgreSQL):
    the same values as :func:`json.loads` (psycopg's own loader), read by orjson where it reads them the same. A
    dispatch batch reads three JSON columns per lead and one per enrollment; by :func:`json.loads` they cost about a
    fifth of reading the rows."""
    if type(value) is not bytes:
        return json_value(value)  # type: ignore[arg-type]
    if value == b"[]":
        return []
    if value == b"{}":
        return {}
    return _parsed(value, value)


def json_text(value: Any) -> str | None:
    """A JSON column's value as SQLAlchemy's ``JSON(none_as_null=True)`` stores it: None as NULL."""
    if value is None:
        return None
    if not value and type(value) is dict:  # most events' properties: json.dumps costs microseconds to say so
        return "{}"
    return json.dumps(value)


def _kept_list_encoder() -> Callable[[list[Any]], str]:
    """:func:`json.dumps` of a list, with one C encoder kept for every call rather than one made per call (most of
    what dumping a short list costs); :func:`json.dumps` itself where this Python has no C encoder of that make."""
    from json import encoder

    make = getattr(encoder, "c_make_encoder", None)
    if make is None:
        return json.dumps
    try:
        # as json.dumps's encoder: no indent, ", " and ": ", keys unsorted, no key skipped, NaN allowed; no markers
        # (the circular-reference check): only lists their caller built are given
        kept = make(None, json.JSONEncoder().default, encoder.encode_basestring_ascii, None, ": ", ", ", False, False,
                    True)
    except TypeError:
        return json.dumps

    def dumps(value: list[Any]) -> str:
        return "".join(kept(value, 0))

    sample = [1, 2**70, -0.0, 0.1 + 0.2, 1e-300, 1.7976931348623157e308, float("nan"), float("inf"), None, True,
              "é\"\\\n\u2028🎉", [["a", 1.5, []]], {"b": [2]}]
    try:
        if dumps(sample) == json.dumps(sample):
            return dumps
    except (TypeError, ValueError):
        pass
    return json.dumps


list_text: Callable[[list[Any]], str] = _kept_list_encoder()
"""A list as :func:`json.dumps` writes it, for lists built by their caller (no list holding itself): the score
state's, written for every lead of every event batch."""

