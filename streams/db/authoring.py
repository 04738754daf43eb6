"""Authoring repository: tenant-scoped reads and writes of authored rows.

Every function takes an open ``Connection`` (the caller owns the transaction) and
returns core models (``dripdrop_core.models``). Tenant rule, applied by
``load_owned``: an id that does not exist raises ``NotFoundError``; an id that
exists under another tenant raises ``TenantMismatchError``; no row of another
tenant is ever returned or changed. Composite foreign keys in
``streams/db/tables.py`` enforce the same rule inside the database.

Library errors (``IntegrityError``) are translated here into ``ConflictError`` /
``TenantMismatchError`` with a clear message.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Row, RowMapping, Table, func, select, update
from sqlalchemy.exc import IntegrityError

from dripdrop_core.errors import ConflictError, NotFoundError, TenantMismatchError
from dripdrop_core.models import (
    Adapter,
    DomainThrottle,
    Pool,
    PoolMember,
    SendingWindow,
    Sequence,
    SequenceVersion,
    Step,
)
from streams.db.tables import (
    adapter_pool_members,
    adapter_pools,
    channel_adapters,
    domain_throttles,
    enrollments,
    sequence_versions,
    sequences,
    steps,
)

ENTITY_TABLES: dict[str, Table] = {
    "adapter": channel_adapters,
    "pool": adapter_pools,
    "sequence": sequences,
    "sequence_version": sequence_versions,
    "step": steps,
    "enrollment": enrollments,
    "domain_throttle": domain_throttles,
}

_UNIQUE_MESSAGES = {
    "uq_channel_adapters_tenant_key_name": "an adapter of this name exists for the tenant",
    "uq_adapter_pools_tenant_key_name": "a pool with this name already exists for the tenant",
    "uq_adapter_pool_members_pool_id_adapter_id": "the adapter is already a member of the pool",
    "uq_sequences_tenant_key_key": "a sequence with this key already exists for the tenant",
    "uq_sequence_versions_sequence_id_version": "this version number exists for the sequence",
    "uq_steps_version_id_position": "a step with this position already exists in the version",
    "uq_steps_version_id_key": "a step with this key already exists in the version",
}


def new_id() -> str:
    """A fresh random entity id (authored entities are not replayed, so no uuid5 needed)."""
    return str(uuid.uuid4())


def _as_uuid(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise NotFoundError(
            f"{what} {value!r} not found (not a valid id)", code="not_found"
        ) from None


def load_owned(conn: Connection, what: str, entity_id: str, tenant_key: str) -> Row[Any]:
    """The row of ``what`` (``adapter``, ``pool``…) with ``entity_id``, if ``tenant_key`` owns it.

    Raises:
        NotFoundError: no such id (code ``unknown_adapter``/``unknown_pool``/``not_found``).
        TenantMismatchError: the id belongs to another tenant.
    """
    table = ENTITY_TABLES[what]
    key = _as_uuid(entity_id, what)
    row = conn.execute(select(table).where(table.c.id == key)).one_or_none()
    if row is None:
        code = {"adapter": "unknown_adapter", "pool": "unknown_pool"}.get(what, "not_found")
        raise NotFoundError(f"{what} {key} not found", code=code)  # type: ignore[arg-type]
    if row.tenant_key != tenant_key:
        raise TenantMismatchError(f"{what} {key} does not belong to tenant {tenant_key!r}")
    return row


@contextmanager
def translated_integrity() -> Iterator[None]:
    """Turn unique/foreign-key/check violations into typed input errors."""
    try:
        yield
    except IntegrityError as exc:
        name = getattr(getattr(exc.orig, "diag", None), "constraint_name", None) or ""
        if name in _UNIQUE_MESSAGES:
            raise ConflictError(f"{_UNIQUE_MESSAGES[name]} ({name})") from exc
        if name.startswith("fk_"):
            raise TenantMismatchError(
                f"a referenced row does not belong to the tenant ({name})"
            ) from exc
        raise ConflictError(
            f"the database rejected the change ({name or 'integrity error'})"
        ) from exc


# --- row -> model ---------------------------------------------------------------------------


def fields(row: Row[Any]) -> RowMapping:
    """A row's columns by name (``Row._mapping`` is public SQLAlchemy API despite its name)."""
    return row._mapping  # noqa: SLF001


