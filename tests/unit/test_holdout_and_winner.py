"""Holdout groups and recorded A/B winners in the pure core: who is held out (``nurture.core.holdout``), how a
held-out enrollment walks its campaign without anything being sent or done, and how a recorded winner reaches later
leads (``nurture.core.engine``, driven through ``nurture.core.simulate`` as ``nurture simulate`` drives it)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from typing import Any

import pytest

from nurture.core.engine import choose_variant, pick_variant
from nurture.core.facts import Engagement, LeadView
from nurture.core.holdout import GroupFigures, held_out, lift
from nurture.core.proportions import newcombe, z_test
from nurture.core.simulate import simulate
from nurture.definitions.campaign import Campaign
from nurture.definitions.policy import Policy

START = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)  # a Monday
POLICY = Policy.model_validate({"frequency_cap": {"max": 1, "per": "1d"}})


def test_about_the_share_asked_for_is_held_out() -> None:
    for share in (0.1, 0.25):
        held = sum(held_out(str(lead_id), "welcome", share) for lead_id in range(1, 100_001))
        assert abs(held / 100_000 - share) < 0.006  # four standard deviations or so
    assert not any(held_out(str(i), "welcome", None) for i in range(1000))


def test_the_holdouts_of_two_campaigns_are_independent() -> None:
    first = {i for i in range(1, 50_001) if held_out(str(i), "welcome", 0.1)}
    second = {i for i in range(1, 50_001) if held_out(str(i), "pricing", 0.1)}
    assert abs(len(first & second) / 50_000 - 0.01) < 0.003  # 10 % of 10 %, not the same leads


def test_the_holdout_is_the_same_in_a_fresh_interpreter_with_another_hash_seed() -> None:
    here = sorted(i for i in range(2000) if held_out(str(i), "welcome", 0.1))
    code = ("import json; from nurture.core.holdout import held_out; "
            "print(json.dumps(sorted(i for i in range(2000) if held_out(str(i), 'welcome', 0.1))))")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert json.loads(there.stdout) == here and here


def campaign(**fields: Any) -> Campaign:
    return Campaign.model_validate({
        "id": "welcome", "name": "Welcome",
        "steps": [
            {"id": "hello", "email": {"template": "a.html.j2", "subject": "Hello",
                                      "variants": [{"id": "a"}, {"id": "b", "subject": "Hi there"}]}},
            {"id": "tag", "update": {"add_tags": ["welcomed"]}},
            {"id": "crm", "webhook": {"url": "https://crm.example/task"}},
            {"id": "next", "wait": "2d", "email": {"template": "a.html.j2", "subject": "Two days in"}},
            {"id": "news", "wait": "1d", "stream": {
                "cadence": {"days": ["tue"], "at": "10:00"},
                "content": [{"id": f"p{i}", "title": f"P{i}", "template": "a.html.j2", "subject": f"P{i}"}
                            for i in range(3)]}},
        ],
        **fields,
    })


def lead(key: str = "17") -> LeadView:
    return LeadView(key=key, email=f"lead{key}@example.com", stage="mql", timezone="Europe/Berlin")


def test_a_held_out_lead_walks_the_same_path_at_the_same_times_and_gets_nothing() -> None:
    chosen = campaign()
    sent = simulate(chosen, POLICY, lead(), start=START, days=40)
    held = simulate(chosen, POLICY, lead(), start=START, days=40, held_out=True)
    acted = [(e.at, e.step) for e in sent if e.kind in ("email", "update", "webhook")]
    skipped = [(e.at, e.step) for e in held if e.kind == "held_out"]
    assert acted == skipped and len(acted) == 7  # two emails, the update, the webhook, three stream pieces
    assert not [e for e in held if e.kind in ("email", "update", "webhook")]
    assert [e.detail for e in held if e.kind == "held_out"] == [
        "email not sent", "update not applied", "webhook not called", "email not sent",
        "content p0 not sent", "content p1 not sent", "content p2 not sent"]
    # a stream piece a week: the unsent pieces keep the cadence as sent ones do
    pieces = [e.at for e in held if e.detail.startswith("content")]
    assert [(b - a).days for a, b in itertools.pairwise(pieces)] == [7, 7]
    assert held[-1].kind == "end" and held[-1].detail == sent[-1].detail == "completed"


def test_a_held_out_lead_leaves_on_a_goal_like_any_other() -> None:
    chosen = campaign(exit={"events": ["demo_request"]})
    demo = Engagement("demo_request", datetime(2026, 3, 3, 12, 0, tzinfo=timezone.utc))
    held = simulate(chosen, POLICY, lead(), start=START, days=40, events=[demo], held_out=True)
    assert held[-1].kind == "end" and held[-1].detail == "goal:demo_request"
    assert [e.step for e in held if e.kind == "held_out"] == ["hello", "tag", "crm"]


def test_a_recorded_winner_goes_to_every_later_lead_and_the_others_by_the_hash() -> None:
    chosen = campaign()
    step = chosen.step("hello")
    by_hash = {key: choose_variant(f"{key}:welcome:hello", step.email.resolved_variants())[0]  # type: ignore[union-attr]
               for key in map(str, range(200))}
    assert set(by_hash.values()) == {"a", "b"}
    for key, variant in by_hash.items():
        assert pick_variant(step, lead(key), "welcome", None)[0] == variant
        assert pick_variant(step, lead(key), "welcome", {"hello": "b"})[:2] == ("b", "a.html.j2")
        assert pick_variant(step, lead(key), "welcome", {"hello": "gone"})[0] == variant  # no longer a variant
    timeline = simulate(chosen, POLICY, lead(), start=START, days=3, winners={"hello": "b"})
    first = next(e for e in timeline if e.kind == "email")
    assert (first.variant, first.subject, first.detail) == ("b", "Hi there", "variant b (the winner)")


# --- the lift's verdict


@pytest.mark.parametrize(
    ("sent", "held", "starts"),
    [
        (GroupFigures(900, 180, 40.0), GroupFigures(100, 8, 90.0), "the campaign lifts MQL→SQL conversion by +12.0 points"),
        (GroupFigures(900, 90, None), GroupFigures(100, 10, None), "no measurable lift yet: +0.0 points"),
        (GroupFigures(900, 45, None), GroupFigures(100, 20, None), "held-out leads convert better"),
        (GroupFigures(200, 40, None), GroupFigures(20, 1, None), "not enough data: 10 more leads"),
        (GroupFigures(5, 0, None), GroupFigures(0, 0, None), "not enough data: 55 more leads"),
    ],
)
def test_the_lift_verdict(sent: GroupFigures, held: GroupFigures, starts: str) -> None:
    result = lift(sent, held)
    assert result.verdict.startswith(starts), result.verdict
    if held.leads:
        assert result.difference == pytest.approx(sent.converted / sent.leads - held.converted / held.leads)
        assert (result.low, result.high) == pytest.approx(newcombe(sent.converted, sent.leads, held.converted,
                                                                   held.leads))
        assert result.p_value == pytest.approx(z_test(sent.converted, sent.leads, held.converted, held.leads)[1])
