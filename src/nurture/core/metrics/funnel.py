"""The funnel of a period: new leads, MQLs, SQLs, sales' decisions and customers, MQL→SQL conversion, acceptance and
the median time from MQL to SQL."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from nurture.core.metrics.facts import LeadCount, MoveCount, SqlWait
from nurture.core.metrics.tables import SOURCE_ARTICLE, Column, Definition, Summary, Table, rate

REJECTED_STAGES = ("recycled", "disqualified")


def move_kind(move: MoveCount) -> str | None:
    """What a stage change counts as: ``mql``, ``sql``, ``accepted``, ``rejected``, ``customer``, or None."""
    if move.from_stage == "sql" and move.to_stage == "opportunity":
        return "accepted"
    if move.from_stage == "sql" and move.to_stage in REJECTED_STAGES:
        return "rejected"
    if move.to_stage in ("mql", "sql", "customer"):
        return move.to_stage
    return None


def hours_to_sql(waits: Iterable[SqlWait]) -> list[float]:
    """Hours from each SQL's first MQL to the SQL, one per SQL (SQLs that were never an MQL before are left out)."""
    return [w.hours for w in waits if w.hours is not None and w.hours >= 0 for _ in range(w.count)]


@dataclass
class Funnel:
    """Lifecycle movement in the period."""

    new_leads: int = 0
    new_mqls: int = 0
    new_sqls: int = 0
    accepted: int = 0
    rejected: int = 0
    new_customers: int = 0
    median_hours_mql_to_sql: float | None = None

    key = "funnel"
    title = "Funnel"

    @property
    def mql_to_sql_rate(self) -> float | None:
        """SQLs per MQL of the period."""
        return rate(self.new_sqls, self.new_mqls)

    @property
    def sql_acceptance_rate(self) -> float | None:
        """Accepted of the SQLs sales decided in the period."""
        return rate(self.accepted, self.accepted + self.rejected)

    def to_json(self) -> dict[str, Any]:
        """JSON, keys named for people."""
        return {"new_leads": self.new_leads, "new_mqls": self.new_mqls, "new_sqls": self.new_sqls,
                "accepted_by_sales": self.accepted, "rejected_by_sales": self.rejected,
                "new_customers": self.new_customers, "mql_to_sql_rate": self.mql_to_sql_rate,
                "sql_acceptance_rate": self.sql_acceptance_rate,
                "median_hours_mql_to_sql": self.median_hours_mql_to_sql}

    def summary(self) -> Summary:
        """The headline figures."""
        summary = Summary()
        summary.add("new_leads", "New leads", self.new_leads)
        summary.add("new_mqls", "New MQLs", self.new_mqls)
        summary.add("new_sqls", "New SQLs", self.new_sqls)
        summary.add("mql_to_sql_rate", "MQL→SQL", self.mql_to_sql_rate, "rate")
        summary.add("accepted_by_sales", "Accepted by sales", self.accepted)
        summary.add("rejected_by_sales", "Rejected by sales", self.rejected)
        summary.add("sql_acceptance_rate", "SQL acceptance", self.sql_acceptance_rate, "rate")
        summary.add("median_hours_mql_to_sql", "Median MQL→SQL", self.median_hours_mql_to_sql, "hours")
        summary.add("new_customers", "New customers", self.new_customers)
        return summary

    def tables(self) -> list[Table]:
        """One row: every figure."""
        items = self.summary().items
        return [Table("figures", "Funnel", [Column(h.key, h.label, h.kind) for h in items],
                      [{h.key: h.value for h in items}])]

    def definitions(self) -> list[Definition]:
        """How the figures are computed."""
        return [
            Definition("New leads, MQLs, SQLs, customers", "leads created, and moves to the mql, sql and customer "
                       "stages, in the period (a lead that becomes an MQL twice counts twice)"),
            Definition("MQL→SQL conversion", "new SQLs ÷ new MQLs of the period: \"the percentage of MQLs that convert "
                       "to SQLs\"", SOURCE_ARTICLE),
            Definition("SQL acceptance", "accepted ÷ (accepted + rejected) of sales' decisions in the period"),
            Definition("Median MQL→SQL", "the median time from a lead's first MQL to its SQL, of the SQLs of the "
                       "period"),
        ]


def build_funnel(leads: Iterable[LeadCount], moves: Iterable[MoveCount], promotions: Iterable[SqlWait]) -> Funnel:
    """The funnel from the period's counts."""
    funnel = Funnel(new_leads=sum(c.count for c in leads))
    for move in moves:
        kind = move_kind(move)
        if kind == "mql":
            funnel.new_mqls += move.count
        elif kind == "sql":
            funnel.new_sqls += move.count
        elif kind == "accepted":
            funnel.accepted += move.count
        elif kind == "rejected":
            funnel.rejected += move.count
        elif kind == "customer":
            funnel.new_customers += move.count
    waits = hours_to_sql(promotions)
    funnel.median_hours_mql_to_sql = round(statistics.median(waits), 2) if waits else None
    return funnel
