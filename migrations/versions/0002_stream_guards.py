"""Stream guards: enrollment row versions and ``claim_send``, the cap/gap/once guard.

``dripdrop.claim_send`` is what makes "never over the cap, never under the gap, never twice"
hold even when two workers act for one adapter during a rebalance: it locks the adapter's
counter row of the local day, refuses a step execution that already exists, checks the cap
and the gap, then counts the send and inserts the execution as ``intent`` — all in the
caller's transaction (guides/faust-and-kafka.md §2.3).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLAIM_SEND = """
CREATE OR REPLACE FUNCTION dripdrop.claim_send(
    p_id uuid, p_tenant text, p_enrollment uuid, p_step uuid, p_attempt integer,
    p_adapter uuid, p_recipient text, p_out_message_id text, p_payload jsonb, p_day date,
    p_cap integer, p_gap integer, p_at timestamptz,
    OUT status text, OUT sent integer, OUT last_sent_at timestamptz)
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO dripdrop.adapter_day_counters (tenant_key, adapter_id, local_day, sent)
    VALUES (p_tenant, p_adapter, p_day, 0)
    ON CONFLICT DO NOTHING;
    -- The lock serializes every claim of this adapter and day, across workers.
    SELECT c.sent INTO sent FROM dripdrop.adapter_day_counters c
    WHERE c.adapter_id = p_adapter AND c.local_day = p_day FOR UPDATE;
    SELECT max(c.last_sent_at) INTO last_sent_at FROM dripdrop.adapter_day_counters c
    WHERE c.adapter_id = p_adapter;
    -- A replayed claim: 'pending' when the sender has not claimed it yet (the sink then
    -- republishes its command: it may have died between commit and publish), else
    -- 'duplicate' (nothing to do).
    SELECT CASE WHEN x.status = 'intent' THEN 'pending' ELSE 'duplicate' END INTO status
    FROM dripdrop.step_executions x WHERE x.id = p_id;
    IF status IS NOT NULL THEN
        RETURN;
    END IF;
    IF p_cap IS NOT NULL AND sent >= p_cap THEN
        status := 'cap';
        RETURN;
    END IF;
    IF p_gap > 0 AND last_sent_at IS NOT NULL
       AND last_sent_at + make_interval(secs => p_gap) > p_at THEN
        status := 'gap';
        RETURN;
    END IF;
    UPDATE dripdrop.adapter_day_counters c
    SET sent = c.sent + 1, last_sent_at = GREATEST(coalesce(c.last_sent_at, p_at), p_at),
        cap = p_cap, updated_at = now()
    WHERE c.adapter_id = p_adapter AND c.local_day = p_day;
    INSERT INTO dripdrop.step_executions (id, tenant_key, enrollment_id, step_id, attempt,
        adapter_id, status, recipient, out_message_id, payload, scheduled_for)
    VALUES (p_id, p_tenant, p_enrollment, p_step, p_attempt, p_adapter, 'intent',
        p_recipient, p_out_message_id, p_payload, p_at);
    status := 'granted';
    sent := sent + 1;
    last_sent_at := GREATEST(coalesce(last_sent_at, p_at), p_at);
END
$$;
"""


def upgrade() -> None:
    op.add_column(
        "enrollments",
        sa.Column("version", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        schema="dripdrop",
    )
    op.add_column(
        "adapter_day_counters", sa.Column("cap", sa.Integer(), nullable=True), schema="dripdrop"
    )
    op.execute(CLAIM_SEND)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION IF EXISTS dripdrop.claim_send(uuid, text, uuid, uuid, integer, uuid,"
        " text, text, jsonb, date, integer, integer, timestamptz)"
    )
    op.drop_column("adapter_day_counters", "cap", schema="dripdrop")
    op.drop_column("enrollments", "version", schema="dripdrop")
