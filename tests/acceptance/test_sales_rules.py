"""Sales rules: the sales.yaml shape and its problems, promotion to SQL, disqualification, routing, sales feedback."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from nurture.application.authoring import check
from nurture.core.facts import Engagement, LeadView
from nurture.core.promotion import Decision, FeedbackOutcome, decide, describe, feedback, reject_reasons
from nurture.core.routing import Route, owner, route
from nurture.core.scoring import ScoreBreakdown
from nurture.definitions.conditions import Comparison
from nurture.definitions.durations import Duration
from nurture.definitions.sales import SALES_FILE, SalesRules, load_sales

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)

EXAMPLE = """\
promotion:
  intent:
    - demo_request
    - pricing_request
    - contact_sales
    - {event: quote_request}
    - {event: free_trial_signup, when: {company_size: {gte: 20}}}
    - {event: form_submit, properties: {form: [demo, contact-sales]}}
  score_and_fit:
    - name: enterprise-ready
      score: 80
      fit: {company_size: {gte: 200}, title: {matches: "(?i)\\\\b(vp|head|director|chief|c[eot]o)\\\\b"}}
    - name: bant
      score: 60
      fit: {budget: [confirmed, approved], authority: [decision_maker], timeline: [this_quarter, next_quarter]}
    - {name: engaged-and-fit, score: 90, min_fit: 20}
disqualify:
  - {name: competitor, when: {domain: [rivalcorp.example, othervendor.example]}}
  - {name: student, when: {domain: {matches: "\\\\.(edu|ac\\\\.[a-z]{2})$"}}}
  - {name: country-not-served, when: {country: {not_in: [US, CA, GB, DE, FR, NL, IE, AU, 'NO']}}}
routing:
  owners:
    - {id: ana, name: Ana Ruiz, email: ana.ruiz@acme.example, slack: U01ANA, timezone: Europe/Madrid}
    - {id: jonas, name: Jonas Weber, email: jonas.weber@acme.example}
    - {id: mike, name: Mike Chen, email: mike.chen@acme.example}
    - {id: priya, name: Priya Nair, email: priya.nair@acme.example}
  teams:
    emea: [ana, jonas]
    na: [mike, priya]
  rules:
    - {name: emea, when: {country: [GB, DE, FR, NL, IE, ES, IT]}, team: emea}
    - {when: {company_size: {gte: 1000}}, owner: priya}
    - {name: north-america, when: {country: [US, CA]}, team: na}
  fallback: mike
handoff:
  sla: 4h
  digest_at: "08:30"
feedback:
  reject_reasons:
    no_budget: {stage: recycled, score: -30, recycle_after: 0s}
    bad_timing: {label: Not this quarter, stage: recycled, score: -10, recycle_after: 90d, set: {timeline: null}}
    wrong_person: {stage: recycled, score: -20}
    no_response: {score: reset_behaviour}
    competitor: {stage: disqualified}
