"""The handoff brief (pure): everything a rep needs to call a new SQL, as one JSON-ready dict.

Built from :class:`BriefFacts` (read by :mod:`nurture.application.promote` in the promotion's own transaction, or later
for the digest, the reminder and the feedback page) and the score breakdown::

    {
      "lead_id": 7, "stage": "sql", "promotion_id": 42, "promoted_at": "...",
      "who": {"email", "name", "first_name", "last_name", "title", "company", "industry", "company_size", "country",
              "timezone", "fields": {...custom fields...}, "qualification": {...the fields the sales rules test...}},
      "why_now": {"rule": "intent:demo_request", "reason": "...", "actor": "rule", "at": "...",
                  "event": {"type", "at", "label", "properties"} | null},
      "why": ["Requested a demo (form: demo)", "Also: Asked about pricing", "Webinar attended: 30 points", ...],
      "intent_since": [{"type", "at", "label"}, ...],      # hand-raises after the promotion (a second demo request)
      "score": 87, "score_breakdown": {"total", "behaviour", "fit", "items": [...]},
      "timeline": [{"at", "type", "label", "campaign", "step", "subject", "points", "properties"}, ...],  # newest first
      "nurture": [{"campaign", "name", "status", "enrolled_at", "ended_at", "end_reason",
                   "steps": [{"step", "subject", "status", "sent_at", "opened", "clicked"}]}, ...],
      "owner": {"id", "name", "email", "slack_id", "timezone", "routing"} | null,
      "links": {"accept", "reject"}                        # empty when the process has no link signer
    }

``why`` is what the Slack message lists; ``score`` is the total, as in the documented webhook sample.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from nurture.core.facts import Engagement, LeadView, lead_from_mapping
from nurture.core.promotion import decide
from nurture.core.routing import owner as find_owner
from nurture.core.scoring import ScoreBreakdown
from nurture.definitions.sales import Owner, SalesRules
from nurture.rendering.sales_links import SalesLinks

TIMELINE_LIMIT = 50
"""Events the brief lists (the most recent); the score breakdown still counts every one."""

_RULE = re.compile(r"^((?:intent|score-and-fit|disqualify):[^\s:]+): (.*)$", re.DOTALL)

INTENT_PHRASES = {
    "demo_request": "Requested a demo",
    "pricing_request": "Asked about pricing",
    "contact_sales": "Asked to talk to sales",
    "quote_request": "Requested a quote",
    "free_trial_signup": "Signed up for a free trial",
}
_WHAT_KEYS = ("title", "name", "asset", "webinar", "form", "topic", "product", "plan", "url", "path")
_MAX_TEXT = 300  # characters of one property value kept in the brief
_NO_SCORE = ScoreBreakdown(0.0, 0.0, 0.0, ())


@dataclass(frozen=True)
class TimelineEvent:
    """One engagement event of the lead, with the subject of the email it is about (opens and clicks)."""

    id: int
    type: str
    at: datetime
    recorded_at: datetime
    campaign_id: str | None = None
    step_key: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)
    points: float = 0.0
    subject: str | None = None


@dataclass(frozen=True)
class SentStep:
    """One nurture delivery of one enrollment, and whether the lead opened or clicked it."""

    enrollment_id: int
    step_key: str
    status: str
    subject: str | None = None
    sent_at: datetime | None = None
    opened: bool = False
    clicked: bool = False


@dataclass(frozen=True)
class NurtureRun:
    """One enrollment of the lead in a campaign."""

    id: int
    campaign_id: str
    status: str
    enrolled_at: datetime
    ended_at: datetime | None = None
    end_reason: str | None = None


@dataclass(frozen=True)
class BriefFacts:
    """What the brief is built from: the lead (its columns, custom ``fields``), the promotion (the stage change to
    ``sql``), the event that triggered it, recent events (newest first), enrollments and deliveries."""

    lead: Mapping[str, Any]
    promotion_id: int
    promoted_at: datetime
    reason: str
    actor: str
    trigger: TimelineEvent | None = None
    events: Sequence[TimelineEvent] = ()
    enrollments: Sequence[NurtureRun] = ()
    deliveries: Sequence[SentStep] = ()


def split_reason(reason: str) -> tuple[str | None, str]:
    """``("intent:demo_request", "demo_request (explicit intent)")`` from a rule's stage-change reason; a reason
    written by a person (or an older version) has no rule."""
    match = _RULE.match(reason or "")
    return (match[1], match[2]) if match else (None, reason or "")


def promotion_reason(rule: str, reason: str) -> str:
    """The stage-change reason of a rule's decision: the rule name, then its reason for people."""
    return f"{rule}: {reason}"


def humanize(event_type: str) -> str:
    """``webinar_attended`` -> ``Webinar attended``."""
    text = event_type.replace("_", " ").replace("-", " ").strip()
    return text[:1].upper() + text[1:]


