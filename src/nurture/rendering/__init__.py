"""Email rendering: sandboxed Jinja templates, signed tracking links and the derived plain-text part.

The names below are imported from their modules on first use, so that importing :mod:`nurture.rendering.links` or
:mod:`nurture.rendering.sales_links` (what signing a link needs) does not import Jinja.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nurture.lazy import exports

if TYPE_CHECKING:
    from nurture.rendering.environment import EmailRenderer, RenderedEmail, sample_lead
    from nurture.rendering.limits import RenderLimitExceeded, RenderLimits, render_limits
    from nurture.rendering.links import LinkBuilder, decode_click, decode_open, decode_unsubscribe, is_trackable_url
    from nurture.rendering.text import html_to_text

_MODULES = {
    "EmailRenderer": "environment",
    "LinkBuilder": "links",
    "RenderLimitExceeded": "limits",
    "RenderLimits": "limits",
    "RenderedEmail": "environment",
    "decode_click": "links",
    "decode_open": "links",
    "decode_unsubscribe": "links",
    "html_to_text": "text",
    "is_trackable_url": "links",
    "render_limits": "limits",
    "sample_lead": "environment",
}

__all__ = [
    "EmailRenderer", "LinkBuilder", "RenderLimitExceeded", "RenderLimits", "RenderedEmail",
    "decode_click", "decode_open", "decode_unsubscribe", "html_to_text", "is_trackable_url",
    "render_limits", "sample_lead",
]

__getattr__ = exports(__name__, _MODULES)
