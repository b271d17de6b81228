"""Where a lead came from: its acquisition source, medium and campaign (the UTM parameters of marketing links).

A lead gets them from the CSV import or ``POST /v1/leads`` (``source``, ``medium``, ``source_campaign``, or their UTM
names ``utm_source``, ``utm_medium``, ``utm_campaign``), or else from the first event that carries ``utm_source``,
``utm_medium`` or ``utm_campaign`` properties while the lead has none of the three. Reports count leads, MQLs, SQLs
and customers per source to set them against spend (cost per lead, CAC). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ATTRIBUTION_FIELDS = ("source", "medium", "source_campaign")
"""The lead columns of its acquisition."""

UTM_NAMES = {"utm_source": "source", "utm_medium": "medium", "utm_campaign": "source_campaign"}
"""The UTM parameter names, as import columns, API keys and event properties, and the lead column each fills."""

MAX_LENGTH = 200
"""Longer values are cut: a source name, not a document."""

UNATTRIBUTED = "(none)"
"""How a lead without a source is reported."""


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    text = str(value).strip()
    return text[:MAX_LENGTH] or None


def has_attribution(values: Mapping[str, Any]) -> bool:
    """Whether any of the lead's acquisition columns is set."""
    return any(values.get(name) for name in ATTRIBUTION_FIELDS)


def attribution_from_properties(properties: Mapping[str, Any]) -> dict[str, str | None] | None:
    """The acquisition an event's ``utm_*`` properties give, or None when it carries none of them."""
    found = {column: _text(properties.get(name)) for name, column in UTM_NAMES.items()}
    return found if any(found.values()) else None
