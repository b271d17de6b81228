"""Delivery: turning rendered emails into bytes and handing them to a mail transport (SMTP, file, console)."""

from __future__ import annotations

from nurture.delivery.message import (
    OutgoingEmail,
    build_message_bytes,
    domain_of,
    envelope_address,
    message_id_for,
)
from nurture.delivery.smtp import SMTPEndpoint, SMTPTransport
from nurture.delivery.transports import (
    ConsoleTransport,
    FileTransport,
    SendResult,
    Transport,
    register_transport,
    supported_schemes,
    transport_from_url,
)

__all__ = [
    "ConsoleTransport",
    "FileTransport",
    "OutgoingEmail",
    "SMTPEndpoint",
    "SMTPTransport",
    "SendResult",
    "Transport",
    "build_message_bytes",
    "domain_of",
    "envelope_address",
    "message_id_for",
    "register_transport",
    "supported_schemes",
    "transport_from_url",
]
