"""How an operator settled an ambiguous send (``dripdrop sends resolve``, issue 11).

``resolution`` is ``sent`` (the operator says the mail went out: the row becomes ``sent``)
or ``not_sent`` (it did not: the row goes back to ``intent`` and its stored command is
re-issued once, with the same Message-ID). A row resolved ``not_sent`` is never re-issued
again, whatever its re-issue ends in. The partial index serves ``dripdrop sends
ambiguous``: few rows, listed per tenant, oldest first.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("step_executions", sa.Column("resolution", sa.Text()), schema="dripdrop")
    op.add_column(
        "step_executions",
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        schema="dripdrop",
    )
    op.create_check_constraint(
        op.f("ck_step_executions_resolution"),
        "step_executions",
        "resolution IS NULL OR resolution IN ('sent', 'not_sent')",
        schema="dripdrop",
    )
    op.create_index(
        op.f("ix_step_executions_tenant_key_updated_at"),
        "step_executions",
        ["tenant_key", "updated_at"],
        schema="dripdrop",
        postgresql_where=sa.text("status = 'ambiguous'"),
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_step_executions_tenant_key_updated_at"),
        table_name="step_executions",
        schema="dripdrop",
    )
    op.drop_constraint(
        op.f("ck_step_executions_resolution"), "step_executions", schema="dripdrop", type_="check"
    )
    op.drop_column("step_executions", "resolved_at", schema="dripdrop")
    op.drop_column("step_executions", "resolution", schema="dripdrop")
