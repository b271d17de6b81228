"""Bounces, spam complaints and unsubscribes reported by the mail provider: they suppress the lead at once; soft
bounces (temporary failures) do when ``policy.yaml``'s ``soft_bounces`` limit is reached (:mod:`nurture.core.suppression`).

Two formats:

- ``POST /v1/webhooks/bounces`` (Bearer ``NURTURE_API_KEY``): nurture's own, for any provider or relay script:
  ``{"type": "bounce"|"soft_bounce"|"spam_complaint", "email"?, "message_id"?, "reason"?, "occurred_at"?, "id"?}``
  or a list of them. The lead is found by email, or by the message's id (the Message-ID nurture sent, or the provider's id).
  A malformed notice rejects the request (422) and records nothing; a notice whose lead cannot be found is
  reported ``unmatched``.
- ``POST /v1/webhooks/sendgrid?token=<NURTURE_INBOUND_WEBHOOK_TOKEN>`` (or the token as the Basic auth password;
  without that setting, the API key): SendGrid's Event Webhook, a JSON array of events. ``bounce``, ``spamreport``,
  ``unsubscribe`` and ``group_unsubscribe`` suppress the lead; a ``bounce`` of type ``blocked`` (refused for now) is
  a soft bounce; ``dropped`` goes by its reason (:data:`SENDGRID_DROPS`). Every other event (delivered, open,
  click, ``deferred``: SendGrid is still trying, ...) is ignored, as are items without a usable email, so one odd
  item never makes SendGrid retry the whole batch. ``sg_event_id`` makes retries idempotent.

  With SendGrid's Signed Event Webhook turned on, set ``NURTURE_SENDGRID_VERIFICATION_KEY`` to the verification
  key SendGrid shows: every post must then carry SendGrid's valid ECDSA signature of its exact body (the token is
  not needed, nor taken in its place). Without that setting the token authenticates the post; a token of its own
  means a leaked webhook URL opens nothing else. Serve it over HTTPS only, as for the Bearer key.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from nurture.application.event_input import MAX_BATCH, MAX_ID_LENGTH, RECORDED, EventIn, InvalidEvents, clean_event
from nurture.core.facts import BOUNCE, COMPLAINT, UNSUBSCRIBE
from nurture.core.lead_fields import normalize_email
from nurture.core.suppression import SOFT_BOUNCE
from nurture.errors import InvalidInput
from nurture.intake.auth import require_api_key, require_sendgrid_signature, require_webhook_token
from nurture.intake.context import ApiError, IntakeContext, context, parse_json, read_body, read_json
from nurture.intake.schemas import BounceNotice, describe_errors, error_responses
from nurture.storage.lookups import DeliveryTarget, delivery_for_message_id

log = logging.getLogger("nurture.intake")

router = APIRouter(prefix="/v1/webhooks", tags=["provider webhooks"])

SENDGRID_EVENTS = {"bounce": BOUNCE, "spamreport": COMPLAINT, "unsubscribe": UNSUBSCRIBE,
                   "group_unsubscribe": UNSUBSCRIBE}
"""SendGrid event names that suppress a lead, and the nurture event type each becomes (``dropped``: by its reason)."""

SENDGRID_DROPS = (("bounced address", BOUNCE), ("invalid smtpapi", None), ("invalid", BOUNCE),
                  ("unsubscribe", UNSUBSCRIBE), ("spam reporting", COMPLAINT), ("spam content", None),
                  ("duplicate", None))
"""SendGrid's reasons for dropping a message (the first match wins), and the nurture event type each becomes; None:
the message was at fault, not the address (ignored). Any other reason is a failure of unknown cause: a soft bounce."""


def _sendgrid_kind(item: dict[str, Any]) -> str | None:
    """The nurture event type of one SendGrid event, None when it is ignored."""
    event = item.get("event")
    if event == "bounce" and item.get("type") == "blocked":  # refused for now (SendGrid's soft bounce)
        return SOFT_BOUNCE
    if event == "dropped":
        lowered = str(item.get("reason") or "").lower()
        return next((kind for words, kind in SENDGRID_DROPS if words in lowered), SOFT_BOUNCE)
    return SENDGRID_EVENTS.get(event) if isinstance(event, str) else None


def _derived_id(prefix: str, key: str) -> str:
    """An event id from a provider's key, within the id length limit."""
    candidate = f"{prefix}:{key}"
    if len(candidate) <= MAX_ID_LENGTH:
        return candidate
    return f"{prefix}:sha256:{hashlib.sha256(key.encode('utf-8')).hexdigest()}"


