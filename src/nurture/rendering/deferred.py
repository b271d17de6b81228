"""An email renderer made when the first email is rendered: a worker that finds nothing to send (``nurture run
--once`` with nothing due) never imports Jinja nor sets up its sandboxes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from nurture.rendering.environment import EmailRenderer, RenderedEmail
    from nurture.rendering.links import LinkBuilder


class Renderer(Protocol):
    """What renders the emails of the worker: an :class:`~nurture.rendering.environment.EmailRenderer`, or a
    :class:`DeferredRenderer` of one."""

    def render(self, template: str, subject: str, context: dict[str, Any], links: LinkBuilder) -> RenderedEmail:
        """Render one email (see :meth:`nurture.rendering.environment.EmailRenderer.render`)."""
        ...


class DeferredRenderer:
    """Renders as the :class:`~nurture.rendering.environment.EmailRenderer` that ``make`` returns, called once, at the
    first email."""

    def __init__(self, make: Callable[[], EmailRenderer]) -> None:
        self._make = make
        self._renderer: EmailRenderer | None = None
        self._lock = threading.Lock()

    @property
    def renderer(self) -> EmailRenderer:
        """The renderer, made now if it was not yet."""
        renderer = self._renderer
        if renderer is None:
            with self._lock:
                renderer = self._renderer
                if renderer is None:
                    renderer = self._renderer = self._make()
        return renderer

    def render(self, template: str, subject: str, context: dict[str, Any], links: LinkBuilder) -> RenderedEmail:
        """Render one email (see :meth:`nurture.rendering.environment.EmailRenderer.render`)."""
        return self.renderer.render(template, subject, context, links)
