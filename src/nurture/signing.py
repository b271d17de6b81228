"""Signed, URL-safe tokens for tracking and unsubscribe links.

A token is ``base64url(compact JSON) + "." + base64url(HMAC-SHA256)``, without padding, so it can sit in a URL path
as it is. The MAC key is derived from the secret *and* a purpose string: a token minted for one purpose (say a click)
does not verify for another (say an unsubscribe), even though both carry the same delivery reference.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from typing import Any

from nurture.errors import NurtureError

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # what json.dumps builds anew on every call


class BadSignature(NurtureError):
    """The token is not one this server signed (forged, altered, truncated, malformed or meant for another purpose)."""


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Signs small JSON payloads into compact tokens and verifies them again."""

    def __init__(self, secret: str | bytes) -> None:
        key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        if not key:
            raise ValueError("the signing secret must not be empty")
        self._secret = key
        self._purpose_keys: dict[str, Any] = {}

    def _key(self, purpose: str) -> Any:
        """An HMAC object keyed for ``purpose``, to be copied: keying one costs more than copying it."""
        keyed = self._purpose_keys.get(purpose)
        if keyed is None:
            # A separate key per purpose rather than the purpose prefixed to the message: no concatenation of
            # purpose and payload can ever collide with another pair.
            key = hmac.new(self._secret, b"nurture.signing:" + purpose.encode("utf-8"), hashlib.sha256).digest()
            keyed = self._purpose_keys[purpose] = hmac.new(key, digestmod=hashlib.sha256)
        return keyed

    def _mac(self, body: str, purpose: str) -> str:
        mac = self._key(purpose).copy()
        mac.update(body.encode("ascii"))
        return _b64encode(mac.digest())

    def sign(self, payload: dict, purpose: str = "") -> str:
        """Return a URL-safe token carrying ``payload`` (JSON-serialisable), bound to ``purpose``."""
        body = _b64encode(_COMPACT.encode(payload).encode("utf-8"))
        return f"{body}.{self._mac(body, purpose)}"

    def unsign(self, token: str, purpose: str = "") -> dict:
        """Verify ``token`` for ``purpose`` and return its payload; raise :class:`BadSignature` if it doesn't verify."""
        if not isinstance(token, str):
            raise BadSignature()
        body, dot, mac = token.partition(".")
        if not dot or not _BASE64URL.fullmatch(body) or not _BASE64URL.fullmatch(mac):
            raise BadSignature()
        # Compare the canonical encoding of the expected MAC with the text given, not decoded bytes: base64 decoding
        # tolerates stray characters, and a token must verify in exactly one spelling.
        if not hmac.compare_digest(self._mac(body, purpose), mac):
            raise BadSignature()
        try:
            payload = json.loads(_b64decode(body).decode("utf-8"))
        except (binascii.Error, ValueError):
            raise BadSignature() from None
        if not isinstance(payload, dict):
            raise BadSignature()
        return payload
