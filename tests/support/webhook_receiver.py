"""A real webhook receiver for tests: a tiny ASGI app served by uvicorn on 127.0.0.1 and a free port, in a thread.

It records every request (method, path, headers, raw body), and can be told to answer an error status for the next
N requests, to hold the next N requests without answering (until released, so a client times out), or to go down
(stop listening: connections are refused) and come back up on the same port.

    with WebhookReceiver() as receiver:
        receiver.fail_next(3, status=500)
        ...
        requests = receiver.wait_for(4, timeout=5)
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import uvicorn


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as it arrived, and the status the receiver answered."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    answered: int | None  # None when the request was held and never answered


@dataclass
class _Rule:
    status: int
    remaining: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


class WebhookReceiver:
    """uvicorn serving the recording app; use as a context manager or call :meth:`up` / :meth:`down`."""

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None, startup_timeout: float = 10.0) -> None:
        self.host = host
        self.port = port if port is not None else _free_port(host)
        self.startup_timeout = startup_timeout
        self._lock = threading.Lock()
        self._requests: list[ReceivedRequest] = []
        self._rules: list[_Rule] = []
        self._hold = 0
        self._released = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """``http://host:port/hook``: where tests point their webhooks."""
        return f"http://{self.host}:{self.port}/hook"

    @property
    def requests(self) -> list[ReceivedRequest]:
        """A copy of the requests received so far."""
        with self._lock:
            return list(self._requests)

    # -- behaviour ------------------------------------------------------------------------------------------------

    def fail_next(self, count: int, *, status: int = 500, headers: dict[str, str] | None = None,
                  body: bytes = b"") -> None:
        """Answer ``status`` (with ``headers`` and ``body``) to the next ``count`` requests."""
        with self._lock:
            self._rules.append(_Rule(status, count, tuple((headers or {}).items()), body))

    def hold_next(self, count: int) -> None:
        """Read the next ``count`` requests but answer none of them until :meth:`release` (or :meth:`down`)."""
        with self._lock:
            self._hold += count
            self._released.clear()

    def reset(self) -> WebhookReceiver:
        """Forget what was received and every instruction, and make sure the receiver is up (between tests)."""
        self.release()
        with self._lock:
            self._requests.clear()
            self._rules.clear()
            self._hold = 0
        return self.up()

    def release(self) -> None:
        """Let held requests go (their clients have usually given up by then)."""
        self._released.set()

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def up(self) -> WebhookReceiver:
        """Listen (again) on ``host:port``; return once the server accepts connections."""
        if self._thread is not None:
            return self
        config = uvicorn.Config(self._app, host=self.host, port=self.port, log_level="warning", access_log=False,
                                lifespan="off", loop="asyncio", interface="asgi3",
                                timeout_graceful_shutdown=1)
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main thread
        self._error = None
        thread = threading.Thread(target=self._serve, args=(server,), name=f"webhook-receiver-{self.port}", daemon=True)
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not server.started:
            if self._error is not None or not thread.is_alive():
                self._server = self._thread = None
                raise RuntimeError(f"webhook receiver did not start on port {self.port}: {self._error!r}")
            if time.monotonic() > deadline:
                self.down()
                raise TimeoutError(f"webhook receiver did not start on port {self.port} within {self.startup_timeout}s")
            time.sleep(0.005)
        return self

    def down(self, timeout: float = 10.0) -> None:
        """Stop listening (new connections are refused); :meth:`up` brings the receiver back on the same port."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._released.set()  # held requests must not keep the server alive
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
            if thread.is_alive():
                raise RuntimeError(f"webhook receiver on port {self.port} did not stop within {2 * timeout}s")
        self._server = self._thread = None

    def __enter__(self) -> WebhookReceiver:
        return self.up()

    def __exit__(self, *exc_info: object) -> None:
        self.down()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedRequest]:
        """The received requests once there are at least ``count``; AssertionError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            requests = self.requests
            if len(requests) >= count:
                return requests
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"webhook receiver got {len(requests)} requests, expected {count} within {timeout}s"
                )
            time.sleep(0.005)

    # -- the server thread ----------------------------------------------------------------------------------------

    def _serve(self, server: uvicorn.Server) -> None:
        try:
            server.run()
        except BaseException as exc:  # noqa: BLE001 - reported by up() instead of dying silently in the thread
            self._error = exc

    def _next_answer(self) -> tuple[bool, int, tuple[tuple[str, str], ...], bytes]:
        with self._lock:
            if self._hold > 0:
                self._hold -= 1
                return True, 0, (), b""
            if self._rules:
                rule = self._rules[0]
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._rules.pop(0)
                return False, rule.status, rule.headers, rule.body
        return False, 200, (), b"ok"

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        held, status, extra_headers, body = self._next_answer()
        request = dict(method=scope["method"], path=scope["path"], headers=headers, body=b"".join(chunks))
        if held:
            with self._lock:
                self._requests.append(ReceivedRequest(**request, answered=None))
            await asyncio.get_running_loop().run_in_executor(None, self._released.wait, 10.0)
            return  # never answered: the connection is closed when the server stops
        with self._lock:
            self._requests.append(ReceivedRequest(**request, answered=status))
        response_headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
        response_headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra_headers]
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
