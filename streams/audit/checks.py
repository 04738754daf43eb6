"""Invariant checks over decoded topic records (SPEC §10 audit). No I/O happens here.

Input: the decoded ``dispatch``, ``dispatch-results``, ``message-events`` and ``telemetry``
records, plus what PostgreSQL says about the adapters, steps and step executions they name
(``replay`` loads those). Output: ``Violation``s, each with a snake_case ``kind``:

* ``over_cap``: an adapter sent more than its effective cap on one adapter-local day;
* ``min_gap``: two sends through one adapter closer than its ``min_gap_seconds``
  (decided times; the hand-off times of the ``sent`` results with ``gap_basis="handoff"``);
* ``sent_twice``: a step execution (or a step of one enrollment) sent more than once;
* ``send_after_reply``: a send decided after the enrollment's committed reply;
* ``threading``: headers that break the chain rules of SPEC §5.6;
* ``db_mismatch``: PostgreSQL ``step_executions`` and the log disagree;
* ``lost_enrollment``: an ``enroll`` command the processor committed has no row in
  ``dripdrop.enrollments`` (by id, or the live enrollment of the same subscriber) and was
  not dead-lettered;
* ``enrollment_state``: an enrollment row's state contradicts the log (the log ended it
  but the row is still live, or ended it otherwise, or the row ended without a cause);
* ``lost_step``: a step execution the log decided (a ``dispatch`` command or a result)
  has no ``step_executions`` row, or its row never got the logged outcome.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from dripdrop_core import enrollment
from dripdrop_core.correlation import normalize_message_id
from dripdrop_core.models import Adapter, HealthState
from dripdrop_core.policy import HealthPolicy
from dripdrop_core.ramp import effective_cap, local_day
from dripdrop_core.state import AdapterState
from streams.audit.records import (
    GAP_BASES,
    KINDS,
    AuditInput,
    AuditReport,
    Completeness,
    EnrollmentRow,
    ExecutionRow,
    GapBasis,
    Kind,
    SentSend,
    Violation,
    attributes,
    sent_sends,
)

__all__ = [
    "GAP_BASES",
    "KINDS",
    "AuditInput",
    "AuditReport",
    "Completeness",
    "EnrollmentRow",
    "ExecutionRow",
    "GapBasis",
    "Kind",
    "SentSend",
    "Violation",
    "attributes",
    "check_caps",
    "check_completeness",
    "check_database",
    "check_gaps",
    "check_send_after_reply",
    "check_sent_twice",
    "check_threading",
    "dead_letter_sources",
    "run_checks",
    "sent_sends",
    "thread_breaks",
]


# ---------------------------------------------------------------- caps and gaps


@dataclass(frozen=True, slots=True)
class _HealthChange:
    at: datetime
    from_state: str | None
    to_state: str | None


def health_changes(telemetry: Iterable[Mapping[str, Any]]) -> dict[str, list[_HealthChange]]:
    """``health.state_changed`` events per adapter, in time order."""
    changes: dict[str, list[_HealthChange]] = defaultdict(list)
    for t in telemetry:
        if t.get("name") != "health.state_changed":
            continue
        attrs = attributes(t)
        if attrs.get("adapter_id"):
            changes[attrs["adapter_id"]].append(
                _HealthChange(at=t["at"], from_state=attrs.get("from"), to_state=attrs.get("to"))
            )
    for items in changes.values():
        items.sort(key=lambda c: c.at)
    return changes


def state_at(adapter: Adapter, changes: Sequence[_HealthChange], at: datetime) -> AdapterState:
    """Health and ramp anchor of ``adapter`` at ``at``, from the logged transitions.

    Before the first logged transition the state is that transition's ``from``; without
    any, the authored state. A clean probe (probing → ramping) restarts the ramp there.
    """
    health = changes[0].from_state if changes else adapter.health_state
    anchor = adapter.ramp_started_at
    for change in changes:
        if change.at > at:
            break
        health = change.to_state
        if change.to_state == "ramping" and (change.from_state == "probing" or anchor is None):
            anchor = change.at
    return AdapterState(
        adapter_id=adapter.id,
        health_state=HealthState(health) if health else None,
        ramp_started_at=anchor,
    )


def check_caps(
    sends: Sequence[SentSend],
    adapters: Mapping[str, Adapter],
    telemetry: Sequence[Mapping[str, Any]],
    *,
    policy: HealthPolicy,
    recorded_caps: Mapping[tuple[str, date], int] | None = None,
) -> list[Violation]:
    """The n-th send of an adapter-local day must satisfy n <= the cap at that send.

    The cap is the one PostgreSQL recorded for that adapter and day when the claim was
    granted (``adapter_day_counters.cap``), else the ramp formula over the adapter as
    authored now and its health at the send (from ``health.state_changed``).
    """
    changes = health_changes(telemetry)
    counted: dict[tuple[str, Any], int] = defaultdict(int)
    flagged: set[tuple[str, Any]] = set()
    out: list[Violation] = []
    for s in sends:
        adapter = adapters.get(s.adapter_id)
        if adapter is None:
            continue
        day = local_day(adapter.timezone, s.decided_at)
        counted[(adapter.id, day)] += 1
        state = state_at(adapter, changes.get(adapter.id, []), s.decided_at)
        recorded = (recorded_caps or {}).get((adapter.id, day))
        cap = (
            recorded
            if recorded is not None
            else effective_cap(adapter, state, s.decided_at, policy=policy)
        )
        n = counted[(adapter.id, day)]
        if cap is not None and n > cap and (adapter.id, day) not in flagged:
            flagged.add((adapter.id, day))
            out.append(
                Violation(
                    kind="over_cap",
                    message=(
                        f"adapter {adapter.id} sent {n} on local day {day} ({adapter.timezone}),"
                        f" cap {cap}; send {s.step_execution_id} at {s.decided_at.isoformat()}"
                    ),
                    tenant_key=s.tenant_key,
                    adapter_id=adapter.id,
                    enrollment_id=s.enrollment_id,
                    step_execution_id=s.step_execution_id,
                )
            )
    return out


def check_gaps(
    sends: Sequence[SentSend], adapters: Mapping[str, Adapter], *, basis: GapBasis = "decided"
) -> list[Violation]:
    """Consecutive sends of one adapter are at least ``min_gap_seconds`` apart.

    ``basis="decided"`` spaces the processor's ``decided_at`` (what it guarantees);
    ``"handoff"`` the ``finished_at`` of the ``sent`` results, in that order (what the
    provider saw; sends without one are skipped).
    """
    timed = [
        (s.decided_at if basis == "decided" else s.handed_off_at, s)
        for s in sends
        if (s.decided_at if basis == "decided" else s.handed_off_at) is not None
    ]
    timed.sort(key=lambda item: (item[0], item[1].order))
    last: dict[str, tuple[datetime, SentSend]] = {}
    out: list[Violation] = []
    for at, s in timed:
        assert at is not None  # filtered above; for the type checker
        adapter = adapters.get(s.adapter_id)
        previous = last.get(s.adapter_id)
        last[s.adapter_id] = (at, s)
        if adapter is None or previous is None or adapter.min_gap_seconds <= 0:
            continue
        gap = (at - previous[0]).total_seconds()
        if gap < adapter.min_gap_seconds:
            what = "sends" if basis == "decided" else "hand-offs of"
            out.append(
                Violation(
                    kind="min_gap",
                    message=(
                        f"adapter {adapter.id}: {what} {previous[1].step_execution_id} and"
                        f" {s.step_execution_id} {gap:.3f}s apart, minimum"
                        f" {adapter.min_gap_seconds}s"
                    ),
                    tenant_key=s.tenant_key,
                    adapter_id=adapter.id,
                    enrollment_id=s.enrollment_id,
                    step_execution_id=s.step_execution_id,
                )
            )
    return out


# ---------------------------------------------------------------- once, reply


def check_sent_twice(
    sends: Sequence[SentSend], results: Sequence[Mapping[str, Any]]
) -> list[Violation]:
    """One ``sent`` outcome per step execution, one sent execution per enrollment step.

    The same result record twice (same attempt and provider id) is an at-least-once
    duplicate of one delivery, not a second send.
    """
    deliveries: dict[str, set[tuple[Any, Any]]] = defaultdict(set)
    tenants: dict[str, str] = {}
    for r in results:
        if r.get("status") == "sent":
            deliveries[r["step_execution_id"]].add((r.get("attempt"), r.get("provider_message_id")))
            tenants[r["step_execution_id"]] = r.get("tenant_key", "")
    out = [
        Violation(
            kind="sent_twice",
            message=f"step execution {exec_id} has {len(found)} distinct sent results",
            tenant_key=tenants[exec_id],
            step_execution_id=exec_id,
        )
        for exec_id, found in deliveries.items()
        if len(found) > 1
    ]
    by_step: dict[tuple[str, str], list[SentSend]] = defaultdict(list)
    for s in sends:
        by_step[(s.enrollment_id, s.step_id)].append(s)
    for (enrollment_id, step_id), group in by_step.items():
        if len(group) > 1:
            ids = ", ".join(s.step_execution_id for s in group)
            out.append(
                Violation(
                    kind="sent_twice",
                    message=f"step {step_id} of enrollment {enrollment_id} sent {len(group)}"
                    f" times ({ids})",
                    tenant_key=group[0].tenant_key,
                    enrollment_id=enrollment_id,
                    step_execution_id=group[-1].step_execution_id,
                )
            )
    return out


def reply_times(telemetry: Iterable[Mapping[str, Any]]) -> dict[str, datetime]:
    """When each enrollment's reply was committed (``enrollment.replied``), earliest first."""
    replied: dict[str, datetime] = {}
    for t in telemetry:
        if t.get("name") != "enrollment.replied":
            continue
        enrollment_id = attributes(t).get("enrollment_id")
        if enrollment_id and (enrollment_id not in replied or t["at"] < replied[enrollment_id]):
            replied[enrollment_id] = t["at"]
    return replied


def check_send_after_reply(
    sends: Sequence[SentSend], telemetry: Sequence[Mapping[str, Any]]
) -> list[Violation]:
    """No send decided after the enrollment's committed reply (SPEC §8, causal stop)."""
    replied = reply_times(telemetry)
    return [
        Violation(
            kind="send_after_reply",
            message=(
                f"enrollment {s.enrollment_id}: send {s.step_execution_id} decided at"
                f" {s.decided_at.isoformat()}, after the reply committed at"
                f" {replied[s.enrollment_id].isoformat()}"
            ),
            tenant_key=s.tenant_key,
            adapter_id=s.adapter_id,
            enrollment_id=s.enrollment_id,
            step_execution_id=s.step_execution_id,
        )
        for s in sends
        if s.enrollment_id in replied and s.decided_at > replied[s.enrollment_id]
    ]


# ---------------------------------------------------------------- threading


def thread_breaks(
    events: Iterable[Mapping[str, Any]], telemetry: Iterable[Mapping[str, Any]]
) -> dict[str, list[datetime]]:
    """Times the sender of each enrollment changed (reassign or repin): the chain restarts."""
    breaks: dict[str, set[datetime]] = defaultdict(set)
    for e in events:
        if e.get("event_type") == "sender_reassigned" and e.get("enrollment_id"):
            breaks[e["enrollment_id"]].add(e["occurred_at"])
    for t in telemetry:
        if t.get("name") == "enrollment.sender_reassigned":
            enrollment_id = attributes(t).get("enrollment_id")
            if enrollment_id:
                breaks[enrollment_id].add(t["at"])
    return {k: sorted(v) for k, v in breaks.items()}


