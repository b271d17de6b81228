"""SMTP delivery over a few persistent connections used in parallel.

SMTP is sequential per connection, so a batch is shared out among up to ``connections`` connections, one thread each.
A dropped connection is reconnected once per message before the message is reported as a temporary failure.
SMTP cannot be exactly-once: if the connection drops after the server accepted the data but before its reply
arrived, the reconnect resends that message (with the same Message-ID).
"""

from __future__ import annotations

import logging
import re
import smtplib
import socket
import ssl
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from nurture.delivery.message import PLAIN_ADDRESS as _PLAIN_ADDRESS
from nurture.delivery.message import OutgoingEmail, envelope_address
from nurture.delivery.transports import SendResult
from nurture.errors import ConfigError

__all__ = ["SMTPEndpoint", "SMTPTransport"]

log = logging.getLogger(__name__)

_QUEUE_ID = re.compile(rb"(?:queued as|\bid=)\s*([A-Za-z0-9][A-Za-z0-9._:-]*)", re.IGNORECASE)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_MAX_CONNECTIONS = 64
# 5xx replies about the session (authentication or TLS required, credentials refused), not about the message: every
# message would get them, so they are reported as temporary rather than dropping the messages for good.
_SESSION_CODES = frozenset({530, 534, 535, 538})

_Number = TypeVar("_Number", int, float)


