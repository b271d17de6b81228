"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, collecting what it receives.

It can refuse the next N RCPT or DATA commands with a chosen code, go away in the middle of a batch (drop every
connection and stop listening) and come back on the same port.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, Literal
from urllib.parse import quote

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the sink accepted: the envelope and the raw bytes as received (dot-unstuffed)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    queue_id: str
    peer: tuple[str, int]

    def parsed(self) -> EmailMessage:
        """The message parsed with the standard library's modern policy."""
        message = BytesParser(policy=policy.default).parsebytes(self.data)
        assert isinstance(message, EmailMessage)
        return message


@dataclass
class _Failure:
    stage: str
    code: int
    remaining: int
    recipient: str | None


class SmtpSink:
    """An aiosmtpd server in a thread; use as a context manager or call :meth:`start` / :meth:`stop`."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        auth: tuple[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
    ) -> None:
        """``auth`` requires AUTH with that login and password; ``tls`` offers STARTTLS (and requires it), or with
        ``implicit_tls`` speaks TLS from the first byte."""
        self.host = host
        self.port = port if port is not None else _free_port(host)
        self.auth = auth
        self.tls = tls
        self.implicit_tls = implicit_tls
        self._lock = threading.Lock()
        self._messages: list[ReceivedMessage] = []
        self._failures: list[_Failure] = []
        self._queue_ids = itertools.count(1)
        self._go_away_after: int | None = None
        self._gone = False
        self._sessions: list[SMTP] = []
        self._controller: _Controller | None = None
        self._lifecycle = threading.Lock()
        self._stopped = threading.Event()
        self._stopped.set()

    @property
    def url(self) -> str:
        """``smtp://host:port`` of this sink (with the credentials when it requires AUTH)."""
        credentials = f"{quote(self.auth[0], safe='')}:{quote(self.auth[1], safe='')}@" if self.auth else ""
        scheme = "smtps" if self.implicit_tls else "smtp"
        return f"{scheme}://{credentials}{self.host}:{self.port}"

    @property
    def messages(self) -> list[ReceivedMessage]:
        """A copy of the messages received so far."""
        with self._lock:
            return list(self._messages)

    def start(self) -> SmtpSink:
        """Listen (again) on ``host:port``."""
        options: dict[str, Any] = {}
        if self.auth is not None:
            # aiosmtpd only recognises STARTTLS as TLS, so an implicit-TLS sink must not ask for it again.
            require_tls = self.tls is not None and not self.implicit_tls
            options.update(authenticator=self._authenticate, auth_require_tls=require_tls, auth_required=True)
        if self.tls is not None and self.implicit_tls:
            options.update(ssl_context=self.tls)
        elif self.tls is not None:
            options.update(tls_context=self.tls, require_starttls=True)
        with self._lock:
            self._gone = False
            self._go_away_after = None
            self._sessions.clear()
        with self._lifecycle:
            controller = _Controller(self, _Handler(self), hostname=self.host, port=self.port, **options)
            controller.start()
            self._controller = controller
            self._stopped.clear()
        return self

    def stop(self) -> None:
        """Drop every open connection and stop listening; :meth:`start` brings the sink back on the same port."""
        with self._lifecycle:
            controller, self._controller = self._controller, None
            if controller is None:
                return
            with self._lock:
                self._gone = True
            future = asyncio.run_coroutine_threadsafe(self._hang_up_everyone(controller), controller.loop)
            future.result(timeout=5)
            controller.stop()
            self._stopped.set()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def fail_next(
        self, stage: Literal["RCPT", "DATA"], code: int, count: int = 1, *, recipient: str | None = None
    ) -> None:
        """Refuse the next ``count`` RCPT or DATA commands (only those for ``recipient`` when given) with ``code``."""
        with self._lock:
            self._failures.append(_Failure(stage, code, count, recipient))

    def go_away_after(self, accepted: int) -> None:
        """After ``accepted`` more messages, drop every connection and stop listening, as a crashing server does."""
        with self._lock:
            self._go_away_after = len(self._messages) + accepted

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """The received messages once there are at least ``count``; AssertionError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.messages
            if len(messages) >= count:
                return messages
            if time.monotonic() > deadline:
                raise AssertionError(f"SMTP sink received {len(messages)} messages, expected {count} within {timeout}s")
            time.sleep(0.01)

    def wait_until_stopped(self, timeout: float = 5.0) -> None:
        """Block until the sink stopped itself (after :meth:`go_away_after`); AssertionError after ``timeout``."""
        if not self._stopped.wait(timeout):
            raise AssertionError(f"SMTP sink still running after {timeout}s")

    # Called from the server's event-loop thread.

    async def _hang_up_everyone(self, controller: _Controller) -> None:
        assert controller.server is not None
        controller.server.close()
        # Connections accepted just before the close get their session on the next loop iterations.
        for _ in range(5):
            await asyncio.sleep(0)
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            if session.transport is not None:
                session.transport.abort()

    def _register(self, session: SMTP) -> None:
        with self._lock:
            self._sessions.append(session)

    def _take_failure(self, stage: str, recipient: str | None) -> int | None:
        with self._lock:
            for failure in self._failures:
                if failure.stage == stage and failure.recipient in (None, recipient):
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        self._failures.remove(failure)
                    return failure.code
        return None

    def _is_gone(self) -> bool:
        with self._lock:
            return self._gone

    def _accept(self, mail_from: str, rcpt_tos: list[str], data: bytes, peer: tuple[str, int]) -> str:
        with self._lock:
            queue_id = f"Q{next(self._queue_ids):06d}"
            self._messages.append(ReceivedMessage(mail_from, tuple(rcpt_tos), data, queue_id, peer))
            going_away = self._go_away_after is not None and len(self._messages) >= self._go_away_after
            if going_away:
                self._gone = True
                self._go_away_after = None
        if going_away:
            # stop() joins the event-loop thread, so it cannot run on it.
            threading.Thread(target=self.stop, daemon=True).start()
        return queue_id

    def _authenticate(self, server: SMTP, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        expected = LoginPassword(self.auth[0].encode(), self.auth[1].encode()) if self.auth else None
        return AuthResult(success=isinstance(auth_data, LoginPassword) and auth_data == expected, handled=False)


class _Handler:
    """aiosmtpd hooks; a hook that returns a status replaces the default handling of that command."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    def _hang_up(self, server: SMTP) -> str:
        server.transport.abort()
        return "421 4.3.2 Service shutting down"

    async def handle_MAIL(self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if self.sink._is_gone():
            return self._hang_up(server)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if self.sink._is_gone():
            return self._hang_up(server)
        code = self.sink._take_failure("RCPT", address)
        if code is not None:
            return f"{code} {'4.2.0 Try again later' if code < 500 else '5.1.1 Mailbox unavailable'}"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        if self.sink._is_gone():
            return self._hang_up(server)
        for recipient in envelope.rcpt_tos:
            code = self.sink._take_failure("DATA", recipient)
            if code is not None:
                return f"{code} {'4.3.0 Try again later' if code < 500 else '5.6.0 Message rejected'}"
        queue_id = self.sink._accept(
            envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content, tuple(session.peer)
        )
        return f"250 2.0.0 OK queued as {queue_id}"


class _Controller(Controller):
    """Remembers every session so that :meth:`SmtpSink.stop` can drop them."""

    def __init__(self, sink: SmtpSink, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._sink = sink

    def factory(self) -> SMTP:
        session = super().factory()
        self._sink._register(session)
        return session


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])