def _counts(results: list[Any]) -> dict[str, int]:
    recorded = sum(1 for r in results if r.status == RECORDED)
    return {"recorded": recorded, "duplicate": len(results) - recorded}


def _record_notices(ctx: IntakeContext, notices: list[BounceNotice]) -> dict[str, Any]:
    events: list[EventIn] = []
    positions: list[int] = []
    statuses: list[dict[str, Any]] = [{"index": i, "status": "unmatched"} for i in range(len(notices))]
    for index, notice in enumerate(notices):
        target: DeliveryTarget | None = None
        if notice.message_id:
            target = delivery_for_message_id(ctx.engine, notice.message_id)
        email = notice.email or (target.email if target else None)
        if not email:
            continue
        if target is not None and notice.email and target.email != normalize_email(notice.email):
            target = None  # the message id names another lead's delivery: trust the address, not the link
        key = notice.message_id.strip().strip("<>") if notice.message_id else None
        properties = {k: v for k, v in (("reason", notice.reason), ("message_id", key)) if v}
        events.append(EventIn(
            email=email, type=notice.type, occurred_at=notice.occurred_at or ctx.clock(), properties=properties,
            id=notice.id or (_derived_id(notice.type, key) if key else None),
            campaign_id=target.campaign_id if target else None, step_key=target.step_key if target else None,
            delivery_id=target.delivery_id if target else None,
        ))
        positions.append(index)
    try:
        results = ctx.record(events, actor="system", source="bounces") if events else []
    except InvalidEvents as exc:
        raise ApiError(422, "; ".join(f"[{positions[i]}]: {m}" for i, m in exc.problems[:20])) from None
    for position, result in zip(positions, results):
        statuses[position] = {"index": position, "status": result.status, "email": result.email}
    unmatched = sum(1 for s in statuses if s["status"] == "unmatched")
    if unmatched:
        log.info("%d bounce notice(s) matched no lead", unmatched)
    return {**_counts(results), "unmatched": unmatched, "results": statuses}


_BOUNCES_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
    {"$ref": "#/components/schemas/BounceNotice"},
    {"type": "array", "items": {"$ref": "#/components/schemas/BounceNotice"}, "minItems": 1, "maxItems": MAX_BATCH},
]}}}}}
_SENDGRID_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "array", "maxItems": 10 * MAX_BATCH, "items": {},
    "description": "SendGrid's Event Webhook: an array of event objects (event, email, sg_event_id, sg_message_id, "
                   "timestamp, reason, ...); items that are not suppressing events, or without a usable email, are "
                   "ignored.",
}}}}}


@router.post("/bounces", dependencies=[Depends(require_api_key)], openapi_extra=_BOUNCES_BODY,
             responses=error_responses(400, 401, 413, 422, 503, e413="The body is larger than 8 MiB."))
async def bounces(request: Request) -> dict[str, Any]:
    """Bounces, soft bounces and spam complaints in nurture's own format: a bounce or complaint suppresses the lead
    (it leaves every campaign); soft bounces do when ``policy.yaml``'s ``soft_bounces`` limit is reached."""
    payload = await read_json(request)
    items = payload if isinstance(payload, list) else [payload]
    if not items:
        raise ApiError(422, "send a bounce notice or a non-empty list of them")
    if len(items) > MAX_BATCH:
        raise ApiError(422, f"at most {MAX_BATCH} notices per request, got {len(items)}")
    notices: list[BounceNotice] = []
    problems: list[str] = []
    for index, item in enumerate(items):
        prefix = f"[{index}]" if isinstance(payload, list) else ""
        try:
            notice = BounceNotice.model_validate(item)
        except ValidationError as exc:
            problems.append(describe_errors(exc, prefix))
            continue
        if not (notice.email or "").strip() and not (notice.message_id or "").strip():
            problems.append(f"{prefix + ': ' if prefix else ''}give the lead's email or the message_id")
        notices.append(notice)
    if problems:
        raise ApiError(422, "; ".join(problems[:20]))
    return await run_in_threadpool(_record_notices, context(request), notices)


