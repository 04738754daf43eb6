"""Sender pools and their members (SPEC §5.1, §5.2): create, delete, inspect, add, remove.

Authoring calls: validate, write PostgreSQL and the outbox in one transaction, then relay.
"""

from __future__ import annotations

from dripdrop_core.errors import ConflictError
from dripdrop_core.models import MemberClass, PinPolicy, Pool, PoolMember
from dripdrop_core.selection import pool_warnings, validate_member
from streams.api._context import Context
from streams.api._errors import ClassMismatchError, PoolInUseError
from streams.api._models import PoolView
from streams.api._validation import check_nonempty, validated
from streams.db import authoring as repo
from streams.db.tables import adapter_pools


class PoolAuthoring:
    """The pool and pool-member calls of ``DripDrop``."""

    def __init__(self, context: Context) -> None:
        self._ctx = context

    def create_adapter_pool(
        self, *, tenant_key: str, name: str, on_pin_unavailable: PinPolicy | str
    ) -> Pool:
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
        with self._ctx.engine.begin() as conn:
            repo.insert_pool(conn, pool)
            self._ctx.config(conn, "pool", pool.id, tenant_key, pool)
        self._ctx.after_commit()
        return pool

    def delete_adapter_pool(self, pool_id: str, *, tenant_key: str) -> Pool:
        with self._ctx.engine.begin() as conn:
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
                self._ctx.config(
                    conn, "pool_member", f"{pool.id}:{member.adapter_id}", tenant_key, None
                )
            self._ctx.config(conn, "pool", pool.id, tenant_key, None)
        self._ctx.after_commit()
        return pool

    def get_pool(self, pool_id: str, *, tenant_key: str) -> Pool:
        with self._ctx.engine.connect() as conn:
            return repo.pool_from_row(repo.load_owned(conn, "pool", pool_id, tenant_key))

    def list_pool_members(self, pool_id: str, *, tenant_key: str) -> list[PoolMember]:
        with self._ctx.engine.connect() as conn:
            pool = repo.pool_from_row(repo.load_owned(conn, "pool", pool_id, tenant_key))
            return repo.list_members(conn, pool.id, tenant_key)

    def inspect_pool(self, pool_id: str, *, tenant_key: str) -> PoolView:
        with self._ctx.engine.connect() as conn:
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
        member_class: MemberClass | str,
        weight: int,
        active: bool,
    ) -> PoolMember:
        with self._ctx.engine.begin() as conn:
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
            self._ctx.config(conn, "pool_member", f"{pool.id}:{adapter.id}", tenant_key, member)
        self._ctx.after_commit()
        return member

    def remove_pool_member(self, pool_id: str, *, tenant_key: str, adapter_id: str) -> PoolMember:
        with self._ctx.engine.begin() as conn:
            pool = repo.pool_from_row(repo.load_owned(conn, "pool", pool_id, tenant_key))
            repo.load_owned(conn, "adapter", adapter_id, tenant_key)
            member = repo.delete_member(conn, pool.id, adapter_id, tenant_key)
            self._ctx.config(
                conn, "pool_member", f"{pool.id}:{member.adapter_id}", tenant_key, None
            )
        self._ctx.after_commit()
        return member
