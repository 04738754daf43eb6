"""Initial schema ``dripdrop``: every table of SPEC §9 (see streams/db/tables.py).

Downgrade drops the tables but keeps the (then empty) schema, because Alembic's
version table lives in it.

Revision ID: 0001
Revises:
Create Date: 2026-11-28 07:38:08.058609
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS dripdrop")
    op.create_table('adapter_pools',
    sa.Column('id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('tenant_key', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('on_pin_unavailable', sa.Text(), server_default='reassign', nullable=False),
    sa.Column('active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('inserted_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("on_pin_unavailable IN ('pause', 'reassign')", name=op.f('ck_adapter_pools_on_pin_unavailable')),
    sa.CheckConstraint('length(name) > 0', name=op.f('ck_adapter_pools_name_nonempty')),
    sa.CheckConstraint('length(tenant_key) > 0', name=op.f('ck_adapter_pools_tenant_key_nonempty')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_adapter_pools')),
    sa.UniqueConstraint('tenant_key', 'id', name=op.f('uq_adapter_pools_tenant_key_id')),
    sa.UniqueConstraint('tenant_key', 'name', name=op.f('uq_adapter_pools_tenant_key_name')),
    schema='dripdrop'
    )
    op.create_table('channel_adapters',
    sa.Column('id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('tenant_key', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('channel', sa.Text(), server_default='email', nullable=False),
    sa.Column('provider', sa.Text(), nullable=False),
    sa.Column('active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('from_address', sa.Text(), nullable=True),
    sa.Column('timezone', sa.Text(), server_default='UTC', nullable=False),
    sa.Column('health_state', sa.Text(), nullable=True),
    sa.Column('health_score', sa.Float(), nullable=True),
    sa.Column('resting_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('daily_cap', sa.Integer(), nullable=True),
    sa.Column('ramp_floor', sa.Integer(), nullable=True),
    sa.Column('ramp_increment', sa.Integer(), nullable=True),
    sa.Column('ramp_started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('min_gap_seconds', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('last_send_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('config', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('inserted_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("health_state IS NULL OR health_state IN ('active', 'ramping', 'resting', 'probing')", name=op.f('ck_channel_adapters_health_state')),
    sa.CheckConstraint('daily_cap IS NULL OR daily_cap > 0', name=op.f('ck_channel_adapters_daily_cap_positive')),
    sa.CheckConstraint('health_score IS NULL OR (health_score >= 0 AND health_score <= 1)', name=op.f('ck_channel_adapters_health_score')),
    sa.CheckConstraint('length(provider) > 0', name=op.f('ck_channel_adapters_provider_nonempty')),
    sa.CheckConstraint('length(tenant_key) > 0', name=op.f('ck_channel_adapters_tenant_key_nonempty')),
    sa.CheckConstraint('min_gap_seconds >= 0', name=op.f('ck_channel_adapters_min_gap_nonnegative')),
    sa.CheckConstraint('ramp_floor IS NULL OR ramp_floor >= 0', name=op.f('ck_channel_adapters_ramp_floor_nonnegative')),
    sa.CheckConstraint('ramp_increment IS NULL OR ramp_increment > 0', name=op.f('ck_channel_adapters_ramp_increment_positive')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_channel_adapters')),
    sa.UniqueConstraint('tenant_key', 'id', name=op.f('uq_channel_adapters_tenant_key_id')),
    sa.UniqueConstraint('tenant_key', 'name', name=op.f('uq_channel_adapters_tenant_key_name')),
    schema='dripdrop'
    )
    op.create_table('outbox',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('tenant_key', sa.Text(), nullable=False),
    sa.Column('topic', sa.Text(), nullable=False),
    sa.Column('key', sa.Text(), nullable=False),
    sa.Column('partition', sa.Integer(), nullable=False),
    sa.Column('value', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint('length(tenant_key) > 0', name=op.f('ck_outbox_tenant_key_nonempty')),
    sa.CheckConstraint('partition >= 0', name=op.f('ck_outbox_partition_nonnegative')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    schema='dripdrop'
    )
    op.create_index('ix_outbox_unpublished', 'outbox', ['id'], unique=False, schema='dripdrop', postgresql_where=sa.text('published_at IS NULL'))
    op.create_table('sequences',
    sa.Column('id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('tenant_key', sa.Text(), nullable=False),
    sa.Column('key', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('allow_reenrollment', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('inserted_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('length(tenant_key) > 0', name=op.f('ck_sequences_tenant_key_nonempty')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sequences')),
    sa.UniqueConstraint('tenant_key', 'id', name=op.f('uq_sequences_tenant_key_id')),
    sa.UniqueConstraint('tenant_key', 'key', name=op.f('uq_sequences_tenant_key_key')),
    schema='dripdrop'
    )
    op.create_table('suppressions',
    sa.Column('id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('tenant_key', sa.Text(), nullable=False),
    sa.Column('channel', sa.Text(), server_default='email', nullable=False),
    sa.Column('recipient', sa.Text(), nullable=False),
    sa.Column('recipient_normalized', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('source', sa.Text(), nullable=True),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('inserted_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("reason IN ('unsubscribe', 'bounce', 'complaint', 'manual', 'provider_block')", name=op.f('ck_suppressions_reason')),
    sa.CheckConstraint('length(tenant_key) > 0', name=op.f('ck_suppressions_tenant_key_nonempty')),
    sa.CheckConstraint('recipient_normalized = lower(btrim(recipient_normalized))', name=op.f('ck_suppressions_normalized')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_suppressions')),
    sa.UniqueConstraint('tenant_key', 'channel', 'recipient_normalized', name=op.f('uq_suppressions_tenant_key_channel_recipient_normalized')),
    schema='dripdrop'
    )
    op.create_table('adapter_day_counters',
    sa.Column('tenant_key', sa.Text(), nullable=False),
    sa.Column('adapter_id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('local_day', sa.Date(), nullable=False),
    sa.Column('sent', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('last_sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('length(tenant_key) > 0', name=op.f('ck_adapter_day_counters_tenant_key_nonempty')),
    sa.CheckConstraint('sent >= 0', name=op.f('ck_adapter_day_counters_sent_nonnegative')),
    sa.ForeignKeyConstraint(['tenant_key', 'adapter_id'], ['dripdrop.channel_adapters.tenant_key', 'dripdrop.channel_adapters.id'], name=op.f('fk_adapter_day_counters_tenant_key_adapter_id_channel_adapters'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('adapter_id', 'local_day', name=op.f('pk_adapter_day_counters')),
    schema='dripdrop'
    )
    op.create_table('adapter_health_transitions',
    sa.Column('id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('tenant_key', sa.Text(), nullable=False),
    sa.Column('adapter_id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('from_state', sa.Text(), nullable=True),
    sa.Column('to_state', sa.Text(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('health_score', sa.Float(), nullable=True),
    sa.Column('resting_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('inserted_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("from_state IS NULL OR from_state IN ('active', 'ramping', 'resting', 'probing')", name=op.f('ck_adapter_health_transitions_from_state')),
    sa.CheckConstraint("to_state IS NULL OR to_state IN ('active', 'ramping', 'resting', 'probing')", name=op.f('ck_adapter_health_transitions_to_state')),
    sa.CheckConstraint('length(tenant_key) > 0', name=op.f('ck_adapter_health_transitions_tenant_key_nonempty')),
    sa.ForeignKeyConstraint(['tenant_key', 'adapter_id'], ['dripdrop.channel_adapters.tenant_key', 'dripdrop.channel_adapters.id'], name=op.f('fk_adapter_health_transitions_tenant_key_adapter_id_channel_adapters'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_adapter_health_transitions')),
    schema='dripdrop'
    )
    op.create_index('ix_adapter_health_transitions_adapter_id_at', 'adapter_health_transitions', ['adapter_id', 'at'], unique=False, schema='dripdrop')
    op.create_table('adapter_pool_members',
    sa.Column('id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('tenant_key', sa.Text(), nullable=False),
    sa.Column('pool_id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('adapter_id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('class', sa.Text(), server_default='mailbox', nullable=False),
    sa.Column('weight', sa.Integer(), server_default=sa.text('1'), nullable=False),
    sa.Column('active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('inserted_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('"class" IN (\'mailbox\', \'esp_api\')', name=op.f('ck_adapter_pool_members_class')),
    sa.CheckConstraint('length(tenant_key) > 0', name=op.f('ck_adapter_pool_members_tenant_key_nonempty')),
    sa.CheckConstraint('weight > 0', name=op.f('ck_adapter_pool_members_weight_positive')),
    sa.ForeignKeyConstraint(['tenant_key', 'adapter_id'], ['dripdrop.channel_adapters.tenant_key', 'dripdrop.channel_adapters.id'], name=op.f('fk_adapter_pool_members_tenant_key_adapter_id_channel_adapters'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_key', 'pool_id'], ['dripdrop.adapter_pools.tenant_key', 'dripdrop.adapter_pools.id'], name=op.f('fk_adapter_pool_members_tenant_key_pool_id_adapter_pools'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_adapter_pool_members')),
    sa.UniqueConstraint('pool_id', 'adapter_id', name=op.f('uq_adapter_pool_members_pool_id_adapter_id')),
    schema='dripdrop'
    )
    op.create_index('ix_adapter_pool_members_adapter_id', 'adapter_pool_members', ['adapter_id'], unique=False, schema='dripdrop')
    op.create_table('sequence_versions',
    sa.Column('id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('tenant_key', sa.Text(), nullable=False),
    sa.Column('sequence_id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('mode', sa.Text(), server_default='lifecycle', nullable=False),
    sa.Column('config', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('pool_id', sa.Uuid(as_uuid=False), nullable=True),
    sa.Column('active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('inserted_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("mode <> 'outbound' OR pool_id IS NOT NULL", name=op.f('ck_sequence_versions_outbound_requires_pool')),
    sa.CheckConstraint("mode IN ('lifecycle', 'outbound')", name=op.f('ck_sequence_versions_mode')),
    sa.CheckConstraint("pool_id IS NULL OR config->>'pool_id' = pool_id::text", name=op.f('ck_sequence_versions_config_pool_id_matches')),
    sa.CheckConstraint('length(tenant_key) > 0', name=op.f('ck_sequence_versions_tenant_key_nonempty')),
    sa.CheckConstraint('version > 0', name=op.f('ck_sequence_versions_version_positive')),
    sa.ForeignKeyConstraint(['tenant_key', 'pool_id'], ['dripdrop.adapter_pools.tenant_key', 'dripdrop.adapter_pools.id'], name=op.f('fk_sequence_versions_tenant_key_pool_id_adapter_pools')),
    sa.ForeignKeyConstraint(['tenant_key', 'sequence_id'], ['dripdrop.sequences.tenant_key', 'dripdrop.sequences.id'], name=op.f('fk_sequence_versions_tenant_key_sequence_id_sequences'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sequence_versions')),
    sa.UniqueConstraint('sequence_id', 'version', name=op.f('uq_sequence_versions_sequence_id_version')),
    sa.UniqueConstraint('tenant_key', 'id', name=op.f('uq_sequence_versions_tenant_key_id')),
    schema='dripdrop'
    )
    op.create_index('ix_sequence_versions_pool_id', 'sequence_versions', ['pool_id'], unique=False, schema='dripdrop', postgresql_where=sa.text('pool_id IS NOT NULL'))
    op.create_table('enrollments',
    sa.Column('id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('tenant_key', sa.Text(), nullable=False),
    sa.Column('sequence_id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('sequence_version_id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('subscriber_id', sa.Text(), nullable=False),
    sa.Column('mode', sa.Text(), server_default='lifecycle', nullable=False),
    sa.Column('adapter_id', sa.Uuid(as_uuid=False), nullable=True),
    sa.Column('state', sa.Text(), server_default='active', nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('recipient', sa.Text(), nullable=False),
    sa.Column('timezone', sa.Text(), nullable=True),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('enrolled_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('inserted_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("adapter_id IS NULL OR mode = 'outbound'", name=op.f('ck_enrollments_pin_only_outbound')),
    sa.CheckConstraint("mode IN ('lifecycle', 'outbound')", name=op.f('ck_enrollments_mode')),
    sa.CheckConstraint("state <> 'rejected' OR reason IS NOT NULL", name=op.f('ck_enrollments_rejected_has_reason')),
    sa.CheckConstraint("state IN ('active', 'paused', 'completed', 'replied', 'stopped', 'unenrolled', 'rejected')", name=op.f('ck_enrollments_state')),
    sa.CheckConstraint('length(tenant_key) > 0', name=op.f('ck_enrollments_tenant_key_nonempty')),
    sa.ForeignKeyConstraint(['tenant_key', 'adapter_id'], ['dripdrop.channel_adapters.tenant_key', 'dripdrop.channel_adapters.id'], name=op.f('fk_enrollments_tenant_key_adapter_id_channel_adapters')),
    sa.ForeignKeyConstraint(['tenant_key', 'sequence_id'], ['dripdrop.sequences.tenant_key', 'dripdrop.sequences.id'], name=op.f('fk_enrollments_tenant_key_sequence_id_sequences')),
    sa.ForeignKeyConstraint(['tenant_key', 'sequence_version_id'], ['dripdrop.sequence_versions.tenant_key', 'dripdrop.sequence_versions.id'], name=op.f('fk_enrollments_tenant_key_sequence_version_id_sequence_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_enrollments')),
    sa.UniqueConstraint('tenant_key', 'id', name=op.f('uq_enrollments_tenant_key_id')),
    schema='dripdrop'
    )
    op.create_index('ix_enrollments_tenant_key_adapter_id', 'enrollments', ['tenant_key', 'adapter_id'], unique=False, schema='dripdrop', postgresql_where=sa.text('adapter_id IS NOT NULL'))
    op.create_index('uq_enrollments_tenant_key_sequence_id_subscriber_id_live', 'enrollments', ['tenant_key', 'sequence_id', 'subscriber_id'], unique=True, schema='dripdrop', postgresql_where=sa.text("state IN ('active', 'paused')"))
    op.create_table('steps',
    sa.Column('id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('tenant_key', sa.Text(), nullable=False),
    sa.Column('version_id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('key', sa.Text(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('channel', sa.Text(), server_default='email', nullable=False),
    sa.Column('delay_seconds', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('delay_from', sa.Text(), server_default='previous_send', nullable=False),
    sa.Column('subject_template', sa.Text(), server_default='', nullable=False),
    sa.Column('body_template', sa.Text(), server_default='', nullable=False),
    sa.Column('adapter_id', sa.Uuid(as_uuid=False), nullable=True),
    sa.Column('adapter_override_id', sa.Uuid(as_uuid=False), nullable=True),
    sa.Column('reply_behavior', sa.Text(), server_default='stop', nullable=False),
    sa.Column('quiet_start_hour', sa.Integer(), nullable=True),
    sa.Column('quiet_end_hour', sa.Integer(), nullable=True),
    sa.Column('thread_continuity', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('config', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('inserted_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("delay_from IN ('enrollment', 'previous_send')", name=op.f('ck_steps_delay_from')),
    sa.CheckConstraint("reply_behavior IN ('stop', 'pause', 'continue')", name=op.f('ck_steps_reply_behavior')),
    sa.CheckConstraint('(quiet_start_hour IS NULL) = (quiet_end_hour IS NULL) AND (quiet_start_hour IS NULL OR quiet_start_hour BETWEEN 0 AND 23) AND (quiet_end_hour IS NULL OR quiet_end_hour BETWEEN 0 AND 24)', name=op.f('ck_steps_quiet_hours')),
    sa.CheckConstraint('adapter_id IS NULL OR adapter_override_id IS NULL', name=op.f('ck_steps_one_adapter_field')),
    sa.CheckConstraint('delay_seconds >= 0', name=op.f('ck_steps_delay_nonnegative')),
    sa.CheckConstraint('length(tenant_key) > 0', name=op.f('ck_steps_tenant_key_nonempty')),
    sa.CheckConstraint('position >= 0', name=op.f('ck_steps_position_nonnegative')),
    sa.ForeignKeyConstraint(['tenant_key', 'adapter_id'], ['dripdrop.channel_adapters.tenant_key', 'dripdrop.channel_adapters.id'], name=op.f('fk_steps_tenant_key_adapter_id_channel_adapters')),
    sa.ForeignKeyConstraint(['tenant_key', 'adapter_override_id'], ['dripdrop.channel_adapters.tenant_key', 'dripdrop.channel_adapters.id'], name=op.f('fk_steps_tenant_key_adapter_override_id_channel_adapters')),
    sa.ForeignKeyConstraint(['tenant_key', 'version_id'], ['dripdrop.sequence_versions.tenant_key', 'dripdrop.sequence_versions.id'], name=op.f('fk_steps_tenant_key_version_id_sequence_versions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_steps')),
    sa.UniqueConstraint('tenant_key', 'id', name=op.f('uq_steps_tenant_key_id')),
    sa.UniqueConstraint('version_id', 'key', name=op.f('uq_steps_version_id_key')),
    sa.UniqueConstraint('version_id', 'position', name=op.f('uq_steps_version_id_position')),
    schema='dripdrop'
    )
    op.create_table('step_executions',
    sa.Column('id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('tenant_key', sa.Text(), nullable=False),
    sa.Column('enrollment_id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('step_id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('attempt', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('adapter_id', sa.Uuid(as_uuid=False), nullable=True),
    sa.Column('status', sa.Text(), server_default='intent', nullable=False),
    sa.Column('recipient', sa.Text(), nullable=True),
    sa.Column('out_message_id', sa.Text(), nullable=True),
    sa.Column('provider_message_id', sa.Text(), nullable=True),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('scheduled_for', sa.DateTime(timezone=True), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('inserted_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status <> 'sent' OR sent_at IS NOT NULL", name=op.f('ck_step_executions_sent_has_sent_at')),
    sa.CheckConstraint("status IN ('intent', 'sending', 'sent', 'failed', 'ambiguous', 'cancelled', 'skipped')", name=op.f('ck_step_executions_status')),
    sa.CheckConstraint('attempt >= 0', name=op.f('ck_step_executions_attempt_nonnegative')),
    sa.CheckConstraint('length(tenant_key) > 0', name=op.f('ck_step_executions_tenant_key_nonempty')),
    sa.ForeignKeyConstraint(['tenant_key', 'adapter_id'], ['dripdrop.channel_adapters.tenant_key', 'dripdrop.channel_adapters.id'], name=op.f('fk_step_executions_tenant_key_adapter_id_channel_adapters')),
    sa.ForeignKeyConstraint(['tenant_key', 'enrollment_id'], ['dripdrop.enrollments.tenant_key', 'dripdrop.enrollments.id'], name=op.f('fk_step_executions_tenant_key_enrollment_id_enrollments'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_key', 'step_id'], ['dripdrop.steps.tenant_key', 'dripdrop.steps.id'], name=op.f('fk_step_executions_tenant_key_step_id_steps')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_step_executions')),
    sa.UniqueConstraint('enrollment_id', 'step_id', 'attempt', name=op.f('uq_step_executions_enrollment_id_step_id_attempt')),
    sa.UniqueConstraint('tenant_key', 'id', name=op.f('uq_step_executions_tenant_key_id')),
    schema='dripdrop'
    )
    op.create_index('ix_step_executions_enrollment_id_inserted_at', 'step_executions', ['enrollment_id', 'inserted_at'], unique=False, schema='dripdrop')
    op.create_index('ix_step_executions_tenant_key_provider_message_id', 'step_executions', ['tenant_key', 'provider_message_id'], unique=False, schema='dripdrop', postgresql_where=sa.text('provider_message_id IS NOT NULL'))
    op.create_index('uq_step_executions_out_message_id', 'step_executions', ['out_message_id'], unique=True, schema='dripdrop', postgresql_where=sa.text('out_message_id IS NOT NULL'))
    op.create_table('message_events',
    sa.Column('id', sa.Uuid(as_uuid=False), nullable=False),
    sa.Column('tenant_key', sa.Text(), nullable=False),
    sa.Column('event_type', sa.Text(), nullable=False),
    sa.Column('channel', sa.Text(), server_default='email', nullable=False),
    sa.Column('provider', sa.Text(), nullable=True),
    sa.Column('adapter_id', sa.Uuid(as_uuid=False), nullable=True),
    sa.Column('enrollment_id', sa.Uuid(as_uuid=False), nullable=True),
    sa.Column('step_execution_id', sa.Uuid(as_uuid=False), nullable=True),
    sa.Column('provider_message_id', sa.Text(), nullable=True),
    sa.Column('provider_event_id', sa.Text(), nullable=True),
    sa.Column('message_id', sa.Text(), nullable=True),
    sa.Column('in_reply_to', sa.Text(), nullable=True),
    sa.Column('references_list', postgresql.ARRAY(sa.Text()), nullable=True),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('inserted_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("event_type ~ '^[a-z][a-z_]*$'", name=op.f('ck_message_events_event_type_snake_case')),
    sa.CheckConstraint('length(tenant_key) > 0', name=op.f('ck_message_events_tenant_key_nonempty')),
    sa.ForeignKeyConstraint(['tenant_key', 'adapter_id'], ['dripdrop.channel_adapters.tenant_key', 'dripdrop.channel_adapters.id'], name=op.f('fk_message_events_tenant_key_adapter_id_channel_adapters')),
    sa.ForeignKeyConstraint(['tenant_key', 'enrollment_id'], ['dripdrop.enrollments.tenant_key', 'dripdrop.enrollments.id'], name=op.f('fk_message_events_tenant_key_enrollment_id_enrollments'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_key', 'step_execution_id'], ['dripdrop.step_executions.tenant_key', 'dripdrop.step_executions.id'], name=op.f('fk_message_events_tenant_key_step_execution_id_step_executions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_message_events')),
    schema='dripdrop'
    )
    op.create_index('ix_message_events_adapter_id_occurred_at', 'message_events', ['adapter_id', 'occurred_at'], unique=False, schema='dripdrop', postgresql_where=sa.text('adapter_id IS NOT NULL'))
    op.create_index('ix_message_events_enrollment_id', 'message_events', ['enrollment_id'], unique=False, schema='dripdrop', postgresql_where=sa.text('enrollment_id IS NOT NULL'))
    op.create_index('ix_message_events_in_reply_to', 'message_events', ['in_reply_to'], unique=False, schema='dripdrop', postgresql_where=sa.text('in_reply_to IS NOT NULL'))
    op.create_index('uq_message_events_tenant_key_provider_event_id', 'message_events', ['tenant_key', 'provider_event_id'], unique=True, schema='dripdrop', postgresql_where=sa.text('provider_event_id IS NOT NULL'))


def downgrade() -> None:
    op.drop_index('uq_message_events_tenant_key_provider_event_id', table_name='message_events', schema='dripdrop', postgresql_where=sa.text('provider_event_id IS NOT NULL'))
    op.drop_index('ix_message_events_in_reply_to', table_name='message_events', schema='dripdrop', postgresql_where=sa.text('in_reply_to IS NOT NULL'))
    op.drop_index('ix_message_events_enrollment_id', table_name='message_events', schema='dripdrop', postgresql_where=sa.text('enrollment_id IS NOT NULL'))
    op.drop_index('ix_message_events_adapter_id_occurred_at', table_name='message_events', schema='dripdrop', postgresql_where=sa.text('adapter_id IS NOT NULL'))
    op.drop_table('message_events', schema='dripdrop')
    op.drop_index('uq_step_executions_out_message_id', table_name='step_executions', schema='dripdrop', postgresql_where=sa.text('out_message_id IS NOT NULL'))
    op.drop_index('ix_step_executions_tenant_key_provider_message_id', table_name='step_executions', schema='dripdrop', postgresql_where=sa.text('provider_message_id IS NOT NULL'))
    op.drop_index('ix_step_executions_enrollment_id_inserted_at', table_name='step_executions', schema='dripdrop')
    op.drop_table('step_executions', schema='dripdrop')
    op.drop_table('steps', schema='dripdrop')
    op.drop_index('uq_enrollments_tenant_key_sequence_id_subscriber_id_live', table_name='enrollments', schema='dripdrop', postgresql_where=sa.text("state IN ('active', 'paused')"))
    op.drop_index('ix_enrollments_tenant_key_adapter_id', table_name='enrollments', schema='dripdrop', postgresql_where=sa.text('adapter_id IS NOT NULL'))
    op.drop_table('enrollments', schema='dripdrop')
    op.drop_index('ix_sequence_versions_pool_id', table_name='sequence_versions', schema='dripdrop', postgresql_where=sa.text('pool_id IS NOT NULL'))
    op.drop_table('sequence_versions', schema='dripdrop')
    op.drop_index('ix_adapter_pool_members_adapter_id', table_name='adapter_pool_members', schema='dripdrop')
    op.drop_table('adapter_pool_members', schema='dripdrop')
    op.drop_index('ix_adapter_health_transitions_adapter_id_at', table_name='adapter_health_transitions', schema='dripdrop')
    op.drop_table('adapter_health_transitions', schema='dripdrop')
    op.drop_table('adapter_day_counters', schema='dripdrop')
    op.drop_table('suppressions', schema='dripdrop')
    op.drop_table('sequences', schema='dripdrop')
    op.drop_index('ix_outbox_unpublished', table_name='outbox', schema='dripdrop', postgresql_where=sa.text('published_at IS NULL'))
    op.drop_table('outbox', schema='dripdrop')
    op.drop_table('channel_adapters', schema='dripdrop')
    op.drop_table('adapter_pools', schema='dripdrop')
