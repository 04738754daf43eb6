"""Builders for send-ledger rows in a fresh tenant, straight in SQL (tests and benchmarks).

Inserts the minimal chain the foreign keys ask for: adapter, sequence, version, step,
then per command an enrollment and its ``intent`` step execution, and returns the
``dispatch`` command the stream sink would have published for it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb


def _bare(message_id: str | None) -> str | None:
    """``out_message_id`` is stored without angle brackets (SPEC §8), as the sink stores it."""
    return message_id.strip().strip("<>") if message_id else None


class LedgerTenant:
    """One tenant with one adapter and a one-step sequence, on a sync psycopg connection."""

    def __init__(
        self,
        database_url: str,
        *,
        provider: str = "smtp",
        config: Mapping[str, Any] | None = None,
        from_address: str = "sender@dripdrop.test",
    ) -> None:
        self.database_url = database_url
        self.tenant_key = f"t-{uuid.uuid4().hex[:12]}"
        self.adapter_id = str(uuid.uuid4())
        self.sequence_id = str(uuid.uuid4())
        self.version_id = str(uuid.uuid4())
        self.step_id = str(uuid.uuid4())
        self.from_address = from_address
        with self.connect() as conn:
            conn.execute(
                "INSERT INTO dripdrop.channel_adapters"
                " (id, tenant_key, name, provider, from_address, config)"
                " VALUES (%s, %s, 'mailbox-1', %s, %s, %s)",
                (self.adapter_id, self.tenant_key, provider, from_address, Jsonb(config or {})),
            )
            conn.execute(
                "INSERT INTO dripdrop.sequences (id, tenant_key, key, name)"
                " VALUES (%s, %s, 'seq', 'Sequence')",
                (self.sequence_id, self.tenant_key),
            )
            conn.execute(
                "INSERT INTO dripdrop.sequence_versions (id, tenant_key, sequence_id, version)"
                " VALUES (%s, %s, %s, 1)",
                (self.version_id, self.tenant_key, self.sequence_id),
            )
            conn.execute(
                "INSERT INTO dripdrop.steps (id, tenant_key, version_id, key, position)"
                " VALUES (%s, %s, %s, 'first', 0)",
                (self.step_id, self.tenant_key, self.version_id),
            )

    def connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(self.database_url, autocommit=True)

    def commands(self, count: int, **overrides: Any) -> list[dict[str, Any]]:
        """Insert ``count`` enrollments + intent rows; return their dispatch commands."""
        commands = [self._command(index, **overrides) for index in range(count)]
        enrollments = [
            (c["enrollment_id"], self.tenant_key, self.sequence_id, self.version_id,
             f"sub-{c['enrollment_id']}", c["recipient"])
            for c in commands
        ]  # fmt: skip
        executions = [
            (c["step_execution_id"], self.tenant_key, c["enrollment_id"], self.step_id,
             self.adapter_id, c["recipient"], _bare(c["headers"].get("Message-ID")),
             Jsonb(_payload(c)))
            for c in commands
        ]  # fmt: skip
        with self.connect() as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO dripdrop.enrollments (id, tenant_key, sequence_id,"
                " sequence_version_id, subscriber_id, recipient) VALUES (%s, %s, %s, %s, %s, %s)",
                enrollments,
            )
            cur.executemany(
                "INSERT INTO dripdrop.step_executions (id, tenant_key, enrollment_id, step_id,"
                " attempt, adapter_id, status, recipient, out_message_id, payload)"
                " VALUES (%s, %s, %s, %s, 1, %s, 'intent', %s, %s, %s)",
                executions,
            )
        return commands

    def command(self, **overrides: Any) -> dict[str, Any]:
        """Insert one enrollment + intent row; return its dispatch command."""
        return self.commands(1, **overrides)[0]

    def _command(self, index: int, **overrides: Any) -> dict[str, Any]:
        execution_id = str(uuid.uuid4())
        command: dict[str, Any] = {
            "event_id": f"{execution_id}:1",
            "tenant_key": self.tenant_key,
            "step_execution_id": execution_id,
            "enrollment_id": str(uuid.uuid4()),
            "step_id": self.step_id,
            "adapter_id": self.adapter_id,
            "channel": "email",
            "recipient": f"prospect-{index}-{execution_id[:8]}@example.test",
            "from_address": self.from_address,
            "subject": f"Hello {index}",
            "body_text": "Hi there,\nthis is step one.\n",
            "body_html": None,
            "headers": {"Message-ID": f"<{execution_id}@dripdrop.test>"},
            "idempotency_key": execution_id,
            "attempt": 1,
            "decided_at": datetime.now(UTC),
        }
        command.update(overrides)
        return command

    def row(self, step_execution_id: str) -> dict[str, Any]:
        """The ledger row as a dict (status, error, provider_message_id, sent_at…)."""
        with self.connect() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            cur.execute(
                "SELECT * FROM dripdrop.step_executions WHERE id = %s", (step_execution_id,)
            )
            found = cur.fetchone()
        assert found is not None, step_execution_id
        return found

    def set_status(self, step_execution_id: str, status: str) -> None:
        with self.connect() as conn:
            conn.execute(
                "UPDATE dripdrop.step_executions SET status = %s WHERE id = %s",
                (status, step_execution_id),
            )

    def set_enrollment_state(self, enrollment_id: str, state: str) -> None:
        with self.connect() as conn:
            conn.execute(
                "UPDATE dripdrop.enrollments SET state = %s WHERE id = %s", (state, enrollment_id)
            )

    def statuses(self) -> dict[str, int]:
        """Count of ledger rows per status in this tenant."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT status, count(*) FROM dripdrop.step_executions"
                " WHERE tenant_key = %s GROUP BY status",
                (self.tenant_key,),
            ).fetchall()
        return {status: count for status, count in rows}


def _payload(command: Mapping[str, Any]) -> dict[str, Any]:
    """The row's ``payload``: the full command, JSON-safe (as the stream sink stores it)."""
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in command.items()}
