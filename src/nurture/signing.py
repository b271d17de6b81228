"""Signed, URL-safe tokens for tracking and unsubscribe links.

A token is ``base64url(compact JSON) + "." + base64url(HMAC-SHA256)``, without padding, so it can sit in a URL path
as it is. The MAC key is derived from the secret *and* a purpose string: a token minted for one purpose (say a click)
does not verify for another (say an unsubscribe), even though both carry the same delivery reference.

Also here: checking the signature SendGrid puts on its Event Webhook (ECDSA, the ``cryptography`` package).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from functools import lru_cache
from json.encoder import encode_basestring
from typing import Any

from nurture.errors import NurtureError

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # what json.dumps builds anew on every call
_URLSAFE = bytes.maketrans(b"+/", b"-_")


class BadSignature(NurtureError):
    """The token is not one this server signed (forged, altered, truncated, malformed or meant for another purpose)."""


def _b64encode(raw: bytes) -> str:
    # base64.urlsafe_b64encode, without its two Python-level calls: this runs for every link of every email
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode("ascii")


def _compact_json(payload: dict) -> str:
    """``_COMPACT.encode(payload)``; a flat dict of strings (every link's payload) is written directly, with the
    encoder's own string escaping, at half the cost."""
    if type(payload) is not dict:
        return _COMPACT.encode(payload)
    parts = []
    for key, value in payload.items():
        if type(key) is not str or type(value) is not str:
            return _COMPACT.encode(payload)
        parts.append(f"{encode_basestring(key)}:{encode_basestring(value)}")
    return "{" + ",".join(parts) + "}"


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
            keyed = hmac.new(key, digestmod=hashlib.sha256)
            # the OpenSSL HMAC object inside, when there is one: copying it skips hmac.HMAC's Python-level copy
            keyed = self._purpose_keys[purpose] = getattr(keyed, "_hmac", None) or keyed
        return keyed

    def _mac(self, body: str, purpose: str) -> str:
        mac = self._key(purpose).copy()
        mac.update(body.encode("ascii"))
        return _b64encode(mac.digest())

    def sign(self, payload: dict, purpose: str = "") -> str:
        """Return a URL-safe token carrying ``payload`` (JSON-serialisable), bound to ``purpose``."""
        body = _b64encode(_compact_json(payload).encode("utf-8"))
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


# --- SendGrid's Signed Event Webhook ------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def sendgrid_public_key(text: str) -> Any:
    """The EC P-256 public key of SendGrid's Signed Event Webhook, from the verification key its Mail Settings show
    (base64 of the DER public key; a PEM block is taken too). ValueError when it is not such a key."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

    text = text.strip()
    try:
        if "-----BEGIN" in text:
            key = load_pem_public_key(text.encode("ascii"))
        else:
            key = load_der_public_key(base64.b64decode("".join(text.split()), validate=True))
    except (ValueError, binascii.Error, UnicodeEncodeError, UnsupportedAlgorithm):
        raise ValueError("not a public key: paste the verification key of SendGrid's Signed Event Webhook "
                         "(Settings > Mail Settings), base64 as SendGrid shows it") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("not an EC P-256 public key, which SendGrid's Signed Event Webhook uses")
    return key


def sendgrid_signature_valid(key_text: str, signature: str, timestamp: str, body: bytes) -> bool:
    """Whether ``signature`` (the base64 ``X-Twilio-Email-Event-Webhook-Signature`` header) is SendGrid's ECDSA
    SHA-256 signature of ``timestamp`` (the ``X-Twilio-Email-Event-Webhook-Timestamp`` header) followed by the raw
    request ``body``, made with the private half of the verification key ``key_text``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        raw = base64.b64decode(signature.strip(), validate=True)
    except (ValueError, binascii.Error):
        return False
    try:
        sendgrid_public_key(key_text).verify(raw, timestamp.encode("utf-8") + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True
