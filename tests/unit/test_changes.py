"""Editing a live campaign: the step-level diff of two versions and where the leads at a removed step go
(:mod:`nurture.core.changes`). The rule: the step whose ``replaces`` names it, else its unconditional continuation in the
version the leads ran under, else out with ``step_removed:<id>`` — never a branch or ``wait_for`` outcome not earned."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from nurture.core.changes import diff, relocate_removed
from nurture.definitions.campaign import Campaign


def email(step_id: str, wait: str = "0s", **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "wait": wait, "email": {"template": f"{step_id}.html.j2", "subject": step_id.title()},
            **extra}


WAIT_FOR = {"id": "w", "wait_for": {"event": "email_click", "step": "guide", "timeout": "2d"},
            "on_event": "clicked", "on_timeout": "cold"}
V1_STEPS = [email("welcome"), email("guide", "1d"), WAIT_FOR, email("clicked", "1d", goto="end"),
            email("cold", "1d"), email("case-study", "2d")]


def campaign(steps: list[dict[str, Any]], **fields: Any) -> Campaign:
    return Campaign.model_validate({"id": "trial", "name": "Trial", "steps": steps, **fields})


V1 = campaign(V1_STEPS)


def without(*ids: str, **changes: dict[str, Any]) -> list[dict[str, Any]]:
    """V1's steps without ``ids``, with ``changes`` merged into the named steps."""
    steps = [copy.deepcopy(s) for s in V1_STEPS if s["id"] not in ids]
    for step in steps:
        step.update(changes.get(step["id"].replace("-", "_"), {}))
    return steps


@pytest.mark.parametrize(
    ("new_steps", "removed", "target", "end_reason"),
    [
        # the case: the next step in the file was the on_event target; without replaces the leads leave
        (without("w", guide={"goto": "cold"}), "w", None, "step_removed:w"),
        (without("w", cold={"replaces": ["w"]}), "w", "cold", None),
        (without("w", clicked={"replaces": ["w"]}), "w", "clicked", None),  # explicit: the marketer's choice
        # a plain email step: its continuation, whatever happened there
        (without("cold", w={"on_timeout": "case-study"}), "cold", "case-study", None),
        (without("guide"), "guide", "w", None),
        # through other removed steps, to the first that still exists
        (without("cold", "case-study", w={"on_timeout": "end"}), "cold", None, "completed"),
        (without("guide", "w", cold={"replaces": ["w"]}), "guide", "cold", None),
        (without("welcome", "guide", "w"), "welcome", None, "step_removed:welcome"),
        # the last step: nothing followed it but the end
        (without("case-study"), "case-study", None, "completed"),
        # a step that goes to one place whatever happens there: `clicked` always goes to the end
        (without("clicked", w={"on_event": "cold"}), "clicked", None, "completed"),
    ],
)
def test_where_the_leads_at_a_removed_step_go(new_steps: list[dict[str, Any]], removed: str, target: str | None,
                                              end_reason: str | None) -> None:
    relocation = relocate_removed(V1, campaign(new_steps), removed)
    assert (relocation.target, relocation.end_reason) == (target, end_reason), relocation.why


def test_a_wait_for_whose_outcomes_lead_to_one_step_is_an_unconditional_continuation() -> None:
    same = copy.deepcopy(V1_STEPS)
    same[2] = {**WAIT_FOR, "on_event": "cold"}
    old = campaign(same)
    new = campaign([s for s in same if s["id"] != "w"])
    relocation = relocate_removed(old, new, "w")
    assert (relocation.target, relocation.end_reason) == ("cold", None)


