"""Times as people type them on the command line (``--since``, ``--until``, ``--start``, ``--event ...@TIME``)."""

from __future__ import annotations

from datetime import UTC, datetime

from nurture.errors import InvalidInput


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; a time without an offset is taken as UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"invalid time {text!r}: use ISO 8601, e.g. 2026-03-02T09:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
