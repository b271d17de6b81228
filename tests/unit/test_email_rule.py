"""The one check of lead emails (:func:`nurture.core.lead_fields.clean_email`): its quick path for ordinary addresses
decides exactly as the full check (email-validator) does, and the rule README.md documents holds."""

from __future__ import annotations

import pytest

from nurture.core.lead_fields import _validated, clean_email, normalize_email
from nurture.errors import InvalidInput

ACCEPTED = {
    "ana@example.com": "ana@example.com",
    " Ana.Ruiz+News@Sub.Example.CO.UK ": "ana.ruiz+news@sub.example.co.uk",
    "o'brien!#$%&*/=?^_`{|}~-@acme.test": "o'brien!#$%&*/=?^_`{|}~-@acme.test",  # .test: for trying nurture out
    "zoe@bücher.example": "zoe@xn--bcher-kva.example",  # an IDN domain is stored as punycode
    "ZOE@BÜCHER.EXAMPLE": "zoe@xn--bcher-kva.example",
    "zoe@xn--bcher-kva.example": "zoe@xn--bcher-kva.example",
    "x@a-b.example": "x@a-b.example",
    f"{'l' * 64}@example.com": f"{'l' * 64}@example.com",
}

REFUSED = {
    "josé@example.com": "SMTPUTF8",  # a non-ASCII local part
    "ana@[127.0.0.1]": "bracketed IP address",  # address literals
    "ana@[IPv6:::1]": "",
    '"ana"@example.com': "Quoting",  # quoted local parts
    '"a b"@example.com': "",
    "Ana <ana@example.com>": "",  # a display name
    "ana@localhost": "period",
    "ana@example": "period",
    "ana@x.c": "top-level domain",
    "ana@example.local": "special-use",
    "ana@example.invalid": "special-use",
    "ana@host.onion": "special-use",
    "ana@foo.localhost": "special-use",
    "ana@1.0.0.127.in-addr.arpa": "special-use",
    "ana@xn--zz.example": "IDNA",  # not a valid A-label
    "ab@cd--ef.example": "",  # "--" in the 3rd and 4th places is reserved
    "ana@-x.example": "",
    "ana@x-.example": "",
    "ana@example.123": "top-level domain",
    "a..b@example.com": "periods",
    ".a@example.com": "",
    "a.@example.com": "",
    "a b@example.com": "",
    "a@b@example.com": "",
    "ana@": "",
    "@example.com": "",
    "ana": "@-sign",
    "": "",
    "ana@example.com.": "",
    f"{'l' * 65}@example.com": "",
    f"a@{'d' * 64}.example": "",
    f"a@{'.'.join(['d' * 60] * 5)}.example": "",
    "ana\n@example.com": "",
    "ana\x00@example.com": "",
}


@pytest.mark.parametrize(("given", "stored"), list(ACCEPTED.items()))
def test_an_accepted_address_is_stored_in_one_form(given: str, stored: str) -> None:
    assert clean_email(given) == stored
    assert _validated(given, given.strip().lower()) == stored, "the quick path agrees with the full check"
    assert normalize_email(given) == stored, "a lookup finds it by any form"


@pytest.mark.parametrize(("given", "reason"), list(REFUSED.items()))
def test_an_undeliverable_address_is_refused_with_the_reason(given: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match="invalid email") as refused:
        clean_email(given)
    assert reason in str(refused.value)
    assert repr(given) in str(refused.value)
