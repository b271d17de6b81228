"""The handoff's interval job: the digests and SLA reminders of :mod:`nurture.application.sales_reminders`, run by
the worker's APScheduler job (every minute by default) and by ``nurture run --once``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy.engine import Engine

from nurture.application.sales_reminders import HandoffReport, SalesReminders
from nurture.definitions.sales import SalesRules
from nurture.definitions.scoring import ScoringRules
from nurture.handoff import Handoff


class HandoffJobs:
    """The digest and the SLA reminder over one database, with the process's rules and link signer."""

    def __init__(self, engine: Engine, *, sales: SalesRules, scoring: ScoringRules, handoff: Handoff,
                 campaign_names: Mapping[str, str] | None = None) -> None:
        self.reminders = SalesReminders(engine, sales, scoring, handoff, dict(campaign_names or {}))

    def run(self, now: datetime) -> HandoffReport:
        """Queue every digest and reminder due at ``now``."""
        return self.reminders.run(now)

    def send_digests(self, now: datetime) -> int:
        """:meth:`nurture.application.sales_reminders.SalesReminders.send_digests`."""
        return self.reminders.send_digests(now)

    def send_reminders(self, now: datetime) -> int:
        """:meth:`nurture.application.sales_reminders.SalesReminders.send_reminders`."""
        return self.reminders.send_reminders(now)
