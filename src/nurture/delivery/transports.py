"""Mail transports: the interface, the local ones (file, console) and the ``NURTURE_MAIL_URL`` registry.

A transport sends pre-built messages in batches and reports one :class:`SendResult` per message; it never raises for
one message's failure. Logs carry counts and error codes only, never addresses or bodies.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TextIO
from urllib.parse import unquote

from nurture.delivery.message import OutgoingEmail
from nurture.errors import ConfigError

__all__ = [
    "ConsoleTransport",
    "FileTransport",
    "SendResult",
    "Transport",
    "register_transport",
    "supported_schemes",
    "transport_from_url",
]

log = logging.getLogger(__name__)


@dataclass
class SendResult:
    """What happened to one message.

    ``permanent`` failures (5xx, a bad address) must not be retried; other failures (4xx, connection trouble) should be.
    """

    ok: bool
    provider_message_id: str | None = None
    error: str | None = None
    permanent: bool = False


class Transport(Protocol):
    """Sends batches of ``(email, message bytes)``; the envelope sender is the From address, the recipient the To."""

    def send_many(self, batch: list[tuple[OutgoingEmail, bytes]]) -> list[SendResult]:
        """One result per message, in the order of ``batch``; a failed message gives a failed result, not an exception."""

    def close(self) -> None:
        """Release connections; the transport is not used afterwards."""


TransportFactory = Callable[[str], Transport]
_FACTORIES: dict[str, TransportFactory] = {}


def register_transport(scheme: str, factory: TransportFactory) -> None:
    """Make ``transport_from_url`` build ``factory(url)`` for URLs starting ``scheme://`` (e.g. an email-API provider)."""
    _FACTORIES[scheme.lower()] = factory


def supported_schemes() -> list[str]:
    """The URL schemes ``transport_from_url`` understands, sorted."""
    return sorted(_FACTORIES)


def transport_from_url(url: str) -> Transport:
    """The transport for a ``NURTURE_MAIL_URL``: ``smtp://``, ``smtps://``, ``file://`` or ``console://``.

    Raises :class:`~nurture.errors.ConfigError` for an unknown scheme or a malformed URL.
    """
    scheme, separator, _ = url.partition("://")
    factory = _FACTORIES.get(scheme.lower()) if separator else None
    if factory is None:
        supported = ", ".join(f"{name}://" for name in supported_schemes())
        # The URL itself is left out of the message: it may hold a password.
        raise ConfigError(f"unsupported mail URL scheme {scheme!r}: use one of {supported}")
    return factory(url)


class FileTransport:
    """Writes each message to ``<directory>/<message id>.eml``; resending the same Message-ID overwrites the file."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    @classmethod
    def from_url(cls, url: str) -> FileTransport:
        """``file:///absolute/dir`` or ``file://relative/dir`` (relative to the working directory)."""
        path = unquote(url.partition("://")[2])
        if not path:
            raise ConfigError("file:// mail URL needs a directory, e.g. file://outbox or file:///var/mail/nurture")
        return cls(Path(path).expanduser())

    def send_many(self, batch: list[tuple[OutgoingEmail, bytes]]) -> list[SendResult]:
        """Write every message atomically (temporary file, then rename)."""
        results: list[SendResult] = []
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("file transport cannot create its directory: %s", type(exc).__name__)
            return [SendResult(ok=False, error=f"cannot create directory: {exc.strerror}") for _ in batch]
        for email, data in batch:
            name = _safe_file_name(email.message_id) + ".eml"
            try:
                _write_atomically(self.directory / name, data)
            except OSError as exc:
                results.append(SendResult(ok=False, error=f"cannot write message file: {exc.strerror}"))
            else:
                results.append(SendResult(ok=True, provider_message_id=name))
        failed = sum(not result.ok for result in results)
        if failed:
            log.warning("file transport: %d of %d messages not written", failed, len(batch))
        return results

    def close(self) -> None:
        """Nothing to release."""


class ConsoleTransport:
    """Prints a readable block per message (To, Subject, Message-ID and the text part), for development."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> ConsoleTransport:
        """``console://`` prints to standard output."""
        if url.partition("://")[2]:
            raise ConfigError("console:// mail URL takes no host, path or options")
        return cls()

    def send_many(self, batch: list[tuple[OutgoingEmail, bytes]]) -> list[SendResult]:
        """Print every message; a broken stream fails the messages instead of raising."""
        blocks = [
            f"{'-' * 72}\nTo: {email.to_addr}\nSubject: {email.subject}\nMessage-ID: {email.message_id}\n\n"
            f"{email.text.rstrip()}\n"
            for email, _ in batch
        ]
        try:
            with self._lock:
                self.stream.write("".join(blocks))
                self.stream.flush()
        except (OSError, ValueError) as exc:
            return [SendResult(ok=False, error=f"console not writable: {type(exc).__name__}") for _ in batch]
        return [SendResult(ok=True, provider_message_id=email.message_id) for email, _ in batch]

    def close(self) -> None:
        """The stream belongs to the caller and stays open."""


def _safe_file_name(message_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@+-]", "_", message_id.strip("<>")).lstrip(".") or "message"


def _write_atomically(path: Path, data: bytes) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".eml")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def _smtp_from_url(url: str) -> Transport:
    # Imported here so that smtp.py can import SendResult from this module.
    from nurture.delivery.smtp import SMTPTransport

    return SMTPTransport.from_url(url)


register_transport("smtp", _smtp_from_url)
register_transport("smtps", _smtp_from_url)
register_transport("file", FileTransport.from_url)
register_transport("console", ConsoleTransport.from_url)
