"""Operator reads (SPEC §10): inspect adapters and pools, explain an enrollment, audit loads.

Read-only, tenant-scoped selects over schema ``dripdrop``: the authoritative rows. The subject
of every inspect call is loaded with ``load_owned`` (unknown id → ``NotFoundError``, another
tenant's → ``TenantMismatchError``). Nothing here writes.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, text

from dripdrop_core import enrollment
from dripdrop_core.correlation import normalize_message_id, split_references
from dripdrop_core.models import Adapter
from dripdrop_core.policy import HealthPolicy
from dripdrop_core.ramp import effective_cap, local_day
from dripdrop_core.state import AdapterState
from streams.audit.records import EnrollmentRow, ExecutionRow
from streams.db.authoring import adapter_from_row, fields, load_owned, pool_from_row

LIVE_STATES = tuple(sorted(str(s) for s in enrollment.LIVE))
FINISHED = tuple(sorted(str(s) for s in enrollment.TERMINAL))
RECENT_EVENTS = 10


def _uuids(ids: Collection[str]) -> list[str]:
    """The values of ``ids`` that are UUIDs (a log may name anything; the columns are uuid)."""
    out = []
    for value in ids:
        try:
            out.append(str(uuid.UUID(str(value))))
        except ValueError:
            continue
    return sorted(out)


def _rows(conn: Connection, sql: str, **params: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(text(sql), params).mappings()]


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


# ---------------------------------------------------------------- adapters and pools


def adapter_status(
    conn: Connection, adapter: Adapter, now: datetime, *, policy: HealthPolicy
) -> dict[str, Any]:
    """Health, today's cap and count, last send and pins of one adapter (runbook view)."""
    today = local_day(adapter.timezone, now)
    state = AdapterState(
        adapter_id=adapter.id,
        health_state=adapter.health_state,
        ramp_started_at=adapter.ramp_started_at,
    )
    counter = _rows(
        conn,
        "SELECT sent, cap, last_sent_at FROM dripdrop.adapter_day_counters"
        " WHERE adapter_id = :id AND local_day = :day",
        id=adapter.id,
        day=today,
    )
    last = conn.execute(
        text("SELECT max(last_sent_at) FROM dripdrop.adapter_day_counters WHERE adapter_id = :id"),
        {"id": adapter.id},
    ).scalar()
    pins = conn.execute(
        text(
            "SELECT count(*) FROM dripdrop.enrollments WHERE tenant_key = :tenant"
            " AND adapter_id = :id AND state IN ('active', 'paused')"
        ),
        {"tenant": adapter.tenant_key, "id": adapter.id},
    ).scalar()
    return {
        "adapter_id": adapter.id,
        "name": adapter.name,
        "provider": adapter.provider,
        "active": adapter.active,
        "health_state": str(adapter.health_state) if adapter.health_state else None,
        "resting_until": _iso(adapter.resting_until),
        "timezone": adapter.timezone,
        "local_day": today.isoformat(),
        "daily_cap": adapter.daily_cap,
        "cap_today": effective_cap(adapter, state, now, policy=policy),
        "sent_today": counter[0]["sent"] if counter else 0,
        "cap_claimed_today": counter[0]["cap"] if counter else None,
        "last_send_at": _iso(last),
        "min_gap_seconds": adapter.min_gap_seconds,
        "pinned_live_enrollments": int(pins or 0),
    }


def recent_adapter_events(
    conn: Connection, adapter_id: str, tenant_key: str, *, limit: int = RECENT_EVENTS
) -> list[dict[str, Any]]:
    """The adapter's latest ``message_events`` rows, newest first."""
    return [
        {**r, "occurred_at": _iso(r["occurred_at"]), "enrollment_id": _str(r["enrollment_id"])}
        for r in _rows(
            conn,
            "SELECT occurred_at, event_type, enrollment_id, data FROM dripdrop.message_events"
            " WHERE adapter_id = :id AND tenant_key = :tenant"
            " ORDER BY occurred_at DESC, inserted_at DESC LIMIT :limit",
            id=adapter_id,
            tenant=tenant_key,
            limit=limit,
        )
    ]


def health_transitions(
    conn: Connection, adapter_id: str, tenant_key: str, *, limit: int = RECENT_EVENTS
) -> list[dict[str, Any]]:
    """The adapter's latest health transitions (from, to, reason, source), newest first."""
    return [
        {k: _iso(v) for k, v in r.items()}
        for r in _rows(
            conn,
            "SELECT at, from_state, to_state, reason, source, resting_until"
            " FROM dripdrop.adapter_health_transitions"
            " WHERE adapter_id = :id AND tenant_key = :tenant ORDER BY at DESC LIMIT :limit",
            id=adapter_id,
            tenant=tenant_key,
            limit=limit,
        )
    ]


