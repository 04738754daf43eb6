"""``dripdrop pump``: read the inbound mailboxes of the adapters onto ``inbound-messages``.

A long-running process (one per deployment, or one per shard of the adapters); see
docs/inbound.md for the adapter config (``config.inbound.imap``) and the metrics.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Annotated

import typer
from prometheus_client import start_http_server

from streams.jsonlog import JsonFormatter
from streams.pump.metrics import PumpMetrics
from streams.pump.service import Pump
from streams.settings import Settings


def _shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    k, _, n = value.partition("/")
    if not (k.isdigit() and n.isdigit()) or int(n) < 1 or int(k) >= int(n):
        raise typer.BadParameter("K/N with 0 <= K < N, e.g. 0/2", param_hint="--shard")
    return int(k), int(n)


def pump(
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics here (default: none).")
    ] = None,
    adapter: Annotated[
        list[str] | None, typer.Option(help="Read only these adapter ids (repeatable).")
    ] = None,
    shard: Annotated[
        str | None, typer.Option(help="K/N: read the adapters of shard K of N processes.")
    ] = None,
    refresh_seconds: Annotated[
        float, typer.Option(min=0.1, help="How often adapters are re-read from PostgreSQL.")
    ] = 30.0,
    http_host: Annotated[
        str, typer.Option(help="Address of the push endpoint (Gmail Pub/Sub, Graph).")
    ] = "127.0.0.1",
    http_port: Annotated[
        int | None,
        typer.Option(help="Serve the push endpoint on this port (default: none, polling only)."),
    ] = None,
    sent_check_seconds: Annotated[
        float,
        typer.Option(
            min=0,
            help="How often each mailbox's Sent folder settles its ambiguous sends (0: never).",
        ),
    ] = 60.0,
    sent_grace_seconds: Annotated[
        float,
        typer.Option(
            min=0,
            help="An ambiguous send not in Sent after this long is re-issued once.",
        ),
    ] = 600.0,
) -> None:
    """Read inbound mailboxes (IMAP IDLE, Gmail API, Microsoft Graph) until SIGTERM/SIGINT.

    Every adapter with ``config.inbound.imap`` gets one supervised task per folder, one
    with ``config.inbound.gmail`` or ``config.inbound.graph`` one task per mailbox; a
    message is classified, produced, acknowledged by Kafka, and only then is the cursor
    (UIDVALIDITY + UID, historyId, delta link) saved in PostgreSQL. ``--http-port`` serves
    ``/gmail/push/{adapter_id}`` and ``/graph/notify/{adapter_id}`` (docs/inbound.md).
    An ambiguous send of a pumped adapter is looked up by its Message-ID in the mailbox's
    Sent folder: found, it is settled sent; not found after ``--sent-grace-seconds``, it is
    re-issued once (``dripdrop sends`` does the same by hand).
    """
    handler = logging.StreamHandler()
    if os.environ.get("DRIPDROP_LOG_FORMAT") == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.getLogger("aioimaplib").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # request lines carry tokens in URLs
    metrics = PumpMetrics()
    if metrics_port is not None:
        start_http_server(metrics_port, registry=metrics.registry)
    service = Pump(
        Settings(),
        metrics=metrics,
        only=frozenset(adapter or ()),
        shard=_shard(shard),
        refresh_seconds=refresh_seconds,
        http_host=http_host,
        http_port=http_port,
        sent_check_seconds=sent_check_seconds,
        sent_grace_seconds=sent_grace_seconds,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await service.run(stop)

    asyncio.run(main())
