"""Time-travel dry run of one campaign for one lead: no database, no sending, the same engine as the worker."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from nurture.core.engine import Action, EnrollmentState, advance, lead_zone
from nurture.core.facts import BOUNCE, CLICK, OPEN, UNSUBSCRIBE, Engagement, History, LeadView, Send
from nurture.definitions.campaign import Campaign
from nurture.definitions.policy import Policy
from nurture.errors import InvalidInput

EMAIL_EVENTS = (OPEN, CLICK)


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; a time without an offset is taken as UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"invalid time {text!r}: use ISO 8601, e.g. 2026-03-02T09:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_event(text: str, campaign_id: str) -> Engagement:
    """``TYPE[:DETAIL]@ISO8601``: ``email_click:case-study@...`` (the email of a step), ``content_download:guide@...``
    (a content id), ``stage:sql@...`` (a stage change), ``unsubscribe@...``, ``demo_request@...``."""
    what, sep, when = text.rpartition("@")
    if not sep or not what:
        raise InvalidInput(f"invalid event {text!r}: use TYPE[:STEP]@ISO8601, e.g. email_click:welcome@2026-03-02T10:00Z")
    kind, _, detail = what.partition(":")
    at = parse_time(when)
    if kind in EMAIL_EVENTS:
        if not detail:
            raise InvalidInput(f"event {text!r}: {kind} needs the step whose email it was, as {kind}:STEP@TIME")
        return Engagement(kind, at, campaign_id=campaign_id, step_key=detail)
    if kind == "stage" and not detail:
        raise InvalidInput(f"event {text!r}: a stage change names the stage, as stage:sql@TIME")
    properties = {"stage": detail} if kind == "stage" else ({"content": detail} if detail else {})
    return Engagement(kind, at, properties=properties)


@dataclass
class TimelineEntry:
    """One line of the simulated timeline."""

    at: datetime
    local: datetime
    step: str | None
    kind: str  # email | held_out | webhook | update | skipped | branch | event | timeout | late | relocated | exhausted | input | end
    subject: str | None = None
    variant: str | None = None
    content: str | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        """As printed by ``--json``."""
        return {
            "step": self.step,
            "at": self.at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "local": self.local.isoformat(),
            "kind": self.kind,
            "subject": self.subject,
            "variant": self.variant,
            "content": self.content,
            "detail": self.detail,
        }


def _apply_event(lead: LeadView, event: Engagement) -> LeadView:
    if event.type == UNSUBSCRIBE:
        return replace(lead, unsubscribed=True)
    if event.type == BOUNCE:
        return replace(lead, bounced=True)
    if event.type == "stage" and event.properties.get("stage"):
        return replace(lead, stage=str(event.properties["stage"]))
    return lead


def simulate(
    campaign: Campaign,
    policy: Policy,
    lead: LeadView,
    *,
    start: datetime,
    days: float,
    events: list[Engagement] = (),  # type: ignore[assignment]
    default_tz: str = "UTC",
    render_subject: Callable[[Action, LeadView], str] | None = None,
    winners: Mapping[str, str] | None = None,
    held_out: bool = False,
) -> list[TimelineEntry]:
    """What ``lead`` would receive from ``campaign`` if it entered at ``start``, over ``days``, given ``events``:
    with the A/B ``winners`` recorded (step id -> variant), and as a held-out lead if ``held_out``."""
    zone = lead_zone(campaign, policy, lead, default_tz)
    horizon = start + timedelta(days=days)
    pending = sorted(events, key=lambda e: e.at)
    seen: list[Engagement] = []
    sends: list[Send] = []
    timeline: list[TimelineEntry] = []
    state = EnrollmentState.start(campaign, start, held_out=held_out)
    now = start

    def local(at: datetime) -> datetime:
        return at.astimezone(zone)

    for _ in range(10_000):
        result = advance(campaign, policy, state, lead, History(seen, sends), now, default_tz=default_tz,
                         winners=winners)
        emails = iter([a for a in result.actions if a.kind == "email"])  # in the order of their "sent" notes
        for note in result.notes:
            if note.outcome == "sent":
                action = next(emails)
                subject = render_subject(action, lead) if render_subject else action.subject
                content = action.content.id if action.content else None
                timeline.append(TimelineEntry(note.at, local(note.at), note.step, "email", subject, action.variant,
                                              content, note.detail))
                sends.append(Send(action.at, campaign.id, action.step_key, content))
            else:
                kind = {"updated": "update"}.get(note.outcome, note.outcome)
                timeline.append(TimelineEntry(note.at, local(note.at), note.step, kind, detail=note.detail))
        state = result.state
        if result.ended:
            timeline.append(TimelineEntry(now, local(now), state.step_id, "end", detail=result.ended))
            return timeline
        due = result.next_due_at
        if pending and (due is None or pending[0].at <= due):
            event = pending.pop(0)
            if event.at > horizon:
                break
            now = max(now, event.at)
            seen.append(event)
            lead = _apply_event(lead, event)
            shown = f"stage -> {event.properties['stage']}" if event.type == "stage" else event.type
            timeline.append(TimelineEntry(event.at, local(event.at), None, "input",
                                          detail=shown + (f" on {event.step_key}" if event.step_key else "")))
            continue
        if due is None or due > horizon:
            break
        now = due
    timeline.append(TimelineEntry(horizon, local(horizon), state.step_id, "end",
                                  detail=f"still enrolled at the end of the simulation (waiting on '{state.step_id}')"))
    return timeline


def describe_zone(campaign: Campaign, policy: Policy, lead: LeadView, default_tz: str) -> str:
    """The timezone name the simulation planned in (for the header line)."""
    return str(lead_zone(campaign, policy, lead, default_tz))