def adapter_from_row(row: Row[Any] | Mapping[str, Any]) -> Adapter:
    m = fields(row) if isinstance(row, Row) else row
    return Adapter(
        id=str(m["id"]),
        tenant_key=m["tenant_key"],
        name=m["name"],
        channel=m["channel"],
        provider=m["provider"],
        active=m["active"],
        from_address=m["from_address"],
        timezone=m["timezone"],
        health_state=m["health_state"],
        health_score=m["health_score"],
        resting_until=m["resting_until"],
        daily_cap=m["daily_cap"],
        ramp_floor=m["ramp_floor"],
        ramp_increment=m["ramp_increment"],
        ramp_started_at=m["ramp_started_at"],
        min_gap_seconds=m["min_gap_seconds"],
        config=dict(m["config"] or {}),
    )


def pool_from_row(row: Row[Any]) -> Pool:
    m = fields(row)
    return Pool(
        id=str(m["id"]),
        tenant_key=m["tenant_key"],
        name=m["name"],
        on_pin_unavailable=m["on_pin_unavailable"],
        active=m["active"],
    )


def member_from_row(row: Row[Any]) -> PoolMember:
    m = fields(row)
    return PoolMember(
        pool_id=str(m["pool_id"]),
        adapter_id=str(m["adapter_id"]),
        tenant_key=m["tenant_key"],
        member_class=m["class"],
        weight=m["weight"],
        active=m["active"],
    )


def sequence_from_row(row: Row[Any]) -> Sequence:
    m = fields(row)
    return Sequence(
        id=str(m["id"]),
        tenant_key=m["tenant_key"],
        key=m["key"],
        name=m["name"],
        allow_reenrollment=m["allow_reenrollment"],
    )


def version_from_row(row: Row[Any]) -> SequenceVersion:
    m = fields(row)
    return SequenceVersion(
        id=str(m["id"]),
        sequence_id=str(m["sequence_id"]),
        tenant_key=m["tenant_key"],
        version=m["version"],
        mode=m["mode"],
        pool_id=None if m["pool_id"] is None else str(m["pool_id"]),
        active=m["active"],
        max_wait_seconds=(m.get("config") or {}).get("max_wait_seconds"),
        one_click_unsubscribe=(m.get("config") or {}).get("one_click_unsubscribe"),
        company_stop=bool((m.get("config") or {}).get("company_stop", False)),
    )


def step_from_row(row: Row[Any]) -> Step:
    m = fields(row)
    window = (
        None
        if m["quiet_start_hour"] is None
        else SendingWindow(start_hour=m["quiet_start_hour"], end_hour=m["quiet_end_hour"])
    )
    return Step(
        id=str(m["id"]),
        version_id=str(m["version_id"]),
        tenant_key=m["tenant_key"],
        key=m["key"],
        position=m["position"],
        channel=m["channel"],
        delay_seconds=m["delay_seconds"],
        delay_from=m["delay_from"],
        subject_template=m["subject_template"],
        body_template=m["body_template"],
        html_template=m["html_template"],
        adapter_id=None if m["adapter_id"] is None else str(m["adapter_id"]),
        adapter_override_id=None
        if m["adapter_override_id"] is None
        else str(m["adapter_override_id"]),
        reply_behavior=m["reply_behavior"],
        sending_window=window,
        thread_continuity=m["thread_continuity"],
    )


# --- writes ---------------------------------------------------------------------------------


