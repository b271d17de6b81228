"""Outbound webhooks: the signature, one signed HTTP delivery, and the Slack message of a sales notification.

Every request carries::

    Nurture-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>
    Nurture-Event-Id: <the same id on every retry of one notification>
    Nurture-Event-Type: lead.promoted | lead.sla_overdue | owner.digest | step.webhook | ...

The timestamp is signed, so a receiver can refuse replays older than a few minutes (:func:`verify`, the recipe in
``docs/webhooks.md``). The sender never follows redirects and never logs bodies or URLs (a Slack webhook URL is a
secret, and bodies carry personal data): logs get the host and the status code only.

httpx is imported when the first request is made (or :func:`make_client` is called), not with this module: a worker
that sends no webhook (``nurture run --once`` with an empty outbox) starts without it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from nurture import __version__

if TYPE_CHECKING:
    import httpx

__all__ = [
    "EVENT_ID_HEADER",
    "EVENT_TYPE_HEADER",
    "SIGNATURE_HEADER",
    "DeliveryResult",
    "WebhookSender",
    "default_timeout",
    "encode_body",
    "event_id_for",
    "is_slack_url",
    "make_client",
    "sign",
    "signature_header",
    "slack_message",
    "verify",
]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Nurture-Signature"
EVENT_ID_HEADER = "Nurture-Event-Id"
EVENT_TYPE_HEADER = "Nurture-Event-Type"
USER_AGENT = f"nurture/{__version__}"
DEFAULT_TOLERANCE = 300  # seconds a receiver accepts between the signed timestamp and its own clock
_DEFAULT_TIMEOUT = (10.0, 5.0)  # seconds: every phase of a request, and the connect phase (default_timeout())
# 4xx answers that say "not now" rather than "never": timeout, conflict, too early, rate limited.
RETRYABLE_4XX = frozenset({408, 409, 425, 429})
_ERROR_SNIPPET = 200  # bytes of a failed response's body kept as the error (Slack explains itself there)
_MAX_RESPONSE = 64 * 1024  # bytes of a response read at most
_EVENT_NAMESPACE = uuid.UUID("6b1c3f0e-5d0a-4c55-9a57-6e7572747572")  # fixed forever: event ids derive from it


# -- signing --------------------------------------------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>." + body`` under ``secret`` (the ``v1`` of the signature header)."""
    return hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    """The value of ``Nurture-Signature`` for ``body`` sent at ``timestamp`` (unix seconds)."""
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


def verify(secret: str, header: str, body: bytes, *, now: int, tolerance: int = DEFAULT_TOLERANCE) -> bool:
    """True when ``header`` (a ``Nurture-Signature`` value) signs the raw ``body`` under ``secret`` and its timestamp
    is within ``tolerance`` seconds of ``now`` (either way). Constant-time; any ``v1`` may match (key rotation).

    This is the recipe of ``docs/webhooks.md``, step for step; a test keeps the two identical.
    """
    fields = [item.split("=", 1) for item in header.split(",") if "=" in item]
    timestamps = [value.strip() for key, value in fields if key.strip() == "t"]
    signatures = [value.strip() for key, value in fields if key.strip() == "v1"]
    if len(timestamps) != 1 or not (timestamps[0].isascii() and timestamps[0].isdigit()) or not signatures:
        return False
    timestamp = int(timestamps[0])
    if abs(now - timestamp) > tolerance:
        return False
    expected = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures)


def event_id_for(dedup_key: str) -> str:
    """The event id of an outbox row: a UUID derived from its dedup key, so every retry carries the same id."""
    return str(uuid.uuid5(_EVENT_NAMESPACE, dedup_key))


def encode_body(payload: Any) -> bytes:
    """Compact UTF-8 JSON: the exact bytes that are signed and sent."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# -- delivery -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryResult:
    """What one attempt got. ``permanent``: retrying the same request will not help (a 4xx such as 400, 404, 410).

    ``retry_after`` is the receiver's ``Retry-After`` in seconds, when it sent one with a 429 or 503.
    """

    ok: bool
    status_code: int | None = None
    error: str | None = None
    permanent: bool = False
    retry_after: float | None = None


def default_timeout() -> httpx.Timeout:
    """The requests' timeouts: 10 s for each phase, 5 s to connect."""
    import httpx

    every, connect = _DEFAULT_TIMEOUT
    return httpx.Timeout(every, connect=connect)


