"""PostgreSQL against the log: ``db_mismatch`` (sent rows), and completeness:
``lost_enrollment``, ``enrollment_state``, ``lost_step``. The rows come loaded (``replay``);
no I/O happens here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from dripdrop_core import enrollment
from dripdrop_core.correlation import normalize_message_id
from streams.audit.records import Completeness, ExecutionRow, SentSend, Violation, attributes


def check_database(
    sends: Sequence[SentSend],
    results: Sequence[Mapping[str, Any]],
    executions: Mapping[str, ExecutionRow],
) -> list[Violation]:
    """Every sent result has a ``sent`` row with the same Message-ID and headers; and back.

    ``executions`` holds the rows of the audited scope (tenants, time range); a ``sent`` row
    there without a ``sent`` result in the log is a violation too.
    """
    out: list[Violation] = []
    by_id = {s.step_execution_id: s for s in sends}
    sent_results = {
        r["step_execution_id"]: r.get("tenant_key") for r in results if r.get("status") == "sent"
    }
    for exec_id, tenant in sent_results.items():
        row = executions.get(exec_id)
        send = by_id.get(exec_id)
        problem = _row_problem(row, send)
        if problem:
            out.append(
                Violation(
                    kind="db_mismatch",
                    message=f"step execution {exec_id}: {problem}",
                    tenant_key=tenant,
                    adapter_id=send.adapter_id if send else None,
                    enrollment_id=send.enrollment_id if send else None,
                    step_execution_id=exec_id,
                )
            )
    for exec_id, row in executions.items():
        if row.status == "sent" and exec_id not in sent_results:
            out.append(
                Violation(
                    kind="db_mismatch",
                    message=f"step execution {exec_id} is 'sent' in PostgreSQL but the log has"
                    " no sent result for it",
                    tenant_key=row.tenant_key,
                    step_execution_id=exec_id,
                )
            )
    return out


def _row_problem(row: ExecutionRow | None, send: SentSend | None) -> str | None:
    if row is None:
        return "sent in the log but no row in PostgreSQL"
    if row.status != "sent":
        return f"sent in the log but {row.status!r} in PostgreSQL"
    if send is None:
        return None  # its command is outside the replayed range
    mid = normalize_message_id(send.headers.get("Message-ID"))
    if row.out_message_id != mid:
        return f"out_message_id {row.out_message_id!r} but the command's Message-ID is {mid!r}"
    if dict(row.headers) != dict(send.headers):
        return "payload headers differ from the command's headers"
    return None


ENDING_EVENTS: Mapping[str, str] = {
    **{f"enrollment.{state}": str(state) for state in enrollment.TERMINAL},
    "dispatch.pool_exhausted": "rejected",
    "enrollment.company_stopped": "stopped",
}
"""Telemetry that ends an enrollment, and the row state it ends in (the core's table names
each terminal change ``enrollment.<state>``; a pool-exhausted rejection and a company-level
stop are announced as such)."""
ENDED = frozenset(str(state) for state in enrollment.TERMINAL)
LIVE = frozenset(str(state) for state in enrollment.LIVE)
UNFINISHED = frozenset({"intent", "sending"})
"""Ledger states before an outcome: a row still here although the log has a result lost it."""


def dead_letter_sources(
    dead_letters: Iterable[Mapping[str, Any]], *, enrollments_topic: str, sink_topic: str
) -> tuple[frozenset[tuple[int, int]], frozenset[str]]:
    """(partition, offset) of dead-lettered ``enrollments`` records, and the enrollment ids
    whose row a dead-lettered ``sink`` record carried (``sink_rejected``, urgent writes)."""
    commands: set[tuple[int, int]] = set()
    refused: set[str] = set()
    for d in dead_letters:
        if d.get("source_topic") == enrollments_topic:
            commands.add((int(d.get("partition", -1)), int(d.get("offset", -1))))
        elif d.get("source_topic") == sink_topic and d.get("value"):
            try:
                record = json.loads(d["value"])
            except (TypeError, ValueError):
                continue
            ops = record.get("ops", [record]) if isinstance(record, dict) else []
            for op in ops if isinstance(ops, list) else []:
                row = op.get("row") if isinstance(op, dict) else None
                if op.get("op") == "enrollment" and isinstance(row, dict) and row.get("id"):
                    refused.add(str(row["id"]))
    return frozenset(commands), frozenset(refused)


def _endings(telemetry: Iterable[Mapping[str, Any]]) -> dict[str, tuple[str, str]]:
    """The first event that ended each enrollment: enrollment id -> (state, event name)."""
    ended: dict[str, tuple[datetime, str, str]] = {}
    for t in telemetry:
        state = ENDING_EVENTS.get(t.get("name", ""))
        enrollment_id = attributes(t).get("enrollment_id") if state else None
        if state and enrollment_id:
            at = t["at"]
            if enrollment_id not in ended or at < ended[enrollment_id][0]:
                ended[enrollment_id] = (at, state, t["name"])
    return {k: (state, name) for k, (_, state, name) in ended.items()}


def check_completeness(
    data: Completeness,
    commands: Sequence[Mapping[str, Any]],
    results: Sequence[Mapping[str, Any]],
    telemetry: Sequence[Mapping[str, Any]],
) -> tuple[list[Violation], list[str]]:
    """Every committed ``enroll`` ended in a row whose state follows from the log, and every
    step execution the log decided is in the ledger. Returns violations and notes.

    A duplicate ``enroll`` (same id, or the same tenant, sequence and subscriber as a live
    row) maps to that enrollment. A command on ``dead-letter``, or whose row PostgreSQL
    refused (``sink_rejected``), is accounted for by its dead letter. ``sent`` results are
    left to ``check_database``; here a result of any other status, and a command without
    a result, need a row, and a result needs the row to have left ``intent``/``sending``.
    """
    out, dead = _check_enrollments(data, _endings(telemetry))
    notes: list[str] = []
    out.extend(_lost_steps(data.execution_status, commands, results, notes))
    if dead:
        notes.append(f"{dead} enroll command(s) accounted for by a dead letter")
    if data.unprocessed:
        notes.append(
            f"{data.unprocessed} enrollments record(s) not yet committed by the processor:"
            " completeness unchecked for them"
        )
    return out, notes


def _check_enrollments(
    data: Completeness, endings: Mapping[str, tuple[str, str]]
) -> tuple[list[Violation], int]:
    """The ``enroll`` commands' rows: violations, and how many a dead letter accounts for."""
    out: list[Violation] = []
    unenrolled = {c["enrollment_id"] for c in data.enrollments if c.get("command") == "unenroll"}
    checked: set[str] = set()
    dead = 0
    for c in data.enrollments:
        if c.get("command") != "enroll":
            continue
        enrollment_id, tenant = c.get("enrollment_id", ""), c.get("tenant_key", "")
        subscriber = c.get("subscriber_id") or (c.get("recipient") or "").strip()
        row = data.rows.get(enrollment_id)
        if row is None:
            row = data.live_rows.get((tenant, c.get("sequence_id") or "", subscriber))
            if row is not None:
                continue  # a duplicate of the live enrollment of the same subscriber
            place = (c["_partition"], c["_offset"])
            if place in data.dead_lettered or enrollment_id in data.refused_rows:
                dead += 1
                continue
            out.append(
                Violation(
                    kind="lost_enrollment",
                    message=f"enroll command at enrollments[{place[0]}]@{place[1]} for"
                    f" enrollment {enrollment_id}: no row in PostgreSQL and no dead letter",
                    tenant_key=tenant,
                    enrollment_id=enrollment_id,
                )
            )
            continue
        if enrollment_id in checked:
            continue
        checked.add(enrollment_id)
        problem = _state_problem(
            row.state,
            endings.get(enrollment_id),
            unenrolled=enrollment_id in unenrolled,
            log_complete=data.log_complete,
        )
        if problem:
            out.append(
                Violation(
                    kind="enrollment_state",
                    message=f"enrollment {enrollment_id}: {problem}",
                    tenant_key=tenant,
                    enrollment_id=enrollment_id,
                )
            )
    return out, dead


