"""Outbox payloads built from briefs (pure): the sales webhooks and the owner's emails, text and HTML.

- :func:`promoted_webhook`, :func:`sla_webhook`: ``sales_webhook`` rows (``lead.promoted``, ``lead.sla_overdue``) in
  the shape ``docs/webhooks.md`` documents: ``type``, ``lead``, ``brief``, ``owner``, ``links`` (the outbox processor
  adds ``id`` and ``created_at``, and turns the row into Slack Block Kit for a Slack URL).
- :func:`promoted_email`, :func:`sla_email`, :func:`digest_email`: ``owner_email`` rows (``to``, ``subject``,
  ``text``, ``html``), sent through the mail transport.

The HTML is rendered by a sandboxed Jinja environment with autoescaping on: every value in a brief came from a form
or an API client, so none of it is trusted markup. Times are shown in the owner's timezone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from functools import cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nurture.definitions.sales import Owner
from nurture.handoff.brief import lead_json

if TYPE_CHECKING:  # Jinja is imported when an HTML email is first built, not by every process that imports this
    from jinja2 import Template
    from jinja2.sandbox import ImmutableSandboxedEnvironment

PROMOTED, SLA_OVERDUE = "lead.promoted", "lead.sla_overdue"
TIMELINE_IN_EMAIL = 12  # the email shows the latest events; the webhook carries the brief's full timeline


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _parse(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def local_time(value: str | datetime | None, zone_name: str | None) -> str:
    """``Mon 9 Mar 2026, 10:00 CET``: a stored UTC time as the owner reads it."""
    moment = _parse(value)
    if moment is None:
        return ""
    local = moment.astimezone(_zone(zone_name))
    return f"{local:%a} {local.day} {local:%b %Y, %H:%M} {local.tzname()}"


def waited(duration: timedelta) -> str:
    """``2d 3h``, ``4h 12m``, ``7m``: how long an SQL has been waiting."""
    minutes = max(int(duration.total_seconds() // 60), 0)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m"


def display_name(brief: Mapping[str, Any]) -> str:
    """The lead's name, or its email."""
    who = brief["who"]
    return str(who.get("name") or who.get("email") or "")


def one_line(text: str) -> str:
    """A header-safe line: lead data (names, companies) may hold line breaks and control characters."""
    return "".join(ch for ch in " ".join(text.split()) if ch.isprintable())


def headline(brief: Mapping[str, Any]) -> str:
    """``Ada Lovelace, VP Engineering at Analytical Engines``."""
    who = brief["who"]
    text = display_name(brief)
    if who.get("title"):
        text += f", {who['title']}"
    if who.get("company"):
        text += f" at {who['company']}"
    return text


def _company_line(who: Mapping[str, Any]) -> str:
    details = [str(who[k]) for k in ("industry",) if who.get(k)]
    if who.get("company_size"):
        details.append(f"{who['company_size']} employees")
    if who.get("country"):
        details.append(str(who["country"]))
    company = str(who.get("company") or "")
    return f"{company} ({', '.join(details)})" if details and company else company or ", ".join(details)


_SHOWN_APART = ("email", "name", "first_name", "last_name", "title", "company", "industry", "company_size", "country",
                "timezone")


def _details(who: Mapping[str, Any]) -> dict[str, Any]:
    """Custom fields and the qualifying answers, without what the email shows on its own lines already."""
    merged = {**who.get("fields", {}), **who.get("qualification", {})}
    return {name: value for name, value in merged.items() if name not in _SHOWN_APART}


def _shown(value: Any) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _signed(points: float) -> str:
    return f"{points:+.0f}" if abs(points) >= 1 or points == 0 else f"{points:+.1f}"


