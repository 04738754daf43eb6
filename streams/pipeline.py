"""Wires the pipeline into a Faust app: topics, tables, the processor agent, the two
stateless stages and the tick timer.

* ``processor`` (Faust agent, stateful, per event): enrollments, inbound-messages,
  health-signals, config, dispatch-results, ``ticks`` and ``sink-feedback`` → ``Processor``
  → outputs.
* ``sink`` (own consumer, batched; ``streams/batch_consumer.py``): row operations →
  PostgreSQL (``PostgresSink``) → granted send commands on ``dispatch``, refused claims back
  to the processor, ``message-events``.
* ``sender`` (own consumer, batched): ``dispatch`` → ``Sender`` (ledger + provider) →
  ``dispatch-results``.
* a timer on every worker ticks each partition it owns, so due steps fire by themselves.

Every input topic is keyed by ``tenant_key`` (config: partition of the tenant) and has the
same partition count, so one tenant's state lives on one partition (docs/topics.md).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import faust
import orjson
import psycopg
from faust.exceptions import PartitionsMismatch
from psycopg_pool import AsyncConnectionPool

from dripdrop_core.circuit import CircuitPolicy
from dripdrop_core.errors import RecordError
from dripdrop_core.models import Adapter
from dripdrop_core.policy import OutboundPolicy
from streams import metrics
from streams.batch_consumer import BatchConsumer
from streams.changelog import ChangelogTable, changelog_tables
from streams.checkpoint import Checkpoint
from streams.clock import Clock
from streams.codecs import CodecError, Codecs, partition_for
from streams.kafka import PublishError, StreamPublisher
from streams.processor import inputs
from streams.processor.flow import Processor
from streams.processor.pinning import ConfigNotReadyError
from streams.processor.runtime import Outputs, stable_id
from streams.processor.store import TABLES
from streams.providers import ProviderRegistry
from streams.sender import Sender, SenderDatabaseError
from streams.settings import Settings
from streams.sink import PostgresSink, SinkDatabaseError, is_transient

log = logging.getLogger("dripdrop.pipeline")
T = TypeVar("T")

PUBLIC_INPUTS = ("enrollments", "inbound-messages", "health-signals", "config", "dispatch-results")
INTERNAL = ("ticks", "sink", "sink-feedback")
RETRIES = 5
"""Attempts at a sender batch that fails for another reason than an unreachable database."""
MAX_RETRY_SECONDS = 10.0
"""Longest wait between two attempts at a write while PostgreSQL is unreachable."""
REDRIVE_REAL_SECONDS = 300.0
"""A send command unanswered this long (real time) is re-issued (``Processor._redrive``).

