"""Who gets a new SQL (pure): the routing rules of ``sales.yaml``, first match wins, teams in round-robin.

The round-robin position is the caller's to keep, one counter per team (in storage, so several workers agree): pass
it in, and advance that team's counter when the returned :class:`Route` names a team.
"""

from __future__ import annotations

from dataclasses import dataclass

from nurture.core.facts import LeadView
from nurture.core.promotion import lead_holds
from nurture.definitions.sales import Owner, SalesRules

EXISTING_OWNER, FALLBACK = "existing owner", "fallback"


@dataclass(frozen=True)
class Route:
    """Where a lead goes: an owner id, the team it was drawn from (advance its counter), and the rule that decided."""

    owner: str
    team: str | None
    rule: str  # the routing rule's name (or "rule N"), "existing owner" or "fallback"


def owner(rules: SalesRules, owner_id: str) -> Owner | None:
    """The owner with that id (or email, case-insensitive); None if the sales file has no such owner (any more)."""
    wanted = owner_id.strip().casefold()
    for candidate in rules.routing.owners:
        if wanted in (candidate.id, candidate.email.casefold()):
            return candidate
    return None


def route(rules: SalesRules, lead: LeadView, *, round_robin_position: int) -> Route | None:
    """The owner for ``lead``; None only when the sales file routes nobody (no rules, no fallback, no owners).

    A lead whose ``owner`` field already names a known owner stays with them (``keep_owner``, the default): the rep
    who talked to a recycled lead last time knows the account. Otherwise the rules in order, first match wins; a team
    gives its owner at ``round_robin_position`` (wrapping around); no match gives the fallback.
    """
    routing = rules.routing
    current = lead.get("owner")
    if routing.keep_owner and isinstance(current, str) and current.strip():
        kept = owner(rules, current)
        if kept is not None:
            return Route(kept.id, None, EXISTING_OWNER)
    for index, rule in enumerate(routing.rules):
        if not lead_holds(lead, rule.when):
            continue
        name = rule.name or f"rule {index + 1}"
        if rule.team is not None:
            members = routing.teams[rule.team]
            return Route(members[round_robin_position % len(members)], rule.team, name)
        assert rule.owner is not None
        return Route(rule.owner, None, name)
    if routing.fallback is not None:
        return Route(routing.fallback, None, FALLBACK)
    return None
