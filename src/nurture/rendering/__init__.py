"""Email rendering: sandboxed Jinja templates, signed tracking links and the derived plain-text part."""

from __future__ import annotations

from nurture.rendering.environment import EmailRenderer, RenderedEmail, sample_lead
from nurture.rendering.limits import RenderLimitExceeded, RenderLimits, render_limits
from nurture.rendering.links import LinkBuilder, decode_click, decode_open, decode_unsubscribe, is_trackable_url
from nurture.rendering.text import html_to_text

__all__ = [
    "EmailRenderer",
    "LinkBuilder",
    "RenderLimitExceeded",
    "RenderLimits",
    "RenderedEmail",
    "decode_click",
    "decode_open",
    "decode_unsubscribe",
    "html_to_text",
    "is_trackable_url",
    "render_limits",
    "sample_lead",
]
