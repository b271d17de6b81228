"""The dashboard: the report (:mod:`nurture.application.report`) on one page for a marketing manager: the funnel and
velocity, the money figures, weekly trends as charts, the sales queue, a block per A/B step (the variants' rates on
its goal, the difference with its interval, the verdict, the recorded winner) and per holdout (sent against held
out, the lift with its interval, the verdict), every campaign's steps; any further section of the report is shown
too, as its figures and tables.

Aggregates only: no lead's personal data (the sales queue shows lead ids). With ``NURTURE_API_KEY`` set, the browser
asks for it (HTTP Basic, any user name, the key as password); without one the dashboard is off, like the rest of the
API. Every figure carries ``data-metric="<section>.<json path>"``: the place of its value in ``nurture report --json``.
"""

from __future__ import annotations

import base64
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from nurture.application.report import build_report
from nurture.core.metrics.tables import format_value
from nurture.definitions.campaign import Campaign, Step
from nurture.definitions.durations import format_duration
from nurture.definitions.sales import load_sales
from nurture.definitions.spend import load_spend
from nurture.intake.auth import NOT_CONFIGURED, key_matches
from nurture.intake.charts import bar_chart, line_chart
from nurture.intake.context import ApiError, context

router = APIRouter(include_in_schema=False)

PAGE = Environment(loader=FileSystemLoader(Path(__file__).parent), autoescape=select_autoescape(default=True),
                   trim_blocks=True, lstrip_blocks=True).get_template("dashboard.html.j2")
KNOWN_SECTIONS = ("funnel", "money", "velocity", "sales", "steps", "ab_tests", "holdouts")


def _authorized(request: Request) -> None:
    key = context(request).settings.api_key
    if not key:
        raise ApiError(503, NOT_CONFIGURED)
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() == "basic":
        try:
            _user, _, password = base64.b64decode(encoded).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            password = ""
        if key_matches(password, key):
            return
    raise ApiError(401, "the dashboard needs the API key as the password", {"WWW-Authenticate": 'Basic realm="nurture"'})


def _when(step: Step) -> str:
    """When a step runs, as a marketer reads it."""
    if step.wait_for is not None:
        after = f"{format_duration(step.wait)}, then " if step.wait else ""
        return f"{after}up to {format_duration(step.wait_for.timeout)} for {step.wait_for.event}"
    return f"after {format_duration(step.wait)}" if step.wait else "at once"


def _campaign_rows(campaign: Campaign, steps_section: Any) -> list[dict[str, Any]]:
    rows = []
    for step in campaign.steps:
        found: list[Any] = [e for e in steps_section.emails if e["campaign"] == campaign.id and e["step"] == step.id]
        found += [o for o in steps_section.outcomes if o["campaign"] == campaign.id and o["step"] == step.id]
        rows.append({"id": step.id, "action": "wait for" if step.wait_for is not None else step.action,
                     "when": _when(step), "rows": found or [{"variant": None, "sent": None, "failed": None,
                                                             "open_rate": None, "click_rate": None}]})
    return rows


def _charts(velocity: Any) -> dict[str, str]:
    weeks = velocity.weeks
    labels = [w["week"][5:] for w in weeks]
    buckets = velocity.time_to_sql.get("buckets", [])
    return {
        "weeks": line_chart(labels, {"Leads": [w["new_leads"] for w in weeks], "MQLs": [w["new_mqls"] for w in weeks],
                                     "SQLs": [w["new_sqls"] for w in weeks],
                                     "Customers": [w["new_customers"] for w in weeks]}, label="weekly funnel"),
        "lvr": bar_chart([m["month"] for m in velocity.months],
                         [None if m["lead_velocity_rate"] is None else round(m["lead_velocity_rate"] * 100, 1)
                          for m in velocity.months], label="lead velocity rate", unit="%", signed=True),
        "time_to_sql": bar_chart([b["range"] for b in buckets], [b["sqls"] for b in buckets],
                                 label="time to SQL"),
    }


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard(request: Request, days: int = 30, campaign: str = "") -> HTMLResponse:
    """The dashboard page (HTML)."""
    _authorized(request)
    ctx = context(request)
    days = min(max(days, 1), 3650)
    chosen = campaign if campaign in ctx.catalog.campaigns else None
    now = ctx.clock()
    campaigns_dir = ctx.settings.campaigns_dir
    sales, _sales_problems = load_sales(campaigns_dir)  # problems: `nurture check` reports them; no SLA here
    spend, spend_problems = load_spend(campaigns_dir)
    report = await run_in_threadpool(
        build_report, ctx.engine, since=now - timedelta(days=days), until=now, now=now, catalog=ctx.catalog,
        sales=sales, spend=spend, campaign=chosen)
    money = report.section("money")
    if spend_problems and not money.error:
        money.error = "campaigns/spend.yaml has problems (nurture check): " + "; ".join(map(str, spend_problems[:3]))
    steps = report.section("steps")
    choices = sorted(ctx.catalog.campaigns.values(), key=lambda c: (-c.priority, c.id))
    campaigns = [{"id": c.id, "name": c.name, "priority": c.priority, "paused": c.paused,
                  "steps": _campaign_rows(c, steps)} for c in choices if chosen is None or c.id == chosen]
    html = PAGE.render(report=report, window=report.window, campaigns=campaigns, choices=choices, fmt=format_value,
                       days=days,
                       charts=_charts(report.section("velocity")), known=KNOWN_SECTIONS)
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})
