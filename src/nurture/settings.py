"""One typed settings object, built from the environment (and a ``.env`` file in the working directory) at start-up.

Every variable is documented in ``.env.example`` and the README.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from nurture.errors import ConfigError


class Settings(BaseSettings):
    """nurture's configuration: ``NURTURE_*`` environment variables, then ``.env``, then these defaults."""

    model_config = SettingsConfigDict(env_prefix="NURTURE_", env_file=".env", extra="ignore", populate_by_name=True)

    database_url: str = Field("sqlite:///nurture.db", description="SQLAlchemy URL of the database.")
    mail_url: str = Field("console://", description="Mail transport: smtp://user:pass@host:port, file://DIR or console://.")
    from_address: str = Field(
        "Nurture <nurture@localhost>", validation_alias="NURTURE_FROM", description="From: header of nurture emails."
    )
    base_url: str = Field("http://127.0.0.1:8000", description="Public URL of the HTTP intake; tracking links use it.")
    secret_key: str = Field("", description="Signs tracking, unsubscribe and sales links. Generated and stored if empty.")
    api_key: str = Field("", description="Bearer key for the write endpoints of the HTTP API.")
    inbound_webhook_token: str = Field(
        "", description="Token of the provider webhooks (?token= or Basic auth); empty: the API key serves."
    )
    sendgrid_verification_key: str = Field(
        "", description="SendGrid's Signed Event Webhook verification key (Mail Settings, base64): when set, the "
                        "SendGrid webhook needs SendGrid's signature instead of the token.",
    )
    sales_webhook_url: str = Field("", description="Where lead.promoted notifications are POSTed (signed).")
    webhook_secret: str = Field("", description="HMAC-SHA256 key of the outbound webhook signature.")
    http_host: str = Field("127.0.0.1", description="Address the HTTP intake listens on.")
    http_port: int = Field(8000, description="Port the HTTP intake listens on.")
    campaigns_dir: Path = Field(Path("campaigns"), description="Folder of campaign YAML files (and scoring.yaml).")
    templates_dir: Path = Field(Path("templates"), description="Folder of Jinja email templates.")
    default_timezone: str = Field("UTC", description="IANA timezone for leads without one (when a campaign sets none).")
    log_level: str = Field("INFO", description="Logging level of the worker.")
    batch_size: int = Field(500, ge=1, description="Enrollments the dispatcher claims per batch.")
    lease_seconds: float = Field(
        300, gt=0, description="How long a claimed batch is reserved; a crashed worker's batch is taken over after it."
    )
    max_attempts: int = Field(6, ge=1, description="Send attempts before a delivery is marked failed.")
    poll_interval: float = Field(0.5, gt=0, description="Seconds between the worker's looks for due work (one statement) when idle.")
    dispatch_processes: int = Field(
        1, ge=1, le=64,
        description="Processes that render and send (each with its own mail connections); more use more cores.",
    )
    render_timeout: float = Field(
        2.0, gt=0, description="Seconds one email (subject, HTML and text) may take to render; over it, it fails.",
    )
    render_max_chars: int = Field(
        1_000_000, ge=1000, description="Characters an email part, or any string or list a template makes, may reach.",
    )
    sweep_interval: float = Field(
        600, gt=0, description="Seconds between enrollment sweeps: new or edited campaigns' audiences, re-entry and recycle waits "
        "that ended (leads enroll as they change)."
    )
    start_scoring_impact: bool = Field(
        True, description="At start-up, when scoring.yaml or sales.yaml changed, count and log the leads the change "
                          "concerns (reads every lead; false skips it on very large databases).",
    )

    @field_validator("sendgrid_verification_key")
    @classmethod
    def _a_public_key(cls, value: str) -> str:
        if value.strip():
            from nurture.signing import sendgrid_public_key

            sendgrid_public_key(value)  # ValueError naming what is wrong
        return value.strip()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read once."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc
