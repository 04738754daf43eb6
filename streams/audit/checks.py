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

The checks live by concern in ``pacing`` (caps, gaps), ``sends`` (once, after a reply,
threading) and ``ledger`` (PostgreSQL, completeness); this module runs them all and keeps
their names importable from one place.
"""

from __future__ import annotations

from streams.audit.ledger import check_completeness, check_database, dead_letter_sources
from streams.audit.pacing import check_caps, check_gaps
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
from streams.audit.sends import (
    check_send_after_reply,
    check_sent_twice,
    check_threading,
    thread_breaks,
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
