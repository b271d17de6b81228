"""The JSON Schemas of the definition files (``nurture schema``), for yaml-language-server and other editors.

A schema checks a file's shape: its keys, and the form of every value (durations, days, hours, the ``always`` and
``never`` shorthands). ``nurture check`` checks that too, and what a schema cannot say: that step ids are unique and
every ``goto`` names one, that templates exist and render, that timezone names exist, that a window's end comes
after its start, that no loop of steps runs without a wait.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from nurture.definitions.campaign import Campaign
from nurture.definitions.policy import Policy

DRAFT = "https://json-schema.org/draft/2020-12/schema"

FILES: dict[str, tuple[type[BaseModel], str]] = {
    "campaign": (Campaign, "nurture campaign"),
    "policy": (Policy, "nurture policy (policy.yaml)"),
}
"""The files with a schema, by the name ``nurture schema`` takes. scoring.yaml and sales.yaml have none."""


def file_schema(kind: str = "campaign") -> dict[str, Any]:
    """The JSON Schema of a campaign file (``campaign``) or of ``policy.yaml`` (``policy``); KeyError otherwise."""
    model, title = FILES[kind]
    schema = model.model_json_schema(by_alias=True)
    schema["$schema"] = DRAFT
    schema["title"] = title
    return schema
