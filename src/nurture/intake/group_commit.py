"""The intake's group commit on PostgreSQL: requests that queue up while the writer threads are busy are recorded
together, in one transaction, and each is answered after that transaction has committed.

On PostgreSQL a request's transaction costs round trips (BEGIN, the batch's statements, COMMIT) and an fsync whatever
its size: recorded one transaction per request, single-event requests spent most of their time there. A writer
thread here takes the first request waiting, and with it every request queued behind it (up to
:data:`nurture.application.event_input.MAX_BATCH` events, one actor), and records them with
:func:`nurture.application.record_groups.record_together`: one transaction when all goes well, each request its own
answer (its results, its 422, its error) whatever happens to the others. Nothing waits to fill a group: a request that
finds a thread idle is recorded at once, alone; groups form only under load, as large as the load makes them.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nurture.application.event_input import MAX_BATCH, EventIn, EventResult
from nurture.application.record_groups import Outcome


@dataclass
class _Request:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[EventResult]]
    events: Sequence[EventIn]
    actor: str


class GroupWriter:
    """Threads that record requests' events in groups for the event loop (:meth:`submit`).

    ``record(actor, requests)`` records a group and returns one outcome per request (results, or the exception that
    request raises). Idle threads end after a while and are started again on demand.
    """

    IDLE_SECONDS = 30.0

    def __init__(self, threads: int, record: Callable[[str, list[Sequence[EventIn]]], list[Outcome]],
                 max_events: int = MAX_BATCH) -> None:
        self._size = threads
        self._record = record
        self._max_events = max_events
        self._queue: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._alive = 0
        self._lock = threading.Lock()
        self.groups: deque[int] = deque(maxlen=1000)
        """How many requests each of the last 1,000 groups held (what tests and benchmarks read)."""

    async def submit(self, events: Sequence[EventIn], actor: str) -> list[EventResult]:
        """Record ``events`` (one request) with whatever else is queued; its results, or its exception raised here."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[EventResult]] = loop.create_future()
        self._queue.put(_Request(loop, future, events, actor))
        with self._lock:
            if self._alive < self._size:
                self._alive += 1
                try:
                    threading.Thread(target=self._work, name="nurture-intake-group", daemon=True).start()
                except BaseException:
                    self._alive -= 1  # no thread behind the count: the next request tries again
                    raise
        return await future

    def _work(self) -> None:
        carried: _Request | None = None  # taken from the queue but not for the last group: the next one's first
        while True:
            first = carried
            carried = None
            if first is None:
                try:
                    first = self._queue.get(timeout=self.IDLE_SECONDS)
                except queue.Empty:
                    with self._lock:  # a request queued before this check is seen; one queued after starts a thread
                        if self._queue.empty():
                            self._alive -= 1
                            return
                    continue
            group, size = [first], len(first.events)
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item.actor != first.actor or size + len(item.events) > self._max_events:
                    carried = item
                    break
                group.append(item)
                size += len(item.events)
            try:
                outcomes: list[Any] = self._record(first.actor, [request.events for request in group])
            except BaseException as exc:  # noqa: BLE001  handed to every request of the group
                outcomes = [exc] * len(group)
            self.groups.append(len(group))
            _settle_soon(group, outcomes)


def _settle_soon(group: list[_Request], outcomes: list[Any]) -> None:
    """Hand each request its outcome on its event loop: one call per loop for the whole group (each call wakes the
    loop, which then answers every request of the group in one pass)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
    for request, outcome in zip(group, outcomes, strict=True):
        settled = (request.future, None, outcome) if isinstance(outcome, BaseException) else (
            request.future, outcome, None)
        by_loop.setdefault(request.loop, []).append(settled)
    for loop, settlements in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_all, settlements)
        except RuntimeError:  # the loop closed meanwhile: nobody waits for the answers
            pass


def _settle_all(settlements: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, exc in settlements:
        _settle(future, result, exc)


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.cancelled():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
