"""Enrollment states of the failure classes and capacity waits (SPEC §5.2, §7).

``bounced`` (the recipient was refused for good), ``failed`` (a template that cannot render,
a recipient deferred past the retry limit, a permanent send failure) and ``waiting`` (accepted,
queued for capacity). The transition table is ``dripdrop_core.enrollment.TRANSITIONS``; a
``waiting`` enrollment is live, like ``active`` and ``paused``: one per subscriber and sequence.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = ("active", "paused", "completed", "replied", "stopped", "unenrolled", "rejected")
_NEW = (*_OLD, "bounced", "failed", "waiting")
_LIVE_INDEX = "uq_enrollments_tenant_key_sequence_id_subscriber_id_live"


def _states(states: tuple[str, ...]) -> str:
    return "state IN (" + ", ".join(f"'{s}'" for s in states) + ")"


def _swap(states: tuple[str, ...], live: tuple[str, ...]) -> None:
    op.drop_constraint(
        op.f("ck_enrollments_state"), "enrollments", schema="dripdrop", type_="check"
    )
    op.create_check_constraint(
        op.f("ck_enrollments_state"), "enrollments", _states(states), schema="dripdrop"
    )
    op.drop_index(_LIVE_INDEX, table_name="enrollments", schema="dripdrop")
    op.create_index(
        _LIVE_INDEX,
        "enrollments",
        ["tenant_key", "sequence_id", "subscriber_id"],
        unique=True,
        schema="dripdrop",
        postgresql_where=_states(live),
    )


def upgrade() -> None:
    _swap(_NEW, ("active", "paused", "waiting"))


def downgrade() -> None:
    op.execute(
        "UPDATE dripdrop.enrollments SET state = 'stopped' WHERE state IN ('bounced', 'failed')"
    )
    op.execute("UPDATE dripdrop.enrollments SET state = 'active' WHERE state = 'waiting'")
    _swap(_OLD, ("active", "paused"))
