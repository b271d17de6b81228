"""What every intake route shares: the process's parts (engine, catalog, rules, signer, clock), the JSON error type,
bounded body reading, and recording events with the counters ``/metrics`` reports."""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import re
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from sqlalchemy.engine import Connection, Engine

from nurture.application.event_input import RECORDED, EventIn, EventResult
from nurture.application.record_events import record_events
from nurture.clock import SYSTEM_CLOCK, Clock
from nurture.definitions.loader import Catalog
from nurture.definitions.sales import SalesRules
from nurture.definitions.scoring import ScoringRules
from nurture.handoff import Handoff
from nurture.intake.schemas import describe_errors
from nurture.settings import Settings
from nurture.signing import Signer
from nurture.storage.dialect import WriteLockBusy, no_wait, single_writer

log = logging.getLogger("nurture.intake")
M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")

INLINE_EVENTS = 100
"""The largest request (in events) :meth:`IntakeContext.record_async` records on the event loop on SQLite: about 10 ms
of the loop's time (by ``bench/intake.py``); larger batches go to the writer thread."""

MAX_BODY_BYTES = 8 * 1024 * 1024
"""The largest request body the JSON endpoints read (a full batch of 1,000 events fits many times over)."""


class ApiError(Exception):
    """An HTTP error answered as ``{"error": message}`` with ``status`` (and extra headers)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class Writer:
    """Threads that record events for the event loop, one job after another per thread.

    Database work that may wait (PostgreSQL's round trips, SQLite's write lock held by another connection) must leave
    the event loop, but a hop through the general threadpool costs a few hundred microseconds, as much as recording a
    single event: here a job is handed over through a queue, and the result comes back with one
    ``call_soon_threadsafe``. Under load the threads take the next job without sleeping. SQLite has one writer at a
    time, so one thread there; PostgreSQL gets a few. Idle threads end after a while and are started again on demand.
    """

    IDLE_SECONDS = 30.0

    def __init__(self, threads: int) -> None:
        self._size = threads
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._alive = 0
        self._lock = threading.Lock()

    async def run(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """``fn(*args, **kwargs)`` on a writer thread; its result, or its exception raised here."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.put((loop, future, fn, args, kwargs))
        with self._lock:
            if self._alive < self._size:
                self._alive += 1
                try:
                    threading.Thread(target=self._work, name="nurture-intake-writer", daemon=True).start()
                except BaseException:
                    self._alive -= 1  # no thread behind the count: the next request tries again
                    raise
        return await future

    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self.IDLE_SECONDS)
            except queue.Empty:
                with self._lock:  # a job queued before this check is seen; one queued after starts a thread
                    if self._queue.empty():
                        self._alive -= 1
                        return
                continue
            loop, future, fn, args, kwargs = item
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001  handed to the awaiting request, like the threadpool does
                _settle_soon(loop, future, None, exc)
            else:
                _settle_soon(loop, future, result, None)


def _settle_soon(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any,
                 exc: BaseException | None) -> None:
    try:
        loop.call_soon_threadsafe(_settle, future, result, exc)
    except RuntimeError:  # the loop closed meanwhile: nobody waits for the answer
        pass


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.cancelled():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


