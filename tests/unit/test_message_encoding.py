"""The body encodings are exactly the standard library's, whatever the line-by-line caching and the date memo do."""

from __future__ import annotations

import binascii
import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from nurture.delivery import message
from nurture.delivery.message import _quoted_printable

# the characters where quoted-printable has rules: spaces and tabs (at line ends), '=', '.', control bytes, non-ASCII
_ALPHABET = st.sampled_from([" ", "\t", "=", ".", "a", "Z", "\n", "\n", "\x00", "\x7f", "é", "€", "From ", "x" * 70])


def _lines_near_the_limit() -> list[bytes]:
    found = []
    for width in range(70, 80):
        for tail in (b"", b" ", b"\t", b"=", b"  ", b".", b"\xc3\xa9"):
            found.append(b"a" * (width - len(tail)) + tail)
    return found


@settings(max_examples=400, deadline=None)
@given(st.lists(_ALPHABET, max_size=60).map("".join))
def test_quoted_printable_is_b2a_qp(text: str) -> None:
    raw = text.encode("utf-8")
    expected = binascii.b2a_qp(raw, istext=True)
    assert _quoted_printable(raw) == expected
    assert _quoted_printable(raw) == expected  # again, from the cache


def test_quoted_printable_is_b2a_qp_at_the_line_limit_and_over_it() -> None:
    lines = [*_lines_near_the_limit(), b".", b"", b" ", b"\t", b"=" * 200, b"x" * 600, b". ", b"a.b"]
    rng = random.Random(7)
    for _ in range(300):
        raw = b"\n".join(rng.choice(lines) for _ in range(rng.randint(0, 8)))
        raw += rng.choice([b"", b"\n", b"\n\n"])
        assert _quoted_printable(raw) == binascii.b2a_qp(raw, istext=True), raw


def test_the_line_cache_stays_bounded() -> None:
    for number in range(message._QP_CACHE_LINES + 10):
        raw = f"line {number}\nlast".encode()
        assert _quoted_printable(raw) == binascii.b2a_qp(raw, istext=True)
    assert len(message._qp_lines) <= message._QP_CACHE_LINES
    long_line = b"y" * (message._QP_CACHE_LINE_BYTES + 1)
    assert _quoted_printable(long_line + b"\n") == binascii.b2a_qp(long_line + b"\n", istext=True)
    assert long_line not in message._qp_lines


def test_the_date_header_is_format_datetime_of_each_date() -> None:
    utc = datetime(2024, 5, 1, 9, 30, tzinfo=timezone.utc)
    paris = utc.astimezone(timezone(timedelta(hours=2)))
    assert utc == paris  # the same instant: only the object tells them apart
    for date in (utc, utc, paris, paris, utc, utc + timedelta(seconds=1), utc.replace(tzinfo=timezone(timedelta(0)))):
        assert message._date_value(date) == format_datetime(date)