def _state_problem(
    state: str, ending: tuple[str, str] | None, *, unenrolled: bool, log_complete: bool
) -> str | None:
    if ending is not None:
        expected, event = ending
        if state != expected:
            return f"row is {state!r} but the log ended it {expected!r} ({event})"
        return None
    if state in ENDED and log_complete and not (state == "unenrolled" and unenrolled):
        return f"row is {state!r} but nothing in the log ended it"
    return None


def _lost_steps(
    status: Mapping[str, str],
    commands: Sequence[Mapping[str, Any]],
    results: Sequence[Mapping[str, Any]],
    notes: list[str],
) -> list[Violation]:
    outcome: dict[str, Mapping[str, Any]] = {}
    for r in results:
        if outcome.get(r["step_execution_id"], {}).get("status") != "sent":
            outcome[r["step_execution_id"]] = r  # a sent result is final, else the latest
    decided: dict[str, Mapping[str, Any]] = {c["step_execution_id"]: c for c in commands}
    for exec_id, r in outcome.items():
        decided.setdefault(exec_id, r)
    out: list[Violation] = []
    waiting = 0
    for exec_id, source in decided.items():
        result = outcome.get(exec_id)
        if result is not None and result.get("status") == "sent":
            continue  # check_database
        row_status = status.get(exec_id)
        problem = None
        if row_status is None:
            what = f"a {result.get('status')!r} result" if result else "a dispatch command"
            problem = f"{what} in the log but no row in step_executions"
        elif result is not None and result.get("status") != "retry" and row_status in UNFINISHED:
            problem = f"result {result.get('status')!r} in the log but the row is {row_status!r}"
        elif row_status in UNFINISHED:  # no result yet, or a retry waiting for its next try
            waiting += 1
        if problem:
            out.append(
                Violation(
                    kind="lost_step",
                    message=f"step execution {exec_id}: {problem}",
                    tenant_key=source.get("tenant_key"),
                    adapter_id=source.get("adapter_id"),
                    enrollment_id=source.get("enrollment_id"),
                    step_execution_id=exec_id,
                )
            )
    if waiting:
        notes.append(f"{waiting} granted step execution(s) still waiting for their result")
    return out
