"""Time-travel dry run of one campaign for one lead: no database, no sending, the same engine as the worker."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from nurture.core.engine import Action, Advance, EnrollmentState, advance, lead_zone
from nurture.core.facts import BOUNCE, CLICK, OPEN, UNSUBSCRIBE, Engagement, History, LeadView, Send
from nurture.core.times import parse_time
from nurture.definitions.campaign import Campaign
from nurture.definitions.policy import Policy
from nurture.errors import InvalidInput

EMAIL_EVENTS = (OPEN, CLICK)


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
    kind: str  # email | webhook | update | skipped | branch | event | timeout | late | relocated | exhausted | input | end
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


@dataclass(frozen=True)
class LeadChange:
    """A change of the lead itself at a time, which the engine reads from the lead: a new stage, an unsubscribe, a
    bounce (``None``: that part unchanged)."""

    at: datetime
    stage: str | None = None
    unsubscribed: bool | None = None
    bounced: bool | None = None

    def apply(self, lead: LeadView) -> LeadView:
        """The lead after this change."""
        return replace(
            lead,
            stage=self.stage if self.stage is not None else lead.stage,
            unsubscribed=self.unsubscribed if self.unsubscribed is not None else lead.unsubscribed,
            bounced=self.bounced if self.bounced is not None else lead.bounced,
        )


def change_of(event: Engagement) -> LeadChange | None:
    """What an event of the simulation changes on the lead (an unsubscribe, a bounce, ``stage:sql``), if anything."""
    if event.type == UNSUBSCRIBE:
        return LeadChange(event.at, unsubscribed=True)
    if event.type == BOUNCE:
        return LeadChange(event.at, bounced=True)
    if event.type == "stage" and event.properties.get("stage"):
        return LeadChange(event.at, stage=str(event.properties["stage"]))
    return None


@dataclass(frozen=True)
class Input:
    """Something that happens at a time during a run: an event joins the lead's history, a change alters the lead."""

    at: datetime
    event: Engagement | None = None
    change: LeadChange | None = None


@dataclass
class Run:
    """How a run ended: where the enrollment stands, the lead as it is then, the campaign's sends made in the run, and
    why the enrollment ended (None: still enrolled at ``at``, the end of the run)."""

    state: EnrollmentState
    lead: LeadView
    sends: list[Send]
    ended: str | None
    at: datetime


MAX_ADVANCES = 10_000
"""A run stops after this many looks at the enrollment (each is a step, an event or a wait)."""


def run(
    campaign: Campaign,
    policy: Policy,
    state: EnrollmentState,
    lead: LeadView,
    *,
    start: datetime,
    until: datetime,
    inputs: Sequence[Input] = (),
    sends: Sequence[Send] = (),
    default_tz: str = "UTC",
    on_advance: Callable[[Advance, datetime], None] | None = None,
    on_input: Callable[[Input], None] | None = None,
    winners: Mapping[str, str] | None = None,
) -> Run:
    """Step one enrollment through time with the worker's engine, from ``start`` to ``until`` on a virtual clock.

    The clock jumps from one moment to the next that matters: the next due time the engine gives, or the next input.
    Inputs (events and lead changes) are fed at their times, in order; those before ``start`` are part of the history
    (and of the lead) from the start. ``sends`` are the lead's other emails (other campaigns, earlier enrollments):
    each counts from its time on, beside the run's own sends. ``on_advance`` sees every decision of the engine with
    the time it was made; ``on_input`` every input as it is fed. ``winners``: the A/B winners recorded (step id ->
    variant), which later leads get.
    """
    pending = sorted(inputs, key=lambda item: item.at)
    other = sorted(sends, key=lambda send: send.at)
    seen: list[Engagement] = []
    visible: list[Send] = []
    own: list[Send] = []
    now = start

    def feed(item: Input) -> None:
        nonlocal lead
        if item.event is not None:
            seen.append(item.event)
        if item.change is not None:
            lead = item.change.apply(lead)

    while pending and pending[0].at < start:
        item = pending.pop(0)
        feed(item)
        if on_input is not None:
            on_input(item)
    for _ in range(MAX_ADVANCES):
        while other and other[0].at <= now:
            visible.append(other.pop(0))
        result = advance(campaign, policy, state, lead, History(seen, [*visible, *own]), now, default_tz=default_tz,
                         winners=winners)
        for action in result.actions:
            if action.kind == "email":
                own.append(Send(action.at, campaign.id, action.step_key, action.content.id if action.content else None))
        if on_advance is not None:
            on_advance(result, now)
        state = result.state
        if result.ended:
            return Run(state, lead, own, result.ended, now)
        due = result.next_due_at
        if pending and (due is None or pending[0].at <= due):
            item = pending.pop(0)
            if item.at > until:
                break
            now = max(now, item.at)
            feed(item)
            if on_input is not None:
                on_input(item)
            continue
        if due is None or due > until:
            break
        now = due
    return Run(state, lead, own, None, until)


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
    timeline: list[TimelineEntry] = []
    current = lead

    def local(at: datetime) -> datetime:
        return at.astimezone(zone)

    def decided(result: Advance, now: datetime) -> None:
        emails = iter([a for a in result.actions if a.kind == "email"])  # in the order of their "sent" notes
        for note in result.notes:
            if note.outcome == "sent":
                action = next(emails)
                subject = render_subject(action, current) if render_subject else action.subject
                content = action.content.id if action.content else None
                timeline.append(TimelineEntry(note.at, local(note.at), note.step, "email", subject, action.variant,
                                              content, note.detail))
            else:
                kind = {"updated": "update"}.get(note.outcome, note.outcome)
                timeline.append(TimelineEntry(note.at, local(note.at), note.step, kind, detail=note.detail))

    def fed(item: Input) -> None:
        nonlocal current
        event = item.event
        assert event is not None
        if item.change is not None:
            current = item.change.apply(current)
        shown = f"stage -> {event.properties['stage']}" if event.type == "stage" else event.type
        timeline.append(TimelineEntry(event.at, local(event.at), None, "input",
                                      detail=shown + (f" on {event.step_key}" if event.step_key else "")))

    inputs = [Input(event.at, event, change_of(event)) for event in events]
    ran = run(campaign, policy, EnrollmentState.start(campaign, start, held_out=held_out), lead, start=start,
              until=horizon, inputs=inputs, default_tz=default_tz, on_advance=decided, on_input=fed, winners=winners)
    if ran.ended:
        timeline.append(TimelineEntry(ran.at, local(ran.at), ran.state.step_id, "end", detail=ran.ended))
    else:
        timeline.append(TimelineEntry(horizon, local(horizon), ran.state.step_id, "end",
                                      detail=f"still enrolled at the end of the simulation (waiting on '{ran.state.step_id}')"))
    return timeline


def describe_zone(campaign: Campaign, policy: Policy, lead: LeadView, default_tz: str) -> str:
    """The timezone name the simulation planned in (for the header line)."""
    return str(lead_zone(campaign, policy, lead, default_tz))

