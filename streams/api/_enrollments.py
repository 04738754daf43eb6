"""Enrollment commands (enroll, pause, resume, unenroll, repin) and enrollment reads.

Commands are checked against PostgreSQL, then produced to ``enrollments`` and acknowledged;
the stream processor applies them. Enrollment ids are deterministic (``enrollment_id_for``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Connection

from dripdrop_core import enrollment as enrollment_machine
from dripdrop_core.errors import ConflictError
from dripdrop_core.models import EnrollmentState, HealthState, Mode
from dripdrop_core.models import Sequence as SequenceModel
from streams.api._context import Context
from streams.api._errors import InvalidInputError, NotPoolMemberError
from streams.api._models import Accepted, Enrollment
from streams.api._validation import checked_prospect
from streams.db import authoring as repo
from streams.kafka import Delivery, PublishError

ENROLLMENT_NAMESPACE = uuid.UUID("6f1d5c8e-2b7a-5d4e-9c3f-0a1b2c3d4e5f")
"""uuid5 namespace of enrollment ids; changing it would break idempotent re-enrollment."""

LIVE_STATES = enrollment_machine.LIVE


def enrollment_id_for(
    tenant_key: str, sequence_id: str, subscriber_id: str, generation: int = 0
) -> str:
    """Deterministic enrollment id: the same subscriber in the same sequence, the same id;
    a re-enrollment (``generation`` 1, 2, …; SPEC §7) has an id of its own."""
    name = f"{tenant_key}\x1f{sequence_id}\x1f{subscriber_id}"
    if generation:
        name += f"\x1f{generation}"
    return str(uuid.uuid5(ENROLLMENT_NAMESPACE, name))


def _enrollment_id(
    known: Mapping[str, str], tenant_key: str, sequence: SequenceModel, subscriber_id: str
) -> str:
    """The id an ``enroll`` of ``subscriber_id`` names, given the enrollments ``known``
    (id → state): the latest one's while it is live or re-enrollment is not allowed, else
    the next generation's (``dripdrop_core.enrollment.next_generation``)."""
    generation = 0
    while enrollment_id_for(tenant_key, sequence.id, subscriber_id, generation + 1) in known:
        generation += 1
    latest_id = enrollment_id_for(tenant_key, sequence.id, subscriber_id, generation)
    latest = known.get(latest_id)
    chosen = enrollment_machine.next_generation(
        None if latest is None else EnrollmentState(latest),
        generation,
        allow_reenrollment=sequence.allow_reenrollment,
    )
    return enrollment_id_for(tenant_key, sequence.id, subscriber_id, chosen)


def command_record(
    command: str, tenant_key: str, enrollment_id: str, **fields: Any
) -> dict[str, Any]:
    """One ``enrollments`` record (an ``EnrollmentCommand``) with a fresh event id."""
    return {
        "event_id": str(uuid.uuid4()),
        "tenant_key": tenant_key,
        "occurred_at": datetime.now(UTC),
        "command": command,
        "enrollment_id": enrollment_id,
        **fields,
    }


def accepted(record: Mapping[str, Any], delivery: Delivery) -> Accepted:
    return Accepted(
        command=str(record.get("command", "ingest")),
        tenant_key=record["tenant_key"],
        event_id=record["event_id"],
        enrollment_id=record.get("enrollment_id"),
        topic=delivery.topic,
        partition=delivery.partition,
        offset=delivery.offset,
    )