def inspect_adapter(
    conn: Connection, adapter_id: str, tenant_key: str, now: datetime, *, policy: HealthPolicy
) -> dict[str, Any]:
    """``adapter show``: status, pools, recent health transitions and message events."""
    adapter = adapter_from_row(load_owned(conn, "adapter", adapter_id, tenant_key))
    pools = _rows(
        conn,
        "SELECT p.id AS pool_id, p.name, m.class, m.weight, m.active"
        " FROM dripdrop.adapter_pool_members m JOIN dripdrop.adapter_pools p ON p.id = m.pool_id"
        " WHERE m.adapter_id = :id AND m.tenant_key = :tenant ORDER BY p.name",
        id=adapter.id,
        tenant=tenant_key,
    )
    return {
        "adapter": adapter_status(conn, adapter, now, policy=policy),
        "pools": [{**p, "pool_id": str(p["pool_id"])} for p in pools],
        "health_transitions": health_transitions(conn, adapter.id, tenant_key),
        "recent_events": recent_adapter_events(conn, adapter.id, tenant_key),
    }


def inspect_pool(
    conn: Connection, pool_id: str, tenant_key: str, now: datetime, *, policy: HealthPolicy
) -> dict[str, Any]:
    """``pool show``: the pool and, per member, its adapter's status and recent events."""
    pool = pool_from_row(load_owned(conn, "pool", pool_id, tenant_key))
    members = _rows(
        conn,
        "SELECT m.adapter_id, m.class, m.weight, m.active AS member_active, a.*"
        " FROM dripdrop.adapter_pool_members m"
        " JOIN dripdrop.channel_adapters a ON a.id = m.adapter_id"
        " WHERE m.pool_id = :pool AND m.tenant_key = :tenant ORDER BY a.name",
        pool=pool.id,
        tenant=tenant_key,
    )
    out = []
    for m in members:
        adapter = adapter_from_row(m)
        out.append(
            {
                "class": m["class"],
                "weight": m["weight"],
                "member_active": m["member_active"],
                **adapter_status(conn, adapter, now, policy=policy),
                "recent_events": recent_adapter_events(conn, adapter.id, tenant_key, limit=5),
            }
        )
    return {"pool": pool.model_dump(mode="json"), "members": out}


# ---------------------------------------------------------------- enrollments


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def enrollment_chain(conn: Connection, enrollment_id: str) -> list[dict[str, Any]]:
    """Step executions in insertion order with their threading headers (the seed's query)."""
    return [
        {
            "step_execution_id": str(r["id"]),
            "position": r["position"],
            "step_key": r["key"],
            "adapter_id": _str(r["adapter_id"]),
            "override": r["adapter_override_id"] is not None,
            "status": r["status"],
            "out_message_id": r["out_message_id"],
            # Ids as they are stored and matched (SPEC §8): without angle brackets.
            "in_reply_to": normalize_message_id((r["headers"] or {}).get("In-Reply-To")),
            "references": " ".join(split_references((r["headers"] or {}).get("References")))
            or None,
            "sent_at": _iso(r["sent_at"]),
            "scheduled_for": _iso(r["scheduled_for"]),
        }
        for r in _rows(
            conn,
            "SELECT x.id, s.position, s.key, x.adapter_id, s.adapter_override_id, x.status,"
            " x.out_message_id, x.payload->'headers' AS headers, x.sent_at, x.scheduled_for"
            " FROM dripdrop.step_executions x JOIN dripdrop.steps s ON s.id = x.step_id"
            " WHERE x.enrollment_id = :id ORDER BY x.inserted_at",
            id=enrollment_id,
        )
    ]


def latest_event(
    conn: Connection, enrollment_id: str, event_types: Collection[str]
) -> dict[str, Any] | None:
    found = _rows(
        conn,
        "SELECT event_type, occurred_at, adapter_id, data FROM dripdrop.message_events"
        " WHERE enrollment_id = :id AND event_type = ANY(:types)"
        " ORDER BY occurred_at DESC, inserted_at DESC LIMIT 1",
        id=enrollment_id,
        types=list(event_types),
    )
    if not found:
        return None
    row = found[0]
    return {**row, "occurred_at": _iso(row["occurred_at"]), "adapter_id": _str(row["adapter_id"])}


