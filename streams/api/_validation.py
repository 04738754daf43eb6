"""Input checks of the API's arguments, each raising ``InvalidInputError`` with its code.

Checks only: no database reads (ownership is ``streams.db.authoring.load_owned``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ValidationError

from dripdrop_core.errors import RecordError
from dripdrop_core.limits import is_email_address, validate_data_size, validate_identity
from dripdrop_core.mail_threads import has_line_break
from streams.api._errors import InvalidInputError
from streams.providers import PROVIDERS
from streams.secrets import InlineSecretError, check_no_inline_secrets

M = TypeVar("M", bound=BaseModel)


def checked_prospect(prospect: Mapping[str, Any]) -> tuple[str, str, str | None, str]:
    """(subscriber_id, recipient, timezone, data as JSON) of a valid prospect.

    Raises:
        InvalidInputError: a missing or bad field.
    """
    subscriber_id = prospect.get("subscriber_id")
    recipient = prospect.get("recipient")
    timezone = prospect.get("recipient_timezone")
    if not isinstance(subscriber_id, str) or not isinstance(recipient, str):
        raise InvalidInputError("subscriber_id and recipient must be strings")
    if timezone is not None and not isinstance(timezone, str):
        raise InvalidInputError("recipient_timezone must be a string")
    check_nonempty("subscriber_id", subscriber_id)
    check_email("recipient", recipient)
    check_timezone("recipient_timezone", timezone)
    try:
        data_json = json.dumps(dict(prospect.get("data") or {}), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"data is not JSON-serializable: {exc}") from None
    try:
        validate_data_size(data_json)
        validate_identity(subscriber_id, recipient)
    except RecordError as exc:
        raise InvalidInputError(str(exc)) from None
    return subscriber_id, recipient, timezone, data_json


def validated(model: type[M], values: Mapping[str, Any]) -> M:
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or model.__name__
        raise InvalidInputError(
            f"invalid {where}: {first['msg']}"
            + (f" ({exc.error_count()} errors)" if exc.error_count() > 1 else "")
        ) from None


def check_known_provider(provider: str) -> None:
    """An adapter names a provider we ship, or it is refused now, not at its first send."""
    if provider not in PROVIDERS:
        raise InvalidInputError(
            f"unknown provider {provider[:40]!r}; one of {', '.join(sorted(PROVIDERS))}",
            code="unknown_provider",
        )


def check_no_inline_secret(config: Mapping[str, Any] | None) -> None:
    """Refuse a secret given as a value (SPEC §7): the message names the key and shows
    the reference form, never the value."""
    try:
        check_no_inline_secrets(config or {})
    except InlineSecretError as exc:
        raise InvalidInputError(str(exc), code="invalid_config") from None


def check_no_newline(name: str, value: str | None) -> None:
    if value is not None and has_line_break(value):
        raise InvalidInputError(
            f"{name} must not contain CR or LF (or another line break)", code="header_injection"
        )


def check_timezone(name: str, value: str | None) -> None:
    if value is None:
        return
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInputError(f"{name} {value!r} is not an IANA timezone") from None


def check_email(name: str, value: str) -> None:
    check_no_newline(name, value)
    if not is_email_address(value):
        raise InvalidInputError(f"{name} is not an email address")


def check_nonempty(name: str, value: str) -> None:
    if not value or not value.strip():
        raise InvalidInputError(f"{name} must not be empty")
