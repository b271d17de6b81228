"""Storage: the only place that runs queries. SQLite by default, PostgreSQL to scale out, one code path.

- ``database``: engines, transactions, UTC timestamps, the dialect differences (claim locking, upserts)
- ``models``: the tables
- ``migrate``: schema upgrades (Alembic, driven from code) and the check that the schema is current
- ``leads``: validating, upserting and summarizing leads
- ``importer``: bulk CSV import of leads
"""

from __future__ import annotations

from nurture.storage.database import (
    for_update_skip_locked,
    make_engine,
    session,
    transaction,
    upsert_insert,
    utcnow,
)
from nurture.storage.importer import ImportReport, import_leads_csv
from nurture.storage.leads import get_lead, lead_summary, normalize_email, upsert_lead
from nurture.storage.migrate import current_revision, ensure_current, head_revision, open_database, upgrade
from nurture.storage.models import (
    CampaignVersion,
    Delivery,
    EngagementEvent,
    Enrollment,
    Lead,
    Meta,
    Outbox,
    StageChange,
)

__all__ = [
    "CampaignVersion",
    "Delivery",
    "EngagementEvent",
    "Enrollment",
    "ImportReport",
    "Lead",
    "Meta",
    "Outbox",
    "StageChange",
    "current_revision",
    "ensure_current",
    "for_update_skip_locked",
    "get_lead",
    "head_revision",
    "import_leads_csv",
    "lead_summary",
    "make_engine",
    "normalize_email",
    "open_database",
    "session",
    "transaction",
    "upgrade",
    "upsert_insert",
    "upsert_lead",
    "utcnow",
]
