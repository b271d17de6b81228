"""The campaign file: the shape marketers write in ``campaigns/*.yaml``.

Unknown keys are errors; every model here has a JSON Schema (``nurture schema``) for editors.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import ConfigDict, Field, GetJsonSchemaHandler, field_validator, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from nurture.definitions.conditions import Comparison, Condition, FieldTest
from nurture.definitions.durations import Duration
from nurture.definitions.experiments import Goal, HoldoutShare, WinnerSpec
from nurture.definitions.fields import (
    CadenceSpec,
    DurationField,
    SendWindowSpec,
    Slug,
    Stage,
    Strict,
    TimezoneName,
)

END = "end"
"""The ``goto`` target that finishes the campaign."""


class Variant(Strict):
    """One A/B variant of an email step; missing ``subject``/``template`` come from the step's email."""

    id: Slug
    weight: int = Field(1, ge=1, description="Relative weight; a lead's variant is fixed by a hash of lead and step.")
    subject: str | None = None
    template: str | None = None


_NEEDS_VARIANTS: dict[str, Any] = {  # JSON Schema: goal and winner compare variants, so they come with them
    "allOf": [
        {"if": {"required": [key], "properties": {key: {"not": {"type": "null"}}}},
         "then": {"required": ["variants"], "properties": {"variants": {"type": "array"}}}}
        for key in ("goal", "winner")
    ]
}


class EmailSpec(Strict):
    """Send an email: a Jinja template (HTML; a sibling .txt.j2 gives the text part) and a subject (a template too)."""

    model_config = ConfigDict(json_schema_extra=_NEEDS_VARIANTS)

    template: str | None = None
    subject: str | None = None
    variants: list[Variant] | None = Field(None, min_length=2)
    goal: Goal | None = Field(None, description="What the variants are compared on: click (default), open, "
                              "{event: demo_request, within: 14d} or {sql_within: 14d}.")
    winner: WinnerSpec | None = Field(None, description="Send the winning variant to later leads once the call is made.")

    @model_validator(mode="after")
    def _complete(self) -> EmailSpec:
        if not self.variants:
            for key in ("goal", "winner"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key} compares A/B variants: this email has no variants")
        if self.goal is not None and self.winner is not None and self.winner.metric is not None \
                and self.winner.metric != self.goal:
            raise ValueError("winner.metric differs from the step's goal: give one of them (they are the same thing)")
        for variant in self.variants or (None,):
            label = f"variant '{variant.id}'" if variant else "email"
            if not ((variant and variant.template) or self.template):
                raise ValueError(f"{label} has no template")
            if not ((variant and variant.subject) or self.subject):
                raise ValueError(f"{label} has no subject")
        ids = [v.id for v in self.variants or []]
        if len(ids) != len(set(ids)):
            raise ValueError("variant ids must be unique")
        return self

    def ab_goal(self) -> Goal:
        """What the variants are compared on: ``goal``, else ``winner.metric``, else clicks."""
        if self.goal is not None:
            return self.goal
        if self.winner is not None and self.winner.metric is not None:
            return self.winner.metric
        return "click"

    def resolved_variants(self) -> list[tuple[str | None, int, str, str]]:
        """(variant id, weight, template, subject) for each variant, or one row with id None when there are none."""
        if not self.variants:
            return [(None, 1, self.template or "", self.subject or "")]
        return [
            (v.id, v.weight, v.template or self.template or "", v.subject or self.subject or "") for v in self.variants
        ]


