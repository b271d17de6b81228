"""What ``nurture check`` and ``nurture preview`` do, as library functions the CLI wraps."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2

from nurture.application.compose import email_context
from nurture.core.engine import Action
from nurture.core.facts import LeadView, lead_from_mapping
from nurture.definitions.campaign import Campaign
from nurture.definitions.loader import Catalog, load_catalog, template_uses
from nurture.definitions.sales import SALES_FILE, load_sales
from nurture.definitions.scoring import SCORING_FILE, load_scoring
from nurture.definitions.spend import SPEND_FILE, load_spend
from nurture.definitions.yamlsource import load_yaml
from nurture.errors import InvalidInput, Problem
from nurture.rendering import EmailRenderer, LinkBuilder, RenderedEmail, RenderLimits, sample_lead
from nurture.signing import Signer

PREVIEW_BASE_URL = "https://nurture.example/preview"
RENDER_TIME = datetime(2026, 1, 1, tzinfo=UTC)  # checks and previews must not depend on the clock


def preview_links(base_url: str = PREVIEW_BASE_URL, secret: str = "preview") -> LinkBuilder:
    """Links for previews and checks: signed with a throw-away key so they can never be confused with real ones."""
    return LinkBuilder(base_url, Signer(secret or "preview"), "preview")


def sample_lead_view() -> LeadView:
    """The sample lead every email is rendered against by ``nurture check``."""
    return lead_from_mapping(sample_lead())


def _subject_line(catalog: Catalog, campaign: Campaign, loc: tuple[Any, ...]) -> tuple[str, int]:
    doc = catalog.documents[campaign.id]
    return doc.path, doc.line_of(loc)


def check_emails(
    catalog: Catalog, templates_dir: Path, lead: LeadView | None = None, limits: RenderLimits | None = None,
) -> list[Problem]:
    """Render every email of every campaign against a sample lead in the sandbox, within the worker's rendering
    budget (``limits``: a template that would go over it in the worker is a problem here); problems, not exceptions."""
    renderer = EmailRenderer(templates_dir, limits)
    lead = lead or sample_lead_view()
    links = preview_links()
    problems: list[Problem] = []
    for campaign in catalog.campaigns.values():
        for index, step in enumerate(campaign.steps):
            for loc, template, subject, use_id in template_uses(step):
                if step.stream is not None:  # a stream's uses name content pieces, not A/B variants
                    content, variant = next(c for c in step.stream.content if c.id == use_id), None
                else:
                    content, variant = None, use_id
                action = Action("email", step.id, step.id, RENDER_TIME, template, subject, variant, content)
                context = email_context(campaign, action, lead)
                for problem in renderer.check(template, subject, context, links):
                    if problem.path == "<subject>":
                        path, line = _subject_line(catalog, campaign, ("steps", index, *loc, "subject"))
                        problems.append(Problem(path, line, f"subject: {problem.message}"))
                    else:
                        problems.append(problem)
    return sorted(set(problems))


def check_template_syntax(templates_dir: Path) -> list[Problem]:
    """Parse every ``*.j2`` file, referenced or not, so a broken template is caught before a campaign uses it."""
    env = jinja2.Environment()
    problems = []
    for path in sorted(templates_dir.rglob("*.j2")):
        try:
            env.parse(path.read_text(encoding="utf-8"), name=path.name, filename=str(path))
        except jinja2.TemplateSyntaxError as exc:
            problems.append(Problem(str(path), exc.lineno or 0, f"template syntax error: {exc.message}"))
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(str(path), 0, f"cannot read template: {exc}"))
    return problems


@dataclass
class CheckReport:
    """The outcome of ``nurture check``."""

    catalog: Catalog
    problems: list[Problem]
    emails: int


def check(
    campaigns_dir: Path, templates_dir: Path, files: list[Path] | None = None, limits: RenderLimits | None = None,
) -> CheckReport:
    """Validate campaigns, policy, scoring, sales rules, spend and templates; render every email; collect every problem."""
    catalog = load_catalog(campaigns_dir, templates_dir, files=files)
    problems = list(catalog.problems)
    scoring_dirs = {campaigns_dir, *(path.parent for path in files or [] if path.name == SCORING_FILE)}
    for scoring_dir in sorted(scoring_dirs):
        problems += load_scoring(scoring_dir)[1]
    sales_dirs = {campaigns_dir, *(path.parent for path in files or [] if path.name == SALES_FILE)}
    for sales_dir in sorted(sales_dirs):
        problems += load_sales(sales_dir)[1]
    spend_dirs = {campaigns_dir, *(path.parent for path in files or [] if path.name == SPEND_FILE)}
    for spend_dir in sorted(spend_dirs):
        problems += load_spend(spend_dir)[1]
    if templates_dir.is_dir():
        syntax = check_template_syntax(templates_dir)
        broken = {Path(p.path).resolve() for p in syntax}
        problems += syntax  # a broken template is reported once, by its syntax error, not again by every render
        problems += [p for p in check_emails(catalog, templates_dir, limits=limits) if Path(p.path).resolve() not in broken]
    else:
        problems.append(Problem(str(templates_dir), 0, "templates folder not found"))
    emails = sum(len(template_uses(step)) for c in catalog.campaigns.values() for step in c.steps)
    return CheckReport(catalog, sorted(set(problems)), emails)


def load_lead_file(path: Path | None) -> LeadView:
    """A lead from a YAML or JSON file (``--lead``), or the sample lead."""
    if path is None:
        return sample_lead_view()
    doc = load_yaml(path)  # the same limits as every definition file
    if doc.problems:
        raise InvalidInput(f"cannot read lead file {doc.problems[0]}")
    data = doc.data
    if not isinstance(data, dict) or not data.get("email"):
        raise InvalidInput(f"{path}: a lead file is a mapping with at least an 'email' (and first_name, timezone, ...)")
    return lead_from_mapping(data)


def preview(
    catalog: Catalog, templates_dir: Path, campaign_id: str, step_id: str, lead: LeadView,
    *, variant: str | None = None, content_id: str | None = None, limits: RenderLimits | None = None,
) -> RenderedEmail:
    """Render one email step (a variant, or a stream's content piece) for a lead."""
    campaign = catalog.campaign(campaign_id)
    try:
        step = campaign.step(step_id)
    except KeyError:
        known = ", ".join(s.id for s in campaign.steps)
        raise InvalidInput(f"campaign '{campaign_id}' has no step '{step_id}' (steps: {known})") from None
    uses = template_uses(step)
    if not uses:
        raise InvalidInput(f"step '{step_id}' sends no email (it is a {step.action} step)")
    chosen = uses[0]
    wanted = content_id or variant
    if wanted is not None:
        matches = [u for u in uses if u[3] == wanted]
        if not matches:
            names = [str(u[3]) for u in uses if u[3] is not None]
            has = f"has: {', '.join(names)}" if names else "it has no variants"
            raise InvalidInput(f"step '{step_id}' has no variant or content '{wanted}' ({has})")
        chosen = matches[0]
    _loc, template, subject, key = chosen
    content = next((c for c in step.stream.content if c.id == key), None) if step.stream else None
    action = Action("email", step.id, step.id if content is None else f"{step.id}/{content.id}", RENDER_TIME,
                    template, subject, None if content else key, content)
    renderer = EmailRenderer(templates_dir, limits)
    return renderer.render(template, subject, email_context(campaign, action, lead), preview_links())

