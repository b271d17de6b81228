"""Signed accept/reject links in the sales handoff: sales answers with one click from the notification or email.

A token names the lead and the promotion (the stage change that made it an SQL), so a link from an old promotion
cannot decide a newer one. The page behind a link shows the brief and asks for confirmation (a POST): link scanners
in mail and chat tools prefetch GETs.
"""

from __future__ import annotations

from dataclasses import dataclass

from nurture.signing import BadSignature, Signer

PURPOSE = "sales-feedback"
VERDICTS = ("accept", "reject")


@dataclass(frozen=True)
class SalesLinkTarget:
    """What a sales link decides: a verdict on one promotion of one lead."""

    lead_id: int
    promotion_id: int
    verdict: str


class SalesLinks:
    """Builds the accept and reject links of one promotion."""

    def __init__(self, base_url: str, signer: Signer) -> None:
        self.base_url = base_url.rstrip("/")
        self.signer = signer

    def link(self, lead_id: int, promotion_id: int, verdict: str) -> str:
        """The URL of the page that records ``verdict`` (accept or reject) for this promotion."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}")
        token = self.signer.sign({"l": lead_id, "p": promotion_id, "v": verdict}, purpose=PURPOSE)
        return f"{self.base_url}/s/{token}"

    def accept(self, lead_id: int, promotion_id: int) -> str:
        """The accept link."""
        return self.link(lead_id, promotion_id, "accept")

    def reject(self, lead_id: int, promotion_id: int) -> str:
        """The reject link (the page asks for the reason)."""
        return self.link(lead_id, promotion_id, "reject")


def decode_sales_link(signer: Signer, token: str) -> SalesLinkTarget:
    """The target of a sales link token; :class:`BadSignature` for anything forged, altered or malformed."""
    payload = signer.unsign(token, purpose=PURPOSE)
    lead_id, promotion_id, verdict = payload.get("l"), payload.get("p"), payload.get("v")
    if not isinstance(lead_id, int) or not isinstance(promotion_id, int) or verdict not in VERDICTS:
        raise BadSignature("malformed sales link")
    return SalesLinkTarget(lead_id, promotion_id, verdict)
