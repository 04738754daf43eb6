"""The processor over an in-memory store: the shell's flow without Kafka (tier 2).

The integration tier runs the same code in a real worker; these pin down the flow's own
rules fast: idempotent ticks, replayed results, pool exhaustion telemetry, parking.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dripdrop_core.errors import RecordError
from dripdrop_core.limits import MAX_DATA_BYTES, MAX_MESSAGE_BYTES
from dripdrop_core.policy import OutboundPolicy
from streams.processor import commands, config_changes, health_signals, inbound
from streams.processor.flow import Processor
from streams.processor.pinning import ConfigNotReadyError
from streams.processor.store import DictStore

T0 = datetime(2026, 12, 7, 9, tzinfo=UTC)
TENANT = "acct-1"


def _config(p: Processor, entity_type: str, entity_id: str, payload: dict[str, Any]) -> None:
    change = {
        "tenant_key": payload["tenant_key"],
        "entity_type": entity_type,
        "entity_id": entity_id,
        "deleted": False,
        "payload": json.dumps(payload),
    }
    config_changes.on_config(p, change, T0, 0)


def world(
    p: Processor, *, daily_cap: int | None = None, steps: int = 2, body: str = "b"
) -> dict[str, Any]:
    adapter, pool, seq, ver = (str(uuid.uuid4()) for _ in range(4))
    _config(
        p,
        "adapter",
        adapter,
        {
            "id": adapter,
            "tenant_key": TENANT,
            "name": "m",
            "provider": "memory",
            "from_address": "m@x.example",
            "health_state": "active",
            "daily_cap": daily_cap,
        },
    )
    _config(
        p,
        "pool",
        pool,
        {"id": pool, "tenant_key": TENANT, "name": "p", "on_pin_unavailable": "pause"},
    )
    _config(
        p,
        "pool_member",
        f"{pool}:{adapter}",
        {"pool_id": pool, "adapter_id": adapter, "tenant_key": TENANT},
    )
    _config(p, "sequence", seq, {"id": seq, "tenant_key": TENANT, "key": "k", "name": "n"})
    _config(
        p,
        "sequence_version",
        ver,
        {
            "id": ver,
            "sequence_id": seq,
            "tenant_key": TENANT,
            "version": 1,
            "mode": "outbound",
            "pool_id": pool,
        },
    )
    for position in range(steps):
        step = str(uuid.uuid4())
        _config(
            p,
            "step",
            step,
            {
                "id": step,
                "version_id": ver,
                "tenant_key": TENANT,
                "key": f"s{position}",
                "position": position,
                "delay_seconds": 3600 * position,
                "subject_template": "Hi {{ name }}",
                "body_template": body,
            },
        )
    return {"adapter": adapter, "pool": pool, "sequence": seq}


def enroll(
    p: Processor,
    w: dict[str, Any],
    n: int,
    at: datetime = T0,
    data: dict[str, Any] | None = None,
) -> list[Any]:
    return [
        commands.on_enrollment_command(
            p,
            {
                "command": "enroll",
                "tenant_key": TENANT,
                "enrollment_id": str(uuid.uuid4()),
                "sequence_id": w["sequence"],
                "subscriber_id": f"s{i}",
                "recipient": f"p{i}@x.org",
                "data": json.dumps(data or {"name": "Ada"}),
            },
            at,
            0,
        )
        for i in range(n)
    ]


def claims(*outs: Any) -> list[dict[str, Any]]:
    return [op for out in outs for op in out.sink if op["op"] == "claim"]


def first_step_sent(p: Processor, w: dict[str, Any]) -> dict[str, Any]:
    """Enroll one prospect and report its first send delivered; return the send command."""
    (out,) = enroll(p, w, 1)
    command: dict[str, Any] = claims(out)[0]["command"]
    sent = {
        "enrollment_id": command["enrollment_id"],
        "status": "sent",
        "step_execution_id": command["step_execution_id"],
    }
    p.on_result(sent, T0, 0)
    return command


def reply_to(
    p: Processor, w: dict[str, Any], command: dict[str, Any], message_id: str, at: datetime
) -> Any:
    """A reply to the mail ``command`` sent, received at ``at``."""
    return inbound.on_inbound(
        p,
        {
            "tenant_key": TENANT,
            "adapter_id": w["adapter"],
            "message_id": message_id,
            "in_reply_to": command["headers"]["Message-ID"],
            "references": [],
            "headers": {},
            "intent": "reply",
            "from": "p0@x.org",
            "subject": "Re",
        },
        at,
        0,
    )


@pytest.fixture
def processor() -> Processor:
    return Processor(DictStore(), OutboundPolicy())


def test_enroll_due_now_issues_one_claim_with_rendered_subject(processor: Processor) -> None:
    w = world(processor)
    (out,) = enroll(processor, w, 1)
    (claim,) = claims(out)
    assert claim["command"]["subject"] == "Hi Ada"
    assert claim["command"]["headers"]["Message-ID"].endswith("@x.example>")
    assert [t["name"] for t in out.telemetry] == ["dispatch.adapter_pinned"]


def test_enroll_without_headroom_waits_then_is_pinned_the_next_day(processor: Processor) -> None:
    """SPEC §5.2: capacity waits, it does not reject; the queue is first-in first-out."""
    w = world(processor, daily_cap=1)
    first, second, third = enroll(processor, w, 3)
    assert len(claims(first)) == 1
    assert claims(second) == [] and claims(third) == []
    (event,) = [t for t in second.telemetry if t["name"] == "dispatch.pool_exhausted"]
    assert event["attributes"]["pool_id"] == w["pool"] and event["attributes"]["waiting"]
    assert event["attributes"]["evicted_adapter_ids"] == [
        {"adapter_id": w["adapter"], "reason": "no_headroom"}
    ]
    assert not [t for t in third.telemetry if t["name"] == "dispatch.pool_exhausted"]
    for out, position in ((second, 1), (third, 2)):
        (waiting,) = [t for t in out.telemetry if t["name"] == "enrollment.waiting_capacity"]
        assert waiting["attributes"]["position"] == position
        rows = [op["row"] for op in out.sink if op["op"] == "enrollment"]
        assert (rows[-1]["state"], rows[-1]["reason"]) == ("waiting", "capacity")
    # Later the same day: still no headroom, nothing pinned.
    assert claims(processor.on_tick(0, T0 + timedelta(hours=3))) == []
    # The next local day has headroom for one: the oldest waiting one is pinned and sent.
    next_day = processor.on_tick(0, T0 + timedelta(days=1))
    (claim,) = claims(next_day)
    second_id = [op["row"] for op in second.sink if op["op"] == "enrollment"][-1]["id"]
    assert claim["command"]["enrollment_id"] == second_id
    assert [t["name"] for t in next_day.telemetry if t["name"].startswith("enrollment.")] == [
        "enrollment.capacity_pinned"
    ]


def test_repeated_result_and_repeated_tick_send_nothing_twice(processor: Processor) -> None:
    w = world(processor)
    (out,) = enroll(processor, w, 1)
    command = claims(out)[0]["command"]
    result = {
        "enrollment_id": command["enrollment_id"],
        "status": "sent",
        "step_execution_id": command["step_execution_id"],
        "provider_message_id": "q1",
    }
    processor.on_result(result, T0, 0)
    assert claims(processor.on_result(result, T0, 0)) == []  # a replayed result
    later = T0 + timedelta(hours=2)
    first_tick = processor.on_tick(0, later)
    second_tick = processor.on_tick(0, later)
    (follow_up,) = claims(first_tick)
    assert claims(second_tick) == []
    headers = follow_up["command"]["headers"]
    assert headers["In-Reply-To"] == command["headers"]["Message-ID"]


def test_enroll_before_its_sequence_arrives_is_parked_not_dead_lettered(
    processor: Processor,
) -> None:
    with pytest.raises(ConfigNotReadyError):
        commands.on_enrollment_command(
            processor,
            {
                "command": "enroll",
                "tenant_key": TENANT,
                "enrollment_id": str(uuid.uuid4()),
                "sequence_id": str(uuid.uuid4()),
                "subscriber_id": "s",
                "recipient": "p@x.org",
                "data": "{}",
            },
            T0,
            0,
        )


def test_sweep_fires_an_overdue_step_whose_index_entry_was_lost(processor: Processor) -> None:
    w = world(processor)
    command = first_step_sent(processor, w)
    schedule = processor.schedule
    for key in list(schedule.keys()):  # a crash kept the enrollment, lost its index entry
        del schedule[key]
    later = T0 + timedelta(hours=3)
    assert claims(processor.on_tick(0, later)) == []
    (swept,) = claims(processor.sweep(0, later))
    assert swept["command"]["enrollment_id"] == command["enrollment_id"]
    assert claims(processor.sweep(0, later)) == []  # now dispatching: nothing twice


def test_sweep_puts_back_a_lost_index_entry_of_a_future_step(processor: Processor) -> None:
    w = world(processor)
    command = first_step_sent(processor, w)
    for key in list(processor.schedule.keys()):
        del processor.schedule[key]
    assert claims(processor.sweep(0, T0 + timedelta(minutes=5))) == []  # not due yet
    (follow_up,) = claims(processor.on_tick(0, T0 + timedelta(hours=3)))  # indexed again
    assert follow_up["command"]["enrollment_id"] == command["enrollment_id"]


def test_sends_in_flight_when_a_partition_arrives_are_redriven_once_after_the_delay() -> None:
    p = Processor(DictStore(), OutboundPolicy(), redrive_seconds=3600, arrival_redrive_seconds=60)
    w = world(p)
    (out,) = enroll(p, w, 1)
    command = claims(out)[0]["command"]
    p.on_rebalance()  # the in-memory redrive map is gone, as in a new process
    arrived = T0 + timedelta(minutes=1)
    assert claims(p.sweep(0, arrived)) == []
    assert claims(p.on_tick(0, arrived + timedelta(seconds=30))) == []
    (again,) = claims(p.on_tick(0, arrived + timedelta(seconds=61)))
    assert again["command"]["step_execution_id"] == command["step_execution_id"]
    assert again["command"]["headers"] == command["headers"]  # same Message-ID, same mail
    assert claims(p.on_tick(0, arrived + timedelta(seconds=62))) == []  # re-armed, not repeated
    p.on_result({**again["command"], "status": "sent"}, arrived, 0)
    later = claims(p.on_tick(0, arrived + timedelta(hours=2)))  # past the steady redrive
    assert command["step_execution_id"] not in [c["command"]["step_execution_id"] for c in later]


def test_a_reply_correlates_through_an_index_written_by_the_previous_version(
    processor: Processor,
) -> None:
    from dripdrop_core.correlation import index_key, normalize_message_id

    w = world(processor)
    command = first_step_sent(processor, w)
    rfc = normalize_message_id(command["headers"]["Message-ID"])
    assert rfc is not None
    key = index_key(TENANT, rfc, "rfc")
    record = processor.index[key]
    processor.index[key] = record["step_execution_id"]  # the old value: the id only
    processor.index[f"exec:{record['step_execution_id']}"] = {
        k: v for k, v in record.items() if k != "step_execution_id"
    }
    reply = reply_to(processor, w, command, "<r1@x.org>", T0 + timedelta(minutes=5))
    rows = [op["row"] for op in reply.urgent if op["op"] == "enrollment"]
    assert rows and rows[-1]["state"] == "replied"


def test_sweep_puts_back_a_lost_health_timer(processor: Processor) -> None:
    from dripdrop_core.models import HealthState

    w = world(processor)
    signal = {
        "tenant_key": TENANT,
        "kind": "set_health",
        "adapter_id": w["adapter"],
        "health_state": "resting",
    }
    health_signals.on_health_signal(processor, signal, T0, 0)
    adapter = processor.config.adapter(w["adapter"])
    assert adapter is not None
    resting = processor.adapter_state(adapter)
    assert resting.health_state is HealthState.RESTING and resting.resting_until is not None
    for key in list(processor.schedule.keys()):  # a crash lost the timer's index entry
        del processor.schedule[key]
    processor.sweep(0, T0 + timedelta(minutes=1))
    out = processor.on_tick(0, resting.resting_until + timedelta(minutes=2))
    moved = [t["attributes"]["to"] for t in out.telemetry if t["name"] == "health.state_changed"]
    assert moved == ["probing"]


def test_a_step_rendered_past_the_size_limit_is_rejected_not_claimed(
    processor: Processor,
) -> None:
    """Found only when the send command reached Kafka, the step would be refused there and
    redriven (and refused) every few minutes; it is rejected when decided instead."""
    w = world(processor, steps=2, body="{{ name }}{{ name }}{{ name }}")
    (out,) = enroll(processor, w, 1, data={"name": "x" * (MAX_MESSAGE_BYTES // 3 + 1)})
    assert not claims(out)
    rejected = [t for t in out.telemetry if t["name"] == "dispatch.rejected"]
    assert [t["attributes"]["reason"] for t in rejected] == ["message_too_large"]
    failed = [op["row"] for op in out.sink if op["op"] == "event"]
    assert [r["data"]["reason"] for r in failed] == ["message_too_large"]


def test_enrollment_data_past_the_size_limit_is_a_record_error(processor: Processor) -> None:
    """One enrollment's table value is one changelog record: refused before it is written
    (the pipeline dead-letters a ``RecordError`` with its code)."""
    w = world(processor)
    with pytest.raises(RecordError) as info:
        enroll(processor, w, 1, data={"notes": "x" * MAX_DATA_BYTES})
    assert info.value.code == "data_too_large"
    assert claims(*enroll(processor, w, 1))  # the next enrollment goes on


@pytest.mark.parametrize("recipient", ["ada@localhost", "ada", "@x.org", "a da@x.org"])
def test_a_recipient_the_api_would_refuse_is_a_record_error(
    processor: Processor, recipient: str
) -> None:
    """One address rule (``dripdrop_core.limits.is_email_address``) for the API and a
    command produced straight onto ``enrollments``."""
    w = world(processor)
    command = {
        "command": "enroll",
        "tenant_key": TENANT,
        "enrollment_id": str(uuid.uuid4()),
        "sequence_id": w["sequence"],
        "subscriber_id": "s1",
        "recipient": recipient,
        "data": "{}",
    }
    with pytest.raises(RecordError) as info:
        commands.on_enrollment_command(processor, command, T0, 0)
    assert info.value.code == "invalid_recipient"


def test_a_reply_before_the_send_result_is_processed_still_stops_the_enrollment(
    processor: Processor,
) -> None:
    """Under a backlog the send's result can wait behind other records while the mail is
    already out and answered (an auto-reply takes seconds): the reply must correlate, and
    the late result must not schedule the next step."""
    w = world(processor, steps=2)
    (out,) = enroll(processor, w, 1)
    command = claims(out)[0]["command"]
    reply = reply_to(processor, w, command, "<early@x.org>", T0 + timedelta(seconds=3))
    assert not [t for t in reply.telemetry if t["name"] == "ingest.unmatched"]
    rows = [op["row"] for op in reply.urgent if op["op"] == "enrollment"]
    assert rows and rows[-1]["state"] == "replied"
    late = processor.on_result(
        {
            "enrollment_id": command["enrollment_id"],
            "status": "sent",
            "step_execution_id": command["step_execution_id"],
        },
        T0 + timedelta(seconds=4),
        0,
    )
    assert not claims(late)
    later = processor.on_tick(0, T0 + timedelta(days=2))
    assert not claims(later), "no step after the reply"


def test_a_replayed_claim_indexes_the_stored_message_id_for_replies(
    processor: Processor,
) -> None:
    """After a crash the re-decided send carries a new Message-ID, but PostgreSQL sends the
    stored command: a reply to the stored id must correlate, before and after the result."""
    w = world(processor, steps=2)
    (out,) = enroll(processor, w, 1)
    command = claims(out)[0]["command"]
    stored = "<stored-before-the-crash@x.example>"
    processor.on_feedback(
        {
            "enrollment_id": command["enrollment_id"],
            "step_execution_id": command["step_execution_id"],
            "adapter_id": w["adapter"],
            "tenant_key": TENANT,
            "reason": "replayed",
            "message_id": stored,
            "sent": 1,
            "day": T0.date().isoformat(),
            "last_sent_at": None,
        },
        T0,
        0,
    )
    reply = reply_to(
        processor, w, {"headers": {"Message-ID": stored}}, "<r@x.org>", T0 + timedelta(seconds=5)
    )
    rows = [op["row"] for op in reply.urgent if op["op"] == "enrollment"]
    assert rows and rows[-1]["state"] == "replied"


def test_a_send_decided_before_the_upgrade_is_indexed_when_its_result_comes(
    processor: Processor,
) -> None:
    """A send decided by the previous version has no index entry yet: the result writes
    it, as that version did."""
    from dripdrop_core.correlation import index_key, normalize_message_id

    w = world(processor, steps=2)
    (out,) = enroll(processor, w, 1)
    command = claims(out)[0]["command"]
    rfc = normalize_message_id(command["headers"]["Message-ID"])
    assert rfc is not None
    del processor.index[index_key(TENANT, rfc, "rfc")]
    processor.on_result(
        {
            "enrollment_id": command["enrollment_id"],
            "status": "sent",
            "step_execution_id": command["step_execution_id"],
        },
        T0,
        0,
    )
    assert (
        processor.index[index_key(TENANT, rfc, "rfc")]["enrollment_id"]
        == (command["enrollment_id"])
    )


def test_an_ambiguous_send_holds_its_enrollment_until_a_sent_resolution_arrives() -> None:
    p = Processor(DictStore(), OutboundPolicy(), redrive_seconds=3600, arrival_redrive_seconds=60)
    w = world(p)
    (out,) = enroll(p, w, 1)
    command = claims(out)[0]["command"]
    ambiguous = {
        "enrollment_id": command["enrollment_id"],
        "status": "ambiguous",
        "step_execution_id": command["step_execution_id"],
        "error": "interrupted_while_sending",
    }
    held = p.on_result(ambiguous, T0, 0)
    assert claims(held) == []
    names = [t["name"] for t in held.telemetry]
    assert names == ["dispatch.ambiguous", "send.ambiguous"]
    assert held.telemetry[1]["attributes"]["out_message_id"] == command["headers"][
        "Message-ID"
    ].strip("<>")
    assert p.on_result(ambiguous, T0, 0).telemetry == []  # a replayed result: said once
    # Nothing threads under it: no next step, no redrive, not after a restart either, nor
    # after a pause and a resume.
    assert claims(p.on_tick(0, T0 + timedelta(hours=5))) == []
    p.on_rebalance()
    assert claims(p.sweep(0, T0 + timedelta(hours=5))) == []
    assert claims(p.on_tick(0, T0 + timedelta(hours=6))) == []
    for command_name in ("pause", "resume"):
        commands.on_enrollment_command(
            p,
            {
                "command": command_name,
                "tenant_key": TENANT,
                "enrollment_id": ambiguous["enrollment_id"],
            },
            T0 + timedelta(hours=6),
            0,
        )
    assert claims(p.on_tick(0, T0 + timedelta(hours=7))) == []
    # Resolved as sent (``dripdrop sends resolve --sent``): it threads and goes on.
    resolved = p.on_result(
        {**ambiguous, "status": "sent", "error": None}, T0 + timedelta(hours=7), 0
    )
    assert "dispatch.sent" in [t["name"] for t in resolved.telemetry]
    (follow_up,) = claims(p.on_tick(0, T0 + timedelta(hours=9)))
    assert follow_up["command"]["headers"]["In-Reply-To"] == command["headers"]["Message-ID"]


def test_deleting_a_pool_member_never_seen_is_a_no_op(processor: Processor) -> None:
    """Found by the fuzz test: the delete crashed on the missing previous member."""
    change = {
        "tenant_key": TENANT,
        "entity_type": "pool_member",
        "entity_id": "p:a",
        "deleted": True,
        "payload": "",
    }
    assert not config_changes.on_config(processor, change, T0, 0).telemetry


@pytest.mark.parametrize("payload", ["not json", "null", "[]", '{"id": 1}'])
def test_a_config_payload_that_is_not_its_entity_is_a_record_error(
    processor: Processor, payload: str
) -> None:
    change = {
        "tenant_key": TENANT,
        "entity_type": "adapter",
        "entity_id": "a",
        "deleted": False,
        "payload": payload,
    }
    with pytest.raises(RecordError) as raised:
        config_changes.on_config(processor, change, T0, 0)
    assert raised.value.code == "invalid_config"


def test_a_send_the_provider_could_not_take_is_retried_with_back_off_never_failed() -> None:
    """SPEC §7: an outage or a refused connection costs no prospect a step."""
    p = Processor(DictStore(), OutboundPolicy(), redrive_seconds=3600, retry_seconds=10)
    w = world(p, steps=2)
    (out,) = enroll(p, w, 1)
    command = claims(out)[0]["command"]
    waits = []
    at = T0
    for _ in range(3):
        retried = p.on_result({**command, "status": "retry", "error": "transient"}, at, 0)
        (event,) = [t for t in retried.telemetry if t["name"] == "dispatch.retry_scheduled"]
        waits.append(event["attributes"]["retry_at"] - at)
        assert not claims(retried)  # no next step, no failure
        assert not claims(p.on_tick(0, event["attributes"]["retry_at"] - timedelta(seconds=1)))
        at = event["attributes"]["retry_at"]
        (again,) = claims(p.on_tick(0, at))
        assert again["command"]["step_execution_id"] == command["step_execution_id"]
        assert again["command"]["headers"] == command["headers"]  # the same mail
    assert waits == [timedelta(seconds=10), timedelta(seconds=20), timedelta(seconds=40)]
    sent = p.on_result({**command, "status": "sent"}, at, 0)
    assert "dispatch.sent" in [t["name"] for t in sent.telemetry]
    state = p.enrollment(command["enrollment_id"])
    assert state is not None and state.state.value == "active" and state.pending is None
