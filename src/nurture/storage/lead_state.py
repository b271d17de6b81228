"""Reads of one lead's row for the event batch and for saving a lead (:mod:`nurture.application.record_events`,
:mod:`nurture.application.save_lead`); the batch's bulk ones are in :mod:`nurture.storage.event_bulk`."""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from nurture.storage.tables import L


def lead_summary(conn: Connection, lead_id: int) -> Any:
    """The lead's ``email``, ``score`` and ``stage``."""
    return conn.execute(select(L.c.email, L.c.score, L.c.stage).where(L.c.id == lead_id)).one()


def stage_for_update(conn: Connection, email: str) -> str | None:
    """The stage of the lead with this email, locked until the transaction ends; None if there is no such lead."""
    return conn.execute(select(L.c.stage).where(L.c.email == email).with_for_update()).scalar()


def lead_by_email(conn: Connection, email: str) -> Any:
    """The row of the lead with this email (which must exist)."""
    return conn.execute(select(L).where(L.c.email == email)).one()


_LEAD_COLUMN_NAMES = tuple(column.key for column in L.c)


def new_lead_row(lead_id: int, values: Mapping[str, Any]) -> SimpleNamespace:
    """The row of a lead just inserted with ``values`` (the other columns are empty), without reading it back."""
    return SimpleNamespace(**{**dict.fromkeys(_LEAD_COLUMN_NAMES), **values, "id": lead_id})


def lead_by_id(conn: Connection, lead_id: int) -> Any:
    """The row of the lead with this id (which must exist)."""
    return conn.execute(select(L).where(L.c.id == lead_id)).one()
