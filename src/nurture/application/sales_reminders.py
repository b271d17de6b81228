"""The handoff's periodic use cases: each owner's daily digest of open SQLs, and the reminder for an SQL past its SLA.

Both run from one APScheduler interval job (every minute by default, :mod:`nurture.worker.handoff_jobs`) and from
``nurture run --once``. Who is due is
decided by the pure functions at the top with the time passed in; what is sent is queued in the outbox with a dedup
key (per owner and local day for the digest, per promotion for the reminder), so several workers on one database,
a restart, or a run every few seconds never send one twice. The outbox processor delivers them.

The digest goes out at ``handoff.digest_at`` in each owner's timezone (UTC when the owner has none), or at the first
run after that on the same local day (a worker that was down at 08:30 sends it when it comes back, not the day
after). An owner with no open SQL gets no digest.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Connection, Engine

from nurture.application import promote
from nurture.core.routing import owner as find_owner
from nurture.definitions import windows
from nurture.definitions.sales import SalesRules
from nurture.definitions.scoring import ScoringRules
from nurture.handoff import Handoff, notify
from nurture.storage import promotions
from nurture.storage.database import transaction
from nurture.storage.outbox import enqueue
from nurture.storage.promotions import OpenSql

log = logging.getLogger(__name__)


# -- who is due (pure) -------------------------------------------------------------------------------------------------


def digest_day(owner_timezone: str | None, digest_at: time, now: datetime) -> date | None:
    """The owner's local date whose digest is due at ``now``: that date once the local time reached ``digest_at``,
    None before it."""
    local = now.astimezone(ZoneInfo(owner_timezone or "UTC"))
    return local.date() if local.time().replace(tzinfo=None) >= digest_at else None


def digests_due(sales: SalesRules, now: datetime) -> dict[str, date]:
    """Owner id -> the local day whose digest is due at ``now``, for every owner past ``digest_at`` (none when the
    sales file sets no ``digest_at``)."""
    if sales.handoff.digest_at is None:
        return {}
    at = windows.parse_time_of_day(sales.handoff.digest_at)
    due = {}
    for owner in sales.routing.owners:
        day = digest_day(owner.timezone, at, now)
        if day is not None:
            due[owner.id] = day
    return due


def sla_overdue(promoted_at: datetime, sla: timedelta, now: datetime) -> bool:
    """Whether an SQL promoted at ``promoted_at`` has waited the SLA out at ``now``."""
    return now - promoted_at >= sla


def reminders_due(sqls: Sequence[OpenSql], sla: timedelta | None, now: datetime) -> list[OpenSql]:
    """The open SQLs that waited longer than ``sla`` at ``now`` (none without an SLA)."""
    if sla is None:
        return []
    return [sql for sql in sqls if sla_overdue(sql.promoted_at, sla, now)]


# -- the use cases -------------------------------------------------------------------------------------------------------


@dataclass
class HandoffReport:
    """What one run queued."""

    digests: int = 0
    reminders: int = 0

    @property
    def queued(self) -> int:
        """Notifications queued in all."""
        return self.digests + self.reminders


@dataclass(frozen=True)
class SalesReminders:
    """The digest and the SLA reminder over one database, with the process's rules and link signer."""

    engine: Engine
    sales: SalesRules
    scoring: ScoringRules
    handoff: Handoff
    campaign_names: Mapping[str, str]

    def run(self, now: datetime) -> HandoffReport:
        """Queue every digest and reminder due at ``now``."""
        return HandoffReport(digests=self.send_digests(now), reminders=self.send_reminders(now))

    def _brief(self, conn: Connection, sql: OpenSql, now: datetime) -> dict[str, Any]:
        return promote.brief_for(conn, sales=self.sales, lead_id=sql.lead_id, promotion_id=sql.promotion_id,
                               scoring=self.scoring, now=now, links=self.handoff.links,
                               campaign_names=self.campaign_names)

    def send_digests(self, now: datetime) -> int:
        """Queue the digest of every owner whose ``digest_at`` has come today (their local day) and who has open
        SQLs; return how many were queued."""
        due = digests_due(self.sales, now)
        if not due:
            return 0
        keys = {owner_id: promote.digest_key(owner_id, day) for owner_id, day in due.items()}
        with transaction(self.engine, read_only=True) as conn:
            done = promotions.queued(conn, keys.values())
            waiting = {owner_id for owner_id in due if keys[owner_id] not in done}
            if not waiting:
                return 0
            owned = promote.owned_by(self.sales, promotions.open_sqls(conn))
        todo = [owner_id for owner_id in sorted(waiting) if owned.get(owner_id)]
        if not todo:
            return 0
        queued = 0
        with transaction(self.engine) as conn:
            for owner_id in todo:
                owner = find_owner(self.sales, owner_id)
                assert owner is not None
                briefs = [self._brief(conn, sql, now) for sql in owned[owner_id]]
                payload = notify.digest_email(owner, due[owner_id], briefs, now)
                if enqueue(conn, kind=promote.OWNER_EMAIL, dedup_key=keys[owner_id], payload=payload, now=now):
                    queued += 1
        if queued:
            log.info("queued %d daily digest(s)", queued)
        return queued

    def _reminder_keys(self, sql: OpenSql) -> list[str]:
        """The reminders an overdue SQL gets: the webhook (when one is configured), the email (when it has an
        owner to write to)."""
        keys = [promote.sla_key(sql.promotion_id)] if self.handoff.webhook else []
        if sql.owner and (find_owner(self.sales, sql.owner) is not None or "@" in sql.owner):
            keys.append(promote.sla_email_key(sql.promotion_id))
        return keys

    def send_reminders(self, now: datetime) -> int:
        """Queue one ``lead.sla_overdue`` webhook and one reminder to the owner for each SQL waiting longer than
        ``handoff.sla``; return how many SQLs got them."""
        sla = self.sales.handoff.sla.as_timedelta() if self.sales.handoff.sla is not None else None
        if sla is None:
            return 0
        with transaction(self.engine, read_only=True) as conn:
            overdue = reminders_due(promotions.open_sqls(conn), sla, now)
            if not overdue:
                return 0
            expected = {sql.promotion_id: self._reminder_keys(sql) for sql in overdue}
            done = promotions.queued(conn, [key for keys in expected.values() for key in keys])
        todo = [sql for sql in overdue if any(key not in done for key in expected[sql.promotion_id])]
        if not todo:
            return 0
        reminded = 0
        with transaction(self.engine) as conn:
            for sql in todo:
                brief = self._brief(conn, sql, now)
                waiting = now - sql.promoted_at
                added = False
                if self.handoff.webhook:
                    added |= enqueue(conn, kind=promote.SALES_WEBHOOK, dedup_key=promote.sla_key(sql.promotion_id),
                                     payload=notify.sla_webhook(brief, waiting=waiting, sla=sla), now=now)
                email = notify.sla_email(brief, waiting=waiting, sla=sla)
                if email is not None:
                    added |= enqueue(conn, kind=promote.OWNER_EMAIL, dedup_key=promote.sla_email_key(sql.promotion_id),
                                     payload=email, now=now)
                reminded += added
        if reminded:
            log.info("queued SLA reminders for %d SQL(s)", reminded)
        return reminded
