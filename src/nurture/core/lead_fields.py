"""A lead's fields: which of them are columns, and how a value given for one is cleaned and validated.

The cleaners are shared by ``leads add``, the HTTP API, the CSV importer and sales' reject reasons, so a value is
accepted or refused the same way everywhere. Pure: nothing here reads the database.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nurture.core.attribution import UTM_NAMES
from nurture.core.lifecycle import STAGES
from nurture.errors import InvalidInput

LEAD_STAGES = STAGES
"""The lifecycle stages (:mod:`nurture.core.lifecycle` has their order)."""

LEAD_ATTRIBUTES = ("first_name", "last_name", "company", "title", "industry", "company_size", "country", "owner",
                   "source", "medium", "source_campaign")
"""The lead columns a :class:`~nurture.core.facts.LeadView` carries as ``attributes``: the one list every other list
of lead columns derives from."""

_NOT_TEXT = frozenset({"company_size", "country"})

TEXT_FIELDS = tuple(name for name in LEAD_ATTRIBUTES if name not in _NOT_TEXT)
"""Free-text lead columns: stripped, and empty means "no value"."""

LEAD_FIELDS = ("email", *TEXT_FIELDS, *(name for name in LEAD_ATTRIBUTES if name in _NOT_TEXT), "timezone", "stage",
               "tags")
"""The lead columns a caller may set; any other key is a custom field."""

# The common case, decided without the full validator: a lower-case dot-atom local part (RFC 5322 atext) at an ASCII
# host name whose top-level domain is letters. Everything else (IDN, xn-- or other "--" labels, special-use names,
# quotes, brackets, ...) goes to email-validator, so this only ever accepts what it would accept, unchanged.
_ATEXT = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_EMAIL = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@(?:[a-z0-9](?:[a-z0-9-]{{0,61}}[a-z0-9])?\.)+[a-z]{{2,63}}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_COMPANY_SIZE = 2**31 - 1
_COUNTRY = re.compile(r"[A-Z]{2}")


@lru_cache(maxsize=1)
def _special_tlds() -> frozenset[str]:
    """The top-level domains of email-validator's special-use names (it is imported by the first email checked)."""
    from email_validator import SPECIAL_USE_DOMAIN_NAMES

    return frozenset(name.rpartition(".")[2] for name in SPECIAL_USE_DOMAIN_NAMES)


def normalize_email(email: str) -> str:
    """The form emails are stored and looked up in: stripped, lower-cased, an internationalized domain in its ASCII
    (punycode) form, so ``ana@bücher.example`` finds the lead stored as ``ana@xn--bcher-kva.example``."""
    lowered = email.strip().lower()
    if lowered.isascii():
        return lowered
    try:
        return clean_email(lowered)
    except InvalidInput:
        return lowered  # not a valid address: looked up as given, and found by nothing


def clean_email(value: str) -> str:
    """The one check of a lead's email, at every way in (CSV import, API, CLI): the address in the form it is stored
    in, or :class:`InvalidInput` saying what is wrong.

    Only what nurture can deliver over plain SMTP is accepted: a dot-atom local part in ASCII, at a host name (an
    internationalized domain is turned into its ASCII form). Refused: non-ASCII local parts (they need SMTPUTF8,
    which nurture does not send), quoted local parts, address literals such as ``a@[127.0.0.1]``, host names without
    a dot, and the special-use names ``.local``, ``.localhost``, ``.invalid``, ``.onion`` and ``.arpa``
    (``.test`` is allowed, for trying nurture out).
    """
    email = value.strip().lower()
    if len(email) <= 254 and _PLAIN_EMAIL.fullmatch(email):
        local, _, domain = email.rpartition("@")
        if len(local) <= 64 and "--" not in domain and domain.rpartition(".")[2] not in _special_tlds():
            return email
    return _validated(value, email)


def _validated(value: str, email: str) -> str:
    """:func:`clean_email`'s full check, by email-validator (no DNS lookup)."""
    from email_validator import EmailNotValidError, validate_email

    try:
        checked = validate_email(email, check_deliverability=False, allow_smtputf8=False, allow_quoted_local=False,
                                 allow_domain_literal=False, allow_display_name=False, test_environment=True,
                                 strict=True)
    except EmailNotValidError as exc:
        reason = str(exc)
        if not email.partition("@")[0].isascii():
            reason += " Such a mailbox needs SMTPUTF8, which nurture does not send."
        raise InvalidInput(f"invalid email {value!r}: {reason}") from None
    address = checked.ascii_email
    domain = checked.ascii_domain
    if address is None or "." not in domain or len(domain.rpartition(".")[2]) < 2:
        raise InvalidInput(f"invalid email {value!r}: the part after the @-sign needs a dot and a top-level domain.")
    return address.lower()