@dataclass(frozen=True)
class SMTPEndpoint:
    """Where and how to connect: ``smtp://[user:pass@]host[:port][?starttls=1&timeout=10&connections=4]``.

    ``smtps://`` means TLS from the first byte (port 465 by default); ``starttls`` upgrades a plain connection.
    """

    host: str
    port: int = 25
    implicit_tls: bool = False
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 10.0
    connections: int = 4

    @classmethod
    def from_url(cls, url: str) -> SMTPEndpoint:
        """Parse an ``smtp://`` or ``smtps://`` URL; ConfigError (without the password) when it is malformed."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("smtp", "smtps"):
            raise ConfigError(f"not an SMTP URL: scheme {scheme!r}")
        if not parts.hostname:
            raise ConfigError(f"{scheme}:// mail URL needs a host, e.g. {scheme}://mail.example.com")
        if parts.path not in ("", "/"):
            raise ConfigError(f"{scheme}:// mail URL takes no path")
        try:
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"{scheme}:// mail URL has an invalid port") from exc
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(options) - {"starttls", "timeout", "connections"})
        if unknown:
            raise ConfigError(
                f"unknown {scheme}:// mail URL option(s) {', '.join(unknown)}: use starttls, timeout, connections"
            )
        implicit_tls = scheme == "smtps"
        starttls = _flag(options.get("starttls", "0"))
        if implicit_tls and starttls:
            raise ConfigError("smtps:// is already encrypted: drop starttls=1, or use smtp://...?starttls=1")
        return cls(
            host=parts.hostname,
            port=port if port is not None else (465 if implicit_tls else 25),
            implicit_tls=implicit_tls,
            starttls=starttls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            timeout=_positive(options.get("timeout", "10"), "timeout", float),
            connections=min(_positive(options.get("connections", "4"), "connections", int), _MAX_CONNECTIONS),
        )


class SMTPTransport:
    """Sends batches over up to ``endpoint.connections`` persistent SMTP connections, in parallel.

    ``send_many`` calls are serialised; the connections stay open between batches until :meth:`close`.
    """

    def __init__(
        self,
        endpoint: SMTPEndpoint,
        *,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._ssl_context = ssl_context
        self._local_hostname = local_hostname
        self._connections = [_Connection(self) for _ in range(endpoint.connections)]
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> SMTPTransport:
        """A transport for an ``smtp://`` or ``smtps://`` URL (see :class:`SMTPEndpoint`)."""
        return cls(SMTPEndpoint.from_url(url))

    def __enter__(self) -> SMTPTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send_many(self, batch: list[tuple[OutgoingEmail, bytes]]) -> list[SendResult]:
        """Send every message; one result per message in batch order. Never raises for a message's failure."""
        with self._lock:
            results: list[SendResult | None] = [None] * len(batch)
            pending = iter(range(len(batch)))
            pending_lock = threading.Lock()

            def work(connection: _Connection) -> None:
                while True:
                    with pending_lock:
                        index = next(pending, None)
                    if index is None:
                        return
                    email, data = batch[index]
                    results[index] = result = connection.deliver(email, data)
                    if result.error == _UNREACHABLE:
                        # Leave the rest to connections that still work.
                        return

            workers = min(len(self._connections), len(batch))
            if workers <= 1:
                if batch:
                    work(self._connections[0])
            else:
                executor = self._executor_for_batch()
                for future in [executor.submit(work, connection) for connection in self._connections[:workers]]:
                    future.result()
            final = [result if result is not None else _unreachable() for result in results]
        _log_outcome(final)
        return final

    def close(self) -> None:
        """Say QUIT on every open connection and stop the sending threads."""
        with self._lock:
            for connection in self._connections:
                connection.close()
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    def _executor_for_batch(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(len(self._connections), thread_name_prefix="nurture-smtp")
        return self._executor

    def _open(self) -> _RememberingSMTP:
        """A connected, greeted, optionally encrypted and authenticated SMTP session."""
        endpoint = self.endpoint
        if self._local_hostname is None:
            # smtplib would call getfqdn() (a DNS lookup) on every connect.
            self._local_hostname = socket.getfqdn()
        if endpoint.implicit_tls:
            smtp: _RememberingSMTP = _RememberingSMTPSSL(
                endpoint.host,
                endpoint.port,
                local_hostname=self._local_hostname,
                timeout=endpoint.timeout,
                context=self._tls_context(),
            )
        else:
            smtp = _RememberingSMTP(endpoint.host, endpoint.port, self._local_hostname, endpoint.timeout)
        try:
            if endpoint.starttls:
                smtp.starttls(context=self._tls_context())
                smtp.ehlo()
            if endpoint.username:
                smtp.login(endpoint.username, endpoint.password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context


class _RememberingSMTP(smtplib.SMTP):
    """``smtplib.SMTP`` that keeps the reply to DATA, whose text usually carries the server's queue id.

    MAIL and RCPT skip smtplib's ``quoteaddr`` for a plain ``local@domain`` (what :func:`envelope_address` gives),
    which would only parse it again with ``email.utils.parseaddr`` to the same ``<local@domain>``: that parsing was a
    third of smtplib's CPU per message. Anything else, and SMTPUTF8, go through smtplib as they are.
    """

    last_data_reply: bytes = b""

    def mail(self, sender: str, options: Sequence[str] = ()) -> tuple[int, bytes]:
        if not _PLAIN_ADDRESS.fullmatch(sender) or any(option.lower() == "smtputf8" for option in options):
            return super().mail(sender, options)
        self.putcmd("mail", f"FROM:<{sender}>{_options(self, options)}")
        return self.getreply()

    def rcpt(self, recip: str, options: Sequence[str] = ()) -> tuple[int, bytes]:
        if not _PLAIN_ADDRESS.fullmatch(recip):
            return super().rcpt(recip, options)
        self.putcmd("rcpt", f"TO:<{recip}>{_options(self, options)}")
        return self.getreply()

    def data(self, msg: bytes | str) -> tuple[int, bytes]:  # type: ignore[override]
        if type(msg) is bytes and not msg.startswith(b".") and b"\n." not in msg:
            code, reply = self._data_without_dots(msg)
        else:
            code, reply = super().data(msg)
        self.last_data_reply = reply
        return code, reply

    def _data_without_dots(self, msg: bytes) -> tuple[int, bytes]:
        """smtplib's DATA for a message with no line starting with a dot: the same bytes, without the regex over the
        whole message that would find no dot to double (a third of the sending thread's CPU per message)."""
        self.putcmd("data")
        code, repl = self.getreply()
        if self.debuglevel > 0:
            self._print_debug("data:", (code, repl))  # type: ignore[attr-defined]
        if code != 354:
            raise smtplib.SMTPDataError(code, repl)
        if msg[-2:] != b"\r\n":
            msg = msg + b"\r\n"
        self.send(msg + b".\r\n")
        code, reply = self.getreply()
        if self.debuglevel > 0:
            self._print_debug("data:", (code, reply))  # type: ignore[attr-defined]
        return code, reply


def _options(smtp: smtplib.SMTP, options: Sequence[str]) -> str:
    return " " + " ".join(options) if options and smtp.does_esmtp else ""


class _RememberingSMTPSSL(_RememberingSMTP, smtplib.SMTP_SSL):
    """The implicit-TLS variant."""


_UNREACHABLE = "unreachable: no connection to the SMTP server"


def _unreachable() -> SendResult:
    return SendResult(ok=False, error=_UNREACHABLE)


class _Connection:
    """One persistent SMTP session, used by one thread at a time."""

    def __init__(self, transport: SMTPTransport) -> None:
        self._transport = transport
        self._smtp: _RememberingSMTP | None = None

    def deliver(self, email: OutgoingEmail, data: bytes) -> SendResult:
        """Send one message, reconnecting once if the connection turns out to be dropped."""
        try:
            sender, recipient = envelope_address(email.from_addr), envelope_address(email.to_addr)
        except ValueError as exc:
            return SendResult(ok=False, error=f"invalid address: {exc}", permanent=True)
        for attempt in (1, 2):
            if self._smtp is None:
                try:
                    self._smtp = self._transport._open()
                except Exception as exc:  # noqa: BLE001 - whatever the cause, the batch goes on without this connection
                    _log_connect_failure(exc)
                    return _unreachable()
            try:
                self._smtp.sendmail(sender, [recipient], data)
            except smtplib.SMTPRecipientsRefused as exc:
                code, reply = exc.recipients.get(recipient, (None, b""))
                # RFC 5321 4.5.3.1.10: a 552 (mailbox full) to RCPT is to be treated as temporary.
                return self._rejected(code, reply, permanent=None if code != 552 else False)
            except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
                return self._rejected(exc.smtp_code, exc.smtp_error)
            except (smtplib.SMTPServerDisconnected, ConnectionError) as exc:
                self._discard()
                if attempt == 1:
                    continue
                return SendResult(ok=False, error=f"connection lost: {type(exc).__name__}")
            except smtplib.SMTPResponseException as exc:
                return self._rejected(exc.smtp_code, exc.smtp_error)
            except (OSError, smtplib.SMTPException) as exc:
                # A timeout or a protocol surprise: the session state is unknown, so start a fresh one next time.
                self._discard()
                return SendResult(ok=False, error=f"SMTP error: {type(exc).__name__}")
            except Exception as exc:  # noqa: BLE001 - one message must not break the batch
                self._discard()
                return SendResult(ok=False, error=f"unexpected error: {type(exc).__name__}")
            match = _QUEUE_ID.search(self._smtp.last_data_reply)
            return SendResult(ok=True, provider_message_id=match.group(1).decode("ascii") if match else None)
        raise AssertionError("unreachable")  # pragma: no cover

    def _rejected(self, code: int | None, reply: bytes | str, *, permanent: bool | None = None) -> SendResult:
        """A refused message; ``permanent`` defaults to "a 5xx not about the session"."""
        # smtplib has already sent RSET, or closed the connection after a 421.
        if self._smtp is not None and self._smtp.sock is None:
            self._smtp = None
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
        if permanent is None:
            permanent = code is not None and 500 <= code < 600 and code not in _SESSION_CODES
        return SendResult(ok=False, error=f"{code} {text}".strip(), permanent=permanent)

    def _discard(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    def close(self) -> None:
        """QUIT politely; the server may already be gone."""
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (OSError, smtplib.SMTPException):
                pass
            self._discard()


def _log_connect_failure(exc: BaseException) -> None:
    code = getattr(exc, "smtp_code", None)
    log.warning("SMTP connection failed: %s%s", type(exc).__name__, f" ({code})" if code else "")


def _log_outcome(results: list[SendResult]) -> None:
    sent = sum(result.ok for result in results)
    permanent = sum(result.permanent for result in results)
    temporary = len(results) - sent - permanent
    if sent == len(results):
        log.debug("SMTP batch: %d sent", sent)
        return
    codes = Counter(_error_kind(result.error or "") for result in results if not result.ok)
    log.warning(
        "SMTP batch: %d sent, %d temporary and %d permanent failures; replies %s",
        sent,
        temporary,
        permanent,
        dict(codes.most_common()),
    )


def _error_kind(error: str) -> str:
    """The reply code ("550") or the kind ("connection lost") of an error; the rest may quote an address."""
    if error[:3].isdigit():
        return error[:3]
    return error.partition(":")[0]


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"mail URL option starttls must be 1 or 0, not {value!r}")


def _positive(value: str, name: str, kind: type[_Number]) -> _Number:
    try:
        number = kind(value)
    except ValueError:
        number = kind(0)
    if not number > 0:
        raise ConfigError(f"mail URL option {name} must be a positive {kind.__name__}, not {value!r}")
    return number