class EnrollmentCommands:
    """The enrollment calls of ``DripDrop``."""

    def __init__(self, context: Context) -> None:
        self._ctx = context

    def enroll(
        self,
        *,
        tenant_key: str,
        sequence_id: str,
        subscriber_id: str,
        recipient: str,
        data: Mapping[str, Any] | None,
        recipient_timezone: str | None,
        sequence_version_id: str | None,
    ) -> Accepted:
        prospect = {
            "subscriber_id": subscriber_id,
            "recipient": recipient,
            "data": data,
            "recipient_timezone": recipient_timezone,
        }
        [record] = self._enroll_records(tenant_key, sequence_id, sequence_version_id, [prospect])
        return accepted(record, self._ctx.produce("enrollments", tenant_key, record))

    def enroll_many(
        self,
        *,
        tenant_key: str,
        sequence_id: str,
        prospects: Iterable[Mapping[str, Any]],
        sequence_version_id: str | None,
    ) -> list[Accepted]:
        records = self._enroll_records(
            tenant_key, sequence_id, sequence_version_id, list(prospects)
        )
        topic = self._ctx.settings.topic("enrollments")
        codec = self._ctx.codecs.for_topic("enrollments")
        for record in records:
            self._ctx.publisher().produce(topic, key=tenant_key, value=codec.encode(record))
        deliveries = self._ctx.publisher().flush() if records else []
        if len(deliveries) != len(records):
            raise PublishError("not every enrollments record was acknowledged")
        # One key, one partition: the broker acknowledges them in the order produced.
        return [accepted(r, d) for r, d in zip(records, deliveries, strict=True)]

    def _enroll_records(
        self,
        tenant_key: str,
        sequence_id: str,
        sequence_version_id: str | None,
        prospects: list[Mapping[str, Any]],
    ) -> list[dict[str, Any]]:
        """Validate prospects and resolve the version once; the ``enroll`` commands."""
        checked: list[tuple[str, str, str | None, str]] = []
        for index, prospect in enumerate(prospects):
            where = f"prospect {index}: " if len(prospects) > 1 else ""
            try:
                checked.append(checked_prospect(prospect))
            except InvalidInputError as exc:
                raise InvalidInputError(f"{where}{exc}", code=exc.code) from None
        with self._ctx.engine.connect() as conn:
            sequence = repo.sequence_from_row(
                repo.load_owned(conn, "sequence", sequence_id, tenant_key)
            )
            if sequence_version_id is not None:
                version = repo.version_from_row(
                    repo.load_owned(conn, "sequence_version", sequence_version_id, tenant_key)
                )
                if version.sequence_id != sequence.id:
                    raise InvalidInputError(
                        f"sequence_version {version.id} is not a version of sequence {sequence.id}"
                    )
            else:
                current = repo.current_version(conn, sequence.id)
                if current is None:
                    raise ConflictError(f"sequence {sequence.id} has no active version")
                version = current
            known = repo.subscriber_enrollments(
                conn, tenant_key, sequence.id, [subscriber_id for subscriber_id, *_ in checked]
            )
        return [
            command_record(
                "enroll",
                tenant_key,
                _enrollment_id(known, tenant_key, sequence, subscriber_id),
                sequence_id=sequence.id,
                sequence_version_id=version.id,
                subscriber_id=subscriber_id,
                recipient=recipient.strip(),
                recipient_timezone=timezone,
                data=data_json,
            )
            for subscriber_id, recipient, timezone, data_json in checked
        ]

    def enrollment_command(
        self,
        command: Literal["pause", "resume", "unenroll"],
        enrollment_id: str,
        tenant_key: str,
        reason: str | None = None,
    ) -> Accepted:
        with self._ctx.engine.connect() as conn:
            enrollment = self._live_enrollment(conn, enrollment_id, tenant_key, command)
        record = command_record(command, tenant_key, enrollment.id, reason=reason)
        return accepted(record, self._ctx.produce("enrollments", tenant_key, record))

    def repin_enrollment(
        self, enrollment_id: str, *, tenant_key: str, new_adapter_id: str, reason: str | None
    ) -> Accepted:
        with self._ctx.engine.connect() as conn:
            enrollment = self._live_enrollment(conn, enrollment_id, tenant_key, "repin")
            adapter = repo.adapter_from_row(
                repo.load_owned(conn, "adapter", new_adapter_id, tenant_key)
            )
            version = repo.version_from_row(
                repo.load_owned(
                    conn, "sequence_version", enrollment.sequence_version_id, tenant_key
                )
            )
            if version.mode is not Mode.OUTBOUND or version.pool_id is None:
                raise ConflictError(f"enrollment {enrollment.id} is not outbound; nothing to repin")
            member = repo.find_member(conn, version.pool_id, adapter.id)
            if member is None or not member.active:
                raise NotPoolMemberError(
                    f"adapter {adapter.id} is not an active member of pool {version.pool_id}"
                )
            if not adapter.active:
                raise ConflictError(f"adapter {adapter.id} is inactive", code="adapter_inactive")
            if adapter.health_state is HealthState.RESTING:
                raise ConflictError(f"adapter {adapter.id} is resting", code="adapter_resting")
        record = command_record(
            "repin", tenant_key, enrollment.id, new_adapter_id=adapter.id, reason=reason
        )
        return accepted(record, self._ctx.produce("enrollments", tenant_key, record))

    def get_enrollment(self, enrollment_id: str, *, tenant_key: str) -> Enrollment:
        with self._ctx.engine.connect() as conn:
            row = repo.load_owned(conn, "enrollment", enrollment_id, tenant_key)
        m = repo.fields(row)
        return Enrollment(
            id=str(m["id"]),
            tenant_key=m["tenant_key"],
            sequence_id=str(m["sequence_id"]),
            sequence_version_id=str(m["sequence_version_id"]),
            subscriber_id=m["subscriber_id"],
            mode=m["mode"],
            adapter_id=None if m["adapter_id"] is None else str(m["adapter_id"]),
            state=m["state"],
            reason=m["reason"],
            recipient=m["recipient"],
            timezone=m["timezone"],
            data=dict(m["data"]),
            enrolled_at=m["enrolled_at"],
        )

    def _live_enrollment(
        self, conn: Connection, enrollment_id: str, tenant_key: str, command: str
    ) -> Enrollment:
        row = repo.load_owned(conn, "enrollment", enrollment_id, tenant_key)
        state = EnrollmentState(row.state)
        if state not in LIVE_STATES:
            raise ConflictError(f"enrollment {row.id} is {state}; cannot {command} it")
        return self.get_enrollment(str(row.id), tenant_key=tenant_key)
