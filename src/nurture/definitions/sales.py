"""The sales rules (``campaigns/sales.yaml``): when a lead becomes an SQL or is disqualified, who owns it, and what a
rep's accept or reject does to it.

The shape marketers and sales write together::

    promotion:
      intent:                                    # hand-raises: the lead becomes an SQL at once
        - demo_request                           # an event type alone
        - {event: free_trial_signup, when: {company_size: {gte: 20}}}          # only for leads whose fields match
        - {event: contact_sales, properties: {topic: {ne: support}}}         # only for events whose properties match
      score_and_fit:                             # score alone is not enough: fit must hold too
        - {name: enterprise-ready, score: 80, min_fit: 20, fit: {company_size: {gte: 200}}}
    disqualify:                                  # checked first: a disqualified lead is never promoted
      - {name: competitor, when: {domain: [rivalcorp.example]}}     # domain: the part of the email after '@'
    routing:
      owners: [{id: ana, name: Ana Ruiz, email: ana.ruiz@acme.example, slack: U01ANA, timezone: Europe/Madrid}]
      teams: {emea: [ana, jonas]}                # a team is round-robin over its owners
      rules:                                     # first match wins; a rule without `when` only last
        - {name: emea, when: {country: [GB, DE]}, team: emea}
      fallback: ana                              # required with any rule: whoever no rule matches
    handoff: {sla: 4h, digest_at: "08:30"}
    feedback:
      reject_reasons:
        no_budget: {stage: recycled, score: -30, recycle_after: 0s, set: {budget_confirmed: false}}
        competitor: {stage: disqualified}

A test on a field the lead (or event) does not have never holds, whatever the comparison: ``country: {not_in: [...]}``
must not disqualify every lead that left the country blank. A missing file means no promotion rules (only people
promote), no disqualification, no routing, no reminders, and the default reject reasons. Problems come back as
``sales.yaml:line: message``; a file with any problem is not used at all.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from nurture.definitions import windows
from nurture.definitions.conditions import Comparison
from nurture.definitions.durations import Duration
from nurture.definitions.fields import DurationField, Strict, TimezoneName
from nurture.definitions.loader import validation_problems
from nurture.definitions.scoring import EventType, Points, Tests
from nurture.definitions.yamlsource import Loc, YamlDocument, load_yaml
from nurture.errors import Problem

SALES_FILE = "sales.yaml"

DOMAIN = "domain"
"""The pseudo-field every lead test may use: the part of the lead's email after the '@', in lower case."""

RESET_BEHAVIOUR = "reset_behaviour"
"""A reject reason's ``score``: drop every behaviour point the lead earned (fit points stay)."""

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"'{value}' is not a valid name: use lower-case letters, digits, '-' and '_'")
    return value


Name = Annotated[str, AfterValidator(_name)]
"""Rule names, owner ids, team names and reason codes: ``enterprise-ready``, ``ana``, ``no_budget``."""


def _trigger(value: Any) -> Any:
    """``demo_request`` is short for ``{event: demo_request}``."""
    if isinstance(value, str):
        return {"event": value}
    if value is None or isinstance(value, (list, int, float, bool)):
        raise ValueError(f"an intent trigger is an event type (demo_request) or {{event: ..., when: ...}}, not {value}")
    return value


class IntentTrigger(Strict):
    """An event that is an explicit hand-raise: the lead becomes an SQL as soon as it is recorded."""

    event: EventType
    when: Tests | None = Field(None, description="Tests on the lead's fields (and `domain`); all must hold.")
    properties: Tests | None = Field(None, description="Tests on the event's properties (form, ...); all must hold.")

    @property
    def conditional(self) -> bool:
        """Whether the trigger promotes only some events of its type."""
        return bool(self.when or self.properties)


Trigger = Annotated[IntentTrigger, BeforeValidator(_trigger)]


class ScoreAndFit(Strict):
    """A lead at or over ``score`` becomes an SQL when it also fits: ``min_fit`` fit points and every ``fit`` test."""

    name: Name
    score: Points = Field(description="The total score (behaviour + fit) the lead needs.")
    min_fit: Points | None = Field(None, ge=0, description="...and at least this many fit points of that score.")
    fit: Tests | None = Field(None, description="...and these tests on lead fields (BANT answers are custom fields).")


