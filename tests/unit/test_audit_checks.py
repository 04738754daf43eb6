"""The audit's invariant checks over hand-built records (streams/audit/checks.py, SPEC §10)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from dripdrop_core.models import Adapter, HealthState
from dripdrop_core.policy import HealthPolicy
from streams.audit.checks import (
    AuditInput,
    Completeness,
    EnrollmentRow,
    ExecutionRow,
    check_caps,
    check_completeness,
    check_database,
    check_gaps,
    check_send_after_reply,
    check_sent_twice,
    check_threading,
    dead_letter_sources,
    run_checks,
    sent_sends,
    thread_breaks,
)

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
POLICY = HealthPolicy()


def adapter(**fields: Any) -> Adapter:
    base: dict[str, Any] = {
        "id": "a1",
        "tenant_key": "t1",
        "name": "mbox",
        "health_state": HealthState.ACTIVE,
    }
    return Adapter(**{**base, **fields})


def mid(n: int) -> str:
    return f"<m{n}@send.example>"


def command(n: int, *, at: datetime, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": f"se{n}:1",
        "tenant_key": "t1",
        "step_execution_id": f"se{n}",
        "enrollment_id": "e1",
        "step_id": f"s{n}",
        "adapter_id": "a1",
        "headers": {"Message-ID": mid(n)},
        "attempt": 1,
        "decided_at": at,
    }
    return {**base, **fields}


def result(n: int, status: str = "sent", **fields: Any) -> dict[str, Any]:
    base = {
        "event_id": f"se{n}:1",
        "tenant_key": "t1",
        "step_execution_id": f"se{n}",
        "enrollment_id": "e1",
        "adapter_id": "a1",
        "attempt": 1,
        "status": status,
        "provider_message_id": f"prov-{n}",
        "finished_at": T0,
    }
    return {**base, **fields}


def telemetry(name: str, at: datetime, **attrs: Any) -> dict[str, Any]:
    return {"name": name, "tenant_key": "t1", "at": at, "attributes": json.dumps(attrs)}


def chained(count: int, *, gap: timedelta = timedelta(minutes=5)) -> list[dict[str, Any]]:
    """``count`` main-thread sends of enrollment e1 with correct headers."""
    out = []
    for n in range(count):
        headers = {"Message-ID": mid(n)}
        if n:
            headers["In-Reply-To"] = mid(n - 1)
            headers["References"] = " ".join(mid(i) for i in range(n))
        out.append(command(n, at=T0 + n * gap, headers=headers))
    return out


def sends_of(commands: list[dict[str, Any]], results: list[dict[str, Any]] | None = None) -> Any:
    return sent_sends(
        commands,
        results
        if results is not None
        else [result(int(c["step_execution_id"][2:])) for c in commands],
    )


# ---------------------------------------------------------------- caps


def test_check_caps_under_cap_passes() -> None:
    sends = sends_of(chained(5))
    assert check_caps(sends, {"a1": adapter(daily_cap=5)}, [], policy=POLICY) == []


def test_check_caps_one_over_cap_is_named_once_per_day() -> None:
    sends = sends_of(chained(7))
    found = check_caps(sends, {"a1": adapter(daily_cap=5)}, [], policy=POLICY)
    assert [v.kind for v in found] == ["over_cap"]
    assert found[0].step_execution_id == "se5" and "cap 5" in found[0].message


def test_check_caps_ramp_formula_gives_day_cap() -> None:
    ramping = adapter(daily_cap=40, ramp_floor=5, ramp_increment=3, ramp_started_at=T0)
    day2 = [command(n, at=T0 + timedelta(days=1, minutes=n)) for n in range(9)]
    found = check_caps(sends_of(day2), {"a1": ramping}, [], policy=POLICY)
    assert [v.step_execution_id for v in found] == ["se8"]  # day 2 cap is 8


def test_check_caps_counts_adapter_local_day() -> None:
    tokyo = adapter(daily_cap=2, timezone="Asia/Tokyo")
    # 14:00 and 15:30 UTC on Nov 2 are Nov 2 23:00 and Nov 3 00:30 in Tokyo: two days.
    at = datetime(2026, 11, 2, 14, 0, tzinfo=UTC)
    commands = [command(0, at=at), command(1, at=at + timedelta(minutes=30))]
    commands.append(command(2, at=at + timedelta(minutes=90)))
    commands.append(command(3, at=at + timedelta(minutes=95)))
    assert check_caps(sends_of(commands), {"a1": tokyo}, [], policy=POLICY) == []
    commands.append(command(4, at=at + timedelta(minutes=99)))
    found = check_caps(sends_of(commands), {"a1": tokyo}, [], policy=POLICY)
    assert [v.step_execution_id for v in found] == ["se4"]


def test_check_caps_probing_uses_probe_budget_from_logged_transition() -> None:
    changed = telemetry(
        "health.state_changed",
        T0 - timedelta(hours=1),
        adapter_id="a1",
        **{"from": "resting", "to": "probing"},
    )
    sends = sends_of(chained(POLICY.probe_budget + 1))
    found = check_caps(sends, {"a1": adapter(daily_cap=40)}, [changed], policy=POLICY)
    assert [v.kind for v in found] == ["over_cap"]


def test_check_caps_failed_results_do_not_count() -> None:
    commands = chained(3)
    results = [result(0), result(1), result(2, status="failed")]
    assert (
        check_caps(sends_of(commands, results), {"a1": adapter(daily_cap=2)}, [], policy=POLICY)
        == []
    )


# ---------------------------------------------------------------- gaps


def test_check_gaps_exact_minimum_passes() -> None:
    sends = sends_of(chained(3, gap=timedelta(seconds=90)))
    assert check_gaps(sends, {"a1": adapter(min_gap_seconds=90)}) == []


def test_check_gaps_too_close_is_named() -> None:
    sends = sends_of(chained(3, gap=timedelta(seconds=89)))
    found = check_gaps(sends, {"a1": adapter(min_gap_seconds=90)})
    assert [v.kind for v in found] == ["min_gap", "min_gap"]
    assert found[0].step_execution_id == "se1"


def test_check_gaps_are_per_adapter() -> None:
    commands = [command(0, at=T0), command(1, at=T0 + timedelta(seconds=1), adapter_id="a2")]
    adapters = {"a1": adapter(min_gap_seconds=90), "a2": adapter(id="a2", min_gap_seconds=90)}
    assert check_gaps(sends_of(commands), adapters) == []


# ---------------------------------------------------------------- once


def test_check_sent_twice_duplicate_record_is_not_a_second_send() -> None:
    commands = chained(2)
    results = [result(0), result(0), result(1)]
    assert check_sent_twice(sends_of(commands, results), results) == []


def test_check_sent_twice_two_deliveries_of_one_execution_are_named() -> None:
    commands = chained(1)
    results = [result(0), result(0, attempt=2, provider_message_id="prov-other")]
    found = check_sent_twice(sends_of(commands, results), results)
    assert [(v.kind, v.step_execution_id) for v in found] == [("sent_twice", "se0")]


def test_check_sent_twice_one_step_through_two_executions_is_named() -> None:
    commands = [command(0, at=T0), command(1, at=T0 + timedelta(minutes=1), step_id="s0")]
    found = check_sent_twice(sends_of(commands), [result(0), result(1)])
    assert [v.kind for v in found] == ["sent_twice"]
    assert "step s0" in found[0].message


# ---------------------------------------------------------------- reply


def test_check_send_after_reply_in_flight_send_decided_before_reply_passes() -> None:
    replied = telemetry("enrollment.replied", T0 + timedelta(minutes=7), enrollment_id="e1")
    assert check_send_after_reply(sends_of(chained(2)), [replied]) == []


def test_check_send_after_reply_later_decision_is_named() -> None:
    replied = telemetry("enrollment.replied", T0 + timedelta(minutes=3), enrollment_id="e1")
    found = check_send_after_reply(sends_of(chained(3)), [replied])
    assert [v.step_execution_id for v in found] == ["se1", "se2"]
    assert {v.kind for v in found} == {"send_after_reply"}


def test_check_send_after_reply_other_enrollment_unaffected() -> None:
    replied = telemetry("enrollment.replied", T0, enrollment_id="e2")
    assert check_send_after_reply(sends_of(chained(3)), [replied]) == []


# ---------------------------------------------------------------- threading


def test_check_threading_correct_chain_passes() -> None:
    assert check_threading(sends_of(chained(4)), frozenset(), {}) == []


def test_check_threading_override_keeps_chain_under_previous_normal_send() -> None:
    commands = [
        command(0, at=T0),
        command(1, at=T0 + timedelta(minutes=1), headers={"Message-ID": mid(1)}),
        command(
            2,
            at=T0 + timedelta(minutes=2),
            headers={"Message-ID": mid(2), "In-Reply-To": mid(0), "References": mid(0)},
        ),
    ]
    assert check_threading(sends_of(commands), frozenset({"s1"}), {}) == []


def test_check_threading_unthreaded_lifecycle_send_stays_in_the_chain() -> None:
    commands = [
        command(0, at=T0, headers={"Message-ID": mid(0)}),
        command(1, at=T0 + timedelta(minutes=1), headers={"Message-ID": mid(1)}),
        command(
            2,
            at=T0 + timedelta(minutes=2),
            headers={
                "Message-ID": mid(2),
                "In-Reply-To": mid(1),
                "References": f"{mid(0)} {mid(1)}",
            },
        ),
    ]
    unthreaded = frozenset({"s0", "s1"})
    assert check_threading(sends_of(commands), frozenset(), {}, unthreaded) == []
    found = check_threading(sends_of(commands), frozenset({"s1"}), {}, frozenset({"s0"}))
    assert [v.step_execution_id for v in found] == ["se2"]


def test_check_threading_in_reply_to_the_override_is_named() -> None:
    commands = [
        command(0, at=T0),
        command(1, at=T0 + timedelta(minutes=1)),
        command(
            2,
            at=T0 + timedelta(minutes=2),
            headers={"Message-ID": mid(2), "In-Reply-To": mid(1), "References": mid(0)},
        ),
    ]
    found = check_threading(sends_of(commands), frozenset({"s1"}), {})
    assert [(v.kind, v.step_execution_id) for v in found] == [("threading", "se2")]


def test_check_threading_override_with_in_reply_to_is_named() -> None:
    commands = chained(2)
    found = check_threading(sends_of(commands), frozenset({"s1"}), {})
    assert [v.step_execution_id for v in found] == ["se1"]
    assert "override" in found[0].message


def test_check_threading_wrong_references_is_named() -> None:
    commands = chained(3)
    commands[2]["headers"]["References"] = mid(1)
    found = check_threading(sends_of(commands), frozenset(), {})
    assert [v.step_execution_id for v in found] == ["se2"]
    assert "References" in found[0].message


def test_check_threading_sender_change_breaks_the_chain() -> None:
    commands = [command(0, at=T0), command(1, at=T0 + timedelta(minutes=5))]
    events = [
        {
            "event_type": "sender_reassigned",
            "enrollment_id": "e1",
            "occurred_at": T0 + timedelta(minutes=1),
        }
    ]
    breaks = thread_breaks(events, [])
    assert check_threading(sends_of(commands), frozenset(), breaks) == []
    # ... and a send after the break that still replies to the old chain is named.
    threaded = chained(2)
    found = check_threading(sends_of(threaded), frozenset(), breaks)
    assert [v.step_execution_id for v in found] == ["se1"]


def test_check_threading_missing_in_reply_to_is_named() -> None:
    commands = [command(0, at=T0), command(1, at=T0 + timedelta(minutes=1))]
    found = check_threading(sends_of(commands), frozenset(), {})
    assert [v.step_execution_id for v in found] == ["se1"]


# ---------------------------------------------------------------- PostgreSQL


def row(n: int, **fields: Any) -> ExecutionRow:
    base: dict[str, Any] = {
        "id": f"se{n}",
        "tenant_key": "t1",
        "status": "sent",
        "out_message_id": mid(n).strip("<>"),  # stored without brackets (SPEC §8)
        "headers": {"Message-ID": mid(n)},
    }
    return ExecutionRow(**{**base, **fields})


def test_check_database_agreeing_rows_pass() -> None:
    commands = [command(0, at=T0)]
    assert check_database(sends_of(commands), [result(0)], {"se0": row(0)}) == []


def test_check_database_missing_row_is_named() -> None:
    found = check_database(sends_of([command(0, at=T0)]), [result(0)], {})
    assert [v.kind for v in found] == ["db_mismatch"]
    assert "no row" in found[0].message


def test_check_database_other_message_id_is_named() -> None:
    rows = {"se0": row(0, out_message_id=mid(9).strip("<>"))}
    found = check_database(sends_of([command(0, at=T0)]), [result(0)], rows)
    assert "out_message_id" in found[0].message


def test_check_database_other_headers_is_named() -> None:
    rows = {"se0": row(0, headers={"Message-ID": mid(0), "In-Reply-To": mid(5)})}
    found = check_database(sends_of([command(0, at=T0)]), [result(0)], rows)
    assert "headers" in found[0].message


def test_check_database_sent_row_without_result_is_named() -> None:
    found = check_database([], [], {"se7": row(7)})
    assert [(v.kind, v.step_execution_id) for v in found] == [("db_mismatch", "se7")]


def test_check_database_status_not_sent_is_named() -> None:
    found = check_database(
        sends_of([command(0, at=T0)]), [result(0)], {"se0": row(0, status="ambiguous")}
    )
    assert "'ambiguous'" in found[0].message


# ---------------------------------------------------------------- report


def test_run_checks_clean_history_is_ok() -> None:
    commands = chained(3)
    report = run_checks(
        AuditInput(
            commands=commands,
            results=[result(n) for n in range(3)],
            adapters={"a1": adapter(daily_cap=5, min_gap_seconds=60)},
            executions={f"se{n}": row(n, headers=commands[n]["headers"]) for n in range(3)},
        )
    )
    assert report.ok and report.sends == 3
    assert report.as_json()["counts"] == {
        "over_cap": 0,
        "min_gap": 0,
        "sent_twice": 0,
        "send_after_reply": 0,
        "threading": 0,
        "db_mismatch": 0,
        "lost_enrollment": 0,
        "enrollment_state": 0,
        "lost_step": 0,
    }


def test_run_checks_republished_command_is_one_send() -> None:
    commands = chained(1)
    report = run_checks(
        AuditInput(commands=commands + commands, results=[result(0)], adapters={"a1": adapter()})
    )
    assert report.ok and report.sends == 1
    assert "PostgreSQL comparison skipped" in report.notes


def test_run_checks_names_every_kind() -> None:
    commands = chained(3, gap=timedelta(seconds=10))
    commands[2]["headers"]["In-Reply-To"] = mid(0)
    results = [result(0), result(1), result(2), result(2, attempt=2, provider_message_id="x")]
    replied = telemetry("enrollment.replied", T0 + timedelta(seconds=5), enrollment_id="e1")
    report = run_checks(
        AuditInput(
            commands=commands,
            results=results,
            telemetry=[replied],
            adapters={"a1": adapter(daily_cap=2, min_gap_seconds=60)},
            executions={},
        )
    )
    assert not report.ok
    assert {k for k, n in report.counts().items() if n} == {
        "over_cap",
        "min_gap",
        "sent_twice",
        "send_after_reply",
        "threading",
        "db_mismatch",
    }


def test_check_caps_recorded_claim_cap_wins_over_formula() -> None:
    # Authored today with cap 40, but the day's claims were checked against 2.
    sends = sends_of(chained(3))
    day = T0.date()
    found = check_caps(
        sends, {"a1": adapter(daily_cap=40)}, [], policy=POLICY, recorded_caps={("a1", day): 2}
    )
    assert [v.step_execution_id for v in found] == ["se2"]


# ---------------------------------------------------------------- completeness


def enroll_cmd(n: int, *, offset: int | None = None, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "command": "enroll",
        "tenant_key": "t1",
        "enrollment_id": f"e{n}",
        "sequence_id": "q1",
        "subscriber_id": f"p{n}",
        "recipient": f"p{n}@example.org",
        "_partition": 0,
        "_offset": n if offset is None else offset,
    }
    return {**base, **fields}


def enrollment(n: int, state: str = "active", **fields: Any) -> EnrollmentRow:
    base: dict[str, Any] = {
        "id": f"e{n}",
        "tenant_key": "t1",
        "sequence_id": "q1",
        "subscriber_id": f"p{n}",
        "state": state,
    }
    return EnrollmentRow(**{**base, **fields})


def completeness(
    commands: list[dict[str, Any]],
    rows: list[EnrollmentRow],
    *,
    telemetry_records: list[dict[str, Any]] | None = None,
    dispatch: list[dict[str, Any]] | None = None,
    results: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> tuple[list[Any], list[str]]:
    data = Completeness(enrollments=commands, rows={r.id: r for r in rows}, **fields)
    return check_completeness(data, dispatch or [], results or [], telemetry_records or [])


def test_completeness_every_enroll_with_its_row_passes() -> None:
    found, notes = completeness([enroll_cmd(0), enroll_cmd(1)], [enrollment(0), enrollment(1)])
    assert found == [] and notes == []


def test_completeness_enroll_without_row_is_lost() -> None:
    found, _ = completeness([enroll_cmd(0), enroll_cmd(1, offset=7)], [enrollment(0)])
    assert [(v.kind, v.enrollment_id) for v in found] == [("lost_enrollment", "e1")]
    assert "enrollments[0]@7" in found[0].message


def test_completeness_duplicate_enroll_maps_to_the_one_enrollment() -> None:
    # The same id twice, and another id for the same live (tenant, sequence, subscriber).
    commands = [enroll_cmd(0), enroll_cmd(0, offset=1), enroll_cmd(9, subscriber_id="p0")]
    found, _ = completeness(
        commands, [enrollment(0)], live_rows={("t1", "q1", "p0"): enrollment(0)}
    )
    assert found == []


def test_completeness_dead_lettered_or_refused_enroll_is_accounted_for() -> None:
    commands = [enroll_cmd(0, offset=4), enroll_cmd(1, offset=5)]
    found, notes = completeness(
        commands, [], dead_lettered=frozenset({(0, 4)}), refused_rows=frozenset({"e1"})
    )
    assert found == []
    assert notes == ["2 enroll command(s) accounted for by a dead letter"]


def test_completeness_other_commands_need_no_row() -> None:
    commands = [enroll_cmd(0), {**enroll_cmd(0, offset=1), "command": "pause"}]
    found, _ = completeness(commands, [enrollment(0, "paused")])
    assert found == []


def test_completeness_row_state_must_follow_the_ending_event() -> None:
    ended = [
        telemetry("enrollment.completed", T0, enrollment_id="e0"),
        telemetry("dispatch.pool_exhausted", T0, enrollment_id="e1"),
        telemetry("enrollment.replied", T0, enrollment_id="e2"),
        telemetry("enrollment.completed", T0 + timedelta(hours=1), enrollment_id="e2"),
    ]
    rows = [enrollment(0, "active"), enrollment(1, "rejected"), enrollment(2, "completed")]
    found, _ = completeness(
        [enroll_cmd(0), enroll_cmd(1), enroll_cmd(2)], rows, telemetry_records=ended
    )
    assert [(v.kind, v.enrollment_id) for v in found] == [
        ("enrollment_state", "e0"),
        ("enrollment_state", "e2"),
    ]
    assert "'active' but the log ended it 'completed'" in found[0].message
    assert "'replied'" in found[1].message  # the first ending wins


def test_completeness_ended_row_without_an_ending_event() -> None:
    rows = [enrollment(0, "completed"), enrollment(1, "unenrolled")]
    commands = [enroll_cmd(0), enroll_cmd(1), {**enroll_cmd(1, offset=2), "command": "unenroll"}]
    found, _ = completeness(commands, rows)
    assert [(v.kind, v.enrollment_id) for v in found] == [("enrollment_state", "e0")]
    # A range that stops before the end of the log may cut the event off: not judged.
    assert completeness(commands, rows, log_complete=False)[0] == []


def test_completeness_decided_step_without_row_is_lost() -> None:
    dispatch = [command(0, at=T0), command(1, at=T0), command(2, at=T0)]
    results = [result(1, "failed"), result(2)]  # se2 sent: check_database's
    found, _ = completeness([], [], dispatch=dispatch, results=results)
    assert [(v.kind, v.step_execution_id) for v in found] == [
        ("lost_step", "se0"),
        ("lost_step", "se1"),
    ]
    assert "a dispatch command in the log" in found[0].message
    assert "a 'failed' result" in found[1].message


def test_completeness_step_row_must_leave_intent_once_a_result_is_logged() -> None:
    dispatch = [command(0, at=T0), command(1, at=T0), command(2, at=T0)]
    status = {"se0": "sending", "se1": "ambiguous", "se2": "intent"}
    found, notes = completeness(
        [],
        [],
        dispatch=dispatch,
        results=[result(0, "ambiguous"), result(1, "ambiguous")],
        execution_status=status,
    )
    assert [(v.kind, v.step_execution_id) for v in found] == [("lost_step", "se0")]
    assert "result 'ambiguous' in the log but the row is 'sending'" in found[0].message
    assert notes == ["1 granted step execution(s) still waiting for their result"]


def test_dead_letter_sources_names_commands_and_refused_rows() -> None:
    sink_value = json.dumps(
        {"ops": [{"op": "enrollment", "row": {"id": "e5"}}, {"op": "claim", "command": {}}]}
    ).encode()
    letters = [
        {"source_topic": "p.enrollments", "partition": 3, "offset": 11, "value": b"x"},
        {"source_topic": "p.sink", "partition": 0, "offset": 2, "value": sink_value},
        {"source_topic": "p.sink", "partition": 0, "offset": 3, "value": b"not json"},
        {"source_topic": "p.config", "partition": 0, "offset": 1, "value": b"{}"},
    ]
    commands, refused = dead_letter_sources(
        letters, enrollments_topic="p.enrollments", sink_topic="p.sink"
    )
    assert commands == {(3, 11)} and refused == {"e5"}


def test_run_checks_completeness_counts_and_notes() -> None:
    report = run_checks(
        AuditInput(completeness=Completeness(enrollments=[enroll_cmd(0)], unprocessed=2))
    )
    assert report.counts()["lost_enrollment"] == 1
    assert report.records["enrollments"] == 3
    assert any("2 enrollments record(s) not yet committed" in n for n in report.notes)
    assert "completeness check skipped" in run_checks(AuditInput()).notes
