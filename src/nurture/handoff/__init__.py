"""The sales handoff: what sales gets when a lead becomes an SQL, and the reminders that follow.

- ``brief``: the handoff brief (who, why now, score, engagement timeline, nurture, owner, links), JSON-ready, built
  from plain facts that :mod:`nurture.application.promote` reads
- ``notify``: the outbox payloads built from briefs: the ``lead.promoted`` and ``lead.sla_overdue`` webhooks, the
  owner's handoff email, the SLA reminder and the daily digest (text and HTML)

Promotion itself is decided by :mod:`nurture.core.promotion` and written, with its notifications, in the intake's
transaction by :mod:`nurture.application.promote`; the digest and the SLA reminders are worker jobs
(:mod:`nurture.worker.handoff_jobs`).
"""

from __future__ import annotations

from dataclasses import dataclass

from nurture.rendering.sales_links import SalesLinks
from nurture.settings import Settings
from nurture.signing import Signer

__all__ = ["Handoff"]


@dataclass(frozen=True)
class Handoff:
    """What promotion needs from the running process besides the sales rules.

    ``links`` signs the accept/reject links of each promotion (``NURTURE_BASE_URL`` and the app's signer); ``webhook``
    says whether a ``lead.promoted`` webhook is queued at all: without ``NURTURE_SALES_WEBHOOK_URL`` there is nowhere
    to send it, and a row that can never be delivered would retry forever. The owner's email is queued either way.
    """

    links: SalesLinks | None = None
    webhook: bool = True

    @classmethod
    def from_settings(cls, settings: Settings, signer: Signer) -> Handoff:
        """The handoff of a process configured by ``settings`` signing with ``signer``."""
        return cls(SalesLinks(settings.base_url, signer), webhook=bool(settings.sales_webhook_url))
