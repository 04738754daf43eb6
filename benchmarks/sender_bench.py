"""Sender throughput vs a bare aiosmtplib client, against the same aiosmtpd sink (issue 5).

Run: ``.venv/bin/python -m benchmarks.sender_bench [--messages 300] [--runs 3] [--uvloop]``.
The sink runs in its own process (as a real SMTP server would), so it does not share the
client's GIL. Ledger rows are inserted before each timed Sender run; the timing covers
claim → SMTP → outcome transactions, in batches as the sender agent's ``take()`` gives them.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiosmtplib
from psycopg_pool import AsyncConnectionPool

from dripdrop_core.models import Adapter
from streams.providers import OutboundEmail, ProviderRegistry
from streams.providers.smtp import build_message
from streams.sender import Sender
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
    """messages/s of plain aiosmtplib ``send_message`` over ``connections`` connections."""
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


async def sender_run(settings: Settings, port: int, messages: int, batch: int) -> float:
    """messages/s of ``Sender.deliver_batch`` end to end, ledger included."""
    config = {"host": "127.0.0.1", "port": port, "pool_size": CONNECTIONS}
    tenant = LedgerTenant(settings.database_url, config=config)
    commands = tenant.commands(messages)  # not timed: the stream sink inserts these
    adapter = Adapter(
        id=tenant.adapter_id, tenant_key=tenant.tenant_key, name="bench", config=config
    )
    registry = ProviderRegistry()
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        settings.database_url, min_size=2, max_size=4, open=False
    )
    await pool.open()
    sender = Sender(pool, lambda _: registry.provider_for(adapter), concurrency=CONNECTIONS)
    try:
        started = time.perf_counter()
        for start in range(0, messages, batch):
            results = await sender.deliver_batch(commands[start : start + batch])
            assert all(r["status"] == "sent" for r in results), results[:1]
        elapsed = time.perf_counter() - started
    finally:
        await registry.close()
        await pool.close()
    assert tenant.statuses() == {"sent": messages}
    return messages / elapsed


async def median_of(runs: int, measure: Callable[[], Awaitable[float]]) -> float:
    return statistics.median([await measure() for _ in range(runs)])


async def main(args: argparse.Namespace) -> None:
    settings = Settings()
    sink, port = start_sink()
    try:
        n, runs = args.messages, args.runs
        one = await median_of(runs, lambda: bare_client(port, n, 1))
        eight = await median_of(runs, lambda: bare_client(port, n, CONNECTIONS))
        sender = await median_of(runs, lambda: sender_run(settings, port, n, args.batch))
    finally:
        assert sink.stdin is not None
        sink.stdin.close()
        sink.wait(10)
    print(f"aiosmtpd sink (subprocess), {n} messages per run, median of {runs} runs")
    print(f"  bare aiosmtplib, 1 connection:    {one:7.0f} messages/s")
    print(f"  bare aiosmtplib, {CONNECTIONS} connections:   {eight:7.0f} messages/s")
    print(f"  Sender.deliver_batch ({args.batch}/batch): {sender:7.0f} messages/s")
    print(f"  ratio sender / bare {CONNECTIONS} connections: {sender / eight:.2f}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.uvloop:
        import uvloop

        uvloop.run(main(arguments))
    else:
        asyncio.run(main(arguments))
