"""The inbound part of an adapter's config: where its mailbox is and how to read it.

Shape (``channel_adapters.config``)::

    {"inbound": {"imap": {
        "host": "imap.example.com", "port": 993, "security": "tls",   # or "none" (tests)
        "username": "sales@example.com",
        "password": {"secret": "env:SALES_IMAP_PASSWORD"},           # a reference, never a value
        "oauth2": {...},               # instead of password: XOAUTH2 (see ``ImapOAuth2``)
        "ca_file": "/etc/ssl/corp-ca.pem",                            # optional
        "folders": ["INBOX", "Bounces"],
        "idle": true, "idle_seconds": 600, "poll_seconds": 30,
        "start": "new",               # first sight of a folder: "new" mail only, or "all"
        "resync_days": 7
    }}}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from streams.secrets import is_reference


class ImapOAuth2(BaseModel):
    """XOAUTH2 (Gmail, Microsoft 365 IMAP): an access token from the refresh-token grant."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token_url: str
    client_id: str
    client_secret: Any
    refresh_token: Any
    scope: str | None = None

    @field_validator("client_secret", "refresh_token")
    @classmethod
    def _reference(cls, value: Any) -> Any:
        if not is_reference(value):
            raise ValueError('must be a secret reference such as {"secret": "env:NAME"}')
        return value


class ImapConfig(BaseModel):
    """One adapter's IMAP mailbox (validated when the pump loads the adapter)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str
    port: int = Field(default=993, ge=1, le=65535)
    security: Literal["tls", "none"] = "tls"
    username: str
    password: Any = None
    oauth2: ImapOAuth2 | None = None
    ca_file: str | None = None
    folders: tuple[str, ...] = ("INBOX",)
    idle: bool = True
    idle_seconds: float = Field(default=600, gt=0, le=29 * 60)  # RFC 2177: re-IDLE < 30 min
    poll_seconds: float = Field(default=30, gt=0)
    start: Literal["new", "all"] = "new"
    resync_days: int = Field(default=7, ge=0)

    @field_validator("password")
    @classmethod
    def _password_reference(cls, value: Any) -> Any:
        if value is not None and not is_reference(value):
            raise ValueError('must be a secret reference such as {"secret": "file:/path"}')
        return value

    @field_validator("folders")
    @classmethod
    def _folders(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or any(not f.strip() or any(c in f for c in '"\r\n') for f in value):
            raise ValueError("folders: one or more names, without quotes or line breaks")
        return tuple(dict.fromkeys(value))

    @model_validator(mode="after")
    def _one_credential(self) -> ImapConfig:
        if (self.password is None) == (self.oauth2 is None):
            raise ValueError("imap: give exactly one of password or oauth2")
        return self


class InboundAdapter(BaseModel):
    """An adapter the pump reads: its identity and its mailbox."""

    model_config = ConfigDict(frozen=True)

    adapter_id: str
    tenant_key: str
    imap: ImapConfig


def inbound_imap(config: dict[str, Any]) -> ImapConfig | None:
    """The adapter's IMAP config, ``None`` when it has no inbound part.

    Raises:
        pydantic.ValidationError: the inbound part is malformed (the pump logs the adapter
            and skips it; it does not stop the other mailboxes).
    """
    inbound = config.get("inbound")
    if not isinstance(inbound, dict) or "imap" not in inbound:
        return None
    return ImapConfig.model_validate(inbound["imap"])
