"""Lead scoring: the scoring.yaml shape and its problems, event points and daily caps, decay, fit, breakdowns, MQL."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nurture.application.authoring import check
from nurture.core.conditions import compare
from nurture.core.facts import Engagement, LeadView
from nurture.core.scoring import (
    ScoreBreakdown,
    ScoreItem,
    decayed,
    event_points,
    fit_items,
    score,
    stage_after_scoring,
    utc_day,
)
from nurture.definitions.conditions import Comparison
from nurture.definitions.durations import Duration
from nurture.definitions.scoring import SCORING_FILE, ScoringRules, load_scoring

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)

EXAMPLE = """\
behaviour:
  half_life: 30d
  events:
    page_view:
      - {when: {url: {contains: /pricing}}, points: 10, max_per_day: 1}
      - {when: {url: {matches: "/blog/"}}, points: 2}
      - {points: 1, max_per_day: 5}
    email_open: {points: 1, max_per_day: 3}
    email_click: 3
    content_download: 10
    webinar_attended: 15.5
    careers_page_view: -10
    unsubscribe: -50
fit:
  - {label: "company size 200+", when: {company_size: {gte: 200}}, points: 15}
  - {label: "target industry", when: {industry: [software, saas, logistics]}, points: 10}
  - {label: "served region", when: {country: [US, CA, GB, DE]}, points: 5}
  - {label: "senior title", when: {title: {matches: "(?i)\\\\b(vp|head|director|chief|c[eot]o)\\\\b"}}, points: 10}
  - {label: "budget confirmed", when: {budget: {in: [confirmed, approved]}}, points: 10}
  - {label: "student", when: {title: {contains: [student, intern]}}, points: -15}
thresholds:
  mql: 40
  mql_min_fit: 10
