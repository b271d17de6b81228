"""``nurture campaigns history``: the versions of a campaign the worker ran, when each was in force, and what ran
under each (enrollments begun, deliveries made, enrollments on it now)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nurture.errors import InvalidInput
from nurture.storage import versions
from nurture.storage.database import transaction
from nurture.storage.versions import VersionRun

if TYPE_CHECKING:  # the connection types only annotate: the queries are storage's
    from sqlalchemy.engine import Engine


def campaign_history(engine: Engine, campaign_id: str) -> list[VersionRun]:
    """Every version of the campaign, oldest first (InvalidInput when none was recorded)."""
    with transaction(engine, read_only=True) as conn:
        runs = versions.campaign_history(conn, campaign_id)
    if not runs:
        raise InvalidInput(f"no version of campaign '{campaign_id}' was recorded: `nurture run` records each "
                           "version it loads")
    return runs


def run_to_json(run: VersionRun) -> dict[str, Any]:
    """One version as ``nurture campaigns history --json`` shows it."""
    return {"version": run.content_hash, "fingerprint": run.fingerprint, "text_kept": run.has_text,
            "in_force_from": run.loaded_at.isoformat(), "until": run.ended_at.isoformat() if run.ended_at else None,
            "enrollments_begun": run.entered, "deliveries": run.deliveries, "active": run.active,
            "applied": run.summary}
