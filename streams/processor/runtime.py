"""Runtime records of the processor (table values) and the outputs one event produces.

``EnrollmentRuntime`` is the live state of one enrollment in the ``enrollments`` table;
``Outputs`` collects what the agent must publish after the event: rows for the PostgreSQL
sink, telemetry, dead letters, and rows that must be committed before the event is acked.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, Field

from dripdrop_core.mail_threads import ThreadState
from dripdrop_core.models import EnrollmentState, Frozen, Mode

NAMESPACE = uuid.UUID("6f1c2b1e-4a8d-5e0b-9c33-d41f0a7e2b58")

Status = Literal["scheduled", "dispatching", "held", "done"]


_NAMESPACE_BYTES = NAMESPACE.bytes


def stable_id(*parts: str) -> str:
    """Deterministic id of a side effect, so replays upsert instead of duplicating.

    Exactly ``str(uuid.uuid5(NAMESPACE, ":".join(parts)))`` (a unit test holds it to
    that), without building a ``UUID`` object: it runs several times per send.
    """
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + ":".join(parts).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class PendingSend(Frozen):
    """The step execution whose send command is out, waiting for its result."""

    step_execution_id: str
    step_id: str
    adapter_id: str
    message_id: str
    is_override: bool
    decided_at: AwareDatetime
    first_of_pin: bool = False
    retries: int = 0
    """Consecutive ``retry`` outcomes (the provider took nothing): the back-off doubles."""
    ambiguous: bool = False
    """Its outcome came back ``ambiguous``: the enrollment holds (no redrive, no next step)
    until a resolution's result (``dripdrop sends resolve``) arrives for the same id."""


class LastDecision(Frozen):
    """Why the next step has not gone out yet (for ``enrollment explain``)."""

    kind: str
    reason: str
    until: AwareDatetime | None = None
    text: str = ""
    at: AwareDatetime


class EnrollmentRuntime(Frozen):
    id: str
    tenant_key: str
    sequence_id: str
    version_id: str
    mode: Mode
    pool_id: str | None = None
    subscriber_id: str
    recipient: str
    recipient_timezone: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    state: EnrollmentState = EnrollmentState.ACTIVE
    reason: str | None = None
    adapter_id: str | None = None
    enrolled_at: AwareDatetime
    finished_at: AwareDatetime | None = None
    step_index: int = 0
    status: Status = "scheduled"
    due_at: AwareDatetime | None = None
    attempt: int = 0
    thread: ThreadState = ThreadState()
    last_sent_at: AwareDatetime | None = None
    pending: PendingSend | None = None
    last_decision: LastDecision | None = None
    version: int = 0


@dataclass
class Outputs:
    """Everything one input event produces, in order."""

    sink: list[dict[str, Any]] = field(default_factory=list)
    urgent: list[dict[str, Any]] = field(default_factory=list)
    telemetry: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[tuple[str, str]] = field(default_factory=list)

    def emit(self, name: str, tenant_key: str, at: datetime, **attributes: Any) -> None:
        self.telemetry.append(
            {"name": name, "tenant_key": tenant_key, "at": at, "attributes": attributes}
        )

    def extend(self, other: Outputs) -> None:
        """Append another event's outputs (a tick and its sweep publish together)."""
        self.sink.extend(other.sink)
        self.urgent.extend(other.urgent)
        self.telemetry.extend(other.telemetry)
        self.dead_letters.extend(other.dead_letters)

    def reject(self, reason: str, detail: str) -> None:
        self.dead_letters.append((reason, detail))
