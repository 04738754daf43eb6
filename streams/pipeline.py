"""The worker's composition root and its processor agent: topics, tables, the checkpoint,
the stages, the tick timer.

* ``processor`` (Faust agent, stateful, per event; here): enrollments, inbound-messages,
  health-signals, config, dispatch-results, ``ticks`` and ``sink-feedback`` → ``Processor``
  → outputs. Records that overtook their config wait in ``streams/parking.py``; bad input
  and bugs go to ``streams/dead_letters.py``; table writes become durable in the order
  ``streams/checkpoint.py`` owns.
* ``sink`` (``streams/sink_stage.py``, own consumer, batched): row operations → PostgreSQL
  → granted send commands on ``dispatch``, refused claims back to the processor,
  ``message-events``.
* ``sender`` (``streams/sender_stage.py``, own consumer, batched): ``dispatch`` → ``Sender``
  (ledger + provider) → ``dispatch-results``.
* a timer on every worker ticks each partition it owns, so due steps fire by themselves.

Error policy of the processor (the one ``except Exception`` here): bad input
(``RecordError``, ``CodecError``) is dead-lettered with its reason; config not seen yet is
parked; anything else is a bug, dead-lettered as ``bug`` with the input that met it, so no
record is lost and no partition is stuck. PostgreSQL being away is waited out
(``streams/retrying.py``), never dead-lettered.

Every input topic is keyed by ``tenant_key`` (config: partition of the tenant) and has the
same partition count, so one tenant's state lives on one partition (docs/topics.md).
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

import faust
import orjson
from faust.exceptions import PartitionsMismatch
from psycopg_pool import AsyncConnectionPool

from dripdrop_core.circuit import CircuitPolicy
from dripdrop_core.errors import RecordError
from dripdrop_core.policy import OutboundPolicy
from streams import metrics, topics
from streams.app import CommitHookProducer
from streams.batch_consumer import BatchConsumer
from streams.changelog import ChangelogTable, changelog_tables
from streams.checkpoint import Checkpoint
from streams.clock import Clock
from streams.codecs import CodecError, Codecs, partition_for
from streams.dead_letters import DeadLetters, Place
from streams.kafka import PublishError, StreamPublisher
from streams.parking import Parked, Parking
from streams.processor import commands, config_changes, health_signals, inbound
from streams.processor.flow import Processor
from streams.processor.pinning import ConfigNotReadyError
from streams.processor.runtime import Outputs, stable_id
from streams.processor.store import TABLES
from streams.retrying import StopRetrying, until_written
from streams.sender_stage import SenderStage
from streams.settings import Settings
from streams.sink_stage import SinkStage, encode

log = logging.getLogger("dripdrop.pipeline")
REDRIVE_REAL_SECONDS = 300.0
"""A send command unanswered this long (real time) is re-issued (``processor.redrive.Redrive``).

