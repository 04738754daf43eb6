"""Pinning a new outbound enrollment, and the capacity queue it waits in (SPEC §5.2).

``pin`` asks the core (``dripdrop_core.pools.decide_pin``) and applies its decision: ``Pin``
(WDRR counters, reserved headroom, ``dispatch.adapter_pinned``), ``Wait`` (the enrollment
waits, first-in first-out, in its pool's queue) or ``Reject`` (no member could send at all).

The queue lives in the ``index`` table, chunked so that no value outgrows a changelog record:
``wq:{pool}`` holds ``[head, tail]`` (sequence numbers: the next to pin, the next free) and
``wq:{pool}:{n}`` the ids of sequence numbers ``n·CHUNK … n·CHUNK+CHUNK-1``; ``wq-pools:{p}``
lists the pools of partition ``p`` that have a queue. ``drain`` runs on every tick: while the
head can be pinned it is, so headroom that opens (a new local day, a raised cap, a new or
recovered member) is taken by the oldest waiting enrollment first. An entry whose enrollment
is no longer waiting (unenrolled, stopped by a reply) is dropped when it reaches the head.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from dripdrop_core.decisions import Pin, Wait
from dripdrop_core.enrollment import Event
from dripdrop_core.errors import RecordError
from dripdrop_core.explain import explain
from dripdrop_core.models import EnrollmentState, Pool
from dripdrop_core.pools import decide_pin, reserve_pin
from dripdrop_core.scheduling import step_due_at
from streams.processor import keys
from streams.processor.runtime import EnrollmentRuntime, LastDecision, Outputs

if TYPE_CHECKING:
    from streams.processor.flow import Processor

CHUNK = 128
"""Enrollment ids per queue chunk (one table value, ~5 kB)."""
MAX_PINS_PER_DRAIN = 500
"""Pins one tick may make per pool: a new day's headroom is taken over a few ticks, each
event's outputs stay bounded."""


class ConfigNotReadyError(RecordError):
    """The record names config this partition has not seen yet (it may be on its way:
    config and commands travel on different topics). The shell parks and retries it,
    and dead-letters it with this error only when the config never arrives."""


def tenant_owned(kind: str, entity: Any, tenant_key: str, ident: str | None) -> Any:
    """``entity`` when it exists and belongs to ``tenant_key``.

    Raises:
        ConfigNotReadyError: it is unknown here (yet).
        RecordError: it belongs to another tenant (``tenant_mismatch``).
    """
    if entity is None:
        raise ConfigNotReadyError(f"unknown {kind} {ident}", code="not_found")
    if entity.tenant_key != tenant_key:
        raise RecordError(f"{kind} {ident} is not in tenant {tenant_key}", code="tenant_mismatch")
    return entity


# ---------------------------------------------------------------- pinning


def pin(
    p: Processor, e: EnrollmentRuntime, now: datetime, partition: int, out: Outputs
) -> EnrollmentRuntime | None:
    """Pin a new enrollment, or make it wait, or reject it; the pinned runtime or ``None``.

    A pool that already has a queue makes a new enrollment wait behind it: first in, first
    out, even when a slot opened since the last tick.
    """
    pool = tenant_owned("pool", p.config.pool(e.pool_id), e.tenant_key, e.pool_id)
    if not p.config.members(pool.id):
        # A pool without any member yet is config still arriving, not an exhausted pool.
        raise ConfigNotReadyError(f"pool {pool.id} has no members", code="not_found")
    if queued(p, pool.id):
        _wait(p, e, pool, Wait(pool_id=pool.id), now, partition, out)
        return None
    return _decide(p, e, pool, now, partition, out)


def _decide(
    p: Processor,
    e: EnrollmentRuntime,
    pool: Pool,
    now: datetime,
    partition: int,
    out: Outputs,
) -> EnrollmentRuntime | None:
    outcome = decide_pin(
        p.selection_state(pool.id, e.version_id),
        pool,
        p.candidates(pool.id),
        now,
        policy=p.policy.health,
        horizon=p.policy.terminal_resting_horizon,
    )
    decision = outcome.decision
    waiting = e.state is EnrollmentState.WAITING
    if isinstance(decision, Wait) or (waiting and not isinstance(decision, Pin)):
        # A waiting enrollment keeps waiting even when no member could send now: an
        # operator adds one (the runbook), or its max_wait ends it.
        if not waiting:
            assert isinstance(decision, Wait)
            _wait(p, e, pool, decision, now, partition, out)
        return None
    if not isinstance(decision, Pin):
        p.transition(
            e,
            Event.REJECT,
            now,
            out,
            reason="pool_exhausted",
            announce="dispatch.pool_exhausted",
            attrs={
                "pool_id": pool.id,
                "sequence_version_id": e.version_id,
                "evicted_adapter_ids": _evicted(decision),
            },
        )
        return None
    p.save_selection(outcome.selection)
    adapter = p.config.adapter(decision.adapter_id)
    assert adapter is not None
    p.save_adapter_state(reserve_pin(adapter, p.adapter_state(adapter), now))
    out.emit(
        "dispatch.adapter_pinned",
        e.tenant_key,
        now,
        enrollment_id=e.id,
        sequence_version_id=e.version_id,
        adapter_id=adapter.id,
        pool_id=pool.id,
    )
    return e.model_copy(update={"adapter_id": adapter.id})


