"""The pump process: one supervised task per inbound-enabled adapter and folder.

Adapters come from ``dripdrop.channel_adapters`` (active, with ``config.inbound``) and
are re-read every ``refresh_seconds``: a new or changed adapter gets its tasks, a removed
one loses them. A malformed inbound config is logged and skipped; the other mailboxes go
on. Shards (``k/n``) split the adapters between pump processes by a stable hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import logging
from typing import Any

from pydantic import ValidationError

from streams.codecs import Codecs
from streams.kafka import KafkaPublisher
from streams.pump.config import InboundAdapter, inbound_imap
from streams.pump.cursor import CursorStore
from streams.pump.imap import ImapFolderPump, PumpError, TokenSource
from streams.pump.metrics import PumpMetrics
from streams.settings import Settings

log = logging.getLogger("dripdrop.pump")

Key = tuple[str, str, str]
"""(adapter_id, folder, fingerprint of the adapter's inbound config)."""


class KafkaSink:
    """Produce records of one folder and wait for their acknowledgement (``acks=all``)."""

    def __init__(self, settings: Settings, codecs: Codecs) -> None:
        self.settings = settings
        self.codecs = codecs
        self.publisher = KafkaPublisher(settings)

    def produce(self, topic: str, key: str, record: dict[str, Any]) -> None:
        value = self.codecs.for_topic(topic).encode(record)
        self.publisher.produce(self.settings.topic(topic), key=key, value=value)

    async def flush(self) -> None:
        await asyncio.to_thread(self.publisher.flush)

    def close(self) -> None:
        self.publisher.close()


def in_shard(adapter_id: str, shard: tuple[int, int] | None) -> bool:
    """Stable split of adapters between ``n`` pump processes (``k`` counts from 0)."""
    if shard is None:
        return True
    k, n = shard
    return int(hashlib.sha256(adapter_id.encode()).hexdigest(), 16) % n == k


def _token_source(adapter: InboundAdapter) -> TokenSource | None:
    oauth = adapter.imap.oauth2
    if oauth is None:
        return None
    try:  # helper A's module (shared-interfaces.md); looked up at run time
        oauth_token = importlib.import_module("streams.providers.oauth").OAuth2Token
    except (ImportError, AttributeError):
        raise PumpError("oauth2 needs streams.providers.oauth.OAuth2Token") from None
    token = oauth_token(
        token_url=oauth.token_url,
        client_id=oauth.client_id,
        client_secret=oauth.client_secret,
        refresh_token=oauth.refresh_token,
        scope=oauth.scope,
    )
    source: TokenSource = token
    return source


class Pump:
    """Keeps one ``ImapFolderPump`` task per (adapter, folder) while it runs."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: PumpMetrics | None = None,
        only: frozenset[str] = frozenset(),
        shard: tuple[int, int] | None = None,
        refresh_seconds: float = 30.0,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or PumpMetrics()
        self.only = only
        self.shard = shard
        self.refresh_seconds = refresh_seconds
        self.codecs = Codecs(settings)
        self.store = CursorStore(settings.database_url)
        self.tasks: dict[Key, tuple[asyncio.Task[None], KafkaSink]] = {}
        self.invalid: set[str] = set()

    def wanted(self) -> dict[Key, InboundAdapter]:
        """The (adapter, folder) pairs this process should read now."""
        wanted: dict[Key, InboundAdapter] = {}
        for adapter_id, tenant_key, config in self.store.inbound_adapters():
            if (self.only and adapter_id not in self.only) or not in_shard(adapter_id, self.shard):
                continue
            try:
                imap = inbound_imap(config)
            except ValidationError as exc:
                if adapter_id not in self.invalid:
                    fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
                    log.error("adapter %s: invalid inbound.imap config (%s)", adapter_id, fields)
                    self.invalid.add(adapter_id)
                continue
            self.invalid.discard(adapter_id)
            if imap is None:
                continue
            adapter = InboundAdapter(adapter_id=adapter_id, tenant_key=tenant_key, imap=imap)
            fingerprint = hashlib.sha256(imap.model_dump_json().encode()).hexdigest()[:16]
            for folder in imap.folders:
                wanted[(adapter_id, folder, fingerprint)] = adapter
        return wanted

    def _start(self, key: Key, adapter: InboundAdapter) -> None:
        try:
            token = _token_source(adapter)
        except PumpError as exc:
            log.error("adapter %s: %s", key[0], exc)
            return
        sink = KafkaSink(self.settings, self.codecs)
        folder = ImapFolderPump(
            adapter,
            key[1],
            store=self.store,
            produce=sink.produce,
            flush=sink.flush,
            metrics=self.metrics,
            token=token,
        )
        task = asyncio.create_task(folder.run_forever(), name=f"pump:{key[0]}:{key[1]}")
        task.add_done_callback(lambda t: self._ended(key, t))
        self.tasks[key] = (task, sink)
        log.info("pump: reading adapter %s folder %s", key[0], key[1])

    def _ended(self, key: Key, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("pump %s/%s stopped: %r", key[0], key[1], task.exception())

    async def _stop(self, key: Key) -> None:
        task, sink = self.tasks.pop(key)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        sink.close()

    async def reconcile(self) -> None:
        """Start what is wanted and not running; stop what runs and is no longer wanted."""
        wanted = await asyncio.to_thread(self.wanted)
        for key in [k for k in self.tasks if k not in wanted]:
            await self._stop(key)
        for key, adapter in wanted.items():
            running = self.tasks.get(key)
            if running is None or running[0].done():
                if running is not None:
                    self.tasks.pop(key)[1].close()
                self._start(key, adapter)
        self.metrics.mailboxes.set(len(self.tasks))

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set: reconcile now, then every ``refresh_seconds``."""
        try:
            while not stop.is_set():
                try:
                    await self.reconcile()
                except Exception as exc:  # noqa: BLE001 - PostgreSQL away: keep the running tasks
                    log.warning("pump: cannot read adapters (%s); retrying", type(exc).__name__)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self.refresh_seconds)
                except TimeoutError:
                    pass
        finally:
            for key in list(self.tasks):
                await self._stop(key)
            await asyncio.to_thread(self.store.close)