def _nurture_line(run: Mapping[str, Any], zone: str | None) -> str:
    steps = run.get("steps") or []
    sent = [s for s in steps if s.get("status") == "sent"]
    parts = [f"{run['name']}: {len(sent)} email{'s' if len(sent) != 1 else ''} sent"]
    for step in sent:
        engaged = "clicked" if step.get("clicked") else "opened" if step.get("opened") else "not opened"
        subject = f" \u201c{step['subject']}\u201d" if step.get("subject") else ""
        parts.append(f"    {step['step']}{subject}, {local_time(step.get('sent_at'), zone)}: {engaged}")
    ended = run.get("end_reason") or ("still running" if run.get("status") == "active" else run.get("status"))
    parts[0] += f" ({_ended(ended)})"
    return "\n".join(parts)


def _ended(reason: str | None) -> str:
    if reason == "stage:sql":
        return "stopped: promoted to SQL"
    if reason and reason.startswith("stage:"):
        return f"stopped: stage {reason.split(':', 1)[1]}"
    if reason and reason.startswith("goal:"):
        return f"goal reached: {reason.split(':', 1)[1]}"
    return str(reason or "")


def _score_lines(brief: Mapping[str, Any]) -> list[str]:
    breakdown = brief["score_breakdown"]
    lines = [f"Score {_shown(round(breakdown['total'], 1))} (behaviour {_shown(round(breakdown['behaviour'], 1))}, "
             f"fit {_shown(round(breakdown['fit'], 1))})"]
    for item in sorted(breakdown["items"], key=lambda i: -abs(i["points"]))[:8]:
        count = f" x{item['count']}" if item.get("count", 1) > 1 else ""
        lines.append(f"  {_signed(item['points']):>4}  {item['label']}{count} ({item['source']})")
    return lines


def brief_text(brief: Mapping[str, Any], zone: str | None) -> str:
    """The brief as plain text (the body of the handoff email, and of the reminder)."""
    who = brief["who"]
    lines = [f"Why now ({local_time(brief['why_now']['at'], zone)}):"]
    lines += [f"  - {line}" for line in brief["why"]]
    links = brief.get("links") or {}
    if links:
        lines += ["", f"Accept: {links['accept']}", f"Reject: {links['reject']}"]
    lines += ["", "Who", f"  Name: {display_name(brief)}", f"  Email: {who['email']}"]
    if who.get("title"):
        lines.append(f"  Title: {who['title']}")
    company = _company_line(who)
    if company:
        lines.append(f"  Company: {company}")
    details = _details(who)
    if details:
        lines.append("  Details: " + "; ".join(f"{k}: {_shown(v)}" for k, v in details.items()))
    lines += ["", *_score_lines(brief)]
    if brief["timeline"]:
        lines += ["", "Recent activity"]
        lines += [f"  {local_time(e['at'], zone)}  {e['label']}" for e in brief["timeline"][:TIMELINE_IN_EMAIL]]
    if brief["nurture"]:
        lines += ["", "Nurture"]
        lines += [f"  {_nurture_line(run, zone)}" for run in brief["nurture"]]
    return "\n".join(lines) + "\n"