Long, because in steady operation nothing is lost and a late result only means a backlog
(re-issuing then would add duplicates to it). Losses happen when a worker dies or stops,
and the sends that were in flight then are re-issued after ARRIVAL_REDRIVE_REAL_SECONDS."""
RETRY_REAL_SECONDS = 5.0
"""First wait (real time) before a send the provider could not take is tried again; it
doubles per consecutive retry up to 64× (``dripdrop_core.retry_delay``)."""
ARRIVAL_REDRIVE_REAL_SECONDS = 15.0
"""Sends found in flight when a partition arrives in this process are re-issued this soon."""
PARKED_MAX = 300
"""Records parked per partition (one table value: it must stay well under 1 MB)."""
PARKED_MAX_BYTES = 512 * 1024
"""Parked bytes per partition (base64), for the same reason: a few large records fill it."""
SENDER_BATCH = 256
"""Send commands per sender batch (the sender runs up to 8 sends at a time within one)."""
SINK_RECORD_BYTES = 256 * 1024
"""Row operations per sink record stop growing past this size (the broker's limit is 1 MB)."""
SWEEP_REAL_SECONDS = 600.0
"""Besides when a partition arrives, how often its enrollments are swept (a backstop)."""
PARK_ATTEMPTS = 40
"""Ticks a record naming unknown config waits for it before it is dead-lettered."""
TICK_IN_FLIGHT_SECONDS = 2.0
"""A partition gets no new tick while its last one (sent less than this ago) is unprocessed:
a busy processor must not fall further behind on a queue of ticks. Ticks carry ``now`` and
``on_tick`` fires everything due by then, so a skipped tick loses nothing. The bound lets a
tick lost to a rebalance (processed by another worker, or never) stop blocking."""


class StopRetrying(BaseException):  # noqa: N818 - a signal, not an error
    """The worker is stopping while PostgreSQL is unreachable: abandon the input without
    committing it (the next owner replays it). A ``BaseException``, so no ``except
    Exception`` on the way turns it into a dead letter."""


def _transient(exc: BaseException) -> bool:
    """Database trouble that goes away by itself (connection, pool, serialization)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, SinkDatabaseError):
            return seen.transient
        if isinstance(seen, psycopg.Error):
            return is_transient(seen)
        seen = seen.__cause__
    return False


EXIT_UNCOMMITTED = 75
"""Exit status of a worker that stopped during a PostgreSQL outage without committing."""


def _exit_uncommitted(message: Any) -> None:
    """Leave the process now, so the event in hand is never committed.

    Faust acks an agent's current event when the agent's loop is left, even by an
    exception, and commits acked offsets while it stops: raising would commit an event
    whose rows were never written (a reply's stop among them). Exiting at once commits
    nothing more; every uncommitted input is replayed by the next owner, and all writes
    are idempotent.
    """
    log.critical(
        "stopping while PostgreSQL is unreachable: exiting without committing %s[%s]@%s",
        message.topic,
        message.partition,
        message.offset,
    )
    logging.shutdown()
    os._exit(EXIT_UNCOMMITTED)


class _Parked:
    """A parked record, shaped like a Kafka message for ``dead_letter``."""

    def __init__(self, topic: str, partition: int, item: dict[str, Any], value: bytes) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = item["offset"]
        self.key = base64.b64decode(item["key"]) or None
        self.value = value


class FaustStore:
    def __init__(self, tables: dict[str, ChangelogTable], checkpoint: Checkpoint) -> None:
        self.tables = tables
        self.checkpoint = checkpoint

    def atomic(self) -> AbstractContextManager[None]:
        return self.checkpoint.event()

    def table(self, name: str) -> Any:
        return self.tables[name]

    def partition_items(self, name: str, partition: int) -> Iterator[tuple[str, Any]]:
        return self.tables[name].partition_items(partition)


class _Message:
    """A confluent-kafka message, shaped like a Faust one for ``dead_letter``."""

    def __init__(self, message: Any) -> None:
        self.topic = message.topic()
        self.partition = message.partition()
        self.offset = message.offset()
        self.key = message.key()
        self.value = message.value()


def _reason(exc: RecordError | CodecError) -> str:
    """The dead-letter reason of bad input: a codec's specific reason, else the code."""
    return str(getattr(exc, "reason", None) or exc.code)


def _json(value: Any) -> bytes:
    return orjson.dumps(value, default=str)


class Pipeline:
    """Everything one worker runs; built once by ``streams.worker``."""

    def __init__(self, app: faust.App, settings: Settings, clock: Clock) -> None:
        self.app = app
        self.settings = settings
        self.clock = clock
        self.codecs = Codecs(settings)
        real = clock.real_seconds(1.0)  # real seconds per simulated second
        cooldown = timedelta(seconds=settings.circuit_cooldown_seconds / real)
        self.policy = OutboundPolicy(
            circuit=CircuitPolicy(
                threshold=settings.circuit_threshold,
                cooldown=cooldown,
                cooldown_cap=cooldown * 12,
                probe_timeout=timedelta(seconds=ARRIVAL_REDRIVE_REAL_SECONDS / real),
            ),
            recipient_retry_limit=timedelta(hours=settings.recipient_retry_hours),
        )
        self.topics = {
            name: app.topic(settings.topic(name), key_serializer="raw", value_serializer="raw")
            for name in (
                *PUBLIC_INPUTS,
                *INTERNAL,
                "dispatch",
                "telemetry",
                "message-events",
                "dead-letter",
            )
        }
        self.publisher = StreamPublisher(settings)
        self.checkpoint = Checkpoint(self.publisher)
        tables = changelog_tables(app, TABLES, settings.partitions, self.publisher, self.checkpoint)
        self.processor = Processor(
            FaustStore(tables, self.checkpoint),
            self.policy,
            redrive_seconds=REDRIVE_REAL_SECONDS / clock.real_seconds(1.0),
            arrival_redrive_seconds=ARRIVAL_REDRIVE_REAL_SECONDS / clock.real_seconds(1.0),
            retry_seconds=RETRY_REAL_SECONDS / clock.real_seconds(1.0),
            time_scale=1.0 / real,
            lookahead_seconds=settings.tick_interval_seconds / real,
            owns=lambda tenant, partition: partition_for(tenant, settings.partitions) == partition,
        )
        self._pool: AsyncConnectionPool | None = None
        self.registry = ProviderRegistry()
        self.adapters: dict[str, Adapter] = {}
        self._ticks_in_flight: dict[int, float] = {}
        self._last_sweep: dict[int, float] = {}  # partition → when swept in this process
        self._resynced: set[int] = set()
        # The stateless stages read with their own consumers (streams/batch_consumer.py).
        self.consumers = [
            BatchConsumer(
                settings,
                topic="sink",
                role="sink",
                batch_size=settings.sink_batch_size,
                batch_seconds=settings.sink_batch_seconds,
                handle=self.sink_batch,
                on_failure=self._stage_failed,
                seed_group=settings.app_id,  # the Faust group read it before
            ),
            BatchConsumer(
                settings,
                topic="dispatch",
                role="sender",
                batch_size=SENDER_BATCH,
                batch_seconds=0.05,
                handle=self.sender_batch,
                on_failure=self._stage_failed,
                seed_group=settings.app_id,
            ),
        ]
        self._chain_flush()
        self._register()
        # Faust types a receiver as taking a ``signal`` keyword; it passes one in **kwargs.
        app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        app.on_partitions_revoked.connect(self._on_rebalance)  # type: ignore[arg-type]
        app.on_partitions_assigned.connect(self._on_rebalance)  # type: ignore[arg-type]

    async def _on_revoked(self, sender: Any, revoked: Any, **_: Any) -> None:
        """Staged writes of partitions leaving this process are dropped (checkpoint.py)."""
        self.checkpoint.revoke({tp.partition for tp in revoked})

    async def _on_rebalance(self, sender: Any, tps: Any, **_: Any) -> None:
        """Recovery may rewrite any table: caches go, counters and sweeps run again."""
        self.processor.on_rebalance()
        self._resynced.clear()
        self._last_sweep.clear()

    def _chain_flush(self) -> None:
        """Make Faust's pre-commit flush run the checkpoint's commit.

        Faust awaits ``app.producer.flush()`` right before it commits offsets (at-least-once
        commits, ``faust/transport/consumer.py`` ``_commit_offsets``, after it chose the
        offsets), and offers no other hook there. ``Checkpoint.commit`` makes the outputs,
        then the changelog, then RocksDB durable, in that order, before the offsets go.
        """
        producer = self.app.producer
        faust_flush = producer.flush

        async def flush() -> None:
            await faust_flush()
            await self.checkpoint.commit()

        producer.flush = flush  # type: ignore[method-assign]

    async def pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            # timeout: how long a request waits for a connection before PoolTimeout, which
            # the callers treat as PostgreSQL being unreachable (``_until_written``).
            self._pool = AsyncConnectionPool(
                self.settings.database_url, min_size=1, max_size=4, open=False, timeout=10.0
            )
            await self._pool.open()
        return self._pool

    # ------------------------------------------------------------ agents

    def _register(self) -> None:
        app, topics = self.app, self.topics
        source = app.topic(
            *(self.settings.topic(n) for n in (*PUBLIC_INPUTS, "ticks", "sink-feedback")),
            key_serializer="raw",
            value_serializer="raw",
        )

        @app.agent(source, name="processor")
        async def processor(stream: faust.StreamT[bytes]) -> None:
            async for event in stream.events():
                try:
                    await self.process(event)
                except StopRetrying:
                    _exit_uncommitted(event.message)

        @app.task  # type: ignore[untyped-decorator]  # Faust's decorators are untyped
        async def start_stages() -> None:  # after table recovery, like the agents
            for consumer in self.consumers:
                await consumer.start()

        async def stop_stages(sender: Any, **_: Any) -> None:
            for consumer in self.consumers:
                await consumer.stop()

        app.on_before_shutdown.connect(stop_stages)  # type: ignore[arg-type]

        @app.timer(self.settings.tick_interval_seconds)  # type: ignore[untyped-decorator]
        async def tick() -> None:
            now = self.clock.now()
            ticks = self.settings.topic("ticks")
            sent_at = time.monotonic()
            for tp in app.assignor.assigned_actives():
                if tp.topic == ticks:
                    last = self._ticks_in_flight.get(tp.partition)
                    if last is not None and sent_at - last < TICK_IN_FLIGHT_SECONDS:
                        continue
                    self._ticks_in_flight[tp.partition] = sent_at
                    await topics["ticks"].send(
                        key=b"tick", value=_json({"now": now}), partition=tp.partition
                    )

    # ------------------------------------------------------------ processor

    async def process(self, event: faust.EventT[bytes]) -> None:
        """Decode, decide, publish. Nothing escapes: bad input goes to the dead letters."""
        message = event.message
        name = message.topic.removeprefix(self.settings.topic_prefix)
        partition = message.partition
        try:
            if partition not in self._resynced:
                await self.resync_counters(partition)
            if name == "ticks":
                self._ticks_in_flight.pop(partition, None)
                await self.retry_parked(partition)
            out = self._dispatch_input(name, message.value or b"", partition)
        except ConfigNotReadyError as exc:
            if not self.park(name, message, partition, str(exc)):
                await self.dead_letter(message, exc.code, f"parking full: {exc}")
            return
        except (RecordError, CodecError) as exc:
            await self.dead_letter(message, _reason(exc), str(exc))
            return
        except PartitionsMismatch:
            # The worker's topics disagree with its tables (a changelog topic deleted or
            # recreated with another partition count): no event can be processed, and
            # dead-lettering each as a bug would commit it and lose it. Stop, commit nothing.
            log.critical("topics and tables disagree:\n%s", traceback.format_exc())
            _exit_uncommitted(message)
        except Exception as exc:  # noqa: BLE001 - the one catch-all: a bug, never a lost record
            await self._bug(message, partition, exc)
            return
        try:
            await self.publish(out, partition)
        except Exception as exc:  # noqa: BLE001 - e.g. a record librdkafka refuses
            await self._bug(message, partition, exc)

    async def _bug(self, message: Any, partition: int, exc: Exception) -> None:
        log.error(
            "bug processing %s[%s]@%s: %s",
            message.topic,
            partition,
            message.offset,
            traceback.format_exc(),
        )
        await self.dead_letter(message, "bug", f"{type(exc).__name__}: {exc}")

    async def resync_counters(self, partition: int) -> None:
        """Before a partition's first event in this process: counters from PostgreSQL.

        After a crash the table state can be ahead of what really happened (a replayed
        decision counted twice, a pin reserved for an enrollment whose own record was
        lost): that would starve pins (spurious pool_exhausted). PostgreSQL's per-day
        counters are the truth for sends; pins waiting are forgotten (their first sends
        are still capped, and deferred, by the claims).
        """
        pool = await self.pool()

        async def read() -> list[Any]:
            async with pool.connection() as conn, conn.cursor() as cur:
                await cur.execute(
                    "SELECT adapter_id::text, local_day, sent, last_sent_at"
                    " FROM dripdrop.adapter_day_counters WHERE local_day >= %s",
                    ((self.clock.now() - timedelta(days=2)).date(),),
                )
                return await cur.fetchall()

        # Unreachable PostgreSQL is waited out here too: failing, the event would be
        # dead-lettered as a bug and committed.
        rows = await self._until_written("counter resync", read)
        counters = {(r[0], r[1]): (int(r[2]), r[3]) for r in rows}
        self.processor.resync_adapters(partition, counters, self.clock.now())
        self._resynced.add(partition)

    def park(self, name: str, message: Any, partition: int, error: str) -> bool:
        """Keep a record that names config not seen yet; False when the partition's parking
        is full (the caller dead-letters it)."""
        key = f"parked:{partition}"
        parked = list(self.processor.index.get(key) or [])
        value = base64.b64encode(message.value).decode()
        size = len(value) + sum(len(item["value"]) for item in parked)
        if len(parked) >= PARKED_MAX or size > PARKED_MAX_BYTES:
            return False
        parked.append(
            {
                "name": name,
                "value": value,
                "key": base64.b64encode(message.key or b"").decode(),
                "offset": message.offset,
                "attempts": 0,
                "error": error,
            }
        )
        self.processor.index[key] = parked
        return True

    async def retry_parked(self, partition: int) -> None:
        """Retry records that named config not seen yet; dead-letter them after a while."""
        key = f"parked:{partition}"
        parked = list(self.processor.index.get(key) or [])
        if not parked:
            return
        still: list[dict[str, Any]] = []
        for item in parked:
            value = base64.b64decode(item["value"])
            try:
                out = self._dispatch_input(item["name"], value, partition)
            except ConfigNotReadyError as exc:
                item = {**item, "attempts": item["attempts"] + 1, "error": str(exc)}
                if item["attempts"] < PARK_ATTEMPTS:
                    still.append(item)
                    continue
                out = Outputs()
                await self.dead_letter(
                    _Parked(self.settings.topic(item["name"]), partition, item, value),
                    exc.code,
                    str(exc),
                )
            except (RecordError, CodecError) as exc:
                out = Outputs()
                await self.dead_letter(
                    _Parked(self.settings.topic(item["name"]), partition, item, value),
                    _reason(exc),
                    str(exc),
                )
            except Exception as exc:  # noqa: BLE001 - a bug must not block the partition's ticks
                out = Outputs()
                parked_record = _Parked(self.settings.topic(item["name"]), partition, item, value)
                await self._bug(parked_record, partition, exc)
            await self.publish(out, partition)
        self.processor.index[key] = still

    def _dispatch_input(self, name: str, value: bytes, partition: int) -> Outputs:
        p = self.processor
        if name == "ticks":
            now = datetime.fromisoformat(orjson.loads(value)["now"])
            with p.event(partition):
                out = p.on_tick(partition, now)
                last = self._last_sweep.get(partition)
                if last is None or time.monotonic() - last > SWEEP_REAL_SECONDS:
                    out.extend(p.sweep(partition, now))
                    self._last_sweep[partition] = time.monotonic()
            return out
        now = self.clock.now()
        if name == "sink-feedback":
            with p.event(partition):
                return p.on_feedback(orjson.loads(value), now, partition)
        record = self.codecs.for_topic(name).decode(value)
        handler: Callable[[Processor, dict[str, Any], datetime, int], Outputs] = {
            "enrollments": inputs.on_enrollment_command,
            "inbound-messages": inputs.on_inbound,
            "health-signals": inputs.on_health_signal,
            "config": inputs.on_config,
            "dispatch-results": lambda proc, rec, n, part: proc.on_result(rec, n, part),
        }[name]
        with p.event(partition):
            return handler(p, record, now, partition)

    async def publish(self, out: Outputs, partition: int) -> None:
        for reason, detail in out.dead_letters:
            log.error("dead letter from processing (%s): %s", reason, detail)
            await self.dead_letter(
                _Parked(
                    self.settings.topic("ticks"),
                    partition,
                    {"offset": -1, "key": ""},
                    detail.encode(),
                ),
                reason,
                detail,
            )
        metrics.observe(out)  # Prometheus counters from telemetry (streams/metrics.py)
        if out.urgent:
            result = await self._write_urgent(out.urgent, partition)
            await self._publish_events(result.events if result else [])
        if out.sink:
            await self._publish_sink(out.sink, partition)
        topic = self.settings.topic("telemetry")
        telemetry = self.codecs.for_topic("telemetry")
        for t in out.telemetry:
            attributes = orjson.dumps(t["attributes"], default=str).decode()
            value = {
                "event_id": stable_id("telemetry", t["name"], attributes, t["at"].isoformat()),
                "name": t["name"],
                "tenant_key": t["tenant_key"],
                "at": t["at"],
                "attributes": attributes,
            }
            await self.publisher.send(
                topic, key=t["tenant_key"].encode(), value=telemetry.encode(value)
            )

    async def _publish_sink(self, ops: list[dict[str, Any]], partition: int) -> None:
        """An event's row operations, in as few sink records as fit the broker's size limit.

        One record per event, not per operation (each record costs the sink a consume); a
        tick that fires hundreds of steps is split before a record would pass
        ``SINK_RECORD_BYTES``. An operation too large for any record is dead-lettered alone.
        """
        first = ops[0]
        key = first.get("row", first.get("command", first)).get("tenant_key", "").encode()
        topic = self.settings.topic("sink")
        chunk: list[bytes] = []
        size = 0
        for op in (_json(op) for op in ops):
            if chunk and size + len(op) > SINK_RECORD_BYTES:
                await self._send_sink(topic, key, chunk, partition)
                chunk, size = [], 0
            chunk.append(op)
            size += len(op)
        await self._send_sink(topic, key, chunk, partition)

    async def _send_sink(self, topic: str, key: bytes, ops: list[bytes], partition: int) -> None:
        value = b'{"ops":[' + b",".join(ops) + b"]}"
        try:
            await self.publisher.send(topic, key=key, value=value, partition=partition)
        except PublishError as exc:
            if len(ops) != 1 or "MSG_SIZE_TOO_LARGE" not in str(exc):
                raise
            detail = f"{exc}; the operation ({len(value)} bytes) is cut to its first 100 kB"
            await self.dead_letter(
                _Parked(topic, partition, {"offset": -1, "key": ""}, value[:100_000]),
                "too_large",
                detail,
            )

    async def dead_letter(self, message: Any, reason: str, detail: str) -> None:
        value = self.codecs.for_topic("dead-letter").encode(
            {
                "source_topic": message.topic,
                "partition": message.partition,
                "offset": message.offset,
                "key": message.key,
                "value": message.value,
                "reason": reason[:200],
                "detail": detail[:2000],
                "failed_at": datetime.now(UTC),
            }
        )
        await self.publisher.send(self.settings.topic("dead-letter"), key=message.key, value=value)

    # ------------------------------------------------------------ sink

    async def _until_written(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` until it succeeds. Transient database trouble is retried for as long
        as it lasts (nothing is committed meanwhile, so nothing is lost); when the worker
        stops first, ``StopRetrying`` leaves the input uncommitted. Anything else is raised.
        """
        attempt = 0
        while True:
            try:
                return await call()
            except Exception as exc:
                if not _transient(exc):
                    raise
                if self.app.should_stop:
                    raise StopRetrying(what) from exc
                attempt += 1
                delay = min(0.2 * 2**attempt, MAX_RETRY_SECONDS)
                log.warning(
                    "%s failed (attempt %d, again in %.1f s): %s", what, attempt, delay, exc
                )
                await asyncio.sleep(delay)

    async def _write_urgent(self, ops: list[dict[str, Any]], partition: int) -> Any:
        """Rows that must be committed before the event is (a reply's stop): written here,
        not through ``sink``. Operations PostgreSQL refuses for good are dead-lettered."""
        sink = PostgresSink(await self.pool())
        try:
            return await self._until_written("urgent write", lambda: sink.write(ops))
        except SinkDatabaseError as exc:
            log.error("urgent rows refused by PostgreSQL: %s", exc)
            place = {"offset": -1, "key": ""}
            parked = _Parked(self.settings.topic("sink"), partition, place, _json({"ops": ops}))
            await self.dead_letter(parked, "sink_rejected", str(exc))
            return None

    async def sink_batch(self, messages: list[Any]) -> None:
        """A batch of sink records (``BatchConsumer``): one per processed event, carrying
        all of its row operations (a bare operation: a record written before that format).

        A record that is not an object with a list of operations is dead-lettered
        (``invalid_sink_record``); so is one PostgreSQL refuses for good (``sink_rejected``:
        bad data, a malformed operation), found by halving the batch. The others are
        written. While PostgreSQL is unreachable the batch waits (``_until_written``).
        """
        records: list[tuple[Any, list[dict[str, Any]]]] = []
        for message in messages:
            try:
                record = orjson.loads(message.value())
                if not isinstance(record, dict):
                    raise ValueError("a sink record must be a JSON object")
                ops = record.get("ops", [record])
                if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
                    raise ValueError("a sink record's ops must be a list of objects")
            except ValueError as exc:  # orjson.JSONDecodeError is one
                await self.dead_letter(_Message(message), "invalid_sink_record", str(exc))
                continue
            records.append((message, ops))
        await self._write_records(records)
        await self.publisher.barrier()

    async def _write_records(self, records: list[tuple[Any, list[dict[str, Any]]]]) -> None:
        if not records:
            return
        sink = PostgresSink(await self.pool())
        ops = [op for _, record_ops in records for op in record_ops]
        try:
            result = await self._until_written("sink batch", lambda: sink.write(ops))
        except SinkDatabaseError as exc:
            if len(records) == 1:
                log.error("sink record refused by PostgreSQL: %s", exc)
                await self.dead_letter(_Message(records[0][0]), "sink_rejected", str(exc))
                return
            half = len(records) // 2
            await self._write_records(records[:half])
            await self._write_records(records[half:])
            return
        await self._publish_result(result)

    async def _stage_failed(self, exc: BaseException) -> None:
        await self.app.crash(exc)

    async def _publish_result(self, result: Any) -> None:
        """What a committed sink batch means for Kafka: feedback, commands, events."""
        for refused in result.refused:  # before the commands: a replayed claim's Message-ID
            await self.publisher.send(
                self.settings.topic("sink-feedback"),
                key=refused["tenant_key"].encode(),
                value=_json(refused),
            )
        dispatch = self.codecs.for_topic("dispatch")
        for command in result.commands:
            # The sink topic is JSON: its times come back as ISO strings.
            command = {
                **command,
                **{
                    name: datetime.fromisoformat(command[name])
                    for name in ("decided_at", "not_before")
                    if isinstance(command.get(name), str)
                },
            }
            await self.publisher.send(
                self.settings.topic("dispatch"),
                key=command["tenant_key"].encode(),
                value=dispatch.encode(command),
            )
        await self._publish_events(result.events)

    async def _publish_events(self, rows: list[dict[str, Any]]) -> None:
        codec = self.codecs.for_topic("message-events")
        for row in rows:
            value = {
                "id": row["id"],
                "tenant_key": row["tenant_key"],
                "enrollment_id": row.get("enrollment_id"),
                "step_execution_id": row.get("step_execution_id"),
                "adapter_id": row.get("adapter_id"),
                "event_type": row["event_type"],
                "provider_message_id": None,
                "in_reply_to": row.get("in_reply_to"),
                "references": [],
                "data": orjson.dumps(row.get("data") or {}).decode(),
                "occurred_at": datetime.fromisoformat(row["occurred_at"]),
            }
            await self.publisher.send(
                self.settings.topic("message-events"),
                key=row["tenant_key"].encode(),
                value=codec.encode(value),
            )

    # ------------------------------------------------------------ sender

    async def sender_batch(self, messages: list[Any]) -> None:
        """A batch of send commands (``BatchConsumer`` on ``dispatch``): delivered, their
        results acknowledged on ``dispatch-results``. A record that is not a valid command
        is dead-lettered."""
        codec = self.codecs.for_topic("dispatch")
        commands: list[dict[str, Any]] = []
        for message in messages:
            try:
                commands.append(codec.decode(message.value()))
            except CodecError as exc:
                await self.dead_letter(_Message(message), _reason(exc), str(exc))
        if commands:
            await self.deliver(commands)
        await self.publisher.barrier()

    async def _wait_until(self, at: datetime) -> None:
        """Sleep until ``at`` on the worker's clock (simulated time runs faster)."""
        seconds = (at - self.clock.now()).total_seconds()
        if seconds > 0:
            await asyncio.sleep(self.clock.real_seconds(seconds))

    async def deliver(self, commands: list[dict[str, Any]]) -> None:
        pool = await self.pool()
        sender = Sender(
            pool,
            lambda aid: self.registry.provider_for(self.adapters[aid]),
            clock=self.clock.now,
            wait_until=self._wait_until,
        )
        failures = 0

        async def attempt() -> list[Any]:
            await self._load_adapters(pool, {c["adapter_id"] for c in commands})
            try:
                outcome = await sender.deliver(commands)
            except SenderDatabaseError as exc:
                # Outcomes already delivered when recording them failed: real results (a
                # retried batch reports those rows ambiguous).
                await self._publish_results(exc.results)
                raise
            # Finished before (a replay after a crash that lost the result): say it again.
            return [
                *outcome.results,
                *await sender.finished_results(commands, outcome.duplicates),
            ]

        while True:
            try:
                results = await self._until_written("sender batch", attempt)
                break
            except Exception as exc:  # noqa: BLE001 - not the database being away: a bug
                failures += 1
                log.error("sender batch failed (attempt %d): %r", failures, exc)
                if failures >= RETRIES:
                    return  # the processor redrives these sends (REDRIVE_REAL_SECONDS)
                await asyncio.sleep(0.2 * 2**failures)
        await self._publish_results(results)

    async def _publish_results(self, results: Sequence[Any]) -> None:
        codec = self.codecs.for_topic("dispatch-results")
        for r in results:
            value = dict(r) if isinstance(r, dict) else r.as_record()
            await self.publisher.send(
                self.settings.topic("dispatch-results"),
                key=value["tenant_key"].encode(),
                value=codec.encode(value),
            )

    async def _load_adapters(self, pool: AsyncConnectionPool, ids: set[str]) -> None:
        missing = [i for i in ids if i not in self.adapters]
        if not missing:
            return
        from streams.db.authoring import adapter_from_row

        async with pool.connection() as conn, conn.cursor() as cur:
            await cur.execute(
                "SELECT * FROM dripdrop.channel_adapters WHERE id = ANY(%s)", (missing,)
            )
            names = [d.name for d in cur.description or []]
            for row in await cur.fetchall():
                adapter = adapter_from_row(dict(zip(names, row, strict=True)))
                self.adapters[adapter.id] = adapter
