"""The dashboard: the funnel, each campaign's steps and how they perform, on one page for marketers.

Aggregates only (no lead's personal data). With ``NURTURE_API_KEY`` set, the browser asks for it (HTTP Basic, any
user name, the key as password); without one the dashboard is off, like the rest of the API.
"""

from __future__ import annotations

import base64
from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from jinja2 import Environment, select_autoescape

from nurture.definitions.durations import format_duration
from nurture.intake.auth import NOT_CONFIGURED, key_matches
from nurture.intake.context import ApiError, context
from nurture.storage.reports import CampaignStats, StepStats, build_report

router = APIRouter(include_in_schema=False)

PAGE = Environment(autoescape=select_autoescape(default=True, default_for_string=True)).from_string("""\
<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nurture dashboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:14px/1.45 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
 header{background:#1d2330;color:#fff;padding:14px 24px;display:flex;gap:16px;align-items:baseline}
 header h1{font-size:18px;margin:0} header form{margin-left:auto;color:#c9cfdb}
 main{padding:20px 24px;max-width:1200px} section{background:#fff;border-radius:8px;padding:16px 20px;margin-bottom:18px;
 box-shadow:0 1px 2px rgba(0,0,0,.06)} h2{font-size:15px;margin:0 0 12px}
 .tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px}
 .tile{border:1px solid #e3e6ec;border-radius:6px;padding:10px 12px} .tile b{display:block;font-size:22px}
 .tile span{color:#5b6475;font-size:12px} table{border-collapse:collapse;width:100%}
 th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #eceef2;font-variant-numeric:tabular-nums}
 th{color:#5b6475;font-weight:600;font-size:12px} td.n,th.n{text-align:right} .muted{color:#8a92a3}
 .paused{color:#b54708;font-weight:600}
</style></head>
<body><header><h1>nurture</h1><span>{{ since }} &ndash; {{ until }}</span>
<form method="get">last <select name="days" onchange="this.form.submit()">
{% for d in [7, 30, 90, 365] %}<option value="{{ d }}"{% if d == days %} selected{% endif %}>{{ d }} days</option>{% endfor %}
</select></form></header>
<main>
<section id="funnel"><h2>Funnel</h2><div class="tiles">
 <div class="tile"><span>New MQLs</span><b id="new-mql">{{ f.new_mql }}</b><span>{{ f.mql_per_week }}/week{% if f.mql_velocity_change is not none %}, {{ "%+.0f"|format(f.mql_velocity_change * 100) }}% vs previous{% endif %}</span></div>
 <div class="tile"><span>New SQLs</span><b id="new-sql">{{ f.new_sql }}</b><span>MQL&rarr;SQL {{ pct(f.mql_to_sql_rate) }}</span></div>
 <div class="tile"><span>Accepted by sales</span><b>{{ f.accepted }}</b><span>acceptance {{ pct(f.sql_acceptance_rate) }}</span></div>
 <div class="tile"><span>Rejected by sales</span><b>{{ f.rejected }}</b><span>recycled or disqualified</span></div>
 <div class="tile"><span>Median MQL&rarr;SQL</span><b>{{ "-" if f.median_hours_mql_to_sql is none else "%.1f h"|format(f.median_hours_mql_to_sql) }}</b><span>time to sales</span></div>
 <div class="tile"><span>New customers</span><b>{{ f.customers }}</b><span>&nbsp;</span></div>
</div></section>
<section id="campaigns"><h2>Campaigns</h2><table>
<tr><th>Campaign</th><th class="n">Priority</th><th class="n">Enrolled</th><th class="n">Active</th><th class="n">Completed</th>
<th class="n">Sent</th><th class="n">Open</th><th class="n">Click</th><th>Exits</th></tr>
{% for c in campaigns %}<tr><td>{{ c.name }} <span class="muted">{{ c.id }}</span>{% if c.paused %} <span class="paused">paused</span>{% endif %}</td>
<td class="n">{{ c.priority }}</td><td class="n">{{ c.stats.enrolled }}</td><td class="n">{{ c.stats.active }}</td>
<td class="n">{{ c.stats.completed }}</td><td class="n">{{ c.stats.sent }}</td><td class="n">{{ pct(c.stats.open_rate) }}</td>
<td class="n">{{ pct(c.stats.click_rate) }}</td>
<td>{% for reason, n in c.stats.exited|dictsort %}{{ reason }} {{ n }}{% if not loop.last %}, {% endif %}{% else %}<span class="muted">-</span>{% endfor %}</td></tr>
{% endfor %}</table></section>
{% for c in campaigns %}<section class="steps" id="campaign-{{ c.id }}"><h2>{{ c.name }}: steps</h2><table>
<tr><th>Step</th><th>Does</th><th>Wait</th><th>Variant</th><th class="n">Sent</th><th class="n">Failed</th><th class="n">Open</th><th class="n">Click</th></tr>
{% for s in c.steps %}{% for v in s.rows %}<tr>{% if loop.first %}<td rowspan="{{ s.rows|length }}">{{ s.id }}</td>
<td rowspan="{{ s.rows|length }}">{{ s.action }}</td><td rowspan="{{ s.rows|length }}">{{ s.wait }}</td>{% endif %}
<td>{{ v.variant or "-" }}</td><td class="n">{{ v.sent }}</td><td class="n">{{ v.failed }}</td>
<td class="n">{{ pct(v.open_rate) }}</td><td class="n">{{ pct(v.click_rate) }}</td></tr>{% endfor %}{% endfor %}
</table></section>{% endfor %}
</main></body></html>
""")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


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


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard(request: Request, days: int = 30) -> HTMLResponse:
    """The dashboard page (HTML)."""
    _authorized(request)
    ctx = context(request)
    days = min(max(days, 1), 3650)
    until = ctx.clock()
    since = until - timedelta(days=days)
    report = await run_in_threadpool(build_report, ctx.engine, since=since, until=until)
    by_campaign = {c.campaign: c for c in report.campaigns}
    campaigns = []
    for campaign in sorted(ctx.catalog.campaigns.values(), key=lambda c: (-c.priority, c.id)):
        steps = []
        for step in campaign.steps:
            rows = [s for s in report.steps if s.campaign == campaign.id and s.step == step.id]
            steps.append({"id": step.id, "action": step.action, "wait": format_duration(step.wait),
                          "rows": rows or [StepStats(campaign.id, step.id, None)]})
        campaigns.append({"id": campaign.id, "name": campaign.name, "priority": campaign.priority,
                          "paused": campaign.paused, "stats": by_campaign.get(campaign.id, CampaignStats(campaign.id)),
                          "steps": steps})
    html = PAGE.render(f=report.funnel, campaigns=campaigns, pct=_pct, days=days,
                       since=f"{since:%Y-%m-%d}", until=f"{until:%Y-%m-%d}")
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})
