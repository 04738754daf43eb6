"""The Faust application, built from ``Settings``: no autodiscovery, nothing at import time.

Engine settings follow guides/faust-and-kafka.md §9: at-least-once, RocksDB tables (rocksdict)
with small memtables, topics created explicitly, a short session timeout so a killed worker's
partitions move quickly.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import faust
from faust.transport.drivers.aiokafka import Producer as AIOKafkaProducer
from faust.types import ProducerT

from streams import faust_fixes
from streams.settings import Settings

ROCKSDB_OPTIONS = {
    # Every partition of every table is its own DB (guides/faust-and-kafka.md §1.5): the
    # defaults (64 MiB x 3 memtables, 2 GiB cache) would not fit 2-core / 24 GiB machines.
    "write_buffer_size": 8 << 20,
    "max_write_buffer_number": 2,
    "block_cache_size": 32 << 20,
}


QUIET_LOGGERS = ("aiokafka", "faust", "mode", "kafka")
"""Libraries that log every produced batch at DEBUG: building those records (never shown)
cost ~9 % of a worker's CPU in the pipeline benchmark, so they start at INFO."""


class CommitHookProducer(AIOKafkaProducer):
    """Faust's producer with one explicit hook at the point where Faust commits.

    Faust awaits ``producer.flush()`` right before it commits offsets (at-least-once
    commits, ``faust/transport/consumer.py`` ``_commit_offsets``, after it chose them) and
    offers no other hook there. ``before_commit`` (``Checkpoint.commit``, set by the
    pipeline) runs after Faust's own flush, so the offsets go only once the outputs, the
    changelog and RocksDB are durable, in that order (streams/checkpoint.py).
    """

    before_commit: Callable[[], Awaitable[None]] | None = None

    async def flush(self) -> None:
        await super().flush()
        if self.before_commit is not None:
            await self.before_commit()


class DripDropApp(faust.App):
    """``faust.App`` whose producer is a ``CommitHookProducer``."""

    def _new_producer(self) -> ProducerT:
        return CommitHookProducer(self.transport, loop=self.loop, beacon=self.beacon)


def create_app(settings: Settings) -> DripDropApp:
    """A configured, agent-less Faust app; ``streams.worker`` registers the agents."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    faust_fixes.install()  # faust-streaming #596: seek before resuming after recovery
    datadir = Path(settings.data_dir).resolve()
    return DripDropApp(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="rocksdb://",
        datadir=str(datadir),
        autodiscover=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        table_standby_replicas=0,
        processing_guarantee="at_least_once",
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        broker_commit_interval=0.5,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=True,
        web_enabled=False,
    )
