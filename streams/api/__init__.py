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
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self

from sqlalchemy import Engine, create_engine

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
from dripdrop_core.models import Sequence as SequenceModel
from streams.api._adapters import AdapterAuthoring
from streams.api._context import Context
from streams.api._enrollments import EnrollmentCommands, enrollment_id_for
from streams.api._errors import (
    ClassMismatchError,
    InvalidInputError,
    NotPoolMemberError,
    PoolInUseError,
)
from streams.api._inbound import InboundIngest
from streams.api._models import Accepted, Enrollment, InboundMessage, PoolView
from streams.api._pools import PoolAuthoring
from streams.api._sends import AmbiguousSends
from streams.api._sequences import SequenceAuthoring
from streams.api._suppressions import SuppressionCommands
from streams.codecs import Codecs
from streams.kafka import KafkaPublisher, Publisher, PublishError
from streams.outbox import pending_count, relay_all
from streams.sends import AlreadyReissuedError, AmbiguousSend, NotAmbiguousError, SendResolution
from streams.settings import Settings
from streams.suppressions import ImportResult, Suppression

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
    "enrollment_id_for",
):
    globals()[_name].__module__ = __name__
del _name

log = logging.getLogger(__name__)


class DripDrop:
    """Authoring and command API. Build with ``DripDrop(settings)``; close it (or use ``with``).

    Args:
        settings: database URL, bootstrap servers, topic prefix, partitions.
        engine: an SQLAlchemy engine (default: one from ``settings.sqlalchemy_url``).
        publisher: a producer (default: ``KafkaPublisher(settings)``, created on first use).
        codecs: Avro codecs (default: ``Codecs(settings)``).
        relay_after_commit: relay the outbox right after each authoring commit.

    Each call is done by one collaborator per area, built here around one ``Context``.
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
        context = Context(
            settings=settings,
            engine=self.engine,
            codecs=self.codecs,
            publisher=lambda: self.publisher,
            after_commit=self._after_commit,
        )
        self._adapters = AdapterAuthoring(context)
        self._pools = PoolAuthoring(context)
        self._sequences = SequenceAuthoring(context)
        self._enrollments = EnrollmentCommands(context)
        self._inbound = InboundIngest(context)
        self._sends = AmbiguousSends(context)
        self._suppressions = SuppressionCommands(context)

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
        """Relay after an authoring commit. It lives here, calling ``streams.api.relay_all``,
        because a crash test replaces that name (tests/integration/test_api_outbox.py)."""
        if not self.relay_after_commit:
            return
        try:
            relay_all(self.engine, self.publisher, topic_prefix=self.settings.topic_prefix)
        except PublishError as exc:
            # The change is committed and stays in the outbox; the next relay publishes it.
            log.warning("config change committed but not yet published: %s", exc)

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
        return self._adapters.create_channel_adapter(
            tenant_key=tenant_key,
            name=name,
            provider=provider,
            channel=channel,
            from_address=from_address,
            timezone=timezone,
            active=active,
            health_state=health_state,
            health_score=health_score,
            daily_cap=daily_cap,
            ramp_floor=ramp_floor,
            ramp_increment=ramp_increment,
            ramp_started_at=ramp_started_at,
            min_gap_seconds=min_gap_seconds,
            config=config,
        )

    def update_channel_adapter(
        self, adapter_id: str, *, tenant_key: str, **changes: Any
    ) -> Adapter:
        """Change adapter fields (e.g. the seed's ramp fields); only the given ones change.

        Accepted fields: every ``Adapter`` field but ``id`` and ``tenant_key``. Passing
        ``None`` clears a nullable field. A health change is recorded as a transition.
        """
        return self._adapters.update_channel_adapter(
            adapter_id, tenant_key=tenant_key, changes=changes
        )

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
        return self._adapters.set_adapter_health(
            adapter_id,
            tenant_key=tenant_key,
            health_state=health_state,
            health_score=health_score,
            resting_until=resting_until,
            source=source,
        )

    def get_adapter(self, adapter_id: str, *, tenant_key: str) -> Adapter:
        return self._adapters.get_adapter(adapter_id, tenant_key=tenant_key)

    # pools

    def create_adapter_pool(
        self,
        *,
        tenant_key: str,
        name: str,
        on_pin_unavailable: PinPolicy | str = PinPolicy.REASSIGN,
    ) -> Pool:
        """Create a tenant's sender pool; ``on_pin_unavailable`` is ``pause`` or ``reassign``."""
        return self._pools.create_adapter_pool(
            tenant_key=tenant_key, name=name, on_pin_unavailable=on_pin_unavailable
        )

    def delete_adapter_pool(self, pool_id: str, *, tenant_key: str) -> Pool:
        """Delete a pool and its members; refused while a sequence version uses it."""
        return self._pools.delete_adapter_pool(pool_id, tenant_key=tenant_key)

    def get_pool(self, pool_id: str, *, tenant_key: str) -> Pool:
        return self._pools.get_pool(pool_id, tenant_key=tenant_key)

    def list_pool_members(self, pool_id: str, *, tenant_key: str) -> list[PoolMember]:
        return self._pools.list_pool_members(pool_id, tenant_key=tenant_key)

    def inspect_pool(self, pool_id: str, *, tenant_key: str) -> PoolView:
        """A pool, its members, their adapters and validation warnings (runbook view)."""
        return self._pools.inspect_pool(pool_id, tenant_key=tenant_key)

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
        return self._pools.add_pool_member(
            pool_id,
            tenant_key=tenant_key,
            adapter_id=adapter_id,
            member_class=member_class,
            weight=weight,
            active=active,
        )

    def remove_pool_member(self, pool_id: str, *, tenant_key: str, adapter_id: str) -> PoolMember:
        """Remove a member; existing pins are untouched (SPEC §5.2: no automatic rebalancing)."""
        return self._pools.remove_pool_member(pool_id, tenant_key=tenant_key, adapter_id=adapter_id)

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
        return self._adapters.set_domain_throttle(
            tenant_key=tenant_key,
            domain=domain,
            per_hour=per_hour,
            per_day=per_day,
            adapter_id=adapter_id,
        )

    def remove_domain_throttle(self, throttle_id: str, *, tenant_key: str) -> DomainThrottle:
        """Lift a throttle; sends it deferred go at their next evaluation."""
        return self._adapters.remove_domain_throttle(throttle_id, tenant_key=tenant_key)

    def list_domain_throttles(self, *, tenant_key: str) -> list[DomainThrottle]:
        return self._adapters.list_domain_throttles(tenant_key=tenant_key)

    # sequences, versions, steps

    def create_sequence(
        self,
        *,
        tenant_key: str,
        key: str,
        name: str | None = None,
        allow_reenrollment: bool = False,
    ) -> SequenceModel:
        return self._sequences.create_sequence(
            tenant_key=tenant_key, key=key, name=name, allow_reenrollment=allow_reenrollment
        )

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
        return self._sequences.create_sequence_version(
            sequence_id,
            tenant_key=tenant_key,
            version=version,
            mode=mode,
            config=config,
            active=active,
            one_click_unsubscribe=one_click_unsubscribe,
            company_stop=company_stop,
        )

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
        return self._sequences.create_step(
            version_id,
            tenant_key=tenant_key,
            key=key,
            position=position,
            channel=channel,
            delay_seconds=delay_seconds,
            delay_from=delay_from,
            subject_template=subject_template,
            body_template=body_template,
            html_template=html_template,
            adapter_id=adapter_id,
            adapter_override_id=adapter_override_id,
            reply_behavior=reply_behavior,
            sending_window=sending_window,
            thread_continuity=thread_continuity,
        )

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
        return self._enrollments.enroll(
            tenant_key=tenant_key,
            sequence_id=sequence_id,
            subscriber_id=subscriber_id,
            recipient=recipient,
            data=data,
            recipient_timezone=recipient_timezone,
            sequence_version_id=sequence_version_id,
        )

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
        return self._enrollments.enroll_many(
            tenant_key=tenant_key,
            sequence_id=sequence_id,
            prospects=prospects,
            sequence_version_id=sequence_version_id,
        )

    def pause_enrollment(
        self, enrollment_id: str, *, tenant_key: str, reason: str | None = None
    ) -> Accepted:
        return self._enrollments.enrollment_command(
            "pause", enrollment_id, tenant_key, reason=reason
        )

    def resume_enrollment(self, enrollment_id: str, *, tenant_key: str) -> Accepted:
        return self._enrollments.enrollment_command("resume", enrollment_id, tenant_key)

    def unenroll(
        self, enrollment_id: str, *, tenant_key: str, reason: str | None = None
    ) -> Accepted:
        return self._enrollments.enrollment_command(
            "unenroll", enrollment_id, tenant_key, reason=reason
        )

    def repin_enrollment(
        self, enrollment_id: str, *, tenant_key: str, new_adapter_id: str, reason: str | None = None
    ) -> Accepted:
        """Move an outbound enrollment to another member of its pool (breaks the thread).

        Raises:
            NotFoundError / TenantMismatchError: enrollment or adapter not the tenant's.
            ConflictError: not outbound, finished, adapter not an active pool member,
                adapter inactive (``adapter_inactive``) or resting (``adapter_resting``).
        """
        return self._enrollments.repin_enrollment(
            enrollment_id, tenant_key=tenant_key, new_adapter_id=new_adapter_id, reason=reason
        )

    def get_enrollment(self, enrollment_id: str, *, tenant_key: str) -> Enrollment:
        return self._enrollments.get_enrollment(enrollment_id, tenant_key=tenant_key)

    # inbound

    def ingest_inbound_message(
        self, adapter_id: str, message: Mapping[str, Any] | InboundMessage, *, tenant_key: str
    ) -> Accepted:
        """Hand one normalized inbound message to the processor (SPEC §8).

        Ids are normalized (trimmed, no angle brackets); the adapter must be the
        tenant's; an unknown intent is rejected here (the topic dead-letters it).
        """
        return self._inbound.ingest_inbound_message(adapter_id, message, tenant_key=tenant_key)

    # ambiguous sends (streams/sends.py)

    def list_ambiguous_sends(self, *, tenant_key: str | None = None) -> list[AmbiguousSend]:
        """Sends whose outcome is unknown, oldest first; ``None``: every tenant's (operator).

        Each holds its enrollment until ``resolve_ambiguous_send`` settles it.
        """
        return self._sends.list_ambiguous_sends(tenant_key=tenant_key)

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
        return self._sends.resolve_ambiguous_send(
            step_execution_id, tenant_key=tenant_key, sent=sent
        )

    # suppression lists (streams/suppressions.py)

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
        return self._suppressions.add_suppression(
            entry, tenant_key=tenant_key, reason=reason, source=source
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
        return self._suppressions.import_suppressions(
            rows, tenant_key=tenant_key, reason=reason, source=source, progress=progress
        )

    def remove_suppression(self, entry: str, *, tenant_key: str) -> Accepted:
        """Take an address or domain off the tenant's list (later enrollments may send)."""
        return self._suppressions.remove_suppression(entry, tenant_key=tenant_key)

    def list_suppressions(
        self, *, tenant_key: str, kind: Literal["address", "domain"] | None = None
    ) -> list[Suppression]:
        """The tenant's entries, oldest first (as the worker has written them)."""
        return list(self._suppressions.iter_suppressions(tenant_key=tenant_key, kind=kind))

    def iter_suppressions(
        self, *, tenant_key: str, kind: Literal["address", "domain"] | None = None
    ) -> Iterator[Suppression]:
        """``list_suppressions`` streamed (for exports of large lists)."""
        return self._suppressions.iter_suppressions(tenant_key=tenant_key, kind=kind)
