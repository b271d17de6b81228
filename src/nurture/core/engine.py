"""The step engine: given a campaign, where an enrollment stands, the lead, its history and the time, decide what is due.

Pure and deterministic: the worker calls it for each claimed enrollment, ``nurture simulate`` calls it on a virtual clock,
so what a marketer previews is what the worker does.

Rules the engine applies:
- A step runs ``wait`` after the previous step ran (days are calendar days in the lead's timezone).
- Email steps then wait for the send window (lead's timezone) and the frequency cap; content streams wait for their cadence.
- ``when`` is evaluated when the step is due: false skips the step (recorded).
- A wait is counted from when the previous step actually ran, so after downtime a backlog is spread out again, not sent
  in a burst; an email step more than ``catch_up.max_late`` late is skipped and recorded (unset: always sent).
- A held-out enrollment (the campaign's ``holdout``) walks the same path at the same times, but each email, stream
  piece, webhook and update is recorded as ``held_out`` instead of done: the lead gets nothing from the campaign. Its
  unsent emails still space its later steps (the frequency cap, a stream's cadence), as sent ones would.
- An A/B step whose winner was recorded gives every later lead the winner (``winners``); the others by the hash.
- Editing a live campaign: the enrollment keeps the id of the step it waits on. If that step still exists (even moved)
  the lead goes on from it with its new definition. A removed step is dealt with when the new version comes into force
  (:mod:`nurture.core.changes`: the step whose ``replaces`` names it, else its unconditional continuation in the old
  version, else the lead leaves with ``step_removed:<id>``), so the engine meets one only when the version the lead ran
  under is unknown (recorded before versions were kept): then the lead goes on with the step whose ``replaces`` names
  it, and otherwise leaves with ``step_removed:<id>``. The engine never guesses a branch or a ``wait_for`` outcome.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from nurture.core import calendar
from nurture.core.changes import Relocation, relocate_removed
from nurture.core.conditions import evaluate
from nurture.core.facts import BOUNCE, COMPLAINT, UNSUBSCRIBE, Engagement, History, LeadView, Send
from nurture.definitions import windows
from nurture.definitions.campaign import END, Campaign, ContentItem, Step, UpdateSpec, WebhookSpec
from nurture.definitions.policy import Policy

HELD_OUT = "held_out"
HELD_EMAIL, HELD_CONTENT = "email not sent", "content "
MAX_STEPS_PER_ADVANCE = 64  # a goto loop without waits must not spin forever
COUNTED = ("branch", "event", "timeout", "skipped", "late")
"""The path outcomes the reports count per step (the way a lead went, or why a step did not run); sends are counted
by their deliveries."""
_SUPPRESSION_REASONS = {UNSUBSCRIBE: "unsubscribed", BOUNCE: "bounced", COMPLAINT: "spam_complaint"}


@dataclass(frozen=True)
class PathEntry:
    """One thing that happened to an enrollment: a step ran, was skipped, branched, timed out..."""

    step: str
    at: datetime
    outcome: str  # sent | held_out | skipped | branch | event | timeout | updated | webhook | exhausted | relocated | late
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        """As stored in the enrollment state."""
        return {"step": self.step, "at": self.at.isoformat(), "outcome": self.outcome, "detail": self.detail}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> PathEntry:
        """Read back from the enrollment state."""
        return cls(data["step"], datetime.fromisoformat(data["at"]), data["outcome"], data.get("detail", ""))


@dataclass(frozen=True)
class EnrollmentState:
    """Where an enrollment stands: the step it waits on, since when, and the path so far."""

    step_id: str | None
    arrived_at: datetime
    enrolled_at: datetime
    path: tuple[PathEntry, ...] = ()
    held_out: bool = False  # in the campaign's holdout group: nothing is sent or done

    @classmethod
    def start(cls, campaign: Campaign, at: datetime, *, held_out: bool = False) -> EnrollmentState:
        """A new enrollment, at the first step."""
        return cls(step_id=campaign.steps[0].id, arrived_at=at, enrolled_at=at, held_out=held_out)

    def to_json(self) -> dict[str, Any]:
        """The part kept in the enrollment's JSON state column."""
        return {"path": [p.to_json() for p in self.path]}

    @classmethod
    def from_row(cls, step_id: str | None, arrived_at: datetime, enrolled_at: datetime, state: dict[str, Any],
                 *, held_out: bool = False) -> EnrollmentState:
        """Rebuild from the enrollment's columns."""
        path = tuple(PathEntry.from_json(p) for p in (state or {}).get("path", []))
        return cls(step_id=step_id, arrived_at=arrived_at, enrolled_at=enrolled_at, path=path, held_out=held_out)

    def unsent(self, campaign_id: str) -> list[Send]:
        """The emails a held-out enrollment did not send, as the sends they stand for (its own timing only)."""
        found = []
        for entry in self.path:
            if entry.outcome != HELD_OUT:
                continue
            if entry.detail == HELD_EMAIL:
                found.append(Send(entry.at, campaign_id, entry.step))
            elif entry.detail.startswith(HELD_CONTENT):
                content = entry.detail.removeprefix(HELD_CONTENT).removesuffix(" not sent")
                found.append(Send(entry.at, campaign_id, f"{entry.step}/{content}", content))
        return found


