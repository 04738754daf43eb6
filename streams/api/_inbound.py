"""Inbound messages (SPEC §8): normalize one reply-side message and produce it to
``inbound-messages``; the processor correlates and classifies it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from dripdrop_core.correlation import Intent, normalize_message_id, split_references
from streams.api._context import Context
from streams.api._errors import InvalidInputError
from streams.api._models import Accepted, InboundMessage
from streams.api._validation import check_no_newline, validated
from streams.db import authoring as repo


class InboundIngest:
    """The ``ingest_inbound_message`` call of ``DripDrop``."""

    def __init__(self, context: Context) -> None:
        self._ctx = context

    def ingest_inbound_message(
        self, adapter_id: str, message: Mapping[str, Any] | InboundMessage, *, tenant_key: str
    ) -> Accepted:
        msg = message if isinstance(message, InboundMessage) else validated(InboundMessage, message)
        with self._ctx.engine.connect() as conn:
            adapter = repo.adapter_from_row(
                repo.load_owned(conn, "adapter", adapter_id, tenant_key)
            )
        message_id = normalize_message_id(msg.message_id)
        if message_id is None:
            raise InvalidInputError("message_id must not be empty", code="invalid_message_id")
        for name, value in (("message_id", message_id), ("in_reply_to", msg.in_reply_to)):
            check_no_newline(name, value)
        try:
            intent = Intent(msg.intent.strip().lower()) if msg.intent else None
        except ValueError:
            raise InvalidInputError(
                f"unknown intent {(msg.intent or '')[:40]!r};"
                f" one of {', '.join(i.value for i in Intent)}",
                code="unknown_intent",
            ) from None
        references: Sequence[str] = split_references(msg.references)
        record = {
            "event_id": str(uuid.uuid4()),
            "tenant_key": tenant_key,
            "occurred_at": datetime.now(UTC),
            "adapter_id": adapter.id,
            "message_id": message_id,
            "in_reply_to": normalize_message_id(msg.in_reply_to),
            "references": list(references),
            "from": msg.from_,
            "to": msg.to,
            "subject": msg.subject,
            "body_text": msg.body_text,
            "body_html": msg.body_html,
            "headers": {k.lower(): v for k, v in msg.headers.items()},
            "received_at": msg.received_at or datetime.now(UTC),
            "intent": intent.value if intent else "",
            "intent_data": dict(msg.intent_data),
        }
        delivery = self._ctx.produce("inbound-messages", tenant_key, record)
        return Accepted(
            command="ingest",
            tenant_key=tenant_key,
            event_id=record["event_id"],
            topic=delivery.topic,
            partition=delivery.partition,
            offset=delivery.offset,
        )