def _plain_json(value: Any) -> Any:
    """YAML reads ``2026-04-01`` as a date: values that go out as JSON must be text, numbers, booleans, lists, maps."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise ValueError("values must be text, numbers, true/false, lists or mappings (quote dates and times)") from None
    return value


class WebhookSpec(Strict):
    """Call another channel (a CRM task, an ad audience): a signed JSON POST with the lead, campaign and step."""

    url: str = Field(pattern=r"^https?://", description="http(s) URL to POST to.")
    method: Literal["POST", "PUT"] = "POST"
    payload: dict[str, Any] = Field(default_factory=dict, description="Extra JSON merged into the body.")

    @field_validator("payload")
    @classmethod
    def _payload_is_json(cls, payload: dict[str, Any]) -> dict[str, Any]:
        return _plain_json(payload)


class UpdateSpec(Strict):
    """Change the lead: set fields (custom fields by name), add or remove tags."""

    set: dict[str, Any] = Field(default_factory=dict)
    add_tags: list[str] = Field(default_factory=list)
    remove_tags: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _not_empty(self) -> UpdateSpec:
        if not (self.set or self.add_tags or self.remove_tags):
            raise ValueError("update needs set, add_tags or remove_tags")
        _plain_json(self.set)
        for name in ("email", "stage", "score", "tags", "fields"):
            if name in self.set:
                raise ValueError(f"update cannot set {name!r} (stages move by scoring and sales rules; use add_tags)")
        size = self.set.get("company_size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < 2**31):
            raise ValueError("company_size must be a whole number of employees")
        return self


class WaitForSpec(Strict):
    """Wait until the lead records ``event`` (for email events, on the email of ``step``), at most ``timeout``."""

    event: str = Field(description="Event type, e.g. email_click, email_open, content_download, webinar_attended.")
    step: str | None = Field(None, description="For email_open / email_click: the email step it must come from.")
    timeout: DurationField


class ContentItem(Strict):
    """One piece of a content stream."""

    id: Slug
    title: str
    template: str
    subject: str
    link: str | None = Field(None, pattern=r"^https?://")


class StreamSpec(Strict):
    """Send the next unseen piece of ``content`` at every ``cadence`` slot until the list is exhausted."""

    cadence: CadenceSpec
    content: list[ContentItem] = Field(min_length=1)

    @field_validator("content")
    @classmethod
    def _unique(cls, content: list[ContentItem]) -> list[ContentItem]:
        ids = [c.id for c in content]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"content ids must be unique: {', '.join(dupes)}")
        return content


class BranchRule(Strict):
    """Go to ``goto`` when ``when`` holds; a rule without ``when`` always matches (the default, written last)."""

    when: Condition | None = None
    goto: str


ACTIONS = ("email", "webhook", "update", "wait_for", "stream", "branch")


def step_rule_problems(step: dict[str, Any], *, count_actions: bool = True) -> list[str]:
    """Every rule between a step's keys that ``step`` breaks (one action, on_event with wait_for, ...). Takes the keys
    as written, so ``nurture check`` reports these beside the problems of the step's values, in one run
    (``count_actions=False`` when the step has an unknown key, which may be a misspelt action)."""
    present = [name for name in ACTIONS if step.get(name) is not None]
    problems = []
    if len(present) != 1 and count_actions:
        found = ", ".join(present) if present else "none"
        problems.append(f"step '{step.get('id')}' needs exactly one action of {', '.join(ACTIONS)} (found: {found})")
    if (step.get("on_event") or step.get("on_timeout")) and step.get("wait_for") is None:
        problems.append("on_event / on_timeout only go with wait_for")
    if step.get("send_window") is not None and step.get("email") is None:
        problems.append("send_window only applies to email steps (streams follow their cadence)")
    if step.get("branch") is not None and step.get("goto") is not None:
        problems.append("a branch step chooses its target itself: use goto inside the branch rules")
    return problems


def _given(key: str, *, text: bool = False) -> dict[str, Any]:
    """JSON Schema: ``key`` is written and not null (and, for ``text``, not empty: the step tests its truth)."""
    value: dict[str, Any] = {"type": "string", "minLength": 1} if text else {"not": {"type": "null"}}
    return {"required": [key], "properties": {key: value}}


# What step_rule_problems says, as JSON Schema, so that editors flag it too.
_STEP_RULES: dict[str, Any] = {
    "oneOf": [_given(action) for action in ACTIONS],
    "allOf": [
        {"if": _given("on_event", text=True), "then": _given("wait_for")},
        {"if": _given("on_timeout", text=True), "then": _given("wait_for")},
        {"if": _given("send_window"), "then": _given("email")},
        {"not": {"allOf": [_given("branch"), _given("goto")]}},
    ],
}


class Step(Strict):
    """One step: wait, then (if ``when`` holds) do exactly one action, then go on to ``goto`` or the next step."""

    model_config = ConfigDict(json_schema_extra=_STEP_RULES)

    id: Slug
    wait: DurationField = Field(default=Duration(), description="Time after the previous step before this one runs.")
    when: Condition | None = Field(None, description="Skip this step unless the condition holds.")
    email: EmailSpec | None = None
    webhook: WebhookSpec | None = None
    update: UpdateSpec | None = None
    wait_for: WaitForSpec | None = None
    stream: StreamSpec | None = None
    branch: list[BranchRule] | None = Field(None, min_length=1)
    goto: str | None = Field(None, description="Step to continue with afterwards ('end' to finish).")
    on_event: str | None = Field(None, description="wait_for: step to go to when the event came ('end' to finish).")
    on_timeout: str | None = Field(None, description="wait_for: step to go to when the timeout passed.")
    send_window: SendWindowSpec | Literal["always"] | None = Field(
        None, description="Overrides the campaign's send window for this step; 'always' sends at any hour."
    )
    replaces: list[Slug] = Field(
        default_factory=list,
        description="Ids of steps removed from the campaign: leads waiting on one of them go on with this step.",
    )

    @model_validator(mode="after")
    def _one_action(self) -> Step:
        problems = step_rule_problems({name: getattr(self, name) for name in type(self).model_fields})
        if problems:
            raise ValueError(problems[0])
        return self

    @property
    def action(self) -> str:
        """The name of this step's action."""
        return next(name for name in ACTIONS if getattr(self, name) is not None)

    def targets(self) -> list[tuple[str, str]]:
        """(key, step id) of every jump this step can take."""
        jumps = [("goto", self.goto), ("on_event", self.on_event), ("on_timeout", self.on_timeout)]
        jumps += [("branch.goto", rule.goto) for rule in self.branch or []]
        return [(key, target) for key, target in jumps if target]


