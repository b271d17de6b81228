"""DATA sends exactly what smtplib sends: the message with its dot-led lines doubled, CRLF, a dot line."""

from __future__ import annotations

import smtplib

import pytest

from nurture.delivery.smtp import _RememberingSMTP


def _sent_by(session: smtplib.SMTP, message: bytes | str, replies: list[tuple[int, bytes]]) -> tuple[list[bytes], object]:
    sent: list[bytes] = []
    waiting = list(replies)
    session.send = lambda data: sent.append(data if isinstance(data, bytes) else data.encode())  # type: ignore[method-assign]
    session.getreply = lambda: waiting.pop(0)  # type: ignore[method-assign]
    try:
        outcome: object = session.data(message)
    except smtplib.SMTPDataError as exc:
        outcome = ("refused", exc.smtp_code, exc.smtp_error)
    return sent, outcome


MESSAGES: list[bytes | str] = [
    b"Subject: x\r\n\r\nbody\r\n",
    b"Subject: x\r\n\r\nno final newline",
    b"Subject: x\r\n\r\n.a dot first\r\n..two\r\n.\r\n",
    b".at the very start\r\n",
    b"a line\n.after a bare newline\n",
    b"",
    b"\r\n",
    b"middle . dot and a final dot.",
    "a text message\n.with a dot\r\nand a bare\rcarriage return",
    bytearray(b"a bytearray\r\n.dot\r\n"),
]


@pytest.mark.parametrize("message", MESSAGES)
@pytest.mark.parametrize("replies", [[(354, b"go ahead"), (250, b"OK queued as ABC123")],
                                     [(554, b"no thanks")], [(354, b"go ahead"), (451, b"try later")]])
def test_data_sends_what_smtplib_sends(message: bytes | str, replies: list[tuple[int, bytes]]) -> None:
    ours = _RememberingSMTP()
    theirs = smtplib.SMTP()
    assert _sent_by(ours, message, replies) == _sent_by(theirs, message, replies)
    if replies[0][0] == 354:
        assert ours.last_data_reply == replies[1][1]
