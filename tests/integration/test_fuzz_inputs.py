"""Fuzz every input topic: random bytes, truncated Avro and schema-valid records with hostile
values (generated from the ``.avsc`` files), interleaved with valid enrollments.

Per topic a quarter of ``DRIPDROP_FUZZ_RECORDS`` (default 10,000 in ``make test``; ``make
fuzz`` runs 100,000 per topic) go to the world's tenant partition. Afterwards:

* the worker never crashed;
* every undecodable record (random bytes, truncated Avro) is on ``dead-letter`` with a
  reason and its original bytes, at its own topic/partition/offset;
* every schema-valid hostile record is on ``dead-letter`` with a reason too, or was taken
  as a command it is (counted and printed; none may touch another tenant);
* every valid enrollment between them got its PostgreSQL row;
* another tenant's rows are untouched (hostile records name its ids).
"""

from __future__ import annotations

import math
import os
import random
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro
import pytest

from streams.api import DripDrop
from streams.codecs import Codecs, partition_for
from streams.settings import Settings
from streams.topics import HOST_INPUTS
from tests.integration.robust_support import TopicReader, World, build_world, rows, wait_ready
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import WorkerProcess, producer, wait_for
from tests.integration.test_pipeline_dead_letter import enroll_record

TOPICS = HOST_INPUTS
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
RECORDS = int(os.environ.get("DRIPDROP_FUZZ_RECORDS", "10000"))
VALID_EVERY = 50


class Hostile:
    """Values of an Avro schema chosen to hurt: sizes, control characters, foreign ids,
    dates in year 9999, NaN and negative numbers, JSON that is not."""

    def __init__(self, rng: random.Random, foreign_ids: list[str], own_ids: list[str]) -> None:
        self.rng = rng
        self.strings = [
            "",
            " ",
            "\r\nBcc: victim@example.org",
            "a\x00b",
            "\x0b\x0c\x1c\u2028",
            "é" * 300,
            "💥" * 200,
            "{}",
            "[]",
            "null",
            '{"first_name": ',
            "not json",
            "9999-12-31T23:59:59Z",
            "Europe/Atlantis",
            "<>@",
            *foreign_ids,
            *own_ids,
            str(uuid.uuid4()),
        ]

    def value(self, schema: Any, *, budget: list[int]) -> Any:
        rng = self.rng
        if isinstance(schema, list):  # union
            branch = rng.choice(schema)
            return self.value(branch, budget=budget)
        if isinstance(schema, str):
            schema = {"type": schema}
        kind = schema["type"]
        if isinstance(kind, dict | list):
            return self.value(kind, budget=budget)
        if kind == "null":
            return None
        if kind == "record":
            return {f["name"]: self.value(f["type"], budget=budget) for f in schema["fields"]}
        if kind == "enum":
            return rng.choice(schema["symbols"])
        if kind == "array":
            return [self.value(schema["items"], budget=budget) for _ in range(rng.randint(0, 3))]
        if kind == "map":
            return {
                rng.choice(self.strings): self.value(schema["values"], budget=budget)
                for _ in range(rng.randint(0, 3))
            }
        if kind == "string":
            if budget[0] > 0 and rng.random() < 0.03:  # one huge value per record at most
                budget[0] -= 1
                return "A" * rng.randint(10_000, 300_000)
            return rng.choice(self.strings)
        if kind == "bytes":
            return rng.randbytes(rng.randint(0, 64))
        if kind == "boolean":
            return rng.random() < 0.5
        if kind in ("int", "long"):
            if schema.get("logicalType", "").startswith("timestamp"):
                return rng.choice([0, -1, 253_402_300_799_000, 1])
            top = 2**31 - 1 if kind == "int" else 2**62
            return rng.choice([-1, 0, top, -top])
        if kind in ("float", "double"):
            return rng.choice([math.nan, math.inf, -math.inf, -1.0, 1e308])
        raise AssertionError(f"no generator for {schema!r}")


def _world(dd: DripDrop, smtp: SmtpSink, tenant: str) -> World:
    return build_world(dd, smtp, tenant=tenant, caps=(100_000,), steps=1)


def _enroll(codecs: Codecs, world: World, i: int) -> bytes:
    record = enroll_record(world.tenant, world.sequence.id, f"valid{i}@{world.tenant}.example")
    record["subscriber_id"] = f"valid-{i}"
    return codecs.for_topic("enrollments").encode(record)


