"""Operator views for the runbook (SPEC §10): ``adapter show``, ``pool show``, ``enrollment
explain``. Queries live in ``streams.db.queries``; this module only renders them.

``now`` comes from the configured clock (``DRIPDROP_CLOCK_*``), so a scaled demo shows the
same local day and cap as its workers.
"""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console

from dripdrop_core.policy import OutboundPolicy
from streams.cli.output import client, emit
from streams.clock import clock_from
from streams.db import queries

_out = Console(highlight=False, soft_wrap=True)

STATUS_COLUMNS = (
    "adapter_id",
    "name",
    "health_state",
    "resting_until",
    "cap_today",
    "sent_today",
    "last_send_at",
    "pinned_live_enrollments",
)


def _events(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "occurred_at": r["occurred_at"],
            "event_type": r["event_type"],
            "enrollment_id": r.get("enrollment_id"),
            "detail": _detail(r.get("data") or {}),
        }
        for r in rows
    ]


def _detail(data: dict[str, Any]) -> str:
    if "explain" in data:
        return str(data["explain"])
    keep = {k: v for k, v in data.items() if k not in ("from", "subject", "step_id")}
    return json.dumps(keep, sort_keys=True, default=str)


def show_adapter(adapter_id: str, tenant: str, *, as_json: bool) -> None:
    """Render ``adapter show``: the adapter, today's status, pools, health and events."""
    with client() as dd, dd.engine.connect() as conn:
        adapter = dd.get_adapter(adapter_id, tenant_key=tenant)
        now = clock_from(dd.settings).now()
        view = queries.inspect_adapter(
            conn, adapter.id, tenant, now, policy=OutboundPolicy().health
        )
    if as_json:
        emit({**adapter.model_dump(mode="json"), **view}, as_json=True)
        return
    emit(view["adapter"], as_json=False, title="adapter")
    emit(view["pools"], as_json=False, title="pools")
    emit(view["health_transitions"], as_json=False, title="health transitions")
    emit(_events(view["recent_events"]), as_json=False, title="recent message events")


def show_pool(pool_id: str, tenant: str, *, as_json: bool) -> None:
    """Render ``pool show``: the pool, each member's status and recent events, warnings."""
    with client() as dd, dd.engine.connect() as conn:
        pool_view = dd.inspect_pool(pool_id, tenant_key=tenant)
        now = clock_from(dd.settings).now()
        view = queries.inspect_pool(conn, pool_id, tenant, now, policy=OutboundPolicy().health)
    if as_json:
        emit({**pool_view.model_dump(mode="json"), "status": view["members"]}, as_json=True)
        return
    emit(pool_view.pool, as_json=False, title="pool")
    emit(
        [
            {"class": m["class"], "weight": m["weight"], **{c: m[c] for c in STATUS_COLUMNS}}
            for m in view["members"]
        ],
        as_json=False,
        title="members",
    )
    events = [
        {"adapter": m["name"], **e} for m in view["members"] for e in _events(m["recent_events"])
    ]
    emit(events, as_json=False, title="recent message events")
    for warning in pool_view.warnings:
        typer.echo(f"warning: {warning}", err=True)


def explain_enrollment(enrollment_id: str, tenant: str, *, as_json: bool) -> None:
    """Render ``enrollment explain``: pin, thread chain, and why the next step waits."""
    with client() as dd, dd.engine.connect() as conn:
        view = queries.explain_enrollment(conn, enrollment_id, tenant)
    if as_json:
        emit(view, as_json=True)
        return
    summary = {
        k: view[k] for k in ("enrollment_id", "state", "reason", "mode", "pinned_adapter_id")
    }
    summary["next_step"] = (
        f"{view['next_step']['position']} ({view['next_step']['key']})"
        if view["next_step"]
        else None
    )
    emit(summary, as_json=False, title="enrollment")
    _out.print("thread chain (step executions, oldest first):", markup=False)
    for c in view["chain"] or []:
        kind = "override" if c["override"] else "main"
        _out.print(
            f"  {c['position']} {c['step_key']} {c['status']} ({kind}) via {c['adapter_id']}\n"
            f"      Message-ID: {c['out_message_id']}\n"
            f"      In-Reply-To: {c['in_reply_to'] or '-'}\n"
            f"      References: {c['references'] or '-'}",
            markup=False,
        )
    if not view["chain"]:
        _out.print("  (no step execution yet)", markup=False)
    _out.print(f"why: {view['why']}", markup=False)
