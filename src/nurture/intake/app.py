"""The HTTP intake: events and leads in (Bearer ``NURTURE_API_KEY``), tracking links, provider webhooks, health.

Routes (OpenAPI at ``/docs``):

- ``POST /v1/events``: one event object or ``{"events": [...]}`` (at most 1,000), recorded all together or not at all
- ``POST /v1/leads``, ``GET /v1/leads/{email}``: upsert a lead; everything about one, with its score breakdown
- ``GET /t/o/{token}.gif``, ``GET /t/c/{token}``, ``GET|POST /u/{token}``: signed tracking and unsubscribe links
- ``POST /v1/webhooks/bounces``, ``POST /v1/webhooks/sendgrid``: bounces and complaints from the mail provider
- ``POST /v1/sales/feedback``, ``GET|POST /s/{token}``: sales accepts or rejects an SQL (API, signed links)
- ``GET /dashboard``: the funnel and campaign performance (HTTP Basic, the API key as password)
- ``GET /healthz``, ``GET /readyz``, ``GET /metrics``

Errors are JSON ``{"error": "..."}`` with a 4xx status; bad input never causes a 500 and never writes anything.
Logs name routes, event types and counts, never emails or tokens (uvicorn's access log, which prints full paths, is
replaced by one that prints the route template: serve with :func:`server_config`).
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from sqlalchemy import text
from sqlalchemy.engine import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nurture import __version__
from nurture.application.rescore import score_breakdown
from nurture.application.save_lead import save_lead
from nurture.clock import SYSTEM_CLOCK, Clock
from nurture.definitions.loader import Catalog
from nurture.definitions.sales import SalesRules
from nurture.definitions.scoring import ScoringRules
from nurture.errors import LeadNotFound, NurtureError, SchemaOutOfDate
from nurture.heap import settle_after_start_up
from nurture.intake import dashboard, providers, sales_routes, tracking
from nurture.intake.auth import KeyedRoute, security_scheme
from nurture.intake.context import ApiError, IntakeContext, context, read_model
from nurture.intake.events import EventsShortcut, answer_events, error, error_answer
from nurture.intake.schemas import (
    BounceNotice,
    EventBatch,
    EventBody,
    EventsResponse,
    LeadBody,
    SavedLeadBody,
    error_responses,
)
from nurture.settings import Settings
from nurture.signing import Signer
from nurture.storage.database import session, transaction
from nurture.storage.leads import lead_summary
from nurture.storage.lookups import status_counts
from nurture.storage.migrate import ensure_current

log = logging.getLogger("nurture.intake")

api = APIRouter(prefix="/v1", tags=["api"], route_class=KeyedRoute)
ops = APIRouter(tags=["operations"])

_EVENTS_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"oneOf": [
            {"$ref": "#/components/schemas/EventBody"}, {"$ref": "#/components/schemas/EventBatch"},
        ]}}},
    }
}


@api.post(
    "/events", status_code=202, response_model=EventsResponse, openapi_extra=_EVENTS_BODY,
    responses={200: {"description": "Every event was a duplicate: nothing changed.", "model": EventsResponse},
               **error_responses(400, 401, 413, 422, 503, e413="The body is larger than 8 MiB.")},
)
async def post_events(request: Request) -> Response:
    """Record engagement events: scoring, promotion, exits and waits follow in the same transaction.

    Answers 202 when something was recorded, 200 when every event was a duplicate of one recorded before (same id).
    """
    return await answer_events(request)  # EventsShortcut answers these requests before they reach FastAPI


@api.post(
    "/leads", response_model=SavedLeadBody, status_code=200,
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/LeadBody"}}}}},
    responses={201: {"description": "The lead was created.", "model": SavedLeadBody},
               **error_responses(400, 401, 413, 422, 503, e413="The body is larger than 256 KiB.")},
)
async def post_lead(request: Request) -> JSONResponse:
    """Create or update a lead by email; it is rescored and enrolled in every campaign it now matches.

    Answers 201 for a new lead, 200 for an update. A ``stage`` applies to a new lead and moves an existing one only
    forward (lead < mql < sql < opportunity < customer); recycled and disqualified are set by rules and sales only.
    A stage that does not apply is left out, the rest saved, and ``stage_not_applied`` says why.
    """
    body = await read_model(request, LeadBody, limit=256 * 1024,
                            expected="send a JSON object of lead fields, with at least email")
    ctx = context(request)
    saved = await run_in_threadpool(
        save_lead, ctx.engine, ctx.catalog, ctx.rules, body.model_dump(exclude_unset=True), now=ctx.clock(), actor="api",
        sales=ctx.sales, handoff=ctx.handoff,
    )
    if saved.enrolled or saved.stage_changed:  # a promotion queued its handoff: deliver it now
        ctx.wake()
    refusal = saved.stage_not_applied
    answer = {**saved.__dict__, "stage_not_applied": refusal.to_json() if refusal is not None else None}
    return JSONResponse(
        SavedLeadBody(**answer).model_dump(), status_code=201 if saved.created else 200,
        headers={"Location": f"/v1/leads/{quote(saved.email, safe='@')}"},
    )


@api.get("/leads/{email}", responses=error_responses(401, 404, 503, e404="No lead with that email."))
def get_lead(email: str, request: Request) -> dict[str, Any]:
    """Everything about one lead: fields, stage, score with its breakdown, enrollments, recent events, stage history."""
    ctx = context(request)
    if "\x00" in email:  # no email holds one, and PostgreSQL refuses it in a query
        raise LeadNotFound(f"no lead with email {email!r}")
    with session(ctx.engine, read_only=True) as orm_session:
        summary = lead_summary(orm_session, email)
    summary["score"] = score_breakdown(ctx.engine, ctx.rules, email, ctx.clock()).to_json()
    return summary


@ops.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive (no database access)."""
    return {"status": "ok"}


