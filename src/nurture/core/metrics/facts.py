"""What a report reads, as storage returns it: counts per day and dimension, and the few rows that need more."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime


@dataclass(frozen=True)
class LeadCount:
    """Leads created on one UTC day from one source, medium and acquisition campaign."""

    day: date
    source: str | None
    medium: str | None
    source_campaign: str | None
    count: int


@dataclass(frozen=True)
class MoveCount:
    """Stage changes on one UTC day between two stages, by one actor, of leads of one source and campaign."""

    day: date
    from_stage: str | None
    to_stage: str
    actor: str
    source: str | None
    source_campaign: str | None
    count: int


@dataclass(frozen=True)
class SqlWait:
    """``count`` moves to ``sql`` in the period that came ``hours`` after the lead's first move to ``mql`` (None: it
    was never an MQL before)."""

    hours: float | None
    count: int = 1


@dataclass(frozen=True)
class Decision:
    """``count`` decisions of sales on SQLs alike: accepted (to ``opportunity``) or rejected
    (``recycled``/``disqualified``), with the same reason, owner, rule and campaigns."""

    accepted: bool
    reason_code: str | None  # the reject reason
    owner: str | None
    rule: str | None  # the promotion rule of the SQL decided
    campaigns: tuple[str, ...]  # the nurture campaigns the lead was in when promoted (rejections only)
    count: int = 1


@dataclass(frozen=True)
class WaitingSql:
    """A lead at stage ``sql`` waiting for sales' decision."""

    lead_id: int
    owner: str | None
    promoted_at: datetime
    rule: str | None


@dataclass(frozen=True)
class EnrollmentCount:
    """Enrollments of a campaign: ``started`` in the period, ``active`` now, or ``ended`` in the period (with the
    status and reason)."""

    campaign_id: str
    kind: str  # started | active | ended
    status: str | None
    end_reason: str | None
    count: int


@dataclass(frozen=True)
class DeliveryCount:
    """Emails of one step and variant created in the period, by status, with how many were opened and clicked."""

    campaign_id: str
    step_id: str
    variant: str | None
    status: str
    count: int
    opened: int
    clicked: int


@dataclass(frozen=True)
class OutcomeCount:
    """The leads that went one way at a branch or wait-for step (or skipped a step) in the period."""

    campaign_id: str
    step_id: str
    outcome: str  # branch | event | timeout | skipped | late
    detail: str
    count: int