Long, because in steady operation nothing is lost and a late result only means a backlog
(re-issuing then would add duplicates to it). Losses happen when a worker dies or stops,
and the sends that were in flight then are re-issued after ARRIVAL_REDRIVE_REAL_SECONDS."""
RETRY_REAL_SECONDS = 5.0
"""First wait (real time) before a send the provider could not take is tried again; it
doubles per consecutive retry up to 64× (``dripdrop_core.retry_delay``)."""
ARRIVAL_REDRIVE_REAL_SECONDS = 15.0
"""Sends found in flight when a partition arrives in this process are re-issued this soon."""
SENDER_BATCH = 256
"""Send commands per sender batch (the sender runs up to 8 sends at a time within one)."""
SINK_RECORD_BYTES = 256 * 1024
"""Row operations per sink record stop growing past this size (the broker's limit is 1 MB)."""
SWEEP_REAL_SECONDS = 600.0
STUCK_SECONDS = 10.0
"""How long the processor may sit idle while the consumer has delivered records it never
got, before the worker stops (``Pipeline._check_delivered``)."""
"""Besides when a partition arrives, how often its enrollments are swept (a backstop)."""
TICK_IN_FLIGHT_SECONDS = 2.0
"""A partition gets no new tick while its last one (sent less than this ago) is unprocessed:
a busy processor must not fall further behind on a queue of ticks. Ticks carry ``now`` and
``on_tick`` fires everything due by then, so a skipped tick loses nothing. The bound lets a
tick lost to a rebalance (processed by another worker, or never) stop blocking."""


EXIT_UNCOMMITTED = 75
"""Exit status of a worker that stopped during a PostgreSQL outage without committing."""


EXIT_SKIPPED_INPUT = 76
"""Exit status of a worker that found input records skipped (``_check_continuity``)."""


def _exit_uncommitted(message: Place) -> None:
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


def _reason(exc: RecordError | CodecError) -> str:
    """The dead-letter reason of bad input: a codec's specific reason, else the code."""
    return str(getattr(exc, "reason", None) or exc.code)


def undelivered(
    read_offsets: Iterable[tuple[str, int, int | None]],
    processed: Mapping[tuple[str, int], int],
    committed: Mapping[tuple[str, int], int | None],
    prefix: str,
) -> tuple[str, int, int, int] | None:
    """The first input partition whose consumer read offset is ahead of what the processor
    handled: ``(topic, partition, read, processed)``, or ``None``.

    ``processed`` is the last offset processed per partition since the rebalance; a
    partition with none is compared with its committed offset (the seek put the read
    offset there). Compacted topics and ``ticks`` are not checked (``_check_delivered``).
    """
    for topic, partition, read in read_offsets:
        name = topic.removeprefix(prefix)
        if (
            read is None
            or name not in topics.PROCESSOR_INPUTS
            or name in topics.COMPACTED
            or name == "ticks"
        ):
            continue
        last = processed.get((topic, partition))
        baseline = last if last is not None else committed.get((topic, partition))
        if baseline is not None and read > baseline:
            return topic, partition, read, baseline
    return None


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
            correlate_participants=settings.correlate_participants,
        )
        self.topics = {
            name: app.topic(settings.topic(name), key_serializer="raw", value_serializer="raw")
            for name in topics.ALL
            if name != "ping"  # the diagnostic agent's (streams/agents/ping.py)
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
        self._ticks_in_flight: dict[int, float] = {}
        self._last_sweep: dict[int, float] = {}  # partition → when swept in this process
        self._resynced: set[int] = set()
        self._last_offset: dict[tuple[str, int], int] = {}
        self._busy = False
        self._idle_since = time.monotonic()
        """The offset of the last event processed per input partition (this process)."""
        self.dead_letters = DeadLetters(self.publisher, self.codecs, settings.topic("dead-letter"))
        self.parking = Parking(self.processor.index, settings.topic)
        stopping = self._stopping
        self.sink = SinkStage(
            settings, self.codecs, self.publisher, self.dead_letters, self.pool, stopping
        )
        self.sender = SenderStage(
            settings, self.codecs, self.publisher, self.dead_letters, self.pool, stopping, clock
        )
        self.hooks: list[Callable[[str, float], None]] = []
        """``hook(topic, seconds)`` after each processed record (the metrics time them)."""
        # The stateless stages read with their own consumers (streams/batch_consumer.py).
        self.consumers = [
            BatchConsumer(
                settings,
                topic="sink",
                role="sink",
                batch_size=settings.sink_batch_size,
                batch_seconds=settings.sink_batch_seconds,
                handle=self.sink.handle,
                on_failure=self._stage_failed,
                seed_group=settings.app_id,  # the Faust group read it before
            ),
            BatchConsumer(
                settings,
                topic="dispatch",
                role="sender",
                batch_size=SENDER_BATCH,
                batch_seconds=0.05,
                handle=self.sender.handle,
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
        self._last_offset.clear()  # a partition back from another worker continues ahead
        self._idle_since = time.monotonic()

    def _chain_flush(self) -> None:
        """Make Faust's pre-commit flush run the checkpoint's commit (``CommitHookProducer``:
        the commit order is ``Checkpoint.commit``'s, see streams/checkpoint.py)."""
        producer = self.app.producer
        if not isinstance(producer, CommitHookProducer):
            raise TypeError("the pipeline needs an app from streams.app.create_app")
        producer.before_commit = self.checkpoint.commit

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
        app, by_name = self.app, self.topics
        source = app.topic(
            *(self.settings.topic(n) for n in topics.PROCESSOR_INPUTS),
            key_serializer="raw",
            value_serializer="raw",
        )

        @app.agent(source, name="processor")
        async def processor(stream: faust.StreamT[bytes]) -> None:
            async for event in stream.events():
                try:
                    await self.process(event)
                except StopRetrying:
                    _exit_uncommitted(Place.of_event(event.message))

        @app.task  # type: ignore[untyped-decorator]  # Faust's decorators are untyped
        async def start_stages() -> None:  # after table recovery, like the agents
            for consumer in self.consumers:
                await consumer.start()

        async def stop_stages(sender: Any, **_: Any) -> None:
            for consumer in self.consumers:
                await consumer.stop()
            await self.sender.close()  # the providers' connections (SMTP sessions, HTTP)

        app.on_before_shutdown.connect(stop_stages)  # type: ignore[arg-type]

        @app.timer(self.settings.tick_interval_seconds)  # type: ignore[untyped-decorator]
        async def tick() -> None:
            now = self.clock.now()
            ticks = self.settings.topic("ticks")
            sent_at = time.monotonic()
            self._check_delivered()
            for tp in app.assignor.assigned_actives():
                if tp.topic == ticks:
                    last = self._ticks_in_flight.get(tp.partition)
                    if last is not None and sent_at - last < TICK_IN_FLIGHT_SECONDS:
                        continue
                    self._ticks_in_flight[tp.partition] = sent_at
                    await by_name["ticks"].send(
                        key=b"tick", value=encode({"now": now}), partition=tp.partition
                    )

    # ------------------------------------------------------------ processor

    async def process(self, event: faust.EventT[bytes]) -> None:
        """Decode, decide, publish. Nothing escapes: bad input goes to the dead letters."""
        started = time.perf_counter()
        place = Place.of_event(event.message)
        name = place.topic.removeprefix(self.settings.topic_prefix)
        self._check_continuity(place, name)
        self._busy = True
        try:
            # An event's table writes and its outputs enter one epoch: no commit between.
            async with self.checkpoint.processing():
                await self._process(name, place)
        finally:
            self._busy = False
            if name != "ticks":  # the worker's own ticks flow even when the inputs stall
                self._idle_since = time.monotonic()
            for hook in self.hooks:
                hook(name, time.perf_counter() - started)

    def _check_delivered(self) -> None:
        """The other face of ``_check_continuity``: when the skipped records are the last
        ones of a partition, no later record arrives to show the jump. The consumer's read
        offset (the last record it handed to the processor's stream) is then ahead of the
        last one processed while the processor has had no input but its own ticks (one
        queue feeds the processor in order: a record delivered before those ticks would
        have come first). Seen so after a crash at ``checkpoint.before_store`` (583 of
        1,900 suppressions and the 100 removals behind them never applied). Held for
        ``STUCK_SECONDS``: stop uncommitted, as there."""
        consumer: Any = self.app.consumer
        idle = time.monotonic() - self._idle_since
        if self._busy or idle < STUCK_SECONDS:
            return
        found = undelivered(
            ((tp.topic, tp.partition, read) for tp, read in list(consumer._read_offset.items())),  # noqa: SLF001 - faust 0.15
            self._last_offset,
            {(tp.topic, tp.partition): o for tp, o in consumer._committed_offset.items()},  # noqa: SLF001
            self.settings.topic_prefix,
        )
        if found is None:
            return
        topic, partition, read, baseline = found
        log.critical(
            "input records skipped by the consumer: %s[%s] delivered up to offset %s,"
            " processed up to %s, idle for %.0f s; exiting without committing so the next"
            " start reads them (faust-streaming issue #596)",
            topic,
            partition,
            read,
            baseline,
            idle,
        )
        logging.shutdown()
        os._exit(EXIT_SKIPPED_INPUT)

    def _check_continuity(self, place: Place, name: str) -> None:
        """Records of an input partition arrive one after the other; a forward jump means
        the consumer skipped some: stop uncommitted (``EXIT_SKIPPED_INPUT``).

        faust-streaming 0.15 can skip records at the end of a table recovery: records of a
        stream partition fetched after the partition is resumed but before the seek to its
        committed offset are delivered, the seek rewinds, the records still in the
        stream's queue are cleared, and the read offset they left makes the consumer drop
        the same records when they come again (faust-streaming issue #596). Measured after
        a crash at ``checkpoint.before_store``: 358 to 511 of 1,900 suppressions never
        applied in 3 of 5 runs, Faust's committed offset stuck before the hole. Processing
        on would apply later records before them; the next start finds the tables
        recovered and takes the path without the race. A compacted topic has true holes;
        a jump back is a replay (every write is idempotent)."""
        if name in topics.COMPACTED:
            return
        key = (place.topic, place.partition)
        last = self._last_offset.get(key)
        self._last_offset[key] = place.offset
        if last is None or place.offset <= last + 1:
            return
        log.critical(
            "input records skipped by the consumer: %s[%s] went from offset %s to %s;"
            " exiting without committing so the next start reads them (faust-streaming"
            " issue #596)",
            place.topic,
            place.partition,
            last,
            place.offset,
        )
        logging.shutdown()
        os._exit(EXIT_SKIPPED_INPUT)

    async def _process(self, name: str, place: Place) -> None:
        partition = place.partition
        try:
            if partition not in self._resynced:
                await self.resync_counters(partition)
            if name == "ticks":
                self._ticks_in_flight.pop(partition, None)
                await self.parking.retry(partition, self._retry_parked)
            out = self._dispatch_input(name, place.value, partition)
        except ConfigNotReadyError as exc:
            if not self.parking.park(partition, name, place, str(exc)):
                await self.dead_letters.send(place, exc.code, f"parking full: {exc}")
            return
        except (RecordError, CodecError) as exc:
            await self.dead_letters.send(place, _reason(exc), str(exc))
            return
        except PartitionsMismatch:
            # The worker's topics disagree with its tables (a changelog topic deleted or
            # recreated with another partition count): no event can be processed, and
            # dead-lettering each as a bug would commit it and lose it. Stop, commit nothing.
            log.critical("topics and tables disagree:\n%s", traceback.format_exc())
            _exit_uncommitted(place)
        except Exception as exc:  # noqa: BLE001 - the processor's error policy: a bug is
            # dead-lettered with the input that met it, never a lost record or a stuck partition
            await self._bug(place, exc)
            return
        try:
            await self.publish(out, place)
        except Exception as exc:  # noqa: BLE001 - e.g. a record librdkafka refuses
            await self._bug(place, exc)

    async def _retry_parked(self, record: Parked, last: bool) -> bool:
        """``Parking.retry``'s attempt: process a parked record, or report it still waits."""
        place = record.place
        try:
            out = self._dispatch_input(record.name, place.value, place.partition)
        except ConfigNotReadyError as exc:
            if not last:
                return False
            await self.dead_letters.send(place, exc.code, str(exc))
            return True
        except (RecordError, CodecError) as exc:
            await self.dead_letters.send(place, _reason(exc), str(exc))
            return True
        except Exception as exc:  # noqa: BLE001 - a bug must not block the partition's ticks
            await self._bug(place, exc)
            return True
        await self.publish(out, place)
        return True

    async def _bug(self, place: Place, exc: Exception) -> None:
        log.error(
            "bug processing %s[%s]@%s: %s",
            place.topic,
            place.partition,
            place.offset,
            traceback.format_exc(),
        )
        await self.dead_letters.send(place, "bug", f"{type(exc).__name__}: {exc}")

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
        rows = await until_written("counter resync", read, stopping=self._stopping)
        counters = {(r[0], r[1]): (int(r[2]), r[3]) for r in rows}
        self.processor.resync_adapters(partition, counters, self.clock.now())
        self._resynced.add(partition)

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
            "enrollments": commands.on_enrollment_command,
            "inbound-messages": inbound.on_inbound,
            "health-signals": health_signals.on_health_signal,
            "config": config_changes.on_config,
            "dispatch-results": lambda proc, rec, n, part: proc.on_result(rec, n, part),
        }[name]
        with p.event(partition):
            return handler(p, record, now, partition)

    async def publish(self, out: Outputs, place: Place) -> None:
        """An event's outputs: its dead letters (with the input that caused them), the
        urgent rows, the sink record, telemetry."""
        partition = place.partition
        for reason, detail in out.dead_letters:
            log.error("dead letter from processing (%s): %s", reason, detail)
            await self.dead_letters.send(place, reason, detail)
        metrics.observe(out)  # Prometheus counters from telemetry (streams/metrics.py)
        if out.urgent:
            await self.sink.write_urgent(out.urgent, partition)
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
        for op in (encode(op) for op in ops):
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
            place = Place.produced(topic, partition, value[:100_000])
            await self.dead_letters.send(place, "too_large", detail)

    def _stopping(self) -> bool:
        return bool(self.app.should_stop)

    async def _stage_failed(self, exc: BaseException) -> None:
        await self.app.crash(exc)
