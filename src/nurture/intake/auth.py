"""The API key: ``Authorization: Bearer <NURTURE_API_KEY>`` on every write endpoint.

Never open by default: with no key configured the protected endpoints answer 503 and say which variable to set.
Keys are compared with :func:`hmac.compare_digest`, so the comparison takes the same time wherever they differ.
"""

from __future__ import annotations

import hmac

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from nurture.intake.context import ApiError, context

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


def require_query_token(request: Request) -> None:
    """For senders that cannot set a header (webhook URLs configured in a provider's console): ``?token=<API key>``."""
    expected = configured_key(request)
    token = request.query_params.get("token", "")
    if not token:
        raise ApiError(401, "missing token: add ?token=<NURTURE_API_KEY> to the webhook URL")
    if not key_matches(token, expected):
        raise ApiError(401, "invalid token")
