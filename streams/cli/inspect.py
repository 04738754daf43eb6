"""Operator views for the runbook (SPEC §10): ``adapter show``, ``pool show``, ``enrollment
explain``. Queries live in ``streams.db.queries``; this module only renders them.

Human output is plain lines (ids are never truncated, so they can be pasted into the next
command); ``--json`` prints the full view. ``now`` comes from the configured clock
(``DRIPDROP_CLOCK_*``), so a scaled demo shows the same local day and cap as its workers.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import typer

from dripdrop_core.policy import OutboundPolicy
from streams.cli.output import client, emit
from streams.clock import clock_from
from streams.db import queries
from streams.secrets import redact


def _say(line: str = "") -> None:
    typer.echo(line)


def _t(value: Any) -> str:
    """An ISO time to the second (``-`` for none)."""
    if value is None:
        return "-"
    try:
        return datetime.fromisoformat(str(value)).isoformat(timespec="seconds")
    except ValueError:
        return str(value)


def _detail(data: dict[str, Any]) -> str:
    if "explain" in data:
        return str(data["explain"])
    keep = {k: v for k, v in data.items() if k not in ("from", "subject", "step_id")}
    return json.dumps(keep, sort_keys=True, default=str)


def _status_lines(s: dict[str, Any], indent: str = "  ") -> None:
    cap = "none" if s["cap_today"] is None else s["cap_today"]
    _say(
        f"{indent}health {s['health_state'] or 'unmanaged'}, resting_until"
        f" {_t(s['resting_until'])}, active {s['active']}"
    )
    _say(
        f"{indent}today {s['local_day']} ({s['timezone']}): sent {s['sent_today']} of cap {cap}"
        f" (daily_cap {s['daily_cap']}), min gap {s['min_gap_seconds']}s,"
        f" last send {_t(s['last_send_at'])}"
    )
    _say(f"{indent}pinned live enrollments: {s['pinned_live_enrollments']}")


def _event_lines(rows: list[dict[str, Any]], indent: str = "    ") -> None:
    if not rows:
        _say(f"{indent}(none)")
    for r in rows:
        who = f" enrollment {r['enrollment_id']}" if r.get("enrollment_id") else ""
        _say(f"{indent}{_t(r['occurred_at'])} {r['event_type']}{who}: {_detail(r['data'] or {})}")


def show_adapter(adapter_id: str, tenant: str, *, as_json: bool) -> None:
    """Render ``adapter show``: the adapter, today's status, pools, health and events."""
    with client() as dd, dd.engine.connect() as conn:
        adapter = dd.get_adapter(adapter_id, tenant_key=tenant)
        now = clock_from(dd.settings).now()
        view = queries.inspect_adapter(
            conn, adapter.id, tenant, now, policy=OutboundPolicy().health
        )
    # References are shown as they are; a value under a secret key (a row written before
    # inline secrets were refused) as ***.
    config = redact(adapter.config)
    if as_json:
        emit({**adapter.model_dump(mode="json"), "config": config, **view}, as_json=True)
        return
    status = view["adapter"]
    _say(f"adapter {status['name']} ({status['adapter_id']}), provider {status['provider']}")
    _status_lines(status)
    _say(f"  config: {json.dumps(config, sort_keys=True, default=str)}")
    pools = ", ".join(f"{p['name']} ({p['pool_id']}, weight {p['weight']})" for p in view["pools"])
    _say(f"  pools: {pools or '-'}")
    _say("  health transitions (newest first):")
    for h in view["health_transitions"] or []:
        _say(
            f"    {_t(h['at'])} {h['from_state']} -> {h['to_state']}: {h['reason']}"
            f" (source {h['source']}, resting_until {_t(h['resting_until'])})"
        )
    if not view["health_transitions"]:
        _say("    (none)")
    _say("  recent message events (newest first):")
    _event_lines(view["recent_events"])


def show_pool(pool_id: str, tenant: str, *, as_json: bool) -> None:
    """Render ``pool show``: the pool, each member's status and recent events, warnings."""
    with client() as dd, dd.engine.connect() as conn:
        pool_view = dd.inspect_pool(pool_id, tenant_key=tenant)
        now = clock_from(dd.settings).now()
        view = queries.inspect_pool(conn, pool_id, tenant, now, policy=OutboundPolicy().health)
    if as_json:
        emit({**pool_view.model_dump(mode="json"), "status": view["members"]}, as_json=True)
        return
    pool = pool_view.pool
    _say(
        f"pool {pool.name} ({pool.id}), tenant {pool.tenant_key},"
        f" on_pin_unavailable {pool.on_pin_unavailable}, active {pool.active}"
    )
    for m in view["members"]:
        _say()
        _say(
            f"member {m['name']} ({m['adapter_id']}): class {m['class']}, weight {m['weight']},"
            f" member active {m['member_active']}"
        )
        _status_lines(m)
        _say("  recent message events (newest first):")
        _event_lines(m["recent_events"])
    if not view["members"]:
        _say("(no members)")
    for warning in pool_view.warnings:
        typer.echo(f"warning: {warning}", err=True)


def explain_enrollment(enrollment_id: str, tenant: str, *, as_json: bool) -> None:
    """Render ``enrollment explain``: pin, thread chain, and why the next step waits."""
    with client() as dd, dd.engine.connect() as conn:
        view = queries.explain_enrollment(conn, enrollment_id, tenant)
    if as_json:
        emit(view, as_json=True)
        return
    nxt = view["next_step"]
    _say(
        f"enrollment {view['enrollment_id']}: {view['mode']}, state {view['state']}"
        + (f" ({view['reason']})" if view["reason"] else "")
    )
    _say(f"  pinned adapter: {view['pinned_adapter_id'] or '-'}")
    _say(f"  next step: {nxt['position']} ({nxt['key']})" if nxt else "  next step: -")
    _say("thread chain (step executions, oldest first):")
    for c in view["chain"] or []:
        kind = "override" if c["override"] else "main"
        _say(f"  {c['position']} {c['step_key']} {c['status']} ({kind}) via {c['adapter_id']}")
        _say(f"      Message-ID:  {c['out_message_id']}")
        _say(f"      In-Reply-To: {c['in_reply_to'] or '-'}")
        _say(f"      References:  {c['references'] or '-'}")
    if not view["chain"]:
        _say("  (no step execution yet)")
    if view["latest_event"]:
        e = view["latest_event"]
        _say(f"latest event: {_t(e['occurred_at'])} {e['event_type']}: {_detail(e['data'] or {})}")
    _say(f"why: {view['why']}")
