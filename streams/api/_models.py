"""The API's typed results and its inbound-message input (pydantic, frozen).

The entities themselves (``Adapter``, ``Pool``, ``Step``…) are ``dripdrop_core.models``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dripdrop_core.models import Adapter, EnrollmentState, Mode, Pool, PoolMember


class Accepted(BaseModel):
    """A command the broker acknowledged; the stream processor applies it."""

    model_config = ConfigDict(frozen=True)

    command: str
    tenant_key: str
    event_id: str
    enrollment_id: str | None = None
    topic: str
    partition: int
    offset: int


class Enrollment(BaseModel):
    """An enrollment row as the stream processor recorded it."""

    model_config = ConfigDict(frozen=True)

    id: str
    tenant_key: str
    sequence_id: str
    sequence_version_id: str
    subscriber_id: str
    mode: Mode
    adapter_id: str | None
    state: EnrollmentState
    reason: str | None
    recipient: str
    timezone: str | None
    data: dict[str, Any]
    enrolled_at: datetime


class PoolView(BaseModel):
    """A pool with its members and validation warnings (``mixed_classes``)."""

    model_config = ConfigDict(frozen=True)

    pool: Pool
    members: list[PoolMember]
    adapters: list[Adapter]
    warnings: list[str]


class InboundMessage(BaseModel):
    """The message shape of SPEC §8 (the seed's ``ingest_inbound_message`` map)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    message_id: str
    in_reply_to: str | None = None
    references: list[str] | str | None = None
    from_: str = Field(alias="from")
    to: str
    subject: str | None = None
    body_text: str | None = None
    body_html: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    received_at: datetime | None = None
    intent: str | None = None
    """``None``: the processor classifies the message (SPEC §8), it is not taken as a reply."""
    intent_data: dict[str, str] = Field(default_factory=dict)
