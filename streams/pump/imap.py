"""One IMAP folder onto ``inbound-messages``: IDLE (RFC 2177) or polling, UID cursor.

A session: connect (implicit TLS, the test CA or the system's), log in (password or
XOAUTH2, resolved from references at each connect so rotation needs no restart), SELECT
the folder, reconcile the cursor with the folder's UIDVALIDITY, then repeat: read every
UID above the cursor in batches, classify each message in the core, produce the
records, wait for Kafka's acknowledgement, save the cursor (and the produced
Message-IDs) in PostgreSQL; then IDLE until the server reports a change (or poll when
the server has no IDLE or the adapter says so). Any failure ends the session; the
supervisor (``run_forever``) reconnects with jittered exponential back-off.

The order "ack, then cursor" is the durability rule: a kill between the two re-reads
the batch on restart (the processor's (tenant, message id) dedupe absorbs the copy);
a cursor is never ahead of what Kafka holds, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import aioimaplib
import orjson
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from dripdrop_core.classify import classify_mime, parse_mail
from streams import crashpoints
from streams.codecs import CodecError
from streams.pump.config import ImapConfig, InboundAdapter
from streams.pump.cursor import CursorStore
from streams.pump.metrics import PumpMetrics
from streams.secrets import SecretError, resolve_secret

log = logging.getLogger("dripdrop.pump.imap")

BATCH = 25
"""Messages per FETCH and per Kafka flush: one acknowledgement wait covers a batch."""

_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_UIDNEXT = re.compile(rb"\[UIDNEXT (\d+)\]")
_FETCH_UID = re.compile(rb"\bUID (\d+)")
_FETCH_DATE = re.compile(rb'INTERNALDATE "([^"]+)"')
_FETCH_START = re.compile(rb"^\d+ FETCH \(")


class PumpError(Exception):
    """A session cannot go on (refused login, missing folder, broken answer): reconnect."""


@dataclass(frozen=True, slots=True)
class Fetched:
    uid: int
    internal_date: datetime | None
    raw: bytes


class TokenSource(Protocol):
    """``streams.providers.oauth.OAuth2Token``: a cached access token, refreshed on demand."""

    async def access_token(self) -> str: ...

    def invalidate(self) -> None: ...


class AdapterIdentity(Protocol):
    """What a record needs of its adapter (``InboundAdapter``, or a Gmail/Graph pump's)."""

    @property
    def adapter_id(self) -> str: ...

    @property
    def tenant_key(self) -> str: ...


Produce = Callable[[str, str, dict[str, Any]], None]
"""``(topic, key, record)``: hands one record to the producer (no wait)."""
Flush = Callable[[], Awaitable[None]]
"""Waits until Kafka acknowledged everything produced so far; raises if it did not."""


def _imap_date(raw: bytes) -> datetime | None:
    try:
        return datetime.strptime(raw.decode(), "%d-%b-%Y %H:%M:%S %z").astimezone(UTC)
    except ValueError:
        return None


def parse_fetch(lines: Sequence[bytes | bytearray]) -> list[Fetched]:
    """The messages of a ``UID FETCH (UID INTERNALDATE BODY.PEEK[])`` answer (aioimaplib
    gives the literal as its own ``bytearray`` line right after the line announcing it)."""
    found: list[Fetched] = []
    i = 0
    while i < len(lines):
        line = bytes(lines[i])
        if _FETCH_START.match(line) and i + 1 < len(lines) and isinstance(lines[i + 1], bytearray):
            raw = bytes(lines[i + 1])
            tail = bytes(lines[i + 2]) if i + 2 < len(lines) else b""
            uid = _FETCH_UID.search(line) or _FETCH_UID.search(tail)
            when = _FETCH_DATE.search(line) or _FETCH_DATE.search(tail)
            if uid is not None:
                date = _imap_date(when.group(1)) if when else None
                found.append(Fetched(int(uid.group(1)), date, raw))
            i += 2
        else:
            i += 1
    return found


def message_id_of(raw: bytes, parsed: str | None) -> str:
    """The message's id, or a stable one from its bytes (no Message-ID: still deduped)."""
    return parsed or f"no-message-id-{hashlib.sha256(raw).hexdigest()[:32]}@dripdrop.invalid"


def inbound_record(adapter: AdapterIdentity, fetched: Fetched, now: datetime) -> dict[str, Any]:
    """The ``inbound-messages`` record of one fetched message, classified (SPEC §8)."""
    mail = parse_mail(fetched.raw)
    received = fetched.internal_date or mail.date or now
    found = classify_mime(fetched.raw, received=received.date())
    return {
        "event_id": str(uuid.uuid4()),
        "tenant_key": adapter.tenant_key,
        "occurred_at": now,
        "adapter_id": adapter.adapter_id,
        "message_id": message_id_of(fetched.raw, mail.message_id),
        "in_reply_to": mail.in_reply_to,
        "references": list(mail.references),
        "from": mail.from_,
        "to": mail.to,
        "subject": mail.subject,
        "body_text": mail.body_text,
        "body_html": mail.body_html,
        "headers": mail.headers,
        "received_at": received,
        "intent": str(found.intent),
        "intent_data": found.data,
    }


async def open_imap(
    cfg: ImapConfig, token: TokenSource | None, *, on_lost: Callable[[], None] | None = None
) -> aioimaplib.IMAP4:
    """A logged-in session: implicit TLS (the configured CA or the system's) or plain, then
    XOAUTH2 or the password resolved now (rotation needs no restart).

    Raises:
        PumpError: the secret cannot be resolved or the server refused the login.
    """
    if cfg.security == "tls":
        context = ssl.create_default_context(cafile=cfg.ca_file)
        client: aioimaplib.IMAP4 = aioimaplib.IMAP4_SSL(
            cfg.host, cfg.port, ssl_context=context, timeout=30
        )
    else:
        client = aioimaplib.IMAP4(cfg.host, cfg.port, timeout=30)
    if on_lost is not None:
        client.protocol.conn_lost_cb = lambda _exc: on_lost()
    await client.wait_hello_from_server()
    try:
        if cfg.oauth2 is not None:
            if token is None:
                raise PumpError("oauth2 configured but no token source")
            answer = await client.xoauth2(cfg.username, await token.access_token())
            if answer.result != "OK":
                token.invalidate()  # revoked or expired early: refresh next time
        else:
            answer = await client.login(cfg.username, resolve_secret(cfg.password))
    except SecretError as exc:
        await close_imap(client)
        raise PumpError(f"secret_unavailable: {exc}") from None
    if answer.result != "OK":
        await close_imap(client)
        raise PumpError(f"login refused: {_first(answer.lines)}")
    return client


async def close_imap(client: aioimaplib.IMAP4, *, lost: bool = False) -> None:
    """LOGOUT, bounded; a broken session has nothing to save, so failures are only logged."""
    try:
        if not lost and client.get_state() != "LOGOUT":
            await asyncio.wait_for(client.logout(), timeout=5)
    except Exception as exc:  # noqa: BLE001 - closing a broken session: nothing to save
        log.debug("logout failed: %s", type(exc).__name__)


async def uid_search(client: aioimaplib.IMAP4, *criteria: str) -> list[int]:
    """``UID SEARCH`` in the selected folder: the UIDs found, ascending."""
    answer = await client.uid_search(*criteria, charset=None)
    if answer.result != "OK":
        raise PumpError(f"UID SEARCH refused: {_first(answer.lines)}")
    numbers: list[int] = []
    for line in answer.lines[:-1]:  # the last line is the tagged "Search completed"
        numbers.extend(int(t) for t in bytes(line).split() if t.isdigit())
    return sorted(set(numbers))


class ImapFolderPump:
    """Reads one folder of one adapter's mailbox for as long as the pump runs."""

    def __init__(
        self,
        adapter: InboundAdapter,
        folder: str,
        *,
        store: CursorStore,
        produce: Produce,
        flush: Flush,
        metrics: PumpMetrics,
        token: TokenSource | None = None,
    ) -> None:
        self.adapter = adapter
        self.cfg: ImapConfig = adapter.imap
        self.folder = folder
        self.store = store
        self.produce = produce
        self.flush = flush
        self.metrics = metrics
        self.token = token
        self.labels = {"adapter_id": adapter.adapter_id, "folder": folder}
        self._lost = asyncio.Event()
        self.client: aioimaplib.IMAP4 | None = None

    # ------------------------------------------------------------ supervision

    async def run_forever(self) -> None:
        """Sessions until cancelled; each failure waits 0.5 s doubling to 60 s, jittered."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential_jitter(initial=0.5, max=60),
            before_sleep=self._before_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self.session()

    def _before_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self.metrics.reconnects.labels(**self.labels).inc()
        self.metrics.connected.labels(**self.labels).set(0)
        log.warning(
            "pump %s/%s: session ended (%s: %s); reconnecting",
            self.adapter.adapter_id,
            self.folder,
            type(exc).__name__,
            _safe(exc),
        )

    # ------------------------------------------------------------ one session

    async def session(self) -> None:
        client = await self._connect()
        try:
            uidvalidity, uidnext = await self._select(client)
            last = await self._reconcile(client, uidvalidity, uidnext)
            idle = self.cfg.idle and "IDLE" in client.protocol.capabilities
            self._telemetry(
                "pump.connected", folder=self.folder, uidvalidity=uidvalidity, idle=idle
            )
            self.metrics.connected.labels(**self.labels).set(1)
            log.info(
                "pump %s/%s: connected (%s)",
                self.adapter.adapter_id,
                self.folder,
                "IDLE" if idle else f"polling every {self.cfg.poll_seconds:g} s",
            )
            while True:
                last = await self.sync(client, uidvalidity, last)
                if idle:
                    await self._idle(client)
                else:
                    await self._wait(self.cfg.poll_seconds)
                    await client.noop()
        finally:
            self.metrics.connected.labels(**self.labels).set(0)
            await self._close(client)

    async def _connect(self) -> aioimaplib.IMAP4:
        self._lost = asyncio.Event()
        lost = self._lost
        self.client = await open_imap(self.cfg, self.token, on_lost=lambda: lost.set())
        return self.client

    async def _select(self, client: aioimaplib.IMAP4) -> tuple[int, int]:
        answer = await client.select(_quote(self.folder))
        if answer.result != "OK":
            raise PumpError(f"SELECT {self.folder!r} refused: {_first(answer.lines)}")
        joined = b"\n".join(bytes(line) for line in answer.lines)
        validity = _UIDVALIDITY.search(joined)
        if validity is None:
            raise PumpError("SELECT answer without UIDVALIDITY")
        nxt = _UIDNEXT.search(joined)
        return int(validity.group(1)), int(nxt.group(1)) if nxt else 0

    async def _reconcile(self, client: aioimaplib.IMAP4, uidvalidity: int, uidnext: int) -> int:
        """The UID to read above: the stored one, a fresh start, or a resync."""
        stored = await asyncio.to_thread(self.store.load, self.adapter.adapter_id, self.folder)
        if stored is not None and stored.uidvalidity == uidvalidity:
            return stored.last_uid
        if stored is None:
            # First sight: remember where we start before reading anything, so a crash
            # before the first save does not skip what arrived meanwhile.
            start = 0 if self.cfg.start == "all" else max(uidnext - 1, 0)
            await self._save(uidvalidity, start, ())
            return start
        # UIDVALIDITY changed (folder recreated, server migrated): old UIDs mean nothing.
        # Re-read the recent window; ids already produced are skipped, none is lost.
        since = stored.updated_at - timedelta(days=self.cfg.resync_days)
        self._telemetry(
            "pump.cursor_reset",
            folder=self.folder,
            old_uidvalidity=stored.uidvalidity,
            uidvalidity=uidvalidity,
            since=since.date().isoformat(),
        )
        log.warning(
            "pump %s/%s: UIDVALIDITY %d -> %d, resyncing since %s",
            self.adapter.adapter_id,
            self.folder,
            stored.uidvalidity,
            uidvalidity,
            since.date(),
        )
        uids = await self._search(client, "SINCE", since.strftime("%d-%b-%Y"))
        await self._save(uidvalidity, 0, ())
        last = 0
        for chunk in _chunks(uids, BATCH):
            last = await self._ingest(client, uidvalidity, chunk, last)
        if last == 0:
            last = max(uidnext - 1, 0)
            await self._save(uidvalidity, last, ())
        return last

    async def sync(self, client: aioimaplib.IMAP4, uidvalidity: int, last: int) -> int:
        """Read, produce, acknowledge and save every message above ``last``."""
        uids = [u for u in await self._search(client, "UID", f"{last + 1}:*") if u > last]
        self.metrics.backlog.labels(**self.labels).set(len(uids))
        for chunk in _chunks(uids, BATCH):
            last = await self._ingest(client, uidvalidity, chunk, last)
            self.metrics.backlog.labels(**self.labels).dec(len(chunk))
        self.metrics.last_success.labels(**self.labels).set(time.time())
        return last

    async def _ingest(
        self, client: aioimaplib.IMAP4, uidvalidity: int, uids: Sequence[int], last: int
    ) -> int:
        answer = await client.uid(
            "fetch", ",".join(map(str, uids)), "(UID INTERNALDATE BODY.PEEK[])"
        )
        if answer.result != "OK":
            raise PumpError(f"UID FETCH refused: {_first(answer.lines)}")
        fetched = sorted(parse_fetch(answer.lines), key=lambda f: f.uid)
        now = datetime.now(UTC)
        records = [inbound_record(self.adapter, f, now) for f in fetched]
        already = await asyncio.to_thread(
            self.store.seen, self.adapter.adapter_id, [r["message_id"] for r in records]
        )
        pairs = zip(fetched, records, strict=True)
        fresh = [(f, r) for f, r in pairs if r["message_id"] not in already]
        for fetched_one, record in list(fresh):
            try:
                self.produce("inbound-messages", self.adapter.tenant_key, record)
            except CodecError as exc:  # bad input: say so, skip it, keep the mailbox going
                log.error(
                    "pump %s/%s: UID %d not produced (%s)",
                    self.adapter.adapter_id,
                    self.folder,
                    fetched_one.uid,
                    exc.reason,
                )
                self.metrics.rejected.labels(**self.labels).inc()
                fresh.remove((fetched_one, record))
        await self.flush()  # Kafka acknowledged every record of the batch
        crashpoints.reached("pump.before_cursor_save")
        top = max([last, *(f.uid for f in fetched), *uids])
        await self._save(uidvalidity, top, [(r["message_id"], f.uid) for f, r in fresh])
        acked = time.time()
        for fetched_one, record in fresh:
            self.metrics.messages.labels(**self.labels, intent=record["intent"]).inc()
            if fetched_one.internal_date is not None:
                self.metrics.lag.labels(**self.labels).set(
                    max(acked - fetched_one.internal_date.timestamp(), 0.0)
                )
        if already:
            self.metrics.skipped.labels(**self.labels).inc(len(already))
        return top

    async def _save(self, uidvalidity: int, last: int, seen: Sequence[tuple[str, int]]) -> None:
        await asyncio.to_thread(
            self.store.save,
            self.adapter.adapter_id,
            self.adapter.tenant_key,
            self.folder,
            uidvalidity,
            last,
            seen,
        )

    async def _search(self, client: aioimaplib.IMAP4, *criteria: str) -> list[int]:
        return await uid_search(client, *criteria)

    async def _idle(self, client: aioimaplib.IMAP4) -> None:
        """Wait in IDLE until the server pushes anything (new mail, expunge, keepalive) or
        ``idle_seconds`` pass (RFC 2177: re-issue IDLE before the server's 30 min cut)."""
        idle = await client.idle_start(timeout=self.cfg.idle_seconds)
        push = asyncio.ensure_future(client.wait_server_push(timeout=self.cfg.idle_seconds + 30))
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait({push, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            push.cancel()
            lost.cancel()
        if self._lost.is_set():
            raise PumpError("connection lost during IDLE")
        client.idle_done()
        await asyncio.wait_for(idle, timeout=30)

    async def _wait(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._lost.wait(), timeout=seconds)
        except TimeoutError:
            return
        raise PumpError("connection lost")

    async def _close(self, client: aioimaplib.IMAP4) -> None:
        await close_imap(client, lost=self._lost.is_set())

    def _telemetry(self, name: str, **attributes: Any) -> None:
        self.produce(
            "telemetry",
            self.adapter.tenant_key,
            {
                "event_id": str(uuid.uuid4()),
                "name": name,
                "tenant_key": self.adapter.tenant_key,
                "at": datetime.now(UTC),
                "attributes": orjson.dumps(
                    {"adapter_id": self.adapter.adapter_id, **attributes}
                ).decode(),
            },
        )


def _chunks(items: Sequence[int], size: int) -> list[Sequence[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _quote(folder: str) -> str:
    return f'"{folder}"'


def _first(lines: Sequence[bytes | bytearray]) -> str:
    return bytes(lines[0]).decode(errors="replace")[:200] if lines else ""


def _safe(exc: BaseException | None) -> str:
    """An error for the log: its first line, cut (never a config value: none is in it)."""
    return str(exc).splitlines()[0][:200] if exc is not None and str(exc) else ""