"""


def write_sales(folder: Path, text: str) -> Path:
    path = folder / SALES_FILE
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def rules(tmp_path: Path) -> SalesRules:
    write_sales(tmp_path, EXAMPLE)
    loaded, problems = load_sales(tmp_path)
    assert problems == []
    return loaded


def lead(email: str = "dana@northwind.example", stage: str = "mql", **fields: Any) -> LeadView:
    attributes = {k: v for k, v in fields.items() if k in ("title", "company_size", "country", "industry", "owner")}
    custom = {k: v for k, v in fields.items() if k not in attributes}
    return LeadView("k", email, stage=stage, attributes=attributes, custom=custom)


def breakdown(total: float = 0, fit: float = 0) -> ScoreBreakdown:
    return ScoreBreakdown(total=total, behaviour=total - fit, fit=fit, items=())


def event(kind: str, **properties: Any) -> Engagement:
    return Engagement(type=kind, at=NOW, properties=properties)


# --- the file -------------------------------------------------------------------------------------------------------


def test_example_file_loads_into_rules(rules: SalesRules) -> None:
    intent = rules.promotion.intent
    assert [(t.event, t.conditional) for t in intent] == [
        ("demo_request", False), ("pricing_request", False), ("contact_sales", False), ("quote_request", False),
        ("free_trial_signup", True), ("form_submit", True),
    ]
    assert intent[4].when == {"company_size": Comparison(gte=20)}
    assert intent[5].properties == {"form": ["demo", "contact-sales"]}
    assert [(r.name, r.score, r.min_fit) for r in rules.promotion.score_and_fit] == [
        ("enterprise-ready", 80, None), ("bant", 60, None), ("engaged-and-fit", 90, 20),
    ]
    assert [r.name for r in rules.disqualify] == ["competitor", "student", "country-not-served"]
    assert [o.id for o in rules.routing.owners] == ["ana", "jonas", "mike", "priya"]
    assert rules.routing.teams == {"emea": ["ana", "jonas"], "na": ["mike", "priya"]}
    assert (rules.routing.fallback, rules.routing.keep_owner) == ("mike", True)
    assert (rules.handoff.sla, rules.handoff.digest_at) == (Duration(seconds=4 * 3600), "08:30")
    assert reject_reasons(rules) == ["no_budget", "bad_timing", "wrong_person", "no_response", "competitor"]


def test_missing_file_promotes_and_routes_nobody(tmp_path: Path) -> None:
    rules, problems = load_sales(tmp_path)
    assert (rules, problems) == (SalesRules(), [])
    assert decide(rules, lead(), breakdown(500, 100), event("demo_request")) is None
    assert route(rules, lead(country="US"), round_robin_position=0) is None
    assert (rules.handoff.sla, rules.handoff.digest_at) == (None, None)
    # sales can still reject: the default reasons
    assert reject_reasons(rules) == [
        "no_budget", "bad_timing", "wrong_person", "no_response", "not_a_fit", "competitor",
    ]
    assert feedback(rules, "reject", "competitor").stage == "disqualified"
    assert feedback(rules, "reject", "no_budget") == FeedbackOutcome(
        "recycled", 0, {"rejection_reason": "no_budget"}, "rejected by sales: no_budget"
    )


def test_the_shipped_sales_file_is_valid() -> None:
    rules, problems = load_sales(REPO / "campaigns")
    assert problems == []
    assert rules.promotion.intent and rules.promotion.score_and_fit and rules.disqualify
    assert rules.routing.rules and rules.routing.fallback is not None
    # the recycle campaign enters on rejection_reason: no_budget, so that reason must exist and recycle
    assert feedback(rules, "reject", "no_budget").set_fields["rejection_reason"] == "no_budget"
    assert feedback(rules, "reject", "no_budget").stage == "recycled"


@pytest.mark.parametrize(
    ("fields", "stage", "total", "fit", "kind", "expected"),
    [
        ({"title": "Head of Operations", "company_size": 350, "country": "US"}, "mql", 86, 26, None,
         ("promote", "score-and-fit:engaged-and-fit")),
        ({"title": "Head of Operations", "company_size": 350, "country": "US"}, "mql", 65, 26, None,
         ("promote", "score-and-fit:senior-at-target-account")),
        ({"company_size": 40}, "lead", 0, 0, "free_trial_signup", ("promote", "intent:free_trial_signup")),
        ({"company_size": 8}, "lead", 0, 0, "free_trial_signup", None),
        ({"country": "NO"}, "lead", 0, 0, "demo_request", ("promote", "intent:demo_request")),
        ({"country": "IR"}, "lead", 0, 0, "demo_request", ("disqualify", "disqualify:country-not-served")),
        ({"title": "PhD Student"}, "mql", 0, 0, None, ("disqualify", "disqualify:student-title")),
    ],
)
def test_the_shipped_rules_decide_as_the_comments_say(
    fields: dict[str, Any], stage: str, total: float, fit: float, kind: str | None, expected: tuple[str, str] | None
) -> None:
    rules, _ = load_sales(REPO / "campaigns")
    decision = decide(rules, lead(stage=stage, **fields), breakdown(total, fit), event(kind) if kind else None)
    assert (decision and (decision.kind, decision.rule)) == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"country": "NO", "company_size": 50}, Route("ana", "emea", "emea")),  # 'NO' (Norway) quoted in the file
        ({"country": "US", "company_size": 5000}, Route("priya", None, "strategic-accounts")),
        ({"country": "JP"}, Route("kenji", None, "apac")),
        ({"country": "BR"}, Route("mike", None, "fallback")),
    ],
)
def test_the_shipped_routing(fields: dict[str, Any], expected: Route) -> None:
    rules, _ = load_sales(REPO / "campaigns")
    assert route(rules, lead(**fields), round_robin_position=0) == expected


# --- problems, each at its line -----------------------------------------------------------------------------------

OWNERS = "routing:\n  owners:\n    - {id: ana, name: Ana, email: ana@acme.example}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # unknown keys, with a hint at every level
        ("promotoin: {}\n", ["1: unknown key 'promotoin' (did you mean 'promotion'?)"]),
        ("promotion:\n  intnet: [demo_request]\n", ["2: unknown key 'intnet' (did you mean 'intent'?)"]),
        ("promotion:\n  intent:\n    - {event: demo_request, whn: {country: US}}\n",
         ["3: unknown key 'whn' (did you mean 'when'?)"]),
        ("promotion:\n  score_and_fit:\n    - {name: a, score: 80, fitt: {company_size: 20}}\n",
         ["3: unknown key 'fitt' (did you mean 'fit'?)"]),
        ("promotion:\n  score_and_fit:\n    - {name: a, score: 80, fit: {company_size: {gtee: 200}}}\n",
         ["3: unknown key 'gtee' (did you mean 'gte'?)"]),
        ("disqualify:\n  - {name: a, wen: {domain: x.example}}\n",
         ["2: missing required key 'when'", "2: unknown key 'wen' (did you mean 'when'?)"]),
        (OWNERS + "    - {id: bob, name: Bob, email: bob@acme.example, slak: U1}\n",
         ["4: unknown key 'slak' (did you mean 'slack'?)"]),
        (OWNERS + "  rules:\n    - {whenn: {country: US}, owner: ana}\n  fallback: ana\n",
         ["5: unknown key 'whenn' (did you mean 'when'?)"]),
        (OWNERS + "  fallbak: ana\n", ["4: unknown key 'fallbak' (did you mean 'fallback'?)"]),
        ("handoff:\n  sla: 4h\n  digest: '08:30'\n", ["3: unknown key 'digest' (did you mean 'digest_at'?)"]),
        ("feedback:\n  reject_reasons:\n    no_budget: {stage: recycled, recycle_afer: 1d}\n",
         ["3: unknown key 'recycle_afer' (did you mean 'recycle_after'?)"]),
        ("feedback:\n  reject_resons: {}\n", ["2: unknown key 'reject_resons' (did you mean 'reject_reasons'?)"]),
        # values
        ("promotion:\n  intent:\n    - Demo Request\n",
         ["3: event type 'Demo Request': write it as the intake records it, in lower case (like page_view)"]),
        ("promotion:\n  intent:\n    - 5\n",
         ["3: an intent trigger is an event type (demo_request) or {event: ..., when: ...}, not 5"]),
        ("promotion:\n  score_and_fit:\n    - {name: a, score: '80'}\n", ["3: score: Input should be a valid number"]),
        ("promotion:\n  score_and_fit:\n    - {name: a, fit: {budget: confirmed}}\n",
         ["3: missing required key 'score'"]),
        ("promotion:\n  score_and_fit:\n    - {name: a, score: 80, min_fit: -5}\n",
         ["3: min_fit: Input should be greater than or equal to 0"]),
        ("promotion:\n  score_and_fit:\n    - {name: Enterprise Ready, score: 80}\n",
         ["3: 'Enterprise Ready' is not a valid name: use lower-case letters, digits, '-' and '_'"]),
        ("disqualify:\n  - name: student\n    when: {domain: {matches: '\\.(edu'}}\n",
         ["3: matches: invalid regular expression: missing ), unterminated subpattern at position 2"]),
        ("disqualify:\n  - {name: any, when: {}}\n",
         ["2: 'when' needs at least one test, such as {industry: software}"]),
        ("disqualify:\n  - {name: a, when: {country: [NO]}}\n",
         ["2: country: true/false in a list: YAML reads unquoted NO, YES, ON, OFF, Y and N as true/false, "
          "so quote them ('NO' for Norway)"]),
        ("handoff:\n  sla: 4 hours\n",
         ["2: sla: invalid duration '4 hours': use a number and a unit (s, m, h, d, w), combined as in '1d12h'"]),
        ("handoff:\n  sla: 0s\n", ["2: sla must be longer than 0s (leave it out for no reminders)"]),
        ("handoff:\n  digest_at: '25:00'\n", ["2: digest_at: invalid time '25:00': hours run 00-23 and minutes 00-59"]),
        (OWNERS.replace("ana@acme.example", "ana-at-acme"), ["3: 'ana-at-acme' is not an email address"]),
        (OWNERS.replace("}", ", timezone: Europe/Madird}"), ["3: unknown timezone 'Europe/Madird'"]),
        (OWNERS + "  rules:\n    - {when: {country: US}, owner: ana, team: emea}\n  fallback: ana\n",
         ["5: a routing rule names either an owner or a team"]),
        ("feedback:\n  reject_reasons:\n    no_budget: {stage: recyled}\n",
         ["3: stage: Input should be 'recycled' or 'disqualified'"]),
        ("feedback:\n  reject_reasons:\n    no_budget: {score: lots}\n",
         ["3: score: expected points to add (-30) or reset_behaviour, not 'lots'"]),
        ("feedback:\n  reject_reasons:\n    bad_timing: {recycle_after: 90}\n",
         ["3: recycle_after: duration must be text such as '2d' or '4h30m', not 90"]),
        ("feedback:\n  reject_reasons:\n    competitor: {stage: disqualified, recycle_after: 90d}\n",
         ["3: competitor: recycle_after only applies to stage recycled: a disqualified lead is never recycled"]),
        ("feedback:\n  reject_reasons:\n    no_budget: {set: {budget: [1, 2]}}\n",
         ["3: budget: a field is set to text, a number, true/false or null, not [1, 2]"]),
        ("feedback:\n  reject_reasons: {}\n",
         ["2: reject_reasons: sales needs at least one reason to reject a lead with"]),
        # references, duplicates and order
        ("promotion:\n  intent:\n    - demo_request\n    - {event: demo_request, when: {company_size: {gte: 20}}}\n",
         ["4: demo_request: already promoted by a trigger without conditions on line 3"]),
        ("promotion:\n  intent:\n    - {event: trial, when: {size: 1}}\n    - {event: trial, when: {size: 1}}\n",
         ["4: trial: already promoted by the same trigger on line 3"]),
        ("promotion:\n  score_and_fit:\n    - {name: a, score: 80}\n    - {name: a, score: 60}\n",
         ["4: duplicate score_and_fit name 'a' (also on line 3)"]),
        ("disqualify:\n  - {name: x, when: {domain: a.example}}\n  - {name: x, when: {domain: b.example}}\n",
         ["3: duplicate disqualify name 'x' (also on line 2)"]),
        (OWNERS + "    - {id: ana, name: Ana Two, email: ANA@acme.example}\n",
         ["4: duplicate owner email 'ANA@acme.example' (also on line 3)",
          "4: duplicate owner id 'ana' (also on line 3)"]),
        (OWNERS + "  teams:\n    emea: [ana, jonas]\n", ["5: owner 'jonas' is not defined"]),
        (OWNERS + "  teams:\n    emea:\n      - ana\n      - ana\n",
         ["7: duplicate owner in team 'emea': 'ana' (also on line 6)"]),
        (OWNERS + "  teams:\n    emea: []\n", ["5: team 'emea' has no owners"]),
        (OWNERS + "  teams:\n    emea: [ana]\n  rules:\n    - {when: {country: GB}, team: emae}\n  fallback: ana\n",
         ["7: team 'emae' is not defined (did you mean 'emea'?)"]),
        (OWNERS + "  rules:\n    - {when: {country: GB}, owner: anna}\n  fallback: ana\n",
         ["5: owner 'anna' is not defined (did you mean 'ana'?)"]),
        (OWNERS + "  rules:\n    - {when: {country: GB}, owner: ana}\n  fallback: mike\n",
         ["6: fallback owner 'mike' is not defined"]),
        (OWNERS + "  rules:\n    - {when: {country: GB}, owner: ana}\n",
         ["1: routing needs a 'fallback' owner for the leads no rule matches"]),
        (OWNERS + "  rules:\n    - {owner: ana}\n    - {when: {country: GB}, owner: ana}\n  fallback: ana\n",
         ["6: routing rule 2 can never match: rule 1 has no 'when' and matches every lead"]),
        (OWNERS + "  rules:\n    - {name: r, when: {country: GB}, owner: ana}\n    - {name: r, owner: ana}\n"
         "  fallback: ana\n", ["6: duplicate routing rule name 'r' (also on line 5)"]),
        ("feedback:\n  reject_reasons:\n    no_budget: {set: {rejection_reason: later}}\n",
         ["3: set: 'rejection_reason': it is set to the reason code"]),
        ("feedback:\n  reject_reasons:\n    no_budget: {set: {stage: sql}}\n",
         ["3: set: 'stage': it cannot be set here"]),
        # the file as a whole
        ("- promotion\n", ["1: expected a mapping with promotion, disqualify, routing, handoff and feedback"]),
        ("# nothing yet\n", ["1: the file is empty (delete it for no sales rules)"]),
        ("handoff:\n  sla: 4h\n  sla: 8h\n", ["3: duplicate key 'sla' (written twice in the same mapping)"]),
        ("promotion:\n  intent: [\n", ["3: YAML syntax error: expected the node content, but found '<stream end>'"]),
    ],
)
def test_file_problems_name_the_line(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = write_sales(tmp_path, text)
    rules, problems = load_sales(tmp_path)
    assert [f"{p.line}: {p.message}" for p in problems] == expected
    assert {p.path for p in problems} == {str(path)}
    assert rules == SalesRules()  # a broken file never half-applies


# --- promotion and disqualification -----------------------------------------------------------------------------------

SENIOR_AT_300 = {"title": "VP Operations", "company_size": 300, "country": "US"}
BANT = {"budget": "approved", "authority": "decision_maker", "timeline": "next_quarter", "country": "DE"}


@pytest.mark.parametrize(
    ("who", "total", "fit", "happened", "expected"),
    [
        # explicit intent promotes at once, whatever the score; plain triggers and {event: ...} alike
        (lead(), 0, 0, event("demo_request"),
         Decision("promote", "intent:demo_request", "demo_request (explicit intent)")),
        (lead(stage="lead"), 0, 0, event("quote_request"),
         Decision("promote", "intent:quote_request", "quote_request (explicit intent)")),
        (lead(stage="recycled"), 0, 0, event("contact_sales"),
         Decision("promote", "intent:contact_sales", "contact_sales (explicit intent)")),
        # a trigger's condition on lead fields...
        (lead(company_size=40), 0, 0, event("free_trial_signup"),
         Decision("promote", "intent:free_trial_signup", "free_trial_signup (explicit intent; company_size >= 20)")),
        (lead(company_size=12), 0, 0, event("free_trial_signup"), None),
        (lead(), 0, 0, event("free_trial_signup"), None),  # size unknown: the condition does not hold
        # ...and on the event's properties
        (lead(), 0, 0, event("form_submit", form="demo"),
         Decision("promote", "intent:form_submit", "form_submit (explicit intent; form in demo, contact-sales)")),
        (lead(), 0, 0, event("form_submit", form="newsletter"), None),
        (lead(), 0, 0, event("form_submit"), None),
        # events that are no hand-raise promote nobody
        (lead(), 0, 0, event("pricing_page_view"), None),
        (lead(), 0, 0, event("email_click"), None),
        # score and fit: both must hold
        (lead(**SENIOR_AT_300), 86, 0, None, Decision(
            "promote", "score-and-fit:enterprise-ready",
            "score 86 >= 80 and fit: company_size >= 200, title matches (?i)\\b(vp|head|director|chief|c[eot]o)\\b",
        )),
        (lead(**SENIOR_AT_300), 79.5, 0, None, None),  # under the score
        (lead(**{**SENIOR_AT_300, "company_size": 150}), 95, 0, None, None),  # not the size
        (lead(**{**SENIOR_AT_300, "title": "Operations Coordinator"}), 95, 0, None, None),  # not senior ("co" != coo)
        (lead(**BANT), 60, 0, None, Decision(
            "promote", "score-and-fit:bant",
            "score 60 >= 60 and fit: budget in confirmed, approved, authority in decision_maker, "
            "timeline in this_quarter, next_quarter",
        )),
        (lead(**{**BANT, "timeline": "next_year"}), 70, 0, None, None),
        (lead(**{k: v for k, v in BANT.items() if k != "authority"}), 70, 0, None, None),  # unknown authority
        # min_fit: fit points of the breakdown, not lead fields
        (lead(), 90, 25, None,
         Decision("promote", "score-and-fit:engaged-and-fit", "score 90 >= 90 and fit: 25 fit points >= 20")),
        (lead(), 120, 15, None, None),
        # an event that is no hand-raise still lets score and fit promote
        (lead(**SENIOR_AT_300), 81, 0, event("webinar_attended"), Decision(
            "promote", "score-and-fit:enterprise-ready",
            "score 81 >= 80 and fit: company_size >= 200, title matches (?i)\\b(vp|head|director|chief|c[eot]o)\\b",
        )),
        # intent wins over score and fit (the rule a rep sees is the hand-raise)
        (lead(**SENIOR_AT_300), 99, 50, event("pricing_request"),
         Decision("promote", "intent:pricing_request", "pricing_request (explicit intent)")),
        # disqualification first: it beats intent and score
        (lead("jo@rivalcorp.example"), 0, 0, event("demo_request"),
         Decision("disqualify", "disqualify:competitor", "competitor: domain rivalcorp.example")),
        (lead("Jo@RivalCorp.Example", **SENIOR_AT_300), 99, 50, None,
         Decision("disqualify", "disqualify:competitor", "competitor: domain rivalcorp.example")),
        (lead("sam@cs.stanford.edu"), 0, 0, event("demo_request"),
         Decision("disqualify", "disqualify:student", "student: domain cs.stanford.edu")),
        (lead("sam@ox.ac.uk"), 0, 0, None, Decision("disqualify", "disqualify:student", "student: domain ox.ac.uk")),
        (lead("sam@education.example"), 0, 0, event("demo_request"),
         Decision("promote", "intent:demo_request", "demo_request (explicit intent)")),
        (lead(country="BR"), 0, 0, event("demo_request"),
         Decision("disqualify", "disqualify:country-not-served", "country-not-served: country BR")),
        (lead(country="NO"), 0, 0, event("demo_request"),  # Norway, quoted: served
         Decision("promote", "intent:demo_request", "demo_request (explicit intent)")),
        # a field the lead does not have never disqualifies, even under not_in
        (lead(country=""), 0, 0, event("demo_request"),
         Decision("promote", "intent:demo_request", "demo_request (explicit intent)")),
        (lead(), 0, 0, None, None),
    ],
)
def test_decide(
    rules: SalesRules, who: LeadView, total: float, fit: float, happened: Engagement | None, expected: Decision | None
) -> None:
    assert decide(rules, who, breakdown(total, fit), happened) == expected


@pytest.mark.parametrize(
    ("stage", "promoted", "disqualified"),
    [
        ("lead", True, True),
        ("mql", True, True),
        ("recycled", True, True),
        ("sql", False, True),  # already handed off: no second promotion, but a competitor found later still goes
        ("opportunity", False, False),  # a deal in progress is sales' call
        ("customer", False, False),
        ("disqualified", False, False),  # already: nothing changes, and never promoted
    ],
)
def test_stages_that_may_be_promoted_or_disqualified(
    rules: SalesRules, stage: str, promoted: bool, disqualified: bool
) -> None:
    promotion = decide(rules, lead(stage=stage, **SENIOR_AT_300), breakdown(99, 40), event("demo_request"))
    assert (promotion is not None and promotion.kind == "promote") == promoted
    competitor = decide(rules, lead("x@rivalcorp.example", stage=stage), breakdown(99, 40), event("demo_request"))
    assert (competitor is not None and competitor.kind == "disqualify") == disqualified
    assert competitor is None or competitor.kind == "disqualify"  # a competitor is never promoted


def test_first_matching_rule_wins_in_file_order(tmp_path: Path) -> None:
    write_sales(tmp_path, """\
        promotion:
          score_and_fit:
            - {name: first, score: 50}
            - {name: second, score: 10}
        disqualify:
          - {name: junk, when: {email: {matches: '^test@'}}}
          - {name: competitor, when: {domain: rivalcorp.example}}
        """)
    rules, problems = load_sales(tmp_path)
    assert problems == []
    assert decide(rules, lead(), breakdown(60), None) == Decision("promote", "score-and-fit:first", "score 60 >= 50")
    assert decide(rules, lead(), breakdown(20), None) == Decision("promote", "score-and-fit:second", "score 20 >= 10")
    assert decide(rules, lead("test@rivalcorp.example"), breakdown(), None) == Decision(
        "disqualify", "disqualify:junk", "junk: email test@rivalcorp.example"
    )


@pytest.mark.parametrize(
    ("name", "test", "text"),
    [
        ("company_size", Comparison(gte=200), "company_size >= 200"),
        ("company_size", Comparison(gt=10.0, lt=50), "company_size > 10 and company_size < 50"),
        ("country", Comparison(not_in=["IR", "KP"]), "country not in IR, KP"),
        ("industry", Comparison.model_validate({"in": ["retail"]}), "industry in retail"),
        ("title", Comparison(contains=["vp", "chief"]), "title contains vp, chief"),
        ("budget", ["confirmed", "approved"], "budget in confirmed, approved"),
        ("decision_maker", True, "decision_maker = True"),
    ],
)
def test_describe(name: str, test: Any, text: str) -> None:
    assert describe(name, test) == text


# --- routing ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "position", "expected"),
    [
        ({"country": "DE", "company_size": 50}, 0, Route("ana", "emea", "emea")),
        ({"country": "DE", "company_size": 50}, 1, Route("jonas", "emea", "emea")),
        ({"country": "DE", "company_size": 50}, 2, Route("ana", "emea", "emea")),  # round-robin wraps around
        ({"country": "de", "company_size": 50}, 7, Route("jonas", "emea", "emea")),
        ({"country": "GB", "company_size": 5000}, 0, Route("ana", "emea", "emea")),  # territory rule comes first
        ({"country": "BR", "company_size": 5000}, 0, Route("priya", None, "rule 2")),  # size band, unnamed rule
        ({"country": "US", "company_size": 5000}, 1, Route("priya", None, "rule 2")),  # position only for teams
        ({"country": "US", "company_size": 80}, 0, Route("mike", "na", "north-america")),
        ({"country": "CA"}, 1, Route("priya", "na", "north-america")),
        ({"country": "BR", "company_size": 80}, 3, Route("mike", None, "fallback")),
        ({}, 0, Route("mike", None, "fallback")),  # nothing known: the fallback
        ({"country": "US", "owner": "jonas"}, 0, Route("jonas", None, "existing owner")),
        ({"country": "US", "owner": "Ana.Ruiz@acme.example"}, 0, Route("ana", None, "existing owner")),
        ({"country": "US", "owner": "someone-who-left"}, 0, Route("mike", "na", "north-america")),
    ],
)
def test_route(rules: SalesRules, fields: dict[str, Any], position: int, expected: Route) -> None:
    assert route(rules, lead(**fields), round_robin_position=position) == expected


def test_route_can_ignore_the_existing_owner(rules: SalesRules) -> None:
    fresh = rules.model_copy(update={"routing": rules.routing.model_copy(update={"keep_owner": False})})
    assert route(fresh, lead(country="US", owner="jonas"), round_robin_position=1) == Route(
        "priya", "na", "north-america"
    )


def test_a_catch_all_rule_and_owners_without_rules(tmp_path: Path) -> None:
    write_sales(tmp_path, OWNERS + "  teams: {all: [ana]}\n  rules:\n    - {team: all}\n  fallback: ana\n")
    rules, problems = load_sales(tmp_path)
    assert problems == []
    assert route(rules, lead(), round_robin_position=5) == Route("ana", "all", "rule 1")
    write_sales(tmp_path, OWNERS)  # a directory of owners, no rules and no fallback: routes nobody
    rules, problems = load_sales(tmp_path)
    assert problems == []
    assert route(rules, lead(), round_robin_position=0) is None


def test_owner_lookup(rules: SalesRules) -> None:
    ana = owner(rules, "ana")
    assert ana is not None and (ana.name, ana.email, ana.slack, ana.timezone) == (
        "Ana Ruiz", "ana.ruiz@acme.example", "U01ANA", "Europe/Madrid",
    )
    jonas = owner(rules, "JONAS.WEBER@acme.example")
    assert jonas is not None and (jonas.id, jonas.slack, jonas.timezone) == ("jonas", None, None)
    assert owner(rules, "nobody") is None


# --- sales feedback -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verdict", "reason", "expected"),
    [
        ("accept", None, FeedbackOutcome("opportunity", 0, {}, "accepted by sales")),
        ("accept", "call booked for Tuesday",
         FeedbackOutcome("opportunity", 0, {}, "accepted by sales: call booked for Tuesday")),
        ("reject", "no_budget", FeedbackOutcome(
            "recycled", -30, {"rejection_reason": "no_budget"}, "rejected by sales: no_budget", Duration(),
        )),
        ("reject", "bad_timing", FeedbackOutcome(
            "recycled", -10, {"timeline": None, "rejection_reason": "bad_timing"},
            "rejected by sales: bad_timing (Not this quarter)", Duration(days=90),
        )),
        ("reject", "wrong_person", FeedbackOutcome(
            "recycled", -20, {"rejection_reason": "wrong_person"}, "rejected by sales: wrong_person",
        )),
        ("reject", "no_response", FeedbackOutcome(
            "recycled", 0, {"rejection_reason": "no_response"}, "rejected by sales: no_response", reset_behaviour=True,
        )),
        ("reject", "competitor", FeedbackOutcome(
            "disqualified", 0, {"rejection_reason": "competitor"}, "rejected by sales: competitor",
        )),
    ],
)
def test_feedback(rules: SalesRules, verdict: str, reason: str | None, expected: FeedbackOutcome) -> None:
    assert feedback(rules, verdict, reason) == expected


def test_feedback_outcome_to_json(rules: SalesRules) -> None:
    assert feedback(rules, "reject", "bad_timing").to_json() == {
        "stage": "recycled", "score_adjustment": -10,
        "set_fields": {"timeline": None, "rejection_reason": "bad_timing"},
        "reason": "rejected by sales: bad_timing (Not this quarter)", "recycle_after": "12w6d",
        "reset_behaviour": False,
    }


CODES = "no_budget, bad_timing, wrong_person, no_response, competitor"


@pytest.mark.parametrize(
    ("verdict", "reason", "message"),
    [
        ("reject", "not_a_fit", f"unknown reject reason 'not_a_fit': use one of {CODES}"),
        ("reject", None, f"a rejection needs a reason: use one of {CODES}"),
        ("reject", "", f"a rejection needs a reason: use one of {CODES}"),
        ("maybe", "no_budget", "unknown verdict 'maybe': use accept or reject"),
    ],
)
def test_feedback_errors(rules: SalesRules, verdict: str, reason: str | None, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        feedback(rules, verdict, reason)
    assert str(raised.value) == message


# --- nurture check ---------------------------------------------------------------------------------------------------

BAD_SALES = """\
    promotion:
      score_and_fit:
        - {name: enterprise, score: 80, fitt: {company_size: {gte: 200}}}
    routing:
      owners:
        - {id: ana, name: Ana Ruiz, email: ana@acme.example}
      teams:
        emea: [ana, jonas]
      rules:
        - {when: {country: GB}, team: emea}
      fallback: ana
    """


def dirs(tmp_path: Path) -> tuple[Path, Path]:
    campaigns, templates = tmp_path / "campaigns", tmp_path / "templates"
    campaigns.mkdir()
    templates.mkdir()
    return campaigns, templates


def run_check(campaigns: Path, templates: Path) -> subprocess.CompletedProcess[str]:
    nurture = Path(sys.executable).with_name("nurture")
    return subprocess.run(
        [str(nurture), "check", "--campaigns", str(campaigns), "--templates", str(templates)],
        capture_output=True, text=True, timeout=60,
    )


def test_check_reports_sales_problems(tmp_path: Path) -> None:
    campaigns, templates = dirs(tmp_path)
    path = write_sales(campaigns, "handoff:\n  sla: 4h\n  digest: '08:30'\n")
    report = check(campaigns, templates)
    assert [str(p) for p in report.problems] == [f"{path}:3: unknown key 'digest' (did you mean 'digest_at'?)"]
    assert report.catalog.campaigns == {}  # sales.yaml is not a campaign


def test_check_validates_a_sales_file_given_by_name(tmp_path: Path) -> None:
    campaigns, templates = dirs(tmp_path)
    other = tmp_path / "elsewhere"
    other.mkdir()
    path = write_sales(other, "routing:\n  fallback: nobody\n")
    report = check(campaigns, templates, files=[path])
    assert [str(p) for p in report.problems] == [f"{path}:2: fallback owner 'nobody' is not defined"]


def test_cli_check_prints_sales_problems_and_exits_1(tmp_path: Path) -> None:
    campaigns, templates = dirs(tmp_path)
    path = write_sales(campaigns, BAD_SALES)
    result = run_check(campaigns, templates)
    assert result.stdout.splitlines() == [f"{path}:3: unknown key 'fitt' (did you mean 'fit'?)"]
    assert result.stderr == "1 problem(s) found\n"
    assert result.returncode == 1
    write_sales(campaigns, BAD_SALES.replace("fitt", "fit"))  # the next layer: references
    result = run_check(campaigns, templates)
    assert result.stdout.splitlines() == [f"{path}:8: owner 'jonas' is not defined"]
    assert result.returncode == 1


def test_cli_check_accepts_a_good_sales_file(tmp_path: Path) -> None:
    campaigns, templates = dirs(tmp_path)
    write_sales(campaigns, EXAMPLE)
    result = run_check(campaigns, templates)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok: 0 campaign(s)")


def test_cli_check_passes_on_the_repository() -> None:
    result = run_check(REPO / "campaigns", REPO / "templates")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (REPO / "campaigns" / SALES_FILE).is_file()
