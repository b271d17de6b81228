"""The signed links in nurture emails: the open pixel, click redirects and unsubscribe (no API key: the token is the
authority).

A token that does not verify (forged, altered, meant for another link) and a token whose delivery no longer exists
both answer 404 and record nothing. A click redirects only to the URL inside its signed token, so the endpoint is no
open redirect. Repeated opens and clicks are recorded (they count toward the daily caps of scoring), but a burst
(the same delivery, type and URL within 10 seconds, as mail scanners and double clicks produce) is recorded once.

Unsubscribing takes a POST: link scanners prefetch every GET in an email, so ``GET /u/{token}`` only shows a page with
a button, and ``POST /u/{token}`` (that button, or a mail client's RFC 8058 one-click POST with the body
``List-Unsubscribe=One-Click``) unsubscribes at once: the lead leaves every campaign and is never emailed again.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from nurture.application.event_input import EventIn
from nurture.core.facts import CLICK, OPEN, UNSUBSCRIBE
from nurture.intake.context import ApiError, IntakeContext, context, read_body
from nurture.intake.schemas import error_responses
from nurture.rendering.links import decode_click, decode_open, decode_unsubscribe
from nurture.signing import BadSignature, Signer
from nurture.storage.lookups import DeliveryTarget, delivery_target

log = logging.getLogger("nurture.intake")

router = APIRouter(tags=["tracking"])

BURST = timedelta(seconds=10)
"""Opens or clicks of one delivery (and URL) closer together than this are one."""
UNSUBSCRIBE_REPEAT = timedelta(hours=1)
"""A second unsubscribe POST of one delivery within this long (button and one-click, say) records nothing new."""

PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
"""A 1x1 transparent GIF."""

NO_CACHE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, private, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}

NOT_FOUND = "not found"


def _target(ctx: IntakeContext, decode: Callable[[Signer, str], str], token: str) -> DeliveryTarget:
    """The delivery a token names; 404 for a token that does not verify or a delivery that is gone."""
    try:
        ref = decode(ctx.signer, token)
    except BadSignature:
        raise ApiError(404, NOT_FOUND) from None
    target = delivery_target(ctx.engine, ref)
    if target is None:
        raise ApiError(404, NOT_FOUND)
    return target


def _track(ctx: IntakeContext, target: DeliveryTarget, event_type: str, properties: dict[str, str]) -> None:
    """Record an open or click; a failure is logged and swallowed (the reader still gets the image or the page)."""
    event = EventIn(
        email=target.email, type=event_type, occurred_at=ctx.clock(), properties=properties,
        campaign_id=target.campaign_id, step_key=target.step_key, delivery_id=target.delivery_id, dedupe_within=BURST,
    )
    try:
        ctx.record([event], actor="system", source="tracking")
    except Exception as exc:  # noqa: BLE001 - a tracking hit never fails the reader's request
        log.error("could not record %s: %s", event_type, type(exc).__name__)


def _resolve_open(ctx: IntakeContext, token: str) -> None:
    target = _target(ctx, decode_open, token)
    _track(ctx, target, OPEN, {})


def _resolve_click(ctx: IntakeContext, token: str) -> str:
    try:
        ref, url = decode_click(ctx.signer, token)
    except BadSignature:
        raise ApiError(404, NOT_FOUND) from None
    target = delivery_target(ctx.engine, ref)
    if target is None:
        raise ApiError(404, NOT_FOUND)
    _track(ctx, target, CLICK, {"url": url})
    return url


_INVALID = "The token does not verify, or its delivery no longer exists."
_PAGE = {"text/html": {"schema": {"type": "string"}}}


@router.get("/t/o/{token}.gif", response_class=Response, responses={
    200: {"content": {"image/gif": {"schema": {"type": "string", "format": "binary"}}}},
    **error_responses(404, e404=_INVALID)})
async def open_pixel(token: str, request: Request) -> Response:
    """Record that the email was opened; answer a 1x1 transparent GIF that is never cached."""
    await run_in_threadpool(_resolve_open, context(request), token)
    return Response(PIXEL, media_type="image/gif", headers=NO_CACHE)


@router.get("/t/c/{token}", response_class=RedirectResponse, status_code=302,
            responses=error_responses(404, e404=_INVALID))
async def click(token: str, request: Request) -> Response:
    """Record the click and redirect (302) to the URL signed into the link, and nowhere else."""
    url = await run_in_threadpool(_resolve_click, context(request), token)
    return RedirectResponse(url, status_code=302, headers={**NO_CACHE, "Referrer-Policy": "no-referrer"})


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#222}}
button{{font-size:1rem;padding:.6rem 1.2rem;cursor:pointer}}</style></head>
<body><h1>{html.escape(title)}</h1>{body}</body></html>"""
    return HTMLResponse(document, status_code=status, headers=NO_CACHE)


