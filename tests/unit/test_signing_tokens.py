"""Tokens are exactly the documented recipe: base64url(compact JSON) "." base64url(HMAC-SHA256 with the purpose key)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from nurture.signing import Signer, _compact_json


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _reference_token(secret: str, payload: dict, purpose: str) -> str:
    key = hmac.new(secret.encode(), b"nurture.signing:" + purpose.encode(), hashlib.sha256).digest()
    body = _b64(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    return f"{body}.{_b64(hmac.new(key, body.encode('ascii'), hashlib.sha256).digest())}"


PAYLOADS = [
    {},
    {"d": "1"},
    {"d": "12345", "u": "https://example.com/guide.pdf?a=1&b=%20"},
    {"d": "x", "u": 'https://example.com/"quoted"\\back\tslash\n\x00\x1f\x7f'},
    {"d": "é", "u": "https://exämple.com/ünï/😀"},
    {"d": "\ud800 lone surrogate", "u": "\u2028\u2029"},
    {"u": "order", "d": "kept"},
    {"d": 42, "u": "a number among strings"},
    {"d": "1", "n": None, "t": True, "f": 1.5, "l": ["x", {"y": "z"}]},
    {1: "a non-string key"},
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_the_compact_json_is_the_encoders(payload: dict) -> None:
    assert _compact_json(payload) == json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize("payload", [p for p in PAYLOADS if "\ud800 lone surrogate" not in p.values()])
@pytest.mark.parametrize("purpose", ["", "click", "open", "unsubscribe", "pürpose"])
def test_tokens_follow_the_recipe(payload: dict, purpose: str) -> None:
    signer = Signer("s3cret")
    for _ in range(2):  # the keyed MAC is kept between calls: a second token must not carry the first one's state
        token = signer.sign(payload, purpose=purpose)
        assert token == _reference_token("s3cret", payload, purpose)
        assert signer.unsign(token, purpose=purpose) == json.loads(json.dumps(payload))
