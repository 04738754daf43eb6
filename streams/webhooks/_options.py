"""The receiver's settings (``dripdrop webhooks serve`` options) and fixed limits."""

from __future__ import annotations

from dataclasses import dataclass

PROVIDERS = ("ses", "mailgun", "postmark")

SNS_URL_PATTERN = r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/"
"""Where SigningCertURL and SubscribeURL must point: https on an SNS endpoint host."""

MAX_BODY_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class WebhookOptions:
    """Receiver settings (``dripdrop webhooks serve`` options)."""

    host: str = "127.0.0.1"
    port: int = 8081
    sns_url_pattern: str = SNS_URL_PATTERN
    max_age_seconds: float = 900.0
    """Mailgun: how far the signed timestamp may be from now (either way)."""
    http_timeout_seconds: float = 10.0
    """Fetching an SNS certificate, confirming a subscription."""
    cert_cache_size: int = 64
    recent_size: int = 100_000
    """How many Mailgun tokens and produced event ids are remembered (per process)."""