@dataclass(frozen=True)
class Action:
    """Something to do now: send an email, call a webhook, update the lead."""

    kind: str  # email | webhook | update
    step_id: str
    step_key: str  # the delivery key within the enrollment: the step id, or step/content for streams
    at: datetime
    template: str | None = None
    subject: str | None = None
    variant: str | None = None
    content: ContentItem | None = None
    webhook: WebhookSpec | None = None
    update: UpdateSpec | None = None


@dataclass
class Advance:
    """The engine's decision: actions to take now, the new state, and when to look again."""

    state: EnrollmentState
    actions: list[Action] = field(default_factory=list)
    notes: list[PathEntry] = field(default_factory=list)
    next_due_at: datetime | None = None
    waiting_for: str | None = None
    ended: str | None = None  # why the enrollment ended: completed, unsubscribed, stage:sql, goal:demo_request, ...


def exit_reason(campaign: Campaign, lead: LeadView, history: History, since: datetime, now: datetime) -> str | None:
    """Why a lead must leave the campaign now, or None: suppression, an exit stage, or a goal event since enrollment."""
    if lead.unsubscribed:
        return "unsubscribed"
    if lead.bounced:
        return "bounced"
    if lead.stage in campaign.exit.stages:
        return f"stage:{lead.stage}"
    if not history.events:
        return None
    goals = set(campaign.exit.events) | {UNSUBSCRIBE, BOUNCE, COMPLAINT}
    for event in history.events:
        if event.type in goals and since <= event.at <= now:
            return _SUPPRESSION_REASONS.get(event.type) or f"goal:{event.type}"
    return None


def choose_variant(seed: str, variants: list[tuple[str | None, int, str, str]]) -> tuple[str | None, int, str, str]:
    """The variant a lead gets: fixed by a hash of ``seed`` (lead, campaign, step), in proportion to the weights."""
    if len(variants) == 1:
        return variants[0]
    total = sum(weight for _id, weight, _t, _s in variants)
    point = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big") % total
    for variant in variants:
        point -= variant[1]
        if point < 0:
            return variant
    return variants[-1]


def pick_variant(step: Step, lead: LeadView, campaign_id: str,
                 winners: Mapping[str, str] | None) -> tuple[str | None, str, str, str]:
    """(variant, template, subject, how it was chosen) of an email step for a lead: the recorded winner of the step's
    A/B test if there is one (still a variant of the step), else the lead's variant by the hash."""
    assert step.email is not None
    variants = step.email.resolved_variants()
    winner = (winners or {}).get(step.id)
    for variant, _weight, template, subject in variants:
        if winner is not None and variant == winner:
            return variant, template, subject, " (the winner)"
    variant, _weight, template, subject = choose_variant(f"{lead.key}:{campaign_id}:{step.id}", variants)
    return variant, template, subject, ""


@dataclass(frozen=True)
class _Env:
    campaign: Campaign
    policy: Policy
    lead: LeadView
    zone: ZoneInfo


def lead_zone(campaign: Campaign, policy: Policy, lead: LeadView, default_tz: str) -> ZoneInfo:
    """The timezone a lead's sends are planned in: its own, else the campaign's, else the policy's, else the default."""
    return calendar.resolve_zone(lead.timezone, campaign.timezone, policy.timezone or default_tz)


def _window(env: _Env, step: Step) -> windows.SendWindow | None:
    """The step's window, else the campaign's, else the policy's; ``always`` (at any level) means none."""
    for spec in (step.send_window, env.campaign.send_window, env.policy.send_window):
        if spec == "always":
            return None
        if spec is not None:
            return spec.window()
    return None


def window_opens(campaign: Campaign, policy: Policy, step: Step, lead: LeadView, at: datetime,
                 *, default_tz: str = "UTC") -> datetime:
    """When the step's send window is next open for this lead, at or after ``at`` (a retry waits for it too)."""
    env = _Env(campaign, policy, lead, lead_zone(campaign, policy, lead, default_tz))
    return calendar.next_window_open(at, _window(env, step), env.zone)


