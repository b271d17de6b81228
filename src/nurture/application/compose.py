"""Compose an email for a lead: the template context, the rendering, and the outgoing message.

Shared by ``nurture preview``, ``nurture simulate`` and the worker, so all three render the same thing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nurture.core.engine import Action
from nurture.core.facts import LeadView, lead_template_fields
from nurture.definitions.campaign import Campaign

if TYPE_CHECKING:  # the renderer is passed in: composing imports no template engine
    from nurture.rendering import LinkBuilder, RenderedEmail
    from nurture.rendering.deferred import Renderer


def email_context(campaign: Campaign, action: Action, lead: LeadView) -> dict[str, Any]:
    """What an email template sees: ``lead``, ``campaign``, ``step``, ``variant`` and (streams) ``content``."""
    context: dict[str, Any] = {
        "lead": lead_template_fields(lead),
        "campaign": {"id": campaign.id, "name": campaign.name},
        "step": {"id": action.step_id, "key": action.step_key},
        "variant": action.variant,
    }
    if action.content is not None:
        context["content"] = action.content.model_dump()
    return context


def render_action(
    renderer: Renderer, campaign: Campaign, action: Action, lead: LeadView, links: LinkBuilder
) -> RenderedEmail:
    """Render the email an engine action asks for (TemplateRenderError if the template fails)."""
    assert action.template is not None and action.subject is not None
    return renderer.render(action.template, action.subject, email_context(campaign, action, lead), links)
