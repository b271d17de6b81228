"""The API key: ``Authorization: Bearer <NURTURE_API_KEY>`` on every write endpoint.

Never open by default: with no key configured the protected endpoints answer 503 and say which variable to set.
Keys are compared with :func:`hmac.compare_digest`, so the comparison takes the same time wherever they differ.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from nurture.intake.context import ApiError, context
from nurture.signing import sendgrid_signature_valid

SCHEME = "NURTURE_API_KEY"
_bearer = HTTPBearer(auto_error=False, description=SCHEME, scheme_name=SCHEME)

NOT_CONFIGURED = "the API is disabled until an API key is configured: set NURTURE_API_KEY"


def key_matches(given: str, expected: str) -> bool:
    """Whether ``given`` is the configured key (constant time; an empty expected key matches nothing)."""
    if not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def configured_key(request: Request) -> str:
    """The configured API key; 503 when there is none."""
    key = context(request).settings.api_key
    if not key:
        raise ApiError(503, NOT_CONFIGURED)
    return key


async def require_api_key(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> None:
    """A FastAPI dependency: 401 with ``WWW-Authenticate: Bearer`` unless the request carries the API key.

    A coroutine, so FastAPI runs it on the event loop: a plain function would cost every API request a hop to the
    threadpool and back (more than the check itself by far)."""
    _check_key(request, credentials.credentials if credentials is not None else None)


def check_api_key(request: Request) -> None:
    """:func:`require_api_key` as a plain call: the ``Authorization`` header read as :class:`HTTPBearer` reads it."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    _check_key(request, token if scheme.lower() == "bearer" else None)


def _check_key(request: Request, token: str | None) -> None:
    expected = configured_key(request)
    token = token.strip() if token is not None else ""
    if not token:
        raise ApiError(
            401, "missing API key: send the header 'Authorization: Bearer <NURTURE_API_KEY>'",
            {"WWW-Authenticate": 'Bearer realm="nurture"'},
        )
    if not key_matches(token, expected):
        raise ApiError(401, "invalid API key", {"WWW-Authenticate": 'Bearer realm="nurture", error="invalid_token"'})


class KeyedRoute(APIRoute):
    """A route that answers only requests carrying the API key (:func:`check_api_key`, before anything else), with
    the key as its security in the OpenAPI document.

    The check is a call of its own rather than a FastAPI dependency: solving a dependency costs every request about
    70 µs (measured on ``POST /v1/events``), more than scoring an event."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        kwargs["openapi_extra"] = {"security": [{SCHEME: []}], **(kwargs.get("openapi_extra") or {})}
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def keyed(request: Request) -> Response:
            check_api_key(request)
            return await handler(request)

        return keyed


def security_scheme() -> dict[str, Any]:
    """The OpenAPI security scheme :class:`KeyedRoute` names: the one :data:`_bearer` declares."""
    return {SCHEME: _bearer.model.model_dump(mode="json", by_alias=True, exclude_none=True)}


async def require_webhook_token(request: Request) -> None:
    """For senders that cannot set a bearer header (webhook URLs set in a provider's console): the token as
    ``?token=<token>``, or as the password of HTTP Basic auth (``https://any:<token>@host/...``, which keeps it out of
    URLs that proxies log). The token is ``NURTURE_INBOUND_WEBHOOK_TOKEN`` when set (then the API key is refused here:
    a webhook URL that leaks gives no access to the API); otherwise the API key."""
    settings = context(request).settings
    if not settings.inbound_webhook_token and not settings.api_key:
        raise ApiError(503, "provider webhooks are disabled until a token is configured: set "
                            "NURTURE_INBOUND_WEBHOOK_TOKEN (or NURTURE_API_KEY)")
    expected = settings.inbound_webhook_token or settings.api_key
    name = "NURTURE_INBOUND_WEBHOOK_TOKEN" if settings.inbound_webhook_token else "NURTURE_API_KEY"
    token = request.query_params.get("token", "") or _basic_password(request.headers.get("authorization", ""))
    if not token:
        raise ApiError(401, f"missing token: add ?token=<{name}> to the webhook URL (or use it as the Basic auth "
                            "password)", {"WWW-Authenticate": 'Basic realm="nurture webhooks"'})
    if not key_matches(token, expected):
        raise ApiError(401, "invalid token", {"WWW-Authenticate": 'Basic realm="nurture webhooks"'})


SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"


def require_sendgrid_signature(request: Request, body: bytes) -> None:
    """401 unless the request carries SendGrid's valid signature of ``body`` (its raw bytes), checked with
    ``NURTURE_SENDGRID_VERIFICATION_KEY``. No limit on the timestamp's age: SendGrid retries a failed post for up to
    a day, and a replayed notice is a duplicate (``sg_event_id``) that changes nothing."""
    key = context(request).settings.sendgrid_verification_key
    signature, timestamp = request.headers.get(SENDGRID_SIGNATURE), request.headers.get(SENDGRID_TIMESTAMP)
    if not signature or not timestamp:
        raise ApiError(401, f"missing SendGrid signature: NURTURE_SENDGRID_VERIFICATION_KEY is set, so this webhook "
                            f"needs the {SENDGRID_SIGNATURE} and {SENDGRID_TIMESTAMP} headers of SendGrid's Signed "
                            "Event Webhook")
    if not sendgrid_signature_valid(key, signature, timestamp, body):
        raise ApiError(401, "invalid SendGrid signature (is NURTURE_SENDGRID_VERIFICATION_KEY this account's key?)")


def _basic_password(header: str) -> str:
    """The password of an ``Authorization: Basic`` header ('' when there is none or it is malformed)."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[2]