_BRIEF_HTML = """\
{% macro brief_block(b, zone) %}
<p><strong>Why now</strong> ({{ b.why_now.at | local(zone) }}):</p>
<ul>{% for line in b.why %}<li>{{ line }}</li>{% endfor %}</ul>
{% if b.links %}
<p><a href="{{ b.links.accept }}" style="padding:6px 14px;background:#1a7f37;color:#fff;text-decoration:none;\
border-radius:4px">Accept</a> &nbsp;
<a href="{{ b.links.reject }}" style="padding:6px 14px;background:#cf222e;color:#fff;text-decoration:none;\
border-radius:4px">Reject</a></p>
{% endif %}
<h3>Who</h3>
<table cellpadding="3">
<tr><td>Name</td><td>{{ b.who.name or b.who.email }}</td></tr>
<tr><td>Email</td><td><a href="mailto:{{ b.who.email }}">{{ b.who.email }}</a></td></tr>
{% if b.who.title %}<tr><td>Title</td><td>{{ b.who.title }}</td></tr>{% endif %}
{% if company %}<tr><td>Company</td><td>{{ company }}</td></tr>{% endif %}
{% for name, value in details.items() %}<tr><td>{{ name }}</td><td>{{ value | shown }}</td></tr>{% endfor %}
</table>
<h3>Score {{ b.score_breakdown.total | round(1) | shown }}</h3>
<p>behaviour {{ b.score_breakdown.behaviour | round(1) | shown }},
fit {{ b.score_breakdown.fit | round(1) | shown }}</p>
<table cellpadding="3">
{% for item in items %}<tr><td align="right">{{ item.points | signed }}</td><td>{{ item.label }}\
{% if item.count > 1 %} &times;{{ item.count }}{% endif %}</td><td>{{ item.source }}</td></tr>{% endfor %}
</table>
{% if timeline %}
<h3>Recent activity</h3>
<table cellpadding="3">
{% for e in timeline %}<tr><td>{{ e.at | local(zone) }}</td><td>{{ e.label }}</td></tr>{% endfor %}
</table>
{% endif %}
{% if b.nurture %}
<h3>Nurture</h3>
<ul>
{% for run in b.nurture %}<li>{{ run.name }} ({{ (run.end_reason or run.status) | ended }})
<ul>{% for s in run.steps if s.status == "sent" %}<li>{{ s.step }}
{% if s.subject %} \u201c{{ s.subject }}\u201d{% endif %}, {{ s.sent_at | local(zone) }}:
{{ "clicked" if s.clicked else "opened" if s.opened else "not opened" }}</li>{% endfor %}</ul>
</li>{% endfor %}
</ul>
{% endif %}
{% endmacro %}
"""

_PROMOTED_HTML = _BRIEF_HTML + """\
<!doctype html>
<html><body style="font-family:sans-serif;font-size:14px;color:#222">
<h2>{{ intro }}</h2>
{{ brief_block(brief, zone) }}
</body></html>
"""

_DIGEST_HTML = """\
<!doctype html>
<html><body style="font-family:sans-serif;font-size:14px;color:#222">
<h2>{{ title }}</h2>
{% for entry in entries %}
<h3>{{ entry.headline }}</h3>
<p>Score {{ entry.brief.score | round(1) | shown }}; waiting {{ entry.waiting }}
(since {{ entry.brief.promoted_at | local(zone) }})</p>
<ul>{% for line in entry.brief.why[:3] %}<li>{{ line }}</li>{% endfor %}</ul>
{% if entry.brief.links %}<p><a href="{{ entry.brief.links.accept }}">Accept</a> &middot;
<a href="{{ entry.brief.links.reject }}">Reject</a></p>{% endif %}
{% endfor %}
</body></html>
"""


@cache
def _environment() -> ImmutableSandboxedEnvironment:
    """The sandbox the HTML emails are rendered in, made with the first of them (Jinja is imported then)."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    environment = ImmutableSandboxedEnvironment(autoescape=True, undefined=StrictUndefined, trim_blocks=True,
                                                lstrip_blocks=True)
    environment.filters.update(local=local_time, shown=_shown, signed=_signed, ended=_ended)
    return environment


@cache
def _template(source: str) -> Template:
    return _environment().from_string(source)


def _html(source: str, brief: Mapping[str, Any] | None, zone: str | None, **values: Any) -> str:
    extra: dict[str, Any] = {}
    if brief is not None:
        who = brief["who"]
        extra = dict(
            brief=brief, company=_company_line(who), details=_details(who),
            items=sorted(brief["score_breakdown"]["items"], key=lambda i: -abs(i["points"]))[:8],
            timeline=brief["timeline"][:TIMELINE_IN_EMAIL],
        )
    return _template(source).render(zone=zone, **extra, **values)


def _owner_of(brief: Mapping[str, Any]) -> Mapping[str, Any] | None:
    owner = brief.get("owner")
    return owner if isinstance(owner, Mapping) and owner.get("email") else None


# -- lead.promoted ------------------------------------------------------------------------------------------------


def promoted_webhook(brief: Mapping[str, Any]) -> dict[str, Any]:
    """The ``lead.promoted`` sales webhook payload."""
    owner = brief.get("owner") or None
    return {
        "type": PROMOTED,
        "promotion_id": brief["promotion_id"],
        "lead": lead_json(brief),
        "brief": dict(brief),
        "owner": {"email": owner.get("email"), "slack_id": owner.get("slack_id"), "id": owner.get("id"),
                  "name": owner.get("name")} if owner else None,
        "links": dict(brief.get("links") or {}),
    }


def promoted_email(brief: Mapping[str, Any]) -> dict[str, Any] | None:
    """The handoff email to the lead's owner; None when the lead has no owner to write to."""
    owner = _owner_of(brief)
    if owner is None:
        return None
    zone = owner.get("timezone")
    intro = f"New sales qualified lead for you: {headline(brief)}"
    text = f"{intro}\n\n{brief_text(brief, zone)}"
    first_why = brief["why"][0] if brief["why"] else "promoted to SQL"
    return {
        "to": owner["email"],
        "subject": one_line(f"New SQL: {headline(brief)} \u2014 {first_why}")[:200],
        "text": text,
        "html": _html(_PROMOTED_HTML, brief, zone, intro=intro),
    }


