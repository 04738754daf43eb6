"""The seed's cold-outbound example (seed/cold_outbound.md), translated to Python, as written."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine, select

from streams.api import DripDrop
from streams.db.tables import channel_adapters, sequence_versions
from streams.settings import Settings
from tests.integration._api_fixtures import *  # noqa: F403
from tests.integration._api_fixtures import consume


def test_seed_cold_outbound_example_runs_as_written(
    api: DripDrop, settings: Settings, db_engine: Engine, new_tenant: Callable[[], str]
) -> None:
    tenant_key = new_tenant()
    gmail_adapter = api.create_channel_adapter(
        tenant_key=tenant_key, name="rep-gmail", provider="gmail", from_address="rep@example.com"
    )
    sequence = api.create_sequence(tenant_key=tenant_key, key="cold-q3")

    # {:ok, pool} = DripDrop.create_adapter_pool(%{tenant_key: "acct_123", name: "sales_pool",
    #                                              on_pin_unavailable: :pause})
    pool = api.create_adapter_pool(
        tenant_key=tenant_key, name="sales_pool", on_pin_unavailable="pause"
    )
    # {:ok, _member} = DripDrop.add_pool_member(pool.id, %{adapter_id: gmail_adapter.id,
    #                                                      class: :mailbox, weight: 1})
    member = api.add_pool_member(
        pool.id,
        tenant_key=tenant_key,
        adapter_id=gmail_adapter.id,
        member_class="mailbox",
        weight=1,
    )
    # {:ok, version} = DripDrop.create_sequence_version(sequence.id, %{version: 2,
    #                                   mode: :outbound, config: %{"pool_id" => pool.id}})
    version = api.create_sequence_version(
        sequence.id,
        tenant_key=tenant_key,
        version=2,
        mode="outbound",
        config={"pool_id": pool.id},
    )
    # DripDrop.update_channel_adapter(adapter, %{health_state: :ramping, daily_cap: 40,
    #   ramp_floor: 5, ramp_increment: 3, ramp_started_at: DateTime.utc_now(), min_gap_seconds: 90})
    ramp_started_at = datetime.now(UTC)
    adapter = api.update_channel_adapter(
        gmail_adapter.id,
        tenant_key=tenant_key,
        health_state="ramping",
        daily_cap=40,
        ramp_floor=5,
        ramp_increment=3,
        ramp_started_at=ramp_started_at,
        min_gap_seconds=90,
    )

    assert pool.on_pin_unavailable == "pause"
    assert (member.member_class, member.weight) == ("mailbox", 1)
    assert (version.mode, version.version, version.pool_id) == ("outbound", 2, pool.id)
    assert (adapter.health_state, adapter.daily_cap, adapter.ramp_floor) == ("ramping", 40, 5)
    assert (adapter.ramp_increment, adapter.min_gap_seconds) == (3, 90)

    with db_engine.connect() as conn:
        stored = conn.execute(
            select(channel_adapters).where(channel_adapters.c.id == adapter.id)
        ).one()
        config = conn.execute(
            select(sequence_versions.c.config).where(sequence_versions.c.id == version.id)
        ).scalar_one()
    assert stored.health_state == "ramping" and stored.daily_cap == 40
    assert stored.ramp_started_at == ramp_started_at
    assert config == {"pool_id": pool.id}  # the seed's config map, stored as jsonb

    records = consume(settings, "config", expect=6)
    keys = [key for key, *_ in records]
    assert keys == [
        f"adapter:{gmail_adapter.id}",
        f"sequence:{sequence.id}",
        f"pool:{pool.id}",
        f"pool_member:{pool.id}:{gmail_adapter.id}",
        f"sequence_version:{version.id}",
        f"adapter:{gmail_adapter.id}",
    ]
    latest_adapter = json.loads(records[-1][2]["payload"])
    assert latest_adapter["health_state"] == "ramping"
    assert latest_adapter["daily_cap"] == 40
