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
from nurture.core.metrics.facts import Decision, Promotion, WaitingSql
from nurture.core.metrics.funnel import build_funnel
from nurture.core.metrics.money import build_money
from nurture.core.metrics.periods import Window, day_start
from nurture.core.metrics.report import Report
from nurture.core.metrics.sales import build_sales
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
    rows = q.decisions(conn, window.since, window.until, window.campaign)
    runs: dict[int, list[tuple[str, datetime, datetime | None]]] = {}
    for run in q.enrollments_of(conn, [r.lead_id for r in rows if r.to_stage != "opportunity"]):
        runs.setdefault(run.lead_id, []).append((run.campaign_id, run.enrolled_at, run.ended_at))
    found = []
    for row in rows:
        promoted_at = row.promoted_at
        campaigns = tuple(sorted({c for c, start, end in runs.get(row.lead_id, [])
                                  if promoted_at is not None and start <= promoted_at
                                  and (end is None or end >= promoted_at)}))
        found.append(Decision(row.lead_id, row.at, row.to_stage == "opportunity", rejection_code(row.reason or ""),
                              row.owner, split_reason(row.promotion_reason or "")[0], campaigns))
    return found


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
        promotions = [Promotion(r.at, r.first_mql_at) for r in q.promotions(conn, since, until, campaign)]
        waiting = [WaitingSql(r.lead_id, r.owner, r.promoted_at, split_reason(r.reason or "")[0])
                   for r in q.waiting_sqls(conn, campaign)]
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
