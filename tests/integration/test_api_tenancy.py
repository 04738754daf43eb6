"""Cross-tenant access is impossible: read, add, repin, ingest with another tenant's rows.

Rule (docs/api.md): an id owned by another tenant raises ``TenantMismatchError``; no
record is produced and no row of the other tenant is returned or changed.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Engine

from dripdrop_core.errors import TenantMismatchError
from streams.api import DripDrop
from streams.settings import Settings
from tests.integration._api_fixtures import *  # noqa: F403
from tests.integration._api_fixtures import Outbound, build_outbound, consume, insert_enrollment


@pytest.fixture
def two_tenants(api: DripDrop, new_tenant: Callable[[], str]) -> tuple[Outbound, Outbound]:
    return build_outbound(api, new_tenant()), build_outbound(api, new_tenant())


def test_read_other_tenants_pool_adapter_members_is_tenant_mismatch(
    api: DripDrop, two_tenants: tuple[Outbound, Outbound]
) -> None:
    a, b = two_tenants
    reads: list[Callable[[], object]] = [
        lambda: api.get_pool(a.pool_id, tenant_key=b.tenant_key),
        lambda: api.list_pool_members(a.pool_id, tenant_key=b.tenant_key),
        lambda: api.inspect_pool(a.pool_id, tenant_key=b.tenant_key),
        lambda: api.get_adapter(a.adapter_id, tenant_key=b.tenant_key),
    ]
    for read in reads:
        with pytest.raises(TenantMismatchError, match=b.tenant_key):
            read()
    assert api.get_pool(a.pool_id, tenant_key=a.tenant_key).tenant_key == a.tenant_key


def test_read_other_tenants_enrollment_is_tenant_mismatch(
    api: DripDrop, db_engine: Engine, two_tenants: tuple[Outbound, Outbound]
) -> None:
    a, b = two_tenants
    enrollment = insert_enrollment(
        db_engine,
        tenant_key=a.tenant_key,
        sequence_id=a.sequence_id,
        version_id=a.version_id,
        adapter_id=a.adapter_id,
    )
    with pytest.raises(TenantMismatchError):
        api.get_enrollment(enrollment, tenant_key=b.tenant_key)
    assert api.get_enrollment(enrollment, tenant_key=a.tenant_key).adapter_id == a.adapter_id


def test_add_other_tenants_adapter_or_to_other_tenants_pool_is_tenant_mismatch(
    api: DripDrop, two_tenants: tuple[Outbound, Outbound]
) -> None:
    a, b = two_tenants
    spare_b = api.create_channel_adapter(tenant_key=b.tenant_key, name="spare")
    with pytest.raises(TenantMismatchError):  # B's adapter into A's pool, as A
        api.add_pool_member(a.pool_id, tenant_key=a.tenant_key, adapter_id=spare_b.id)
    with pytest.raises(TenantMismatchError):  # B's adapter into A's pool, as B
        api.add_pool_member(a.pool_id, tenant_key=b.tenant_key, adapter_id=spare_b.id)
    with pytest.raises(TenantMismatchError):
        api.remove_pool_member(a.pool_id, tenant_key=b.tenant_key, adapter_id=a.adapter_id)
    assert [m.adapter_id for m in api.list_pool_members(a.pool_id, tenant_key=a.tenant_key)] == [
        a.adapter_id
    ]


def test_author_with_other_tenants_rows_is_tenant_mismatch(
    api: DripDrop, two_tenants: tuple[Outbound, Outbound]
) -> None:
    a, b = two_tenants
    with pytest.raises(TenantMismatchError):  # A's version using B's pool
        api.create_sequence_version(
            a.sequence_id,
            tenant_key=a.tenant_key,
            version=9,
            mode="outbound",
            config={"pool_id": b.pool_id},
        )
    with pytest.raises(TenantMismatchError):  # A's step overriding through B's adapter
        api.create_step(
            a.version_id,
            tenant_key=a.tenant_key,
            key="x",
            position=0,
            adapter_override_id=b.adapter_id,
        )
    with pytest.raises(TenantMismatchError):
        api.update_channel_adapter(a.adapter_id, tenant_key=b.tenant_key, daily_cap=1)
    with pytest.raises(TenantMismatchError):
        api.set_adapter_health(a.adapter_id, tenant_key=b.tenant_key, health_state="resting")
    assert api.get_adapter(a.adapter_id, tenant_key=a.tenant_key).daily_cap is None


def test_enroll_repin_pause_ingest_across_tenants_is_rejected_and_produces_nothing(
    api: DripDrop, settings: Settings, db_engine: Engine, two_tenants: tuple[Outbound, Outbound]
) -> None:
    a, b = two_tenants
    enrollment = insert_enrollment(
        db_engine,
        tenant_key=a.tenant_key,
        sequence_id=a.sequence_id,
        version_id=a.version_id,
        adapter_id=a.adapter_id,
    )
    attempts: list[Callable[[], object]] = [
        lambda: api.enroll(
            tenant_key=b.tenant_key,
            sequence_id=a.sequence_id,
            subscriber_id="s",
            recipient="p@example.com",
        ),
        lambda: api.repin_enrollment(
            enrollment, tenant_key=b.tenant_key, new_adapter_id=b.adapter_id
        ),
        lambda: api.repin_enrollment(
            enrollment, tenant_key=a.tenant_key, new_adapter_id=b.adapter_id
        ),
        lambda: api.pause_enrollment(enrollment, tenant_key=b.tenant_key),
        lambda: api.resume_enrollment(enrollment, tenant_key=b.tenant_key),
        lambda: api.unenroll(enrollment, tenant_key=b.tenant_key),
        lambda: api.ingest_inbound_message(
            a.adapter_id,
            {"message_id": "<r1@example.com>", "from": "p@example.com", "to": "rep@example.com"},
            tenant_key=b.tenant_key,
        ),
    ]
    for attempt in attempts:
        with pytest.raises(TenantMismatchError):
            attempt()
    assert consume(settings, "enrollments", expect=0, timeout=2, settle=0.5) == []
    assert consume(settings, "inbound-messages", expect=0, timeout=2, settle=0.5) == []
