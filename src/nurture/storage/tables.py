"""The tables as SQLAlchemy Core tables, under the short names every query in storage uses.

The models (:mod:`nurture.storage.models`) declare the schema; queries that run in bulk use these Core tables rather
than ORM objects. Import them from here, so that each table has one name across storage.
"""

from __future__ import annotations

from sqlalchemy import Table

from nurture.storage.models import (
    AbLeadStep,
    DefinitionVersion,
    Delivery,
    EngagementEvent,
    Enrollment,
    Lead,
    Meta,
    Outbox,
    RollupDecisionDay,
    RollupDeliveryDay,
    RollupEnrollmentDay,
    RollupLeadDay,
    RollupMoveDay,
    RollupOutcomeDay,
    RollupSqlDay,
    Spend,
    StageChange,
    StepOutcome,
    VariantDecision,
)

L: Table = Lead.__table__  # type: ignore[attr-defined]
"""leads"""
E: Table = Enrollment.__table__  # type: ignore[attr-defined]
"""enrollments: a lead in a campaign"""
D: Table = Delivery.__table__  # type: ignore[attr-defined]
"""deliveries: one email, webhook or stream piece per enrollment and step"""
EV: Table = EngagementEvent.__table__  # type: ignore[attr-defined]
"""engagement events"""
SC: Table = StageChange.__table__  # type: ignore[attr-defined]
"""stage changes: the lifecycle history"""
O: Table = Outbox.__table__  # type: ignore[attr-defined]  # noqa: E741
"""the outbox: notifications and webhooks to deliver"""
M: Table = Meta.__table__  # type: ignore[attr-defined]
"""meta: key/value state (secrets, round-robin positions)"""
DV: Table = DefinitionVersion.__table__  # type: ignore[attr-defined]
"""definition versions: each campaign, policy, scoring and sales file the worker ran, with its text"""
VD: Table = VariantDecision.__table__  # type: ignore[attr-defined]
"""variant decisions: the recorded winner of each A/B step"""
SP: Table = Spend.__table__  # type: ignore[attr-defined]
"""spend: marketing spend per period, source and campaign"""
SO: Table = StepOutcome.__table__  # type: ignore[attr-defined]
"""step outcomes: the way each lead went at a branch or wait-for step"""

RL: Table = RollupLeadDay.__table__  # type: ignore[attr-defined]
"""rollup: leads created per day and source"""
RM: Table = RollupMoveDay.__table__  # type: ignore[attr-defined]
"""rollup: stage changes per day, stages, actor and the lead's source"""
RD: Table = RollupDeliveryDay.__table__  # type: ignore[attr-defined]
"""rollup: emails per day, step, variant and status, opened and clicked"""
RE: Table = RollupEnrollmentDay.__table__  # type: ignore[attr-defined]
"""rollup: enrollments started and ended per day and campaign"""
RO: Table = RollupOutcomeDay.__table__  # type: ignore[attr-defined]
"""rollup: step outcomes per day"""
RS: Table = RollupSqlDay.__table__  # type: ignore[attr-defined]
"""rollup: moves to sql per day and wait since the first MQL"""
RX: Table = RollupDecisionDay.__table__  # type: ignore[attr-defined]
"""rollup: sales' decisions per day, stage, reason, owner, rule and campaigns"""
AB: Table = AbLeadStep.__table__  # type: ignore[attr-defined]
"""per lead and A/B step: its first email of the step, how many, its first click and open"""
