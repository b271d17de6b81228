"""Delivery: turning rendered emails into bytes and handing them to a mail transport (SMTP, file, console).

The names below are imported from their modules on first use, so that a process whose mail goes to a folder or the
console does not import the SMTP client and TLS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nurture.lazy import exports

if TYPE_CHECKING:
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

_MODULES = {
    "ConsoleTransport": "transports",
    "FileTransport": "transports",
    "OutgoingEmail": "message",
    "SMTPEndpoint": "smtp",
    "SMTPTransport": "smtp",
    "SendResult": "transports",
    "Transport": "transports",
    "build_message_bytes": "message",
    "domain_of": "message",
    "envelope_address": "message",
    "message_id_for": "message",
    "register_transport": "transports",
    "supported_schemes": "transports",
    "transport_from_url": "transports",
}

__all__ = [
    "ConsoleTransport", "FileTransport", "OutgoingEmail", "SMTPEndpoint", "SMTPTransport", "SendResult", "Transport",
    "build_message_bytes", "domain_of", "envelope_address", "message_id_for", "register_transport",
    "supported_schemes", "transport_from_url",
]

__getattr__ = exports(__name__, _MODULES)
