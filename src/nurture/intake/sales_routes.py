"""Sales' verdict over HTTP: ``POST /v1/sales/feedback`` (API key) and the signed accept/reject links (``/s/{token}``).

The API takes ``{"email", "verdict": "accept"|"reject", "reason"?, "note"?}`` and answers the decision's result (200;
``already: true`` for a repeat of the same decision). An unknown lead is 404; a lead that is not an SQL waiting for a
decision, or a promotion decided otherwise, is 409; a bad verdict, an unknown or missing reason is 422 naming the
valid ones. Nothing is written unless the whole decision is.

A link's token names the lead, the promotion (the stage change that made it an SQL) and the verdict, and is the only
authority the page needs. ``GET /s/{token}`` shows who the lead is, why it was promoted and its score, with a form:
link scanners in mail and chat tools prefetch GETs, so only the form's POST decides. A token that does not verify is
404 and changes nothing; a promotion decided already shows that decision (200) and changes nothing.
"""

from __future__ import annotations

import html
import logging
from typing import Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from nurture.application.sales_feedback import (
    MAX_NOTE,
    AlreadyDecided,
    FeedbackConflict,
    FeedbackResult,
    PromotionStatus,
    apply_feedback,
    promotion_status,
)
from nurture.errors import InvalidInput, LeadNotFound
from nurture.intake.auth import require_api_key
from nurture.intake.context import ApiError, IntakeContext, context, read_body, read_model
from nurture.intake.schemas import error_responses
from nurture.intake.tracking import NO_CACHE
from nurture.rendering.sales_links import SalesLinkTarget, decode_sales_link
from nurture.signing import BadSignature

log = logging.getLogger("nurture.intake")

router = APIRouter(tags=["sales"])


class FeedbackBody(BaseModel):
    """Sales' verdict on an SQL."""

    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=254, description="The lead's email.")
    verdict: Literal["accept", "reject"]
    reason: str | None = Field(None, max_length=64, description="A reject reason code from sales.yaml (reject only).")
    note: str | None = Field(None, max_length=MAX_NOTE, description="Anything the rep wants to add (history, CRM).")


def _decide(ctx: IntakeContext, body: FeedbackBody) -> FeedbackResult:
    result = apply_feedback(
        ctx.engine, ctx.catalog, ctx.rules, ctx.sales, email=body.email, verdict=body.verdict, reason=body.reason,
        note=body.note, actor="api", now=ctx.clock(), notify_crm=ctx.handoff.webhook,
    )
    if not result.already:
        ctx.wake()  # a recycle campaign's first step, and the CRM's notification, are due now
    return result


@router.post(
    "/v1/sales/feedback", dependencies=[Depends(require_api_key)],
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": FeedbackBody.model_json_schema()}}}},
    responses=error_responses(
        400, 401, 404, 409, 413, 422, 503, e404="No lead with that email.",
        e409="The lead is not an SQL waiting for a decision, or was decided otherwise.",
        e413="The body is larger than 64 KiB.", e422="A bad verdict, or a reject reason that is missing or unknown."),
)
async def post_feedback(request: Request) -> JSONResponse:
    """Accept an SQL (it becomes an opportunity) or reject it with a reason (recycled or disqualified, as configured).

    Repeating the same decision answers the first result with ``already: true`` and changes nothing.
    """
    body = await read_model(request, FeedbackBody, limit=64 * 1024,
                            expected='send a JSON object: {"email": ..., "verdict": "accept" or "reject", "reason": ...}')
    try:
        result = await run_in_threadpool(_decide, context(request), body)
    except FeedbackConflict as exc:
        raise ApiError(409, str(exc)) from None
    return JSONResponse(result.to_json())


