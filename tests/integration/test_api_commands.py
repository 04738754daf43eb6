"""Enrollment and inbound commands: validated against PostgreSQL, produced keyed by tenant."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Engine

from dripdrop_core.errors import ConflictError, NotFoundError
from dripdrop_core.limits import MAX_DATA_BYTES
from streams.api import DripDrop, InvalidInputError, NotPoolMemberError, enrollment_id_for
from streams.codecs import partition_for
from streams.settings import Settings
from tests.integration._api_fixtures import *  # noqa: F403
from tests.integration._api_fixtures import Outbound, build_outbound, consume, insert_enrollment


@pytest.fixture
def world(api: DripDrop, new_tenant: Callable[[], str]) -> Outbound:
    return build_outbound(api, new_tenant())


def test_enroll_produces_command_keyed_by_tenant_with_deterministic_id(
    api: DripDrop, settings: Settings, world: Outbound
) -> None:
    first = api.enroll(
        tenant_key=world.tenant_key,
        sequence_id=world.sequence_id,
        subscriber_id="lead-42",
        recipient="lead@example.com",
        data={"first_name": "Ada"},
        recipient_timezone="Europe/Paris",
    )
    again = api.enroll(
        tenant_key=world.tenant_key,
        sequence_id=world.sequence_id,
        subscriber_id="lead-42",
        recipient="lead@example.com",
    )
    expected_id = enrollment_id_for(world.tenant_key, world.sequence_id, "lead-42")
    assert first.enrollment_id == again.enrollment_id == expected_id
    assert first.partition == partition_for(world.tenant_key, settings.partitions)

    records = consume(settings, "enrollments", expect=2)
    assert len(records) == 2
    key, partition, value, _ = records[0]
    assert key == world.tenant_key and partition == first.partition
    assert value["command"] == "enroll"
    assert value["enrollment_id"] == expected_id
    assert value["sequence_version_id"] == world.version_id
    assert value["recipient"] == "lead@example.com"
    assert value["recipient_timezone"] == "Europe/Paris"
    assert '"first_name": "Ada"' in value["data"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"recipient": "not-an-address"}, "recipient"),
        ({"recipient": "a@example.com\r\nBcc: x@example.com"}, "CR or LF"),
        ({"subscriber_id": " "}, "subscriber_id"),
        ({"recipient_timezone": "Nowhere/City"}, "timezone"),
        ({"data": {"when": object()}}, "JSON"),
        ({"data": {"notes": "x" * MAX_DATA_BYTES}}, "the limit is"),
        ({"subscriber_id": "s" * 3000}, "subscriber_id is 3000 characters"),
    ],
)
def test_enroll_bad_input_is_invalid(
    api: DripDrop, world: Outbound, kwargs: dict[str, object], match: str
) -> None:
    params: dict[str, object] = {
        "tenant_key": world.tenant_key,
        "sequence_id": world.sequence_id,
        "subscriber_id": "s",
        "recipient": "p@example.com",
        **kwargs,
    }
    with pytest.raises(InvalidInputError, match=match):
        api.enroll(**params)  # type: ignore[arg-type]


def test_enroll_many_produces_every_command_in_order_with_one_flush(
    api: DripDrop, settings: Settings, world: Outbound
) -> None:
    prospects = [
        {"subscriber_id": f"lead-{i}", "recipient": f"lead{i}@example.com", "data": {"n": i}}
        for i in range(25)
    ]
    accepted = api.enroll_many(
        tenant_key=world.tenant_key, sequence_id=world.sequence_id, prospects=prospects
    )
    expected = [
        enrollment_id_for(world.tenant_key, world.sequence_id, f"lead-{i}") for i in range(25)
    ]
    assert [a.enrollment_id for a in accepted] == expected
    offsets = [a.offset for a in accepted]
    assert offsets == sorted(offsets) and len(set(offsets)) == 25
    records = consume(settings, "enrollments", expect=25)
    assert [value["enrollment_id"] for _, _, value, _ in records] == expected
    assert {value["sequence_version_id"] for _, _, value, _ in records} == {world.version_id}


def test_enroll_many_with_one_bad_prospect_produces_nothing(
    api: DripDrop, settings: Settings, world: Outbound
) -> None:
    prospects = [
        {"subscriber_id": "ok", "recipient": "ok@example.com"},
        {"subscriber_id": "bad", "recipient": "not-an-address"},
    ]
    with pytest.raises(InvalidInputError, match="prospect 1: .*recipient"):
        api.enroll_many(
            tenant_key=world.tenant_key, sequence_id=world.sequence_id, prospects=prospects
        )
    assert consume(settings, "enrollments", expect=1, timeout=3) == []


def test_enroll_sequence_without_active_version_is_conflict(
    api: DripDrop, new_tenant: Callable[[], str]
) -> None:
    tenant = new_tenant()
    sequence = api.create_sequence(tenant_key=tenant, key="empty")
    with pytest.raises(ConflictError, match="no active version"):
        api.enroll(
            tenant_key=tenant, sequence_id=sequence.id, subscriber_id="s", recipient="p@example.com"
        )
    with pytest.raises(NotFoundError):
        api.enroll(
            tenant_key=tenant,
            sequence_id="00000000-0000-4000-8000-000000000000",
            subscriber_id="s",
            recipient="p@example.com",
        )


def test_pause_resume_unenroll_unknown_or_finished_enrollment_is_rejected(
    api: DripDrop, db_engine: Engine, world: Outbound
) -> None:
    with pytest.raises(NotFoundError):
        api.pause_enrollment("00000000-0000-4000-8000-000000000000", tenant_key=world.tenant_key)
    done = insert_enrollment(
        db_engine,
        tenant_key=world.tenant_key,
        sequence_id=world.sequence_id,
        version_id=world.version_id,
        adapter_id=world.adapter_id,
        state="replied",
    )
    for command in (api.pause_enrollment, api.resume_enrollment, api.unenroll):
        with pytest.raises(ConflictError, match="replied"):
            command(done, tenant_key=world.tenant_key)


def test_pause_live_enrollment_produces_command(
    api: DripDrop, settings: Settings, db_engine: Engine, world: Outbound
) -> None:
    live = insert_enrollment(
        db_engine,
        tenant_key=world.tenant_key,
        sequence_id=world.sequence_id,
        version_id=world.version_id,
        adapter_id=world.adapter_id,
    )
    accepted = api.pause_enrollment(live, tenant_key=world.tenant_key, reason="operator")
    assert accepted.command == "pause" and accepted.enrollment_id == live
    [(key, _, value, _)] = consume(settings, "enrollments", expect=1)
    assert (key, value["command"], value["reason"]) == (world.tenant_key, "pause", "operator")


def test_repin_validates_membership_activity_and_health(
    api: DripDrop, settings: Settings, db_engine: Engine, world: Outbound
) -> None:
    tenant = world.tenant_key
    live = insert_enrollment(
        db_engine,
        tenant_key=tenant,
        sequence_id=world.sequence_id,
        version_id=world.version_id,
        adapter_id=world.adapter_id,
    )
    outsider = api.create_channel_adapter(tenant_key=tenant, name="outsider", provider="gmail")
    with pytest.raises(NotPoolMemberError, match="not an active member"):
        api.repin_enrollment(live, tenant_key=tenant, new_adapter_id=outsider.id)

    second = api.create_channel_adapter(tenant_key=tenant, name="second", provider="gmail")
    api.add_pool_member(world.pool_id, tenant_key=tenant, adapter_id=second.id)
    api.set_adapter_health(second.id, tenant_key=tenant, health_state="resting")
    with pytest.raises(ConflictError) as caught:
        api.repin_enrollment(live, tenant_key=tenant, new_adapter_id=second.id)
    assert caught.value.code == "adapter_resting"
    api.set_adapter_health(second.id, tenant_key=tenant, health_state="active")
    api.update_channel_adapter(second.id, tenant_key=tenant, active=False)
    with pytest.raises(ConflictError) as caught:
        api.repin_enrollment(live, tenant_key=tenant, new_adapter_id=second.id)
    assert caught.value.code == "adapter_inactive"

    api.update_channel_adapter(second.id, tenant_key=tenant, active=True)
    accepted = api.repin_enrollment(live, tenant_key=tenant, new_adapter_id=second.id)
    [(_, _, value, _)] = consume(settings, "enrollments", expect=1)
    assert value["command"] == "repin" and value["new_adapter_id"] == second.id
    assert accepted.enrollment_id == live


def test_repin_lifecycle_enrollment_is_conflict(
    api: DripDrop, db_engine: Engine, world: Outbound
) -> None:
    tenant = world.tenant_key
    version = api.create_sequence_version(world.sequence_id, tenant_key=tenant, version=3)
    live = insert_enrollment(
        db_engine,
        tenant_key=tenant,
        sequence_id=world.sequence_id,
        version_id=version.id,
        mode="lifecycle",
        subscriber_id="lc",
    )
    with pytest.raises(ConflictError, match="not outbound"):
        api.repin_enrollment(live, tenant_key=tenant, new_adapter_id=world.adapter_id)


def test_ingest_normalizes_ids_and_produces_inbound_record(
    api: DripDrop, settings: Settings, world: Outbound
) -> None:
    accepted = api.ingest_inbound_message(
        world.adapter_id,
        {
            "message_id": " <reply-1@example.com> ",
            "in_reply_to": "<out-2@rep.example.com>",
            "references": "<out-1@rep.example.com> <out-2@rep.example.com>",
            "from": "lead@example.com",
            "to": "rep@example.com",
            "subject": "Re: hello",
            "headers": {"X-Provider-Message-ID": "abc"},
            "intent": "reply",
        },
        tenant_key=world.tenant_key,
    )
    assert accepted.command == "ingest"
    [(key, _, value, _)] = consume(settings, "inbound-messages", expect=1)
    assert key == world.tenant_key
    assert value["message_id"] == "reply-1@example.com"
    assert value["in_reply_to"] == "out-2@rep.example.com"
    assert value["references"] == ["out-1@rep.example.com", "out-2@rep.example.com"]
    assert value["headers"] == {"x-provider-message-id": "abc"}
    assert value["adapter_id"] == world.adapter_id


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"intent": "maybe"}, "unknown_intent"),
        ({"message_id": "<>"}, "invalid_message_id"),
        ({"message_id": "a@b\r\nX: y"}, "header_injection"),
        ({"unexpected": "field"}, "input"),
    ],
)
def test_ingest_bad_message_is_invalid(
    api: DripDrop, world: Outbound, message: dict[str, str], code: str
) -> None:
    base = {"message_id": "<m@example.com>", "from": "p@example.com", "to": "rep@example.com"}
    with pytest.raises(InvalidInputError) as caught:
        api.ingest_inbound_message(
            world.adapter_id, {**base, **message}, tenant_key=world.tenant_key
        )
    assert caught.value.code == code
