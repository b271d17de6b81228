from __future__ import annotations

import base64
import hmac
import json
import string

import pytest

from nurture.errors import NurtureError
from nurture.signing import BadSignature, Signer

TOKEN_ALPHABET = set(string.ascii_letters + string.digits + "-_")


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture
def signer() -> Signer:
    return Signer("test-secret")


def test_round_trip_keeps_the_payload(signer: Signer) -> None:
    payload = {"d": "dlv-42", "u": "https://example.com/a?b=1&c=é", "n": 3, "tags": ["x", "y"]}
    assert signer.unsign(signer.sign(payload)) == payload
    assert signer.unsign(signer.sign(payload, purpose="click"), purpose="click") == payload


def test_token_is_compact_url_safe_json_and_mac(signer: Signer) -> None:
    token = signer.sign({"d": "dlv-42"})
    body, mac = token.split(".")
    assert set(body) <= TOKEN_ALPHABET and set(mac) <= TOKEN_ALPHABET
    assert "=" not in token
    assert base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)) == b'{"d":"dlv-42"}'
    assert len(base64.urlsafe_b64decode(mac + "=")) == 32  # HMAC-SHA256


def test_str_and_bytes_secrets_are_the_same_key() -> None:
    assert Signer("clé").sign({"a": 1}) == Signer("clé".encode()).sign({"a": 1})


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        Signer("")


def test_another_secret_does_not_verify(signer: Signer) -> None:
    forged = Signer("attacker-secret").sign({"d": "dlv-42"})
    with pytest.raises(BadSignature):
        signer.unsign(forged)


def test_swapped_payload_with_old_mac_does_not_verify(signer: Signer) -> None:
    _, mac = signer.sign({"d": "dlv-42"}).split(".")
    altered = b64(json.dumps({"d": "dlv-43"}, separators=(",", ":")).encode()) + "." + mac
    with pytest.raises(BadSignature):
        signer.unsign(altered)


def test_every_single_character_change_is_rejected(signer: Signer) -> None:
    token = signer.sign({"d": "dlv-42", "u": "https://example.com/"})
    for position, original in enumerate(token):
        replacement = "A" if original != "A" else "B"
        altered = token[:position] + replacement + token[position + 1 :]
        with pytest.raises(BadSignature):
            signer.unsign(altered)


def test_every_truncation_is_rejected(signer: Signer) -> None:
    token = signer.sign({"d": "dlv-42"})
    for length in range(len(token)):
        with pytest.raises(BadSignature):
            signer.unsign(token[:length])


@pytest.mark.parametrize(
    "token",
    ["", ".", "abc", "a.b", "a.b.c", "!!!.@@@", "é.é", None, 123, b"abc.def", ["a", "b"]],
    ids=repr,
)
def test_malformed_tokens_raise_bad_signature_only(signer: Signer, token: object) -> None:
    with pytest.raises(BadSignature):
        signer.unsign(token)  # type: ignore[arg-type]


@pytest.mark.parametrize("decoration", ["{}=", "{}==", "{}\n", " {}", "{}.", "{}.x", "x{}"])
def test_decorated_valid_token_is_rejected(signer: Signer, decoration: str) -> None:
    token = signer.sign({"d": "dlv-42"})
    with pytest.raises(BadSignature):
        signer.unsign(decoration.format(token))


def test_signed_non_object_payload_is_rejected(signer: Signer) -> None:
    token = signer.sign(["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(BadSignature):
        signer.unsign(token)


@pytest.mark.parametrize(
    ("signed_for", "checked_for"), [("click", "unsubscribe"), ("open", "click"), ("", "click"), ("click", "")]
)
def test_token_for_one_purpose_does_not_verify_for_another(signer: Signer, signed_for: str, checked_for: str) -> None:
    token = signer.sign({"d": "dlv-42"}, purpose=signed_for)
    with pytest.raises(BadSignature):
        signer.unsign(token, purpose=checked_for)


def test_purposes_give_different_tokens_for_the_same_payload(signer: Signer) -> None:
    assert signer.sign({"d": "dlv-42"}, purpose="click") != signer.sign({"d": "dlv-42"}, purpose="unsubscribe")


def test_verification_uses_constant_time_comparison(signer: Signer, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    signer.unsign(signer.sign({"d": "dlv-42"}))
    assert len(calls) == 1


def test_bad_signature_is_a_nurture_error() -> None:
    assert issubclass(BadSignature, NurtureError)
    assert str(BadSignature())  # the docstring is the default message