@ops.get("/readyz", responses={503: {"description": "The database is unreachable or its schema is not current."}})
def readyz(request: Request) -> JSONResponse:
    """Ready to serve: the database answers and its schema is the one this nurture needs."""
    engine = context(request).engine
    try:
        with transaction(engine, read_only=True) as conn:
            conn.execute(text("SELECT 1"))
        ensure_current(engine)
    except SchemaOutOfDate as exc:
        return JSONResponse({"status": "unavailable", "error": str(exc)}, status_code=503)
    except Exception as exc:  # noqa: BLE001 - any failure to reach the database means "not ready", with no details leaked
        log.warning("readiness check failed: %s", type(exc).__name__)
        return JSONResponse({"status": "unavailable", "error": "database unreachable"}, status_code=503)
    return JSONResponse({"status": "ready"})


@ops.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request) -> PlainTextResponse:
    """Prometheus text format: leads by stage, enrollments, deliveries and outbox rows by status, events recorded."""
    ctx = context(request)
    counts = status_counts(ctx.engine)
    return PlainTextResponse(render_metrics(counts, ctx.event_counts()), media_type="text/plain; version=0.0.4; charset=utf-8")


def _label(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_metrics(counts: dict[str, dict[str, int]], events: dict[tuple[str, str], int]) -> str:
    """The metrics as Prometheus text exposition format (version 0.0.4)."""
    lines: list[str] = []

    def gauge(name: str, help_text: str, label: str, values: dict[str, int]) -> None:
        lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} gauge"])
        for key in sorted(values):
            lines.append(f'{name}{{{label}="{_label(key)}"}} {values[key]}')

    gauge("nurture_leads", "Leads by lifecycle stage.", "stage", counts["leads"])
    gauge("nurture_leads_suppressed", "Leads nurture must not email, by why.", "reason", counts["suppressed"])
    gauge("nurture_enrollments", "Enrollments by status.", "status", counts["enrollments"])
    gauge("nurture_deliveries", "Deliveries by status.", "status", counts["deliveries"])
    lines.extend(["# HELP nurture_outbox_pending Outbox notifications waiting to be delivered.",
                  "# TYPE nurture_outbox_pending gauge", f"nurture_outbox_pending {counts['outbox'].get('pending', 0)}"])
    lines.extend(["# HELP nurture_events_total Engagement events received by this process since it started.",
                  "# TYPE nurture_events_total counter"])
    for (source, status), value in sorted(events.items()):
        lines.append(f'nurture_events_total{{source="{_label(source)}",status="{_label(status)}"}} {value}')
    return "\n".join(lines) + "\n"


