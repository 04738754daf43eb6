"""The host-facing Python API (SPEC §4): ``DripDrop``, one client per process.

Every call takes ``tenant_key`` and is tenant-scoped. **Tenant rule**: an id that
exists nowhere raises ``NotFoundError``; an id that exists under another tenant
raises ``TenantMismatchError``; another tenant's row is never returned or changed.

Two kinds of calls:

* **authoring** (adapters, pools, members, sequences, versions, steps, health):
  validate, write PostgreSQL and insert the ``config`` change (and, for
  ``set_adapter_health``, the ``health-signals`` command) into the outbox in the
  **same transaction**; after commit the outbox is relayed to Kafka (best effort;
  a crash in between is repaired by the next relay, see ``streams/outbox.py``);
* **commands** (enroll, pause, resume, unenroll, repin, ingest): validate against
  PostgreSQL synchronously, then produce one record to the ``enrollments`` or
  ``inbound-messages`` topic, keyed by ``tenant_key``, and wait for the broker's
  acknowledgement. The stream processor applies them and writes the enrollment rows.

Input errors are ``dripdrop_core.errors.InputError`` subclasses with a clear
message and a ``code``; broker trouble is ``streams.kafka.PublishError``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Self

from pydantic import BaseModel
from sqlalchemy import Connection, Engine, create_engine

from dripdrop_core import enrollment as enrollment_machine
from dripdrop_core.correlation import Intent, normalize_message_id, split_references
from dripdrop_core.errors import (
    ConflictError,
    DripDropError,
    InputError,
    NotFoundError,
    TenantMismatchError,
)
from dripdrop_core.models import (
    Adapter,
    DelayFrom,
    DomainThrottle,
    EnrollmentState,
    HealthState,
    MemberClass,
    Mode,
    PinPolicy,
    Pool,
    PoolMember,
    ReplyBehavior,
    SendingWindow,
    SequenceVersion,
    Step,
)
from dripdrop_core.models import (
    Sequence as SequenceModel,
)
from dripdrop_core.selection import pool_warnings, validate_member
from dripdrop_core.throttles import parse_domain
from streams.api._errors import (
    ClassMismatchError,
    InvalidInputError,
    NotPoolMemberError,
    PoolInUseError,
)
from streams.api._models import Accepted, Enrollment, InboundMessage, PoolView
from streams.api._validation import (
    check_email,
    check_known_provider,
    check_no_inline_secret,
    check_no_newline,
    check_nonempty,
    check_timezone,
    checked_prospect,
    validated,
)
from streams.codecs import Codecs, partition_for
from streams.db import authoring as repo
from streams.db.tables import adapter_pools, domain_throttles, outbox
from streams.kafka import Delivery, KafkaPublisher, Publisher, PublishError
from streams.outbox import EntityType, enqueue_config_change, pending_count, relay_all
from streams.processor.render import template_errors
from streams.sends import (
    AlreadyReissuedError,
    AmbiguousSend,
    NotAmbiguousError,
    Resolver,
    SendResolution,
    list_ambiguous_sends,
)
from streams.settings import Settings
from streams.suppressions import ImportResult, Suppression, SuppressionLists, as_rows

__all__ = [
    "Accepted",
    "AlreadyReissuedError",
    "AmbiguousSend",
    "ClassMismatchError",
    "ConflictError",
    "DripDrop",
    "DripDropError",
    "Enrollment",
    "InboundMessage",
    "InputError",
    "InvalidInputError",
    "NotAmbiguousError",
    "NotFoundError",
    "NotPoolMemberError",
    "PoolInUseError",
    "PoolView",
    "PublishError",
    "SendResolution",
    "Suppression",
    "TenantMismatchError",
    "enrollment_id_for",
]

# Names defined in the private modules read as ``streams.api.X`` in reprs and tracebacks,
# as they did before the split (httpx does the same in its ``__init__``).
for _name in (
    "Accepted",
    "ClassMismatchError",
    "Enrollment",
    "InboundMessage",
    "InvalidInputError",
    "NotPoolMemberError",
    "PoolInUseError",
    "PoolView",
):
    globals()[_name].__module__ = __name__
del _name

log = logging.getLogger(__name__)

ENROLLMENT_NAMESPACE = uuid.UUID("6f1d5c8e-2b7a-5d4e-9c3f-0a1b2c3d4e5f")
"""uuid5 namespace of enrollment ids; changing it would break idempotent re-enrollment."""

ADAPTER_FIELDS = frozenset(Adapter.model_fields) - {"id", "tenant_key"}
LIVE_STATES = enrollment_machine.LIVE


def enrollment_id_for(
    tenant_key: str, sequence_id: str, subscriber_id: str, generation: int = 0
) -> str:
    """Deterministic enrollment id: the same subscriber in the same sequence, the same id;
    a re-enrollment (``generation`` 1, 2, …; SPEC §7) has an id of its own."""
    name = f"{tenant_key}\x1f{sequence_id}\x1f{subscriber_id}"
    if generation:
        name += f"\x1f{generation}"
    return str(uuid.uuid5(ENROLLMENT_NAMESPACE, name))


def _enrollment_id(
    known: Mapping[str, str], tenant_key: str, sequence: SequenceModel, subscriber_id: str
) -> str:
    """The id an ``enroll`` of ``subscriber_id`` names, given the enrollments ``known``
    (id → state): the latest one's while it is live or re-enrollment is not allowed, else
    the next generation's (``dripdrop_core.enrollment.next_generation``)."""
    generation = 0
    while enrollment_id_for(tenant_key, sequence.id, subscriber_id, generation + 1) in known:
        generation += 1
    latest_id = enrollment_id_for(tenant_key, sequence.id, subscriber_id, generation)
    latest = known.get(latest_id)
    chosen = enrollment_machine.next_generation(
        None if latest is None else EnrollmentState(latest),
        generation,
        allow_reenrollment=sequence.allow_reenrollment,
    )
    return enrollment_id_for(tenant_key, sequence.id, subscriber_id, chosen)