def clean_company_size(value: str | int | None) -> int | None:
    """A non-negative whole number of employees (None when empty)."""
    if value is None or isinstance(value, int):
        number = value
    else:
        text = value.strip().replace(",", "").replace("_", "")
        if not text:
            return None
        try:
            number = int(text)
        except ValueError:
            raise InvalidInput(f"company_size must be a whole number, got {value!r}") from None
    if number is not None and number < 0:
        raise InvalidInput(f"company_size must not be negative, got {value!r}")
    if number is not None and number > MAX_COMPANY_SIZE:
        raise InvalidInput(f"company_size is out of range, got {value!r}")
    return number


def clean_country(value: str | None) -> str | None:
    """An ISO 3166-1 alpha-2 country code in upper case (None when empty)."""
    if value is None or not value.strip():
        return None
    country = value.strip().upper()
    if not _COUNTRY.fullmatch(country):
        raise InvalidInput(f"country must be a 2-letter ISO code such as US or DE, got {value!r}")
    return country


def clean_timezone(value: str | None) -> str | None:
    """An IANA time zone name such as ``Europe/Paris`` (None when empty)."""
    if value is None or not value.strip():
        return None
    name = value.strip()
    if not _is_timezone(name):
        raise InvalidInput(f"unknown timezone {value!r} (use an IANA name such as Europe/Paris)")
    return name


@lru_cache(maxsize=4096)
def _is_timezone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def clean_stage(value: str | None) -> str | None:
    """A lifecycle stage name in lower case (None when empty)."""
    if value is None or not value.strip():
        return None
    stage = value.strip().lower()
    if stage not in LEAD_STAGES:
        raise InvalidInput(f"unknown stage {value!r} (one of {', '.join(LEAD_STAGES)})")
    return stage


def clean_tags(value: str | Iterable[str] | None) -> list[str] | None:
    """Tags from a list or a ``;``-separated string: stripped, without blanks or repeats (None when empty)."""
    if not value:
        return None
    parts = value.split(";") if isinstance(value, str) else value
    tags = list(dict.fromkeys(stripped for tag in parts if (stripped := tag.strip())))
    return tags or None


def clean_text(value: Any) -> str | None:
    """A stripped one-line string (whitespace runs folded, control characters refused), None when empty.

    Lead fields end up in email headers and in PostgreSQL text columns, neither of which takes a line break or NUL.
    """
    if value is None:
        return None
    text = " ".join(str(value).split())
    if _CONTROL.search(text):
        raise InvalidInput(f"text fields cannot hold control characters, got {text!r}")
    return text or None


def clean_custom_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Custom fields as plain JSON (no NaN or infinity, no NUL characters), or :class:`InvalidInput`."""
    try:
        json.dumps(dict(fields), allow_nan=False, default=_refuse)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"custom fields must be plain JSON values: {exc}") from None
    if contains_nul(fields):
        raise InvalidInput("custom fields cannot hold NUL characters")
    return dict(fields)


def contains_nul(value: Any) -> bool:
    """Whether a JSON-like value holds a NUL character anywhere (PostgreSQL text and JSON cannot store one)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(contains_nul(item) for item in value)
    return False


def _refuse(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not a JSON value")


FIELD_CLEANERS: dict[str, Callable[[Any], Any]] = {
    **dict.fromkeys(TEXT_FIELDS, clean_text),
    "company_size": clean_company_size,
    "country": clean_country,
    "timezone": clean_timezone,
    "stage": clean_stage,
    "tags": clean_tags,
}
"""The cleaner of every lead column except email; each returns None for an empty value."""


FIELD_ALIASES = dict(UTM_NAMES)
"""Other names a caller may give a column by (the acquisition columns by their UTM parameter names)."""


def clean_lead_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate and normalize lead data; unknown keys (and a ``fields`` mapping) become custom ``fields``.

    Only the keys present are returned, so an update touches only what the caller gave. Every problem is
    reported at once in one :class:`InvalidInput`.
    """
    cleaned: dict[str, Any] = {}
    custom: dict[str, Any] = dict(data.get("fields") or {})
    problems: list[str] = []
    if not data.get("email"):
        problems.append("email is required")
    for given, value in data.items():
        key = FIELD_ALIASES.get(given, given)
        try:
            if key == "email":
                cleaned["email"] = clean_email(str(value)) if value else None
            elif key in FIELD_CLEANERS:
                cleaned[key] = FIELD_CLEANERS[key](value)
            elif key != "fields":
                custom[key] = value
        except InvalidInput as exc:
            problems.append(str(exc))
    if custom:
        try:
            custom = clean_custom_fields(custom)
        except InvalidInput as exc:
            problems.append(str(exc))
    if problems:
        raise InvalidInput("; ".join(problems))
    if custom:
        cleaned["fields"] = custom
    return cleaned
