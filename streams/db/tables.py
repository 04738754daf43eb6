"""The PostgreSQL schema ``dripdrop`` as SQLAlchemy Core metadata (SPEC §9).

This module is the single declaration of every table; Alembic autogenerates
from it and ``alembic check`` fails when a migration drifts from it.

Tenant rules enforced by the database itself:

* every tenant-owned table has ``tenant_key NOT NULL`` (non-empty);
* tables referenced across entities carry ``UNIQUE (tenant_key, id)`` and the
  referencing tables use *composite* foreign keys ``(tenant_key, x_id)``, so a
  row can never point at another tenant's pool, adapter, sequence or enrollment,
  whatever the application code does.

Constraint names come from the naming convention below; partial indexes are
named explicitly in the same style.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

SCHEMA = "dripdrop"

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(schema=SCHEMA, naming_convention=NAMING_CONVENTION)

HEALTH_STATES = ("active", "ramping", "resting", "probing")
ENROLLMENT_STATES = (
    "active",
    "paused",
    "completed",
    "replied",
    "stopped",
    "unenrolled",
    "rejected",
    "bounced",
    "failed",
    "waiting",
)
LIVE_ENROLLMENT_STATES = ("active", "paused", "waiting")
"""One live enrollment per (tenant, sequence, subscriber): ``dripdrop_core.enrollment.LIVE``."""
RESOLUTIONS = ("sent", "not_sent")
"""``step_executions.resolution``: how ``dripdrop sends resolve`` settled an ambiguous send."""
EXECUTION_STATUSES = ("intent", "sending", "sent", "failed", "ambiguous", "cancelled", "skipped")
SUPPRESSION_REASONS = ("unsubscribe", "bounce", "complaint", "manual", "provider_block")


def _in(column: str, values: tuple[str, ...], *, nullable: bool = False) -> str:
    """SQL text of ``column IN (...)`` (``OR column IS NULL`` when nullable)."""
    listed = ", ".join(f"'{value}'" for value in values)
    clause = f"{column} IN ({listed})"
    return f"{column} IS NULL OR {clause}" if nullable else clause


def _id() -> Column[str]:
    return Column("id", Uuid(as_uuid=False), primary_key=True)


def _tenant() -> Column[str]:
    return Column("tenant_key", Text, nullable=False)


def _tenant_check() -> CheckConstraint:
    return CheckConstraint("length(tenant_key) > 0", name="tenant_key_nonempty")


def _inserted_at() -> Column[object]:
    return Column(
        "inserted_at", DateTime(timezone=True), nullable=False, server_default=text("now()")
    )


def _updated_at() -> Column[object]:
    return Column(
        "updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")
    )


def _jsonb(name: str) -> Column[object]:
    return Column(name, JSONB, nullable=False, server_default=text("'{}'::jsonb"))


def _tenant_fk(
    columns: tuple[str, str], table: str, *, ondelete: str | None = None
) -> ForeignKeyConstraint:
    """Composite FK ``(tenant_key, x_id) -> table(tenant_key, id)``: same-tenant only."""
    return ForeignKeyConstraint(
        list(columns),
        [f"{SCHEMA}.{table}.tenant_key", f"{SCHEMA}.{table}.id"],
        ondelete=ondelete,
    )


channel_adapters = Table(
    "channel_adapters",
    metadata,
    _id(),
    _tenant(),
    Column("name", Text, nullable=False),
    Column("channel", Text, nullable=False, server_default="email"),
    Column("provider", Text, nullable=False),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("from_address", Text),
    Column("timezone", Text, nullable=False, server_default="UTC"),
    Column("health_state", Text),
    Column("health_score", Float),
    Column("resting_until", DateTime(timezone=True)),
    Column("daily_cap", Integer),
    Column("ramp_floor", Integer),
    Column("ramp_increment", Integer),
    Column("ramp_started_at", DateTime(timezone=True)),
    Column("min_gap_seconds", Integer, nullable=False, server_default=text("0")),
    Column("last_send_at", DateTime(timezone=True)),
    _jsonb("config"),
    _inserted_at(),
    _updated_at(),
    _tenant_check(),
    UniqueConstraint("tenant_key", "id"),
    UniqueConstraint("tenant_key", "name"),
    CheckConstraint(_in("health_state", HEALTH_STATES, nullable=True), name="health_state"),
    CheckConstraint(
        "health_score IS NULL OR (health_score >= 0 AND health_score <= 1)", name="health_score"
    ),
    CheckConstraint("daily_cap IS NULL OR daily_cap > 0", name="daily_cap_positive"),
    CheckConstraint("ramp_floor IS NULL OR ramp_floor >= 0", name="ramp_floor_nonnegative"),
    CheckConstraint("ramp_increment IS NULL OR ramp_increment > 0", name="ramp_increment_positive"),
    CheckConstraint("min_gap_seconds >= 0", name="min_gap_nonnegative"),
    CheckConstraint("length(provider) > 0", name="provider_nonempty"),
)

adapter_pools = Table(
    "adapter_pools",
    metadata,
    _id(),
    _tenant(),
    Column("name", Text, nullable=False),
    Column("on_pin_unavailable", Text, nullable=False, server_default="reassign"),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    _jsonb("metadata"),
    _inserted_at(),
    _updated_at(),
    _tenant_check(),
    UniqueConstraint("tenant_key", "id"),
    UniqueConstraint("tenant_key", "name"),
    CheckConstraint(_in("on_pin_unavailable", ("pause", "reassign")), name="on_pin_unavailable"),
    CheckConstraint("length(name) > 0", name="name_nonempty"),
)

adapter_pool_members = Table(
    "adapter_pool_members",
    metadata,
    _id(),
    _tenant(),
    Column("pool_id", Uuid(as_uuid=False), nullable=False),
    Column("adapter_id", Uuid(as_uuid=False), nullable=False),
    Column("class", Text, nullable=False, server_default="mailbox"),
    Column("weight", Integer, nullable=False, server_default=text("1")),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    _inserted_at(),
    _updated_at(),
    _tenant_check(),
    UniqueConstraint("pool_id", "adapter_id"),
    CheckConstraint(_in('"class"', ("mailbox", "esp_api")), name="class"),
    CheckConstraint("weight > 0", name="weight_positive"),
    _tenant_fk(("tenant_key", "pool_id"), "adapter_pools", ondelete="CASCADE"),
    _tenant_fk(("tenant_key", "adapter_id"), "channel_adapters", ondelete="CASCADE"),
    Index("ix_adapter_pool_members_adapter_id", "adapter_id"),
)

domain_throttles = Table(
    "domain_throttles",
    metadata,
    _id(),
    _tenant(),
    Column("domain", Text, nullable=False),
    Column("adapter_id", Uuid(as_uuid=False)),
    Column("per_hour", Integer),
    Column("per_day", Integer),
    _inserted_at(),
    _updated_at(),
    _tenant_check(),
    # One throttle per domain and scope; NULL (every adapter) is one scope too.
    UniqueConstraint("tenant_key", "domain", "adapter_id", postgresql_nulls_not_distinct=True),
    CheckConstraint("per_hour IS NULL OR per_hour > 0", name="per_hour_positive"),
    CheckConstraint("per_day IS NULL OR per_day > 0", name="per_day_positive"),
    CheckConstraint("length(domain) > 0", name="domain_nonempty"),
    _tenant_fk(("tenant_key", "adapter_id"), "channel_adapters", ondelete="CASCADE"),
)

sequences = Table(
    "sequences",
    metadata,
    _id(),
    _tenant(),
    Column("key", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("allow_reenrollment", Boolean, nullable=False, server_default=text("false")),
    _inserted_at(),
    _updated_at(),
    _tenant_check(),
    UniqueConstraint("tenant_key", "id"),
    UniqueConstraint("tenant_key", "key"),
)

sequence_versions = Table(
    "sequence_versions",
    metadata,
    _id(),
    _tenant(),
    Column("sequence_id", Uuid(as_uuid=False), nullable=False),
    Column("version", Integer, nullable=False),
    Column("mode", Text, nullable=False, server_default="lifecycle"),
    _jsonb("config"),
    Column("pool_id", Uuid(as_uuid=False)),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    _inserted_at(),
    _updated_at(),
    _tenant_check(),
    UniqueConstraint("tenant_key", "id"),
    UniqueConstraint("sequence_id", "version"),
    CheckConstraint("version > 0", name="version_positive"),
    CheckConstraint(_in("mode", ("lifecycle", "outbound")), name="mode"),
    CheckConstraint("mode <> 'outbound' OR pool_id IS NOT NULL", name="outbound_requires_pool"),
    CheckConstraint(
        "pool_id IS NULL OR config->>'pool_id' = pool_id::text", name="config_pool_id_matches"
    ),
    _tenant_fk(("tenant_key", "sequence_id"), "sequences", ondelete="CASCADE"),
    _tenant_fk(("tenant_key", "pool_id"), "adapter_pools"),
    Index("ix_sequence_versions_pool_id", "pool_id", postgresql_where=text("pool_id IS NOT NULL")),
)

steps = Table(
    "steps",
    metadata,
    _id(),
    _tenant(),
    Column("version_id", Uuid(as_uuid=False), nullable=False),
    Column("key", Text, nullable=False),
    Column("position", Integer, nullable=False),
    Column("channel", Text, nullable=False, server_default="email"),
    Column("delay_seconds", Integer, nullable=False, server_default=text("0")),
    Column("delay_from", Text, nullable=False, server_default="previous_send"),
    Column("subject_template", Text, nullable=False, server_default=""),
    Column("body_template", Text, nullable=False, server_default=""),
    Column("html_template", Text),
    Column("adapter_id", Uuid(as_uuid=False)),
    Column("adapter_override_id", Uuid(as_uuid=False)),
    Column("reply_behavior", Text, nullable=False, server_default="stop"),
    Column("quiet_start_hour", Integer),
    Column("quiet_end_hour", Integer),
    Column("thread_continuity", Boolean, nullable=False, server_default=text("false")),
    _jsonb("config"),
    _inserted_at(),
    _updated_at(),
    _tenant_check(),
    UniqueConstraint("tenant_key", "id"),
    UniqueConstraint("version_id", "position"),
    UniqueConstraint("version_id", "key"),
    CheckConstraint("position >= 0", name="position_nonnegative"),
    CheckConstraint("delay_seconds >= 0", name="delay_nonnegative"),
    CheckConstraint(_in("delay_from", ("enrollment", "previous_send")), name="delay_from"),
    CheckConstraint(_in("reply_behavior", ("stop", "pause", "continue")), name="reply_behavior"),
    CheckConstraint(
        "(quiet_start_hour IS NULL) = (quiet_end_hour IS NULL)"
        " AND (quiet_start_hour IS NULL OR quiet_start_hour BETWEEN 0 AND 23)"
        " AND (quiet_end_hour IS NULL OR quiet_end_hour BETWEEN 0 AND 24)",
        name="quiet_hours",
    ),
    CheckConstraint("adapter_id IS NULL OR adapter_override_id IS NULL", name="one_adapter_field"),
    _tenant_fk(("tenant_key", "version_id"), "sequence_versions", ondelete="CASCADE"),
    _tenant_fk(("tenant_key", "adapter_id"), "channel_adapters"),
    _tenant_fk(("tenant_key", "adapter_override_id"), "channel_adapters"),
)

enrollments = Table(
    "enrollments",
    metadata,
    _id(),
    _tenant(),
    Column("sequence_id", Uuid(as_uuid=False), nullable=False),
    Column("sequence_version_id", Uuid(as_uuid=False), nullable=False),
    Column("subscriber_id", Text, nullable=False),
    Column("mode", Text, nullable=False, server_default="lifecycle"),
    Column("adapter_id", Uuid(as_uuid=False)),
    Column("state", Text, nullable=False, server_default="active"),
    Column("reason", Text),
    Column("recipient", Text, nullable=False),
    Column("timezone", Text),
    _jsonb("data"),
    _jsonb("metadata"),
    Column("enrolled_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("finished_at", DateTime(timezone=True)),
    # Monotonic per enrollment: the stream writes upserts that only move forward, so a
    # late batch can never undo a reply committed out of band (migration 0002).
    Column("version", BigInteger, nullable=False, server_default=text("0")),
    _inserted_at(),
    _updated_at(),
    _tenant_check(),
    UniqueConstraint("tenant_key", "id"),
    CheckConstraint(_in("state", ENROLLMENT_STATES), name="state"),
    CheckConstraint(_in("mode", ("lifecycle", "outbound")), name="mode"),
    CheckConstraint("state <> 'rejected' OR reason IS NOT NULL", name="rejected_has_reason"),
    CheckConstraint("adapter_id IS NULL OR mode = 'outbound'", name="pin_only_outbound"),
    _tenant_fk(("tenant_key", "sequence_id"), "sequences"),
    _tenant_fk(("tenant_key", "sequence_version_id"), "sequence_versions"),
    _tenant_fk(("tenant_key", "adapter_id"), "channel_adapters"),
    Index(
        "uq_enrollments_tenant_key_sequence_id_subscriber_id_live",
        "tenant_key",
        "sequence_id",
        "subscriber_id",
        unique=True,
        postgresql_where=text(
            "state IN (" + ", ".join(f"'{s}'" for s in LIVE_ENROLLMENT_STATES) + ")"
        ),
    ),
    Index(
        "ix_enrollments_tenant_key_adapter_id",
        "tenant_key",
        "adapter_id",
        postgresql_where=text("adapter_id IS NOT NULL"),
    ),
)

step_executions = Table(
    "step_executions",
    metadata,
    _id(),
    _tenant(),
    Column("enrollment_id", Uuid(as_uuid=False), nullable=False),
    Column("step_id", Uuid(as_uuid=False), nullable=False),
    Column("attempt", Integer, nullable=False, server_default=text("0")),
    Column("adapter_id", Uuid(as_uuid=False)),
    Column("status", Text, nullable=False, server_default="intent"),
    Column("recipient", Text),
    Column("out_message_id", Text),
    Column("provider_message_id", Text),
    _jsonb("payload"),
    Column("error", Text),
    Column("scheduled_for", DateTime(timezone=True)),
    Column("sent_at", DateTime(timezone=True)),
    Column("resolution", Text),  # how an operator settled it once ambiguous (migration 0003)
    Column("resolved_at", DateTime(timezone=True)),
    _inserted_at(),
    _updated_at(),
    _tenant_check(),
    UniqueConstraint("tenant_key", "id"),
    UniqueConstraint("enrollment_id", "step_id", "attempt"),
    CheckConstraint(_in("status", EXECUTION_STATUSES), name="status"),
    CheckConstraint(_in("resolution", RESOLUTIONS, nullable=True), name="resolution"),
    CheckConstraint("attempt >= 0", name="attempt_nonnegative"),
    CheckConstraint("status <> 'sent' OR sent_at IS NOT NULL", name="sent_has_sent_at"),
    _tenant_fk(("tenant_key", "enrollment_id"), "enrollments", ondelete="CASCADE"),
    _tenant_fk(("tenant_key", "step_id"), "steps"),
    _tenant_fk(("tenant_key", "adapter_id"), "channel_adapters"),
    Index(
        "uq_step_executions_out_message_id",
        "out_message_id",
        unique=True,
        postgresql_where=text("out_message_id IS NOT NULL"),
    ),
    Index(
        "ix_step_executions_tenant_key_provider_message_id",
        "tenant_key",
        "provider_message_id",
        postgresql_where=text("provider_message_id IS NOT NULL"),
    ),
    Index("ix_step_executions_enrollment_id_inserted_at", "enrollment_id", "inserted_at"),
    Index(
        "ix_step_executions_tenant_key_updated_at",
        "tenant_key",
        "updated_at",
        postgresql_where=text("status = 'ambiguous'"),
    ),
)

message_events = Table(
    "message_events",
    metadata,
    _id(),
    _tenant(),
    Column("event_type", Text, nullable=False),
    Column("channel", Text, nullable=False, server_default="email"),
    Column("provider", Text),
    Column("adapter_id", Uuid(as_uuid=False)),
    Column("enrollment_id", Uuid(as_uuid=False)),
    Column("step_execution_id", Uuid(as_uuid=False)),
    Column("provider_message_id", Text),
    Column("provider_event_id", Text),
    Column("message_id", Text),
    Column("in_reply_to", Text),
    Column("references_list", ARRAY(Text)),
    _jsonb("data"),
    Column("occurred_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    _inserted_at(),
    _tenant_check(),
    CheckConstraint("event_type ~ '^[a-z][a-z_]*$'", name="event_type_snake_case"),
    _tenant_fk(("tenant_key", "adapter_id"), "channel_adapters"),
    _tenant_fk(("tenant_key", "enrollment_id"), "enrollments", ondelete="CASCADE"),
    _tenant_fk(("tenant_key", "step_execution_id"), "step_executions", ondelete="CASCADE"),
    Index(
        "uq_message_events_tenant_key_provider_event_id",
        "tenant_key",
        "provider_event_id",
        unique=True,
        postgresql_where=text("provider_event_id IS NOT NULL"),
    ),
    Index(
        "ix_message_events_adapter_id_occurred_at",
        "adapter_id",
        "occurred_at",
        postgresql_where=text("adapter_id IS NOT NULL"),
    ),
    Index(
        "ix_message_events_in_reply_to",
        "in_reply_to",
        postgresql_where=text("in_reply_to IS NOT NULL"),
    ),
    Index(
        "ix_message_events_enrollment_id",
        "enrollment_id",
        postgresql_where=text("enrollment_id IS NOT NULL"),
    ),
)

suppressions = Table(
    "suppressions",
    metadata,
    _id(),
    _tenant(),
    Column("channel", Text, nullable=False, server_default="email"),
    Column("recipient", Text, nullable=False),
    Column("recipient_normalized", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("source", Text),
    _jsonb("data"),
    _inserted_at(),
    _tenant_check(),
    UniqueConstraint("tenant_key", "channel", "recipient_normalized"),
    CheckConstraint(_in("reason", SUPPRESSION_REASONS), name="reason"),
    CheckConstraint("recipient_normalized = lower(btrim(recipient_normalized))", name="normalized"),
)

adapter_health_transitions = Table(
    "adapter_health_transitions",
    metadata,
    _id(),
    _tenant(),
    Column("adapter_id", Uuid(as_uuid=False), nullable=False),
    Column("from_state", Text),
    Column("to_state", Text),
    Column("reason", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("health_score", Float),
    Column("resting_until", DateTime(timezone=True)),
    Column("at", DateTime(timezone=True), nullable=False),
    _jsonb("data"),
    _inserted_at(),
    _tenant_check(),
    CheckConstraint(_in("from_state", HEALTH_STATES, nullable=True), name="from_state"),
    CheckConstraint(_in("to_state", HEALTH_STATES, nullable=True), name="to_state"),
    _tenant_fk(("tenant_key", "adapter_id"), "channel_adapters", ondelete="CASCADE"),
    Index("ix_adapter_health_transitions_adapter_id_at", "adapter_id", "at"),
)

adapter_day_counters = Table(
    "adapter_day_counters",
    metadata,
    _tenant(),
    Column("adapter_id", Uuid(as_uuid=False), nullable=False),
    Column("local_day", Date, nullable=False),
    Column("sent", Integer, nullable=False, server_default=text("0")),
    # The effective cap the last granted claim was checked against (migration 0002), so
    # operators and the demo can show "sent vs cap" per local day from one row.
    Column("cap", Integer),
    Column("last_sent_at", DateTime(timezone=True)),
    _updated_at(),
    PrimaryKeyConstraint("adapter_id", "local_day"),
    _tenant_check(),
    CheckConstraint("sent >= 0", name="sent_nonnegative"),
    _tenant_fk(("tenant_key", "adapter_id"), "channel_adapters", ondelete="CASCADE"),
)

# The inbound pump's cursor (streams/pump/cursor.py, migration 0004_inbound_cursors): per
# adapter and folder UIDVALIDITY + last UID, saved only after Kafka acknowledged the records.
inbound_cursors = Table(
    "inbound_cursors",
    metadata,
    _tenant(),
    Column("adapter_id", Uuid(as_uuid=False), nullable=False),
    Column("folder", Text, nullable=False),
    Column("uidvalidity", BigInteger, nullable=False),
    Column("last_uid", BigInteger, nullable=False, server_default=text("0")),
    _updated_at(),
    PrimaryKeyConstraint("adapter_id", "folder"),
    _tenant_check(),
    CheckConstraint("last_uid >= 0", name="last_uid_nonnegative"),
    _tenant_fk(("tenant_key", "adapter_id"), "channel_adapters", ondelete="CASCADE"),
)

# Message-IDs the pump produced, so a UIDVALIDITY resync produces nothing twice.
inbound_seen = Table(
    "inbound_seen",
    metadata,
    _tenant(),
    Column("adapter_id", Uuid(as_uuid=False), nullable=False),
    Column("message_id", Text, nullable=False),
    Column("folder", Text, nullable=False),
    Column("uid", BigInteger, nullable=False),
    Column("seen_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    PrimaryKeyConstraint("adapter_id", "message_id"),
    _tenant_check(),
    _tenant_fk(("tenant_key", "adapter_id"), "channel_adapters", ondelete="CASCADE"),
    Index("ix_inbound_seen_seen_at", "seen_at"),
)

# The Gmail and Microsoft Graph pumps' cursors (streams/pump/gmail.py, graph.py, migration
# 0005_inbound_api_cursors): per adapter and kind the historyId (Gmail) or the delta link
# (Graph), saved only after Kafka acknowledged the records, and the push registration (the
# Gmail watch or the Graph subscription) with its expiry, renewed before it runs out.
inbound_api_cursors = Table(
    "inbound_api_cursors",
    metadata,
    _tenant(),
    Column("adapter_id", Uuid(as_uuid=False), nullable=False),
    Column("kind", Text, nullable=False),
    Column("cursor", Text),
    Column("watch_id", Text),
    Column("watch_expires_at", DateTime(timezone=True)),
    _updated_at(),
    PrimaryKeyConstraint("adapter_id", "kind"),
    _tenant_check(),
    CheckConstraint("kind IN ('gmail', 'graph')", name="kind_known"),
    _tenant_fk(("tenant_key", "adapter_id"), "channel_adapters", ondelete="CASCADE"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    _tenant(),
    Column("topic", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("value", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("published_at", DateTime(timezone=True)),
    _tenant_check(),
    CheckConstraint("partition >= 0", name="partition_nonnegative"),
    Index("ix_outbox_unpublished", "id", postgresql_where=text("published_at IS NULL")),
)
