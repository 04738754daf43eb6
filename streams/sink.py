"""The PostgreSQL sink: one transaction per batch of row operations from the processor.

Rows are idempotent upserts keyed by deterministic ids, so a replayed batch changes nothing.
Send claims go through ``dripdrop.claim_send`` (migration 0002), the final guard of caps,
gaps and "never twice": it counts per (adapter, local day) under a row lock, so even two
workers that both believe they own a partition cannot push an adapter over its cap.
Only claims PostgreSQL granted become send commands on ``dispatch``.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from dripdrop_core.correlation import normalize_message_id
from streams.processor.runtime import stable_id

ORDER = {"enrollment": 0, "claim": 1, "event": 2, "suppression": 3, "health": 4}

UPSERT_ENROLLMENT = """
INSERT INTO dripdrop.enrollments AS e (id, tenant_key, sequence_id, sequence_version_id,
    subscriber_id, mode, adapter_id, state, reason, recipient, timezone, data, enrolled_at,
    finished_at, version)
VALUES (%(id)s, %(tenant_key)s, %(sequence_id)s, %(sequence_version_id)s, %(subscriber_id)s,
    %(mode)s, %(adapter_id)s, %(state)s, %(reason)s, %(recipient)s, %(timezone)s, %(data)s,
    %(enrolled_at)s, %(finished_at)s, %(version)s)
ON CONFLICT (id) DO UPDATE SET adapter_id = EXCLUDED.adapter_id, state = EXCLUDED.state,
    reason = EXCLUDED.reason, finished_at = EXCLUDED.finished_at, version = EXCLUDED.version,
    updated_at = now()
WHERE e.version < EXCLUDED.version
"""

CLAIM = """
SELECT status, sent, last_sent_at FROM dripdrop.claim_send(
    %(id)s, %(tenant_key)s, %(enrollment_id)s, %(step_id)s, %(attempt)s, %(adapter_id)s,
    %(recipient)s, %(out_message_id)s, %(payload)s, %(day)s, %(cap)s, %(gap)s, %(at)s)
"""

INSERT_EVENT = """
INSERT INTO dripdrop.message_events (id, tenant_key, event_type, adapter_id, enrollment_id,
    step_execution_id, message_id, in_reply_to, data, occurred_at)
VALUES (%(id)s, %(tenant_key)s, %(event_type)s, %(adapter_id)s, %(enrollment_id)s,
    %(step_execution_id)s, %(message_id)s, %(in_reply_to)s, %(data)s, %(occurred_at)s)
ON CONFLICT (id) DO NOTHING
RETURNING id
"""

INSERT_SUPPRESSION = """
INSERT INTO dripdrop.suppressions (id, tenant_key, channel, recipient, recipient_normalized,
    reason, source)
VALUES (%(id)s, %(tenant_key)s, 'email', %(recipient)s, %(normalized)s, %(reason)s, %(source)s)
ON CONFLICT DO NOTHING
"""

DELETE_SUPPRESSION = """
DELETE FROM dripdrop.suppressions
WHERE tenant_key = %(tenant_key)s AND channel = 'email' AND recipient_normalized = %(normalized)s
"""

UPDATE_HEALTH = """
UPDATE dripdrop.channel_adapters SET health_state = %(health_state)s,
    resting_until = %(resting_until)s, health_score = %(health_score)s,
    ramp_started_at = coalesce(%(ramp_started_at)s, ramp_started_at), updated_at = now()
WHERE id = %(adapter_id)s AND tenant_key = %(tenant_key)s
"""

INSERT_TRANSITION = """
INSERT INTO dripdrop.adapter_health_transitions (id, tenant_key, adapter_id, from_state,
    to_state, reason, source, health_score, resting_until, at)
VALUES (%(id)s, %(tenant_key)s, %(adapter_id)s, %(from_state)s, %(to_state)s, %(reason)s,
    %(source)s, %(score)s, %(resting_until)s, %(at)s)