# -- lead.sla_overdue ---------------------------------------------------------------------------------------------


def sla_webhook(brief: Mapping[str, Any], *, waiting: timedelta, sla: timedelta) -> dict[str, Any]:
    """The ``lead.sla_overdue`` sales webhook payload: the SQL, how long it has waited, the SLA, the brief."""
    payload = promoted_webhook(brief)
    payload.update(
        type=SLA_OVERDUE, waited_seconds=int(waiting.total_seconds()), sla_seconds=int(sla.total_seconds()),
        text=f"{headline(brief)} has waited {waited(waiting)} for a decision (SLA {waited(sla)})",
    )
    return payload


def sla_email(brief: Mapping[str, Any], *, waiting: timedelta, sla: timedelta) -> dict[str, Any] | None:
    """The reminder to the owner of an SQL that waited longer than the SLA; None without an owner."""
    owner = _owner_of(brief)
    if owner is None:
        return None
    zone = owner.get("timezone")
    intro = (f"Reminder: {headline(brief)} has waited {waited(waiting)} for your decision "
             f"(the agreed time is {waited(sla)})")
    return {
        "to": owner["email"],
        "subject": one_line(f"Waiting {waited(waiting)}: {headline(brief)}")[:200],
        "text": f"{intro}\n\n{brief_text(brief, zone)}",
        "html": _html(_PROMOTED_HTML, brief, zone, intro=intro),
    }


# -- the daily digest ---------------------------------------------------------------------------------------------


def digest_email(owner: Owner, day: date, briefs: Sequence[Mapping[str, Any]], now: datetime) -> dict[str, Any]:
    """The owner's digest for their local ``day``: every open SQL they own, the longest waiting first."""
    zone = owner.timezone
    ordered = sorted(briefs, key=lambda b: b["promoted_at"] or "")
    entries: list[dict[str, Any]] = [
        {"brief": b, "headline": headline(b), "waiting": waited(now - (_parse(b["promoted_at"]) or now))}
        for b in ordered
    ]
    count = len(entries)
    title = f"{count} open SQL{'s' if count != 1 else ''} waiting for your decision"
    lines = [f"{title} ({day:%a} {day.day} {day:%b %Y})", ""]
    for entry in entries:
        brief = entry["brief"]
        lines.append(f"* {entry['headline']}")
        lines.append(f"  Score {_shown(round(brief['score'], 1))}; waiting {entry['waiting']} "
                     f"(since {local_time(brief['promoted_at'], zone)})")
        lines += [f"  - {line}" for line in brief["why"][:3]]
        links = brief.get("links") or {}
        if links:
            lines += [f"  Accept: {links['accept']}", f"  Reject: {links['reject']}"]
        lines.append("")
    return {
        "to": owner.email,
        "subject": f"Your open SQLs: {count} waiting ({day:%a} {day.day} {day:%b})",
        "text": "\n".join(lines),
        "html": _html(_DIGEST_HTML, None, zone, title=title, entries=entries),
    }
