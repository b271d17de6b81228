"""The lifecycle's order and the rule for a stage given from outside (core/lifecycle.py), as a table of every pair."""

from __future__ import annotations

from itertools import product

import pytest

from nurture.core.lead_fields import LEAD_STAGES, clean_stage
from nurture.core.lifecycle import (
    BACKWARDS,
    FUNNEL,
    KEPT,
    RESERVED,
    SET_BY_RULES_OR_SALES,
    STAGES,
    StageNotApplied,
    outside_stage_refusal,
    rank,
)


def test_the_funnel_is_ordered_and_every_stage_is_a_lead_stage() -> None:
    assert FUNNEL == ("lead", "mql", "sql", "opportunity", "customer")
    assert [rank(stage) for stage in FUNNEL] == [0, 1, 2, 3, 4]
    assert [rank(stage) for stage in SET_BY_RULES_OR_SALES] == [None, None]
    assert set(STAGES) == set(LEAD_STAGES) == {*FUNNEL, "recycled", "disqualified"}


@pytest.mark.parametrize(("current", "given", "expected"), [
    # a new lead starts where the file says, except where only rules and sales put a lead
    (None, "lead", None),
    (None, "mql", None),
    (None, "customer", None),
    (None, "recycled", (RESERVED, "lead", "only rules or sales set recycled")),
    (None, "disqualified", (RESERVED, "lead", "only rules or sales set disqualified")),
    # forward applies, the same stage is nothing to write, backwards does not apply
    ("lead", "mql", None),
    ("mql", "sql", None),
    ("sql", "opportunity", None),
    ("opportunity", "customer", None),
    ("lead", "customer", None),
    ("sql", "sql", None),
    ("sql", "lead", (BACKWARDS, "sql", "would move backwards: sql → lead")),
    ("customer", "mql", (BACKWARDS, "customer", "would move backwards: customer → mql")),
    ("opportunity", "lead", (BACKWARDS, "opportunity", "would move backwards: opportunity → lead")),
    # recycled and disqualified are kept, and never given
    ("recycled", "mql", (KEPT, "recycled", "set by rules or sales: recycled; given mql")),
    ("recycled", "customer", (KEPT, "recycled", "set by rules or sales: recycled; given customer")),
    ("disqualified", "mql", (KEPT, "disqualified", "set by rules or sales: disqualified; given mql")),
    ("recycled", "recycled", None),
    ("recycled", "disqualified", (RESERVED, "recycled", "only rules or sales set disqualified")),
    ("sql", "recycled", (RESERVED, "sql", "only rules or sales set recycled")),
    ("mql", "disqualified", (RESERVED, "mql", "only rules or sales set disqualified")),
    # nothing given: nothing to judge
    ("sql", None, None),
    (None, None, None),
])
def test_a_stage_from_outside(current: str | None, given: str | None, expected: tuple[str, str, str] | None) -> None:
    refusal = outside_stage_refusal(current, given)
    if expected is None:
        assert refusal is None
        return
    assert refusal is not None
    assert (refusal.reason, refusal.stage, refusal.message) == expected
    assert refusal.given == given
    assert refusal.to_json() == {"reason": expected[0], "stage": expected[1], "given": given, "message": expected[2]}


@pytest.mark.parametrize(("current", "given"), list(product((None, *STAGES), STAGES)))
def test_a_stage_from_outside_never_moves_a_lead_backwards_nor_out_of_or_into_recycled_or_disqualified(
        current: str | None, given: str) -> None:
    """The rule over every pair: what it lets through is a new lead's funnel stage, or a move forward."""
    refusal = outside_stage_refusal(current, given)
    applies = refusal is None and given != current
    if applies:
        assert given in FUNNEL
        assert current is None or (current in FUNNEL and FUNNEL.index(given) > FUNNEL.index(current))
    elif given != current:
        assert isinstance(refusal, StageNotApplied) and refusal.stage == (current or "lead")


def test_an_unknown_stage_is_a_caller_mistake() -> None:
    with pytest.raises(ValueError, match="unknown stage 'hot'"):
        outside_stage_refusal("lead", "hot")
    assert clean_stage(" Customer ") == "customer"