def explain_enrollment(conn: Connection, enrollment_id: str, tenant_key: str) -> dict[str, Any]:
    """``enrollment explain``: pin, thread chain, next step and why it has not gone out."""
    e = dict(fields(load_owned(conn, "enrollment", enrollment_id, tenant_key)))
    chain = enrollment_chain(conn, str(e["id"]))
    steps = _rows(
        conn,
        "SELECT id, position, key FROM dripdrop.steps WHERE version_id = :v ORDER BY position",
        v=e["sequence_version_id"],
    )
    done = {c["position"] for c in chain if c["status"] in ("sent", "skipped", "failed")}
    upcoming = (
        None
        if e["state"] in FINISHED
        else next((s for s in steps if s["position"] not in done), None)
    )
    deferral = latest_event(conn, str(e["id"]), ("deferred",))
    last_other = latest_event(
        conn,
        str(e["id"]),
        ("replied", "sender_reassigned", "bounced", "complained", "unsubscribed", "failed"),
    )
    return {
        "enrollment_id": str(e["id"]),
        "state": e["state"],
        "reason": e["reason"],
        "mode": e["mode"],
        "pinned_adapter_id": _str(e["adapter_id"]),
        "next_step": None
        if upcoming is None
        else {"position": upcoming["position"], "key": upcoming["key"]},
        "chain": chain,
        "latest_deferral": deferral,
        "latest_event": last_other,
        "why": why_not_sent(e, chain, upcoming, deferral),
    }


def why_not_sent(
    e: Mapping[str, Any],
    chain: list[dict[str, Any]],
    upcoming: Mapping[str, Any] | None,
    deferral: Mapping[str, Any] | None,
) -> str:
    """One line: why the next step of the enrollment has not gone out yet."""
    state, reason = e["state"], e["reason"]
    if state in FINISHED:
        return f"enrollment is {state}" + (f" ({reason})" if reason else "") + ": nothing to send"
    if upcoming is None:
        return "every step has gone out; completion is pending"
    in_flight = [c for c in chain if c["status"] in ("intent", "sending", "ambiguous")]
    if in_flight:
        c = in_flight[-1]
        if c["status"] == "ambiguous":
            return (
                f"step {c['step_key']} has an ambiguous outcome (crash mid-send): it is never"
                " resent automatically and the enrollment holds until it is resolved"
                f" (dripdrop sends resolve {c['step_execution_id']} --sent|--not-sent)"
            )
        if c["status"] == "intent":
            # Claimed but not yet with the provider: the sender holds it for its hand-off
            # time (the minimum gap), an open circuit, or a backlog.
            when = f" for {c['scheduled_for']}" if c.get("scheduled_for") else ""
            return (
                f"step {c['step_key']} is claimed and waits for the sender{when} (intent: the"
                " hand-off time, an open circuit or a backlog holds it)"
            )
        return f"step {c['step_key']} is being sent ({c['status']})"
    if state == "paused":
        return "enrollment is paused" + (f" ({reason})" if reason else "")
    last_sent = max((c["sent_at"] for c in chain if c["sent_at"]), default=None)
    if deferral is not None and (last_sent is None or deferral["occurred_at"] >= last_sent):
        data = deferral.get("data") or {}
        text_ = data.get("explain") or f"deferred until {data.get('until')}"
        return (
            f"step {upcoming['key']}: {text_} (reason {data.get('reason')},"
            f" decided {deferral['occurred_at']})"
        )
    return f"step {upcoming['key']} is scheduled by its delay; no deferral recorded"


# ---------------------------------------------------------------- audit loads


def adapters_by_id(conn: Connection, ids: Collection[str]) -> dict[str, Adapter]:
    """Adapters as authored now (the audit's cap and gap configuration)."""
    if not ids:
        return {}
    rows = conn.execute(
        text("SELECT * FROM dripdrop.channel_adapters WHERE id = ANY(CAST(:ids AS uuid[]))"),
        {"ids": _uuids(ids)},
    ).mappings()
    return {str(r["id"]): adapter_from_row(dict(r)) for r in rows}


def recorded_caps(conn: Connection, ids: Collection[str]) -> dict[tuple[str, date], int]:
    """The cap each granted claim was checked against, per (adapter, local day)."""
    if not ids:
        return {}
    rows = conn.execute(
        text(
            "SELECT adapter_id, local_day, cap FROM dripdrop.adapter_day_counters"
            " WHERE adapter_id = ANY(CAST(:ids AS uuid[])) AND cap IS NOT NULL"
        ),
        {"ids": _uuids(ids)},
    )
    return {(str(r[0]), r[1]): int(r[2]) for r in rows}


def override_step_ids(conn: Connection, ids: Collection[str]) -> frozenset[str]:
    """Steps with ``adapter_override_id``: only their Message-ID, a thread of their own."""
    return _step_ids(conn, ids, "s.adapter_override_id IS NOT NULL")


