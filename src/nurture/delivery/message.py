"""Outgoing emails and their RFC 5322 bytes.

The bytes are written directly instead of through :class:`email.message.EmailMessage`: building and serialising an
``EmailMessage`` costs ~1 ms per message, the worker's first bottleneck (see DESIGN.md). The output is a plain
``multipart/alternative`` (text, then HTML), 7-bit clean, with CRLF line endings, ready for ``smtplib.sendmail``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime, formataddr, parseaddr
from functools import lru_cache

__all__ = [
    "OutgoingEmail",
    "build_message_bytes",
    "domain_of",
    "envelope_address",
    "message_id_for",
]


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    """One rendered email, ready to be turned into bytes and sent.

    ``from_addr`` and ``to_addr`` are ``addr@example.com`` or ``Display Name <addr@example.com>``; ``headers`` are extra
    ``(name, value)`` pairs such as ``Reply-To``.
    """

    message_id: str
    from_addr: str
    to_addr: str
    subject: str
    html: str
    text: str
    list_unsubscribe_url: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


# Headers this module writes itself; an extra header with one of these names would make a malformed message.
_RESERVED_HEADERS = frozenset(
    name.lower()
    for name in (
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
    )
)
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # printable ASCII except ':' (RFC 5322 ftext)
_MESSAGE_ID = re.compile(r"<[!-;=?-~]+@[!-;=?-~]+>")  # visible ASCII without '<', '>' or spaces
_PRINTABLE_ASCII = re.compile(r"[\t -~]*")
_NON_ASCII_BYTES = bytes(range(128, 256))
_MAX_LINE = 78
# A dot-atom address with an ASCII domain, as most leads' addresses are: parseaddr (and smtplib.quoteaddr) give it back
# unchanged (a test checks it), so it skips them.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
PLAIN_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
# 39 UTF-8 bytes make 52 base64 characters: "Subject: " plus one encoded word stays within 78 columns.
_ENCODED_WORD_BYTES = 39
# Quoted-printable lines kept for reuse: most lines of an email are the same for every lead of a step. Bounded in
# number and in length (a longer line is encoded every time), so the cache stays a few MB at worst.
_QP_CACHE_LINES = 4096
_QP_CACHE_LINE_BYTES = 512
_qp_lines: dict[bytes, bytes] = {}
_last_date: tuple[datetime, str] = (datetime.min, "")  # a batch's messages share one date object


def message_id_for(delivery_key: str, domain: str) -> str:
    """A stable Message-ID for a delivery: the same key always gives the same id, so a resend is recognisable."""
    digest = hashlib.sha256(delivery_key.encode("utf-8")).hexdigest()[:24]
    return f"<nurture.{digest}@{_ascii_domain(domain)}>"


def domain_of(address: str) -> str:
    """The domain of ``addr@domain`` or ``Name <addr@domain>``, lower-cased and IDNA-encoded."""
    return envelope_address(address).rpartition("@")[2].lower()


def envelope_address(address: str) -> str:
    """The bare ASCII ``local@domain`` of an address, as SMTP's MAIL FROM / RCPT TO want it."""
    return _parse_address(address)[1]