def _what(properties: Mapping[str, Any], *, named: bool = False) -> str | None:
    """What the event was about (its title, name, asset, ... or URL); ``named``: as ``key: value``."""
    for key in _WHAT_KEYS:
        value = properties.get(key)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value).strip():
            text = str(value).strip()[:_MAX_TEXT]
            return f"{key}: {text}" if named else text
    return None


def event_label(event: TimelineEvent) -> str:
    """One line for people: ``Opened "Welcome"``, ``Downloaded Pricing guide``, ``Requested a demo (form: demo)``."""
    properties = event.properties or {}
    what = _what(properties)
    subject = f"\u201c{event.subject}\u201d" if event.subject else "an email"
    kind = event.type
    if kind == "email_open":
        return f"Opened {subject}"
    if kind == "email_click":
        url = properties.get("url")
        return f"Clicked {url} in {subject}" if isinstance(url, str) and url else f"Clicked a link in {subject}"
    if kind in INTENT_PHRASES:
        detail = _what(properties, named=True)
        return INTENT_PHRASES[kind] + (f" ({detail})" if detail else "")
    if kind == "form_submit":
        form = properties.get("form")
        return f"Submitted the {form} form" if form else "Submitted a form"
    if "download" in kind:
        return f"Downloaded {what}" if what else "Downloaded content"
    if kind.endswith("page_view") or kind == "page_visit":
        page = properties.get("url") or properties.get("path") or what
        pricing = kind.startswith("pricing")
        if page:
            return f"{'Viewed pricing' if pricing else 'Visited'}: {page}"
        return "Viewed the pricing page" if pricing else "Visited a page"
    if "webinar" in kind:
        return humanize(kind) + (f": {what}" if what else "")
    return humanize(kind) + (f": {what}" if what else "")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _plain(value: Any) -> Any:
    """A property value as the brief keeps it: scalars (long text cut), small lists of scalars."""
    if isinstance(value, str):
        return value[:_MAX_TEXT]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, list):
        return [_plain(item) for item in value[:20] if not isinstance(item, (dict, list))]
    return str(value)[:_MAX_TEXT]


def _event_json(event: TimelineEvent) -> dict[str, Any]:
    return {
        "at": _iso(event.at), "type": event.type, "label": event_label(event), "campaign": event.campaign_id,
        "step": event.step_key, "subject": event.subject, "points": event.points,
        "properties": {str(k): _plain(v) for k, v in list((event.properties or {}).items())[:20]},
    }


def _intent_only(sales: SalesRules) -> SalesRules:
    promotion = sales.promotion.model_copy(update={"score_and_fit": []})
    return sales.model_copy(update={"promotion": promotion, "disqualify": []})


def is_hand_raise(sales: SalesRules, lead: LeadView, event: Engagement) -> bool:
    """Whether an intent trigger matches ``event`` of ``lead`` (whatever the lead's stage): a request that would
    promote the lead if it were not an SQL already."""
    if event.type not in {trigger.event for trigger in sales.promotion.intent}:
        return False
    decision = decide(_intent_only(sales), replace(lead, stage="lead"), _NO_SCORE, event)
    return decision is not None and decision.rule.startswith("intent:")


def _qualification_fields(sales: SalesRules) -> list[str]:
    names: list[str] = []
    for rule in sales.promotion.score_and_fit:
        names += list(rule.fit or {})
    for trigger in sales.promotion.intent:
        names += list(trigger.when or {})
    return list(dict.fromkeys(name for name in names if name not in ("email", "domain", "stage", "score")))


def _who(lead: Mapping[str, Any], sales: SalesRules) -> dict[str, Any]:
    custom = dict(lead.get("fields") or {})
    name = " ".join(str(lead[k]) for k in ("first_name", "last_name") if lead.get(k)) or None
    qualification = {}
    for field_name in _qualification_fields(sales):
        value = lead.get(field_name) if field_name in lead and field_name != "fields" else custom.get(field_name)
        if value is not None:
            qualification[field_name] = _plain(value)
    return {
        "email": lead.get("email"), "name": name, "first_name": lead.get("first_name"),
        "last_name": lead.get("last_name"), "title": lead.get("title"), "company": lead.get("company"),
        "industry": lead.get("industry"), "company_size": lead.get("company_size"), "country": lead.get("country"),
        "timezone": lead.get("timezone"), "fields": {str(k): _plain(v) for k, v in custom.items()},
        "qualification": qualification,
    }


def _number(value: float) -> str:
    return f"{value:g}"


def _why(rule: str | None, reason: str, trigger: TimelineEvent | None, since: list[TimelineEvent],
         breakdown: ScoreBreakdown) -> list[str]:
    lines: list[str] = []
    if rule is not None and rule.startswith("intent:") and trigger is not None:
        lines.append(event_label(trigger))
    elif rule is not None and rule.startswith("score-and-fit:"):
        lines.append(f"Score and fit ({rule.split(':', 1)[1]}): {reason}")
    elif reason:
        lines.append(reason)
    lines += [f"Also: {event_label(event)}" for event in since]
    behaviour = sorted((i for i in breakdown.items if i.source == "behaviour" and i.points > 0),
                       key=lambda i: -i.points)
    for item in behaviour[:3]:
        count = f", {item.count} events" if item.count > 1 else ""
        lines.append(f"{humanize(item.label)}: {_number(round(item.points, 1))} points{count}")
    lines += [f"Fit: {item.label}" for item in breakdown.items if item.source == "fit" and item.points > 0][:3]
    return lines


