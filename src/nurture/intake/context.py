"""What every intake route shares: the process's parts (engine, catalog, rules, signer, clock), the JSON error type,
bounded body reading, and recording events with the counters ``/metrics`` reports."""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError
from sqlalchemy.engine import Connection, Engine

from nurture.application.event_input import RECORDED, EventIn, EventResult
from nurture.application.record_events import record_events
from nurture.application.record_groups import Outcome, record_together
from nurture.clock import SYSTEM_CLOCK, Clock
from nurture.definitions.loader import Catalog
from nurture.definitions.sales import SalesRules
from nurture.definitions.scoring import ScoringRules
from nurture.handoff import Handoff
from nurture.intake.group_commit import GroupWriter
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

GROUP_THREADS = 2
"""PostgreSQL: the threads that record requests in groups. Two: one gathers and records the next group while the
other's transaction waits for the database (more make groups smaller; by ``bench/intake.py``)."""

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
    time, so one thread there (PostgreSQL records through :class:`GroupWriter`). Idle threads end after a while and
    are started again on demand.
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
    _kept: list[Connection] = field(default_factory=list)  # the group writers' connections not in use (PostgreSQL)
    _closing: bool = False

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
    def group_writer(self) -> GroupWriter:
        """On PostgreSQL, the threads that record requests in groups for the event loop (:meth:`record_async`)."""
        return GroupWriter(GROUP_THREADS, self._record_group)

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
        if not self._single_writer:
            return self._counted(await self.group_writer.submit(events, actor), source)
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
        """Close the event loop's connection, if it was opened, and the group writers' kept connections (before the
        engine is disposed: disposing leaves connections that are checked out alone, and their files open)."""
        connection = self.__dict__.pop("_no_wait", None)
        if connection is not None:
            connection.close()
        with self._lock:
            self._closing = True
            kept, self._kept = self._kept, []
        for connection in kept:
            connection.close()

    def _counted(self, results: list[EventResult], source: str) -> list[EventResult]:
        recorded = sum(1 for result in results if result.status == RECORDED)
        with self._lock:
            self.events_total[(source, RECORDED)] += recorded
            self.events_total[(source, "duplicate")] += len(results) - recorded
        if recorded:
            self.wake()
        return results

    def _record_group(self, actor: str, requests: list[Sequence[EventIn]]) -> list[Outcome]:
        connection = self._group_connection()
        try:
            return record_together(connection, self.catalog, self.rules, requests, now=self.clock(), actor=actor,
                                   sales=self.sales, handoff=self.handoff)
        finally:
            with self._lock:
                keep = len(self._kept) < GROUP_THREADS and not self._closing
                if keep:
                    self._kept.append(connection)
            if not keep:
                connection.close()

    def _group_connection(self) -> Connection:
        """A connection kept for the group writers (opened when none is free): a group runs its transaction on it
        without the pool's checkout, check-in and ping of every checkout (a round trip per group). A connection the
        database dropped meanwhile fails its next transaction before anything is written, and is connected again by
        the one after: :func:`nurture.application.record_events.record_cleaned` runs the batch again."""
        with self._lock:
            if self._kept:
                return self._kept.pop()
        return self.engine.connect()

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


MAX_JSON_DEPTH = 64
"""How deeply a JSON body may nest arrays and objects (an event batch needs four levels, its properties a few more)."""

_INT64 = (-(2**63), 2**64 - 1)
"""The whole numbers a JSON body may hold: what the parser keeps exact (larger ones would silently become floats)."""
_FLOAT_FROM_BIG_INT = 2.0**63
_BOM = b"\xef\xbb\xbf"
"""The UTF-8 byte-order mark some clients write before a JSON body."""
_NUL_ESCAPE = b"\\u0000"


async def read_json(request: Request, limit: int = MAX_BODY_BYTES, *, allow_nul: bool = False) -> Any:
    """The request body parsed as JSON by :func:`parse_json`; 400 with a clear message when it is not acceptable."""
    return parse_json(await read_body(request, limit), allow_nul=allow_nul)


