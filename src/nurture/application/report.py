"""``nurture report`` and the dashboard: read the period's counts through storage, let :mod:`nurture.core.metrics`
compute each section, and return the :class:`~nurture.core.metrics.report.Report`. The A/B tests and holdouts are
measured by their own use cases (:mod:`nurture.application.variant_decisions`, :mod:`nurture.application.holdout_lift`)
inside the same transaction.

One read-only transaction, so every section sees the same moment. The spend is the imported rows plus the
``spend.yaml`` entries no import replaces (:func:`nurture.application.spend.spend_entries`).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from nurture.application.holdout_lift import holdouts_of
from nurture.application.spend import spend_entries
from nurture.application.variant_decisions import ab_tests_of
from nurture.core.metrics.experiments import AbTests, Holdouts
from nurture.core.metrics.facts import Decision, SqlWait, WaitingSql
from nurture.core.metrics.funnel import build_funnel
from nurture.core.metrics.money import build_money
from nurture.core.metrics.periods import Window, day_start
from nurture.core.metrics.report import Report
from nurture.core.metrics.sales import QUEUE_LIMIT, build_sales
from nurture.core.metrics.steps import build_steps
from nurture.core.metrics.trends import build_trends, lvr_start
from nurture.core.promotion import rejection_code
from nurture.definitions.loader import Catalog
from nurture.definitions.sales import SalesRules
from nurture.definitions.spend import SpendEntry
from nurture.errors import InvalidInput
from nurture.handoff.brief import split_reason
from nurture.storage import report_queries as q
from nurture.storage.database import transaction

if TYPE_CHECKING:  # the engine type only annotates: the queries are storage's
    from sqlalchemy.engine import Connection, Engine


def _decisions(conn: Connection, window: Window) -> list[Decision]:
    return [Decision(to_stage == "opportunity", rejection_code(reason), owner or None, _rule(rule),
                     tuple(campaigns.split(",")) if campaigns else (), n)
            for to_stage, reason, owner, rule, campaigns, n in
            q.decision_counts(conn, window.since, window.until, window.campaign)]


def _rule(head: str) -> str | None:
    """The promotion rule of a promotion reason, from its text before the first ``: `` (None: a person's reason)."""
    return split_reason(f"{head}: -")[0] if head else None


def _waiting(conn: Connection, campaign: str | None) -> list[WaitingSql]:
    """The SQLs waiting now; the rule of their promotion read only for those the queue lists one by one."""
    rows = q.waiting_sqls(conn, campaign)
    reasons = q.promotion_reasons(conn, [r.lead_id for r in rows[:QUEUE_LIMIT]])
    return [WaitingSql(r.lead_id, r.owner, r.promoted_at, split_reason(reasons.get(r.lead_id, ""))[0]) for r in rows]


def build_report(engine: Engine, *, since: datetime, until: datetime, now: datetime, catalog: Catalog | None = None,
                 sales: SalesRules | None = None, spend: list[SpendEntry] | None = None,
                 campaign: str | None = None) -> Report:
    """The report of ``[since, until)``, narrowed to one nurture ``campaign`` if given; ``now`` ages the SQLs waiting
    for sales. ``catalog`` orders steps as the campaigns list them; ``sales`` gives the SLA and reject labels;
    ``spend``: the ``spend.yaml`` entries. The A/B tests use the catalog's goals and the holdouts its declared
    shares only when it has no problems (else every A/B step is measured on clicks, as for steps no longer defined)."""
    if until <= since:
        raise InvalidInput(f"the period ends ({until.isoformat()}) before it starts ({since.isoformat()})")
    if campaign is not None and catalog is not None and catalog.campaigns and campaign not in catalog.campaigns:
        catalog.campaign(campaign)  # a typo: InvalidInput naming the campaigns of the folder
    window = Window(since, until, campaign)
    sales = sales or SalesRules()
    defined = catalog if catalog is not None and not catalog.problems else None
    with transaction(engine, read_only=True) as conn:
        leads = q.lead_counts(conn, since, until, campaign)
        moves = q.move_counts(conn, since, until, campaign)
        mqls = q.mql_days(conn, day_start(lvr_start(window)), until, campaign)
        promotions = [SqlWait(None if wait < 0 else wait / 3_600_000, n)
                      for wait, n in q.sql_waits(conn, since, until, campaign)]
        waiting = _waiting(conn, campaign)
        decisions = _decisions(conn, window)
        enrollments = q.enrollment_counts(conn, since, until, campaign)
        deliveries = q.delivery_counts(conn, since, until, campaign)
        outcomes = q.outcome_counts(conn, since, until, campaign)
        entries = spend_entries(conn, spend or [], window.first_day, window.last_day)
        ab_tests = ab_tests_of(conn, defined, since=since, until=until, campaign=campaign)
        holdouts = holdouts_of(conn, defined, since=since, until=until, campaign=campaign)
    order = {f"{c.id}/{step.id}": index for c in (catalog.campaigns.values() if catalog else ())
             for index, step in enumerate(c.steps)}
    sla = sales.handoff.sla.as_timedelta() if sales.handoff.sla else None
    labels = {code: reason.label or code for code, reason in sales.feedback.reject_reasons.items()}
    return Report(window, [
        build_funnel(leads, moves, promotions),
        build_money(window, leads, moves, entries),
        build_trends(window, leads, moves, mqls, promotions),
        build_sales(waiting, decisions, now=now, sla=sla, labels=labels),
        build_steps(enrollments, deliveries, outcomes, campaign_order=order),
        AbTests(ab_tests),
        Holdouts(holdouts),
    ])