def _nurture(facts: BriefFacts, campaign_names: Mapping[str, str]) -> list[dict[str, Any]]:
    steps: dict[int, list[SentStep]] = {}
    for delivery in facts.deliveries:
        steps.setdefault(delivery.enrollment_id, []).append(delivery)
    runs = []
    for run in sorted(facts.enrollments, key=lambda r: (r.enrolled_at, r.id)):
        runs.append({
            "campaign": run.campaign_id, "name": campaign_names.get(run.campaign_id, run.campaign_id),
            "status": run.status, "enrolled_at": _iso(run.enrolled_at), "ended_at": _iso(run.ended_at),
            "end_reason": run.end_reason,
            "steps": [
                {"step": s.step_key, "subject": s.subject, "status": s.status, "sent_at": _iso(s.sent_at),
                 "opened": s.opened, "clicked": s.clicked}
                for s in sorted(steps.get(run.id, []), key=lambda s: (s.sent_at is None, s.sent_at or run.enrolled_at))
            ],
        })
    return runs


def owner_json(owner: Owner | None, routing: str | None = None) -> dict[str, Any] | None:
    """The owner as the brief and the webhook show them (``slack_id`` as the Slack formatter reads it)."""
    if owner is None:
        return None
    found = {"id": owner.id, "name": owner.name, "email": owner.email, "slack_id": owner.slack,
             "timezone": owner.timezone}
    if routing is not None:
        found["routing"] = routing
    return found


def _unknown_owner(value: Any) -> dict[str, Any] | None:
    """An owner the sales file does not know (set by a CRM through the API, an import): shown by name only.

    Never emailed: anyone who can set a lead's fields could otherwise send that lead's data and the signed
    accept/reject links to any address. Owners who get email are the ones in ``sales.yaml``.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    return {"id": None, "name": value.strip(), "email": None, "slack_id": None, "timezone": None}


def build_brief(
    facts: BriefFacts,
    *,
    sales: SalesRules,
    breakdown: ScoreBreakdown,
    links: SalesLinks | None = None,
    campaign_names: Mapping[str, str] | None = None,
    routing: str | None = None,
) -> dict[str, Any]:
    """The brief of one promotion (see the module docstring for its shape).

    ``routing`` names the routing rule that assigned the owner when it is known (at promotion time).
    """
    rule, reason = split_reason(facts.reason)
    trigger = facts.trigger
    view = lead_from_mapping(facts.lead)
    since = [
        event for event in reversed(facts.events)  # oldest first
        if (trigger is None or event.id != trigger.id)
        and (event.recorded_at > facts.promoted_at or (trigger is not None and event.id > trigger.id))
        and is_hand_raise(sales, view, Engagement(event.type, event.at, event.campaign_id, event.step_key,
                                                  event.properties))
    ]
    owner_value = facts.lead.get("owner")
    owner = find_owner(sales, owner_value) if isinstance(owner_value, str) and owner_value.strip() else None
    lead_id = int(facts.lead["id"])
    return {
        "lead_id": lead_id,
        "stage": facts.lead.get("stage"),
        "promotion_id": facts.promotion_id,
        "promoted_at": _iso(facts.promoted_at),
        "who": _who(facts.lead, sales),
        "why_now": {
            "rule": rule, "reason": reason, "actor": facts.actor, "at": _iso(facts.promoted_at),
            "event": _event_json(trigger) if trigger is not None else None,
        },
        "why": _why(rule, reason, trigger, since, breakdown),
        "intent_since": [{"type": e.type, "at": _iso(e.at), "label": event_label(e)} for e in since],
        "score": breakdown.total,
        "score_breakdown": breakdown.to_json(),
        "timeline": [_event_json(event) for event in facts.events[:TIMELINE_LIMIT]],
        "nurture": _nurture(facts, campaign_names or {}),
        "owner": owner_json(owner, routing) if owner is not None else _unknown_owner(owner_value),
        "links": {"accept": links.accept(lead_id, facts.promotion_id),
                  "reject": links.reject(lead_id, facts.promotion_id)} if links is not None else {},
    }


def lead_json(brief: Mapping[str, Any]) -> dict[str, Any]:
    """The webhook's ``lead`` object: who, with stage, score and owner (the owner's email)."""
    who = brief["who"]
    owner = brief.get("owner") or {}
    return {
        "id": brief["lead_id"], "email": who["email"], "first_name": who["first_name"],
        "last_name": who["last_name"], "company": who["company"], "title": who["title"], "industry": who["industry"],
        "company_size": who["company_size"], "country": who["country"], "stage": brief["stage"],
        "score": brief["score"], "owner": owner.get("email"),
    }
