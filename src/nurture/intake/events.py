"""``POST /v1/events``, the intake's busiest route: reading a body of events, recording them, answering.

Under load a request of one event costs the server little more than the HTTP machinery around it, so this route
takes the shortest way through it: :class:`EventsShortcut` answers ``POST /v1/events`` straight from the ASGI call,
past FastAPI's routing, dependency solving and exception middleware (about 60 µs a request, by ``bench/intake.py``),
with what the FastAPI route (:func:`nurture.intake.app.post_events`, which the OpenAPI document describes) would do:
the API key first (:func:`nurture.intake.auth.check_api_key`), then the body, the same answers and the same errors.
Other methods and paths go on to FastAPI.

An event object of the usual shape (an email, a type, maybe an id and properties, no time) is read by hand into an
:class:`~nurture.application.event_input.EventIn`, as the pydantic model would read it; any other object goes through
:class:`nurture.intake.schemas.EventBody`, so its value or its error message is pydantic's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from nurture.application.event_input import MAX_BATCH, MAX_ID_LENGTH, RECORDED, EventIn, InvalidEvents
from nurture.errors import InvalidInput, LeadNotFound, NurtureError, SchemaOutOfDate
from nurture.intake.auth import check_api_key
from nurture.intake.context import ApiError, context, read_json
from nurture.intake.schemas import EventBody, describe_errors

PATH = "/v1/events"

_PLAIN_KEYS = frozenset({"id", "email", "type", "occurred_at", "properties"})


def _plain_event(item: Any) -> EventIn | None:
    """The event of an object of the usual shape, exactly as :class:`EventBody` reads it; None for any other object
    (pydantic then reads it, or names its problems)."""
    if type(item) is not dict or not item.keys() <= _PLAIN_KEYS:
        return None
    email, kind, event_id = item.get("email"), item.get("type"), item.get("id")
    if type(email) is not str or type(kind) is not str or item.get("occurred_at") is not None:
        return None
    if event_id is not None and (type(event_id) is not str or len(event_id) > MAX_ID_LENGTH):
        return None
    properties = item.get("properties", _ABSENT)
    if properties is _ABSENT:
        properties = {}
    elif type(properties) is not dict:
        return None
    return EventIn(email=email, type=kind, properties=properties, id=event_id)


_ABSENT: Any = object()


def _event(item: Any) -> EventIn:
    """An event object read as :class:`EventBody` reads it; :class:`ValidationError` when it is not one."""
    event = _plain_event(item)
    return event if event is not None else EventBody.model_validate(item).to_event()


def parse_events(payload: Any) -> tuple[list[EventIn], bool]:
    """The events of a ``POST /v1/events`` body and whether it was a batch; :class:`ApiError` 422 when malformed."""
    if isinstance(payload, dict) and "events" in payload:
        items = payload["events"]
        if not isinstance(items, list) or not items:
            raise ApiError(422, "events must be a non-empty list of event objects")
        if len(items) > MAX_BATCH:
            raise ApiError(422, f"at most {MAX_BATCH} events per request, got {len(items)}: split the batch")
        if set(payload) != {"events"}:
            raise ApiError(422, f"unknown key(s) next to events: {', '.join(sorted(set(payload) - {'events'}))}")
        events = [event for item in items if (event := _plain_event(item)) is not None]
        if len(events) == len(items):
            return events, True
        problems: list[str] = []
        events = []
        for index, item in enumerate(items):
            try:
                events.append(_event(item))
            except ValidationError as exc:
                problems.append(describe_errors(exc, f"events[{index}]"))
        if problems:
            raise ApiError(422, "; ".join(problems[:20]))
        return events, True
    if isinstance(payload, dict):
        try:
            return [_event(payload)], False
        except ValidationError as exc:
            raise ApiError(422, describe_errors(exc)) from None
    raise ApiError(422, 'send one event object, or {"events": [...]} for a batch')


class _Answer(Response):
    """A JSON answer rendered by orjson (the results of a batch of 1,000 events in a fraction of what
    :func:`json.dumps` takes); its text is JSON's as :class:`JSONResponse` writes it, numbers in their shortest form."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def answer_events(request: Request) -> Response:
    """Record the events of a ``POST /v1/events`` request (its API key checked already): 202 when something was
    recorded, 200 when every event was a duplicate; :class:`ApiError` (or the recording's error) otherwise."""
    events, batch = parse_events(await read_json(request))
    try:
        results = await context(request).record_async(events, actor="api", source="api")
    except InvalidEvents as exc:
        messages = [f"events[{i}]: {m}" if batch else m for i, m in exc.problems]
        raise ApiError(422, "; ".join(messages[:20])) from None
    recorded = sum(1 for result in results if result.status == RECORDED)
    body = {"recorded": recorded, "duplicate": len(results) - recorded, "results": [r.to_json() for r in results]}
    return _Answer(body, status_code=202 if recorded else 200)


def error_answer(exc: ApiError | NurtureError) -> JSONResponse:
    """The JSON error an :class:`ApiError` or a :class:`NurtureError` is answered with (every route's handlers)."""
    if isinstance(exc, ApiError):
        return error(exc.status, exc.message, exc.headers)
    if isinstance(exc, LeadNotFound):
        return error(404, str(exc))
    if isinstance(exc, SchemaOutOfDate):
        return error(503, str(exc))
    return error(422 if isinstance(exc, InvalidInput) else 400, str(exc))


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """``{"error": message}`` with ``status`` (and these headers)."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class EventsShortcut:
    """Answers ``POST /v1/events`` itself (:func:`answer_events`, the API key checked first) and hands every other
    request to ``app``. It sits inside :class:`nurture.intake.app.RequestLog`, which logs it under the route's
    template and answers anything unexpected with the JSON 500."""

    def __init__(self, app: ASGIApp, route: Any = None) -> None:
        self.app = app
        self.route = route  # the app's route of POST /v1/events, which the request log names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or _route_path(scope) != PATH:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        scope["route"] = self.route
        try:
            check_api_key(request)
            response = await answer_events(request)
        except (ApiError, NurtureError) as exc:
            response = error_answer(exc)
        await response(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The request's path below the app's mount point (``root_path``), as Starlette's router matches it."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root):len(root) + 1] == "/":
        return path[len(root):]
    return path
