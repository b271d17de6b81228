"""The SQL that narrows the leads a campaign may take (:mod:`nurture.storage.entry_sql`) lets through every lead the
Python entry filter lets in, on SQLite and PostgreSQL, for odd text too (case, spaces, tabs, characters whose Unicode
case folding differs from lower-casing, quotes, backslashes, custom fields standing in for empty columns), while it
does leave out most leads that cannot enter."""

from __future__ import annotations

import random
from typing import Any

import pytest
from db_fixtures import engine, migrated_url, postgres_available, postgres_template  # noqa: F401
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from nurture.core.conditions import filter_matches
from nurture.core.facts import History
from nurture.definitions.campaign import Campaign
from nurture.storage.database import transaction
from nurture.storage.entry_sql import entry_condition
from nurture.storage.rows import lead_view
from nurture.storage.tables import L

TAG_VALUES = ["vip", "VIP", " vip ", "\tvip", "vi p", "\uff36\uff29\uff30", "\u212aelvin", "kelvin", "Kelvin", "stra\u00dfe",
              "strasse", "\u017fale", "sale", 'say "hi"', "back\\slash", "ünïcode", "", "  ", "partner"]
TEXT_VALUES = [None, "software", "Software ", "SOFTWARE", "soft ware", "\u212aafka", "kafka", "retail", "us", "US",
               " us", "Us\t", "de", "ß", "ss", "x\\y", 'x"y']
CUSTOM_VALUES = [None, "pro", "Pro", " PRO ", ["pro", "basic"], ["basic"], 5, 5.0, "5", True, {"pro": 1}, "\u212a",
                 "k", "no_budget", "No_Budget"]

COUNTRY_VALUES = [None, "us", "US", "Us", " u", "de", "DE", "\u00df", "ss", "\\u", '"u', "\u212a"]
STEPS = [{"id": "s", "update": {"add_tags": ["seen"]}}]

WHERES: list[dict[str, Any]] = [
    {"tags": ["vip"]}, {"tags": ["kelvin"]}, {"tags": ["strasse"]}, {"tags": ["sale", "partner"]},
    {"tags": ['say "hi"']}, {"tags": ["back\\slash"]}, {"tags": [""]}, {"tags": ["ünïcode"]},
    {"industry": ["software"]}, {"industry": ["kafka", "retail"]}, {"country": ["us"]}, {"country": ["ss"]}, {"country": ["k"]},
    {"company_size": {"gte": 50}}, {"company_size": {"gt": 10, "lte": 500}}, {"company_size": {"eq": 50}},
    {"fields": {"plan": "pro"}}, {"fields": {"plan": ["pro", "k"]}}, {"fields": {"plan": {"eq": "PRO"}}},
    {"fields": {"plan": {"in": ["basic"]}}}, {"fields": {"plan": 5}}, {"fields": {"plan": True}},
    {"fields": {"rejection_reason": "no_budget"}}, {"fields": {"industry": "software"}},
    {"fields": {"company": ["acme"]}}, {"fields": {"title": {"contains": "vp"}}}, {"fields": {"stage": "mql"}},
    {"fields": {"timezone": ["europe/berlin"]}}, {"fields": {"score": {"gte": 10}}}, {"fields": {"score": {"lt": 5}}},
    {"fields": {"tags": "vip"}}, {"fields": {"tags": {"ne": "vip"}}}, {"fields": {"plan": {"not_in": ["pro"]}}},
    {"tags": ["vip"], "industry": ["software"], "company_size": {"gte": 10}},
]


def leads(count: int, seed: int = 5) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for number in range(count):
        fields: dict[str, Any] = {}
        for name in ("plan", "rejection_reason", "industry", "company_size", "company"):
            if rng.random() < 0.3:
                fields[name] = rng.choice(CUSTOM_VALUES)
        rows.append(dict(
            email=f"lead{number}@example.com", stage=rng.choice(["lead", "mql", "mql", "recycled"]),
            tags=rng.sample(TAG_VALUES, rng.randint(0, 3)), fields=fields, industry=rng.choice(TEXT_VALUES),
            country=rng.choice(COUNTRY_VALUES), company=rng.choice([None, "Acme", " acme", "ACME Corp"]),
            title=rng.choice([None, "VP Sales", "Engineer"]),
            timezone=rng.choice([None, "Europe/Berlin", "UTC"]),
            company_size=rng.choice([None, 5, 10, 50, 500, 5000]), score=rng.choice([0.0, 4.5, 10.0, 30.0]),
            unsubscribed_at=None, bounced_at=None,
        ))
    return rows


def test_the_sql_lets_through_every_lead_the_filter_lets_in(engine: Engine) -> None:
    with transaction(engine) as conn:
        conn.execute(insert(L), leads(3000))
    with transaction(engine) as conn:
        rows = list(conn.execute(select(L)))
        narrowed = 0
        for index, where in enumerate(WHERES):
            campaign = Campaign.model_validate({"id": f"c{index}", "name": "c", "entry": {"stage": ["lead", "mql"],
                                                "where": where}, "steps": STEPS})
            wanted = {row.id for row in rows if row.stage in ("lead", "mql")
                      and filter_matches(campaign.entry.where, lead_view(row), History())}
            passed = {row.id for row in conn.execute(select(L.c.id).where(entry_condition(campaign, conn.dialect)))}
            missing = wanted - passed
            assert not missing, (where, [(r.tags, r.industry, r.country, r.fields) for r in rows if r.id in missing][:5])
            narrowed += len(passed) < 0.6 * len(rows)
    assert narrowed >= len(WHERES) // 2, "the SQL narrows too little to be worth it"


@pytest.mark.parametrize("tags", [None, "a string", {"vip": 1}, [1, 2], ["VIP"]])
def test_tags_that_are_not_a_list_of_text_pass_to_python(engine: Engine, tags: Any) -> None:
    with transaction(engine) as conn:
        conn.execute(insert(L), [dict(email="odd@example.com", stage="mql", tags=tags, fields={})])
    campaign = Campaign.model_validate({"id": "c", "name": "c", "entry": {"where": {"tags": ["vip"]}},
                                        "steps": STEPS})
    with transaction(engine) as conn:
        row = conn.execute(select(L)).one()
        passed = conn.execute(select(L.c.id).where(entry_condition(campaign, conn.dialect))).all()
    if filter_matches(campaign.entry.where, lead_view(row), History()):
        assert passed, tags