@pytest.mark.timeout(1800)
def test_fuzzed_inputs_are_dead_lettered_and_the_valid_ones_between_them_processed(
    settings: Settings,
    topics: Callable[..., list[str]],
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    topics()
    run = settings.model_copy(update={"tick_interval_seconds": 0.1})
    rng = random.Random(20261203)
    codecs = Codecs(run)
    tag = uuid.uuid4().hex[:6]
    with DripDrop(run) as dd:
        world = _world(dd, smtp, f"fuzz-{tag}")
        other = _world(dd, smtp, f"other-{tag}")
        worker = worker_factory(run)
        wait_ready(worker)
    foreign = [other.sequence.id, other.version.id, other.pool.id, other.adapters[0].id]
    own = [world.sequence.id, world.adapters[0].id, world.tenant, other.tenant]
    hostile = Hostile(rng, foreign, own)
    # The config topic is the authors' own: a change naming the world's ids (a delete of
    # its adapter, say) is a command, not an attack, and would rightly stop the valid
    # enrollments. Its hostile records name other tenants' and unknown ids only.
    config_hostile = Hostile(rng, foreign, [other.tenant])
    schemas = {t: fastavro.schema.load_schema(str(SCHEMAS / f"{t}.avsc")) for t in TOPICS}
    kafka = producer(run)
    placed: dict[tuple[str, int, int], tuple[str, bytes]] = {}  # (topic, p, offset) → kind
    partition = partition_for(world.tenant, run.partitions)

    def produce(topic: str, kind: str, value: bytes) -> None:
        def delivered(err: Any, msg: Any) -> None:
            assert err is None, err
            placed[(topic, msg.partition(), msg.offset())] = (kind, value)

        kafka.produce(
            run.topic(topic),
            key=world.tenant.encode(),
            value=value,
            partition=partition,
            on_delivery=delivered,
        )
        kafka.poll(0)

    valid = 0
    per_topic = RECORDS // len(TOPICS)
    for n in range(per_topic):
        for topic in TOPICS:
            roll = rng.random()
            if roll < 0.3:
                produce(topic, "random", rng.randbytes(rng.randint(0, 200)))
                continue
            fuzz = config_hostile if topic == "config" else hostile
            record = fuzz.value(schemas[topic], budget=[1])
            try:
                encoded = codecs.for_topic(topic).encode(record)
            except Exception:  # noqa: BLE001 - a value the schema itself refuses
                encoded = rng.randbytes(32)
            if roll < 0.5 and len(encoded) > 2:
                produce(topic, "truncated", encoded[: rng.randint(1, len(encoded) - 1)])
            elif len(encoded) < 900_000:
                produce(topic, "hostile", encoded)
        if n % VALID_EVERY == 0:
            produce("enrollments", "valid", _enroll(codecs, world, valid))
            valid += 1
        if n % 500 == 0:
            kafka.flush(30)
    assert kafka.flush(60) == 0
    kinds = Counter(kind for kind, _ in placed.values())
    print(f"produced {dict(kinds)} on {len(TOPICS)} topics")
    bad = {k: v for k, v in placed.items() if v[0] in ("random", "truncated")}

    reader = TopicReader(run, "dead-letter")
    try:
        letters: dict[tuple[str, int, int], dict[str, Any]] = {}

        def all_bad_dead_lettered() -> bool:
            assert worker.alive(), worker.log_tail()
            for r in reader.poll(1.0)[len(letters) :]:
                topic = r["source_topic"].removeprefix(run.topic_prefix)
                letters[(topic, r["partition"], r["offset"])] = r
            return all(k in letters for k in bad)

        wait_for(all_bad_dead_lettered, timeout=1200, interval=0.0, what="bad records lettered")

        def all_valid_rows() -> bool:
            assert worker.alive(), worker.log_tail()
            count: int = rows(
                run,
                "SELECT count(*) FROM dripdrop.enrollments WHERE tenant_key = %s"
                " AND subscriber_id LIKE 'valid-%%'",
                world.tenant,
            )[0][0]
            return valid == count

        wait_for(all_valid_rows, timeout=300, interval=1.0, what=f"{valid} valid enrollments' rows")
        for key in bad:
            letter = letters[key]
            assert letter["reason"], letter
            assert letter["value"] == placed[key][1], key
        hostile_keys = [k for k, v in placed.items() if v[0] == "hostile"]
        lettered = sum(1 for k in hostile_keys if k in letters)
        reasons = Counter(letters[k]["reason"] for k in letters)
        print(
            f"dead-lettered: {len(bad)}/{len(bad)} undecodable, {lettered}/{len(hostile_keys)}"
            f" hostile; reasons {dict(reasons.most_common(12))}"
        )
        assert all(letters[k]["reason"] for k in hostile_keys if k in letters)
        untouched = rows(
            run,
            "SELECT count(*) FROM dripdrop.enrollments WHERE tenant_key = %s",
            other.tenant,
        )[0][0]
        assert untouched == 0, "a record keyed to one tenant enrolled into another"
        assert worker.alive(), worker.log_tail()
    finally:
        reader.close()