def check_threading(
    sends: Sequence[SentSend],
    override_steps: frozenset[str],
    breaks: Mapping[str, Sequence[datetime]],
    unthreaded_steps: frozenset[str] = frozenset(),
) -> list[Violation]:
    """Headers follow SPEC §5.6 for every enrollment's sends, in decision order.

    Main-thread sends: ``In-Reply-To`` = the previous chain id, ``References`` = the chain,
    oldest first (none for the first of a chain). Overrides: only their ``Message-ID``,
    outside the chain. Unthreaded lifecycle sends: only their ``Message-ID``, in the chain.
    A sender change at or before a send starts a new chain.
    """
    out: list[Violation] = []
    by_enrollment: dict[str, list[SentSend]] = defaultdict(list)
    for s in sends:
        by_enrollment[s.enrollment_id].append(s)
    for enrollment_id, group in by_enrollment.items():
        chain: list[str] = []
        pending_breaks = list(breaks.get(enrollment_id, ()))
        for s in group:
            while pending_breaks and pending_breaks[0] <= s.decided_at:
                pending_breaks.pop(0)
                chain = []
            bare = s.step_id in override_steps or s.step_id in unthreaded_steps
            problem = _thread_problem(s, chain, is_override=bare)
            if problem:
                out.append(
                    Violation(
                        kind="threading",
                        message=f"enrollment {enrollment_id}, send {s.step_execution_id}: "
                        + problem,
                        tenant_key=s.tenant_key,
                        adapter_id=s.adapter_id,
                        enrollment_id=enrollment_id,
                        step_execution_id=s.step_execution_id,
                    )
                )
            if s.step_id not in override_steps and s.headers.get("Message-ID"):
                chain.append(s.headers["Message-ID"])
    return out