def _apply_cap(env: _Env, at: datetime, history: History, window: windows.SendWindow | None) -> datetime:
    """The first time at or after ``at`` that is inside the window and under the frequency cap.

    The cap period counts like a wait (``per: 1d`` is a calendar day in the lead's timezone), so a daily email at
    09:00 local stays at 09:00 across a DST change instead of being pushed an hour by a 23-hour day.
    """
    cap = env.policy.frequency_cap
    at = calendar.next_window_open(at, window, env.zone)
    if cap is None:
        return at
    for _ in range(32):
        frees = sorted(
            free for free in (calendar.add_wait(s.at, cap.per, env.zone) for s in history.sends if s.at <= at)
            if free > at
        )
        if len(frees) < cap.max:
            return at
        at = calendar.next_window_open(max(frees[len(frees) - cap.max], at), window, env.zone)
    return at


def _next_in_order(campaign: Campaign, step: Step) -> str | None:
    index = campaign.index_of(step.id)
    if index is None or index + 1 >= len(campaign.steps):
        return None
    return campaign.steps[index + 1].id


def _target(campaign: Campaign, step: Step, jump: str | None) -> str | None:
    if jump == END:
        return None
    return jump if jump else _next_in_order(campaign, step)


def relocate(campaign: Campaign, state: EnrollmentState) -> Relocation:
    """Where an enrollment goes on when the step it waits on is not in the campaign and the version it ran under is
    unknown: the step whose ``replaces`` names it, or out (see the module docstring)."""
    assert state.step_id is not None
    return relocate_removed(None, campaign, state.step_id)


def _stream_remaining(step: Step, lead_history: History, campaign_id: str) -> list[ContentItem]:
    assert step.stream is not None
    received = {s.content_id for s in lead_history.sends if s.content_id}
    received |= {s.step_key.split("/", 1)[1] for s in lead_history.sends if s.campaign_id == campaign_id
                 and s.step_key.startswith(step.id + "/")}
    engaged = {str(e.properties.get("content")) for e in lead_history.events if e.properties.get("content")}
    return [item for item in step.stream.content if item.id not in received and item.id not in engaged]


def _due(env: _Env, step: Step, state: EnrollmentState, history: History) -> tuple[datetime, str | None]:
    """When ``step`` is due, and the event type it waits for (wait_for steps)."""
    base = calendar.add_wait(state.arrived_at, step.wait, env.zone)
    if step.email is not None:
        return _apply_cap(env, base, history, _window(env, step)), None
    if step.stream is not None:
        cadence = step.stream.cadence
        slot_at = windows.parse_time_of_day(cadence.at)
        last = max((s.at for s in history.sends if s.campaign_id == env.campaign.id
                    and s.step_key.startswith(step.id + "/")), default=None)
        after = max(base, last) if last else base - timedelta(microseconds=1)
        slot = calendar.next_weekly(after, cadence.days, slot_at, env.zone)
        return _apply_cap(env, slot, history, None), None
    if step.wait_for is not None:
        return base, step.wait_for.event
    return base, None


def _first_matching_event(
    step: Step, history: History, campaign_id: str, after: datetime, until: datetime
) -> Engagement | None:
    spec = step.wait_for
    assert spec is not None
    for event in sorted(history.events, key=lambda e: e.at):
        if event.type != spec.event or not (after <= event.at <= until):
            continue
        if spec.step and not (event.campaign_id == campaign_id and event.step_key is not None
                              and (event.step_key == spec.step or event.step_key.startswith(spec.step + "/"))):
            continue
        return event
    return None


