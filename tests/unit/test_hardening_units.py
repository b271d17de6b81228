"""Small guards found in review: HTML escaping whatever a template is called, JSON-safe step values, one-line subjects."""

from __future__ import annotations

from pathlib import Path

import pytest

from nurture.definitions.campaign import Campaign
from nurture.handoff.notify import one_line
from nurture.rendering import EmailRenderer, LinkBuilder
from nurture.signing import Signer

LINKS = LinkBuilder("https://t.example", Signer("k"), "1")


@pytest.mark.parametrize("name", ["welcome.j2", "welcome.html.jinja", "welcome.html.j2"])
def test_lead_data_is_escaped_in_every_html_template_whatever_its_name(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("<p>Hi {{ lead.first_name }}</p>")
    email = EmailRenderer(tmp_path).render(name, "Hi", {"lead": {"first_name": '<a href="https://evil">x</a>'}}, LINKS)
    assert "<a href" not in email.html and "&lt;a href=" in email.html


def test_a_text_template_is_not_escaped(tmp_path: Path) -> None:
    (tmp_path / "note.html.j2").write_text("<p>{{ lead.company }}</p>")
    (tmp_path / "note.txt.j2").write_text("{{ lead.company }}")
    email = EmailRenderer(tmp_path).render("note.html.j2", "Hi", {"lead": {"company": "Smith & Co"}}, LINKS)
    assert email.text == "Smith & Co" and "Smith &amp; Co" in email.html


def campaign_with(step: str) -> dict:
    import yaml

    return yaml.safe_load(f"id: c\nname: C\nsteps:\n{step}")


@pytest.mark.parametrize("step, message", [
    ("  - id: s\n    webhook: {url: 'https://crm.example/x', payload: {due: 2026-04-01}}\n", "quote dates"),
    ("  - id: s\n    update: {set: {renewal: 2026-04-01}}\n", "quote dates"),
    ("  - id: s\n    update: {set: {company_size: big}}\n", "whole number"),
    ("  - id: s\n    update: {set: {stage: sql}}\n", "cannot set 'stage'"),
])
def test_step_values_that_cannot_go_out_as_json_are_refused_at_load(step: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Campaign.model_validate(campaign_with(step))


def test_a_quoted_date_is_fine() -> None:
    campaign = Campaign.model_validate(campaign_with("  - id: s\n    webhook: {url: 'https://crm.example/x', "
                                                     "payload: {due: '2026-04-01'}}\n"))
    assert campaign.steps[0].webhook.payload == {"due": "2026-04-01"}


@pytest.mark.parametrize("text, expected", [
    ("New SQL: Ada\nX at Acme\r\nInc", "New SQL: Ada X at Acme Inc"),
    ("tab\there\x00and\x07bell", "tab hereandbell"),
])
def test_notification_subjects_are_one_header_safe_line(text: str, expected: str) -> None:
    assert one_line(text) == expected


def test_an_owner_the_sales_file_does_not_know_is_never_emailed() -> None:
    from nurture.handoff.brief import _unknown_owner

    assert _unknown_owner("rep@elsewhere.example") == {"id": None, "name": "rep@elsewhere.example", "email": None,
                                                      "slack_id": None, "timezone": None}


@pytest.mark.parametrize("data, message", [
    ({"email": "a\x00b@x.example"}, "invalid email"),
    ({"email": "a@x.example", "first_name": "a\x00b"}, "control characters"),
    ({"email": "a@x.example", "company_size": 10**30}, "out of range"),
    ({"email": "a@x.example", "score_hint": float("nan")}, "plain JSON"),
    ({"email": "a@x.example", "note": "a\x00"}, "NUL"),
])
def test_lead_data_postgresql_would_refuse_is_an_input_error(data: dict, message: str) -> None:
    from nurture.core.lead_fields import clean_lead_data
    from nurture.errors import InvalidInput

    with pytest.raises(InvalidInput, match=message):
        clean_lead_data(data)


def test_line_breaks_in_a_name_are_folded() -> None:
    from nurture.core.lead_fields import clean_lead_data

    assert clean_lead_data({"email": "a@x.example", "first_name": " Ada\n Lovelace "})["first_name"] == "Ada Lovelace"


@pytest.mark.parametrize("event_id, props", [("a\x00b", {}), ("ok", {"x": "a\x00"}), ("ok", {"x": [[[[]]]]})])
def test_event_ids_and_properties_with_nul_are_refused(event_id: str, props: dict) -> None:
    from datetime import datetime, timezone

    from nurture.application.event_input import EventIn, clean_event
    from nurture.errors import InvalidInput

    event = EventIn(email="a@x.example", type="page_view", id=event_id, properties=props)
    if props == {"x": [[[[]]]]}:  # deep but fine
        assert clean_event(event, datetime.now(timezone.utc)).properties == props
        return
    with pytest.raises(InvalidInput):
        clean_event(event, datetime.now(timezone.utc))