def _sendgrid_event(ctx: IntakeContext, item: Any, now: datetime) -> EventIn | None:
    """The nurture event for one SendGrid event, or None when it is ignored."""
    if not isinstance(item, dict):
        return None
    kind = _sendgrid_kind(item)
    if kind is None:
        return None
    reason = _text(item.get("reason") or item.get("response"))[:2000]
    occurred_at = now
    stamp = item.get("timestamp")
    if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) and 0 < stamp < 1e11:
        occurred_at = min(datetime.fromtimestamp(stamp, timezone.utc), now)
    message_id = _text(item.get("sg_message_id"))
    target = None
    if message_id:
        # sg_message_id is the X-Message-Id SendGrid returned at sending, plus a ".filter<digits>..." suffix
        target = delivery_for_message_id(ctx.engine, message_id.split(".filter", 1)[0])
    email = item.get("email") if isinstance(item.get("email"), str) and item.get("email") else None
    email = email or (target.email if target else None)
    if email is None:
        return None
    event_id = _text(item["sg_event_id"]) if isinstance(item.get("sg_event_id"), str) else ""
    properties = {"provider": "sendgrid", "sendgrid_event": str(item.get("event"))}
    if reason:
        properties["reason"] = reason
    event = EventIn(
        email=email, type=kind, occurred_at=occurred_at, properties=properties,
        id=_derived_id("sendgrid", event_id) if event_id else None,
        campaign_id=target.campaign_id if target else None, step_key=target.step_key if target else None,
        delivery_id=target.delivery_id if target else None,
    )
    try:
        return clean_event(event, now)
    except InvalidInput:
        return None


def _text(value: Any) -> str:
    """A SendGrid field as text without NUL characters (which no database column takes), '' when absent."""
    return str(value).replace("\x00", "") if value else ""


def _record_sendgrid(ctx: IntakeContext, items: list[Any]) -> dict[str, int]:
    now = ctx.clock()
    events = [event for item in items if (event := _sendgrid_event(ctx, item, now)) is not None]
    results = []
    for start in range(0, len(events), MAX_BATCH):
        results += ctx.record(events[start : start + MAX_BATCH], actor="system", source="sendgrid")
    ignored = len(items) - len(events)
    log.info("sendgrid webhook: %d bounce, complaint or unsubscribe event(s), %d ignored", len(events), ignored)
    return {**_counts(results), "ignored": ignored}


@router.post("/sendgrid", openapi_extra=_SENDGRID_BODY, responses=error_responses(
    400, 401, 413, 422, 503, e401="The token (or, when NURTURE_SENDGRID_VERIFICATION_KEY is set, SendGrid's "
    "signature) is missing or wrong.", e413=f"The body is larger than 8 MiB, or holds more than {10 * MAX_BATCH} "
    "events.", e422="The body is not a JSON array.", e503="No webhook token is configured (set "
    "NURTURE_INBOUND_WEBHOOK_TOKEN or NURTURE_API_KEY)."))
async def sendgrid(request: Request) -> dict[str, int]:
    """SendGrid's Event Webhook (a JSON array): bounces, spam reports and unsubscribes suppress the lead, blocks are
    soft bounces, drops go by their reason.

    Authenticated by SendGrid's signature when ``NURTURE_SENDGRID_VERIFICATION_KEY`` is set, by the webhook token
    (``?token=`` or the Basic auth password) otherwise."""
    if context(request).settings.sendgrid_verification_key:
        body = await read_body(request)
        require_sendgrid_signature(request, body)
    else:
        await require_webhook_token(request)
        body = await read_body(request)
    payload = parse_json(body, allow_nul=True)  # an odd item is ignored (below), never the whole batch refused
    if not isinstance(payload, list):
        raise ApiError(422, "expected SendGrid's JSON array of events")
    if len(payload) > 10 * MAX_BATCH:
        raise ApiError(413, f"at most {10 * MAX_BATCH} events per request")
    return await run_in_threadpool(_record_sendgrid, context(request), payload)
