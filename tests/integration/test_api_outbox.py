"""The outbox: every committed config change is published, even across a crash.

* crash after commit, before publish: the next relay publishes the change (none lost);
* crash after the broker acknowledged, before the mark: the next relay publishes it
  again with the same key and the same bytes (harmless on the compacted topic);
* broker down: the authoring call still succeeds, the change waits in the outbox;
* concurrent relays (``FOR UPDATE SKIP LOCKED``) never publish a row twice.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from sqlalchemy import Engine, func, select

from streams.admin import create_topics
from streams.api import DripDrop
from streams.codecs import partition_for
from streams.db.tables import adapter_pools, outbox
from streams.kafka import Delivery, KafkaPublisher, PublishError
from streams.outbox import relay_outbox
from streams.settings import Settings
from tests.integration._api_fixtures import *  # noqa: F403
from tests.integration._api_fixtures import consume, python_subprocess, run_cli


def _pending_for(engine: Engine, tenant_key: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(outbox)
                .where(outbox.c.tenant_key == tenant_key)
                .where(outbox.c.published_at.is_(None))
            ).scalar_one()
        )


def test_outbox_authoring_call_publishes_config_change(
    api: DripDrop, settings: Settings, db_engine: Engine, new_tenant: Callable[[], str]
) -> None:
    tenant = new_tenant()
    pool = api.create_adapter_pool(tenant_key=tenant, name="sales_pool", on_pin_unavailable="pause")

    [(key, partition, value, _)] = consume(settings, "config", expect=1)
    assert key == f"pool:{pool.id}"
    assert partition == partition_for(tenant, settings.partitions)
    assert value["entity_type"] == "pool" and value["tenant_key"] == tenant
    assert value["deleted"] is False
    assert json.loads(value["payload"]) == pool.model_dump(mode="json")
    assert _pending_for(db_engine, tenant) == 0


CRASH_AFTER_COMMIT = """
import os
import streams.api
from streams.admin import create_topics
from streams.api import DripDrop
from streams.settings import Settings

def crash(*args, **kwargs):
    os._exit(137)  # the process dies right after the authoring commit

streams.api.relay_all = crash
DripDrop(Settings()).create_adapter_pool(tenant_key={tenant!r}, name="sales_pool")
"""


def test_outbox_crash_after_commit_is_published_by_next_relay(
    api: DripDrop, settings: Settings, db_engine: Engine, new_tenant: Callable[[], str]
) -> None:
    tenant = new_tenant()
    crashed = python_subprocess(settings, CRASH_AFTER_COMMIT.format(tenant=tenant))
    assert crashed.returncode == 137, crashed.stderr

    with db_engine.connect() as conn:
        pool_id = conn.execute(
            select(adapter_pools.c.id).where(adapter_pools.c.tenant_key == tenant)
        ).scalar_one()  # committed ...
    assert _pending_for(db_engine, tenant) == 1  # ... but not published
    assert consume(settings, "config", expect=0, timeout=2, settle=0.5) == []

    relayed = run_cli(settings, "outbox", "relay", "--json")
    assert relayed.exit_code == 0, relayed.stderr
    assert json.loads(relayed.stdout)["published"] >= 1

    records = consume(settings, "config", expect=1)
    assert [key for key, *_ in records] == [f"pool:{pool_id}"]  # exactly once
    assert json.loads(records[0][2]["payload"])["name"] == "sales_pool"
    assert _pending_for(db_engine, tenant) == 0


class CrashAfterAck(KafkaPublisher):
    """Delivers for real, then 'dies' before the relay can mark the rows published."""

    def flush(self, timeout: float = 30.0) -> list[Delivery]:
        super().flush(timeout)
        raise SystemExit("crash after the broker acknowledged")


def test_outbox_crash_after_ack_before_mark_republishes_identical_record(
    settings: Settings, db_engine: Engine, new_tenant: Callable[[], str]
) -> None:
    tenant = new_tenant()
    with DripDrop(settings, engine=db_engine, relay_after_commit=False) as client:
        create_topics(settings, ["config"])
        pool = client.create_adapter_pool(tenant_key=tenant, name="p")
        crashing = CrashAfterAck(settings)
        try:
            relay_outbox(db_engine, crashing, topic_prefix=settings.topic_prefix)
        except SystemExit:
            pass
        assert _pending_for(db_engine, tenant) == 1  # the mark was never committed
        assert client.relay_outbox() == 1

    records = consume(settings, "config", expect=2)
    assert len(records) == 2
    (key1, part1, _, raw1), (key2, part2, _, raw2) = records
    assert key1 == key2 == f"pool:{pool.id}" and part1 == part2
    assert raw1 == raw2  # same event_id, same content: compaction keeps one
    assert _pending_for(db_engine, tenant) == 0


class BrokerDown:
    def produce(self, topic: str, *, key: str, value: bytes, partition: int | None = None) -> None:
        pass

    def flush(self, timeout: float = 30.0) -> list[Delivery]:
        raise PublishError("broker unreachable")

    def close(self) -> None:
        pass


def test_outbox_broker_down_commits_and_keeps_change_pending(
    api: DripDrop, settings: Settings, db_engine: Engine, new_tenant: Callable[[], str]
) -> None:
    tenant = new_tenant()
    with DripDrop(settings, engine=db_engine, publisher=BrokerDown()) as offline:
        pool = offline.create_adapter_pool(tenant_key=tenant, name="p")
    assert api.get_pool(pool.id, tenant_key=tenant) == pool
    assert _pending_for(db_engine, tenant) == 1
    assert api.relay_outbox() >= 1
    [(key, *_)] = consume(settings, "config", expect=1)
    assert key == f"pool:{pool.id}"


def test_outbox_concurrent_relays_publish_each_row_once(
    api: DripDrop, settings: Settings, db_engine: Engine, new_tenant: Callable[[], str]
) -> None:
    tenant = new_tenant()
    with DripDrop(settings, engine=db_engine, relay_after_commit=False) as quiet:
        pools = [quiet.create_adapter_pool(tenant_key=tenant, name=f"p{i}") for i in range(40)]
    assert _pending_for(db_engine, tenant) == 40

    def relay() -> None:
        publisher = KafkaPublisher(settings)
        try:
            while relay_outbox(db_engine, publisher, batch=5, topic_prefix=settings.topic_prefix):
                pass
        finally:
            publisher.close()

    threads = [threading.Thread(target=relay) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    records = consume(settings, "config", expect=40)
    assert sorted(key for key, *_ in records) == sorted(f"pool:{p.id}" for p in pools)
    assert _pending_for(db_engine, tenant) == 0
