"""The nurture policy (``campaigns/policy.yaml``): rules that hold across every campaign."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from nurture.definitions.durations import Duration
from nurture.definitions.fields import DurationField, SendWindowSpec, Strict, TimezoneName


class FrequencyCap(Strict):
    """At most ``max`` nurture emails per lead in any ``per`` period, across all campaigns."""

    max: int = Field(1, ge=1)
    per: DurationField = Field(default=Duration(days=1))


class CatchUp(Strict):
    """What the worker does with steps that fell due while it was down."""

    max_late: DurationField | None = Field(
        None, description="Skip (and record) an email step more than this late; unset: send every late step."
    )


class SoftBounces(Strict):
    """Temporary delivery failures (a full mailbox, a server refusing for now): ``limit`` of them within ``within``
    suppress the lead for good, as one hard bounce or spam complaint does; fewer are recorded and change nothing."""

    limit: int = Field(3, ge=1, le=1000, description="Soft bounces that suppress the lead; 1: every one does.")
    within: DurationField = Field(
        default=Duration(days=7), description="The window they must fall within (days count as 24 hours here)."
    )

    @field_validator("within")
    @classmethod
    def _not_zero(cls, value: Duration) -> Duration:
        if not value:
            raise ValueError("must be longer than 0s, such as 7d")
        return value


class Policy(Strict):
    """Defaults and limits for every campaign."""

    timezone: TimezoneName | None = Field(None, description="Default lead timezone; NURTURE_DEFAULT_TIMEZONE if unset.")
    send_window: SendWindowSpec | Literal["always"] | None = Field(
        None, description="Default send window; 'always' or unset means any time."
    )
    frequency_cap: FrequencyCap | None = Field(default_factory=FrequencyCap)
    catch_up: CatchUp = Field(default_factory=CatchUp)
    soft_bounces: SoftBounces = Field(default_factory=SoftBounces)


POLICY_FILE = "policy.yaml"
RESERVED_FILES = {POLICY_FILE, "scoring.yaml", "routing.yaml", "sales.yaml"}
