"""build_message_bytes against the standard library's parser: every header and both parts must come back intact."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from nurture.delivery.message import (
    OutgoingEmail,
    build_message_bytes,
    domain_of,
    envelope_address,
    message_id_for,
)

DATE = datetime(2026, 3, 9, 14, 30, 5, tzinfo=timezone(timedelta(hours=-4)))
LONG_LINE = "word " * 300  # 1,500 characters on one line


def make_email(**changes: object) -> OutgoingEmail:
    fields: dict[str, object] = {
        "message_id": message_id_for("enrollment-1:welcome", "acme.test"),
        "from_addr": "Acme Team <news@acme.test>",
        "to_addr": "Sam Lead <sam@example.org>",
        "subject": "Welcome aboard",
        "html": "<p>Hello <b>Sam</b></p>\n",
        "text": "Hello Sam\n",
        "list_unsubscribe_url": "https://acme.test/u/abc?sig=123",
    }
    fields.update(changes)
    return OutgoingEmail(**fields)  # type: ignore[arg-type]


def parse(data: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def normalized(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def parts(message: EmailMessage) -> list[EmailMessage]:
    return [part for part in message.iter_parts() if isinstance(part, EmailMessage)]


CASES = {
    "ascii": {},
    "non-ascii subject and names": {
        "subject": "Ça va, Zoë? Ünïcödé 🎉 offers inside",
        "from_addr": "Zoë from Ächme, Inc <news@acme.test>",
        "to_addr": "Jürgen Müller <jurgen@example.org>",
    },
    "quoted display names": {
        "from_addr": '"Acme, Inc." <news@acme.test>',
        "to_addr": '"Doe, \\"JD\\" Jane" <jane@example.org>',
    },
    "bare addresses": {"from_addr": "news@acme.test", "to_addr": "sam@example.org"},
    "non-ascii bodies": {"text": "Grüße aus Köln — naïve café ☕\n", "html": "<p>Grüße — café ☕</p>"},
    "mostly non-ascii bodies (base64)": {"text": "Привет, как дела?\nДо встречи.\n", "html": "<p>日本語のメール本文です。</p>"},
    "long lines": {"text": LONG_LINE + "\nend", "html": "<p>" + "x" * 2500 + "</p>"},
    "long non-ascii line": {"text": "é" * 1200, "html": "ü" * 1200},
    "dots and From": {
        "text": ".\n.leading dot\n..two dots\nFrom here on\nFrom the start\n>From quoted\n",
        "html": "From the top\n.<p>dot</p>\n",
    },
    "trailing whitespace and tabs": {"text": "line with spaces   \nline with tab\t\n\tindented\n", "html": "<p> </p>  "},
    "CRLF and CR input": {"text": "one\r\ntwo\rthree\n", "html": "<p>a</p>\r\n<p>b</p>"},
    "no trailing newline": {"text": "no newline", "html": "<p>no newline</p>"},
    "empty parts": {"text": "", "html": ""},
    "boundary look-alike in body": {"text": "--=_nurture_0123456789abcdef01234567\n--=_nurture_x--\n", "html": "=_=3D"},
    "long ascii subject": {"subject": " ".join(f"word{i}" for i in range(60))},
    "long unbreakable subject": {"subject": "x" * 1200},
    "subject with encoded-word look-alike": {"subject": "Save =?utf-8?q?now?= today"},
    "subject with double spaces": {"subject": "Two  spaces   and three"},
    "no unsubscribe url": {"list_unsubscribe_url": None},
    "extra headers": {"headers": (("Reply-To", "Ada <ada@acme.test>"), ("X-Campaign", "Wëlcome series"))},
}


@pytest.mark.parametrize("changes", CASES.values(), ids=CASES.keys())
def test_round_trips_through_the_standard_parser(changes: dict[str, object]) -> None:
    email = make_email(**changes)
    message = parse(build_message_bytes(email, date=DATE))

    assert message.defects == []
    assert message["From"].addresses[0].addr_spec == envelope_address(email.from_addr)
    assert message["To"].addresses[0].addr_spec == envelope_address(email.to_addr)
    from_name = email.from_addr.rpartition("<")[0].strip().strip('"').replace('\\"', '"')
    to_name = email.to_addr.rpartition("<")[0].strip().strip('"').replace('\\"', '"')
    assert message["From"].addresses[0].display_name == from_name
    assert message["To"].addresses[0].display_name == to_name
    assert message["Subject"] == email.subject
    assert message["Date"].datetime == DATE
    assert message["Message-ID"] == email.message_id
    assert message["MIME-Version"] == "1.0"
    if email.list_unsubscribe_url is None:
        assert "List-Unsubscribe" not in message
        assert "List-Unsubscribe-Post" not in message
    else:
        assert message["List-Unsubscribe"] == f"<{email.list_unsubscribe_url}>"
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    for name, value in email.headers:
        assert str(message[name]) == value

    assert message.get_content_type() == "multipart/alternative"
    text_part, html_part = parts(message)
    assert text_part.get_content_type() == "text/plain"
    assert html_part.get_content_type() == "text/html"
    for part, original in ((text_part, email.text), (html_part, email.html)):
        assert part.defects == []
        assert part.get_content_charset() == "utf-8"
        assert normalized(part.get_content()) == normalized(original)


@pytest.mark.parametrize("changes", CASES.values(), ids=CASES.keys())
def test_is_seven_bit_with_crlf_lines_of_legal_length(changes: dict[str, object]) -> None:
    data = build_message_bytes(make_email(**changes), date=DATE)

    assert data.isascii()
    assert data.endswith(b"\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")
    lines = data.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert max(len(line) for line in head) <= 78


def test_parts_use_quoted_printable_or_base64() -> None:
    ascii_message = parse(build_message_bytes(make_email(), date=DATE))
    cyrillic = parse(build_message_bytes(make_email(**CASES["mostly non-ascii bodies (base64)"]), date=DATE))

    assert [part["Content-Transfer-Encoding"] for part in parts(ascii_message)] == ["quoted-printable"] * 2
    assert [part["Content-Transfer-Encoding"] for part in parts(cyrillic)] == ["base64"] * 2


def test_lines_starting_from_are_encoded_so_mbox_cannot_alter_them() -> None:
    data = build_message_bytes(make_email(text="From here\nand From there\n"), date=DATE)

    assert b"\r\nFrom " not in data
    assert b"=46rom here" in data


def test_same_email_gives_the_same_bytes_and_a_boundary_from_the_message_id() -> None:
    first = build_message_bytes(make_email(), date=DATE)
    again = build_message_bytes(make_email(), date=DATE)
    other = build_message_bytes(make_email(message_id=message_id_for("enrollment-2:welcome", "acme.test")), date=DATE)

    assert first == again
    boundary = parse(first).get_boundary()
    assert boundary is not None and boundary.startswith("=_nurture_")
    assert parse(other).get_boundary() != boundary


def test_headers_come_in_a_fixed_order() -> None:
    message = parse(build_message_bytes(make_email(headers=(("Reply-To", "a@acme.test"),)), date=DATE))

    assert message.keys() == [
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "Reply-To",
        "Content-Type",
    ]


@pytest.mark.parametrize(
    "changes",
    [
        {"subject": "Hello\r\nBcc: victim@example.org"},
        {"subject": "line\nbreak"},
        {"subject": "carriage\rreturn"},
        {"headers": (("X-Note", "a\r\nBcc: victim@example.org"),)},
        {"headers": (("X-Note\n", "value"),)},
        {"headers": (("Bad Name", "value"),)},
        {"headers": (("Subject", "a second subject"),)},
        {"headers": (("content-type", "text/plain"),)},
        {"from_addr": "Acme <news@acme.test>\r\nBcc: victim@example.org"},
        {"to_addr": "sam@example.org\n"},
        {"to_addr": "not an address"},
        {"to_addr": "Sam <>"},
        {"to_addr": "zoë@example.org"},
        {"list_unsubscribe_url": "https://acme.test/u\r\nBcc: x@y"},
        {"list_unsubscribe_url": "https://acme.test/u>, <mailto:x@y"},
        {"message_id": "no-angle-brackets@acme.test"},
        {"message_id": "<two words@acme.test>"},
        {"message_id": "<missing-domain>"},
    ],
    ids=lambda changes: repr(changes)[:40],
)
def test_rejects_header_injection_and_malformed_values(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        build_message_bytes(make_email(**changes), date=DATE)


def test_rejects_a_naive_date() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        build_message_bytes(make_email(), date=datetime(2026, 1, 1, 9, 0))


def test_an_international_domain_is_idna_encoded() -> None:
    message = parse(build_message_bytes(make_email(to_addr="Zoë <zoe@bücher.example>"), date=DATE))

    assert message["To"].addresses[0].addr_spec == "zoe@xn--bcher-kva.example"
    assert envelope_address("zoe@bücher.example") == "zoe@xn--bcher-kva.example"


@pytest.mark.parametrize(
    ("key", "domain"),
    [("enrollment-1:welcome", "acme.test"), ("enrollment-1:day-3", "acme.test"), ("x" * 500, "mail.acme.test")],
)
def test_message_id_is_stable_per_key(key: str, domain: str) -> None:
    message_id = message_id_for(key, domain)

    assert message_id == message_id_for(key, domain)
    assert re.fullmatch(rf"<nurture\.[0-9a-f]{{24}}@{re.escape(domain)}>", message_id)


def test_different_keys_give_different_message_ids() -> None:
    ids = {message_id_for(f"enrollment-{n}:welcome", "acme.test") for n in range(1000)}

    assert len(ids) == 1000


@pytest.mark.parametrize(
    ("address", "domain"),
    [
        ("news@acme.test", "acme.test"),
        ("Acme Team <news@Mail.Acme.Test>", "mail.acme.test"),
        ('"Acme, Inc." <news@acme.test>', "acme.test"),
        ("Acme, Inc <news@acme.test>", "acme.test"),
        ("Nurture <nurture@localhost>", "localhost"),
        ("news@bücher.example", "xn--bcher-kva.example"),
    ],
)
def test_domain_of(address: str, domain: str) -> None:
    assert domain_of(address) == domain


@pytest.mark.parametrize("address", ["", "acme.test", "Acme <>", "@acme.test", "news@"])
def test_domain_of_rejects_non_addresses(address: str) -> None:
    with pytest.raises(ValueError):
        domain_of(address)