def _invalid_link() -> HTMLResponse:
    return _page("This link is not valid", "<p>Please use the unsubscribe link of a recent email from us.</p>", 404)


def mask_email(email: str) -> str:
    """``a***@example.com``: enough for the reader to recognise their address, not enough to read it off a screen."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


@router.get("/u/{token}", response_class=HTMLResponse,
            responses={404: {"description": f"An HTML page: {_INVALID}", "content": _PAGE}})
async def unsubscribe_page(token: str, request: Request) -> HTMLResponse:
    """Ask for confirmation (a button that POSTs); changes nothing, since link scanners fetch every GET."""
    ctx = context(request)
    try:
        target = await run_in_threadpool(_target, ctx, decode_unsubscribe, token)
    except ApiError:
        return _invalid_link()
    who = html.escape(mask_email(target.email))
    if target.unsubscribed:
        return _page("You are unsubscribed", f"<p>{who} gets no more emails from us.</p>")
    return _page(
        "Unsubscribe?",
        f"<p>Stop all marketing emails to {who}?</p>"
        '<form method="post"><input type="hidden" name="confirm" value="yes">'
        '<button type="submit">Unsubscribe</button></form>',
    )


def _unsubscribe(ctx: IntakeContext, token: str, one_click: bool) -> DeliveryTarget:
    target = _target(ctx, decode_unsubscribe, token)
    if target.unsubscribed:
        return target
    event = EventIn(
        email=target.email, type=UNSUBSCRIBE, occurred_at=ctx.clock(),
        properties={"method": "one-click" if one_click else "page"}, campaign_id=target.campaign_id,
        step_key=target.step_key, delivery_id=target.delivery_id, dedupe_within=UNSUBSCRIBE_REPEAT,
    )
    ctx.record([event], actor="system", source="unsubscribe")
    return target


@router.post("/u/{token}", response_class=HTMLResponse, responses={
    404: {"description": f"An HTML page: {_INVALID}", "content": _PAGE},
    **error_responses(413, e413="The body is larger than 16 KiB."),
    503: {"description": "An HTML page: the unsubscribe could not be recorded just now; try again.", "content": _PAGE}})
async def unsubscribe(token: str, request: Request) -> HTMLResponse:
    """Unsubscribe at once (the page's button, or an RFC 8058 one-click POST); safe to repeat."""
    body = await read_body(request, limit=16 * 1024)
    one_click = b"list-unsubscribe=one-click" in body.lower()
    try:
        target = await run_in_threadpool(_unsubscribe, context(request), token, one_click)
    except ApiError:
        return _invalid_link()
    except Exception as exc:  # noqa: BLE001 - the reader must learn that it did not work, and nothing about why
        log.error("unsubscribe failed: %s", type(exc).__name__)
        return _page("Please try again", "<p>We could not record your request just now. Please try again.</p>", 503)
    return _page("You are unsubscribed", f"<p>{html.escape(mask_email(target.email))} gets no more emails from us.</p>")
