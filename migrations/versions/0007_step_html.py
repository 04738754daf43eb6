"""A step's HTML template (SPEC §7): the HTML alternative to ``body_template``, sent as
multipart/alternative; NULL (every existing step) keeps the send plain text.

Revision ID: 0007_step_html
Revises: 0006_bare_message_ids
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_step_html"
down_revision: str | None = "0006_bare_message_ids"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("steps", sa.Column("html_template", sa.Text(), nullable=True), schema="dripdrop")


def downgrade() -> None:
    op.drop_column("steps", "html_template", schema="dripdrop")
