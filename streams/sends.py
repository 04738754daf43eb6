"""Ambiguous sends: list them and settle one (``dripdrop sends``; SPEC §4, §7, issue 11).

A send is ``ambiguous`` when its hand-off to the provider started and its outcome is
unknown (the worker died mid-send, the connection broke during ``DATA``). The ledger never
resends it by itself and the processor holds its enrollment (``holds_enrollment``), so
only an operator, who can look at the mailbox's Sent folder or the provider's logs, can
say what happened:

* **sent** — the row becomes ``sent`` and a ``dispatch-results`` record with status
  ``sent`` is published: the processor threads the next step under it and goes on;
* **not sent** — the row goes back to ``intent`` and its stored command (same
  step execution, same Message-ID, same body) is published on ``dispatch`` again, so the
  sender delivers it exactly once (its claim only takes ``intent`` rows). This happens
  once per row: a row resolved ``not_sent`` whose re-issue ends ``ambiguous`` again can
  only be resolved ``sent`` (or the enrollment stopped).

Ordering, so a crash or a broker error at any point leaves something a re-run finishes:
``--sent`` publishes the result while it holds the row lock and commits after the broker
acknowledged it (a failed commit leaves the row ambiguous; the re-run's duplicate result is
ignored by the processor); ``--not-sent`` commits ``intent`` first and publishes after (the
sender must find ``intent`` when the command arrives); a re-run while the row still waits
in ``intent`` publishes the command again, which the ledger sends at most once (the pump's
Sent-folder check does that by itself for re-issues still waiting after its grace period).

Tenant isolation: another tenant's id is ``NotFoundError``, exactly like an unknown one
(the row's existence is not revealed).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import Connection, Engine, text

from dripdrop_core.errors import ConflictError, NotFoundError
from streams import crashpoints
from streams.codecs import Codecs
from streams.kafka import Delivery, Publisher, PublishError
from streams.settings import Settings

Resolution = Literal["sent", "not_sent"]
ResolvedBy = Literal["operator", "sent_folder"]


class NotAmbiguousError(ConflictError):
    """The send is not ``ambiguous`` (sent, failed, waiting, or already resolved)."""

    code = "not_ambiguous"


class AlreadyReissuedError(ConflictError):
    """The send was re-issued once already (``--not-sent``); it is never re-issued twice."""

    code = "already_reissued"


class AmbiguousSend(BaseModel):
    """One ambiguous send, as ``dripdrop sends ambiguous`` lists it."""

    step_execution_id: str
    tenant_key: str
    enrollment_id: str
    adapter_id: str | None
    recipient: str | None
    step_id: str
    step_key: str
    message_id: str | None
    error: str | None
    since: datetime
    """When it became ambiguous (the ledger row's last change)."""
    reissued: bool
    """Resolved ``not_sent`` once already and ambiguous again: only ``--sent`` is left."""


class SendResolution(BaseModel):
    """What ``resolve_ambiguous_send`` did."""

    step_execution_id: str
    tenant_key: str
    enrollment_id: str
    resolution: Resolution
    status: str
    """The ledger row's status afterwards: ``sent``, or ``intent`` for the re-issue."""
    message_id: str | None
    topic: str
    partition: int
    offset: int


_LIST = """
SELECT se.id::text, se.tenant_key, se.enrollment_id::text, se.adapter_id::text, se.recipient,
       se.step_id::text, s.key, se.out_message_id, se.error, se.updated_at,
       coalesce(se.resolution = 'not_sent', false)
FROM dripdrop.step_executions se
JOIN dripdrop.steps s ON s.tenant_key = se.tenant_key AND s.id = se.step_id
WHERE se.status = 'ambiguous' AND (CAST(:tenant AS text) IS NULL OR se.tenant_key = :tenant)
  AND (CAST(:adapter AS text) IS NULL OR se.adapter_id::text = :adapter)
ORDER BY se.tenant_key, se.updated_at, se.id
LIMIT :limit
"""

_LOCK = """
SELECT se.id::text, se.tenant_key, se.enrollment_id::text, se.adapter_id::text, se.attempt,
       se.status, se.resolution, se.out_message_id, se.payload, e.state
FROM dripdrop.step_executions se
JOIN dripdrop.enrollments e ON e.tenant_key = se.tenant_key AND e.id = se.enrollment_id
WHERE se.id = CAST(:id AS uuid)
FOR UPDATE OF se
"""

_WAITING = """
SELECT se.id::text, se.tenant_key
FROM dripdrop.step_executions se
WHERE se.status = 'intent' AND se.resolution = 'not_sent' AND se.adapter_id::text = :adapter
  AND se.resolved_at < :before
ORDER BY se.resolved_at, se.id
LIMIT :limit
"""

_REISSUED_AGAIN = """
UPDATE dripdrop.step_executions SET resolved_at = :at
WHERE id = CAST(:id AS uuid) AND status = 'intent'
"""

_MARK_SENT = """
UPDATE dripdrop.step_executions
SET status = 'sent', sent_at = :at, resolution = 'sent', resolved_at = :at, updated_at = now()
WHERE id = CAST(:id AS uuid) AND status = 'ambiguous'
"""

_REISSUE = """
UPDATE dripdrop.step_executions
SET status = 'intent', error = NULL, resolution = 'not_sent', resolved_at = :at,
    updated_at = now()
WHERE id = CAST(:id AS uuid) AND status = 'ambiguous'
"""


def list_ambiguous_sends(
    engine: Engine,
    *,
    tenant_key: str | None = None,
    adapter_id: str | None = None,
    limit: int = 1000,
) -> list[AmbiguousSend]:
    """Ambiguous sends of ``tenant_key`` (every tenant when ``None``), oldest first; only
    ``adapter_id``'s when given (the pump's Sent-folder check)."""
    params = {"tenant": tenant_key, "adapter": adapter_id, "limit": limit}
    with engine.connect() as conn:
        rows = conn.execute(text(_LIST), params).all()
    return [
        AmbiguousSend(
            step_execution_id=r[0],
            tenant_key=r[1],
            enrollment_id=r[2],
            adapter_id=r[3],
            recipient=r[4],
            step_id=r[5],
            step_key=r[6],
            message_id=r[7],
            error=r[8],
            since=r[9],
            reissued=bool(r[10]),
        )
        for r in rows
    ]


def waiting_reissues(
    engine: Engine, *, adapter_id: str, before: datetime, limit: int = 100
) -> list[tuple[str, str]]:
    """``(id, tenant_key)`` of ``adapter_id``'s re-issues (resolved ``not_sent``) still
    ``intent`` since before ``before``: their command may never have reached the broker
    (a crash between the commit and the publish), so it is published again."""
    params = {"adapter": adapter_id, "before": before, "limit": limit}
    with engine.connect() as conn:
        return [(r[0], r[1]) for r in conn.execute(text(_WAITING), params).all()]


class Resolver:
    """Settles one ambiguous send; see the module docstring for the order of writes."""

    def __init__(
        self,
        engine: Engine,
        publisher: Callable[[], Publisher],
        codecs: Codecs,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._publisher = publisher
        self._codecs = codecs
        self._settings = settings
        self._clock = clock

    def resolve(
        self,
        step_execution_id: str,
        *,
        tenant_key: str,
        resolution: Resolution,
        by: ResolvedBy = "operator",
    ) -> SendResolution:
        """Settle ``step_execution_id`` as ``sent`` or ``not_sent``; ``by`` goes into the
        ``send.resolved`` telemetry (an operator, or the pump's Sent-folder check).

        Raises:
            NotFoundError: no such send in ``tenant_key`` (unknown, or another tenant's).
            NotAmbiguousError: the send is not ambiguous.
            AlreadyReissuedError: ``not_sent`` on a send re-issued once already.
            ConflictError: ``not_sent`` while the enrollment is not active (the re-issue
                would be cancelled, not sent: resume it first).
            PublishError: the broker did not acknowledge; nothing was settled (re-run).
        """
        try:
            uuid.UUID(step_execution_id)
        except ValueError:
            raise NotFoundError(f"send {step_execution_id[:64]!r} not found") from None
        at = self._clock()
        with self._engine.connect() as conn:  # one transaction; rolled back on any error
            row = conn.execute(text(_LOCK), {"id": step_execution_id}).one_or_none()
            if row is None or row.tenant_key != tenant_key:
                raise NotFoundError(f"send {step_execution_id} not found")
            if resolution == "sent":
                return self._sent(conn, row, at, by)
            return self._not_sent(conn, row, at, by)

    def _sent(self, conn: Connection, row: Any, at: datetime, by: ResolvedBy) -> SendResolution:
        if row.status != "ambiguous":
            raise NotAmbiguousError(f"send {row.id} is {row.status}, not ambiguous")
        result = {
            "event_id": f"{row.id}:resolved",
            "tenant_key": row.tenant_key,
            "step_execution_id": row.id,
            "enrollment_id": row.enrollment_id,
            "adapter_id": row.adapter_id,
            "attempt": row.attempt,
            "status": "sent",
            "provider_message_id": None,
            "error": None,
            "finished_at": at,
        }
        delivery = self._publish("dispatch-results", row, result, "sent", by)
        crashpoints.reached("sends.sent_published")
        conn.execute(text(_MARK_SENT), {"id": row.id, "at": at})
        conn.commit()  # after the broker's ack, still under the row lock
        return self._resolution(row, "sent", "sent", delivery)

    def _not_sent(self, conn: Connection, row: Any, at: datetime, by: ResolvedBy) -> SendResolution:
        waiting = row.status == "intent" and row.resolution == "not_sent"
        if not waiting:
            if row.status != "ambiguous":
                raise NotAmbiguousError(f"send {row.id} is {row.status}, not ambiguous")
            if row.resolution == "not_sent":
                raise AlreadyReissuedError(
                    f"send {row.id} was re-issued once already and is ambiguous again;"
                    " resolve it --sent, or stop the enrollment"
                )
            if row.state != "active":
                raise ConflictError(
                    f"enrollment {row.enrollment_id} is {row.state}: a re-issue would not be"
                    " sent" + ("; resume it first" if row.state == "paused" else "")
                )
            conn.execute(text(_REISSUE), {"id": row.id, "at": at})
        else:
            conn.execute(text(_REISSUED_AGAIN), {"id": row.id, "at": at})
        conn.commit()  # ``intent`` first: the sender must find it when the command comes
        crashpoints.reached("sends.reissue_committed")
        command = dict(row.payload)
        decided = command.get("decided_at")
        if isinstance(decided, str):
            command["decided_at"] = datetime.fromisoformat(decided)
        command["not_before"] = None  # re-issued now, by an operator
        delivery = self._publish("dispatch", row, command, "not_sent", by)
        return self._resolution(row, "not_sent", "intent", delivery)

    def _publish(
        self,
        topic: str,
        row: Any,
        record: dict[str, Any],
        resolution: Resolution,
        by: ResolvedBy,
    ) -> Delivery:
        """The record, then ``send.resolved`` telemetry; both acknowledged, or PublishError."""
        publisher = self._publisher()
        publisher.produce(
            self._settings.topic(topic),
            key=row.tenant_key,
            value=self._codecs.for_topic(topic).encode(record),
        )
        attributes = {
            "step_execution_id": row.id,
            "enrollment_id": row.enrollment_id,
            "adapter_id": row.adapter_id,
            "out_message_id": row.out_message_id,
            "resolution": resolution,
            "by": by,
        }
        telemetry = {
            "event_id": str(uuid.uuid4()),
            "name": "send.resolved",
            "tenant_key": row.tenant_key,
            "at": self._clock(),
            "attributes": json.dumps(attributes, sort_keys=True),
        }
        publisher.produce(
            self._settings.topic("telemetry"),
            key=row.tenant_key,
            value=self._codecs.for_topic("telemetry").encode(telemetry),
        )
        name = self._settings.topic(topic)
        deliveries = [d for d in publisher.flush() if d.topic == name]
        if not deliveries:
            raise PublishError(f"no delivery report for the {topic} record")
        return deliveries[-1]

    @staticmethod
    def _resolution(
        row: Any, resolution: Resolution, status: str, delivery: Delivery
    ) -> SendResolution:
        return SendResolution(
            step_execution_id=row.id,
            tenant_key=row.tenant_key,
            enrollment_id=row.enrollment_id,
            resolution=resolution,
            status=status,
            message_id=row.out_message_id,
            topic=delivery.topic,
            partition=delivery.partition,
            offset=delivery.offset,
        )
