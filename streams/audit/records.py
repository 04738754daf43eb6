"""Audit records: decoded sends, PostgreSQL rows, violations and the report. No I/O here.

``Violation.kind`` is one of ``KINDS`` (snake_case, never renamed once released).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal, get_args

from dripdrop_core.models import Adapter
from dripdrop_core.policy import HealthPolicy

Kind = Literal[
    "over_cap",
    "min_gap",
    "sent_twice",
    "send_after_reply",
    "threading",
    "db_mismatch",
    "lost_enrollment",
    "enrollment_state",
    "lost_step",
]
KINDS: tuple[Kind, ...] = get_args(Kind)
GapBasis = Literal["decided", "handoff"]
"""Which time the ``min_gap`` check spaces: the processor's ``decided_at`` (the default,
what the processor guarantees) or the sender's hand-off, the ``finished_at`` of the
``sent`` result (what the provider saw)."""
GAP_BASES: tuple[GapBasis, ...] = get_args(GapBasis)


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken invariant; ids only, never addresses or bodies."""

    kind: Kind
    message: str
    tenant_key: str | None = None
    adapter_id: str | None = None
    enrollment_id: str | None = None
    step_execution_id: str | None = None


@dataclass(frozen=True, slots=True)
class SentSend:
    """A dispatch command whose result says ``sent``: the unit most checks look at."""

    step_execution_id: str
    tenant_key: str
    enrollment_id: str
    step_id: str
    adapter_id: str
    decided_at: datetime
    headers: Mapping[str, str]
    order: int
    """Position of the command in the log, to break ties between equal ``decided_at``."""
    handed_off_at: datetime | None = None
    """``finished_at`` of the ``sent`` result: when the provider took the message."""


@dataclass(frozen=True, slots=True)
class ExecutionRow:
    """The ``dripdrop.step_executions`` columns the audit compares with the log."""

    id: str
    tenant_key: str
    status: str
    out_message_id: str | None
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class EnrollmentRow:
    """The ``dripdrop.enrollments`` columns the completeness check compares with the log."""

    id: str
    tenant_key: str
    sequence_id: str
    subscriber_id: str
    state: str


@dataclass(frozen=True, slots=True)
class Completeness:
    """What the completeness check needs besides the output topics (``None``: skipped).

    Attributes:
        enrollments: ``enrollments`` commands the processor has committed, in log order,
            each with its ``_partition`` and ``_offset``.
        unprocessed: commands of the range the processor had not committed yet (skipped).
        rows: enrollment rows by id (the ids the commands name).
        live_rows: rows by (tenant, sequence, subscriber): the one enrollment a duplicate
            command under another id maps to.
        dead_lettered: (partition, offset) of ``enrollments`` records on ``dead-letter``.
        refused_rows: enrollment ids whose row PostgreSQL refused (``sink_rejected``).
        execution_status: ``step_executions.status`` by id (the ids the log names).
        log_complete: the replay reads to the end of the log (no ``--to``): a terminal
            row state needs a terminal event in the log.
    """

    enrollments: Sequence[Mapping[str, Any]] = ()
    unprocessed: int = 0
    rows: Mapping[str, EnrollmentRow] = field(default_factory=dict)
    live_rows: Mapping[tuple[str, str, str], EnrollmentRow] = field(default_factory=dict)
    dead_lettered: frozenset[tuple[int, int]] = frozenset()
    refused_rows: frozenset[str] = frozenset()
    execution_status: Mapping[str, str] = field(default_factory=dict)
    log_complete: bool = True


@dataclass(frozen=True, slots=True)
class AuditInput:
    """Everything the checks need, already decoded and loaded.

    Attributes:
        commands / results / events / telemetry: decoded records in log order.
        adapters: the adapters named by the sends, as authored (PostgreSQL).
        override_steps: step ids whose sends start a thread of their own
            (``adapter_override_id``): only their Message-ID, and not in the chain.
        unthreaded_steps: lifecycle steps without thread continuity: only their
            Message-ID, but in the chain a later continuity step replies to.
        executions: PostgreSQL rows of the audited tenants (and time range), by id.
        recorded_caps: the cap each (adapter, local day) was claimed against, when known.
        policy: health policy (the probe budget is the cap while probing).
        completeness: enrollment commands and rows for the completeness check.
        gap_basis: the time the ``min_gap`` check spaces (``GapBasis``).
    """

    commands: Sequence[Mapping[str, Any]] = ()
    results: Sequence[Mapping[str, Any]] = ()
    events: Sequence[Mapping[str, Any]] = ()
    telemetry: Sequence[Mapping[str, Any]] = ()
    adapters: Mapping[str, Adapter] = field(default_factory=dict)
    override_steps: frozenset[str] = frozenset()
    unthreaded_steps: frozenset[str] = frozenset()
    executions: Mapping[str, ExecutionRow] | None = None
    recorded_caps: Mapping[tuple[str, date], int] = field(default_factory=dict)
    policy: HealthPolicy = field(default_factory=HealthPolicy)
    completeness: Completeness | None = None
    gap_basis: GapBasis = "decided"


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What the replay found: record counts, sends audited, violations."""

    records: Mapping[str, int]
    sends: int
    violations: tuple[Violation, ...]
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.violations

    def counts(self) -> dict[str, int]:
        counted: dict[str, int] = {kind: 0 for kind in KINDS}
        for v in self.violations:
            counted[v.kind] += 1
        return counted

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": dict(self.records),
            "sends": self.sends,
            "counts": self.counts(),
            "violations": [
                {k: getattr(v, k) for k in Violation.__slots__ if getattr(v, k) is not None}
                for v in self.violations
            ],
            "notes": list(self.notes),
        }


def attributes(record: Mapping[str, Any]) -> dict[str, Any]:
    """The telemetry ``attributes`` / message-event ``data`` JSON string as a dict."""
    raw = record.get("attributes", record.get("data"))
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        parsed = json.loads(raw or "{}")
    except (TypeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def sent_sends(
    commands: Sequence[Mapping[str, Any]], results: Sequence[Mapping[str, Any]]
) -> list[SentSend]:
    """Join commands with ``sent`` results by step execution (first command wins; the
    first ``sent`` result gives the hand-off time)."""
    handed_off: dict[str, datetime | None] = {}
    for r in results:
        if r.get("status") == "sent":
            handed_off.setdefault(r["step_execution_id"], r.get("finished_at"))
    sent_ids = set(handed_off)
    seen: set[str] = set()
    out: list[SentSend] = []
    for order, c in enumerate(commands):
        exec_id = c["step_execution_id"]
        if exec_id not in sent_ids or exec_id in seen:
            continue  # a republished command (at-least-once) is the same send
        seen.add(exec_id)
        out.append(
            SentSend(
                step_execution_id=exec_id,
                tenant_key=c["tenant_key"],
                enrollment_id=c["enrollment_id"],
                step_id=c["step_id"],
                adapter_id=c["adapter_id"],
                decided_at=c["decided_at"],
                headers=dict(c.get("headers") or {}),
                order=order,
                handed_off_at=handed_off[exec_id],
            )
        )
    return sorted(out, key=lambda s: (s.decided_at, s.order))