def _evicted(decision: Any) -> list[dict[str, str]]:
    return [{"adapter_id": ev.adapter_id, "reason": str(ev.reason)} for ev in decision.evicted]


def _wait(
    p: Processor,
    e: EnrollmentRuntime,
    pool: Pool,
    decision: Wait,
    now: datetime,
    partition: int,
    out: Outputs,
) -> None:
    """Queue ``e``; the first one to wait announces it (``dispatch.pool_exhausted``), so an
    operator can add capacity, lower volume or repin (the seed's runbook)."""
    position = _push(p, pool.id, e.id, partition)
    if position == 1:
        out.emit(
            "dispatch.pool_exhausted",
            e.tenant_key,
            now,
            pool_id=pool.id,
            sequence_version_id=e.version_id,
            enrollment_id=e.id,
            evicted_adapter_ids=_evicted(decision),
            waiting=True,
        )
    note = LastDecision(
        kind="wait",
        reason="capacity",
        text=f"{explain(decision)}; position {position} in the queue when it started waiting",
        at=now,
    )
    e = e.model_copy(update={"status": "held", "last_decision": note})
    p.transition(
        e,
        Event.WAIT,
        now,
        out,
        reason="capacity",
        attrs={"pool_id": pool.id, "position": position},
    )


# ---------------------------------------------------------------- the queue


def _meta(p: Processor, pool_id: str) -> tuple[int, int]:
    raw = p.index.get(keys.waiting_queue(pool_id))
    return (int(raw[0]), int(raw[1])) if raw else (0, 0)


def queued(p: Processor, pool_id: str) -> int:
    """How many entries ``pool_id``'s queue holds (some may have stopped waiting since)."""
    head, tail = _meta(p, pool_id)
    return tail - head


def _push(p: Processor, pool_id: str, enrollment_id: str, partition: int) -> int:
    head, tail = _meta(p, pool_id)
    key = keys.waiting_chunk(pool_id, tail // CHUNK)
    p.index[key] = [*(p.index.get(key) or []), enrollment_id]
    p.index[keys.waiting_queue(pool_id)] = [head, tail + 1]
    if head == tail:
        pools = p.index.get(keys.waiting_pools(partition)) or []
        if pool_id not in pools:
            p.index[keys.waiting_pools(partition)] = [*pools, pool_id]
    return tail + 1 - head


def _head(p: Processor, pool_id: str) -> str | None:
    head, tail = _meta(p, pool_id)
    if head >= tail:
        return None
    chunk = p.index.get(keys.waiting_chunk(pool_id, head // CHUNK)) or []
    offset = head % CHUNK
    return str(chunk[offset]) if offset < len(chunk) else None


def _pop(p: Processor, pool_id: str, partition: int) -> None:
    head, tail = _meta(p, pool_id)
    head += 1
    if head % CHUNK == 0 or head >= tail:
        p.index.pop(keys.waiting_chunk(pool_id, (head - 1) // CHUNK), None)
    if head >= tail:
        p.index.pop(keys.waiting_queue(pool_id), None)
        pools = [x for x in p.index.get(keys.waiting_pools(partition)) or [] if x != pool_id]
        if pools:
            p.index[keys.waiting_pools(partition)] = pools
        else:
            p.index.pop(keys.waiting_pools(partition), None)
        return
    p.index[keys.waiting_queue(pool_id)] = [head, tail]


def drain(p: Processor, partition: int, now: datetime, out: Outputs) -> None:
    """Pin the waiting enrollments of this partition's pools while capacity allows."""
    for pool_id in list(p.index.get(keys.waiting_pools(partition)) or []):
        pool = p.config.pool(pool_id)
        for _ in range(MAX_PINS_PER_DRAIN):
            ident = _head(p, pool_id)
            if ident is None:
                if queued(p, pool_id):
                    _pop(p, pool_id, partition)  # a hole (cannot happen; never loop on it)
                    continue
                break
            e = p.enrollment(ident)
            if e is None or e.state is not EnrollmentState.WAITING or pool is None:
                _pop(p, pool_id, partition)
                if e is not None and pool is None and e.state is EnrollmentState.WAITING:
                    p.transition(e, Event.REJECT, now, out, reason="pool_exhausted")
                continue
            limit = p.config.max_wait(e.version_id)
            if limit is not None and now - e.enrolled_at > limit:
                _pop(p, pool_id, partition)
                p.transition(e, Event.REJECT, now, out, reason="capacity_wait_expired")
                continue
            pinned = _decide(p, e, pool, now, partition, out)
            if pinned is None:
                break  # still no headroom
            _pop(p, pool_id, partition)
            start_waiting(p, pinned, now, partition, out)


def start_waiting(
    p: Processor, e: EnrollmentRuntime, now: datetime, partition: int, out: Outputs
) -> None:
    """A waiting enrollment got its pin: it is active, its first step is due from now."""
    started = p.transition(e, Event.PIN, now, out, urgent=True)
    steps = p.config.steps(e.version_id)
    if steps:
        due = step_due_at(steps[0], enrolled_at=now, previous_sent_at=None)
        p.schedule_at(started, max(due, now), now, partition, out)