def make_client(*, timeout: httpx.Timeout | None = None) -> httpx.Client:
    """The HTTP client the worker hands to :class:`WebhookSender`: sane timeouts (``timeout``, else
    :func:`default_timeout`), no redirects, its own User-Agent."""
    import httpx

    return httpx.Client(timeout=timeout or default_timeout(), follow_redirects=False,
                        headers={"User-Agent": USER_AGENT})


class _Default:
    """The default of :class:`WebhookSender`'s ``timeout``: :func:`default_timeout`, built when first needed."""


_DEFAULT = _Default()


UNSIGNED_REFUSED = "NURTURE_WEBHOOK_SECRET is not set: nurture does not send unsigned webhooks"


class WebhookSender:
    """Signs and sends one webhook request per :meth:`deliver` over the given client (thread-safe, as the client is).
    Without a client, it makes one (:func:`make_client`) for its first request and closes it in :meth:`close`.

    ``secret`` is ``NURTURE_WEBHOOK_SECRET``. Without one nothing is sent: an unsigned webhook could be forged by
    anyone who knows the receiver's URL. Deliveries wait (a temporary failure, retried like any other) until the secret
    is set, and a warning says so once.
    """

    def __init__(self, client: httpx.Client | None, *, secret: str,
                 timeout: httpx.Timeout | _Default | None = _DEFAULT) -> None:
        self._client = client
        self._own_client = client is None
        self._lock = threading.Lock()
        self.secret = secret
        self._timeout = timeout
        self._warned = False

    @property
    def client(self) -> httpx.Client:
        """The client requests go through (made at the first request when none was given)."""
        with self._lock:
            if self._client is None:
                self._client = make_client()
            return self._client

    @property
    def timeout(self) -> httpx.Timeout | None:
        """Each request's timeout (None: the client's own)."""
        if isinstance(self._timeout, _Default):
            self._timeout = default_timeout()
        return self._timeout

    def close(self) -> None:
        """Close the client this sender made, if it made one (a client given to it is its owner's to close)."""
        with self._lock:
            client, self._client = (self._client, None) if self._own_client else (None, self._client)
        if client is not None:
            client.close()

    def headers(self, event_id: str, event_type: str, body: bytes, *, now: datetime) -> dict[str, str]:
        """The headers of one attempt, signed at ``now``."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_ID_HEADER: event_id,
            EVENT_TYPE_HEADER: event_type,
        }
        if self.secret:
            headers[SIGNATURE_HEADER] = signature_header(self.secret, int(now.timestamp()), body)
        return headers

    def deliver(
        self, url: str, event_id: str, event_type: str, payload: Any, *, now: datetime, method: str = "POST"
    ) -> DeliveryResult:
        """Send ``payload`` as compact JSON to ``url``, signed at ``now``; never raises for a failed delivery.

        2xx is ok; 408/409/425/429, 5xx, timeouts and connection errors are temporary; other 4xx, redirects and
        malformed URLs are permanent.
        """
        if not self.secret:
            if not self._warned:
                self._warned = True
                log.warning("NURTURE_WEBHOOK_SECRET is not set: webhooks wait in the outbox, never sent unsigned")
            return DeliveryResult(ok=False, error=UNSIGNED_REFUSED)
        body = encode_body(payload)
        headers = self.headers(event_id, event_type, body, now=now)
        host = urlsplit(url).hostname or "?"
        import httpx

        timeout = self.timeout
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        try:
            with self.client.stream(method, url, content=body, headers=headers, **extra) as response:
                status = response.status_code
                received = _read_some(response)  # a body read to its end lets the connection be reused
                if 200 <= status < 300:
                    return DeliveryResult(ok=True, status_code=status)
                snippet = _printable(received[:_ERROR_SNIPPET])
                retry_after = _retry_after(response) if status in (429, 503) else None
        except httpx.TimeoutException as exc:
            log.info("webhook to %s timed out (%s)", host, type(exc).__name__)
            return DeliveryResult(ok=False, error=f"timed out ({type(exc).__name__})")
        except httpx.TransportError as exc:  # connection refused or reset, DNS failure, protocol error
            log.info("webhook to %s failed: %s", host, type(exc).__name__)
            permanent = isinstance(exc, httpx.UnsupportedProtocol)
            error = f"{type(exc).__name__}: {_no_url(str(exc), url)}"
            return DeliveryResult(ok=False, error=error, permanent=permanent)
        except httpx.InvalidURL as exc:
            return DeliveryResult(ok=False, error=f"invalid URL: {_no_url(str(exc), url)}", permanent=True)
        log.info("webhook to %s answered HTTP %d", host, status)
        error = f"HTTP {status}" + (f": {snippet}" if snippet else "")
        if 300 <= status < 400:
            return DeliveryResult(ok=False, status_code=status, error=f"HTTP {status} (redirects are not followed)",
                                  permanent=True)
        permanent = 400 <= status < 500 and status not in RETRYABLE_4XX
        return DeliveryResult(ok=False, status_code=status, error=error, permanent=permanent, retry_after=retry_after)


def _read_some(response: httpx.Response) -> bytes:
    """The response body, or its start when it is large (the rest is not downloaded; the connection is dropped)."""
    import httpx

    received = b""
    try:
        for chunk in response.iter_bytes():
            received += chunk
            if len(received) >= _MAX_RESPONSE:
                break
    except httpx.HTTPError:  # the answer's status is what counts, not a body cut short
        pass
    return received


def _printable(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    return float(value) if value.isascii() and value.isdigit() else None


def _no_url(message: str, url: str) -> str:
    """An exception message without the URL in it (a Slack webhook URL is a credential)."""
    return message.replace(url, "<url>")[:_ERROR_SNIPPET]


# -- Slack ----------------------------------------------------------------------------------------------------------

_SLACK_TITLES = {"lead.promoted": "New SQL", "lead.sla_overdue": "SLA overdue", "lead.accepted": "Accepted by sales",
                 "lead.rejected": "Rejected by sales"}


def is_slack_url(url: str) -> bool:
    """True for a Slack incoming-webhook URL (``https://hooks.slack.com/...``), which wants Block Kit, not our JSON."""
    return (urlsplit(url).hostname or "").lower() == "hooks.slack.com"


def slack_message(payload: dict[str, Any]) -> dict[str, Any]:
    """A Slack Block Kit message (``{"text": ..., "blocks": [...]}``) for a sales notification payload.

    ``lead.promoted`` becomes "New SQL: <name> at <company>", the reasons (``brief.why``), the score, the owner
    (mentioned as ``<@SLACKID>`` when ``owner.slack_id`` is known) and Accept / Reject buttons (``links``).
    Other types get a title from their type and the payload's ``text``.
    """
    lead = payload.get("lead") or {}
    brief = payload.get("brief") or {}
    event_type = str(payload.get("type") or "notification")
    name = " ".join(str(lead[k]) for k in ("first_name", "last_name") if lead.get(k)) or str(lead.get("email") or "")
    title = _SLACK_TITLES.get(event_type, event_type)
    if name:
        title = f"{title}: {name}" + (f" at {lead['company']}" if lead.get("company") else "")
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": title[:150]}}]
    why = brief.get("why") or brief.get("summary") or payload.get("text")
    if why:
        lines = why if isinstance(why, list) else [why]
        blocks.append(_mrkdwn("*Why:*\n" + "\n".join(f"• {_escape(str(line))}" for line in lines)))
    fields = []
    score = lead.get("score", brief.get("score"))
    if score is not None:
        fields.append(f"*Score:* {_escape(_number(score))}")
    for label, key in (("Title", "title"), ("Email", "email")):
        if lead.get(key):
            fields.append(f"*{label}:* {_escape(str(lead[key]))}")
    owner = _owner(payload, lead)
    if owner:
        fields.append(f"*Owner:* {owner}")
    if fields:
        blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": f[:2000]} for f in fields[:10]]})
    links = payload.get("links") or {}
    buttons = []
    choices = (("accept", "Accept", "primary"), ("reject", "Reject", "danger"), ("lead", "Open lead", None))
    for key, label, style in choices:
        if links.get(key):
            button: dict[str, Any] = {"type": "button", "action_id": key, "url": str(links[key]),
                                      "text": {"type": "plain_text", "text": label}}
            if style:
                button["style"] = style
            buttons.append(button)
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    return {"text": title, "blocks": blocks}


def _owner(payload: dict[str, Any], lead: dict[str, Any]) -> str | None:
    owner = payload.get("owner")
    if isinstance(owner, dict):
        if owner.get("slack_id"):
            return f"<@{owner['slack_id']}>"
        owner = owner.get("name") or owner.get("email")
    owner = owner or lead.get("owner")
    return _escape(str(owner)) if owner else None


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def _escape(text: str) -> str:
    """Slack's three control characters, so lead data cannot inject mentions or links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)

