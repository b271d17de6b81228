"""The definition files as text: what the worker stores as versions when it loads them, and a campaign rebuilt from a
stored text, so that an edit can be compared with the version the database last ran.

A version is named by its kind (``campaign``, ``policy``, ``scoring``, ``sales``), its name (the campaign's id, or the
kind for the three project files) and the hash of its text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nurture.definitions.campaign import Campaign
from nurture.definitions.loader import Catalog, validate_document
from nurture.definitions.policy import POLICY_FILE
from nurture.definitions.sales import SALES_FILE
from nurture.definitions.scoring import SCORING_FILE
from nurture.definitions.yamlsource import YamlDocument, content_hash, parse_yaml, read_text
from nurture.errors import Problem

__all__ = ["KINDS", "PROJECT_FILES", "DefinitionSource", "campaign_from_text", "catalog_sources", "content_hash"]

KINDS = ("campaign", "policy", "scoring", "sales")
PROJECT_FILES = {"policy": POLICY_FILE, "scoring": SCORING_FILE, "sales": SALES_FILE}
"""The project files kept as versions besides the campaigns, by kind (each is its own name)."""


@dataclass(frozen=True)
class DefinitionSource:
    """One definition file as loaded: its kind, name, path and text (and, for a campaign, the parsed model's
    fingerprint, which an edit of comments or layout keeps)."""

    kind: str
    name: str
    path: str
    text: str
    fingerprint: str | None = None

    @property
    def content_hash(self) -> str:
        """The version's name: the hash of the text."""
        return content_hash(self.text)

    def document(self) -> YamlDocument:
        """The text parsed again (for the rules of scoring.yaml and sales.yaml, read from the same text)."""
        return parse_yaml(self.text, self.path)


def catalog_sources(catalog: Catalog, campaigns_dir: Path) -> tuple[list[DefinitionSource], list[Problem]]:
    """The sources of a loaded catalog (its campaigns and policy, from the texts it parsed) and of scoring.yaml and
    sales.yaml in ``campaigns_dir`` (a missing file has no source); problems for a project file that cannot be read."""
    sources = [
        DefinitionSource("campaign", campaign_id, doc.path, doc.text, catalog.fingerprint(campaign_id))
        for campaign_id, doc in sorted(catalog.documents.items()) if doc.text is not None
    ]
    if catalog.policy_document is not None and catalog.policy_document.text is not None:
        sources.append(DefinitionSource("policy", "policy", catalog.policy_document.path, catalog.policy_document.text))
    problems: list[Problem] = []
    for kind in ("scoring", "sales"):
        path = campaigns_dir / PROJECT_FILES[kind]
        if not path.exists():
            continue
        text, problem = read_text(path)
        if text is None:
            problems.extend([problem] if problem else [])
            continue
        sources.append(DefinitionSource(kind, kind, str(path), text))
    return sources, problems


def campaign_from_text(text: str, display_path: str) -> Campaign | None:
    """A campaign rebuilt from a stored version's text (templates are not looked up); None if it no longer parses."""
    campaign, _problems = validate_document(parse_yaml(text, display_path), Campaign)
    return campaign
