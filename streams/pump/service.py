"""The pump process: one supervised task per inbound-enabled adapter and folder.

Adapters come from ``dripdrop.channel_adapters`` (active, with ``config.inbound``) and
are re-read every ``refresh_seconds``: a new or changed adapter gets its tasks, a removed
one loses them. A malformed inbound config is logged and skipped; the other mailboxes go
on. Shards (``k/n``) split the adapters between pump processes by a stable hash.

Three kinds run side by side: ``inbound.imap`` (one ``ImapFolderPump`` per folder),
``inbound.gmail`` (``GmailPump``) and ``inbound.graph`` (``GraphPump``). With an HTTP
port the process also serves the push endpoint (``push.py``) that wakes the last two.
Each adapter also gets a ``SentCheck`` (``sent.py``) that settles its ambiguous sends
from the mailbox's Sent folder (the first inbound kind of the adapter is asked).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import logging
import threading
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine, create_engine

from streams.codecs import Codecs
from streams.kafka import KafkaPublisher
from streams.pump.apibase import ApiAdapter
from streams.pump.config import (
    GmailInbound,
    GraphInbound,
    ImapConfig,
    InboundAdapter,
    inbound_gmail,
    inbound_graph,
    inbound_imap,
)
from streams.pump.cursor import ApiCursorStore, CursorStore
from streams.pump.gmail import GmailPump
from streams.pump.graph import GraphPump
from streams.pump.imap import ImapFolderPump, PumpError, TokenSource
from streams.pump.metrics import PumpMetrics
from streams.pump.push import PushRoutes, http_server
from streams.pump.sent import GmailSent, GraphSent, ImapSent, SentCheck, SentLookup
from streams.sends import (
    AmbiguousSend,
    Resolution,
    Resolver,
    list_ambiguous_sends,
    waiting_reissues,
)
from streams.settings import Settings

log = logging.getLogger("dripdrop.pump")

Key = tuple[str, str, str]
"""(adapter_id, channel: ``imap:<folder>``, ``gmail``, ``graph`` or ``sent``, config
fingerprint)."""


class Wanted(BaseModel):
    """One task to run: the adapter and the inbound config of its kind."""

    adapter_id: str
    tenant_key: str
    config: ImapConfig | GmailInbound | GraphInbound
    folder: str = ""


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


def _token_source(config: ImapConfig | GmailInbound | GraphInbound) -> TokenSource | None:
    if isinstance(config, ImapConfig):
        if config.oauth2 is None:
            return None
        oauth = config.oauth2
        token_url, client_id, secret, refresh, scope = (
            oauth.token_url,
            oauth.client_id,
            oauth.client_secret,
            oauth.refresh_token,
            oauth.scope,
        )
    elif isinstance(config, GmailInbound):
        token_url, client_id, secret, refresh, scope = (
            config.token_url,
            config.client_id,
            config.client_secret,
            config.refresh_token,
            config.scope,
        )
    else:
        token_url, client_id, secret, refresh, scope = (
            config.resolved_token_url,
            config.client_id,
            config.client_secret,
            config.refresh_token,
            config.scope,
        )
    try:  # helper A's module (shared-interfaces.md); looked up at run time
        oauth_token = importlib.import_module("streams.providers.oauth").OAuth2Token
    except (ImportError, AttributeError):
        raise PumpError("oauth2 needs streams.providers.oauth.OAuth2Token") from None
    token = oauth_token(
        token_url=token_url,
        client_id=client_id,
        client_secret=secret,
        refresh_token=refresh,
        scope=scope,
    )
    source: TokenSource = token
    return source


class Pump:
    """Keeps one task per (adapter, IMAP folder) and per Gmail / Graph mailbox while it runs."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: PumpMetrics | None = None,
        only: frozenset[str] = frozenset(),
        shard: tuple[int, int] | None = None,
        refresh_seconds: float = 30.0,
        http_host: str = "127.0.0.1",
        http_port: int | None = None,
        sent_check_seconds: float = 60.0,
        sent_grace_seconds: float = 600.0,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or PumpMetrics()
        self.only = only
        self.shard = shard
        self.refresh_seconds = refresh_seconds
        self.codecs = Codecs(settings)
        self.store = CursorStore(settings.database_url)
        self.tasks: dict[Key, tuple[asyncio.Task[None], KafkaSink | None]] = {}
        self.sent_check_seconds = sent_check_seconds
        self.sent_grace = timedelta(seconds=sent_grace_seconds)
        self._engine: Engine | None = None
        self._resolver: Resolver | None = None
        self._publisher: KafkaPublisher | None = None
        self._settling = threading.Lock()
        self.invalid: set[tuple[str, str]] = set()
        self.http_host = http_host
        self.http_port = http_port
        self.push = PushRoutes(self.metrics)

    def wanted(self) -> dict[Key, Wanted]:
        """The (adapter, channel) pairs this process should read now."""
        wanted: dict[Key, Wanted] = {}
        for adapter_id, tenant_key, config in self.store.inbound_adapters():
            if (self.only and adapter_id not in self.only) or not in_shard(adapter_id, self.shard):
                continue
            found: list[ImapConfig | GmailInbound | GraphInbound] = []
            for kind, read in (
                ("imap", inbound_imap),
                ("gmail", inbound_gmail),
                ("graph", inbound_graph),
            ):
                try:
                    one = read(config)
                except ValidationError as exc:
                    if (adapter_id, kind) not in self.invalid:
                        fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
                        log.error(
                            "adapter %s: invalid inbound.%s config (%s)", adapter_id, kind, fields
                        )
                        self.invalid.add((adapter_id, kind))
                    continue
                self.invalid.discard((adapter_id, kind))
                if one is not None:
                    found.append(one)
            if found and self.sent_check_seconds > 0:
                first = found[0]
                fingerprint = hashlib.sha256(first.model_dump_json().encode()).hexdigest()[:16]
                wanted[(adapter_id, "sent", fingerprint)] = Wanted(
                    adapter_id=adapter_id, tenant_key=tenant_key, config=first
                )
            for cfg in found:
                fingerprint = hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:16]
                if isinstance(cfg, ImapConfig):
                    for folder in cfg.folders:
                        wanted[(adapter_id, f"imap:{folder}", fingerprint)] = Wanted(
                            adapter_id=adapter_id, tenant_key=tenant_key, config=cfg, folder=folder
                        )
                else:
                    kind = "gmail" if isinstance(cfg, GmailInbound) else "graph"
                    wanted[(adapter_id, kind, fingerprint)] = Wanted(
                        adapter_id=adapter_id, tenant_key=tenant_key, config=cfg
                    )
        return wanted

    def _start(self, key: Key, want: Wanted) -> None:
        try:
            token = _token_source(want.config)
        except PumpError as exc:
            log.error("adapter %s: %s", key[0], exc)
            return
        if key[1] == "sent":
            self._start_sent_check(key, want, token)
            return
        sink = KafkaSink(self.settings, self.codecs)
        cfg = want.config
        runner: ImapFolderPump | GmailPump | GraphPump
        if isinstance(cfg, ImapConfig):
            adapter = InboundAdapter(
                adapter_id=want.adapter_id, tenant_key=want.tenant_key, imap=cfg
            )
            runner = ImapFolderPump(
                adapter,
                want.folder,
                store=self.store,
                produce=sink.produce,
                flush=sink.flush,
                metrics=self.metrics,
                token=token,
            )
        else:
            assert token is not None  # the API kinds always authenticate with OAuth2
            identity = ApiAdapter(want.adapter_id, want.tenant_key)
            if isinstance(cfg, GmailInbound):
                runner = GmailPump(
                    identity,
                    cfg,
                    store=ApiCursorStore(self.store, "gmail"),
                    produce=sink.produce,
                    flush=sink.flush,
                    metrics=self.metrics,
                    token=token,
                )
                self.push.gmail[want.adapter_id] = runner
            else:
                runner = GraphPump(
                    identity,
                    cfg,
                    store=ApiCursorStore(self.store, "graph"),
                    produce=sink.produce,
                    flush=sink.flush,
                    metrics=self.metrics,
                    token=token,
                )
                self.push.graph[want.adapter_id] = runner
        task = asyncio.create_task(runner.run_forever(), name=f"pump:{key[0]}:{key[1]}")
        task.add_done_callback(lambda t: self._ended(key, t))
        self.tasks[key] = (task, sink)
        log.info("pump: reading adapter %s (%s)", key[0], key[1])

    def _start_sent_check(self, key: Key, want: Wanted, token: TokenSource | None) -> None:
        cfg = want.config
        lookup: SentLookup
        if isinstance(cfg, ImapConfig):
            lookup = ImapSent(cfg, token)
        else:
            assert token is not None  # the API kinds always authenticate with OAuth2
            lookup = (
                GmailSent(cfg, token) if isinstance(cfg, GmailInbound) else GraphSent(cfg, token)
            )
        check = SentCheck(
            want.adapter_id,
            lookup,
            pending=self._pending,
            waiting=self._waiting,
            settle=self._settle,
            grace=self.sent_grace,
            every=self.sent_check_seconds,
        )
        task = asyncio.create_task(check.run_forever(), name=f"pump:{key[0]}:sent")
        task.add_done_callback(lambda t: self._ended(key, t))
        self.tasks[key] = (task, None)

    def _db(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(self.settings.sqlalchemy_url, pool_pre_ping=True)
        return self._engine

    def _pending(self, adapter_id: str) -> list[AmbiguousSend]:
        return list_ambiguous_sends(self._db(), adapter_id=adapter_id, limit=100)

    def _waiting(self, adapter_id: str, before: datetime) -> list[tuple[str, str]]:
        return waiting_reissues(self._db(), adapter_id=adapter_id, before=before)

    def _settle(self, execution_id: str, tenant_key: str, resolution: Resolution) -> None:
        """``Resolver.resolve`` one at a time: its flush must see only its own records."""
        with self._settling:
            if self._resolver is None:
                publisher = self._publisher = KafkaPublisher(self.settings)
                self._resolver = Resolver(self._db(), lambda: publisher, self.codecs, self.settings)
            self._resolver.resolve(
                execution_id,
                tenant_key=tenant_key,
                resolution=resolution,
                by="sent_folder",
            )

    def _ended(self, key: Key, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("pump %s/%s stopped: %r", key[0], key[1], task.exception())

    async def _stop(self, key: Key) -> None:
        if key[1] == "gmail":
            self.push.gmail.pop(key[0], None)
        elif key[1] == "graph":
            self.push.graph.pop(key[0], None)
        task, sink = self.tasks.pop(key)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if sink is not None:
            sink.close()

    async def reconcile(self) -> None:
        """Start what is wanted and not running; stop what runs and is no longer wanted."""
        wanted = await asyncio.to_thread(self.wanted)
        for key in [k for k in self.tasks if k not in wanted]:
            await self._stop(key)
        for key, adapter in wanted.items():
            running = self.tasks.get(key)
            if running is None or running[0].done():
                if running is not None and (ended := self.tasks.pop(key)[1]) is not None:
                    ended.close()
                self._start(key, adapter)
        self.metrics.mailboxes.set(len(self.tasks))

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set: reconcile now, then every ``refresh_seconds``."""
        server = None
        if self.http_port is not None:
            server = http_server(self.push.app(), self.http_host, self.http_port)
            serving = asyncio.create_task(server.serve(), name="pump:http")
            log.info("pump: push endpoint on http://%s:%d", self.http_host, self.http_port)
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
            if server is not None:
                server.should_exit = True
                await asyncio.gather(serving, return_exceptions=True)
            for key in list(self.tasks):
                await self._stop(key)
            await asyncio.to_thread(self.store.close)
            if self._engine is not None:
                self._engine.dispose()
            if self._publisher is not None:
                self._publisher.close()
