"""Recipient-domain throttles (SPEC §13): per tenant or per adapter, per UTC hour and day.

Revision ID: 0008_domain_throttles
Revises: 0007_step_html
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_domain_throttles"
down_revision: str | None = "0007_step_html"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "domain_throttles",
        sa.Column("id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("tenant_key", sa.Text(), nullable=False),
        sa.Column("domain", sa.Text(), nullable=False),
        sa.Column("adapter_id", sa.Uuid(as_uuid=False), nullable=True),
        sa.Column("per_hour", sa.Integer(), nullable=True),
        sa.Column("per_day", sa.Integer(), nullable=True),
        sa.Column(
            "inserted_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.CheckConstraint(
            "length(tenant_key) > 0", name=op.f("ck_domain_throttles_tenant_key_nonempty")
        ),
        sa.CheckConstraint(
            "per_hour IS NULL OR per_hour > 0", name=op.f("ck_domain_throttles_per_hour_positive")
        ),
        sa.CheckConstraint(
            "per_day IS NULL OR per_day > 0", name=op.f("ck_domain_throttles_per_day_positive")
        ),
        sa.CheckConstraint("length(domain) > 0", name=op.f("ck_domain_throttles_domain_nonempty")),
        sa.ForeignKeyConstraint(
            ["tenant_key", "adapter_id"],
            ["dripdrop.channel_adapters.tenant_key", "dripdrop.channel_adapters.id"],
            name=op.f("fk_domain_throttles_tenant_key_adapter_id_channel_adapters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_domain_throttles")),
        sa.UniqueConstraint(
            "tenant_key",
            "domain",
            "adapter_id",
            name=op.f("uq_domain_throttles_tenant_key_domain_adapter_id"),
            postgresql_nulls_not_distinct=True,
        ),
        schema="dripdrop",
    )


def downgrade() -> None:
    op.drop_table("domain_throttles", schema="dripdrop")
