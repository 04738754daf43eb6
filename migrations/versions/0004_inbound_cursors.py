"""The inbound pump's cursors (SPEC §8): UIDVALIDITY + last UID per adapter and folder, and
the Message-IDs it produced (a UIDVALIDITY resync skips them: nothing is produced twice).

Revision ID: 0004_inbound_cursors
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_inbound_cursors"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _tenant_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_key", "adapter_id"],
        ["dripdrop.channel_adapters.tenant_key", "dripdrop.channel_adapters.id"],
        name=op.f(f"fk_{table}_tenant_key_adapter_id_channel_adapters"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "inbound_cursors",
        sa.Column("tenant_key", sa.Text(), nullable=False),
        sa.Column("adapter_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("folder", sa.Text(), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "length(tenant_key) > 0", name=op.f("ck_inbound_cursors_tenant_key_nonempty")
        ),
        sa.CheckConstraint("last_uid >= 0", name=op.f("ck_inbound_cursors_last_uid_nonnegative")),
        _tenant_fk("inbound_cursors"),
        sa.PrimaryKeyConstraint("adapter_id", "folder", name=op.f("pk_inbound_cursors")),
        schema="dripdrop",
    )
    op.create_table(
        "inbound_seen",
        sa.Column("tenant_key", sa.Text(), nullable=False),
        sa.Column("adapter_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("folder", sa.Text(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column(
            "seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.CheckConstraint(
            "length(tenant_key) > 0", name=op.f("ck_inbound_seen_tenant_key_nonempty")
        ),
        _tenant_fk("inbound_seen"),
        sa.PrimaryKeyConstraint("adapter_id", "message_id", name=op.f("pk_inbound_seen")),
        schema="dripdrop",
    )
    op.create_index("ix_inbound_seen_seen_at", "inbound_seen", ["seen_at"], schema="dripdrop")


def downgrade() -> None:
    op.drop_index("ix_inbound_seen_seen_at", table_name="inbound_seen", schema="dripdrop")
    op.drop_table("inbound_seen", schema="dripdrop")
    op.drop_table("inbound_cursors", schema="dripdrop")
