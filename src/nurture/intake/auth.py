"""The API key: ``Authorization: Bearer <NURTURE_API_KEY>`` on every write endpoint.

Never open by default: with no key configured the protected endpoints answer 503 and say which variable to set.
Keys are compared with :func:`hmac.compare_digest`, so the comparison takes the same time wherever they differ.
"""

from __future__ import annotations

import base64
import hmac

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from nurture.intake.context import ApiError, context
from nurture.signing import sendgrid_signature_valid

_bearer = HTTPBearer(auto_error=False, description="NURTURE_API_KEY", scheme_name="NURTURE_API_KEY")

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
    expected = configured_key(request)
    if credentials is None or not credentials.credentials.strip():
        raise ApiError(
            401, "missing API key: send the header 'Authorization: Bearer <NURTURE_API_KEY>'",
            {"WWW-Authenticate": 'Bearer realm="nurture"'},
        )
    if not key_matches(credentials.credentials.strip(), expected):
        raise ApiError(401, "invalid API key", {"WWW-Authenticate": 'Bearer realm="nurture", error="invalid_token"'})


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
