"""The Gmail and Microsoft Graph pumps' cursors (SPEC §8): per adapter and kind the
``historyId`` (Gmail) or the delta link (Graph), and the push registration (Gmail watch,
Graph subscription) with its expiry. Produced Message-IDs go to ``inbound_seen`` as the
IMAP pump's do (folder ``gmail`` / ``graph``).

Revision ID: 0005_inbound_api_cursors
Revises: 0004_inbound_cursors
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_inbound_api_cursors"
down_revision: str | None = "0004_inbound_cursors"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbound_api_cursors",
        sa.Column("tenant_key", sa.Text(), nullable=False),
        sa.Column("adapter_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("watch_id", sa.Text(), nullable=True),
        sa.Column("watch_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "length(tenant_key) > 0", name=op.f("ck_inbound_api_cursors_tenant_key_nonempty")
        ),
        sa.CheckConstraint(
            "kind IN ('gmail', 'graph')", name=op.f("ck_inbound_api_cursors_kind_known")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_key", "adapter_id"],
            ["dripdrop.channel_adapters.tenant_key", "dripdrop.channel_adapters.id"],
            name=op.f("fk_inbound_api_cursors_tenant_key_adapter_id_channel_adapters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("adapter_id", "kind", name=op.f("pk_inbound_api_cursors")),
        schema="dripdrop",
    )


def downgrade() -> None:
    op.drop_table("inbound_api_cursors", schema="dripdrop")
