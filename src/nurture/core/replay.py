"""Replaying a recorded enrollment under a campaign version (pure): where it stood when the replay starts, the lead as
it was then and what changed it since, and the engine run from there (:func:`nurture.core.simulate.run`, the stepping
``nurture simulate`` uses, over the worker's engine).

Where a replay starts. An enrollment that began inside the replayed period starts at its enrollment, at the first step
of the version replayed. One that began earlier starts from where it really stood at the period's start, read from
its recorded path (each step it went through, with the time): the step it waited on then and since when, and the path
up to then. From there each version goes on as the worker goes on with an edited campaign: a step that still exists
is continued with its definition in that version, a removed one as the engine's relocation rules say.

What the replay reads of the lead: its stage, unsubscribe and bounce at the times they happened (the stage history and
the lead's timestamps), its events at their times, and its other emails (recorded deliveries of other campaigns and
earlier enrollments) for the frequency cap and content streams. Fields, tags and score are as they are now: their
history is not kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from nurture.core.engine import EnrollmentState, PathEntry
from nurture.core.facts import Engagement, LeadView, Send
from nurture.core.simulate import Input, LeadChange, run
from nurture.definitions.campaign import Campaign
from nurture.definitions.policy import Policy

NOT_IN_VERSION = "not in this version"
"""The standing of an enrollment whose campaign the replayed version does not have: the worker never claims it."""

_STAYS = ("relocated",)  # path outcomes that leave the enrollment's arrival time as it was


@dataclass(frozen=True)
class RecordedEnrollment:
    """An enrollment as the database holds it: where it stands now and the path it went."""

    id: int
    lead_id: int
    campaign_id: str
    step_id: str | None
    arrived_at: datetime
    enrolled_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    path: tuple[PathEntry, ...] = ()
    held_out: bool = False  # in the campaign's holdout group: replayed with nothing sent, as the worker does


def _moves(entry: PathEntry) -> bool:
    """Whether a path entry moved the enrollment on (a content stream's piece and a relocation do not)."""
    if entry.outcome in _STAYS:
        return False
    return not (entry.outcome == "sent" and entry.detail.startswith("content "))


def position_at(record: RecordedEnrollment, at: datetime) -> EnrollmentState:
    """Where ``record`` stood at ``at`` (it began before): the step it waited on, since when, and its path so far.

    The step is the one of the first path entry at or after ``at`` (what happened next happened to the step it
    waited on), or, with none, the step it waits on now. The arrival is the time of the last entry before ``at`` that
    moved it on, or its enrollment.
    """
    before = tuple(entry for entry in record.path if entry.at < at)
    after = [entry for entry in record.path if entry.at >= at]
    step = after[0].step if after else record.step_id
    if not after and record.ended_at is None:
        return EnrollmentState(step, record.arrived_at, record.enrolled_at, before, held_out=record.held_out)
    arrived = record.enrolled_at
    for entry in before:
        if _moves(entry):
            arrived = entry.at
    return EnrollmentState(step, arrived, record.enrolled_at, before, held_out=record.held_out)


@dataclass(frozen=True)
class StageChangeAt:
    """One recorded move of the lead through the lifecycle."""

    at: datetime
    from_stage: str | None
    to_stage: str


def lead_at(lead: LeadView, stages: Sequence[StageChangeAt], *, unsubscribed_at: datetime | None,
            bounced_at: datetime | None, at: datetime, until: datetime) -> tuple[LeadView, list[LeadChange]]:
    """The lead as it was at ``at`` (stage, unsubscribed, bounced), and its changes after ``at`` up to ``until``."""
    ordered = sorted(stages, key=lambda change: change.at)
    earlier = [change for change in ordered if change.at <= at]
    if earlier:
        stage = earlier[-1].to_stage
    elif ordered:
        stage = ordered[0].from_stage or ordered[0].to_stage
    else:
        stage = lead.stage
    changes = [LeadChange(change.at, stage=change.to_stage) for change in ordered if at < change.at <= until]
    unsubscribed = unsubscribed_at is not None and unsubscribed_at <= at
    bounced = bounced_at is not None and bounced_at <= at
    if unsubscribed_at is not None and at < unsubscribed_at <= until:
        changes.append(LeadChange(unsubscribed_at, unsubscribed=True))
    if bounced_at is not None and at < bounced_at <= until:
        changes.append(LeadChange(bounced_at, bounced=True))
    changes.sort(key=lambda change: change.at)
    return LeadView(key=lead.key, email=lead.email, stage=stage, score=lead.score, timezone=lead.timezone,
                    tags=lead.tags, attributes=lead.attributes, custom=lead.custom, unsubscribed=unsubscribed,
                    bounced=bounced), changes


@dataclass(frozen=True)
class Replayed:
    """One enrollment replayed under one version: its emails in the period, and where it stands at the end."""

    sends: tuple[Send, ...]
    step: str | None  # the step it waits on at the end (None once ended)
    ended: str | None  # why it ended: completed, stage:sql, goal:demo_request, ... (None: still enrolled)

    @property
    def standing(self) -> tuple[str, str]:
        """``("at", step)`` or ``("ended", reason)``."""
        if self.ended is not None:
            return "ended", self.ended
        return "at", self.step or "-"


def replay_enrollment(
    campaign: Campaign | None,
    policy: Policy,
    record: RecordedEnrollment,
    lead: LeadView,
    *,
    since: datetime,
    until: datetime,
    events: Sequence[Engagement] = (),
    changes: Sequence[LeadChange] = (),
    sends: Sequence[Send] = (),
    default_tz: str = "UTC",
) -> Replayed:
    """Run ``record`` through ``campaign`` (one version) from ``since`` (or its enrollment, if later) to ``until``.

    ``lead`` is the lead as it was at that start (:func:`lead_at`), ``changes`` its changes after; ``events`` its
    recorded events (those before the start are history); ``sends`` its other emails and this enrollment's before the
    start. ``campaign`` None: the version does not have the campaign, and the enrollment stays where it was.
    """
    start = max(record.enrolled_at, since)
    if campaign is None:
        return Replayed((), None, NOT_IN_VERSION)
    if record.enrolled_at >= since:
        state = EnrollmentState.start(campaign, record.enrolled_at, held_out=record.held_out)
    else:
        state = position_at(record, since)
    if campaign.paused:  # the worker claims nothing of a paused campaign
        return Replayed((), state.step_id, None)
    inputs = [Input(event.at, event=event) for event in events if event.at <= until]
    inputs += [Input(change.at, change=change) for change in changes if change.at <= until]
    inputs.sort(key=lambda item: item.at)
    ran = run(campaign, policy, state, lead, start=start, until=until, inputs=inputs, sends=sends,
              default_tz=default_tz)
    return Replayed(tuple(ran.sends), None if ran.ended else ran.state.step_id, ran.ended)


def step_of(step_key: str) -> str:
    """The step id of a delivery key (``step`` or ``step/content-id`` for content streams)."""
    return step_key.split("/", 1)[0]
