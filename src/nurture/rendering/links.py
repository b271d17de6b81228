"""Tracking and unsubscribe links for one delivery, and decoding them again when they are followed.

Every link carries a signed token naming the delivery, so the tracking endpoints need no lookup table and cannot
be fed made-up references. Click tokens also carry the destination URL; :meth:`LinkBuilder.click` only wraps
absolute http(s) URLs, so the redirect endpoint can never be turned into an open redirect or a ``javascript:`` link.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from nurture.signing import BadSignature, Signer

CLICK = "click"
OPEN = "open"
UNSUBSCRIBE = "unsubscribe"

_PIXEL_SUFFIX = ".gif"
_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f]")


def is_trackable_url(url: str) -> bool:
    """Whether ``url`` is an absolute http(s) URL that a click link may redirect to."""
    if not isinstance(url, str) or not url or _UNSAFE.search(url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


class LinkBuilder:
    """Builds the signed links embedded in one delivery's email."""

    def __init__(self, base_url: str, signer: Signer, delivery_ref: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.signer = signer
        self.delivery_ref = delivery_ref
        self._unsubscribe: str | None = None

    def click(self, url: str) -> str:
        """Return a tracking link that records a click and redirects to ``url`` (absolute http(s) only)."""
        if not is_trackable_url(url):
            raise ValueError(f"only absolute http(s) URLs can be tracked, not {url!r}")
        token = self.signer.sign({"d": self.delivery_ref, "u": url}, purpose=CLICK)
        return f"{self.base_url}/t/c/{token}"

    def open_pixel(self) -> str:
        """Return the URL of the 1x1 image that records an open."""
        token = self.signer.sign({"d": self.delivery_ref}, purpose=OPEN)
        return f"{self.base_url}/t/o/{token}{_PIXEL_SUFFIX}"

    def unsubscribe(self) -> str:
        """Return the one-click unsubscribe URL for this delivery's lead (built once: the template and the
        List-Unsubscribe header both ask for it)."""
        if self._unsubscribe is None:
            token = self.signer.sign({"d": self.delivery_ref}, purpose=UNSUBSCRIBE)
            self._unsubscribe = f"{self.base_url}/u/{token}"
        return self._unsubscribe


def _delivery_ref(payload: dict) -> str:
    ref = payload.get("d")
    if not isinstance(ref, str):
        raise BadSignature()
    return ref


def decode_click(signer: Signer, token: str) -> tuple[str, str]:
    """Return ``(delivery_ref, url)`` from a click token; raise :class:`BadSignature` if it does not verify."""
    payload = signer.unsign(token, purpose=CLICK)
    url = payload.get("u")
    if not isinstance(url, str) or not is_trackable_url(url):
        raise BadSignature()
    return _delivery_ref(payload), url


def decode_open(signer: Signer, token: str) -> str:
    """Return the delivery ref from an open-pixel token (with or without its ``.gif`` suffix)."""
    if isinstance(token, str):
        token = token.removesuffix(_PIXEL_SUFFIX)
    return _delivery_ref(signer.unsign(token, purpose=OPEN))


def decode_unsubscribe(signer: Signer, token: str) -> str:
    """Return the delivery ref from an unsubscribe token; raise :class:`BadSignature` if it does not verify."""
    return _delivery_ref(signer.unsign(token, purpose=UNSUBSCRIBE))
