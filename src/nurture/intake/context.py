"""What every intake route shares: the process's parts (engine, catalog, rules, signer, clock), the JSON error type,
bounded body reading, and recording events with the counters ``/metrics`` reports."""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timezone
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from sqlalchemy.engine import Engine

from nurture.definitions.loader import Catalog
from nurture.definitions.sales import SalesRules
from nurture.definitions.scoring import ScoringRules
from nurture.handoff import Handoff
from nurture.intake.schemas import describe_errors
from nurture.settings import Settings
from nurture.signing import Signer
from nurture.storage.intake import RECORDED, EventIn, EventResult, record_events

log = logging.getLogger("nurture.intake")
M = TypeVar("M", bound=BaseModel)

MAX_BODY_BYTES = 8 * 1024 * 1024
"""The largest request body the JSON endpoints read (a full batch of 1,000 events fits many times over)."""


def utcnow() -> datetime:
    """The wall clock in UTC (the default clock of the app; tests pass their own)."""
    return datetime.now(timezone.utc)


class ApiError(Exception):
    """An HTTP error answered as ``{"error": message}`` with ``status`` (and extra headers)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class IntakeContext:
    """The parts the HTTP intake works with, built once by :func:`nurture.intake.app.create_app`."""

    settings: Settings
    engine: Engine
    catalog: Catalog
    rules: ScoringRules
    signer: Signer
    clock: Callable[[], datetime] = utcnow
    on_event: Callable[[], None] | None = None
    sales: SalesRules = field(default_factory=SalesRules)
    events_total: Counter[tuple[str, str]] = field(default_factory=Counter)  # (source, status) -> count
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, events: Sequence[EventIn], *, actor: str, source: str) -> list[EventResult]:
        """Record events (one transaction), count them for ``/metrics``, and wake the worker if any were new."""
        results = record_events(self.engine, self.catalog, self.rules, events, now=self.clock(), actor=actor,
                                sales=self.sales, handoff=self.handoff)
        recorded = sum(1 for result in results if result.status == RECORDED)
        with self._lock:
            self.events_total[(source, RECORDED)] += recorded
            self.events_total[(source, "duplicate")] += len(results) - recorded
        if recorded:
            self.wake()
        return results

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
        except Exception as exc:  # waking the worker early is an optimisation: its next poll finds the work too
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


async def read_json(request: Request, limit: int = MAX_BODY_BYTES) -> Any:
    """The request body parsed as JSON; 400 with a clear message when it is empty or not JSON."""
    body = await read_body(request, limit)
    if not body.strip():
        raise ApiError(400, "the request body is empty: send a JSON document")
    try:
        return json.loads(body)
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
