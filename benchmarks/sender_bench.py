"""Sender throughput vs a bare aiosmtplib client, against the same aiosmtpd sink (issue 5).

Run: ``.venv/bin/python -m benchmarks.sender_bench [--messages 600] [--runs 3] [--batch 64]``.

The sink runs in its own process (as a real SMTP server would), so it does not share the
client's GIL. Each contender gets one untimed pass first (the bare client 2 × messages, the
sender one run): a fresh sink process is markedly slower for its first thousand messages or
so, and the sender's first run in a process was consistently slower than its later ones
(about 0.65 of the bare client against 0.85, even with the PostgreSQL pool already warm;
cause not pinned down), a start-up cost a worker pays once. Each run then times, back to back
against that one sink: the bare client over 1 connection, over 8 connections, the sender,
and the bare client over 8 connections again; the run's bare 8-connection figure is the
mean of the two that bracket the sender, so a machine that gets busier or quieter during
the run moves both sides of the ratio alike.

The sender is driven the way the ``sender`` agent drives it (``Pipeline.deliver``): batches
of ``--batch`` commands as ``take()`` hands them over under load, a ``Sender`` built per
batch with its defaults, ``deliver`` then ``finished_results`` for the duplicates, and one
PostgreSQL pool for the whole process (``min_size=1, max_size=4``, as the worker's). SMTP
connections are not kept warm: each run opens its own, inside the timed region, for the
bare client and for the sender alike. Ledger rows are inserted before each timed sender run
(the stream sink inserts them in the pipeline); the timing covers claim → SMTP → outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import aiosmtplib
from psycopg_pool import AsyncConnectionPool

from dripdrop_core.models import Adapter
from streams.providers import OutboundEmail, ProviderRegistry
from streams.providers.smtp import build_message
from streams.sender import DEFAULT_CONCURRENCY, Sender
from streams.settings import Settings
from tests.integration.ledger_rows import LedgerTenant

CONNECTIONS = 8


def start_sink() -> tuple[subprocess.Popen[str], int]:
    """The aiosmtpd sink in a subprocess; returns it and its port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.mailsink"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def sample_email(index: int) -> OutboundEmail:
    return OutboundEmail(
        from_address="bench@dripdrop.test",
        recipient=f"prospect-{index}@example.test",
        subject=f"Hello {index}",
        body_text="Hi there,\nthis is step one.\n",
        headers={"Message-ID": f"<bench-{index}-{time.monotonic_ns()}@dripdrop.test>"},
    )


async def bare_client(port: int, messages: int, connections: int) -> float:
    """messages/s of plain aiosmtplib ``send_message`` over ``connections`` connections.

    The messages are built before the clock starts; only flattening and SMTP are timed.
    """
    prepared = [build_message(sample_email(i)) for i in range(messages)]
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for message in prepared:
        queue.put_nowait(message)

    async def worker() -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as client:
            while not queue.empty():
                await client.send_message(queue.get_nowait())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return messages / (time.perf_counter() - started)


async def deliver_like_the_agent(
    pool: AsyncConnectionPool[Any], registry: ProviderRegistry, adapter: Adapter, batch: list[Any]
) -> list[dict[str, Any]]:
    """What ``Pipeline.deliver`` does with one ``take()`` batch, minus Kafka."""
    sender = Sender(pool, lambda _: registry.provider_for(adapter))
    outcome = await sender.deliver(batch)
    return [*outcome.results, *await sender.finished_results(batch, outcome.duplicates)]


async def sender_run(
    settings: Settings, pool: AsyncConnectionPool[Any], port: int, messages: int, batch: int
) -> float:
    """messages/s of the sender end to end, ledger included, in the agent's batches."""
    config = {"host": "127.0.0.1", "port": port, "pool_size": CONNECTIONS}
    tenant = LedgerTenant(settings.database_url, config=config)
    commands = tenant.commands(messages)  # not timed: the stream sink inserts these
    adapter = Adapter(
        id=tenant.adapter_id, tenant_key=tenant.tenant_key, name="bench", config=config
    )
    registry = ProviderRegistry()  # fresh SMTP connections, opened inside the timing
    try:
        started = time.perf_counter()
        for start in range(0, messages, batch):
            results = await deliver_like_the_agent(
                pool, registry, adapter, commands[start : start + batch]
            )
            assert [r["status"] for r in results] == ["sent"] * len(results), results[:1]
        elapsed = time.perf_counter() - started
    finally:
        await registry.close()
    assert tenant.statuses() == {"sent": messages}
    return messages / elapsed


@dataclass(frozen=True)
class Round:
    one: float
    eight_before: float
    sender: float
    eight_after: float

    @property
    def eight(self) -> float:
        return (self.eight_before + self.eight_after) / 2

    @property
    def ratio(self) -> float:
        return self.sender / self.eight


async def main(args: argparse.Namespace) -> None:
    assert DEFAULT_CONCURRENCY == CONNECTIONS, "the agent's Sender runs 8 sends at a time"
    settings = Settings()
    n, batch = args.messages, args.batch
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        settings.database_url, min_size=1, max_size=4, open=False
    )
    await pool.open(wait=True)
    sink, port = start_sink()
    rounds: list[Round] = []
    try:
        # Untimed, one pass each: the sink (a fresh one is markedly slower for its first
        # thousand messages or so), then the sender's path and the PostgreSQL pool.
        await bare_client(port, 2 * n, CONNECTIONS)
        await sender_run(settings, pool, port, n, batch)
        for index in range(args.runs):
            one = await bare_client(port, n, 1)
            before = await bare_client(port, n, CONNECTIONS)
            sender = await sender_run(settings, pool, port, n, batch)
            after = await bare_client(port, n, CONNECTIONS)
            rounds.append(Round(one, before, sender, after))
            print(
                f"  run {index + 1}: bare 1 conn {one:4.0f}/s, bare {CONNECTIONS} conns"
                f" {before:4.0f}/s and {after:4.0f}/s, sender {sender:4.0f}/s,"
                f" ratio {rounds[-1].ratio:.2f}",
                flush=True,
            )
    finally:
        assert sink.stdin is not None
        sink.stdin.close()
        sink.wait(10)
        await pool.close()

    def median(values: list[float]) -> float:
        return statistics.median(values)

    one = median([r.one for r in rounds])
    eight = median([r.eight for r in rounds])
    sender = median([r.sender for r in rounds])
    print(f"aiosmtpd sink (subprocess), {n} messages per run, median of {args.runs} runs")
    print(f"  bare aiosmtplib, 1 connection:    {one:7.0f} messages/s")
    print(f"  bare aiosmtplib, {CONNECTIONS} connections:   {eight:7.0f} messages/s (run means)")
    print(f"  sender ({batch}/batch, as the agent):  {sender:7.0f} messages/s")
    print(f"  ratio sender / bare {CONNECTIONS} connections: {sender / eight:.2f}")
    print(f"  median of the per-run ratios:      {median([r.ratio for r in rounds]):.2f}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--batch", type=int, default=64, help="commands per batch (the agent's take(64))"
    )
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.uvloop:
        import uvloop

        uvloop.run(main(arguments))
    else:
        asyncio.run(main(arguments))
