"""The JSON Schemas of the definition files (``nurture schema``), for yaml-language-server and other editors."""

from __future__ import annotations

from typing import Any

from nurture.definitions.campaign import Campaign

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def campaign_schema() -> dict[str, Any]:
    """The JSON Schema of a campaign file."""
    schema = Campaign.model_json_schema(by_alias=True)
    schema["$schema"] = DRAFT
    schema["title"] = "nurture campaign"
    return schema
