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
        "resync_days": 7,
        "sent_folder": "Sent"         # optional: found by its \\Sent flag otherwise
    }}}

or ``{"inbound": {"gmail": {...}}}`` (``GmailInbound``, the Gmail API: ``users.watch`` push
and ``users.history.list``) or ``{"inbound": {"graph": {...}}}`` (``GraphInbound``,
Microsoft Graph change notifications and delta queries); see docs/inbound.md.
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
    sent_folder: str | None = None
    """Where the provider files sent mail (ambiguous sends are looked up there); ``None``:
    the folder flagged ``\\Sent`` (RFC 6154), else one named like a Sent folder."""

    @field_validator("sent_folder")
    @classmethod
    def _sent_folder(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or any(c in value for c in '"\r\n')):
            raise ValueError("sent_folder: a folder name, without quotes or line breaks")
        return value

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


def _secret_ref(value: Any) -> Any:
    if value is not None and not is_reference(value):
        raise ValueError('must be a secret reference such as {"secret": "env:NAME"}')
    return value


GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
MICROSOFT_TOKEN_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"


class GooglePushOidc(BaseModel):
    """Pub/Sub authenticated push: the ``Authorization: Bearer`` OIDC token Google signs.

    Verified with Google's published keys (``certs_url``, RS256): ``aud`` = ``audience``,
    ``iss`` Google's, ``email`` = ``service_account`` and verified, not expired.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    audience: str
    service_account: str
    certs_url: str = "https://www.googleapis.com/oauth2/v3/certs"


class GmailInbound(BaseModel):
    """One Gmail mailbox read through the Gmail API (``streams/pump/gmail.py``).

    ``topic_name`` (a Cloud Pub/Sub topic Gmail may publish to) turns on ``users.watch``;
    the topic's push subscription points at the pump's ``/gmail/push/{adapter_id}``
    with ``?token=`` the value of ``push_token``. Without a topic the pump polls
    ``users.history.list`` every ``poll_seconds``; with one it still does (push is an
    accelerator, not a requirement), and ``poll_seconds`` may be long.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    client_id: str
    client_secret: Any = None
    refresh_token: Any
    token_url: str = GOOGLE_TOKEN_URL
    scope: str | None = None
    api_base: str = "https://gmail.googleapis.com"
    user_id: str = "me"
    label_id: str = "INBOX"
    topic_name: str | None = None
    push_token: Any = None
    push_oidc: GooglePushOidc | None = None
    poll_seconds: float = Field(default=60, gt=0)
    renew_before_seconds: float = Field(default=24 * 3600, gt=0, lt=7 * 24 * 3600)
    start: Literal["new", "all"] = "new"
    resync_days: int = Field(default=7, ge=1, le=365)
    timeout_seconds: float = Field(default=30, gt=0)

    _refs = field_validator("client_secret", "refresh_token", "push_token")(_secret_ref)

    @model_validator(mode="after")
    def _push_needs_auth(self) -> GmailInbound:
        if self.topic_name is not None and self.push_token is None and self.push_oidc is None:
            raise ValueError("gmail: a topic_name needs push_token or push_oidc (push auth)")
        return self


class GraphInbound(BaseModel):
    """One Microsoft 365 mailbox folder read through Microsoft Graph (``graph.py``).

    ``notification_url`` (where Graph reaches the pump's ``/graph/notify/{adapter_id}``,
    HTTPS in production) turns on the change-notification subscription; ``client_state``
    is the secret every notification must carry. Delta queries run on start, after a
    ``missed`` lifecycle notification and every ``poll_seconds``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str = "common"
    client_id: str
    client_secret: Any = None
    refresh_token: Any
    token_url: str | None = None
    scope: str = "https://graph.microsoft.com/Mail.Read offline_access"
    api_base: str = "https://graph.microsoft.com/v1.0"
    user_id: str = "me"
    folder: str = "Inbox"
    notification_url: str | None = None
    lifecycle_notification_url: str | None = None
    client_state: Any = None
    subscription_minutes: int = Field(default=10070, ge=5, le=10080)
    renew_before_seconds: float = Field(default=24 * 3600, gt=0, lt=7 * 24 * 3600)
    poll_seconds: float = Field(default=300, gt=0)
    start: Literal["new", "all"] = "new"
    resync_days: int = Field(default=7, ge=1, le=365)
    timeout_seconds: float = Field(default=30, gt=0)

    _refs = field_validator("client_secret", "refresh_token", "client_state")(_secret_ref)

    @field_validator("folder")
    @classmethod
    def _folder(cls, value: str) -> str:
        if not value or any(c in value for c in "'\"\r\n/?#"):
            raise ValueError("folder: a well-known folder name or an id, without quotes")
        return value

    @model_validator(mode="after")
    def _notifications_need_state(self) -> GraphInbound:
        if self.notification_url is not None and self.client_state is None:
            raise ValueError("graph: a notification_url needs client_state (a secret)")
        return self

    @property
    def resolved_token_url(self) -> str:
        return self.token_url or MICROSOFT_TOKEN_URL.format(tenant=self.tenant)


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


def inbound_gmail(config: dict[str, Any]) -> GmailInbound | None:
    """The adapter's Gmail API inbound config, ``None`` when it has none (raises as above)."""
    inbound = config.get("inbound")
    if not isinstance(inbound, dict) or "gmail" not in inbound:
        return None
    return GmailInbound.model_validate(inbound["gmail"])


def inbound_graph(config: dict[str, Any]) -> GraphInbound | None:
    """The adapter's Microsoft Graph inbound config, ``None`` when it has none."""
    inbound = config.get("inbound")
    if not isinstance(inbound, dict) or "graph" not in inbound:
        return None
    return GraphInbound.model_validate(inbound["graph"])