@pytest.mark.parametrize(
    ("branch", "target", "end_reason"),
    [
        ([{"when": {"score": {"gte": 40}}, "goto": "a"}, {"goto": "b"}], None, "step_removed:route"),
        ([{"when": {"score": {"gte": 40}}, "goto": "b"}, {"goto": "b"}], "b", None),
        ([{"when": {"score": {"gte": 40}}, "goto": "a"}], "a", None),  # no rule matched: the next step, a, too
        ([{"when": {"score": {"gte": 40}}, "goto": "b"}], None, "step_removed:route"),  # b, or the next step a
    ],
)
def test_a_branch_is_unconditional_only_when_every_outcome_goes_to_one_step(branch: list[dict[str, Any]],
                                                                            target: str | None,
                                                                            end_reason: str | None) -> None:
    old = campaign([email("start"), {"id": "route", "branch": branch}, email("a", "1d"), email("b", "1d")])
    new = campaign([email("start"), email("a", "1d"), email("b", "1d")])
    relocation = relocate_removed(old, new, "route")
    assert (relocation.target, relocation.end_reason) == (target, end_reason)


def test_without_the_old_version_only_replaces_moves_a_lead() -> None:
    new = campaign(without("w", guide={"goto": "cold"}))
    assert relocate_removed(None, new, "w").end_reason == "step_removed:w"
    replaced = campaign(without("w", cold={"replaces": ["w"]}))
    assert relocate_removed(None, replaced, "w").target == "cold"


def test_the_diff_names_each_change_by_step_and_key() -> None:
    steps = without("cold", w={"on_timeout": "case-study"}, case_study={"wait": "3d"})
    steps[3]["email"] = {"template": "clicked-2.html.j2", "subject": "You clicked!"}  # clicked
    steps.append(steps.pop(3))  # clicked moves to the end
    steps.insert(1, email("hello", "1h"))
    new = campaign(steps, paused=True, priority=5, entry={"stage": ["mql", "lead"]})
    result = diff(V1, new)
    # the other kept steps keep their order: the one taken out of it is the one that moved
    assert (result.added, result.removed, result.moved) == (["hello"], ["cold"], ["clicked"])
    assert {step: [c.field for c in changes] for step, changes in result.steps.items()} == {
        "w": ["on_timeout"], "case-study": ["wait"], "clicked": ["email.subject", "email.template"],
    }
    assert [(c.field, c.old, c.new) for c in result.steps["case-study"]] == [("wait", "2d", "3d")]
    assert [(c.field, c.old, c.new) for c in result.campaign] == [
        ("paused", False, True), ("priority", 0, 5), ("entry", {"stage": "mql"}, {"stage": ["mql", "lead"]}),
    ]
    assert "step 'case-study': wait: 2d -> 3d" in result.lines()


def test_the_diff_of_the_same_campaign_is_empty_and_a_changed_wait_for_is_named_key_by_key() -> None:
    assert diff(V1, campaign(copy.deepcopy(V1_STEPS))).empty
    steps = copy.deepcopy(V1_STEPS)
    steps[2]["wait_for"]["timeout"] = "4d"
    result = diff(V1, campaign(steps))
    assert [(c.field, c.old, c.new) for c in result.steps["w"]] == [("wait_for.timeout", "2d", "4d")]
    assert not result.empty


def test_an_action_that_changed_kind_is_named() -> None:
    steps = copy.deepcopy(V1_STEPS)
    steps[4] = {"id": "cold", "wait": "1d", "update": {"add_tags": ["cold"]}}
    fields = [c.field for c in diff(V1, campaign(steps)).steps["cold"]]
    assert fields == ["action", "email", "update"]


def test_a_holdout_and_an_ab_goal_or_winner_are_named_in_the_diff() -> None:
    steps = copy.deepcopy(V1_STEPS)
    steps[0]["email"]["variants"] = [{"id": "a"}, {"id": "b", "subject": "Hello"}]
    old = campaign(copy.deepcopy(steps))
    steps[0]["email"]["goal"] = "open"
    steps[0]["email"]["winner"] = {"confidence": "95%", "min_sends": 200}
    result = diff(old, campaign(steps, holdout="10%"))
    assert [c.field for c in result.steps["welcome"]] == ["email.goal", "email.winner"]
    assert [c.field for c in result.campaign] == ["holdout"]