# --- the signed links ----------------------------------------------------------------------------------------------


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;color:#222}}
dt{{color:#667;font-size:.85rem;margin-top:.6rem}} dd{{margin:0}} label{{display:block;margin-top:1rem}}
select,textarea{{font:inherit;width:100%;box-sizing:border-box}} textarea{{min-height:5rem}}
button{{font-size:1rem;padding:.6rem 1.2rem;margin-top:1rem;cursor:pointer}} .error{{color:#a40000}}</style></head>
<body><h1>{html.escape(title)}</h1>{body}</body></html>"""
    return HTMLResponse(document, status_code=status, headers={**NO_CACHE, "Referrer-Policy": "no-referrer"})


def _invalid_link() -> HTMLResponse:
    return _page("This link is not valid", "<p>Please use the accept or reject link of a recent handoff.</p>", 404)


def _who(status: PromotionStatus) -> str:
    lead = status.lead
    where = ", ".join(part for part in (lead.title, lead.company) if part)
    return f"<strong>{html.escape(status.name)}</strong>" + (f", {html.escape(where)}" if where else "")


def _points(value: float) -> str:
    return f"{value:g}"


def _brief(status: PromotionStatus) -> str:
    """Who the lead is, why it was promoted, and its score (every value escaped)."""
    lead, promotion, breakdown = status.lead, status.promotion, status.breakdown
    return (
        f"<dl><dt>Lead</dt><dd>{_who(status)}<br>{html.escape(lead.email)}</dd>"
        f"<dt>Why it became an SQL</dt><dd>{html.escape(promotion.reason or 'no reason recorded')}"
        f" ({promotion.at:%Y-%m-%d %H:%M} UTC)</dd>"
        f"<dt>Score</dt><dd>{_points(breakdown.total)} (behaviour {_points(breakdown.behaviour)}, "
        f"fit {_points(breakdown.fit)})</dd></dl>"
    )


def _decided_page(status: PromotionStatus, decision: FeedbackResult) -> HTMLResponse:
    when = f"{decision.decided_at:%Y-%m-%d %H:%M} UTC"
    note = f"<p>Note: {html.escape(decision.note)}</p>" if decision.note else ""
    return _page("Already decided", f"<p>{_who(status)} was {html.escape(decision.describe())} on {when}; "
                 f"nothing changed.</p>{note}")


def _not_waiting_page(status: PromotionStatus, message: str | None = None) -> HTMLResponse:
    why = message or (
        "it was promoted again since this link was sent: use the link of the latest handoff" if not status.latest
        else f"it is at stage {status.lead.stage} now")
    return _page("No longer waiting for a decision", f"<p>{_who(status)}: {html.escape(why)}.</p>", 409)


def _form(ctx: IntakeContext, status: PromotionStatus, verdict: str, error: str | None = None) -> str:
    problem = f'<p class="error">{html.escape(error)}</p>' if error else ""
    note = (f'<label>Note (optional)<textarea name="note" maxlength="{MAX_NOTE}"></textarea></label>')
    if verdict == "accept":
        return (f'{problem}<form method="post">{note}'
                '<button type="submit">Accept: make it an opportunity</button></form>')
    options = "".join(
        f'<option value="{html.escape(code)}">{html.escape(reason.label or code)}</option>'
        for code, reason in ctx.sales.feedback.reject_reasons.items()
    )
    return (f'{problem}<form method="post"><label>Why?<select name="reason" required>'
            f'<option value="" selected disabled>Choose a reason</option>{options}</select></label>{note}'
            '<button type="submit">Reject</button></form>')


def _decision_form(ctx: IntakeContext, status: PromotionStatus, target: SalesLinkTarget, error: str | None = None,
                   code: int = 200) -> HTMLResponse:
    title = "Accept this lead?" if target.verdict == "accept" else "Reject this lead?"
    return _page(title, _brief(status) + _form(ctx, status, target.verdict, error), code)


def _load(ctx: IntakeContext, token: str) -> tuple[SalesLinkTarget, PromotionStatus] | None:
    try:
        target = decode_sales_link(ctx.signer, token)
    except BadSignature:
        return None
    status = promotion_status(ctx.engine, ctx.rules, target.lead_id, target.promotion_id, ctx.clock())
    return (target, status) if status is not None else None


@router.get("/s/{token}", response_class=HTMLResponse, include_in_schema=False)
async def sales_link_page(token: str, request: Request) -> HTMLResponse:
    """The lead's brief and a form to confirm the link's verdict; changes nothing (link scanners fetch GETs)."""
    ctx = context(request)
    loaded = await run_in_threadpool(_load, ctx, token)
    if loaded is None:
        return _invalid_link()
    target, status = loaded
    if status.decision is not None:
        return _decided_page(status, status.decision)
    if not status.waiting:
        return _not_waiting_page(status)
    return _decision_form(ctx, status, target)


def _form_values(body: bytes) -> dict[str, str]:
    parsed = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {key: values[0] for key, values in parsed.items() if values}


def _outcome_page(status: PromotionStatus, result: FeedbackResult) -> HTMLResponse:
    who = _who(status)
    if result.verdict == "accept":
        return _page("Accepted", f"<p>{who} is now an opportunity. Thank you!</p>")
    if result.stage == "disqualified":
        text = "is disqualified: no more nurture emails, and never promoted again"
    else:
        text = "goes back to marketing (recycled)"
        if result.recycle_at is not None and result.recycle_at > result.decided_at:
            text += f"; recycle campaigns pick it up from {result.recycle_at:%Y-%m-%d}"
    return _page("Rejected", f"<p>{who} {text}.</p><p>Reason: {html.escape(result.label or result.reason or '')}</p>")


@router.post("/s/{token}", response_class=HTMLResponse, include_in_schema=False)
async def sales_link_decide(token: str, request: Request) -> HTMLResponse:
    """Record the link's verdict (with the form's reason and note) and show what it did."""
    ctx = context(request)
    values = _form_values(await read_body(request, limit=16 * 1024))
    loaded = await run_in_threadpool(_load, ctx, token)
    if loaded is None:
        return _invalid_link()
    target, status = loaded
    if status.decision is not None:
        return _decided_page(status, status.decision)
    reason = values.get("reason") if target.verdict == "reject" else None
    try:
        result = await run_in_threadpool(
            apply_feedback, ctx.engine, ctx.catalog, ctx.rules, ctx.sales, lead_id=target.lead_id,
            promotion_id=target.promotion_id, verdict=target.verdict, reason=reason, note=values.get("note"),
            actor="link", now=ctx.clock(), notify_crm=ctx.handoff.webhook,
        )
    except LeadNotFound:
        return _invalid_link()
    except AlreadyDecided:  # decided by someone else a moment ago
        fresh = await run_in_threadpool(_load, ctx, token)
        if fresh is None or fresh[1].decision is None:
            return _invalid_link()
        return _decided_page(fresh[1], fresh[1].decision)
    except FeedbackConflict as exc:
        return _not_waiting_page(status, str(exc).removeprefix("this lead is no longer waiting for a decision: "))
    except InvalidInput as exc:
        return _decision_form(ctx, status, target, str(exc), 422)
    except Exception as exc:  # noqa: BLE001 - the rep must learn that it did not work, and nothing about why
        log.error("sales link decision failed: %s", type(exc).__name__)
        return _page("Please try again", "<p>We could not record your decision just now. Please try again.</p>", 503)
    if result.already:
        return _decided_page(status, result)
    ctx.wake()
    return _outcome_page(status, result)