ON CONFLICT (id) DO NOTHING
"""


REFUSED_SQLSTATE_CLASSES = ("22", "23", "54")
"""Data exception, integrity violation, program limit exceeded: the rows are wrong, and
writing them again fails again."""


def is_transient(exc: psycopg.Error) -> bool:
    """Whether ``exc`` says the database was unavailable rather than the rows wrong.

    By SQLSTATE, not by exception class: psycopg files ``ProgramLimitExceeded`` (an index
    row too large: permanent) under ``OperationalError`` and ``ReadOnlySqlTransaction`` (a
    failover: transient) under ``InternalError``. No SQLSTATE means no answer from the
    server (connection refused or lost, pool timeout). Everything else that is not the
    rows' fault (a failover, a migration not yet applied, permissions, resources) heals
    without touching the records, so it is waited out rather than dead-lettered.
    """
    state = exc.sqlstate
    return state is None or state[:2] not in REFUSED_SQLSTATE_CLASSES


class SinkDatabaseError(Exception):
    """The batch could not be written; it is safe to retry (every statement is idempotent).

    ``transient``: the database could not be reached or asked for a retry (connection,
    pool, serialization): the same batch will succeed later. Otherwise an operation in the
    batch is wrong (bad data, a malformed operation) and will fail every time.
    """

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass
class SinkResult:
    """What a committed batch means for Kafka: commands to send, claims refused, events."""

    commands: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


class PostgresSink:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def write(self, ops: Sequence[dict[str, Any]]) -> SinkResult:
        """Write ``ops`` in one transaction, in dependency order (enrollments first)."""
        result = SinkResult()
        try:
            ordered = sorted(ops, key=lambda op: ORDER[op["op"]])
            async with self.pool.connection() as conn, conn.transaction():
                async with conn.cursor() as cur:
                    await self._enrollments(
                        cur, [o["row"] for o in ordered if o["op"] == "enrollment"]
                    )
                    await self._claims(cur, [o for o in ordered if o["op"] == "claim"], result)
                    await self._events(
                        cur, [o["row"] for o in ordered if o["op"] == "event"], result
                    )
                    await self._suppressions(
                        cur, [o["row"] for o in ordered if o["op"] == "suppression"]
                    )
                    await self._health(cur, [o for o in ordered if o["op"] == "health"])
        except psycopg.Error as exc:
            transient = is_transient(exc)
            verb = "failed" if transient else "refused"
            raise SinkDatabaseError(
                f"sink batch of {len(ops)} {verb}: {exc}", transient=transient
            ) from exc
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SinkDatabaseError(
                f"malformed row operation in a batch of {len(ops)}: {type(exc).__name__}: {exc}",
                transient=False,
            ) from exc
        return result

    async def _enrollments(self, cur: psycopg.AsyncCursor[Any], rows: list[dict[str, Any]]) -> None:
        if rows:
            await cur.executemany(
                UPSERT_ENROLLMENT, [{**r, "data": Jsonb(r["data"])} for r in rows]
            )

    async def _claims(
        self, cur: psycopg.AsyncCursor[Any], ops: list[dict[str, Any]], result: SinkResult
    ) -> None:
        if not ops:
            return
        params = [claim_params(op) for op in ops]
        await cur.executemany(CLAIM, params, returning=True)
        replayed: list[dict[str, Any]] = []
        for op in ops:
            status, sent, last = await cur.fetchone()  # type: ignore[misc]
            command = op["command"]
            if status == "granted":
                result.commands.append(command)
            elif status in ("pending", "duplicate"):
                replayed.append({**op, "pg_sent": sent or 0, "pg_last": last})
            else:
                result.refused.append(
                    {
                        "enrollment_id": command["enrollment_id"],
                        "step_execution_id": command["step_execution_id"],
                        "adapter_id": command["adapter_id"],
                        "tenant_key": command["tenant_key"],
                        "reason": status,
                        "sent": sent or 0,
                        "day": op["guard"]["day"],
                        "last_sent_at": last.isoformat() if last else None,
                    }
                )
            cur.nextset()
        if replayed:
            await self._replayed(cur, replayed, result)

    async def _replayed(
        self, cur: psycopg.AsyncCursor[Any], ops: list[dict[str, Any]], result: SinkResult
    ) -> None:
        """Claims whose step execution exists already (a replay after a crash).

        The stored command is the truth: its ``Message-ID`` may already be on the wire, and a
        re-decided command carries a new one. It is published again (the sender sends it only
        if it is still ``intent``, else re-reports the finished outcome, so the processor can
        advance), and the processor is told the stored ``Message-ID`` to thread with.
        """
        await cur.execute(
            "SELECT id::text, payload FROM dripdrop.step_executions WHERE id = ANY(%s::uuid[])",
            ([op["command"]["step_execution_id"] for op in ops],),
        )
        stored = {row[0]: row[1] for row in await cur.fetchall()}
        for op in ops:
            command = op["command"]
            original = stored.get(command["step_execution_id"]) or command
            # The mail is the stored one; its hand-off time is the new decision's: a redrive
            # after an outage re-issues with a fresh slot one gap after the adapter's last
            # (pacing.reserve_handoff), not the stale one that would go out at once.
            result.commands.append({**original, "not_before": command.get("not_before")})
            result.refused.append(
                {
                    "enrollment_id": command["enrollment_id"],
                    "step_execution_id": command["step_execution_id"],
                    "adapter_id": original["adapter_id"],
                    "tenant_key": command["tenant_key"],
                    "reason": "replayed",
                    "message_id": original["headers"]["Message-ID"],
                    # PostgreSQL's count for the day: a replay may have counted the send
                    # twice in the processor's table; the processor resyncs to this.
                    "sent": op.get("pg_sent", 0),
                    "day": op["guard"]["day"],
                    "last_sent_at": op["pg_last"].isoformat() if op.get("pg_last") else None,
                }
            )

    async def _events(
        self, cur: psycopg.AsyncCursor[Any], rows: list[dict[str, Any]], result: SinkResult
    ) -> None:
        if not rows:
            return
        params = [
            {
                "message_id": None,
                "in_reply_to": None,
                "step_execution_id": None,
                **r,
                "data": Jsonb(r.get("data") or {}),
            }
            for r in rows
        ]
        await cur.executemany(INSERT_EVENT, params, returning=True)
        for row in rows:
            if await cur.fetchone() is not None:
                result.events.append(row)
            cur.nextset()

    async def _suppressions(
        self, cur: psycopg.AsyncCursor[Any], rows: list[dict[str, Any]]
    ) -> None:
        """Additions and removals (``removed``) in their order: runs of one kind at a time,
        so an entry added, removed and added again within one batch ends up present."""
        for removed, run in itertools.groupby(rows, key=lambda r: bool(r.get("removed"))):
            params = [
                {
                    "source": "stream",
                    **r,
                    "normalized": r["recipient"].strip().lower(),
                    "id": stable_id("suppression", r["tenant_key"], r["recipient"].strip().lower()),
                }
                for r in run
            ]
            await cur.executemany(DELETE_SUPPRESSION if removed else INSERT_SUPPRESSION, params)

    async def _health(self, cur: psycopg.AsyncCursor[Any], ops: list[dict[str, Any]]) -> None:
        for op in ops:
            state, t = op["state"], op["transition"]
            await cur.execute(
                UPDATE_HEALTH,
                {
                    "adapter_id": op["adapter_id"],
                    "tenant_key": op["tenant_key"],
                    "health_state": state.get("health_state"),
                    "resting_until": state.get("resting_until"),
                    "health_score": state.get("health_score"),
                    "ramp_started_at": state.get("ramp_started_at"),
                },
            )
            await cur.execute(
                INSERT_TRANSITION,
                {
                    "id": stable_id(
                        "health", op["adapter_id"], t["at"], str(t["to_state"]), t["reason"]
                    ),
                    "tenant_key": op["tenant_key"],
                    "adapter_id": op["adapter_id"],
                    "from_state": t.get("from_state"),
                    "to_state": t.get("to_state"),
                    "reason": t["reason"],
                    "source": t["source"],
                    "score": t.get("score"),
                    "resting_until": t.get("resting_until"),
                    "at": t["at"],
                },
            )


def claim_params(op: dict[str, Any]) -> dict[str, Any]:
    command, guard = op["command"], op["guard"]
    decided_at = command["decided_at"]
    payload = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in command.items()}
    return {
        "id": command["step_execution_id"],
        "tenant_key": command["tenant_key"],
        "enrollment_id": command["enrollment_id"],
        "step_id": command["step_id"],
        "attempt": command["attempt"],
        "adapter_id": command["adapter_id"],
        "recipient": command["recipient"],
        # Stored the way inbound ids are matched: without angle brackets (SPEC §8); the
        # payload keeps the wire form.
        "out_message_id": normalize_message_id(command["headers"]["Message-ID"]),
        "payload": Jsonb(payload),
        "day": guard["day"],
        "cap": guard["cap"],
        "gap": guard["gap_seconds"],
        "at": decided_at if isinstance(decided_at, datetime) else guard["at"],
    }


def json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def dumps(value: Any) -> bytes:
    return json.dumps(value, default=json_default, separators=(",", ":")).encode()
