"""Creating or updating one lead by hand (``leads add``, the HTTP API): its fields cleaned, then written."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from nurture.core.lead_fields import clean_lead_data
from nurture.storage.leads import write_lead
from nurture.storage.models import STAGE_ACTORS, Lead

if TYPE_CHECKING:  # the session type only annotates: the writing is storage's
    from sqlmodel import Session

__all__ = ["clean_lead_data", "upsert_lead"]  # the cleaner too: callers that validate before a transaction


def upsert_lead(
    session: Session, data: Mapping[str, Any], *, actor: str, reason: str = "", now: datetime
) -> Lead:
    """Create the lead with ``data["email"]`` or update the fields given; a new stage is recorded in its history.

    The fields are cleaned first (:func:`nurture.core.lead_fields.clean_lead_data`: every problem in one
    :class:`~nurture.errors.InvalidInput`, before anything is written). Custom fields are merged (a ``None`` value
    removes one); ``tags`` replace the lead's tags. The caller's session holds the change until it commits. ``now``
    dates the change.
    """
    if actor not in STAGE_ACTORS:  # a caller's mistake, named before the caller's data is judged
        raise ValueError(f"unknown actor {actor!r}")
    return write_lead(session, clean_lead_data(data), actor=actor, reason=reason, now=now)
