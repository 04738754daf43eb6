"""What one consumed record costs in Faust, with no work at all: the pipeline's floor.

Run: ``.venv/bin/python -m benchmarks.faust_floor [--records 150000] [--runs 3]``.

N small records (200 bytes, 8 partitions) are produced first. Then, in turn:

* **faust**: a Faust worker (same engine settings as ours: at-least-once, uvloop) whose only
  agent counts the records (``async for event in stream.events()``);
* **librdkafka**: a confluent-kafka ``Consumer`` fetching batches of 500, as
  ``streams/batch_consumer.py`` does, touching each record once.

Each prints records per second (first record → last) and the CPU seconds its process used
per record (user + system, start-up included, so slightly high). The pipeline's worker
consumes two records per enrollment through Faust (the enrollment and its send result,
both in the processor), which bounds its rate at floor / 2 on a free core before any work
is done (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streams.settings import Settings

VALUE = b"x" * 200


def produce(settings: Settings, topic: str, n: int) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    for future in admin.create_topics([NewTopic(topic, 8, 1)]).values():
        future.result()
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 20})
    for i in range(n):
        while True:
            try:
                producer.produce(topic, key=str(i % 64).encode(), value=VALUE)
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(60)


def drop(settings: Settings, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    for future in admin.delete_topics([topic]).values():
        future.result()


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_child(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(records/s, CPU seconds) of one child process that prints ``RATE <float>``."""
    before = cpu_of_children()
    out = subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    # Faust routes a worker's stdout through its logger: the line may carry a prefix.
    rates = re.findall(r"RATE ([0-9.]+)", out.stdout + out.stderr)
    if not rates:
        raise RuntimeError(f"{args[1]} printed no rate:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return float(rates[0]), cpu_of_children() - before


def faust_child(topic: str, n: int) -> None:
    """The Faust side (in a child: ``python -m benchmarks.faust_floor --child-faust``)."""
    os.environ.setdefault("FAUST_LOOP", "uvloop")
    import faust

    settings = Settings()
    app = faust.App(
        f"floor-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        datadir=f"/tmp/{topic}",  # removed by the parent
        autodiscover=False,
        topic_partitions=8,
        processing_guarantee="at_least_once",
        broker_commit_interval=0.5,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=True,
        web_enabled=False,
    )
    source = app.topic(topic, key_serializer="raw", value_serializer="raw")
    seen = {"n": 0, "t0": 0.0}

    @app.agent(source)
    async def count(stream: faust.StreamT[bytes]) -> None:
        async for _event in stream.events():
            if seen["n"] == 0:
                seen["t0"] = time.perf_counter()
            seen["n"] += 1
            if seen["n"] == n:
                print(f"RATE {n / (time.perf_counter() - seen['t0'])}", flush=True)
                os._exit(0)

    sys.argv = [sys.argv[0], "worker", "-l", "warn", "--without-web"]
    app.main()


def librdkafka_child(topic: str, n: int) -> None:
    settings = Settings()
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"floor-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.offset.store": False,
        }
    )
    consumer.subscribe([topic])
    seen, t0, size = 0, 0.0, 0
    while seen < n:
        batch = consumer.consume(500, 0.05)
        if batch and not seen:
            t0 = time.perf_counter()
        for message in batch:
            if message.error() is None:
                size += len(message.value() or b"")
                seen += 1
    print(f"RATE {n / (time.perf_counter() - t0)}", flush=True)
    consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Faust's per-record floor vs librdkafka")
    parser.add_argument("--records", type=int, default=150_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child-faust", nargs=2, metavar=("TOPIC", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--child-rdkafka", nargs=2, metavar=("TOPIC", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_faust:
        faust_child(args.child_faust[0], int(args.child_faust[1]))
        return
    if args.child_rdkafka:
        librdkafka_child(args.child_rdkafka[0], int(args.child_rdkafka[1]))
        return
    settings = Settings()
    n = args.records
    results: dict[str, list[tuple[float, float]]] = {"faust": [], "librdkafka": []}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for i in range(args.runs):
        topic = f"dripdrop-floor-{uuid.uuid4().hex[:8]}"
        produce(settings, topic, n)
        try:
            for name, flag in (("faust", "--child-faust"), ("librdkafka", "--child-rdkafka")):
                rate, cpu = run_child(["-m", "benchmarks.faust_floor", flag, topic, str(n)], env)
                results[name].append((rate, cpu))
                print(
                    f"run {i + 1} {name}: {rate:,.0f} records/s,"
                    f" {cpu / n * 1e6:.1f} µs CPU per record",
                    flush=True,
                )
        finally:
            drop(settings, topic)
            shutil.rmtree(f"/tmp/{topic}", ignore_errors=True)
    for name, got in results.items():
        rate = statistics.median(r for r, _ in got)
        cpu = statistics.median(c for _, c in got) / n * 1e6
        print(f"median {name}: {rate:,.0f} records/s, {cpu:.1f} µs CPU per record")
    print(
        "pipeline floor (2 Faust records per enrollment, no work): "
        f"{statistics.median(r for r, _ in results['faust']) / 2:,.0f} enrollments/s"
    )


if __name__ == "__main__":
    main()