# --- the client -------------------------------------------------------------------------------


class DripDrop:
    """Authoring and command API. Build with ``DripDrop(settings)``; close it (or use ``with``).

    Args:
        settings: database URL, bootstrap servers, topic prefix, partitions.
        engine: an SQLAlchemy engine (default: one from ``settings.sqlalchemy_url``).
        publisher: a producer (default: ``KafkaPublisher(settings)``, created on first use).
        codecs: Avro codecs (default: ``Codecs(settings)``).
        relay_after_commit: relay the outbox right after each authoring commit.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        publisher: Publisher | None = None,
        codecs: Codecs | None = None,
        relay_after_commit: bool = True,
    ) -> None:
        self.settings = settings
        self._owns_engine = engine is None
        # pre_ping: a pooled connection that a PostgreSQL restart closed is replaced, not
        # handed to the caller as an AdminShutdown error.
        self.engine = (
            engine
            if engine is not None
            else create_engine(settings.sqlalchemy_url, pool_pre_ping=True)
        )
        self._publisher = publisher
        self._owns_publisher = publisher is None
        self.codecs = codecs if codecs is not None else Codecs(settings)
        self.relay_after_commit = relay_after_commit
        self._closed = False

    # lifecycle

    @property
    def publisher(self) -> Publisher:
        if self._closed:
            raise RuntimeError("DripDrop client is closed")
        if self._publisher is None:
            self._publisher = KafkaPublisher(self.settings)
        return self._publisher

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_publisher and self._publisher is not None:
            self._publisher.close()
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # outbox plumbing

    def relay_outbox(self) -> int:
        """Publish every pending outbox row; return how many were published."""
        return relay_all(self.engine, self.publisher, topic_prefix=self.settings.topic_prefix)

    def pending_outbox(self) -> int:
        """Unpublished outbox rows of this deployment (topic prefix)."""
        return pending_count(self.engine, topic_prefix=self.settings.topic_prefix)

    def _after_commit(self) -> None:
        if not self.relay_after_commit:
            return
        try:
            relay_all(self.engine, self.publisher, topic_prefix=self.settings.topic_prefix)
        except PublishError as exc:
            # The change is committed and stays in the outbox; the next relay publishes it.
            log.warning("config change committed but not yet published: %s", exc)

    def _config(
        self,
        conn: Connection,
        entity_type: EntityType,
        entity_id: str,
        tenant_key: str,
        entity: BaseModel | None,
    ) -> None:
        enqueue_config_change(
            conn,
            settings=self.settings,
            codecs=self.codecs,
            entity_type=entity_type,
            entity_id=entity_id,
            tenant_key=tenant_key,
            entity=entity,
        )

    def _produce(self, topic: str, tenant_key: str, record: dict[str, Any]) -> Delivery:
        value = self.codecs.for_topic(topic).encode(record)
        publisher = self.publisher
        publisher.produce(self.settings.topic(topic), key=tenant_key, value=value)
        deliveries = publisher.flush()
        if not deliveries:
            raise PublishError(f"no delivery report for the {topic} record")
        return deliveries[-1]

    # adapters

    def create_channel_adapter(
        self,
        *,
        tenant_key: str,
        name: str,
        provider: str = "smtp",
        channel: str = "email",
        from_address: str | None = None,
        timezone: str = "UTC",
        active: bool = True,
        health_state: HealthState | str | None = None,
        health_score: float | None = None,
        daily_cap: int | None = None,
        ramp_floor: int | None = None,
        ramp_increment: int | None = None,
        ramp_started_at: datetime | None = None,
        min_gap_seconds: int = 0,
        config: Mapping[str, Any] | None = None,
    ) -> Adapter:
        """Create a sending identity (mailbox or ESP account) with its ramp and pacing fields."""
        check_nonempty("tenant_key", tenant_key)
        check_nonempty("name", name)
        check_timezone("timezone", timezone)
        if from_address is not None:
            check_email("from_address", from_address)
        check_known_provider(provider)
        check_no_inline_secret(config)
        adapter = validated(
            Adapter,
            {
                "id": repo.new_id(),
                "tenant_key": tenant_key,
                "name": name,
                "provider": provider,
                "channel": channel,
                "from_address": from_address,
                "timezone": timezone,
                "active": active,
                "health_state": health_state,
                "health_score": health_score,
                "daily_cap": daily_cap,
                "ramp_floor": ramp_floor,
                "ramp_increment": ramp_increment,
                "ramp_started_at": ramp_started_at,
                "min_gap_seconds": min_gap_seconds,
                "config": dict(config or {}),
            },
        )
        with self.engine.begin() as conn:
            repo.insert_adapter(conn, adapter)
            self._config(conn, "adapter", adapter.id, tenant_key, adapter)
        self._after_commit()
        return adapter

    def update_channel_adapter(
        self, adapter_id: str, *, tenant_key: str, **changes: Any
    ) -> Adapter:
        """Change adapter fields (e.g. the seed's ramp fields); only the given ones change.

        Accepted fields: every ``Adapter`` field but ``id`` and ``tenant_key``. Passing
        ``None`` clears a nullable field. A health change is recorded as a transition.
        """
        unknown = set(changes) - ADAPTER_FIELDS
        if unknown:
            raise InvalidInputError(f"unknown adapter field(s): {', '.join(sorted(unknown))}")
        if not changes:
            raise InvalidInputError("nothing to update: give at least one field")
        if "timezone" in changes:
            check_timezone("timezone", changes["timezone"])
        if "provider" in changes:
            check_known_provider(str(changes["provider"]))
        if changes.get("from_address") is not None:
            check_email("from_address", changes["from_address"])
        if "config" in changes:
            check_no_inline_secret(changes["config"])
        with self.engine.begin() as conn:
            before = repo.adapter_from_row(repo.load_owned(conn, "adapter", adapter_id, tenant_key))
            after = validated(Adapter, {**before.model_dump(), **changes})
            repo.update_adapter(conn, after)
            # A health change reaches the processor as this config change; the worker
            # records its transition row (one writer: see set_adapter_health).
            self._config(conn, "adapter", after.id, tenant_key, after)
        self._after_commit()
        return after

    def set_adapter_health(
        self,
        adapter_id: str,
        *,
        tenant_key: str,
        health_state: HealthState | str | None,
        health_score: float | None = None,
        resting_until: datetime | None = None,
        source: str = "operator",
    ) -> Adapter:
        """External health signal (SPEC §5.7): set any state, with ``resting_until`` and a score.

        ``resting_until`` and ``health_score`` are overwritten (cleared when omitted).
        Writes the adapter, and emits the ``config`` change and a ``set_health`` record on
        ``health-signals`` through the outbox, atomically. The transition row is the
        worker's to write, once, when it applies whichever of the two arrives first (the
        runtime state it changes lives there): the API writing one too made two rows of
        every transition.
        """
        check_nonempty("source", source)
        with self.engine.begin() as conn:
            before = repo.adapter_from_row(repo.load_owned(conn, "adapter", adapter_id, tenant_key))
            after = validated(
                Adapter,
                {
                    **before.model_dump(),
                    "health_state": health_state,
                    "health_score": health_score,
                    "resting_until": resting_until,
                },
            )
            repo.update_adapter(conn, after)
            self._config(conn, "adapter", after.id, tenant_key, after)
            signal = {
                "event_id": str(uuid.uuid4()),
                "tenant_key": tenant_key,
                "occurred_at": datetime.now(UTC),
                "kind": "set_health",
                "adapter_id": after.id,
                "health_state": None if after.health_state is None else str(after.health_state),
                "resting_until": after.resting_until,
                "score": after.health_score,
                "source": source,
            }
            self._enqueue(conn, "health-signals", tenant_key, signal)
        self._after_commit()
        return after

    def _enqueue(
        self, conn: Connection, topic: str, tenant_key: str, record: dict[str, Any]
    ) -> None:
        conn.execute(
            outbox.insert().values(
                tenant_key=tenant_key,
                topic=self.settings.topic(topic),
                key=tenant_key,
                partition=partition_for(tenant_key, self.settings.partitions),
                value=self.codecs.for_topic(topic).encode(record),
            )
        )

    def get_adapter(self, adapter_id: str, *, tenant_key: str) -> Adapter:
        with self.engine.connect() as conn:
            return repo.adapter_from_row(repo.load_owned(conn, "adapter", adapter_id, tenant_key))

    # pools

    def create_adapter_pool(
        self,
        *,
        tenant_key: str,
        name: str,
        on_pin_unavailable: PinPolicy | str = PinPolicy.REASSIGN,
    ) -> Pool:
        """Create a tenant's sender pool; ``on_pin_unavailable`` is ``pause`` or ``reassign``."""
        check_nonempty("tenant_key", tenant_key)
        check_nonempty("name", name)
        pool = validated(
            Pool,
            {
                "id": repo.new_id(),
                "tenant_key": tenant_key,
                "name": name,
                "on_pin_unavailable": on_pin_unavailable,
            },
        )
        with self.engine.begin() as conn:
            repo.insert_pool(conn, pool)
            self._config(conn, "pool", pool.id, tenant_key, pool)
        self._after_commit()
        return pool

    def delete_adapter_pool(self, pool_id: str, *, tenant_key: str) -> Pool:
        """Delete a pool and its members; refused while a sequence version uses it."""
        with self.engine.begin() as conn:
            pool = repo.pool_from_row(repo.load_owned(conn, "pool", pool_id, tenant_key))
            versions = repo.versions_using_pool(conn, pool.id)
            if versions:
                live = repo.live_enrollment_count(conn, pool.id)
                raise PoolInUseError(
                    f"pool {pool.id} is used by {versions} sequence version(s) "
                    f"with {live} active or paused enrollment(s)"
                )
            members = repo.list_members(conn, pool.id, tenant_key)
            conn.execute(adapter_pools.delete().where(adapter_pools.c.id == pool.id))
            for member in members:
                self._config(
                    conn, "pool_member", f"{pool.id}:{member.adapter_id}", tenant_key, None
                )
            self._config(conn, "pool", pool.id, tenant_key, None)
        self._after_commit()
        return pool

    def get_pool(self, pool_id: str, *, tenant_key: str) -> Pool:
        with self.engine.connect() as conn:
            return repo.pool_from_row(repo.load_owned(conn, "pool", pool_id, tenant_key))

    def list_pool_members(self, pool_id: str, *, tenant_key: str) -> list[PoolMember]:
        with self.engine.connect() as conn:
            pool = repo.pool_from_row(repo.load_owned(conn, "pool", pool_id, tenant_key))
            return repo.list_members(conn, pool.id, tenant_key)

    def inspect_pool(self, pool_id: str, *, tenant_key: str) -> PoolView:
        """A pool, its members, their adapters and validation warnings (runbook view)."""
        with self.engine.connect() as conn:
            pool = repo.pool_from_row(repo.load_owned(conn, "pool", pool_id, tenant_key))
            members = repo.list_members(conn, pool.id, tenant_key)
            adapters = [
                repo.adapter_from_row(repo.load_owned(conn, "adapter", m.adapter_id, tenant_key))
                for m in members
            ]
        return PoolView(
            pool=pool,
            members=members,
            adapters=adapters,
            warnings=[str(w) for w in pool_warnings(members)],
        )

    def add_pool_member(
        self,
        pool_id: str,
        *,
        tenant_key: str,
        adapter_id: str,
        member_class: MemberClass | str = MemberClass.MAILBOX,
        weight: int = 1,
        active: bool = True,
    ) -> PoolMember:
        """Add one of the tenant's adapters to one of its pools (SPEC §5.1).

        Raises:
            TenantMismatchError: the pool or the adapter belongs to another tenant.
            ClassMismatchError: an ESP provider added as ``mailbox``.
            ConflictError: the adapter is already a member.
        """
        with self.engine.begin() as conn:
            pool = repo.pool_from_row(repo.load_owned(conn, "pool", pool_id, tenant_key))
            adapter = repo.adapter_from_row(
                repo.load_owned(conn, "adapter", adapter_id, tenant_key)
            )
            member = validated(
                PoolMember,
                {
                    "pool_id": pool.id,
                    "adapter_id": adapter.id,
                    "tenant_key": tenant_key,
                    "member_class": member_class,
                    "weight": weight,
                    "active": active,
                },
            )
            try:
                validate_member(pool, adapter, member)
            except ConflictError as exc:
                if exc.code == "class_mismatch":
                    raise ClassMismatchError(str(exc)) from None
                raise
            repo.insert_member(conn, member)
            self._config(conn, "pool_member", f"{pool.id}:{adapter.id}", tenant_key, member)
        self._after_commit()
        return member

    def remove_pool_member(self, pool_id: str, *, tenant_key: str, adapter_id: str) -> PoolMember:
        """Remove a member; existing pins are untouched (SPEC §5.2: no automatic rebalancing)."""
        with self.engine.begin() as conn:
            pool = repo.pool_from_row(repo.load_owned(conn, "pool", pool_id, tenant_key))
            repo.load_owned(conn, "adapter", adapter_id, tenant_key)
            member = repo.delete_member(conn, pool.id, adapter_id, tenant_key)
            self._config(conn, "pool_member", f"{pool.id}:{member.adapter_id}", tenant_key, None)
        self._after_commit()
        return member

    # recipient-domain throttles

    def set_domain_throttle(
        self,
        *,
        tenant_key: str,
        domain: str,
        per_hour: int | None = None,
        per_day: int | None = None,
        adapter_id: str | None = None,
    ) -> DomainThrottle:
        """Limit sends to a recipient domain per UTC hour and/or day (SPEC §13), through
        ``adapter_id`` or (``None``) through every adapter of the tenant together.

        Setting it again for the same domain and scope replaces the limits (same id, the
        worker's counts carry on). A send over a limit is deferred, reason
        ``domain_throttle``, until the next UTC hour or day."""
        check_nonempty("tenant_key", tenant_key)
        if per_hour is None and per_day is None:
            raise InvalidInputError("a throttle needs per_hour, per_day or both")
        try:
            name = parse_domain(domain)
        except InputError as exc:
            raise InvalidInputError(str(exc)) from None
        throttle = validated(
            DomainThrottle,
            {
                "id": repo.new_id(),
                "tenant_key": tenant_key,
                "domain": name,
                "adapter_id": adapter_id,
                "per_hour": per_hour,
                "per_day": per_day,
            },
        )
        with self.engine.begin() as conn:
            if adapter_id is not None:
                repo.load_owned(conn, "adapter", adapter_id, tenant_key)
            throttle = repo.upsert_throttle(conn, throttle)
            self._config(conn, "domain_throttle", throttle.id, tenant_key, throttle)
        self._after_commit()
        return throttle

    def remove_domain_throttle(self, throttle_id: str, *, tenant_key: str) -> DomainThrottle:
        """Lift a throttle; sends it deferred go at their next evaluation."""
        with self.engine.begin() as conn:
            row = repo.load_owned(conn, "domain_throttle", throttle_id, tenant_key)
            throttle = repo.throttle_from_row(row)
            conn.execute(domain_throttles.delete().where(domain_throttles.c.id == throttle.id))
            self._config(conn, "domain_throttle", throttle.id, tenant_key, None)
        self._after_commit()
        return throttle

    def list_domain_throttles(self, *, tenant_key: str) -> list[DomainThrottle]:
        with self.engine.connect() as conn:
            return repo.list_throttles(conn, tenant_key)

    # sequences, versions, steps

    def create_sequence(
        self,
        *,
        tenant_key: str,
        key: str,
        name: str | None = None,
        allow_reenrollment: bool = False,
    ) -> SequenceModel:
        check_nonempty("tenant_key", tenant_key)
        check_nonempty("key", key)
        sequence = validated(
            SequenceModel,
            {
                "id": repo.new_id(),
                "tenant_key": tenant_key,
                "key": key,
                "name": name or key,
                "allow_reenrollment": allow_reenrollment,
            },
        )
        with self.engine.begin() as conn:
            repo.insert_sequence(conn, sequence)
            self._config(conn, "sequence", sequence.id, tenant_key, sequence)
        self._after_commit()
        return sequence

    def create_sequence_version(
        self,
        sequence_id: str,
        *,
        tenant_key: str,
        version: int,
        mode: Mode | str = Mode.LIFECYCLE,
        config: Mapping[str, Any] | None = None,
        active: bool = True,
        one_click_unsubscribe: bool | None = None,
        company_stop: bool | None = None,
    ) -> SequenceVersion:
        """Create a version; ``mode="outbound"`` needs ``config["pool_id"]`` of the same tenant
        and may set ``config["max_wait_seconds"]`` (how long an enrollment waits for capacity
        before it is rejected; unset: as long as it takes).

        ``one_click_unsubscribe`` (or ``config["one_click_unsubscribe"]``): the version's sends
        carry RFC 8058 ``List-Unsubscribe`` / ``List-Unsubscribe-Post`` and templates get
        ``{{ unsubscribe_url }}`` (SPEC §13). Unset: on for lifecycle, off for outbound.

        ``company_stop`` (or ``config["company_stop"]``, default off): a human reply on one
        of the version's enrollments stops the tenant's other live enrollments to the same
        company domain whose versions opted in too (free-mail domains never; SPEC §13)."""
        config = dict(config or {})
        if one_click_unsubscribe is not None:
            config["one_click_unsubscribe"] = one_click_unsubscribe
        if company_stop is not None:
            config["company_stop"] = company_stop
        stop_company = config.get("company_stop", False)
        if not isinstance(stop_company, bool):
            raise InvalidInputError("config.company_stop must be true or false")
        one_click = config.get("one_click_unsubscribe")
        if one_click is not None and not isinstance(one_click, bool):
            raise InvalidInputError("config.one_click_unsubscribe must be true or false")
        raw_pool = config.get("pool_id")
        if raw_pool is not None and not isinstance(raw_pool, str):
            raise InvalidInputError("config.pool_id must be a string id")
        max_wait = config.get("max_wait_seconds")
        if max_wait is not None and (
            isinstance(max_wait, bool) or not isinstance(max_wait, int) or max_wait <= 0
        ):
            raise InvalidInputError("config.max_wait_seconds must be a positive whole number")
        with self.engine.begin() as conn:
            sequence = repo.sequence_from_row(
                repo.load_owned(conn, "sequence", sequence_id, tenant_key)
            )
            candidate = validated(
                SequenceVersion,
                {
                    "id": repo.new_id(),
                    "sequence_id": sequence.id,
                    "tenant_key": tenant_key,
                    "version": version,
                    "mode": mode,
                    "pool_id": None,
                    "active": active,
                    "max_wait_seconds": max_wait,
                    "one_click_unsubscribe": one_click,
                    "company_stop": stop_company,
                },
            )
            pool_id: str | None = None
            if candidate.mode is Mode.OUTBOUND:
                if raw_pool is None:
                    raise InvalidInputError(
                        "an outbound version requires config.pool_id", code="input"
                    )
                pool_id = repo.pool_from_row(repo.load_owned(conn, "pool", raw_pool, tenant_key)).id
                config["pool_id"] = pool_id
            elif raw_pool is not None or max_wait is not None:
                raise InvalidInputError(
                    "config.pool_id and config.max_wait_seconds are only for outbound versions"
                )
            created = candidate.model_copy(update={"pool_id": pool_id})
            repo.insert_version(conn, created, config)
            self._config(conn, "sequence_version", created.id, tenant_key, created)
        self._after_commit()
        return created

    def create_step(
        self,
        version_id: str,
        *,
        tenant_key: str,
        key: str,
        position: int,
        channel: str = "email",
        delay_seconds: int = 0,
        delay_from: DelayFrom | str = DelayFrom.PREVIOUS_SEND,
        subject_template: str = "",
        body_template: str = "",
        html_template: str | None = None,
        adapter_id: str | None = None,
        adapter_override_id: str | None = None,
        reply_behavior: ReplyBehavior | str = ReplyBehavior.STOP,
        sending_window: SendingWindow | Mapping[str, int] | tuple[int, int] | None = None,
        thread_continuity: bool = False,
    ) -> Step:
        """Create a step. Outbound versions take ``adapter_override_id`` (a new thread);
        lifecycle versions take ``adapter_id``; either adapter must be the tenant's.

        ``sending_window``: the hours of the recipient's local day when the step **may**
        send, ``(start_hour, end_hour)`` or ``{"start_hour", "end_hour"}`` (defaults 8 and
        21); outside it the step waits for the next opening; ``(22, 7)`` sends only at
        night. ``None``: any hour (SPEC §13).

        ``html_template``: an HTML alternative to ``body_template`` (the send becomes
        multipart/alternative; enrollment data is HTML-escaped in it). Templates with a
        syntax error are refused here (``InvalidInputError``), not at the first send."""
        check_nonempty("key", key)
        check_no_newline("subject_template", subject_template)
        if isinstance(sending_window, tuple):
            sending_window = {"start_hour": sending_window[0], "end_hour": sending_window[1]}
        with self.engine.begin() as conn:
            version = repo.version_from_row(
                repo.load_owned(conn, "sequence_version", version_id, tenant_key)
            )
            if version.mode is Mode.OUTBOUND and adapter_id is not None:
                raise InvalidInputError(
                    "outbound steps send through the pinned adapter; use adapter_override_id"
                )
            if version.mode is Mode.LIFECYCLE and adapter_override_id is not None:
                raise InvalidInputError("adapter_override_id is only for outbound versions")
            for field, ref in (
                ("adapter_id", adapter_id),
                ("adapter_override_id", adapter_override_id),
            ):
                if ref is None:
                    continue
                adapter = repo.adapter_from_row(repo.load_owned(conn, "adapter", ref, tenant_key))
                if adapter.channel != channel:
                    raise ConflictError(
                        f"{field} {adapter.id} sends on {adapter.channel}, the step on {channel}",
                        code="channel_mismatch",
                    )
            step = validated(
                Step,
                {
                    "id": repo.new_id(),
                    "version_id": version.id,
                    "tenant_key": tenant_key,
                    "key": key,
                    "position": position,
                    "channel": channel,
                    "delay_seconds": delay_seconds,
                    "delay_from": delay_from,
                    "subject_template": subject_template,
                    "body_template": body_template,
                    "html_template": html_template,
                    "adapter_id": adapter_id,
                    "adapter_override_id": adapter_override_id,
                    "reply_behavior": reply_behavior,
                    "sending_window": sending_window,
                    "thread_continuity": thread_continuity,
                },
            )
            errors = template_errors(step)
            if errors:
                raise InvalidInputError("template does not compile: " + "; ".join(errors))
            repo.insert_step(conn, step)
            self._config(conn, "step", step.id, tenant_key, step)
        self._after_commit()
        return step

    # enrollment commands

    def enroll(
        self,
        *,
        tenant_key: str,
        sequence_id: str,
        subscriber_id: str,
        recipient: str,
        data: Mapping[str, Any] | None = None,
        recipient_timezone: str | None = None,
        sequence_version_id: str | None = None,
    ) -> Accepted:
        """Enroll a subscriber; returns the deterministic ``enrollment_id`` (idempotent).

        While the subscriber's enrollment in the sequence is live, or when it has finished and
        the sequence does not allow re-enrollment, this names that enrollment (the processor
        answers ``enrollment.duplicate``). When it has finished (as PostgreSQL shows it) and
        ``allow_reenrollment`` is set, this is a new enrollment with an id of its own: a new
        pin, thread and step executions (SPEC §7).

        Raises:
            NotFoundError / TenantMismatchError: unknown sequence or version.
            ConflictError: the sequence has no active version.
            InvalidInputError: bad recipient, timezone or data.
        """
        prospect = {
            "subscriber_id": subscriber_id,
            "recipient": recipient,
            "data": data,
            "recipient_timezone": recipient_timezone,
        }
        [record] = self._enroll_records(tenant_key, sequence_id, sequence_version_id, [prospect])
        return self._accepted(record, self._produce("enrollments", tenant_key, record))

    def enroll_many(
        self,
        *,
        tenant_key: str,
        sequence_id: str,
        prospects: Iterable[Mapping[str, Any]],
        sequence_version_id: str | None = None,
    ) -> list[Accepted]:
        """Enroll many subscribers at once (a lead import): every prospect is checked first,
        then all are produced and acknowledged together, in order.

        Each prospect is a mapping with ``subscriber_id``, ``recipient`` and optionally
        ``data`` and ``recipient_timezone``, as ``enroll`` takes them. Nothing is produced
        when any prospect is invalid.

        Raises:
            InvalidInputError: a prospect is invalid (the message names its index).
            NotFoundError / TenantMismatchError / ConflictError: as ``enroll``.
        """
        records = self._enroll_records(
            tenant_key, sequence_id, sequence_version_id, list(prospects)
        )
        topic = self.settings.topic("enrollments")
        codec = self.codecs.for_topic("enrollments")
        for record in records:
            self.publisher.produce(topic, key=tenant_key, value=codec.encode(record))
        deliveries = self.publisher.flush() if records else []
        if len(deliveries) != len(records):
            raise PublishError("not every enrollments record was acknowledged")
        # One key, one partition: the broker acknowledges them in the order produced.
        return [self._accepted(r, d) for r, d in zip(records, deliveries, strict=True)]

    def _enroll_records(
        self,
        tenant_key: str,
        sequence_id: str,
        sequence_version_id: str | None,
        prospects: list[Mapping[str, Any]],
    ) -> list[dict[str, Any]]:
        """Validate prospects and resolve the version once; the ``enroll`` commands."""
        checked: list[tuple[str, str, str | None, str]] = []
        for index, prospect in enumerate(prospects):
            where = f"prospect {index}: " if len(prospects) > 1 else ""
            try:
                checked.append(checked_prospect(prospect))
            except InvalidInputError as exc:
                raise InvalidInputError(f"{where}{exc}", code=exc.code) from None
        with self.engine.connect() as conn:
            sequence = repo.sequence_from_row(
                repo.load_owned(conn, "sequence", sequence_id, tenant_key)
            )
            if sequence_version_id is not None:
                version = repo.version_from_row(
                    repo.load_owned(conn, "sequence_version", sequence_version_id, tenant_key)
                )
                if version.sequence_id != sequence.id:
                    raise InvalidInputError(
                        f"sequence_version {version.id} is not a version of sequence {sequence.id}"
                    )
            else:
                current = repo.current_version(conn, sequence.id)
                if current is None:
                    raise ConflictError(f"sequence {sequence.id} has no active version")
                version = current
            known = repo.subscriber_enrollments(
                conn, tenant_key, sequence.id, [subscriber_id for subscriber_id, *_ in checked]
            )
        return [
            self._command(
                "enroll",
                tenant_key,
                _enrollment_id(known, tenant_key, sequence, subscriber_id),
                sequence_id=sequence.id,
                sequence_version_id=version.id,
                subscriber_id=subscriber_id,
                recipient=recipient.strip(),
                recipient_timezone=timezone,
                data=data_json,
            )
            for subscriber_id, recipient, timezone, data_json in checked
        ]

    def pause_enrollment(
        self, enrollment_id: str, *, tenant_key: str, reason: str | None = None
    ) -> Accepted:
        return self._enrollment_command("pause", enrollment_id, tenant_key, reason=reason)

    def resume_enrollment(self, enrollment_id: str, *, tenant_key: str) -> Accepted:
        return self._enrollment_command("resume", enrollment_id, tenant_key)

    def unenroll(
        self, enrollment_id: str, *, tenant_key: str, reason: str | None = None
    ) -> Accepted:
        return self._enrollment_command("unenroll", enrollment_id, tenant_key, reason=reason)

    def repin_enrollment(
        self, enrollment_id: str, *, tenant_key: str, new_adapter_id: str, reason: str | None = None
    ) -> Accepted:
        """Move an outbound enrollment to another member of its pool (breaks the thread).

        Raises:
            NotFoundError / TenantMismatchError: enrollment or adapter not the tenant's.
            ConflictError: not outbound, finished, adapter not an active pool member,
                adapter inactive (``adapter_inactive``) or resting (``adapter_resting``).
        """
        with self.engine.connect() as conn:
            enrollment = self._live_enrollment(conn, enrollment_id, tenant_key, "repin")
            adapter = repo.adapter_from_row(
                repo.load_owned(conn, "adapter", new_adapter_id, tenant_key)
            )
            version = repo.version_from_row(
                repo.load_owned(
                    conn, "sequence_version", enrollment.sequence_version_id, tenant_key
                )
            )
            if version.mode is not Mode.OUTBOUND or version.pool_id is None:
                raise ConflictError(f"enrollment {enrollment.id} is not outbound; nothing to repin")
            member = repo.find_member(conn, version.pool_id, adapter.id)
            if member is None or not member.active:
                raise NotPoolMemberError(
                    f"adapter {adapter.id} is not an active member of pool {version.pool_id}"
                )
            if not adapter.active:
                raise ConflictError(f"adapter {adapter.id} is inactive", code="adapter_inactive")
            if adapter.health_state is HealthState.RESTING:
                raise ConflictError(f"adapter {adapter.id} is resting", code="adapter_resting")
        record = self._command(
            "repin", tenant_key, enrollment.id, new_adapter_id=adapter.id, reason=reason
        )
        return self._accepted(record, self._produce("enrollments", tenant_key, record))

    def get_enrollment(self, enrollment_id: str, *, tenant_key: str) -> Enrollment:
        with self.engine.connect() as conn:
            row = repo.load_owned(conn, "enrollment", enrollment_id, tenant_key)
        m = repo.fields(row)
        return Enrollment(
            id=str(m["id"]),
            tenant_key=m["tenant_key"],
            sequence_id=str(m["sequence_id"]),
            sequence_version_id=str(m["sequence_version_id"]),
            subscriber_id=m["subscriber_id"],
            mode=m["mode"],
            adapter_id=None if m["adapter_id"] is None else str(m["adapter_id"]),
            state=m["state"],
            reason=m["reason"],
            recipient=m["recipient"],
            timezone=m["timezone"],
            data=dict(m["data"]),
            enrolled_at=m["enrolled_at"],
        )

    def _live_enrollment(
        self, conn: Connection, enrollment_id: str, tenant_key: str, command: str
    ) -> Enrollment:
        row = repo.load_owned(conn, "enrollment", enrollment_id, tenant_key)
        state = EnrollmentState(row.state)
        if state not in LIVE_STATES:
            raise ConflictError(f"enrollment {row.id} is {state}; cannot {command} it")
        return self.get_enrollment(str(row.id), tenant_key=tenant_key)

    def _enrollment_command(
        self,
        command: Literal["pause", "resume", "unenroll"],
        enrollment_id: str,
        tenant_key: str,
        reason: str | None = None,
    ) -> Accepted:
        with self.engine.connect() as conn:
            enrollment = self._live_enrollment(conn, enrollment_id, tenant_key, command)
        record = self._command(command, tenant_key, enrollment.id, reason=reason)
        return self._accepted(record, self._produce("enrollments", tenant_key, record))

    @staticmethod
    def _command(
        command: str, tenant_key: str, enrollment_id: str, **fields: Any
    ) -> dict[str, Any]:
        return {
            "event_id": str(uuid.uuid4()),
            "tenant_key": tenant_key,
            "occurred_at": datetime.now(UTC),
            "command": command,
            "enrollment_id": enrollment_id,
            **fields,
        }

    @staticmethod
    def _accepted(record: Mapping[str, Any], delivery: Delivery) -> Accepted:
        return Accepted(
            command=str(record.get("command", "ingest")),
            tenant_key=record["tenant_key"],
            event_id=record["event_id"],
            enrollment_id=record.get("enrollment_id"),
            topic=delivery.topic,
            partition=delivery.partition,
            offset=delivery.offset,
        )

    # inbound

    def ingest_inbound_message(
        self, adapter_id: str, message: Mapping[str, Any] | InboundMessage, *, tenant_key: str
    ) -> Accepted:
        """Hand one normalized inbound message to the processor (SPEC §8).

        Ids are normalized (trimmed, no angle brackets); the adapter must be the
        tenant's; an unknown intent is rejected here (the topic dead-letters it).
        """
        msg = message if isinstance(message, InboundMessage) else validated(InboundMessage, message)
        with self.engine.connect() as conn:
            adapter = repo.adapter_from_row(
                repo.load_owned(conn, "adapter", adapter_id, tenant_key)
            )
        message_id = normalize_message_id(msg.message_id)
        if message_id is None:
            raise InvalidInputError("message_id must not be empty", code="invalid_message_id")
        for name, value in (("message_id", message_id), ("in_reply_to", msg.in_reply_to)):
            check_no_newline(name, value)
        try:
            intent = Intent(msg.intent.strip().lower()) if msg.intent else None
        except ValueError:
            raise InvalidInputError(
                f"unknown intent {(msg.intent or '')[:40]!r};"
                f" one of {', '.join(i.value for i in Intent)}",
                code="unknown_intent",
            ) from None
        references: Sequence[str] = split_references(msg.references)
        record = {
            "event_id": str(uuid.uuid4()),
            "tenant_key": tenant_key,
            "occurred_at": datetime.now(UTC),
            "adapter_id": adapter.id,
            "message_id": message_id,
            "in_reply_to": normalize_message_id(msg.in_reply_to),
            "references": list(references),
            "from": msg.from_,
            "to": msg.to,
            "subject": msg.subject,
            "body_text": msg.body_text,
            "body_html": msg.body_html,
            "headers": {k.lower(): v for k, v in msg.headers.items()},
            "received_at": msg.received_at or datetime.now(UTC),
            "intent": intent.value if intent else "",
            "intent_data": dict(msg.intent_data),
        }
        delivery = self._produce("inbound-messages", tenant_key, record)
        return Accepted(
            command="ingest",
            tenant_key=tenant_key,
            event_id=record["event_id"],
            topic=delivery.topic,
            partition=delivery.partition,
            offset=delivery.offset,
        )

    # ambiguous sends (streams/sends.py)

    def list_ambiguous_sends(self, *, tenant_key: str | None = None) -> list[AmbiguousSend]:
        """Sends whose outcome is unknown, oldest first; ``None``: every tenant's (operator).

        Each holds its enrollment until ``resolve_ambiguous_send`` settles it.
        """
        return list_ambiguous_sends(self.engine, tenant_key=tenant_key)

    def resolve_ambiguous_send(
        self, step_execution_id: str, *, tenant_key: str, sent: bool
    ) -> SendResolution:
        """Settle an ambiguous send (SPEC §4, §7): ``sent=True`` marks it sent and lets the
        enrollment go on; ``sent=False`` re-issues it once, with the same Message-ID.

        Raises:
            NotFoundError: no such send in ``tenant_key`` (another tenant's id included).
            NotAmbiguousError: the send is not ambiguous.
            AlreadyReissuedError: ``sent=False`` on a send re-issued once already.
            ConflictError: ``sent=False`` while the enrollment is not active.
            PublishError: the broker did not acknowledge; nothing was settled.
        """
        resolver = Resolver(self.engine, lambda: self.publisher, self.codecs, self.settings)
        return resolver.resolve(
            step_execution_id, tenant_key=tenant_key, resolution="sent" if sent else "not_sent"
        )

    # suppression lists (streams/suppressions.py)

    @property
    def _suppressions(self) -> SuppressionLists:
        return SuppressionLists(self.settings, self.engine, lambda: self.publisher, self.codecs)

    def add_suppression(
        self,
        entry: str,
        *,
        tenant_key: str,
        reason: str = "manual",
        source: str = "api",
    ) -> Accepted:
        """Suppress an address (``a@b.com``) or a whole domain (``b.com`` / ``@b.com``).

        Refused at enrollment (``rejected``, reason ``suppressed``, no pin) and skipped at
        send from the moment the worker applies it. ``reason``: unsubscribe, bounce,
        complaint, manual, provider_block.

        Raises:
            InputError: not an address or domain, unknown reason, bad source.
            PublishError: the broker did not acknowledge; nothing changed.
        """
        check_nonempty("tenant_key", tenant_key)
        record, delivery = self._suppressions.add(
            entry, tenant_key=tenant_key, reason=reason, source=source
        )
        return Accepted(
            command="suppress",
            tenant_key=tenant_key,
            event_id=record["event_id"],
            topic=delivery.topic,
            partition=delivery.partition,
            offset=delivery.offset,
        )

    def import_suppressions(
        self,
        rows: Iterable[str | tuple[int, str, str | None, str | None]],
        *,
        tenant_key: str,
        reason: str = "manual",
        source: str = "import",
        progress: Callable[[int], None] | None = None,
    ) -> ImportResult:
        """Suppress many entries: plain strings, or ``(line, entry, reason, source)`` rows as
        ``streams.suppressions.read_csv`` yields them (a row's empty reason/source takes the
        defaults). Invalid entries are listed in the result; the rest are published.
        ``progress(accepted_so_far)`` is called after each batch the broker acknowledged."""
        check_nonempty("tenant_key", tenant_key)
        return self._suppressions.import_rows(
            as_rows(rows), tenant_key=tenant_key, reason=reason, source=source, progress=progress
        )

    def remove_suppression(self, entry: str, *, tenant_key: str) -> Accepted:
        """Take an address or domain off the tenant's list (later enrollments may send)."""
        check_nonempty("tenant_key", tenant_key)
        record, delivery = self._suppressions.remove(entry, tenant_key=tenant_key)
        return Accepted(
            command="unsuppress",
            tenant_key=tenant_key,
            event_id=record["event_id"],
            topic=delivery.topic,
            partition=delivery.partition,
            offset=delivery.offset,
        )

    def list_suppressions(
        self, *, tenant_key: str, kind: Literal["address", "domain"] | None = None
    ) -> list[Suppression]:
        """The tenant's entries, oldest first (as the worker has written them)."""
        return list(self._suppressions.list(tenant_key=tenant_key, kind=kind))

    def iter_suppressions(
        self, *, tenant_key: str, kind: Literal["address", "domain"] | None = None
    ) -> Iterator[Suppression]:
        """``list_suppressions`` streamed (for exports of large lists)."""
        return self._suppressions.list(tenant_key=tenant_key, kind=kind)
