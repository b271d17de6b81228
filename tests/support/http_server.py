"""A real uvicorn server for tests: an ASGI app served on 127.0.0.1 and a free port, in a background thread.

    with HttpServer(app) as server:
        httpx.get(server.url + "/healthz")

Start-up waits (with a deadline) until the server accepts requests; stopping asks uvicorn to exit, waits for the
thread and fails loudly if it does not end.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class HttpServer:
    """Serve ``app`` with uvicorn in a thread; use as a context manager or call :meth:`start` / :meth:`stop`."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int | None = None, startup_timeout: float = 10.0,
                 **config: Any) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.startup_timeout = startup_timeout
        options: dict[str, Any] = dict(host=host, port=self.port, log_level="warning", access_log=False,
                                       lifespan="off", loop="asyncio")
        options.update(config)
        self.server = uvicorn.Server(uvicorn.Config(app, **options))
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        try:
            self.server.run()
        except BaseException as exc:  # noqa: BLE001 - reported by start() instead of dying silently in the thread
            self._error = exc

    def start(self) -> HttpServer:
        """Start serving; return once the server accepts connections (or raise after ``startup_timeout``)."""
        # uvicorn installs signal handlers only in the main thread; in ours it must not try.
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._run, name=f"uvicorn-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self.server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"uvicorn did not start on {self.url}: {self._error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"uvicorn did not start on {self.url} within {self.startup_timeout}s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit and wait for its thread."""
        if self._thread is None:
            return
        self.server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.server.force_exit = True
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"uvicorn on {self.url} did not stop within {2 * timeout}s")
        self._thread = None

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