def adapter_columns(adapter: Adapter) -> dict[str, Any]:
    values = adapter.model_dump(mode="python")
    values["health_state"] = None if adapter.health_state is None else str(adapter.health_state)
    return values


def insert_adapter(conn: Connection, adapter: Adapter) -> None:
    with translated_integrity():
        conn.execute(channel_adapters.insert().values(**adapter_columns(adapter)))


def update_adapter(conn: Connection, adapter: Adapter) -> None:
    values = adapter_columns(adapter)
    del values["id"], values["tenant_key"]
    with translated_integrity():
        conn.execute(
            update(channel_adapters)
            .where(channel_adapters.c.id == adapter.id)
            .where(channel_adapters.c.tenant_key == adapter.tenant_key)
            .values(**values, updated_at=func.now())
        )


def throttle_from_row(row: Row[Any]) -> DomainThrottle:
    m = fields(row)
    return DomainThrottle(
        id=str(m["id"]),
        tenant_key=m["tenant_key"],
        domain=m["domain"],
        adapter_id=None if m["adapter_id"] is None else str(m["adapter_id"]),
        per_hour=m["per_hour"],
        per_day=m["per_day"],
    )


def upsert_throttle(conn: Connection, throttle: DomainThrottle) -> DomainThrottle:
    """Insert the throttle, or set the limits of the one with its domain and scope (which
    keeps its id, so the worker's counters under it carry on)."""
    existing = conn.execute(
        select(domain_throttles)
        .where(domain_throttles.c.tenant_key == throttle.tenant_key)
        .where(domain_throttles.c.domain == throttle.domain)
        .where(
            domain_throttles.c.adapter_id.is_(None)
            if throttle.adapter_id is None
            else domain_throttles.c.adapter_id == throttle.adapter_id
        )
        .with_for_update()
    ).one_or_none()
    limits = {"per_hour": throttle.per_hour, "per_day": throttle.per_day}
    with translated_integrity():
        if existing is None:
            conn.execute(domain_throttles.insert().values(**throttle.model_dump()))
            return throttle
        conn.execute(
            domain_throttles.update()
            .where(domain_throttles.c.id == existing.id)
            .values(**limits, updated_at=func.now())
        )
    return throttle.model_copy(update={"id": str(existing.id)})


def list_throttles(conn: Connection, tenant_key: str) -> list[DomainThrottle]:
    rows = conn.execute(
        select(domain_throttles)
        .where(domain_throttles.c.tenant_key == tenant_key)
        .order_by(domain_throttles.c.domain, domain_throttles.c.adapter_id.nulls_first())
    ).all()
    return [throttle_from_row(row) for row in rows]


def insert_pool(conn: Connection, pool: Pool) -> None:
    with translated_integrity():
        conn.execute(
            adapter_pools.insert().values(
                id=pool.id,
                tenant_key=pool.tenant_key,
                name=pool.name,
                on_pin_unavailable=str(pool.on_pin_unavailable),
                active=pool.active,
            )
        )


def insert_member(conn: Connection, member: PoolMember) -> None:
    with translated_integrity():
        conn.execute(
            adapter_pool_members.insert().values(
                id=new_id(),
                tenant_key=member.tenant_key,
                pool_id=member.pool_id,
                adapter_id=member.adapter_id,
                weight=member.weight,
                active=member.active,
                **{"class": str(member.member_class)},
            )
        )


def delete_member(conn: Connection, pool_id: str, adapter_id: str, tenant_key: str) -> PoolMember:
    row = conn.execute(
        adapter_pool_members.delete()
        .where(adapter_pool_members.c.pool_id == pool_id)
        .where(adapter_pool_members.c.adapter_id == _as_uuid(adapter_id, "adapter"))
        .where(adapter_pool_members.c.tenant_key == tenant_key)
        .returning(*adapter_pool_members.c)
    ).one_or_none()
    if row is None:
        raise NotFoundError(f"adapter {adapter_id} is not a member of pool {pool_id}")
    return member_from_row(row)


