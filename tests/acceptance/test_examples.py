"""The shipped example campaigns and templates: they check clean, render for sparse leads, and behave as documented."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import pytest

from nurture.application.authoring import PREVIEW_BASE_URL, preview
from nurture.core.facts import lead_from_mapping
from nurture.core.simulate import simulate
from nurture.definitions.loader import Catalog, load_catalog, template_uses

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGNS = ROOT / "campaigns"
TEMPLATES = ROOT / "templates"
NURTURE = Path(sys.executable).with_name("nurture")

EXPECTED_CAMPAIGNS = {"ebook-nurture", "webinar-attendees", "pricing-page-visitors", "content-stream", "recycled-no-budget"}
HREF = re.compile(r'href="([^"]*)"')


def run_nurture(*args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI, from the repository root, unaffected by NURTURE_* variables of the environment running the tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    return subprocess.run([str(NURTURE), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(CAMPAIGNS, TEMPLATES).raise_for_problems()


def email_uses(catalog: Catalog) -> list[tuple[str, str, str | None]]:
    """(campaign, step, variant or content id) of every email the shipped campaigns can send."""
    return [
        (campaign.id, step.id, key)
        for campaign in catalog.campaigns.values()
        for step in campaign.steps
        for _loc, _template, _subject, key in template_uses(step)
    ]


def test_nurture_check_passes_on_the_shipped_examples() -> None:
    result = run_nurture("check", "--campaigns", "campaigns", "--templates", "templates")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no problems" in result.stdout


def test_every_example_campaign_is_shipped(catalog: Catalog) -> None:
    assert set(catalog.campaigns) >= EXPECTED_CAMPAIGNS
    priorities = [c.priority for c in catalog.campaigns.values()]
    assert len(set(priorities)) == len(priorities), "example priorities should be distinct"


def test_policy_caps_and_windows(catalog: Catalog) -> None:
    policy = catalog.policy
    assert policy.frequency_cap is not None and policy.frequency_cap.max == 1
    assert policy.frequency_cap.per.days == 1
    assert policy.send_window is not None and policy.send_window.hours == "09:00-17:00"
    assert policy.send_window.days == frozenset(range(5))
    assert policy.timezone and policy.catch_up.max_late is not None


def test_every_email_previews_for_a_lead_with_only_an_email(catalog: Catalog) -> None:
    lead = lead_from_mapping({"email": "someone@example.org"})
    uses = email_uses(catalog)
    assert len(uses) >= 15
    for campaign_id, step_id, key in uses:
        email = preview(catalog, TEMPLATES, campaign_id, step_id, lead, variant=key, content_id=key)
        where = f"{campaign_id}/{step_id}" + (f"/{key}" if key else "")
        assert email.subject.strip() and email.html.strip() and email.text.strip(), where
        # A missing field must never show up as "None" in the body ("Hi None,").
        assert "None" not in email.html and "None" not in email.text, where
        if step_id != "welcome":  # the welcome subject is the product spec's "Your guide, {{ lead.first_name }}"
            assert "None" not in email.subject, where
        assert "someone@example.org" in email.text, where  # the layout's footer made it into the text part


def test_every_link_in_the_examples_is_tracked(catalog: Catalog) -> None:
    lead = lead_from_mapping({"email": "someone@example.org", "first_name": "Ana", "company": "Fabrikam"})
    for campaign_id, step_id, key in email_uses(catalog):
        email = preview(catalog, TEMPLATES, campaign_id, step_id, lead, variant=key, content_id=key)
        links = HREF.findall(email.html)
        assert len(links) >= 2, f"{campaign_id}/{step_id}: a call to action and the unsubscribe link"
        untracked = [link for link in links if not link.startswith(PREVIEW_BASE_URL + "/")]
        assert not untracked, f"{campaign_id}/{step_id}: links not wrapped in track(): {untracked}"


def test_ebook_nurture_simulation_starts_with_the_personal_welcome(tmp_path: Path) -> None:
    lead_file = tmp_path / "lead.yaml"
    lead_file.write_text("email: dana@northwind.example\nfirst_name: Dana\ntimezone: America/Chicago\nstage: mql\n")
    result = run_nurture("simulate", "ebook-nurture", "--lead", str(lead_file), "--start", "2026-03-02T09:00Z",
                         "--days", "30", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    timeline = json.loads(result.stdout)
    first = timeline[0]
    assert first["step"] == "welcome" and first["kind"] == "email"
    assert first["subject"] == "Your guide, Dana"
    # The welcome answers the download at once (send_window: always): 03:00 in Chicago, not held until 09:00.
    assert first["local"].startswith("2026-03-02T03:00")
    emails = [e for e in timeline if e["kind"] == "email"]
    assert emails[1]["step"] == "case-study" and emails[1]["subject"] == "How Acme cut churn"


@pytest.mark.parametrize(
    ("fields", "zone"),
    [
        ({"timezone": "Europe/Berlin"}, "Europe/Berlin"),  # crosses the switch to summer time on 2026-03-29
        ({"timezone": "America/Los_Angeles"}, "America/Los_Angeles"),  # crosses it on 2026-03-08
        ({}, None),  # no timezone: the policy's fallback
    ],
)
def test_content_stream_sends_each_piece_on_tuesdays_at_10_local_in_order(
    catalog: Catalog, fields: dict[str, str], zone: str | None
) -> None:
    campaign = catalog.campaign("content-stream")
    stream = campaign.steps[0].stream
    assert stream is not None
    lead = lead_from_mapping({"email": "lena@example.org", "stage": "mql", "tags": ["long-term-nurture"], **fields})
    timeline = simulate(campaign, catalog.policy, lead, start=datetime(2026, 3, 2, 9, tzinfo=UTC), days=60)
    sends = [entry for entry in timeline if entry.kind == "email"]
    assert [entry.content for entry in sends] == [item.id for item in stream.content]
    expected_zone = zone or catalog.policy.timezone
    for entry in sends:
        assert str(entry.local.tzinfo) == expected_zone
        assert entry.local.strftime("%a %H:%M") == "Tue 10:00", entry
    days = [entry.local.date() for entry in sends]
    assert all((later - earlier).days == 7 for earlier, later in pairwise(days))
    assert timeline[-1].kind == "end" and timeline[-1].detail == "completed"


def test_reenterable_campaigns_enter_on_a_signal_they_can_clear(catalog: Catalog) -> None:
    """An entry filter on had_event matches an event of any age, so a campaign that may run again for a lead must be
    triggered by something it clears itself (a tag its last step removes), or it would re-enroll the lead on the same
    old event every time the re-entry period passes."""
    for campaign in catalog.campaigns.values():
        if campaign.reentry.policy == "never":
            continue
        where = campaign.entry.where
        assert where is not None and where.tags and not where.had_event, campaign.id
        removed = {tag for step in campaign.steps if step.update for tag in step.update.remove_tags}
        assert set(where.tags) <= removed, f"{campaign.id}: no step clears the trigger tags {where.tags}"
