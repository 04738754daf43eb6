"""Reading one webhook request: its JSON body and the adapter's webhook secret.

Failures become the receiver's refusals (400, 503); nothing here logs a secret.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from streams.secrets import SecretError, resolve_secret
from streams.webhooks._errors import MalformedError, UnavailableError


def json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise MalformedError("body is not JSON") from None
    if not isinstance(body, dict):
        raise MalformedError("body is not a JSON object")
    return body


def webhook_secret(config: Mapping[str, Any], key: str) -> str:
    """Resolved per request, so a rotated secret file needs no restart."""
    try:
        return resolve_secret(config.get(key))
    except SecretError as exc:
        raise UnavailableError(f"{key}: {exc}") from None
