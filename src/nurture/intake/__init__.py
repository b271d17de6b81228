"""The HTTP intake: engagement events and leads in, signed tracking and unsubscribe links, provider webhooks.

``create_app(settings, engine=..., catalog=..., rules=..., signer=...)`` builds the FastAPI app;
``server_config(app, settings)`` the uvicorn configuration that serves it without logging emails or tokens.
"""

from __future__ import annotations

from nurture.intake.app import create_app, server_config

__all__ = ["create_app", "server_config"]