def build_message_bytes(email: OutgoingEmail, *, date: datetime) -> bytes:
    """The RFC 5322 bytes of ``email``: ``multipart/alternative`` with text and HTML parts, CRLF line endings.

    ``date`` must be timezone-aware. Raises :class:`ValueError` for CR or LF in a header value, a malformed address,
    Message-ID or header name, or an extra header that this function writes itself.
    """
    if date.tzinfo is None or date.utcoffset() is None:
        raise ValueError("the Date of a message must be timezone-aware")
    message_id = email.message_id
    if not _MESSAGE_ID.fullmatch(message_id):
        raise ValueError("Message-ID must look like <local@domain> in visible ASCII")
    boundary = "=_nurture_" + hashlib.sha256(message_id.encode("ascii")).hexdigest()[:24]
    lines = [
        "From: " + _format_address(email.from_addr),
        "To: " + _format_address(email.to_addr),
        _unstructured("Subject", email.subject),
        "Date: " + _date_value(date),
        "Message-ID: " + message_id,
        "MIME-Version: 1.0",
    ]
    url = email.list_unsubscribe_url
    if url is not None:
        if not url.isascii() or not _PRINTABLE_ASCII.fullmatch(url) or any(c in url for c in " \t<>"):
            raise ValueError("List-Unsubscribe URL must be ASCII without spaces, tabs or angle brackets")
        lines.append(f"List-Unsubscribe: <{url}>")
        lines.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    for name, value in email.headers:
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"invalid header name {name!r}")
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"header {name} is written by nurture and cannot be given as an extra header")
        lines.append(_unstructured(name, value))
    lines.append(f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"')
    head = "\r\n".join(lines).encode("ascii")
    text_encoding, text_body = _encode_body(email.text)
    html_encoding, html_body = _encode_body(email.html)
    delimiter = b"\r\n--" + boundary.encode("ascii")
    return b"".join(
        (
            head,
            b"\r\n",
            delimiter,
            b'\r\nContent-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: ',
            text_encoding,
            b"\r\n\r\n",
            text_body,
            delimiter,
            b'\r\nContent-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: ',
            html_encoding,
            b"\r\n\r\n",
            html_body,
            delimiter,
            b"--\r\n",
        )
    )


def _date_value(date: datetime) -> str:
    """``format_datetime(date)``, kept for the next message when it is given the same datetime object again."""
    global _last_date  # noqa: PLW0603 - one (object, text) pair, swapped whole: safe across threads
    last, text = _last_date
    if date is last:
        return text
    text = format_datetime(date)
    if type(date) is datetime and type(date.tzinfo) is timezone:  # immutable: a fixed offset, never a custom tzinfo
        _last_date = (date, text)
    return text


def _encode_body(text: str) -> tuple[bytes, bytes]:
    """(Content-Transfer-Encoding, encoded body with CRLF line endings) for one text part."""
    raw = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    if not raw.isascii():
        non_ascii = len(raw) - len(raw.translate(None, _NON_ASCII_BYTES))
        # Quoted-printable triples every non-ASCII byte; past ~1/6 of the bytes base64 (4/3) is smaller.
        if non_ascii * 6 > len(raw):
            # Base64 carries the canonical form of text, whose line breaks are CRLF (RFC 2046).
            canonical = raw.replace(b"\n", b"\r\n")
            return b"base64", base64.encodebytes(canonical).rstrip(b"\n").replace(b"\n", b"\r\n")
    encoded = _quoted_printable(raw)
    # A line starting "From " gets a '>' in mbox stores along the way; encoding the F keeps the body intact.
    if b"From " in encoded:
        if encoded.startswith(b"From "):
            encoded = b"=46" + encoded[1:]
        encoded = encoded.replace(b"\nFrom ", b"\n=46rom ")
    return b"quoted-printable", encoded.replace(b"\n", b"\r\n")


def _quoted_printable(raw: bytes) -> bytes:
    r"""``binascii.b2a_qp(raw, istext=True)`` for ``raw`` without CR, line by line, each line from the cache if it is there.

    b2a_qp encodes a line with nothing but the line and whether a newline follows it (soft breaks, a space before the
    newline, a lone dot), so the encoding of ``line + b"\n"`` is that line's part of the whole, and the last line
    (no newline after it) is encoded on its own, as the end of the data.
    """
    lines = raw.split(b"\n")
    last = lines.pop()
    get = _qp_lines.get
    out = [get(line) or _qp_line(line) for line in lines]  # an encoded line is never empty: it ends with its newline
    out.append(binascii.b2a_qp(last, istext=True))
    return b"".join(out)


def _qp_line(line: bytes) -> bytes:
    encoded = binascii.b2a_qp(line + b"\n", istext=True)
    if len(line) <= _QP_CACHE_LINE_BYTES:
        if len(_qp_lines) >= _QP_CACHE_LINES:
            _qp_lines.clear()
        _qp_lines[line] = encoded
    return encoded


@lru_cache(maxsize=4096)
def _format_address(address: str) -> str:
    """``address`` as a header value: RFC 2047-encoded display name when non-ASCII, IDNA domain."""
    name, addr = _parse_address(address)
    if not name:
        return addr
    if name.isascii() and _PRINTABLE_ASCII.fullmatch(name) and "=?" not in name and len(name) < 900:
        return formataddr((name, addr))
    words = _encoded_words(name)
    last_line = words.rpartition("\n")[2]
    # Fold before the angle address when it would push the line past 78 columns ("From: " is 6 wide).
    separator = " " if len(last_line) + len(addr) + 9 <= _MAX_LINE else "\r\n "
    return f"{words}{separator}<{addr}>"


@lru_cache(maxsize=4096)
def _parse_address(address: str) -> tuple[str, str]:
    """(display name, bare ASCII address) of ``address``; ValueError when it is not one address."""
    if "\r" in address or "\n" in address:
        raise ValueError("CR or LF in an email address")
    stripped = address.strip()
    if PLAIN_ADDRESS.fullmatch(stripped):
        return "", stripped
    if stripped.endswith(">") and "<" in stripped:
        # Split "Name <addr>" by hand: parseaddr rejects an unquoted comma, as in "Acme, Inc <news@acme.test>",
        # which is what people write in NURTURE_FROM.
        name, _, bracketed = stripped[:-1].rpartition("<")
        name, addr = name.strip(), bracketed.strip()
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = re.sub(r"\\(.)", r"\1", name[1:-1])
    else:
        name, addr = parseaddr(stripped)
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain or " " in addr:
        raise ValueError("not an email address")
    if not local.isascii():
        raise ValueError("a non-ASCII local part needs SMTPUTF8, which nurture does not send")
    if domain.startswith("["):
        raise ValueError("an address literal such as a@[127.0.0.1] is not sent to")
    return name, f"{local}@{_ascii_domain(domain)}"


def _ascii_domain(domain: str) -> str:
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError("domain cannot be IDNA-encoded") from exc


def _unstructured(name: str, value: str) -> str:
    """``Name: value`` for an unstructured header, folded to 78 columns, RFC 2047-encoded when not plain ASCII."""
    if "\r" in value or "\n" in value:
        raise ValueError(f"CR or LF in the value of header {name}")
    prefix = name + ": "
    if value.isascii() and _PRINTABLE_ASCII.fullmatch(value) and "=?" not in value:
        if len(prefix) + len(value) <= _MAX_LINE:
            return prefix + value
        if max(map(len, value.split(" "))) + len(prefix) < 998:
            return prefix + _fold_at_spaces(value, len(prefix))
    return prefix + _encoded_words(value)


def _fold_at_spaces(value: str, first_column: int) -> str:
    """Insert CRLF before single spaces so lines stay near 78 columns; unfolding gives ``value`` back."""
    lines: list[str] = []
    line = ""
    column = first_column
    for index, word in enumerate(value.split(" ")):
        piece = word if index == 0 else " " + word
        if line and column + len(piece) > _MAX_LINE and word:
            lines.append(line)
            line, column = piece, len(piece)
        else:
            line += piece
            column += len(piece)
    lines.append(line)
    return "\r\n".join(lines)


def _encoded_words(value: str) -> str:
    """``value`` as RFC 2047 base64 encoded words of whole characters, one per folded line."""
    raw = value.encode("utf-8")
    if len(raw) <= _ENCODED_WORD_BYTES:
        chunks = [raw]
    else:
        chunks = []
        current = bytearray()
        for char in value:
            encoded = char.encode("utf-8")
            if len(current) + len(encoded) > _ENCODED_WORD_BYTES:
                chunks.append(bytes(current))
                current.clear()
            current += encoded
        chunks.append(bytes(current))
    words = ["=?utf-8?b?" + binascii.b2a_base64(chunk, newline=False).decode("ascii") + "?=" for chunk in chunks]
    return "\r\n ".join(words)