class EntryFilter(Strict):
    """Lead-field filters for entry: every key given must hold."""

    industry: list[str] | None = None
    country: list[str] | None = None
    company_size: Comparison | None = None
    tags: list[str] | None = Field(None, description="The lead has at least one of these tags.")
    had_event: list[str] | None = Field(None, description="The lead recorded at least one event of these types.")
    fields: dict[str, FieldTest] | None = Field(None, description="Tests on other lead fields and custom fields.")


class Entry(Strict):
    """Who enters: leads in (or reaching) ``stage`` that match ``where``."""

    stage: Stage | list[Stage] = "mql"
    where: EntryFilter | None = None

    def stages(self) -> list[str]:
        """The entry stages as a list."""
        return [self.stage] if isinstance(self.stage, str) else list(self.stage)


_EXIT_STAGES: tuple[Stage, ...] = ("sql", "opportunity", "customer", "disqualified")


class ExitSpec(Strict):
    """When a lead leaves early. Unsubscribes and bounces always end every campaign."""

    stages: list[Stage] = Field(default_factory=lambda: list(_EXIT_STAGES))
    events: list[str] = Field(default_factory=list, description="Goal events, e.g. demo_request.")


class Reentry(Strict):
    """Whether a lead that finished or left may enter again: ``never``, ``always``, or ``{after: 30d}``.

    Files write the shorthands; ``{policy: never|always}`` and ``{policy: after, after: 30d}`` are read too.
    """

    policy: Literal["never", "always", "after"] = "never"
    after: DurationField | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"policy": value}
        if isinstance(value, dict) and "after" in value and "policy" not in value:
            return {"policy": "after", **value}
        return value

    @model_validator(mode="after")
    def _after_given(self) -> Reentry:
        if (self.policy == "after") != (self.after is not None):
            raise ValueError("re-entry 'after' needs a duration, as in {after: 30d}")
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        # The forms the shorthand validator reads, not the fields it fills in.
        after = handler(core_schema)["properties"]["after"]["anyOf"][0]  # the duration's schema
        return {
            "description": "Whether a lead that finished or left may enter again: never, always, or {after: 30d}.",
            "anyOf": [
                {"enum": ["never", "always"]},
                {
                    "type": "object",
                    "properties": {"after": after, "policy": {"const": "after"}},
                    "required": ["after"],
                    "additionalProperties": False,
                },
                {
                    "type": "object",
                    "properties": {"policy": {"enum": ["never", "always"]}, "after": {"type": "null"}},
                    "dependentRequired": {"after": ["policy"]},
                    "additionalProperties": False,
                },
            ],
        }


class Campaign(Strict):
    """A nurture campaign."""

    id: Slug
    name: str
    description: str = ""
    paused: bool = Field(False, description="A paused campaign enrolls nobody and sends nothing.")
    priority: int = Field(0, description="When campaigns compete for the frequency cap, higher goes first.")
    entry: Entry = Field(default_factory=Entry)
    exit: ExitSpec = Field(default_factory=ExitSpec)
    reentry: Reentry = Field(default_factory=Reentry)
    timezone: TimezoneName | None = Field(None, description="For leads without a timezone of their own.")
    send_window: SendWindowSpec | Literal["always"] | None = Field(
        None, description="Overrides the policy's send window; 'always' sends at any hour."
    )
    holdout: HoldoutShare | None = Field(
        None, description="This share of entering leads is enrolled but sent nothing, to measure the campaign's lift."
    )
    steps: list[Step] = Field(min_length=1)

    def step(self, step_id: str) -> Step:
        """The step with that id (KeyError if none)."""
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def index_of(self, step_id: str) -> int | None:
        """The position of a step, None if it is not (or no longer) in the campaign."""
        for index, step in enumerate(self.steps):
            if step.id == step_id:
                return index
        return None

    def replacement_of(self, removed_id: str) -> str | None:
        """The step whose ``replaces`` names ``removed_id`` (a step removed from the campaign), None if none does."""
        for step in self.steps:
            if removed_id in step.replaces:
                return step.id
        return None
