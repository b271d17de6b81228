"""The signing secret: NURTURE_SECRET_KEY when set, otherwise one generated once and kept in the database."""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.engine import Engine

from nurture.storage.database import transaction
from nurture.storage.dialect import upsert_insert
from nurture.storage.tables import M

SECRET_KEY = "secret_key"


def signing_secret(engine: Engine, configured: str = "") -> str:
    """The secret that signs tracking, unsubscribe and sales links.

    Every process sharing the database must sign alike, so a generated secret is stored (first writer wins).
    """
    if configured:
        return configured
    with transaction(engine) as conn:
        stored = conn.execute(select(M.c.value).where(M.c.key == SECRET_KEY)).scalar()
        if stored:
            return stored
        conn.execute(
            upsert_insert(M, conn.dialect).values(key=SECRET_KEY, value=secrets.token_urlsafe(32)).on_conflict_do_nothing()
        )
        return conn.execute(select(M.c.value).where(M.c.key == SECRET_KEY)).scalar_one()
