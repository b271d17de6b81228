"""Velocity and trends: the lead velocity rate month over month, weekly series of the funnel, and how long leads take
from MQL to SQL."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from nurture.core.metrics.facts import LeadCount, MoveCount, SqlWait
from nurture.core.metrics.funnel import hours_to_sql, move_kind
from nurture.core.metrics.periods import (
    Window,
    day_start,
    month_key,
    month_start,
    months,
    next_month,
    previous_month,
    week_key,
    week_start,
    weeks,
)
from nurture.core.metrics.tables import SOURCE_ARTICLE, Column, Definition, Summary, Table, rate

TIME_TO_SQL_BUCKETS = ((24, "under 1 day"), (72, "1-3 days"), (168, "3-7 days"), (336, "1-2 weeks"),
                       (672, "2-4 weeks"), (None, "4+ weeks"))
"""Upper bounds in hours (None: no bound) and labels of the time-to-SQL distribution."""

WEEK_COLUMNS = (Column("week", "Week", "text"), Column("starts", "Starts", "text"),
                Column("new_leads", "Leads"), Column("new_mqls", "MQLs"), Column("new_sqls", "SQLs"),
                Column("accepted_by_sales", "Accepted"), Column("rejected_by_sales", "Rejected"),
                Column("sql_acceptance_rate", "Acceptance", "rate"), Column("new_customers", "Customers"),
                Column("partial", "Partial week", "text"))


def lvr_months(window: Window) -> list[date]:
    """The months the lead velocity rate is shown for: every month the window touches, and at least the latest
    month complete at its end (the headline), even when the window began after that month."""
    last = month_start(window.last_day)
    last_complete = last if day_start(next_month(last)) <= window.until else previous_month(last)
    return months(min(month_start(window.first_day), last_complete), window.last_day)


def lvr_start(window: Window) -> date:
    """The first day the lead velocity rate needs: the start of the month before the first of :func:`lvr_months`."""
    return previous_month(lvr_months(window)[0])


@dataclass
class Trends:
    """Velocity and trends over the period."""

    weeks: list[dict[str, Any]] = field(default_factory=list)
    months: list[dict[str, Any]] = field(default_factory=list)
    lead_velocity_rate: float | None = None
    lead_velocity_month: str | None = None
    time_to_sql: dict[str, Any] = field(default_factory=dict)

    key = "velocity"
    title = "Velocity and trends"

    def to_json(self) -> dict[str, Any]:
        """JSON, keys named for people."""
        return {"lead_velocity_rate": self.lead_velocity_rate, "lead_velocity_month": self.lead_velocity_month,
                "months": self.months, "weeks": self.weeks, "time_to_sql": self.time_to_sql}

    def summary(self) -> Summary:
        """The headline figures."""
        summary = Summary()
        summary.add("lead_velocity_rate", "Lead velocity rate", self.lead_velocity_rate, "rate",
                    f"MQLs of {self.lead_velocity_month} vs the month before" if self.lead_velocity_month else
                    "no complete month in the period")
        return summary

    def tables(self) -> list[Table]:
        """Months (velocity), weeks (the funnel's series) and the time-to-SQL distribution."""
        ttq = self.time_to_sql
        return [
            Table("months", "Lead velocity rate (MQLs month over month)",
                  [Column("month", "Month", "text"), Column("new_mqls", "MQLs"),
                   Column("previous_month_mqls", "Month before"), Column("lead_velocity_rate", "LVR", "rate"),
                   Column("complete", "Complete", "text")], self.months, period="month"),
            Table("weeks", "Week by week", list(WEEK_COLUMNS), self.weeks, period="week"),
            Table("time_to_sql", "Time from first MQL to SQL",
                  [Column("range", "Time to SQL", "text"), Column("sqls", "SQLs"), Column("share", "Share", "rate")],
                  ttq.get("buckets", []), items=("range",), json_path="time_to_sql.buckets",
                  note=", ".join(f"{k.split('_')[0]} {ttq[k]:g} h" for k in ("median_hours", "p25_hours",
                                                                             "p75_hours", "p90_hours")
                                 if ttq.get(k) is not None)),
        ]

    def definitions(self) -> list[Definition]:
        """How the figures are computed."""
        return [
            Definition("Lead velocity rate", "(MQLs of a month - MQLs of the month before) ÷ MQLs of the month before: "
                       "\"the growth rate of your qualified leads over time\"; the headline is the latest complete "
                       "month at the end of the period", SOURCE_ARTICLE),
            Definition("Weeks", "ISO weeks (Monday to Sunday, UTC); the first and last may be partial, cut by the "
                       "period"),
            Definition("Time to SQL", "from a lead's first MQL to its SQL, for the SQLs of the period; SQLs that were "
                       "never an MQL before are counted apart"),
        ]


def _weekly(window: Window, leads: Iterable[LeadCount], moves: Iterable[MoveCount]) -> list[dict[str, Any]]:
    counts: dict[date, Counter[str]] = {monday: Counter() for monday in weeks(window.first_day, window.last_day)}
    for lead in leads:
        counts.setdefault(week_start(lead.day), Counter())["new_leads"] += lead.count
    names = {"mql": "new_mqls", "sql": "new_sqls", "accepted": "accepted_by_sales", "rejected": "rejected_by_sales",
             "customer": "new_customers"}
    for move in moves:
        kind = move_kind(move)
        if kind is not None:
            counts.setdefault(week_start(move.day), Counter())[names[kind]] += move.count
    rows = []
    for monday in sorted(counts):
        c = counts[monday]
        partial = day_start(monday) < window.since or day_start(monday + timedelta(weeks=1)) > window.until
        rows.append({"week": week_key(monday), "starts": monday.isoformat(), "new_leads": c["new_leads"],
                     "new_mqls": c["new_mqls"], "new_sqls": c["new_sqls"], "accepted_by_sales": c["accepted_by_sales"],
                     "rejected_by_sales": c["rejected_by_sales"],
                     "sql_acceptance_rate": rate(c["accepted_by_sales"], c["accepted_by_sales"] + c["rejected_by_sales"]),
                     "new_customers": c["new_customers"], "partial": partial})
    return rows


def _monthly(window: Window, mql_days: Iterable[tuple[date, int]]) -> tuple[list[dict[str, Any]], float | None, str | None]:
    per_month: Counter[date] = Counter()
    for day, count in mql_days:
        per_month[month_start(day)] += count
    rows: list[dict[str, Any]] = []
    headline: tuple[float | None, str | None] = (None, None)
    for first in lvr_months(window):
        before = per_month[previous_month(first)]
        complete = day_start(next_month(first)) <= window.until
        velocity = rate(per_month[first] - before, before)
        rows.append({"month": month_key(first), "new_mqls": per_month[first], "previous_month_mqls": before,
                     "lead_velocity_rate": velocity, "complete": complete})
        if complete:
            headline = (velocity, month_key(first))
    return rows, *headline


def _time_to_sql(promotions: list[SqlWait]) -> dict[str, Any]:
    waits = sorted(hours_to_sql(promotions))
    never_mql = sum(p.count for p in promotions) - len(waits)
    buckets: Counter[str] = Counter()
    for hours in waits:
        buckets[next(label for bound, label in TIME_TO_SQL_BUCKETS if bound is None or hours < bound)] += 1
    total = sum(p.count for p in promotions)
    rows = [{"range": label, "sqls": buckets[label], "share": rate(buckets[label], total)}
            for _bound, label in TIME_TO_SQL_BUCKETS]
    rows.append({"range": "no MQL", "sqls": never_mql, "share": rate(never_mql, total)})
    cuts = statistics.quantiles(waits, n=20, method="inclusive") if len(waits) >= 2 else []
    return {"sqls": total, "median_hours": round(statistics.median(waits), 2) if waits else None,
            "p25_hours": round(cuts[4], 2) if cuts else None, "p75_hours": round(cuts[14], 2) if cuts else None,
            "p90_hours": round(cuts[17], 2) if cuts else None, "buckets": rows}


def build_trends(window: Window, leads: Iterable[LeadCount], moves: Iterable[MoveCount],
                 mql_days: Iterable[tuple[date, int]], promotions: list[SqlWait]) -> Trends:
    """Velocity and trends from the period's counts and the MQLs per day since :func:`lvr_start`."""
    month_rows, velocity, velocity_month = _monthly(window, mql_days)
    return Trends(weeks=_weekly(window, leads, moves), months=month_rows, lead_velocity_rate=velocity,
                  lead_velocity_month=velocity_month, time_to_sql=_time_to_sql(promotions))
