"""Per-send invariants: ``sent_twice``, ``send_after_reply`` (SPEC §8) and ``threading``
(the header chain rules of SPEC §5.6). No I/O happens here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from streams.audit.records import SentSend, Violation, attributes


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
