"""The authoring half of ``DripDrop``: adapters, pools, throttles, sequences, versions, steps.

Signatures and docstrings only (the documented API); each call delegates to a collaborator.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

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
from streams.api._models import PoolView
from streams.api._pools import PoolAuthoring
from streams.api._sequences import SequenceAuthoring


class AuthoringCalls:
    """Entity writes go to PostgreSQL and the outbox in one transaction; reads are here too.

    Holds no state: ``DripDrop.__init__`` sets the three collaborators.
    """

    _adapters: AdapterAuthoring
    _pools: PoolAuthoring
    _sequences: SequenceAuthoring

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