def list_members(conn: Connection, pool_id: str, tenant_key: str) -> list[PoolMember]:
    rows = conn.execute(
        select(adapter_pool_members)
        .where(adapter_pool_members.c.pool_id == pool_id)
        .where(adapter_pool_members.c.tenant_key == tenant_key)
        .order_by(
            adapter_pool_members.c.active.desc(),
            adapter_pool_members.c.weight.desc(),
            adapter_pool_members.c.adapter_id,
        )
    ).all()
    return [member_from_row(row) for row in rows]


def find_member(conn: Connection, pool_id: str, adapter_id: str) -> PoolMember | None:
    row = conn.execute(
        select(adapter_pool_members)
        .where(adapter_pool_members.c.pool_id == pool_id)
        .where(adapter_pool_members.c.adapter_id == adapter_id)
    ).one_or_none()
    return None if row is None else member_from_row(row)


def insert_sequence(conn: Connection, sequence: Sequence) -> None:
    with translated_integrity():
        conn.execute(sequences.insert().values(**sequence.model_dump()))


def insert_version(conn: Connection, version: SequenceVersion, config: dict[str, Any]) -> None:
    with translated_integrity():
        conn.execute(
            sequence_versions.insert().values(
                id=version.id,
                tenant_key=version.tenant_key,
                sequence_id=version.sequence_id,
                version=version.version,
                mode=str(version.mode),
                config=config,
                pool_id=version.pool_id,
                active=version.active,
            )
        )


def current_version(conn: Connection, sequence_id: str) -> SequenceVersion | None:
    """The sequence's active version with the highest number (what a new enrollment uses)."""
    row = conn.execute(
        select(sequence_versions)
        .where(sequence_versions.c.sequence_id == sequence_id)
        .where(sequence_versions.c.active.is_(True))
        .order_by(sequence_versions.c.version.desc())
        .limit(1)
    ).one_or_none()
    return None if row is None else version_from_row(row)


def insert_step(conn: Connection, step: Step) -> None:
    # The columns keep their first name; they hold the sending window (allowed hours).
    window = step.sending_window
    values = step.model_dump(mode="json", exclude={"sending_window"})
    values["quiet_start_hour"] = None if window is None else window.start_hour
    values["quiet_end_hour"] = None if window is None else window.end_hour
    with translated_integrity():
        conn.execute(steps.insert().values(**values))


def live_enrollment_count(conn: Connection, pool_id: str) -> int:
    """Active or paused enrollments of versions that use ``pool_id``."""
    count = conn.execute(
        select(func.count())
        .select_from(
            enrollments.join(
                sequence_versions, enrollments.c.sequence_version_id == sequence_versions.c.id
            )
        )
        .where(sequence_versions.c.pool_id == pool_id)
        .where(enrollments.c.state.in_(("active", "paused")))
    ).scalar_one()
    return int(count)


def versions_using_pool(conn: Connection, pool_id: str) -> int:
    count = conn.execute(
        select(func.count())
        .select_from(sequence_versions)
        .where(sequence_versions.c.pool_id == pool_id)
    ).scalar_one()
    return int(count)


def subscriber_enrollments(
    conn: Connection, tenant_key: str, sequence_id: str, subscriber_ids: list[str]
) -> dict[str, str]:
    """Enrollment id → state of every enrollment of these subscribers in the sequence."""
    found: dict[str, str] = {}
    for start in range(0, len(subscriber_ids), 1000):  # bounded IN lists for lead imports
        chunk = subscriber_ids[start : start + 1000]
        rows = conn.execute(
            select(enrollments.c.id, enrollments.c.state)
            .where(enrollments.c.tenant_key == tenant_key)
            .where(enrollments.c.sequence_id == sequence_id)
            .where(enrollments.c.subscriber_id.in_(chunk))
        )
        found.update({str(row.id): row.state for row in rows})
    return found
