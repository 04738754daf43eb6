"""The seed's example through the real ``dripdrop`` executable (subprocesses)."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import Engine, select

from streams.admin import create_topics
from streams.db.tables import channel_adapters
from streams.settings import Settings
from tests.integration._api_fixtures import *  # noqa: F403
from tests.integration._api_fixtures import consume, run_cli


def _ok(settings: Settings, *args: str) -> dict[str, object]:
    result = run_cli(settings, *args, "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def test_cli_seed_cold_outbound_example(settings: Settings, db_engine: Engine) -> None:
    create_topics(settings)
    tenant = f"acct_{uuid.uuid4().hex[:12]}"
    t = ("--tenant", tenant)
    adapter = _ok(
        settings,
        "adapter",
        "create",
        *t,
        "--name",
        "rep-gmail",
        "--provider",
        "gmail",
        "--from-address",
        "rep@example.com",
    )
    pool = _ok(
        settings, "pool", "create", *t, "--name", "sales_pool", "--on-pin-unavailable", "pause"
    )
    member = _ok(
        settings,
        "pool",
        "add-member",
        str(pool["id"]),
        *t,
        "--adapter",
        str(adapter["id"]),
        "--class",
        "mailbox",
        "--weight",
        "1",
    )
    sequence = _ok(settings, "sequence", "create", *t, "--key", "cold-q3")
    version = _ok(
        settings,
        "version",
        "create",
        str(sequence["id"]),
        *t,
        "--version",
        "2",
        "--mode",
        "outbound",
        "--pool",
        str(pool["id"]),
    )
    updated = _ok(
        settings,
        "adapter",
        "update",
        str(adapter["id"]),
        *t,
        "--health-state",
        "ramping",
        "--daily-cap",
        "40",
        "--ramp-floor",
        "5",
        "--ramp-increment",
        "3",
        "--ramp-started-at",
        "now",
        "--min-gap-seconds",
        "90",
    )
    step = _ok(
        settings,
        "step",
        "create",
        str(version["id"]),
        *t,
        "--key",
        "intro",
        "--position",
        "0",
        "--subject",
        "Hi {{ first_name }}",
        "--body",
        "Hello",
    )
    shown = _ok(settings, "pool", "show", str(pool["id"]), *t)
    enrolled = _ok(
        settings,
        "enroll",
        *t,
        "--sequence",
        str(sequence["id"]),
        "--subscriber",
        "lead-1",
        "--recipient",
        "lead@example.com",
        "--data",
        '{"first_name": "Ada"}',
    )

    assert pool["on_pin_unavailable"] == "pause"
    assert (member["member_class"], member["weight"]) == ("mailbox", 1)
    assert (version["mode"], version["pool_id"]) == ("outbound", pool["id"])
    assert updated["health_state"] == "ramping" and updated["daily_cap"] == 40
    assert (updated["ramp_floor"], updated["ramp_increment"], updated["min_gap_seconds"]) == (
        5,
        3,
        90,
    )
    assert updated["ramp_started_at"] is not None
    assert step["version_id"] == version["id"]
    members = shown["members"]
    assert isinstance(members, list)
    assert [m["adapter_id"] for m in members] == [adapter["id"]]
    assert enrolled["command"] == "enroll" and enrolled["enrollment_id"]

    with db_engine.connect() as conn:
        assert (
            conn.execute(
                select(channel_adapters.c.ramp_increment).where(
                    channel_adapters.c.id == adapter["id"]
                )
            ).scalar_one()
            == 3
        )
    config_keys = {key for key, *_ in consume(settings, "config", expect=7)}
    assert f"pool_member:{pool['id']}:{adapter['id']}" in config_keys
    assert len(consume(settings, "enrollments", expect=1)) == 1