class Promotion(Strict):
    """When a lead (or MQL, or recycled lead) becomes a sales qualified lead."""

    intent: list[Trigger] = Field(default_factory=list)
    score_and_fit: list[ScoreAndFit] = Field(default_factory=list)


class DisqualifyRule(Strict):
    """Leads sales must never get: every test in ``when`` holds (lead fields, ``domain``)."""

    name: Name
    when: Tests


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class Owner(Strict):
    """A sales rep who can own leads."""

    id: Name
    name: str = Field(min_length=1)
    email: str = Field(description="Where the handoff email and the daily digest go.")
    slack: str | None = Field(None, min_length=1, description="Slack member id for notifications (U01ABC...).")
    timezone: TimezoneName | None = Field(None, description="The rep's timezone for the daily digest; unset: UTC.")

    @field_validator("email")
    @classmethod
    def _email(cls, email: str) -> str:
        if not _EMAIL.match(email):
            raise ValueError(f"'{email}' is not an email address")
        return email


class RoutingRule(Strict):
    """Leads matching ``when`` go to one ``owner`` or round-robin to a ``team``."""

    name: Name | None = Field(None, description="Shown as the reason for the assignment; default 'rule N'.")
    when: Tests | None = Field(None, description="Tests on lead fields; no `when`: every lead (only as the last rule).")
    owner: Name | None = None
    team: Name | None = None

    @model_validator(mode="after")
    def _one_target(self) -> RoutingRule:
        if (self.owner is None) == (self.team is None):
            raise ValueError("a routing rule names either an owner or a team")
        return self


class Routing(Strict):
    """Who gets a new SQL. An existing owner keeps the lead (``keep_owner``); then the rules, first match wins."""

    owners: list[Owner] = Field(default_factory=list)
    teams: dict[Name, list[Name]] = Field(default_factory=dict)
    rules: list[RoutingRule] = Field(default_factory=list)
    fallback: Name | None = Field(None, description="The owner of leads no rule matches; required with any rule.")
    keep_owner: bool = Field(True, description="A lead whose `owner` field names a known owner stays with them.")


class Handoff(Strict):
    """What happens after a lead is handed to its owner."""

    sla: DurationField | None = Field(None, description="An SQL not accepted or rejected this long gets a reminder.")
    digest_at: str | None = Field(None, description="Daily digest time in each owner's timezone, 'HH:MM'; unset: none.")

    @field_validator("sla")
    @classmethod
    def _positive(cls, sla: Duration | None) -> Duration | None:
        if sla is not None and not sla:
            raise ValueError("sla must be longer than 0s (leave it out for no reminders)")
        return sla

    @field_validator("digest_at")
    @classmethod
    def _time(cls, at: str | None) -> str | None:
        if at is not None:
            windows.parse_time_of_day(at)
        return at


def _score_change(value: Any) -> Any:
    if value == RESET_BEHAVIOUR or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    raise ValueError(f"expected points to add (-30) or {RESET_BEHAVIOUR}, not {value!r}")


