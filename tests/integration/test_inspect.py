"""``adapter show``, ``pool show`` and ``enrollment explain`` over real PostgreSQL rows.

The rows are written the way the stream processor writes them (enrollments, step executions
with headers, ``deferred`` message events, the claim's day counter), so the views are tested
without a worker; the runbook in docs/operations.md shows them against a live one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import Engine, text

from streams.api import DripDrop
from tests.integration._api_fixtures import (  # noqa: F401
    CliResult,
    api,
    cli,
    db_engine,
    insert_enrollment,
)


def _execute(engine: Engine, sql: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql), params)


def _world(api: DripDrop, engine: Engine, tenant: str) -> dict[str, Any]:  # noqa: F811
    now = datetime.now(UTC)
    adapter = api.create_channel_adapter(
        tenant_key=tenant,
        name="rep",
        from_address="rep@send.example",
        health_state="ramping",
        daily_cap=40,
        ramp_floor=5,
        ramp_increment=3,
        ramp_started_at=now - timedelta(days=2, hours=1),  # day 3 of the ramp: cap 11
        min_gap_seconds=90,
    )
    pool = api.create_adapter_pool(tenant_key=tenant, name="sales", on_pin_unavailable="pause")
    api.add_pool_member(pool.id, tenant_key=tenant, adapter_id=adapter.id, weight=2)
    sequence = api.create_sequence(tenant_key=tenant, key="cold")
    version = api.create_sequence_version(
        sequence.id, tenant_key=tenant, version=1, mode="outbound", config={"pool_id": pool.id}
    )
    steps = [
        api.create_step(version.id, tenant_key=tenant, key=f"s{i}", position=i).id for i in range(3)
    ]
    live, replied = (
        insert_enrollment(
            engine,
            tenant_key=tenant,
            sequence_id=sequence.id,
            version_id=version.id,
            subscriber_id=f"lead-{i}",
            adapter_id=adapter.id,
            state=state,
        )
        for i, state in enumerate(("active", "replied"))
    )
    m0, m1 = (f"<{uuid.uuid4()}@send.example>" for _ in range(2))
    for position, headers in enumerate(
        ({"Message-ID": m0}, {"Message-ID": m1, "In-Reply-To": m0, "References": m0})
    ):
        _execute(
            engine,
            "INSERT INTO dripdrop.step_executions (id, tenant_key, enrollment_id, step_id,"
            " adapter_id, status, out_message_id, payload, sent_at, inserted_at)"
            " VALUES (:id, :t, :e, :s, :a, 'sent', :mid, :payload, :at, :at)",
            id=str(uuid.uuid4()),
            t=tenant,
            e=live,
            s=steps[position],
            a=adapter.id,
            mid=headers["Message-ID"].strip("<>"),  # stored bare, as the sink stores it
            payload=Jsonb({"headers": headers}),
            at=now - timedelta(minutes=10 - position),
        )
    until = now + timedelta(minutes=5)
    _execute(
        engine,
        "INSERT INTO dripdrop.message_events (id, tenant_key, event_type, adapter_id,"
        " enrollment_id, data, occurred_at) VALUES (:id, :t, 'deferred', :a, :e, :data, :at)",
        id=str(uuid.uuid4()),
        t=tenant,
        a=adapter.id,
        e=live,
        data=Jsonb(
            {"reason": "gap", "until": until.isoformat(), "explain": "minimum gap 90s (test)"}
        ),
        at=now - timedelta(minutes=1),
    )
    _execute(
        engine,
        "INSERT INTO dripdrop.adapter_day_counters (tenant_key, adapter_id, local_day, sent,"
        " cap, last_sent_at) VALUES (:t, :a, :day, 2, 11, :at)",
        t=tenant,
        a=adapter.id,
        day=now.date(),
        at=now - timedelta(minutes=9),
    )
    return {
        "adapter": adapter,
        "pool": pool,
        "live": live,
        "replied": replied,
        "chain": (m0, m1),
        "steps": steps,
    }


def _json(result: CliResult) -> Any:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_adapter_and_pool_show_report_cap_sent_today_pins_and_events(
    api: DripDrop,  # noqa: F811
    db_engine: Engine,  # noqa: F811
    cli: Callable[..., CliResult],  # noqa: F811
) -> None:
    tenant = f"acct_{uuid.uuid4().hex[:12]}"
    w = _world(api, db_engine, tenant)
    shown = _json(cli("adapter", "show", w["adapter"].id, "--tenant", tenant, "--json"))
    status = shown["adapter"]
    assert shown["id"] == w["adapter"].id  # the authored fields are still there
    assert (status["cap_today"], status["sent_today"], status["cap_claimed_today"]) == (11, 2, 11)
    assert status["pinned_live_enrollments"] == 1  # the replied one is not live
    assert status["health_state"] == "ramping" and status["last_send_at"] is not None
    assert [e["event_type"] for e in shown["recent_events"]] == ["deferred"]
    assert shown["pools"][0]["pool_id"] == w["pool"].id

    pool = _json(cli("pool", "show", w["pool"].id, "--tenant", tenant, "--json"))
    member = pool["status"][0]
    assert (member["adapter_id"], member["weight"], member["cap_today"]) == (w["adapter"].id, 2, 11)
    assert pool["pool"]["on_pin_unavailable"] == "pause" and pool["warnings"] == []

    human = cli("pool", "show", w["pool"].id, "--tenant", tenant)
    assert human.exit_code == 0, human.stderr
    assert f"member rep ({w['adapter'].id})" in human.stdout
    assert "sent 2 of cap 11 (daily_cap 40)" in human.stdout
    assert "pinned live enrollments: 1" in human.stdout
    other = cli("adapter", "show", w["adapter"].id, "--tenant", "someone_else")
    assert other.exit_code == 4 and "tenant_mismatch" in other.stderr


def test_enrollment_explain_shows_pin_chain_and_why(
    api: DripDrop,  # noqa: F811
    db_engine: Engine,  # noqa: F811
    cli: Callable[..., CliResult],  # noqa: F811
) -> None:
    tenant = f"acct_{uuid.uuid4().hex[:12]}"
    w = _world(api, db_engine, tenant)
    m0, m1 = w["chain"]
    view = _json(cli("enrollment", "explain", w["live"], "--tenant", tenant, "--json"))
    assert view["pinned_adapter_id"] == w["adapter"].id
    bare0, bare1 = m0.strip("<>"), m1.strip("<>")
    assert [(c["out_message_id"], c["in_reply_to"], c["references"]) for c in view["chain"]] == [
        (bare0, None, None),
        (bare1, bare0, bare0),
    ]
    assert view["next_step"] == {"position": 2, "key": "s2"}
    assert view["latest_deferral"]["data"]["reason"] == "gap"
    assert "minimum gap 90s (test)" in view["why"] and "reason gap" in view["why"]

    human = cli("enrollment", "explain", w["live"], "--tenant", tenant)
    assert human.exit_code == 0, human.stderr
    assert f"In-Reply-To: {bare0}" in human.stdout and "why: step s2:" in human.stdout

    replied = _json(cli("enrollment", "explain", w["replied"], "--tenant", tenant, "--json"))
    assert replied["why"] == "enrollment is replied: nothing to send"
    missing = cli("enrollment", "explain", str(uuid.uuid4()), "--tenant", tenant)
    assert missing.exit_code == 3
