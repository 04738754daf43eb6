"""A pinned sender leaving and coming back, on dict tables (SPEC §5.3).

Removing an adapter from one pool touches only that pool's enrollments; a ``reassign``
pool that paused enrollments for want of any eligible member continues them when a
member returns (on their own sender if it is the one back, thread kept); a ``pause``
pool's paused enrollments wait for an operator.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest

from dripdrop_core.models import EnrollmentState
from dripdrop_core.policy import OutboundPolicy
from streams.processor import commands, config_changes
from streams.processor.flow import Processor
from streams.processor.runtime import EnrollmentRuntime, Outputs
from streams.processor.store import DictStore
from tests.agents.test_processor import T0, TENANT, claims


def _config(
    p: Processor, entity_type: str, entity_id: str, payload: dict[str, Any] | None
) -> Outputs:
    change = {
        "tenant_key": TENANT,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "deleted": payload is None,
        "payload": None if payload is None else json.dumps({"tenant_key": TENANT, **payload}),
    }
    return config_changes.on_config(p, change, T0, 0)


def _adapter(p: Processor, name: str, *, active: bool = True) -> str:
    adapter = str(uuid.uuid5(uuid.NAMESPACE_DNS, name))
    _set_adapter(p, adapter, active=active)
    return adapter


def _set_adapter(p: Processor, adapter: str, *, active: bool) -> Outputs:
    return _config(
        p,
        "adapter",
        adapter,
        {
            "id": adapter,
            "name": adapter[:8],
            "provider": "memory",
            "from_address": f"{adapter[:8]}@x.example",
            "health_state": "active",
            "active": active,
        },
    )


def _pool(p: Processor, policy: str, members: list[str]) -> str:
    pool = str(uuid.uuid4())
    _config(p, "pool", pool, {"id": pool, "name": pool[:8], "on_pin_unavailable": policy})
    for adapter in members:
        _config(p, "pool_member", f"{pool}:{adapter}", {"pool_id": pool, "adapter_id": adapter})
    return pool


def _sequence(p: Processor, pool: str) -> str:
    """One step, due an hour after enrollment: the enrollment is scheduled, not sending."""
    seq, ver, step = (str(uuid.uuid4()) for _ in range(3))
    _config(p, "sequence", seq, {"id": seq, "key": f"k-{seq}", "name": "n"})
    _config(
        p,
        "sequence_version",
        ver,
        {"id": ver, "sequence_id": seq, "version": 1, "mode": "outbound", "pool_id": pool},
    )
    _config(
        p,
        "step",
        step,
        {
            "id": step,
            "version_id": ver,
            "key": "s0",
            "position": 0,
            "delay_seconds": 3600,
            "delay_from": "enrollment",
            "subject_template": "Hi",
            "body_template": "b",
        },
    )
    return seq


def _enroll(p: Processor, seq: str) -> str:
    enrollment_id = str(uuid.uuid4())
    commands.on_enrollment_command(
        p,
        {
            "command": "enroll",
            "tenant_key": TENANT,
            "enrollment_id": enrollment_id,
            "sequence_id": seq,
            "subscriber_id": enrollment_id,
            "recipient": f"{enrollment_id[:8]}@x.org",
            "data": "{}",
        },
        T0,
        0,
    )
    return enrollment_id


def _get(p: Processor, enrollment_id: str) -> EnrollmentRuntime:
    e = p.enrollment(enrollment_id)
    assert e is not None
    return e


@pytest.fixture
def p() -> Processor:
    return Processor(DictStore(), OutboundPolicy())


def test_removing_an_adapter_from_one_pool_leaves_the_other_pools_enrollments_alone(
    p: Processor,
) -> None:
    a = _adapter(p, "a")
    first, second = _pool(p, "pause", [a]), _pool(p, "pause", [a])
    in_first, in_second = _enroll(p, _sequence(p, first)), _enroll(p, _sequence(p, second))
    assert _get(p, in_first).adapter_id == _get(p, in_second).adapter_id == a

    _config(p, "pool_member", f"{first}:{a}", None)

    assert (_get(p, in_first).state, _get(p, in_first).reason) == (
        EnrollmentState.PAUSED,
        "pin_unavailable",
    )
    assert _get(p, in_second).state is EnrollmentState.ACTIVE


def test_a_reassign_pool_with_nobody_eligible_continues_when_another_member_returns(
    p: Processor,
) -> None:
    a, b = _adapter(p, "a"), _adapter(p, "b", active=False)
    pool = _pool(p, "reassign", [a, b])
    enrollment = _enroll(p, _sequence(p, pool))
    assert _get(p, enrollment).adapter_id == a

    _set_adapter(p, a, active=False)
    paused = _get(p, enrollment)
    assert (paused.state, paused.reason, paused.adapter_id) == (
        EnrollmentState.PAUSED,
        "pin_unavailable",
        a,
    )

    out = _set_adapter(p, b, active=True)
    moved = _get(p, enrollment)
    assert (moved.state, moved.adapter_id) == (EnrollmentState.ACTIVE, b)
    assert "enrollment.sender_reassigned" in {t["name"] for t in out.telemetry}
    (claim,) = claims(p.on_tick(0, T0 + timedelta(hours=2)))
    assert claim["command"]["adapter_id"] == b


def test_a_reassign_pool_continues_on_the_pinned_sender_when_it_is_the_one_back(
    p: Processor,
) -> None:
    a, b = _adapter(p, "a"), _adapter(p, "b", active=False)
    enrollment = _enroll(p, _sequence(p, _pool(p, "reassign", [a, b])))
    _set_adapter(p, a, active=False)
    assert _get(p, enrollment).state is EnrollmentState.PAUSED

    out = _set_adapter(p, a, active=True)

    back = _get(p, enrollment)
    assert (back.state, back.adapter_id) == (EnrollmentState.ACTIVE, a)
    assert "enrollment.sender_reassigned" not in {t["name"] for t in out.telemetry}
    (claim,) = claims(p.on_tick(0, T0 + timedelta(hours=2)))
    assert claim["command"]["adapter_id"] == a


def test_a_pause_pools_enrollment_stays_paused_when_its_sender_returns(p: Processor) -> None:
    a = _adapter(p, "a")
    enrollment = _enroll(p, _sequence(p, _pool(p, "pause", [a])))
    _set_adapter(p, a, active=False)
    _set_adapter(p, a, active=True)
    assert _get(p, enrollment).state is EnrollmentState.PAUSED
    assert claims(p.on_tick(0, T0 + timedelta(hours=2))) == []


def test_a_member_added_to_a_reassign_pool_takes_its_paused_enrollments(p: Processor) -> None:
    a = _adapter(p, "a")
    pool = _pool(p, "reassign", [a])
    enrollment = _enroll(p, _sequence(p, pool))
    _set_adapter(p, a, active=False)
    assert _get(p, enrollment).state is EnrollmentState.PAUSED

    c = _adapter(p, "c")
    _config(p, "pool_member", f"{pool}:{c}", {"pool_id": pool, "adapter_id": c})

    assert (_get(p, enrollment).state, _get(p, enrollment).adapter_id) == (
        EnrollmentState.ACTIVE,
        c,
    )
