"""Where leads came from: the acquisition columns from the CSV import, ``POST /v1/leads`` and the first event's UTM
properties, on a real server and real databases."""

from __future__ import annotations

from pathlib import Path

from db_fixtures import engine, migrated_url, postgres_available, postgres_template  # noqa: F401  (fixtures)
from intake_world import lead_row
from sqlalchemy.engine import Engine
from sqlmodel import select
from test_http_api import Intake, intake  # noqa: F401  (the running intake fixture)

from nurture.application.import_leads import import_leads_csv
from nurture.clock import SYSTEM_CLOCK
from nurture.storage.database import session
from nurture.storage.models import Lead


def test_import_takes_the_acquisition_columns_by_name_or_utm_name(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("email,source,medium,source_campaign\nada@example.com,google,cpc,spring\n"
                    "grace@example.com,,,\n", encoding="utf-8")
    utm = tmp_path / "utm.csv"
    utm.write_text("email,UTM Source,utm_medium,utm-campaign\nlin@example.com,linkedin,social,abm\n", encoding="utf-8")
    assert import_leads_csv(engine, path, clock=SYSTEM_CLOCK).rejected == []
    assert import_leads_csv(engine, utm, clock=SYSTEM_CLOCK).rejected == []
    with session(engine, read_only=True) as db:
        stored = {lead.email: (lead.source, lead.medium, lead.source_campaign, lead.fields)
                  for lead in db.exec(select(Lead)).all()}
    assert stored == {"ada@example.com": ("google", "cpc", "spring", {}),
                      "grace@example.com": (None, None, None, {}),
                      "lin@example.com": ("linkedin", "social", "abm", {})}


def test_post_leads_takes_source_medium_and_campaign_by_either_name(intake: Intake) -> None:
    assert intake.post("/v1/leads", {"email": "ada@example.com", "source": "google", "medium": "cpc",
                                     "source_campaign": "spring"}).status_code == 201
    assert intake.post("/v1/leads", {"email": "lin@example.com", "utm_source": "linkedin", "utm_medium": "social",
                                     "utm_campaign": "abm"}).status_code == 201
    ada, lin = lead_row(intake.engine, "ada@example.com"), lead_row(intake.engine, "lin@example.com")
    assert (ada.source, ada.medium, ada.source_campaign) == ("google", "cpc", "spring")
    assert (lin.source, lin.medium, lin.source_campaign, lin.fields) == ("linkedin", "social", "abm", {})
    shown = intake.get("/v1/leads/ada@example.com").json()["lead"]
    assert (shown["source"], shown["medium"], shown["source_campaign"]) == ("google", "cpc", "spring")
    assert intake.post("/v1/leads", {"email": "bad@example.com", "source": "a\x01b"}).status_code == 422


def test_the_first_event_with_utm_properties_gives_a_lead_without_one_its_source(intake: Intake) -> None:
    plain = {"email": "new@example.com", "type": "page_view", "properties": {"url": "/pricing"}}
    first = {"email": "new@example.com", "type": "page_view",
             "properties": {"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "march"}}
    later = {"email": "new@example.com", "type": "page_view", "properties": {"utm_source": "google"}}
    assert intake.post("/v1/events", {"events": [plain, first, later]}).status_code == 202
    row = lead_row(intake.engine, "new@example.com")
    assert (row.source, row.medium, row.source_campaign) == ("newsletter", "email", "march")
    assert intake.post("/v1/events", later).status_code == 202  # a later batch does not replace it either
    assert lead_row(intake.engine, "new@example.com").source == "newsletter"
    # a lead whose source was given keeps it
    assert intake.post("/v1/leads", {"email": "known@example.com", "source": "partner"}).status_code == 201
    assert intake.post("/v1/events", {**later, "email": "known@example.com"}).status_code == 202
    assert lead_row(intake.engine, "known@example.com").source == "partner"
