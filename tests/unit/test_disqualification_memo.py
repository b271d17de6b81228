"""Disqualification decisions remembered by the values of the fields the rules read equal decisions made afresh."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import pytest

from nurture.core import promotion
from nurture.core.facts import LeadView
from nurture.definitions.sales import SALES_FILE, load_sales

SALES = """\
disqualify:
  - {name: competitor, when: {domain: [rivalcorp.example, othervendor.example]}}
  - {name: student, when: {domain: {matches: "\\\\.(edu|ac\\\\.[a-z]{2})$"}}}
  - {name: junk, when: {email: {matches: "(?i)^(test|asdf)[0-9]*@"}}}
  - {name: country-not-served, when: {country: [CU, IR, KP]}}
  - {name: tiny-and-unsure, when: {company_size: {lt: 2}, confirmed: true}}
  - {name: one-seat, when: {seats: 1}}
  - {name: tagged, when: {tags: [spam]}}
"""


@pytest.fixture
def sales(tmp_path: Path):
    (tmp_path / SALES_FILE).write_text(textwrap.dedent(SALES), encoding="utf-8")
    rules, problems = load_sales(tmp_path)
    assert problems == []
    return rules


VALUES = [None, 0, 1, 1.0, True, False, "1", "true", "", {"a": 1}, [1], ["x", 2]]


def test_remembered_decisions_equal_fresh_ones_for_random_leads(sales):
    rng = random.Random(3)
    for _ in range(4000):
        email = rng.choice(["ada", "test1", "asdf", "bob"]) + "@" + rng.choice(
            ["rivalcorp.example", "uni.edu", "ox.ac.uk", "acme.example", "othervendor.example"])
        attributes = {name: rng.choice(["US", "CU", "KP", None, 1, 1.0]) if name == "country" else rng.choice(VALUES)
                      for name in ("country", "company_size") if rng.random() < 0.8}
        custom = {name: rng.choice(VALUES) for name in ("confirmed", "seats") if rng.random() < 0.8}
        tags = tuple(rng.sample(["spam", "vip", "SPAM"], rng.randint(0, 2)))
        lead = LeadView(key="1", email=email, tags=tags, attributes={k: v for k, v in attributes.items() if v is not None},
                        custom=custom)
        assert promotion._disqualification(sales, lead) == promotion._first_disqualification(sales, lead)


@pytest.mark.parametrize(("first", "second"), [(True, 1), (1, 1.0), ("1", 1)])
def test_values_that_compare_equal_in_python_are_remembered_apart(sales, first, second):
    for value in (first, second, first):
        lead = LeadView(key="1", email="a@acme.example", attributes={"company_size": value},
                        custom={"confirmed": value, "seats": value})
        assert promotion._disqualification(sales, lead) == promotion._first_disqualification(sales, lead)


def test_leads_with_values_that_cannot_be_remembered_are_decided_each_time(sales):
    lead = LeadView(key="1", email="a@acme.example", custom={"seats": {"n": 1}})
    names, _known = promotion._disqualify_cache(sales)
    assert promotion._values_key(lead, names) is None
    assert promotion._disqualification(sales, lead) is None
    tagged = LeadView(key="1", email="a@acme.example", tags=("spam",))
    assert promotion._disqualification(sales, tagged).rule == "disqualify:tagged"


FULL_SALES = """\
promotion:
  intent:
    - demo_request
    - {event: free_trial_signup, when: {company_size: {gte: 20}}}
    - {event: form_submit, when: {stage: lead}, properties: {form: [demo]}}
  score_and_fit:
    - {name: engaged-and-fit, score: 80, min_fit: 20}
    - {name: sized, score: 30, fit: {company_size: {gte: 200}, seats: 1}}
    - {name: scored, score: 10, fit: {score: {gte: 50}, country: [US, DE]}}
    - {name: staged, score: 20, fit: {stage: mql}}
disqualify:
  - {name: competitor, when: {domain: [rivalcorp.example]}}
  - {name: scored-low, when: {score: {lt: 5}, country: [CU]}}
"""


@pytest.mark.parametrize("text", [SALES, FULL_SALES])
def test_decisions_with_a_leads_kept_checks_equal_decisions_without(tmp_path, text):
    from nurture.core.facts import Engagement
    from nurture.core.scoring import ScoreBreakdown

    (tmp_path / SALES_FILE).write_text(textwrap.dedent(text), encoding="utf-8")
    rules, problems = load_sales(tmp_path)
    assert problems == []
    rng = random.Random(5)
    for _ in range(400):
        email = rng.choice(["ada", "test1"]) + "@" + rng.choice(["rivalcorp.example", "uni.edu", "acme.example"])
        attributes = {name: rng.choice(["US", "CU", "DE", 1, 300, 25]) for name in ("country", "company_size")
                      if rng.random() < 0.8}
        custom = {name: rng.choice(VALUES) for name in ("confirmed", "seats") if rng.random() < 0.8}
        checks = promotion.FieldChecks(rules)
        for _ in range(12):  # one lead's views as a batch scores it: the same fields, another stage and score
            lead = LeadView(key="1", email=email, stage=rng.choice(["lead", "mql", "sql", "customer", "recycled"]),
                            score=rng.choice([0.0, 3.0, 45.0, 90.0]), attributes=attributes, custom=custom)
            breakdown = ScoreBreakdown(lead.score, lead.score, rng.choice([0.0, 25.0]), ())
            event = rng.choice([None, Engagement("demo_request", None), Engagement("free_trial_signup", None),  # type: ignore[arg-type]
                                Engagement("form_submit", None, properties={"form": "demo"})])  # type: ignore[arg-type]
            assert promotion.decide(rules, lead, breakdown, event, checks) == promotion.decide(
                rules, lead, breakdown, event)