@dataclass
class IntakeContext:
    """The parts the HTTP intake works with, built once by :func:`nurture.intake.app.create_app`."""

    settings: Settings
    engine: Engine
    catalog: Catalog
    rules: ScoringRules
    signer: Signer
    clock: Clock = SYSTEM_CLOCK  # read once per request (tests pass their own)
    on_event: Callable[[], None] | None = None
    sales: SalesRules = field(default_factory=SalesRules)
    events_total: Counter[tuple[str, str]] = field(default_factory=Counter)  # (source, status) -> count
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sqlite_writes: threading.Lock = field(default_factory=threading.Lock)

    @cached_property
    def _single_writer(self) -> bool:
        """Whether the database writes one transaction at a time (SQLite): the process's writers then take turns, and
        the event loop records small requests itself when the write lock is free."""
        return single_writer(self.engine)

    @cached_property
    def writer(self) -> Writer:
        """The threads that record events for the event loop (:meth:`record_async`)."""
        return Writer(1 if self._single_writer else 4)

    @cached_property
    def _no_wait(self) -> Connection | None:
        """On SQLite, the event loop's own connection, whose transactions take the write lock only when it is free at
        once (kept open: a pool checkout and check-in per request cost ~30 µs). Used under ``_sqlite_writes`` only."""
        return no_wait(self.engine.connect()) if self._single_writer else None

    async def record_async(self, events: Sequence[EventIn], *, actor: str, source: str) -> list[EventResult]:
        """:meth:`record`, for a coroutine.

        On SQLite, a request of up to :data:`INLINE_EVENTS` events is recorded right here on the event loop when no
        other connection holds the write lock, as a plain insert would be: handing it to a writer thread costs more
        than recording one event (the two threads take turns at the interpreter lock at every SQLite call; measured
        under load, a single-event request cost about twice the CPU through the writer thread). Such a transaction
        holds the loop for at most ~10 ms, and it does not wait for another writer: when the lock is taken (the
        worker dispatching, another process writing), the events go to the writer thread, which waits for it while
        the loop serves other requests. So do larger batches, and on PostgreSQL every request (round trips)."""
        connection = self._no_wait
        if connection is not None and len(events) <= INLINE_EVENTS and self._sqlite_writes.acquire(blocking=False):
            try:
                results = self._record(events, actor, connection)
            except WriteLockBusy:  # nothing was written: the writer thread waits for the lock
                results = None
            finally:
                self._sqlite_writes.release()
            if results is not None:
                return self._counted(results, source)
        return await self.writer.run(self.record, events, actor=actor, source=source)

    def record(self, events: Sequence[EventIn], *, actor: str, source: str) -> list[EventResult]:
        """Record events (one transaction), count them for ``/metrics``, and wake the worker if any were new.

        On SQLite, the process's writers take turns here: a transaction waiting for SQLite's write lock polls for it
        with growing sleeps, which leaves the database idle between two writers of one process."""
        if self._single_writer:
            with self._sqlite_writes:
                results = self._record(events, actor, self.engine)
        else:
            results = self._record(events, actor, self.engine)
        return self._counted(results, source)

    def close(self) -> None:
        """Close the event loop's connection, if it was opened (before the engine is disposed: disposing leaves
        connections that are checked out alone, and their files open)."""
        connection = self.__dict__.pop("_no_wait", None)
        if connection is not None:
            connection.close()

    def _counted(self, results: list[EventResult], source: str) -> list[EventResult]:
        recorded = sum(1 for result in results if result.status == RECORDED)
        with self._lock:
            self.events_total[(source, RECORDED)] += recorded
            self.events_total[(source, "duplicate")] += len(results) - recorded
        if recorded:
            self.wake()
        return results

    def _record(self, events: Sequence[EventIn], actor: str, engine: Engine | Connection) -> list[EventResult]:
        return record_events(engine, self.catalog, self.rules, events, now=self.clock(), actor=actor,
                             sales=self.sales, handoff=self.handoff)

    @cached_property
    def handoff(self) -> Handoff:
        """The signed accept/reject links (``NURTURE_BASE_URL``) of promotions, and whether a sales webhook is set."""
        return Handoff.from_settings(self.settings, self.signer)

    def wake(self) -> None:
        """Tell the worker there is new work (the ``on_event`` callback), if one was given."""
        if self.on_event is None:
            return
        try:
            self.on_event()
        except Exception as exc:  # noqa: BLE001  waking the worker early is an optimisation: its next poll finds the work too
            log.warning("on_event callback failed: %s", type(exc).__name__)

    def event_counts(self) -> dict[tuple[str, str], int]:
        """Events received since start, by (source, status)."""
        with self._lock:
            return dict(self.events_total)


def context(request: Request) -> IntakeContext:
    """The intake context of the app serving ``request``."""
    return request.app.state.intake


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refused with 413 beyond ``limit`` bytes (checked while reading, not only from the header)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abAB]|\\u[dD][c-fC-F]")


async def read_json(request: Request, limit: int = MAX_BODY_BYTES) -> Any:
    """The request body parsed as JSON; 400 with a clear message when it is empty or not JSON."""
    return parse_json(await read_body(request, limit))


def parse_json(body: bytes) -> Any:
    """A request body read by :func:`read_body`, parsed as :func:`read_json` parses it."""
    if not body.strip():
        raise ApiError(400, "the request body is empty: send a JSON document")
    try:
        payload = json.loads(body)
        if _SURROGATE_ESCAPE.search(body):
            # "\ud800" is valid JSON but not text: an unpaired surrogate cannot be stored (UTF-8 refuses it)
            json.dumps(payload, ensure_ascii=False).encode("utf-8")
        return payload
    except UnicodeEncodeError:
        raise ApiError(400, "the request body holds an unpaired surrogate escape (\\ud800-\\udfff), which is not text") from None
    except RecursionError:
        raise ApiError(400, "the request body is nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise ApiError(400, f"the request body is not valid JSON{where}") from None


async def read_model(request: Request, model: type[M], *, limit: int, expected: str) -> M:
    """The body as a JSON object validated by ``model``; 422 with ``expected`` (or pydantic's errors) otherwise."""
    payload = await read_json(request, limit=limit)
    if not isinstance(payload, dict):
        raise ApiError(422, expected)
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise ApiError(422, describe_errors(exc)) from None