floor: -100
"""


def write_scoring(folder: Path, text: str) -> Path:
    path = folder / SCORING_FILE
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str) -> ScoringRules:
    write_scoring(tmp_path, text)
    rules, problems = load_scoring(tmp_path)
    assert problems == []
    return rules


@pytest.fixture
def rules(tmp_path: Path) -> ScoringRules:
    return load_text(tmp_path, EXAMPLE)


def event(kind: str, at: datetime = NOW, **properties: object) -> Engagement:
    return Engagement(type=kind, at=at, properties=properties)


# --- the file -------------------------------------------------------------------------------------------------------


def test_example_file_loads_into_rules(rules: ScoringRules) -> None:
    events = rules.behaviour.events
    assert rules.behaviour.half_life == Duration(days=30)
    assert [(r.points, r.max_per_day, r.when is None) for r in events["email_click"]] == [(3, None, True)]
    assert [(r.points, r.max_per_day) for r in events["email_open"]] == [(1, 3)]
    assert [(r.points, r.max_per_day) for r in events["page_view"]] == [(10, 1), (2, None), (1, 5)]
    assert events["page_view"][0].when == {"url": Comparison(contains="/pricing")}
    assert events["webinar_attended"][0].points == 15.5
    assert events["unsubscribe"][0].points == -50
    assert [r.label for r in rules.fit] == [
        "company size 200+", "target industry", "served region", "senior title", "budget confirmed", "student",
    ]
    assert rules.fit[1].when == {"industry": ["software", "saas", "logistics"]}
    assert (rules.thresholds.mql, rules.thresholds.mql_min_fit, rules.floor) == (40, 10, -100)


def test_missing_file_scores_nothing(tmp_path: Path) -> None:
    rules, problems = load_scoring(tmp_path)
    assert (rules, problems) == (ScoringRules(), [])
    assert event_points(rules, event("email_click"), 0) == (0.0, "no rule for email_click")
    assert stage_after_scoring(rules, "lead", score(rules, LeadView("k", "a@b.example"), [], NOW)) is None


def test_the_shipped_scoring_file_is_valid() -> None:
    rules, problems = load_scoring(REPO / "campaigns")
    assert problems == []
    assert rules.thresholds.mql is not None and rules.behaviour.events and rules.fit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("flor: -100\n", ["1: unknown key 'flor' (did you mean 'floor'?)"]),
        (
            "behaviour:\n  events:\n    page_view: {points: 1, max_per_dya: 5}\n",
            ["3: unknown key 'max_per_dya' (did you mean 'max_per_day'?)"],
        ),
        (
            "behaviour:\n  events:\n    page_view:\n      - {when: {url: {contain: /x}}, points: 1}\n",
            ["4: unknown key 'contain' (did you mean 'contains'?)"],
        ),
        (
            "fit:\n  - label: big\n    when:\n      company_size: {gtee: 200}\n    points: 15\n",
            ["4: unknown key 'gtee' (did you mean 'gte'?)"],
        ),
        ("thresholds:\n  mlq: 40\n", ["2: unknown key 'mlq' (did you mean 'mql'?)"]),
        ("behaviour:\n  half_life: 30 days\n", ["2: half_life: invalid duration '30 days': use a number and a unit "
                                                 "(s, m, h, d, w), combined as in '1d12h'"]),
        ("behaviour:\n  half_life: 0s\n", ["2: half_life must be longer than 0s (leave it out for no decay)"]),
        (
            'fit:\n  - label: senior\n    when: {title: {matches: "(vp|head"}}\n    points: 10\n',
            ["3: matches: invalid regular expression: missing ), unterminated subpattern at position 0"],
        ),
        (
            "fit:\n  - {label: Big, when: {company_size: {gte: 200}}, points: 15}\n"
            "  - {label: big, when: {company_size: {gte: 500}}, points: 5}\n",
            ["3: duplicate fit label 'big' (also on line 2)"],
        ),
        ("thresholds:\n  mql: -5\n", ["2: mql: Input should be greater than or equal to 0"]),
        ('thresholds:\n  mql: "40"\n', ["2: mql: Input should be a valid number"]),
        ("thresholds:\n  mql_min_fit: 10\n", ["1: thresholds: mql_min_fit only applies together with an mql threshold"]),
        (
            "fit:\n  - {label: big, when: {company_size: {gte: 200}}, points: 15}\n"
            "  - {label: small, when: {company_size: {lt: 20}}, points: -10}\n"
            "thresholds:\n  mql: 40\n  mql_min_fit: 20\n",
            ["6: mql_min_fit 20 can never be reached: the fit rules give at most 15 points"],
        ),
        (
            "fit:\n  - {label: vp, when: {title: {contains: vp}}, points: 15, group: seniority}\n"
            "  - {label: manager, when: {title: {contains: manager}}, points: 8, group: seniority}\n"
            "thresholds:\n  mql: 40\n  mql_min_fit: 16\n",
            ["6: mql_min_fit 16 can never be reached: the fit rules give at most 15 points"],
        ),
        ("floor: 10\n", ["1: floor: Input should be less than or equal to 0"]),
        ("behaviour:\n  events:\n    unsubscribe:\n", [
            "3: unsubscribe: expected points (a number), {points: N, max_per_day: N} or a list of rules, not None",
        ]),
        ('behaviour:\n  events:\n    email_click: "3"\n', [
            "3: email_click: expected points (a number), {points: N, max_per_day: N} or a list of rules, not '3'",
        ]),
        ("behaviour:\n  events:\n    email_click: {points: true}\n", ["3: points: Input should be a valid number"]),
        ("behaviour:\n  events:\n    page_view: {points: 1, max_per_day: 0}\n", [
            "3: max_per_day: Input should be greater than or equal to 1",
        ]),
        ("behaviour:\n  events:\n    bounce: []\n", [
            "3: bounce: an empty list of rules scores nothing: add a rule or remove the event type",
        ]),
        (
            "behaviour:\n  events:\n    page_view:\n      - {points: 1}\n      - {when: {url: {contains: /pricing}}, points: 10}\n",
            ["5: page_view: rule 2 can never match: rule 1 has no 'when' and matches every event"],
        ),
        ("behaviour:\n  events:\n    Page View: 1\n", [
            "3: event type 'Page View': write it as the intake records it, in lower case (like page_view)",
        ]),
        ("fit:\n  - {label: any, when: {}, points: 1}\n", ["2: 'when' needs at least one test, such as {industry: software}"]),
        ("fit:\n  - {label: region, when: {country: null}, points: 1}\n", [
            "2: country: nothing to test: write a value, a list (one of) or a comparison such as {gte: 200}",
        ]),
        ("fit:\n  - {label: region, points: 1}\n", ["2: missing required key 'when'"]),
        ("- behaviour\n", ["1: expected a mapping with behaviour, fit, thresholds and floor"]),
        ("# all commented out\n", ["1: the file is empty (delete it for no scoring)"]),
        ("thresholds:\n  mql: 40\n  mql: 50\n", ["3: duplicate key 'mql' (written twice in the same mapping)"]),
        ("behaviour:\n  events: [\n", ["3: YAML syntax error: expected the node content, but found '<stream end>'"]),
    ],
)
def test_file_problems_name_the_line(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = write_scoring(tmp_path, text)
    rules, problems = load_scoring(tmp_path)
    assert [f"{p.line}: {p.message}" for p in problems] == expected
    assert {p.path for p in problems} == {str(path)}
    assert rules == ScoringRules()  # a broken file never half-applies


# --- contains / matches -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "test", "expected"),
    [
        ("https://acme.example/Pricing/plans", {"contains": "/pricing"}, True),
        ("https://acme.example/blog", {"contains": "/pricing"}, False),
        ("Head of Operations", {"contains": ["vp", "head of"]}, True),
        ("Analyst", {"contains": ["vp", "head of"]}, False),
        (2024, {"contains": "202"}, True),
        (None, {"contains": "x"}, False),
        (True, {"contains": "true"}, False),
        ("VP Sales", {"matches": r"(?i)\b(vp|head|director|chief|c[eot]o)\b"}, True),
        ("CTO", {"matches": r"(?i)\b(vp|head|director|chief|c[eot]o)\b"}, True),
        ("Vice President", {"matches": r"(?i)\b(vp|head|director|chief|c[eot]o)\b"}, False),
        ("Sharpshooter", {"matches": r"(?i)\b(vp|head|director|chief|c[eot]o)\b"}, False),
        ("vp sales", {"matches": r"\bVP\b"}, False),  # case-sensitive unless (?i)
        ("VP of Sales", {"matches": r"^VP", "contains": "sales"}, True),
        ("VP of Marketing", {"matches": r"^VP", "contains": "sales"}, False),
    ],
)
def test_compare_contains_and_matches(value: object, test: dict[str, object], expected: bool) -> None:
    assert compare(value, Comparison.model_validate(test)) is expected


# --- event points -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "properties", "scored_today", "expected"),
    [
        ("email_click", {}, 0, (3.0, "email_click +3")),
        ("email_click", {}, 40, (3.0, "email_click +3")),  # no cap configured
        ("webinar_attended", {}, 0, (15.5, "webinar_attended +15.5")),
        ("unsubscribe", {}, 0, (-50.0, "unsubscribe -50")),
        ("careers_page_view", {}, 0, (-10.0, "careers_page_view -10")),
        ("email_open", {}, 2, (1.0, "email_open +1")),
        ("email_open", {}, 3, (0.0, "email_open: daily cap of 3 reached")),
        ("webinar_registered", {}, 0, (0.0, "no rule for webinar_registered")),
        ("page_view", {"url": "https://acme.example/pricing"}, 0, (10.0, "page_view +10 (url contains /pricing)")),
        ("page_view", {"url": "https://acme.example/pricing"}, 1, (0.0, "page_view: daily cap of 1 reached")),
        ("page_view", {"url": "https://acme.example/blog/scoring"}, 7, (2.0, "page_view +2 (url matches /blog/)")),
        ("page_view", {"url": "https://acme.example/about"}, 4, (1.0, "page_view +1")),
        ("page_view", {"url": "https://acme.example/about"}, 5, (0.0, "page_view: daily cap of 5 reached")),
        ("page_view", {}, 0, (1.0, "page_view +1")),  # no url: only the catch-all rule matches
    ],
)
def test_event_points(
    rules: ScoringRules, kind: str, properties: dict[str, object], scored_today: int, expected: tuple[float, str]
) -> None:
    assert event_points(rules, event(kind, **properties), scored_today) == expected


def test_event_points_when_no_rule_matches(tmp_path: Path) -> None:
    rules = load_text(tmp_path, """\
        behaviour:
          events:
            content_download:
              - {when: {content: [buyers-guide, roi-calculator]}, points: 20}
              - {when: {content: {contains: ebook}}, points: 10}
        """)
    assert event_points(rules, event("content_download", content="Buyers-Guide"), 0) == (
        20.0, "content_download +20 (content in buyers-guide, roi-calculator)",
    )
    assert event_points(rules, event("content_download", content="scoring-ebook"), 0) == (
        10.0, "content_download +10 (content contains ebook)",
    )
    assert event_points(rules, event("content_download", content="webinar-replay"), 0) == (
        0.0, "content_download: no rule matched",
    )


@pytest.mark.parametrize(
    ("at", "day"),
    [
        (datetime(2026, 3, 31, 23, 59, tzinfo=UTC), "2026-03-31"),
        (datetime.fromisoformat("2026-03-31T20:30:00-05:00"), "2026-04-01"),  # 01:30 UTC the next day
        (datetime.fromisoformat("2026-04-01T00:30:00+02:00"), "2026-03-31"),
    ],
)
def test_daily_caps_count_utc_days(at: datetime, day: str) -> None:
    assert utc_day(at).isoformat() == day


# --- decay -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("points", "age_days", "half_life_days", "expected"),
    [
        (10, 0, 30, 10.0),
        (10, 30, 30, 5.0),
        (10, 60, 30, 2.5),
        (10, 90, 30, 1.25),
        (10, 15, 30, 7.07),  # 10 * 0.5 ** 0.5
        (-50, 30, 30, -25.0),
        (8, 7, 7, 4.0),
        (10, 365, None, 10.0),  # no half-life: no decay
        (10, -1, 30, 10.0),  # stamped after now: counts in full, never grows
    ],
)
def test_decay(points: float, age_days: float, half_life_days: int | None, expected: float) -> None:
    half_life = half_life_days * 86400 if half_life_days else None
    assert round(decayed(points, age_days * 86400, half_life), 2) == expected


# --- fit -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, []),
        ({"company_size": 250}, [("company size 200+", 15.0)]),
        ({"company_size": "1200"}, [("company size 200+", 15.0)]),  # imported as text
        ({"company_size": 199}, []),
        ({"industry": "SaaS", "country": "gb"}, [("target industry", 10.0), ("served region", 5.0)]),
        ({"title": "VP Operations"}, [("senior title", 10.0)]),
        ({"title": "Student Assistant"}, [("student", -15.0)]),
        ({"budget": "Approved"}, [("budget confirmed", 10.0)]),  # a custom field, through LeadView.get
        (
            {"company_size": 5000, "industry": "logistics", "country": "US", "title": "Chief Operating Officer",
             "budget": "confirmed"},
            [("company size 200+", 15.0), ("target industry", 10.0), ("served region", 5.0), ("senior title", 10.0),
             ("budget confirmed", 10.0)],
        ),
    ],
)
def test_fit_items(rules: ScoringRules, fields: dict[str, object], expected: list[tuple[str, float]]) -> None:
    attributes = {k: v for k, v in fields.items() if k != "budget"}
    custom = {k: v for k, v in fields.items() if k == "budget"}
    lead = LeadView("k", "a@b.example", attributes=attributes, custom=custom)
    items = fit_items(rules, lead)
    assert [(i.label, i.points) for i in items] == expected
    assert all(i.source == "fit" and i.raw == i.points and i.at is None and i.count == 1 for i in items)


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("VP and General Manager", [("executive", 15.0)]),  # first of the group wins, the manager rule is skipped
        ("Operations Manager", [("manager", 8.0)]),
        ("Student", []),
    ],
)
def test_fit_groups_score_the_first_match_only(tmp_path: Path, title: str, expected: list[tuple[str, float]]) -> None:
    rules = load_text(tmp_path, """\
        fit:
          - {label: executive, when: {title: {contains: [chief, vp]}}, points: 15, group: seniority}
          - {label: manager, when: {title: {contains: manager}}, points: 8, group: seniority}
        """)
    lead = LeadView("k", "a@b.example", attributes={"title": title})
    assert [(i.label, i.points) for i in fit_items(rules, lead)] == expected


def test_fit_tests_list_valued_fields(tmp_path: Path) -> None:
    rules = load_text(tmp_path, "fit:\n  - {label: partner, when: {tags: partner}, points: 5}\n")
    assert [i.label for i in fit_items(rules, LeadView("k", "a@b.example", tags=("webinar", "Partner")))] == ["partner"]
    assert fit_items(rules, LeadView("k", "a@b.example", tags=("webinar",))) == []


# --- the breakdown ---------------------------------------------------------------------------------------------------


def test_score_groups_events_by_type_and_decays(rules: ScoringRules) -> None:
    month, two_months = NOW - timedelta(days=30), NOW - timedelta(days=60)
    events = [
        (event("page_view", month), 1.0),
        (event("page_view", month), 1.0),
        (event("page_view", month - timedelta(hours=1)), 1.0),
        (event("page_view", month), 0.0),  # over the daily cap: recorded, scored nothing, not in the breakdown
        (event("email_click", NOW), 3.0),
        (event("unsubscribe", two_months), -50.0),
        (event("bounce", NOW), 0.0),
    ]
    lead = LeadView("k", "a@b.example", attributes={"company_size": 300, "industry": "software"})
    breakdown = score(rules, lead, events, NOW)
    assert breakdown == ScoreBreakdown(
        total=17.0,  # 3 + 1.5 - 12.5 + 15 + 10
        behaviour=-8.0,
        fit=25.0,
        items=(
            ScoreItem("behaviour", "email_click", 3.0, 3.0, NOW, 1),
            ScoreItem("behaviour", "page_view", 1.5, 3.0, month, 3),
            ScoreItem("behaviour", "unsubscribe", -12.5, -50.0, two_months, 1),
            ScoreItem("fit", "company size 200+", 15.0, 15.0, None, 1),
            ScoreItem("fit", "target industry", 10.0, 10.0, None, 1),
        ),
    )


def test_score_stays_one_item_per_type_for_thousands_of_events(tmp_path: Path) -> None:
    rules = load_text(tmp_path, "behaviour:\n  events:\n    page_view: 1\n")
    events = [(event("page_view", NOW - timedelta(minutes=i)), 1.0) for i in range(5000)]
    breakdown = score(rules, LeadView("k", "a@b.example"), events, NOW)
    assert breakdown.items == (ScoreItem("behaviour", "page_view", 5000.0, 5000.0, NOW, 5000),)
    assert (breakdown.total, breakdown.behaviour, breakdown.fit) == (5000.0, 5000.0, 0.0)


@pytest.mark.parametrize(
    ("floor", "awarded", "total"),
    [
        ("floor: -100\n", -150.0, -100.0),
        ("floor: -100\n", -60.0, -60.0),
        ("", -150.0, -150.0),  # no floor configured
    ],
)
def test_score_floor(tmp_path: Path, floor: str, awarded: float, total: float) -> None:
    rules = load_text(tmp_path, f"behaviour:\n  events:\n    unsubscribe: -50\n{floor}")
    breakdown = score(rules, LeadView("k", "a@b.example"), [(event("unsubscribe"), awarded)], NOW)
    assert (breakdown.total, breakdown.behaviour) == (total, awarded)


def test_score_rounds_to_two_decimals(rules: ScoringRules) -> None:
    ten_days = NOW - timedelta(days=10)
    events = [(event("email_open", ten_days), 1.0)] * 3  # 3 * 0.5 ** (10 / 30) = 2.3811
    breakdown = score(rules, LeadView("k", "a@b.example"), events, NOW)
    assert (breakdown.total, breakdown.behaviour, breakdown.items[0].points) == (2.38, 2.38, 2.38)


def test_breakdown_to_json(rules: ScoringRules) -> None:
    lead = LeadView("k", "a@b.example", attributes={"country": "DE"})
    breakdown = score(rules, lead, [(event("email_click", NOW - timedelta(days=30)), 3.0)], NOW)
    assert breakdown.to_json() == {
        "total": 6.5,
        "behaviour": 1.5,
        "fit": 5.0,
        "items": [
            {"source": "behaviour", "label": "email_click", "points": 1.5, "raw": 3.0,
             "at": "2026-03-01T12:00:00+00:00", "count": 1},
            {"source": "fit", "label": "served region", "points": 5.0, "raw": 5.0, "at": None, "count": 1},
        ],
    }


# --- MQL -------------------------------------------------------------------------------------------------------------


def breakdown_of(total: float, fit: float) -> ScoreBreakdown:
    return ScoreBreakdown(total=total, behaviour=round(total - fit, 2), fit=fit, items=())


@pytest.mark.parametrize(
    ("thresholds", "stage", "total", "fit", "expected"),
    [
        ("mql: 40", "lead", 42.0, 0.0, ("mql", "score 42.0 >= mql threshold 40")),
        ("mql: 40", "recycled", 40.0, 0.0, ("mql", "score 40.0 >= mql threshold 40")),
        ("mql: 40", "lead", 39.99, 0.0, None),
        ("mql: 40", "mql", 90.0, 0.0, None),
        ("mql: 40", "sql", 90.0, 0.0, None),
        ("mql: 40", "opportunity", 90.0, 0.0, None),
        ("mql: 40", "customer", 90.0, 0.0, None),
        ("mql: 40", "disqualified", 90.0, 0.0, None),
        ("mql: 37.5", "lead", 37.5, 0.0, ("mql", "score 37.5 >= mql threshold 37.5")),
        ("mql: 40, mql_min_fit: 10", "lead", 55.0, 5.0, None),
        ("mql: 40, mql_min_fit: 10", "lead", 55.0, 10.0, ("mql", "score 55.0 >= mql threshold 40, fit 10.0 >= 10")),
        ("{}", "lead", 1000.0, 50.0, None),  # no threshold: scoring promotes nobody
    ],
)
def test_stage_after_scoring(
    tmp_path: Path, thresholds: str, stage: str, total: float, fit: float, expected: tuple[str, str] | None
) -> None:
    fit_rule = "fit:\n  - {label: any, when: {country: US}, points: 50}\n"
    rules = load_text(tmp_path, f"{fit_rule}thresholds: {{{thresholds}}}\n" if thresholds != "{}" else fit_rule)
    assert stage_after_scoring(rules, stage, breakdown_of(total, fit)) == expected


def test_score_to_mql_end_to_end(rules: ScoringRules) -> None:
    lead = LeadView("k", "a@b.example", attributes={"company_size": 400, "title": "Head of Logistics"})
    awarded = [event_points(rules, e, 0)[0] for e in (event("webinar_attended"), event("content_download"))]
    events = list(zip([event("webinar_attended"), event("content_download")], awarded))
    breakdown = score(rules, lead, events, NOW)
    assert (breakdown.behaviour, breakdown.fit, breakdown.total) == (25.5, 25.0, 50.5)
    assert stage_after_scoring(rules, "lead", breakdown) == ("mql", "score 50.5 >= mql threshold 40, fit 25.0 >= 10")


# --- nurture check ---------------------------------------------------------------------------------------------------


def test_check_reports_scoring_problems(tmp_path: Path) -> None:
    campaigns, templates = tmp_path / "campaigns", tmp_path / "templates"
    campaigns.mkdir()
    templates.mkdir()
    path = write_scoring(campaigns, "thresholds:\n  mql: 40\nflor: -100\n")
    report = check(campaigns, templates)
    assert [str(p) for p in report.problems] == [f"{path}:3: unknown key 'flor' (did you mean 'floor'?)"]


def run_check(campaigns: Path, templates: Path) -> subprocess.CompletedProcess[str]:
    nurture = Path(sys.executable).with_name("nurture")
    return subprocess.run(
        [str(nurture), "check", "--campaigns", str(campaigns), "--templates", str(templates)],
        capture_output=True, text=True, timeout=60,
    )


BAD_SCORING = """\
    behaviour:
      events:
        page_view: {points: 1, max_per_dya: 5}
    fit:
      - {label: senior, when: {title: {matches: "(vp|head"}}, points: 10}
    """


def test_cli_check_prints_scoring_problems_with_their_lines(tmp_path: Path) -> None:
    campaigns, templates = tmp_path / "campaigns", tmp_path / "templates"
    campaigns.mkdir()
    templates.mkdir()
    path = write_scoring(campaigns, BAD_SCORING)
    result = run_check(campaigns, templates)
    assert result.stdout.splitlines() == [
        f"{path}:3: unknown key 'max_per_dya' (did you mean 'max_per_day'?)",
        f"{path}:5: matches: invalid regular expression: missing ), unterminated subpattern at position 0",
    ]
    assert result.stderr == "2 problem(s) found\n"


def test_cli_check_exits_1_on_a_bad_scoring_file(tmp_path: Path) -> None:
    campaigns, templates = tmp_path / "campaigns", tmp_path / "templates"
    campaigns.mkdir()
    templates.mkdir()
    write_scoring(campaigns, BAD_SCORING)
    assert run_check(campaigns, templates).returncode == 1


def test_cli_check_accepts_a_good_scoring_file(tmp_path: Path) -> None:
    campaigns, templates = tmp_path / "campaigns", tmp_path / "templates"
    campaigns.mkdir()
    templates.mkdir()
    write_scoring(campaigns, EXAMPLE)
    result = run_check(campaigns, templates)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok: 0 campaign(s)")
