"""Size limits of what travels as one Kafka record (1 MB per record by default), and the
one address rule of enrollment commands.

A value over the limit found only when it is produced fails late and again on every
retry; these checks refuse it where it enters: the API, the enrollment command, the
decided step.
"""

from __future__ import annotations

import json

from dripdrop_core.errors import MessageTooLargeError, RecordError

MAX_MESSAGE_BYTES = 512 * 1024
"""Rendered subject plus body as JSON strings (UTF-8, escapes counted: a body of quotes or
line breaks doubles). A send command is one record, and so is its claim on ``sink`` (JSON);
Gmail already clips bodies past ~102 KB."""

MAX_DATA_BYTES = 256 * 1024
"""An enrollment's ``data`` as JSON: it is stored in the enrollment's table value (one
changelog record) and rendered into every step."""


MAX_SUBSCRIBER_ID_CHARS = 255
MAX_RECIPIENT_CHARS = 320
"""Both are in unique indexes of ``enrollments``, and PostgreSQL refuses an index entry
past ~2.7 kB: a longer value would be refused at the sink, long after it was accepted."""


def is_email_address(value: str) -> bool:
    """Whether ``value`` (stripped) looks like ``local@domain.tld``: one rule for the API and
    the processor, so a command the API accepts is never dead-lettered for its address and
    one produced straight onto the topic meets the same bar. Line breaks are checked apart
    (``mail_threads.has_line_break``): they are header injection, not a bad address."""
    local, at, domain = value.strip().rpartition("@")
    return bool(at and local and "." in domain and " " not in value.strip())


def validate_identity(subscriber_id: str, recipient: str) -> None:
    """Refuse a subscriber id or recipient too long to be stored (see above).

    Raises:
        RecordError: ``invalid_recipient`` or ``input``, with the length.
    """
    if len(recipient) > MAX_RECIPIENT_CHARS:
        raise RecordError(
            f"recipient is {len(recipient)} characters; the limit is {MAX_RECIPIENT_CHARS}",
            code="invalid_recipient",
        )
    if len(subscriber_id) > MAX_SUBSCRIBER_ID_CHARS:
        raise RecordError(
            f"subscriber_id is {len(subscriber_id)} characters;"
            f" the limit is {MAX_SUBSCRIBER_ID_CHARS}",
            code="input",
        )


def validate_message_size(subject: str, body: str, html: str | None = None) -> None:
    """Refuse a message that could not travel as one record (subject, text and HTML body).

    Raises:
        MessageTooLargeError: With the size, never the content.
    """
    size = _json_bytes(subject) + _json_bytes(body) + _json_bytes(html or "")
    if size > MAX_MESSAGE_BYTES:
        raise MessageTooLargeError(
            f"rendered subject and bodies are {size} bytes as JSON;"
            f" the limit is {MAX_MESSAGE_BYTES}"
        )


def _json_bytes(text: str) -> int:
    return len(json.dumps(text, ensure_ascii=False).encode()) - 2  # without the quotes


def validate_data_size(data_json: str) -> None:
    """Refuse enrollment data whose JSON is over ``MAX_DATA_BYTES``.

    Raises:
        RecordError: ``data_too_large``, with the size.
    """
    size = len(data_json.encode())
    if size > MAX_DATA_BYTES:
        raise RecordError(
            f"enrollment data is {size} bytes as JSON; the limit is {MAX_DATA_BYTES}",
            code="data_too_large",
        )
