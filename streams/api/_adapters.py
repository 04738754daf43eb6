"""Channel adapters (sending identities), their health, and recipient-domain throttles.

Authoring calls: validate, write PostgreSQL and the outbox in one transaction, then relay.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from dripdrop_core.errors import InputError
from dripdrop_core.models import Adapter, DomainThrottle, HealthState
from dripdrop_core.throttles import parse_domain
from streams.api._context import Context
from streams.api._errors import InvalidInputError
from streams.api._validation import (
    check_email,
    check_known_provider,
    check_no_inline_secret,
    check_nonempty,
    check_timezone,
    validated,
)
from streams.db import authoring as repo
from streams.db.tables import domain_throttles

ADAPTER_FIELDS = frozenset(Adapter.model_fields) - {"id", "tenant_key"}


class AdapterAuthoring:
    """The adapter and domain-throttle calls of ``DripDrop``."""

    def __init__(self, context: Context) -> None:
        self._ctx = context

    def create_channel_adapter(
        self,
        *,
        tenant_key: str,
        name: str,
        provider: str,
        channel: str,
        from_address: str | None,
        timezone: str,
        active: bool,
        health_state: HealthState | str | None,
        health_score: float | None,
        daily_cap: int | None,
        ramp_floor: int | None,
        ramp_increment: int | None,
        ramp_started_at: datetime | None,
        min_gap_seconds: int,
        config: Mapping[str, Any] | None,
    ) -> Adapter:
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
        with self._ctx.engine.begin() as conn:
            repo.insert_adapter(conn, adapter)
            self._ctx.config(conn, "adapter", adapter.id, tenant_key, adapter)
        self._ctx.after_commit()
        return adapter

    def update_channel_adapter(
        self, adapter_id: str, *, tenant_key: str, changes: Mapping[str, Any]
    ) -> Adapter:
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
        with self._ctx.engine.begin() as conn:
            before = repo.adapter_from_row(repo.load_owned(conn, "adapter", adapter_id, tenant_key))
            after = validated(Adapter, {**before.model_dump(), **changes})
            repo.update_adapter(conn, after)
            # A health change reaches the processor as this config change; the worker
            # records its transition row (one writer: see set_adapter_health).
            self._ctx.config(conn, "adapter", after.id, tenant_key, after)
        self._ctx.after_commit()
        return after

    def set_adapter_health(
        self,
        adapter_id: str,
        *,
        tenant_key: str,
        health_state: HealthState | str | None,
        health_score: float | None,
        resting_until: datetime | None,
        source: str,
    ) -> Adapter:
        check_nonempty("source", source)
        with self._ctx.engine.begin() as conn:
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
            self._ctx.config(conn, "adapter", after.id, tenant_key, after)
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
            self._ctx.enqueue(conn, "health-signals", tenant_key, signal)
        self._ctx.after_commit()
        return after

    def get_adapter(self, adapter_id: str, *, tenant_key: str) -> Adapter:
        with self._ctx.engine.connect() as conn:
            return repo.adapter_from_row(repo.load_owned(conn, "adapter", adapter_id, tenant_key))

    # recipient-domain throttles

    def set_domain_throttle(
        self,
        *,
        tenant_key: str,
        domain: str,
        per_hour: int | None,
        per_day: int | None,
        adapter_id: str | None,
    ) -> DomainThrottle:
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
        with self._ctx.engine.begin() as conn:
            if adapter_id is not None:
                repo.load_owned(conn, "adapter", adapter_id, tenant_key)
            throttle = repo.upsert_throttle(conn, throttle)
            self._ctx.config(conn, "domain_throttle", throttle.id, tenant_key, throttle)
        self._ctx.after_commit()
        return throttle

    def remove_domain_throttle(self, throttle_id: str, *, tenant_key: str) -> DomainThrottle:
        with self._ctx.engine.begin() as conn:
            row = repo.load_owned(conn, "domain_throttle", throttle_id, tenant_key)
            throttle = repo.throttle_from_row(row)
            conn.execute(domain_throttles.delete().where(domain_throttles.c.id == throttle.id))
            self._ctx.config(conn, "domain_throttle", throttle.id, tenant_key, None)
        self._ctx.after_commit()
        return throttle

    def list_domain_throttles(self, *, tenant_key: str) -> list[DomainThrottle]:
        with self._ctx.engine.connect() as conn:
            return repo.list_throttles(conn, tenant_key)
