"""Every validation error of SPEC §4 and §5.1 through the Python API (real PostgreSQL, Kafka)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, insert
from sqlalchemy.exc import IntegrityError

from dripdrop_core.errors import ConflictError, InputError, NotFoundError
from streams.api import (
    ClassMismatchError,
    DripDrop,
    InvalidInputError,
    PoolInUseError,
)
from streams.db.tables import adapter_pool_members
from tests.integration._api_fixtures import *  # noqa: F403


def test_create_adapter_nonpositive_daily_cap_is_invalid(
    api: DripDrop, new_tenant: Callable[[], str]
) -> None:
    with pytest.raises(InvalidInputError, match="daily_cap"):
        api.create_channel_adapter(tenant_key=new_tenant(), name="a", daily_cap=0)


@pytest.mark.parametrize(
    ("field", "value"),
    [("ramp_increment", 0), ("ramp_floor", -1), ("min_gap_seconds", -5), ("health_score", 1.5)],
)
def test_create_adapter_out_of_range_ramp_field_is_invalid(
    api: DripDrop, new_tenant: Callable[[], str], field: str, value: float
) -> None:
    out_of_range: dict[str, Any] = {field: value}  # kwargs for whichever field is under test
    with pytest.raises(InvalidInputError, match=field):
        api.create_channel_adapter(tenant_key=new_tenant(), name="a", **out_of_range)


def test_create_adapter_unknown_timezone_is_invalid(
    api: DripDrop, new_tenant: Callable[[], str]
) -> None:
    with pytest.raises(InvalidInputError, match="timezone"):
        api.create_channel_adapter(tenant_key=new_tenant(), name="a", timezone="Mars/Base")


def test_create_adapter_duplicate_name_is_conflict(
    api: DripDrop, new_tenant: Callable[[], str]
) -> None:
    tenant = new_tenant()
    api.create_channel_adapter(tenant_key=tenant, name="a")
    with pytest.raises(ConflictError, match="already exists|exists"):
        api.create_channel_adapter(tenant_key=tenant, name="a")


def test_update_adapter_unknown_field_is_invalid(
    api: DripDrop, new_tenant: Callable[[], str]
) -> None:
    tenant = new_tenant()
    adapter = api.create_channel_adapter(tenant_key=tenant, name="a")
    with pytest.raises(InvalidInputError, match="unknown adapter field"):
        api.update_channel_adapter(adapter.id, tenant_key=tenant, dialy_cap=10)


def test_set_health_unknown_state_is_invalid(api: DripDrop, new_tenant: Callable[[], str]) -> None:
    tenant = new_tenant()
    adapter = api.create_channel_adapter(tenant_key=tenant, name="a")
    with pytest.raises(InvalidInputError, match="health_state"):
        api.set_adapter_health(adapter.id, tenant_key=tenant, health_state="sleeping")


def test_create_pool_unknown_policy_is_invalid(
    api: DripDrop, new_tenant: Callable[[], str]
) -> None:
    with pytest.raises(InvalidInputError, match="on_pin_unavailable"):
        api.create_adapter_pool(tenant_key=new_tenant(), name="p", on_pin_unavailable="drop")


def test_create_pool_duplicate_name_in_tenant_is_conflict(
    api: DripDrop, new_tenant: Callable[[], str]
) -> None:
    tenant = new_tenant()
    api.create_adapter_pool(tenant_key=tenant, name="p")
    with pytest.raises(ConflictError):
        api.create_adapter_pool(tenant_key=tenant, name="p")
    api.create_adapter_pool(tenant_key=new_tenant(), name="p")  # other tenant: fine


@pytest.mark.parametrize("provider", ["sendgrid", "mailersend", "gmal", "SMTP", ""])
def test_an_adapter_naming_a_provider_we_do_not_ship_is_refused_when_created(
    api: DripDrop, new_tenant: Callable[[], str], provider: str
) -> None:
    """Refused with a clear error at once, never at its first send (issue 12 item 1)."""
    tenant = new_tenant()
    with pytest.raises(InvalidInputError) as caught:
        api.create_channel_adapter(tenant_key=tenant, name="x", provider=provider)
    assert str(caught.value.code) == "unknown_provider"  # an instance code
    assert "smtp" in str(caught.value) and "mailgun" in str(caught.value)
    adapter = api.create_channel_adapter(tenant_key=tenant, name="y", provider="smtp")
    with pytest.raises(InvalidInputError):
        api.update_channel_adapter(adapter.id, tenant_key=tenant, provider=provider)


@pytest.mark.parametrize("provider", ["mailgun", "postmark", "ses"])
def test_add_member_esp_provider_as_mailbox_is_class_mismatch(
    api: DripDrop, new_tenant: Callable[[], str], provider: str
) -> None:
    tenant = new_tenant()
    adapter = api.create_channel_adapter(tenant_key=tenant, name="esp", provider=provider)
    pool = api.create_adapter_pool(tenant_key=tenant, name="p")
    with pytest.raises(ClassMismatchError) as caught:
        api.add_pool_member(
            pool.id, tenant_key=tenant, adapter_id=adapter.id, member_class="mailbox"
        )
    assert caught.value.code == "class_mismatch"
    assert isinstance(caught.value, ConflictError)
    member = api.add_pool_member(
        pool.id, tenant_key=tenant, adapter_id=adapter.id, member_class="esp_api"
    )
    assert member.member_class == "esp_api"


@pytest.mark.parametrize("weight", [0, -3])
def test_add_member_nonpositive_weight_is_invalid(
    api: DripDrop, new_tenant: Callable[[], str], weight: int
) -> None:
    tenant = new_tenant()
    adapter = api.create_channel_adapter(tenant_key=tenant, name="a")
    pool = api.create_adapter_pool(tenant_key=tenant, name="p")
    with pytest.raises(InvalidInputError, match="weight"):
        api.add_pool_member(pool.id, tenant_key=tenant, adapter_id=adapter.id, weight=weight)


def test_add_member_twice_is_conflict(api: DripDrop, new_tenant: Callable[[], str]) -> None:
    tenant = new_tenant()
    adapter = api.create_channel_adapter(tenant_key=tenant, name="a")
    pool = api.create_adapter_pool(tenant_key=tenant, name="p")
    api.add_pool_member(pool.id, tenant_key=tenant, adapter_id=adapter.id)
    with pytest.raises(ConflictError, match="already a member"):
        api.add_pool_member(pool.id, tenant_key=tenant, adapter_id=adapter.id)


def test_add_member_unknown_pool_or_adapter_is_not_found(
    api: DripDrop, new_tenant: Callable[[], str]
) -> None:
    tenant = new_tenant()
    adapter = api.create_channel_adapter(tenant_key=tenant, name="a")
    pool = api.create_adapter_pool(tenant_key=tenant, name="p")
    missing = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(NotFoundError) as caught:
        api.add_pool_member(missing, tenant_key=tenant, adapter_id=adapter.id)
    assert caught.value.code == "unknown_pool"
    with pytest.raises(NotFoundError) as caught:
        api.add_pool_member(pool.id, tenant_key=tenant, adapter_id=missing)
    assert caught.value.code == "unknown_adapter"
    with pytest.raises(NotFoundError):
        api.add_pool_member(pool.id, tenant_key=tenant, adapter_id="not-a-uuid")


def test_pool_mixed_classes_is_allowed_with_warning(
    api: DripDrop, new_tenant: Callable[[], str]
) -> None:
    tenant = new_tenant()
    gmail = api.create_channel_adapter(tenant_key=tenant, name="g", provider="gmail")
    ses = api.create_channel_adapter(tenant_key=tenant, name="s", provider="ses")
    pool = api.create_adapter_pool(tenant_key=tenant, name="p")
    api.add_pool_member(pool.id, tenant_key=tenant, adapter_id=gmail.id)
    assert api.inspect_pool(pool.id, tenant_key=tenant).warnings == []
    api.add_pool_member(pool.id, tenant_key=tenant, adapter_id=ses.id, member_class="esp_api")
    assert api.inspect_pool(pool.id, tenant_key=tenant).warnings == ["mixed_classes"]


def test_remove_member_not_a_member_is_not_found(
    api: DripDrop, new_tenant: Callable[[], str]
) -> None:
    tenant = new_tenant()
    adapter = api.create_channel_adapter(tenant_key=tenant, name="a")
    pool = api.create_adapter_pool(tenant_key=tenant, name="p")
    with pytest.raises(NotFoundError, match="not a member"):
        api.remove_pool_member(pool.id, tenant_key=tenant, adapter_id=adapter.id)


def test_create_version_outbound_without_pool_is_invalid(
    api: DripDrop, new_tenant: Callable[[], str]
) -> None:
    tenant = new_tenant()
    sequence = api.create_sequence(tenant_key=tenant, key="s")
    with pytest.raises(InvalidInputError, match="pool_id"):
        api.create_sequence_version(sequence.id, tenant_key=tenant, version=1, mode="outbound")


def test_create_version_unknown_pool_is_not_found(
    api: DripDrop, new_tenant: Callable[[], str]
) -> None:
    tenant = new_tenant()
    sequence = api.create_sequence(tenant_key=tenant, key="s")
    with pytest.raises(NotFoundError):
        api.create_sequence_version(
            sequence.id,
            tenant_key=tenant,
            version=1,
            mode="outbound",
            config={"pool_id": "00000000-0000-4000-8000-000000000000"},
        )


def test_create_version_pool_on_lifecycle_or_bad_mode_is_invalid(
    api: DripDrop, new_tenant: Callable[[], str]
) -> None:
    tenant = new_tenant()
    pool = api.create_adapter_pool(tenant_key=tenant, name="p")
    sequence = api.create_sequence(tenant_key=tenant, key="s")
    with pytest.raises(InvalidInputError, match="only for outbound versions"):
        api.create_sequence_version(
            sequence.id, tenant_key=tenant, version=1, config={"pool_id": pool.id}
        )
    with pytest.raises(InvalidInputError, match="mode"):
        api.create_sequence_version(sequence.id, tenant_key=tenant, version=1, mode="cold")
    with pytest.raises(InvalidInputError, match="version"):
        api.create_sequence_version(sequence.id, tenant_key=tenant, version=0)


def test_create_version_duplicate_number_is_conflict(
    api: DripDrop, new_tenant: Callable[[], str]
) -> None:
    tenant = new_tenant()
    sequence = api.create_sequence(tenant_key=tenant, key="s")
    api.create_sequence_version(sequence.id, tenant_key=tenant, version=1)
    with pytest.raises(ConflictError):
        api.create_sequence_version(sequence.id, tenant_key=tenant, version=1)


def test_create_step_adapter_fields_follow_version_mode(
    api: DripDrop, new_tenant: Callable[[], str]
) -> None:
    world = build_outbound(api, new_tenant())  # noqa: F405
    tenant = world.tenant_key
    with pytest.raises(InvalidInputError, match="adapter_override_id"):
        api.create_step(
            world.version_id, tenant_key=tenant, key="s1", position=0, adapter_id=world.adapter_id
        )
    step = api.create_step(
        world.version_id,
        tenant_key=tenant,
        key="s1",
        position=0,
        adapter_override_id=world.adapter_id,
    )
    assert step.adapter_override_id == world.adapter_id
    with pytest.raises(ConflictError):
        api.create_step(world.version_id, tenant_key=tenant, key="s2", position=0)
    with pytest.raises(InvalidInputError, match="CR or LF"):
        api.create_step(
            world.version_id,
            tenant_key=tenant,
            key="s3",
            position=3,
            subject_template="a\r\nBcc: x",
        )


def test_delete_pool_used_by_a_version_is_pool_in_use(
    api: DripDrop, new_tenant: Callable[[], str]
) -> None:
    world = build_outbound(api, new_tenant())  # noqa: F405
    with pytest.raises(PoolInUseError, match="used by 1 sequence version"):
        api.delete_adapter_pool(world.pool_id, tenant_key=world.tenant_key)
    unused = api.create_adapter_pool(tenant_key=world.tenant_key, name="spare")
    assert api.delete_adapter_pool(unused.id, tenant_key=world.tenant_key).id == unused.id


def test_every_error_is_an_input_error_with_a_code(
    api: DripDrop, new_tenant: Callable[[], str]
) -> None:
    with pytest.raises(InputError) as caught:
        api.get_pool("00000000-0000-4000-8000-000000000000", tenant_key=new_tenant())
    assert caught.value.code == "unknown_pool"
    assert "00000000-0000-4000-8000-000000000000" in str(caught.value)


def test_database_rejects_cross_tenant_member_even_without_the_api(
    api: DripDrop, db_engine: Engine, new_tenant: Callable[[], str]
) -> None:
    tenant_a, tenant_b = new_tenant(), new_tenant()
    adapter_b = api.create_channel_adapter(tenant_key=tenant_b, name="b")
    pool_a = api.create_adapter_pool(tenant_key=tenant_a, name="p")
    with pytest.raises(IntegrityError, match="fk_adapter_pool_members"), db_engine.begin() as conn:
        conn.execute(
            insert(adapter_pool_members).values(
                id="00000000-0000-4000-8000-0000000000aa",
                tenant_key=tenant_a,
                pool_id=pool_a.id,
                adapter_id=adapter_b.id,
            )
        )