# --- errors and request logging ------------------------------------------------------------------------------------


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    @app.exception_handler(NurtureError)
    async def _known_error(_request: Request, exc: ApiError | NurtureError) -> JSONResponse:
        return error_answer(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "error"
        headers = exc.headers
        if exc.status_code == 405:  # Starlette names the methods of the first route of the path only
            headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(app, request))}
        return error(exc.status_code, message.lower() if message == "Not Found" else message, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for problem in exc.errors():
            location = ".".join(str(part) for part in problem["loc"] if part not in ("body", "path", "query"))
            parts.append(f"{location}: {problem['msg']}" if location else problem["msg"])
        return error(422, "; ".join(parts) or "invalid request")


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route of the request's path answers (for a 405's ``Allow`` header)."""
    methods: set[str] = set()
    for route in app.router.routes:
        if isinstance(route, APIRoute) and route.path_regex.match(request.url.path):
            methods |= route.methods or set()
    return sorted(methods)


class RequestLog:
    """Logs each request as method, route template, status and time (never the path: it holds emails and tokens),
    and answers an unexpected exception with a JSON 500 whose log lines carry no exception message (messages of
    database errors quote the row's values)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_and_note(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception as exc:  # noqa: BLE001 - whatever the route raised is logged and answered with a 500
            log.error("unhandled %s in %s %s:\n%s", type(exc).__name__, scope["method"], _route(scope),
                      "".join(traceback.format_tb(exc.__traceback__)).rstrip())
            if not response_started:
                await error(500, "internal error")(scope, receive, send)
            status = 500
        log.info("%s %s %d %.1fms", scope["method"], _route(scope), status, (time.perf_counter() - started) * 1000)


def _route(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "(no route)"


# --- the app ---------------------------------------------------------------------------------------------------------


def create_app(
    settings: Settings,
    *,
    engine: Engine,
    catalog: Catalog,
    rules: ScoringRules,
    signer: Signer,
    on_event: Callable[[], None] | None = None,
    clock: Clock = SYSTEM_CLOCK,
    sales: SalesRules | None = None,
) -> FastAPI:
    """The intake app over an open database; ``on_event`` is called after new events are recorded (wake the worker).

    ``clock`` is read once per request (tests pass a fixed one).
    """
    app = FastAPI(
        title="nurture intake",
        version=__version__,
        description="Engagement events and leads in; signed tracking, click and unsubscribe links; provider webhooks.",
    )
    app.state.intake = IntakeContext(settings, engine, catalog, rules, signer, clock=clock, on_event=on_event,
                                     sales=sales or SalesRules())
    _install_error_handlers(app)
    events_route = next(route for route in api.routes if getattr(route, "path", None) == "/v1/events")
    app.add_middleware(EventsShortcut, route=events_route)  # inside RequestLog, which logs and guards it
    app.add_middleware(RequestLog)
    app.include_router(api)
    app.include_router(providers.router)
    app.include_router(tracking.router)
    app.include_router(sales_routes.router)
    app.include_router(ops)
    app.include_router(dashboard.router)
    _document_bodies(app)
    settle_after_start_up()  # the collector set for a service (nurture.heap): start-up frozen, batches walked less
    return app


def _document_bodies(app: FastAPI) -> None:
    """Add the request body models read by hand (to control errors and size) to the OpenAPI components, and the API
    key's security scheme that :class:`nurture.intake.auth.KeyedRoute` routes name."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (EventBody, EventBatch, LeadBody, BounceNotice):
                model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(model_schema.pop("$defs", {}))
                components[model.__name__] = model_schema
            schema["components"].setdefault("securitySchemes", {}).update(security_scheme())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def server_config(app: FastAPI, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """A uvicorn configuration for the intake: host and port from settings, uvicorn's access log off (it would log
    emails and tokens that sit in paths; :class:`RequestLog` logs route templates instead)."""
    options: dict[str, Any] = dict(host=settings.http_host, port=settings.http_port, access_log=False,
                                   log_level="info", proxy_headers=True, server_header=False)
    options.update(overrides)
    return uvicorn.Config(app, **options)