def advance(
    campaign: Campaign,
    policy: Policy,
    state: EnrollmentState,
    lead: LeadView,
    history: History,
    now: datetime,
    *,
    default_tz: str = "UTC",
    winners: Mapping[str, str] | None = None,
) -> Advance:
    """Run every step of ``state`` that is due at ``now``; return the actions, the new state and the next due time.

    ``winners``: step id -> the variant recorded as the winner of that step's A/B test (later leads all get it).
    """
    env = _Env(campaign, policy, lead, lead_zone(campaign, policy, lead, default_tz))
    result = Advance(state=state)
    reason = exit_reason(campaign, lead, history, state.enrolled_at, now)
    if reason:
        result.ended = reason
        return result
    held = state.held_out
    planned: list[Send] = state.unsent(campaign.id) if held else []

    def record(entry: PathEntry) -> None:
        result.notes.append(entry)
        was = result.state  # copied field by field: dataclasses.replace introspects the fields at every call
        result.state = EnrollmentState(was.step_id, was.arrived_at, was.enrolled_at, (*was.path, entry), was.held_out)

    def move(to: str | None, at: datetime) -> None:
        was = result.state
        result.state = EnrollmentState(to, at, was.enrolled_at, was.path, was.held_out)

    for _ in range(MAX_STEPS_PER_ADVANCE):
        current = result.state
        if current.step_id is None:
            result.ended = "completed"
            return result
        index = campaign.index_of(current.step_id)
        if index is None:
            relocation = relocate(campaign, current)
            record(PathEntry(current.step_id, now, "relocated", f"step '{current.step_id}' was removed: {relocation.why}"))
            if relocation.target is None:
                result.ended = relocation.end_reason or "completed"
                return result
            move(relocation.target, current.arrived_at)
            continue
        step = campaign.steps[index]
        seen = history.with_sends(planned)
        due, waiting_for = _due(env, step, current, seen)

        if step.wait_for is not None:
            deadline = calendar.add_wait(due, step.wait_for.timeout, env.zone)
            event = _first_matching_event(step, seen, campaign.id, due, min(now, deadline))
            if event is not None:
                record(PathEntry(step.id, event.at, "event", f"{step.wait_for.event} came first"))
                move(_target(campaign, step, step.on_event or step.goto), event.at)
                continue
            if now < deadline:
                result.next_due_at, result.waiting_for = deadline, waiting_for
                return result
            record(PathEntry(step.id, deadline, "timeout", f"no {step.wait_for.event} within {step.wait_for.timeout}"))
            move(_target(campaign, step, step.on_timeout or step.goto), deadline)
            continue

        if due > now:
            result.next_due_at = due
            return result
        if step.email is not None or step.stream is not None:
            # Due already, but the window and the cap are what they are *now*: a late tick after the window
            # closed, or a send another campaign made since, still holds this email back.
            send_at = _apply_cap(env, now, seen, _window(env, step) if step.email is not None else None)
            if send_at > now:
                result.next_due_at = send_at
                return result
        ran_at = now if step.email is not None or step.stream is not None else due
        if step.when is not None and not evaluate(
            step.when, lead=lead, history=seen, campaign_id=campaign.id, since=current.enrolled_at, now=now
        ):
            record(PathEntry(step.id, ran_at, "skipped", "condition not met"))
            move(_target(campaign, step, step.goto), ran_at)
            continue

        if step.branch is not None:
            for number, rule in enumerate(step.branch, start=1):
                if rule.when is None or evaluate(
                    rule.when, lead=lead, history=seen, campaign_id=campaign.id, since=current.enrolled_at, now=now
                ):
                    record(PathEntry(step.id, ran_at, "branch", f"rule {number} -> {rule.goto}"))
                    move(_target(campaign, step, rule.goto), ran_at)
                    break
            else:
                record(PathEntry(step.id, ran_at, "branch", "no rule matched -> next step"))
                move(_target(campaign, step, None), ran_at)
            continue

        if step.email is not None:
            max_late = policy.catch_up.max_late
            if max_late is not None and now - due > max_late.as_timedelta():
                record(PathEntry(step.id, now, "late", f"due {due.isoformat()}, more than {max_late} late"))
            elif held:
                planned.append(Send(now, campaign.id, step.id))
                record(PathEntry(step.id, now, HELD_OUT, HELD_EMAIL))
            else:
                variant, template, subject, by = pick_variant(step, lead, campaign.id, winners)
                result.actions.append(Action("email", step.id, step.id, now, template, subject, variant))
                planned.append(Send(now, campaign.id, step.id))
                record(PathEntry(step.id, now, "sent", f"variant {variant}{by}" if variant else ""))
            move(_target(campaign, step, step.goto), now)
            continue

        if step.stream is not None:
            remaining = _stream_remaining(step, seen, campaign.id)
            if remaining:
                item = remaining[0]
                key = f"{step.id}/{item.id}"
                planned.append(Send(now, campaign.id, key, item.id))
                if held:
                    record(PathEntry(step.id, now, HELD_OUT, f"{HELD_CONTENT}{item.id} not sent"))
                else:
                    result.actions.append(Action("email", step.id, key, now, item.template, item.subject, content=item))
                    record(PathEntry(step.id, now, "sent", f"content {item.id}"))
                remaining = remaining[1:]
            if not remaining:
                record(PathEntry(step.id, now, "exhausted", "every piece of content sent or seen"))
                move(_target(campaign, step, step.goto), now)
            continue

        if held and (step.update is not None or step.webhook is not None):
            record(PathEntry(step.id, ran_at, HELD_OUT, "update not applied" if step.update else "webhook not called"))
        elif step.update is not None:
            result.actions.append(Action("update", step.id, step.id, ran_at, update=step.update))
            record(PathEntry(step.id, ran_at, "updated"))
        elif step.webhook is not None:
            result.actions.append(Action("webhook", step.id, step.id, ran_at, webhook=step.webhook))
            record(PathEntry(step.id, ran_at, "webhook"))
        move(_target(campaign, step, step.goto), ran_at)

    # A goto loop without any wait would run forever (``nurture check`` rejects one; a hand-made state could still
    # hold one): end the enrollment, saying so, instead of spinning or growing its path without end.
    result.ended = f"loop: more than {MAX_STEPS_PER_ADVANCE} steps ran without a wait"
    return result
