"""Money: spend set against what it bought, per source and per month. Cost per lead, per MQL, per SQL and per
customer (CAC).

Spend is spread evenly over the days of its period (a month's 3,100 is 100 a day in a 31-day month); the report counts
the part of each period inside its window, to the second. Counts are those of the funnel (leads created, moves to mql,
sql and customer in the window), per the lead's acquisition source. One report sums one currency: spend in several
currencies in the window is an error, not a sum.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nurture.core.attribution import UNATTRIBUTED
from nurture.core.metrics.facts import LeadCount, MoveCount
from nurture.core.metrics.funnel import move_kind
from nurture.core.metrics.periods import DAY, Window, day_start, month_key, months, next_month, overlap
from nurture.core.metrics.tables import SOURCE_ARTICLE, Column, Definition, Summary, Table, cost
from nurture.definitions.spend import SpendEntry

COUNTED = ("leads", "mqls", "sqls", "customers")
_KIND_COUNTED = {"mql": "mqls", "sql": "sqls", "customer": "customers"}
TOTAL = "(all sources)"


def _columns(*first: Column) -> list[Column]:
    return [*first, Column("spend", "Spend", "money"), Column("leads", "Leads"), Column("mqls", "MQLs"),
            Column("sqls", "SQLs"), Column("customers", "Customers"), Column("cost_per_lead", "Per lead", "money"),
            Column("cost_per_mql", "Per MQL", "money"), Column("cost_per_sql", "Per SQL", "money"),
            Column("cac", "CAC", "money")]


def _figures(spend: float | None, counts: Counter[str]) -> dict[str, Any]:
    return {"spend": None if spend is None else round(spend, 2), **{name: counts[name] for name in COUNTED},
            "cost_per_lead": cost(spend, counts["leads"]), "cost_per_mql": cost(spend, counts["mqls"]),
            "cost_per_sql": cost(spend, counts["sqls"]), "cac": cost(spend, counts["customers"])}


@dataclass
class Money:
    """Spend and what it bought in the period."""

    currency: str | None = None
    total: dict[str, Any] = field(default_factory=dict)
    by_source: list[dict[str, Any]] = field(default_factory=list)
    by_campaign: list[dict[str, Any]] = field(default_factory=list)
    by_month: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    note: str = ""

    key = "money"
    title = "Money"

    def to_json(self) -> dict[str, Any]:
        """JSON, keys named for people; amounts in ``currency``, to the cent."""
        return {"currency": self.currency, "error": self.error, "note": self.note or None, "total": self.total,
                "by_source": self.by_source, "by_source_campaign": self.by_campaign, "by_month": self.by_month}

    def summary(self) -> Summary:
        """The headline figures."""
        summary = Summary()
        for key, label in (("spend", "Spend"), ("cost_per_lead", "Cost per lead"), ("cost_per_mql", "Cost per MQL"),
                           ("cost_per_sql", "Cost per SQL"), ("cac", "CAC")):
            summary.add(f"total.{key}", label, self.total.get(key), "money", self.currency or "")
        return summary

    def tables(self) -> list[Table]:
        """Totals, per source, per source campaign (where spend names one) and per month."""
        return [
            Table("total", "All sources", _columns(), [self.total] if self.total else [], note=self.note),
            Table("by_source", "By source", _columns(Column("source", "Source", "text")), self.by_source,
                  items=("source",)),
            Table("by_source_campaign", "By source campaign (spend given per campaign)",
                  _columns(Column("source", "Source", "text"), Column("campaign", "Campaign", "text")),
                  self.by_campaign, items=("source", "campaign")),
            Table("by_month", "By month", _columns(Column("month", "Month", "text")), self.by_month, period="month"),
        ]

    def definitions(self) -> list[Definition]:
        """How the figures are computed."""
        return [
            Definition("Spend", "each period's amount spread evenly over its days; the days (and part days) inside the "
                       "report's period count. Imported spend replaces campaigns/spend.yaml for the same period, "
                       "source and campaign"),
            Definition("Cost per lead, per MQL, per SQL", "spend ÷ new leads, MQLs or SQLs of the period (of the same "
                       "source in a source's row; all leads, paid or not, in the total): \"the financial investment "
                       "necessary to acquire an MQL or SQL\"", SOURCE_ARTICLE),
            Definition("CAC", "customer acquisition cost: spend ÷ new customers of the period, \"the overall cost "
                       "involved in bringing a customer from lead status to closing\"", SOURCE_ARTICLE),
        ]


def _allocate(entries: Sequence[SpendEntry], window: Window) -> dict[tuple[str, str, str], float]:
    """Spend in currency units per (month, source, campaign) inside the window."""
    spent: dict[tuple[str, str, str], float] = defaultdict(float)
    for entry in entries:
        start, end = day_start(entry.start), day_start(entry.end + DAY)
        length = end - start
        for first in months(max(entry.start, window.first_day), min(entry.end, window.last_day)):
            part = overlap(start, end, max(window.since, day_start(first)), min(window.until, day_start(next_month(first))))
            if part:
                spent[(month_key(first), entry.source, entry.campaign)] += entry.amount_cents / 100 * (part / length)
    return spent


def build_money(window: Window, leads: Iterable[LeadCount], moves: Iterable[MoveCount],
                entries: Sequence[SpendEntry]) -> Money:
    """Money from the period's counts and the spend that overlaps it."""
    currencies = sorted({e.currency for e in entries})
    if len(currencies) > 1:
        return Money(error=f"the spend of this period is in {len(currencies)} currencies ({', '.join(currencies)}): a "
                           "report sums one currency. Keep one currency per source, or narrow the period")
    counts: dict[tuple[str, str, str], Counter[str]] = defaultdict(Counter)  # (month, source, campaign)
    for lead in leads:
        counts[(month_key(lead.day), lead.source or UNATTRIBUTED, lead.source_campaign or "")]["leads"] += lead.count
    for move in moves:
        kind = _KIND_COUNTED.get(move_kind(move) or "")
        if kind:
            counts[(month_key(move.day), move.source or UNATTRIBUTED, move.source_campaign or "")][kind] += move.count
    spent = _allocate(entries, window)
    money = Money(currency=currencies[0] if currencies else None)
    if window.campaign:
        money.note = (f"counts are of leads in nurture campaign {window.campaign}; spend is per source, not split by "
                      "nurture campaign, so costs are left out")
        spent = {}
    if not entries:
        money.note = money.note or "no spend in this period: nurture spend import FILE, or campaigns/spend.yaml"

    def amount(keys: Iterable[tuple[str, str, str]]) -> float | None:
        found = [spent[k] for k in keys if k in spent]
        return sum(found) if found else None

    def total_of(match: Any) -> Counter[str]:
        summed: Counter[str] = Counter()
        for key, found in counts.items():
            if match(key):
                summed.update(found)
        return summed

    money.total = _figures(amount(spent), total_of(lambda k: True))
    sources = sorted({k[1] for k in counts} | {k[1] for k in spent})
    money.by_source = [{"source": s, **_figures(amount(k for k in spent if k[1] == s), total_of(lambda k, s=s: k[1] == s))}
                       for s in sources]
    campaigns = sorted({(k[1], k[2]) for k in spent if k[2]})
    money.by_campaign = [
        {"source": s, "campaign": c, **_figures(amount(k for k in spent if k[1:] == (s, c)),
                                                total_of(lambda k, s=s, c=c: k[1:] == (s, c)))}
        for s, c in campaigns
    ]
    month_keys = [month_key(first) for first in months(window.first_day, window.last_day)]
    money.by_month = [{"month": m, **_figures(amount(k for k in spent if k[0] == m), total_of(lambda k, m=m: k[0] == m))}
                      for m in month_keys]
    return money