def unthreaded_step_ids(conn: Connection, ids: Collection[str]) -> frozenset[str]:
    """Lifecycle steps without thread continuity: only their Message-ID, yet in the chain
    (a later ``thread_continuity`` step replies to them)."""
    return _step_ids(
        conn,
        ids,
        "s.adapter_override_id IS NULL AND v.mode = 'lifecycle' AND NOT s.thread_continuity",
    )


def _step_ids(conn: Connection, ids: Collection[str], condition: str) -> frozenset[str]:
    if not ids:
        return frozenset()
    rows = conn.execute(
        text(
            "SELECT s.id FROM dripdrop.steps s"
            " JOIN dripdrop.sequence_versions v ON v.id = s.version_id"
            f" WHERE s.id = ANY(CAST(:ids AS uuid[])) AND ({condition})"
        ),
        {"ids": _uuids(ids)},
    )
    return frozenset(str(r[0]) for r in rows)


def executions_for_audit(
    conn: Connection,
    *,
    tenants: Collection[str],
    ids: Collection[str],
    sent_from: datetime | None,
    sent_to: datetime | None,
) -> dict[str, ExecutionRow]:
    """The rows the log names (``ids``) and every ``sent`` row of ``tenants`` in the range."""
    rows = conn.execute(
        text(
            "SELECT id, tenant_key, status, out_message_id, payload->'headers' AS headers"
            " FROM dripdrop.step_executions WHERE id = ANY(CAST(:ids AS uuid[]))"
            " OR (tenant_key = ANY(:tenants) AND status = 'sent'"
            " AND (CAST(:sent_from AS timestamptz) IS NULL OR sent_at >= :sent_from)"
            " AND (CAST(:sent_to AS timestamptz) IS NULL OR sent_at < :sent_to))"
        ),
        {
            "ids": _uuids(ids),
            "tenants": sorted(tenants),
            "sent_from": sent_from,
            "sent_to": sent_to,
        },
    ).mappings()
    return {
        str(r["id"]): ExecutionRow(
            id=str(r["id"]),
            tenant_key=r["tenant_key"],
            status=r["status"],
            out_message_id=r["out_message_id"],
            headers=dict(r["headers"] or {}),
        )
        for r in rows
    }


def _enrollment_row(r: Any) -> EnrollmentRow:
    return EnrollmentRow(
        id=str(r["id"]),
        tenant_key=r["tenant_key"],
        sequence_id=str(r["sequence_id"]),
        subscriber_id=r["subscriber_id"],
        state=r["state"],
    )


def enrollments_by_id(conn: Connection, ids: Collection[str]) -> dict[str, EnrollmentRow]:
    """The enrollment rows with these ids (the audit's completeness check)."""
    rows = conn.execute(
        text(
            "SELECT id, tenant_key, sequence_id, subscriber_id, state FROM dripdrop.enrollments"
            " WHERE id = ANY(CAST(:ids AS uuid[]))"
        ),
        {"ids": _uuids(ids)},
    ).mappings()
    return {str(r["id"]): _enrollment_row(r) for r in rows}


def live_enrollments(
    conn: Connection, identities: Collection[tuple[str, str, str]]
) -> dict[tuple[str, str, str], EnrollmentRow]:
    """The live row of each (tenant, sequence, subscriber): what a duplicate maps to."""
    valid = [(t, s, sub) for t, s, sub in identities if _uuids([s])]
    if not valid:
        return {}
    rows = conn.execute(
        text(
            "SELECT e.id, e.tenant_key, e.sequence_id, e.subscriber_id, e.state"
            " FROM dripdrop.enrollments e"
            " JOIN unnest(CAST(:tenants AS text[]), CAST(:sequences AS uuid[]),"
            " CAST(:subscribers AS text[])) AS k(tenant_key, sequence_id, subscriber_id)"
            " ON e.tenant_key = k.tenant_key AND e.sequence_id = k.sequence_id"
            " AND e.subscriber_id = k.subscriber_id"
            " WHERE e.state IN ('active', 'paused')"
        ),
        {
            "tenants": [t for t, _, _ in valid],
            "sequences": [s for _, s, _ in valid],
            "subscribers": [sub for _, _, sub in valid],
        },
    ).mappings()
    return {
        (r["tenant_key"], str(r["sequence_id"]), r["subscriber_id"]): _enrollment_row(r)
        for r in rows
    }


def execution_status(conn: Connection, ids: Collection[str]) -> dict[str, str]:
    """``step_executions.status`` by id, for the ids the log names."""
    rows = conn.execute(
        text(
            "SELECT id, status FROM dripdrop.step_executions WHERE id = ANY(CAST(:ids AS uuid[]))"
        ),
        {"ids": _uuids(ids)},
    )
    return {str(r[0]): r[1] for r in rows}