def parse_json(body: bytes, *, allow_nul: bool = False) -> Any:
    """A request body read by :func:`read_body`, parsed as strict JSON (RFC 8259, UTF-8) with limits, or
    :class:`ApiError` 400 naming what is wrong and where: not JSON, ``NaN``/``Infinity``, a number beyond a double's
    range or a whole number beyond 64 bits (it would lose digits), an unpaired surrogate escape (not text), nesting
    deeper than :data:`MAX_JSON_DEPTH`, and (unless ``allow_nul``) a NUL character (``\\u0000``) in any string.

    orjson parses (in C, refusing the first four itself); one pass over the parsed containers checks the depth and
    spots floats that may have been whole numbers; the exact checks run only when that pass or a byte scan asks. A
    UTF-8 byte-order mark before the document is skipped, as Python's json module does."""
    if body.startswith(_BOM):
        body = body[len(_BOM):]
    if not body.strip():
        raise ApiError(400, "the request body is empty: send a JSON document")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, _json_problem(body, exc)) from None
    if type(payload) is dict or type(payload) is list:
        if _scan(payload):  # a float as large as a 64-bit integer: was it written as a longer whole number?
            _check_integers(body)
        if not allow_nul and _NUL_ESCAPE in body and _holds_nul(payload):
            raise ApiError(400, "text in the request body cannot hold NUL characters (\\u0000)")
    return payload


def _scan(payload: dict[str, Any] | list[Any]) -> bool:
    """:class:`ApiError` when ``payload`` nests deeper than :data:`MAX_JSON_DEPTH`; whether it holds a float of a
    64-bit integer's size or more (orjson parses a longer whole number as a float)."""
    suspect = False
    stack: list[tuple[Any, int]] = [(payload, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        container, depth = pop()
        if depth > MAX_JSON_DEPTH:
            raise ApiError(400, f"the request body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep")
        for item in container.values() if type(container) is dict else container:
            kind = type(item)
            if kind is dict or kind is list:
                push((item, depth + 1))
            elif kind is float and (item >= _FLOAT_FROM_BIG_INT or item <= -_FLOAT_FROM_BIG_INT):
                suspect = True
    return suspect


def _check_integers(body: bytes) -> None:
    """:class:`ApiError` when the body writes a whole number outside :data:`_INT64` (parsed again, exactly)."""

    def integer(text: str) -> int:
        if len(text.lstrip("-")) > 20 or not _INT64[0] <= (number := int(text)) <= _INT64[1]:
            shown = text if len(text) <= 30 else f"{text[:12]}...{text[-6:]} ({len(text.lstrip('-'))} digits)"
            raise ApiError(400, f"the request body holds the whole number {shown}, beyond 64 bits: send it as a "
                                "string (or a float, if precision does not matter)")
        return number

    json.loads(body, parse_int=integer)


def _holds_nul(value: Any) -> bool:
    """Whether a parsed JSON value holds a NUL character in a string or a key (walked without recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is str:
            if "\x00" in item:
                return True
        elif type(item) is dict:
            stack.extend(item)
            stack.extend(item.values())
        elif type(item) is list:
            stack.extend(item)
    return False


def _json_problem(body: bytes, exc: orjson.JSONDecodeError) -> str:
    """What is wrong with a body orjson refused, in words (the error path only: it may parse the body again)."""
    where = f"line {exc.lineno}, column {exc.colno}"
    message = exc.msg
    if "UTF-8" in message:
        return f"the request body is not valid JSON: it is not UTF-8 text ({where})"
    if "surrogate" in message:
        return f"the request body holds an unpaired surrogate escape (\\ud800-\\udfff), which is not text ({where})"
    if "depth limit" in message:
        return f"the request body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep"
    if "infinity when parsed" in message:
        return f"the request body holds a number too large for a 64-bit float ({where})"
    if "unexpected character" in message or "digit after sign" in message:

        def constant(name: str) -> Any:
            raise ApiError(400, f"the request body holds {name}, which is not a JSON number ({where})")

        try:
            json.loads(body, parse_constant=constant)
        except ApiError as problem:
            return problem.message
        except (ValueError, RecursionError):  # any other way of not being JSON: orjson's words say it
            pass
    return f"the request body is not valid JSON ({where}: {message})"


async def read_model(request: Request, model: type[M], *, limit: int, expected: str) -> M:
    """The body (:func:`read_json`) as a JSON object validated by ``model``; 422 with ``expected`` (or pydantic's
    errors) otherwise."""
    payload = await read_json(request, limit=limit)
    if not isinstance(payload, dict):
        raise ApiError(422, expected)
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise ApiError(422, describe_errors(exc)) from None