def _thread_problem(s: SentSend, chain: Sequence[str], *, is_override: bool) -> str | None:
    headers = s.headers
    if not headers.get("Message-ID"):
        return "no Message-ID"
    irt, refs = headers.get("In-Reply-To"), headers.get("References")
    if is_override or not chain:
        if irt or refs:
            what = "override send" if is_override else "first send of a chain"
            return f"{what} carries In-Reply-To {irt!r} / References {refs!r}"
        return None
    if irt != chain[-1]:
        return f"In-Reply-To {irt!r}, expected {chain[-1]!r}"
    if refs != " ".join(chain):
        return f"References {refs!r}, expected {' '.join(chain)!r}"
    return None


# ---------------------------------------------------------------- PostgreSQL


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


# ---------------------------------------------------------------- completeness

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
    out: list[Violation] = []
    notes: list[str] = []
    endings = _endings(telemetry)
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
    out.extend(_lost_steps(data.execution_status, commands, results, notes))
    if dead:
        notes.append(f"{dead} enroll command(s) accounted for by a dead letter")
    if data.unprocessed:
        notes.append(
            f"{data.unprocessed} enrollments record(s) not yet committed by the processor:"
            " completeness unchecked for them"
        )
    return out, notes


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


# ---------------------------------------------------------------- all of it


def run_checks(data: AuditInput) -> AuditReport:
    """Run every check over ``data`` and return the report (violations in check order)."""
    sends = sent_sends(data.commands, data.results)
    violations = [
        *check_caps(
            sends,
            data.adapters,
            data.telemetry,
            policy=data.policy,
            recorded_caps=data.recorded_caps,
        ),
        *check_gaps(sends, data.adapters, basis=data.gap_basis),
        *check_sent_twice(sends, data.results),
        *check_send_after_reply(sends, data.telemetry),
        *check_threading(
            sends,
            data.override_steps,
            thread_breaks(data.events, data.telemetry),
            data.unthreaded_steps,
        ),
    ]
    notes: list[str] = []
    if data.executions is not None:
        violations.extend(check_database(sends, data.results, data.executions))
    else:
        notes.append("PostgreSQL comparison skipped")
    records: dict[str, int] = {}
    if data.completeness is not None:
        found, more = check_completeness(
            data.completeness, data.commands, data.results, data.telemetry
        )
        violations.extend(found)
        notes.extend(more)
        records["enrollments"] = len(data.completeness.enrollments) + data.completeness.unprocessed
    else:
        notes.append("completeness check skipped")
    unknown = sorted({s.adapter_id for s in sends if s.adapter_id not in data.adapters})
    if unknown:
        notes.append(f"{len(unknown)} adapter(s) unknown to PostgreSQL: caps and gaps unchecked")
    return AuditReport(
        records={
            "dispatch": len(data.commands),
            "dispatch-results": len(data.results),
            "message-events": len(data.events),
            "telemetry": len(data.telemetry),
            **records,
        },
        sends=len(sends),
        violations=tuple(violations),
        notes=tuple(notes),
    )
