"""Lists sent to PostgreSQL as one text each, its array input (``%s::bigint[]``, ``CAST(:ids AS bigint[])``): what the
intake's (:mod:`nurture.storage.event_bulk_pg`) and the dispatcher's (:mod:`nurture.storage.schedule_pg`) batch
statements send. psycopg's own adaptation of a Python list finds the elements' type and dumps each element in Python,
which cost more than the rest of a statement's client time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timezone
from typing import Any


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _element(kind: str) -> Callable[[Any], str]:
    if kind == "text":
        return _quoted
    if kind == "timestamptz":  # aware datetimes: ISO 8601 with the offset and every microsecond
        return lambda value: value.isoformat()
    if kind == "float8":  # the shortest text that reads back as the same double (a score of 0 may be an int)
        return lambda value: repr(float(value))
    if kind in ("bigint", "integer"):
        return lambda value: str(int(value))
    raise ValueError(f"no array text for {kind}")


_ELEMENTS = {kind: _element(kind) for kind in ("text", "timestamptz", "float8", "bigint", "integer")}


def array_text(values: Sequence[Any], kind: str) -> str:
    """``values`` as PostgreSQL's input text of an array of ``kind`` (``text``, ``timestamptz``, ``float8``,
    ``bigint`` or ``integer``; None is NULL): what the statement casts with ``%s::kind[]``. Text elements are
    double-quoted with backslashes before ``"`` and ``\\``, so any string reads back as it was."""
    if not values:
        return "{}"
    if None not in values:  # the usual case, joined in C
        if kind == "text":
            if '"' not in (whole := "".join(values)) and "\\" not in whole:
                return '{"' + '","'.join(values) + '"}'
        elif kind == "timestamptz" and all(type(value.tzinfo) is timezone for value in values):
            # a batch's rows share most of their times: each one written once. Equal times with fixed offsets are
            # one instant, which PostgreSQL reads from the text of any of them (not so with a zone's repeated hour,
            # where two instants with different ``fold`` compare equal)
            texts = {value: value.isoformat() for value in set(values)}
            return "{" + ",".join(map(texts.__getitem__, values)) + "}"
        else:
            return "{" + ",".join(map(_ELEMENTS[kind], values)) + "}"
    element = _ELEMENTS[kind]
    if values.count(None) == len(values):  # a column no row sets (an event's campaign, a lead's bounce), joined in C
        return "{" + ",".join(["NULL"] * len(values)) + "}"
    return "{" + ",".join("NULL" if value is None else element(value) for value in values) + "}"