def _field_value(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise ValueError(f"a field is set to text, a number, true/false or null, not {value!r}")


NOT_SETTABLE = ("email", "stage", "score", "tags", "rejection_reason")
"""Fields a reject reason cannot ``set``: stage and score have their own keys, rejection_reason is set to the code."""


class RejectReason(Strict):
    """What a rejection for this reason does to the lead."""

    label: str | None = Field(None, min_length=1, description="How the reason reads on the reject form and in reports.")
    stage: Literal["recycled", "disqualified"] = "recycled"
    score: Annotated[float | Literal["reset_behaviour"], BeforeValidator(_score_change)] = Field(
        0, description="Points added to the score (negative: taken off), or reset_behaviour."
    )
    recycle_after: DurationField | None = Field(
        None, description="Recycled leads wait this long before recycle campaigns or promotion pick them up again."
    )
    set: dict[str, Annotated[Any, BeforeValidator(_field_value)]] = Field(
        default_factory=dict, description="Lead fields to set besides rejection_reason (custom fields by name)."
    )

    @model_validator(mode="after")
    def _disqualified_is_final(self) -> RejectReason:
        if self.stage == "disqualified" and self.recycle_after is not None:
            raise ValueError("recycle_after only applies to stage recycled: a disqualified lead is never recycled")
        return self


def _default_reasons() -> dict[str, RejectReason]:
    recycled = RejectReason()
    return {
        "no_budget": recycled, "bad_timing": recycled, "wrong_person": recycled, "no_response": recycled,
        "not_a_fit": RejectReason(stage="disqualified"), "competitor": RejectReason(stage="disqualified"),
    }


class Feedback(Strict):
    """What sales' verdict on an SQL does. Accepting makes an opportunity; rejecting needs one of these codes."""

    reject_reasons: dict[Name, RejectReason] = Field(default_factory=_default_reasons)

    @field_validator("reject_reasons")
    @classmethod
    def _some(cls, reasons: dict[str, RejectReason]) -> dict[str, RejectReason]:
        if not reasons:
            raise ValueError("sales needs at least one reason to reject a lead with")
        return reasons


class SalesRules(Strict):
    """The whole sales file. ``SalesRules()`` (no file): no promotion rules, no routing, default reject reasons."""

    promotion: Promotion = Field(default_factory=Promotion)
    disqualify: list[DisqualifyRule] = Field(default_factory=list)
    routing: Routing = Field(default_factory=Routing)
    handoff: Handoff = Field(default_factory=Handoff)
    feedback: Feedback = Field(default_factory=Feedback)


# --- problems as path:line -----------------------------------------------------------------------------------------


def _parts(annotation: Any) -> list[Any]:
    """The types an annotation can hold, through Optional, Union and Annotated."""
    if get_origin(annotation) is Annotated:
        return _parts(get_args(annotation)[0])
    if get_origin(annotation) is Union or type(annotation).__name__ == "UnionType":
        return [part for argument in get_args(annotation) for part in _parts(argument)]
    return [annotation]


def _unknown(kind: str, name: str, known: list[str]) -> str:
    hint = difflib.get_close_matches(name, known, n=1)
    return f"{kind} '{name}' is not defined" + (f" (did you mean '{hint[0]}'?)" if hint else "")


def _duplicates(doc: YamlDocument, items: Sequence[tuple[Loc, str]], kind: str) -> list[Problem]:
    """A problem for every value already used by an earlier item (compared case-insensitively)."""
    problems: list[Problem] = []
    first: dict[str, Loc] = {}
    for loc, value in items:
        key = value.strip().casefold()
        if key in first:
            problems.append(doc.problem(loc, f"duplicate {kind} '{value}' (also on line {doc.line_of(first[key])})"))
        first.setdefault(key, loc)
    return problems


def _yaml_booleans(doc: YamlDocument, loc: Loc, tests: dict[str, Any] | None) -> list[Problem]:
    """YAML reads unquoted NO (Norway), ON, YES, Y and N as true/false; in a list of values that is always the mistake
    (a one-of test on a yes/no field is written ``true`` or ``false``, not as a list)."""
    problems = []
    for name, test in (tests or {}).items():
        lists = [test] if isinstance(test, list) else [test.in_, test.not_in] if isinstance(test, Comparison) else []
        if any(isinstance(value, bool) for values in lists for value in values or []):
            problems.append(doc.problem((*loc, name), (
                f"{name}: true/false in a list: YAML reads unquoted NO, YES, ON, OFF, Y and N as true/false, "
                "so quote them ('NO' for Norway)"
            )))
    return problems


def _check_promotion(rules: SalesRules, doc: YamlDocument) -> list[Problem]:
    problems: list[Problem] = []
    triggers = rules.promotion.intent
    for index, trigger in enumerate(triggers):
        at: Loc = ("promotion", "intent", index)
        for earlier_index, earlier in enumerate(triggers[:index]):
            if earlier.event == trigger.event and (not earlier.conditional or earlier == trigger):
                earlier_line = doc.line_of(("promotion", "intent", earlier_index))
                what = "the same trigger" if earlier == trigger else "a trigger without conditions"
                problems.append(doc.problem(at, f"{trigger.event}: already promoted by {what} on line {earlier_line}"))
                break
        problems += _yaml_booleans(doc, (*at, "when"), trigger.when)
        problems += _yaml_booleans(doc, (*at, "properties"), trigger.properties)
    score_rules = rules.promotion.score_and_fit
    score_names = [(("promotion", "score_and_fit", i, "name"), rule.name) for i, rule in enumerate(score_rules)]
    problems += _duplicates(doc, score_names, "score_and_fit name")
    for index, rule in enumerate(score_rules):
        problems += _yaml_booleans(doc, ("promotion", "score_and_fit", index, "fit"), rule.fit)
    problems += _duplicates(doc, [(("disqualify", i, "name"), r.name) for i, r in enumerate(rules.disqualify)],
                            "disqualify name")
    for index, disqualify in enumerate(rules.disqualify):
        problems += _yaml_booleans(doc, ("disqualify", index, "when"), disqualify.when)
    return problems


def _check_routing(routing: Routing, doc: YamlDocument) -> list[Problem]:
    problems: list[Problem] = []
    owners = [owner.id for owner in routing.owners]
    problems += _duplicates(doc, [(("routing", "owners", i, "id"), o.id) for i, o in enumerate(routing.owners)],
                            "owner id")
    problems += _duplicates(doc, [(("routing", "owners", i, "email"), o.email) for i, o in enumerate(routing.owners)],
                            "owner email")
    for team, members in routing.teams.items():
        if not members:
            problems.append(doc.problem(("routing", "teams", team), f"team '{team}' has no owners"))
        for index, member in enumerate(members):
            if member not in owners:
                problems.append(doc.problem(("routing", "teams", team, index), _unknown("owner", member, owners)))
        problems += _duplicates(doc, [(("routing", "teams", team, i), m) for i, m in enumerate(members)],
                                f"owner in team '{team}':")
    teams = list(routing.teams)
    rule_names = [(("routing", "rules", i, "name"), rule.name) for i, rule in enumerate(routing.rules) if rule.name]
    problems += _duplicates(doc, rule_names, "routing rule name")
    for index, rule in enumerate(routing.rules):
        at: Loc = ("routing", "rules", index)
        if rule.team is not None and rule.team not in teams:
            problems.append(doc.problem((*at, "team"), _unknown("team", rule.team, teams)))
        if rule.owner is not None and rule.owner not in owners:
            problems.append(doc.problem((*at, "owner"), _unknown("owner", rule.owner, owners)))
        if rule.when is None and index < len(routing.rules) - 1:
            problems.append(doc.problem(
                ("routing", "rules", index + 1),
                f"routing rule {index + 2} can never match: rule {index + 1} has no 'when' and matches every lead",
            ))
        problems += _yaml_booleans(doc, (*at, "when"), rule.when)
    if routing.fallback is not None and routing.fallback not in owners:
        problems.append(doc.problem(("routing", "fallback"), _unknown("fallback owner", routing.fallback, owners)))
    if routing.rules and routing.fallback is None:
        problems.append(doc.problem(
            ("routing",), "routing needs a 'fallback' owner for the leads no rule matches"
        ))
    return problems


def _check_feedback(feedback: Feedback, doc: YamlDocument) -> list[Problem]:
    problems = []
    for code, reason in feedback.reject_reasons.items():
        for name in reason.set:
            if name in NOT_SETTABLE:
                why = "it is set to the reason code" if name == "rejection_reason" else "it cannot be set here"
                problems.append(doc.problem(("feedback", "reject_reasons", code, "set", name), f"set: '{name}': {why}"))
    return problems


def validate_sales(doc: YamlDocument) -> tuple[SalesRules, list[Problem]]:
    """Validate a parsed sales file; with any problem the rules are ``SalesRules()`` (promote, route nobody)."""
    if doc.problems or doc.data is None:
        return SalesRules(), [*doc.problems] or [doc.problem((), "the file is empty (delete it for no sales rules)")]
    if not isinstance(doc.data, dict):
        return SalesRules(), [
            doc.problem((), "expected a mapping with promotion, disqualify, routing, handoff and feedback")
        ]
    try:
        rules = SalesRules.model_validate(doc.data)
    except ValidationError as exc:
        return SalesRules(), sorted(validation_problems(doc, exc, SalesRules))
    problems = sorted(set(
        _check_promotion(rules, doc) + _check_routing(rules.routing, doc) + _check_feedback(rules.feedback, doc)
    ))
    return (SalesRules() if problems else rules), problems


def load_sales(campaigns_dir: Path) -> tuple[SalesRules, list[Problem]]:
    """Read ``campaigns_dir/sales.yaml``; a missing file is no sales rules at all, not a problem."""
    path = campaigns_dir / SALES_FILE
    if not path.exists():
        return SalesRules(), []
    return validate_sales(load_yaml(path))
