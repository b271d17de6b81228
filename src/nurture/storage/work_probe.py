"""The idle worker's look: whether the dispatcher or the outbox has anything to do, in one statement.

``nurture run`` asks this every ``NURTURE_POLL_INTERVAL`` and starts the dispatcher or the outbox only when it says
so. The statement is built once and runs on a connection the probe keeps (no pool check-out per look), in a read-only
transaction (a snapshot on SQLite: an idle worker never takes the write lock intake needs). Its conditions are the
claims' own (:func:`nurture.storage.schedule.enrollment_due`, :func:`~nurture.storage.schedule.delivery_due`,
:func:`nurture.storage.outbox.row_due`), so it finds exactly what a claim at the same time would take.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, exists, select
from sqlalchemy.engine import Connection, Engine

from nurture.storage import outbox, schedule
from nurture.storage.database import UTCDateTime
from nurture.storage.dialect import READ_ONLY


@dataclass(frozen=True)
class Waiting:
    """What a look found: work for the dispatcher (due enrollments, retries, expired leases), for the outbox."""

    dispatch: bool
    outbox: bool


class WorkProbe:
    """Looks for due work with one statement on a connection it keeps (thread-safe: one look at a time)."""

    def __init__(self, engine: Engine, campaign_ids: Iterable[str]) -> None:
        self._engine = engine.execution_options(**{READ_ONLY: True})
        now = bindparam("now", type_=UTCDateTime())
        campaigns = list(campaign_ids)
        self._statement = select(
            schedule.first_due(now, campaigns).scalar_subquery().is_not(None).label("enrollments"),
            exists().where(*schedule.delivery_due(now, campaigns)).label("deliveries"),
            exists().where(*outbox.row_due(now)).label("outbox"),
        )
        self._connection: Connection | None = None
        self._lock = threading.Lock()

    def look(self, now: datetime) -> Waiting:
        """What is due at ``now``. A failure closes the connection (the next look opens another) and raises."""
        with self._lock:
            if self._connection is None:
                self._connection = self._engine.connect()
            connection = self._connection
            try:
                with connection.begin():
                    row: Any = connection.execute(self._statement, {"now": now}).one()
            except Exception:
                self._close(discard=True)  # whatever broke, the next look starts on a fresh connection
                raise
        return Waiting(dispatch=bool(row.enrollments or row.deliveries), outbox=bool(row.outbox))

    def close(self) -> None:
        """Give the connection back."""
        with self._lock:
            self._close()

    def _close(self, *, discard: bool = False) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            if discard:
                connection.invalidate()  # not back into the pool: it may be broken
            connection.close()
        except Exception:  # noqa: BLE001 - a broken connection cannot be closed cleanly; it is dropped either way
            pass
