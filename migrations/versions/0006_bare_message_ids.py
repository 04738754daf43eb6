"""Ids stored the way they are matched (SPEC §8): ``step_executions.out_message_id``
without angle brackets, like every inbound id; ``payload->'headers'`` keeps the wire form.

Revision ID: 0006_bare_message_ids
Revises: 0005_inbound_api_cursors
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006_bare_message_ids"
down_revision: str | None = "0005_inbound_api_cursors"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "UPDATE dripdrop.step_executions SET out_message_id = btrim(out_message_id, ' <>')"
        " WHERE out_message_id LIKE '%<%' OR out_message_id LIKE '%>%'"
    )


def downgrade() -> None:
    op.execute(
        "UPDATE dripdrop.step_executions SET out_message_id = '<' || out_message_id || '>'"
        " WHERE out_message_id IS NOT NULL AND out_message_id NOT LIKE '<%'"
    )
