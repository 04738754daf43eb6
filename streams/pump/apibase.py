"""What the Gmail and Microsoft Graph pumps share: supervision, the wake-up, the bearer
call, and "produce, wait for Kafka's ack, then save the cursor".

A pump of this kind is a loop of *rounds*: a round renews the push registration when it
is due, reads everything above the stored cursor (``users.history.list`` /
a delta query), fetches each new message's MIME, classifies it in the core
(``classify_mime`` through ``inbound_record``, the IMAP pump's record), produces the
records, waits until Kafka acknowledged them, and only then saves the cursor with the
produced Message-IDs (``ApiCursorStore``). Between rounds it waits for a push (the HTTP
endpoint calls ``poke``) or ``poll_seconds``, whichever comes first: push is an
accelerator, polling the guarantee. Any failure ends the session; ``run_forever``
starts a new one after 0.5 s doubling to 60 s, jittered (tenacity), as for IMAP.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from streams import crashpoints
from streams.codecs import CodecError
from streams.providers.base import AdapterFailureError
from streams.pump.cursor import ApiCursor, ApiCursorStore
from streams.pump.imap import Fetched, Flush, Produce, PumpError, TokenSource, inbound_record
from streams.pump.metrics import PumpMetrics

BATCH = 25
"""Messages fetched per Kafka flush (one acknowledgement wait covers a batch)."""
MIN_RENEW_INTERVAL_SECONDS = 60.0
"""A registration is renewed at most this often (a server that grants short lives)."""


@dataclass(frozen=True, slots=True)
class ApiAdapter:
    """The adapter a Gmail or Graph pump reads for (its records' ``adapter_id``, tenant)."""

    adapter_id: str
    tenant_key: str


class ApiPump:
    """Base of ``GmailPump`` and ``GraphPump``: one mailbox, rounds until cancelled."""

    kind = "api"
    log = logging.getLogger("dripdrop.pump")

    def __init__(
        self,
        adapter: ApiAdapter,
        *,
        store: ApiCursorStore,
        produce: Produce,
        flush: Flush,
        metrics: PumpMetrics,
        token: TokenSource,
        poll_seconds: float,
        renew_before_seconds: float,
        timeout_seconds: float,
        folder: str,
    ) -> None:
        self.adapter = adapter
        self.store = store
        self.produce = produce
        self.flush = flush
        self.metrics = metrics
        self.token = token
        self.poll_seconds = poll_seconds
        self.renew_before_seconds = renew_before_seconds
        self.timeout_seconds = timeout_seconds
        self.labels = {"adapter_id": adapter.adapter_id, "folder": f"{self.kind}:{folder}"}
        self.wake = asyncio.Event()
        self.http: httpx.AsyncClient | None = None
        self._renewed_at = 0.0
        self._granted: datetime | None = None

    # ------------------------------------------------------------ supervision

    async def run_forever(self) -> None:
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
        self.log.warning(
            "pump %s/%s: session ended (%s: %s); starting again",
            self.adapter.adapter_id,
            self.kind,
            type(exc).__name__,
            _safe(exc),
        )

    async def session(self) -> None:
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_seconds))
        try:
            await self.begin()
            self.metrics.connected.labels(**self.labels).set(1)
            self.telemetry("pump.connected", kind=self.kind, push=self.push_enabled)
            self.log.info(
                "pump %s/%s: reading (%s)",
                self.adapter.adapter_id,
                self.kind,
                "push + polling" if self.push_enabled else f"polling every {self.poll_seconds:g} s",
            )
            while True:
                self.wake.clear()
                await self.round()
                self.metrics.last_success.labels(**self.labels).set(time.time())
                await self._wait()
        finally:
            self.metrics.connected.labels(**self.labels).set(0)
            await self.http.aclose()

    async def _wait(self) -> None:
        try:
            await asyncio.wait_for(self.wake.wait(), timeout=self._timeout())
        except TimeoutError:
            pass

    def _timeout(self) -> float:
        due = self.renewal_due_in()
        if due is None:
            return self.poll_seconds
        return min(self.poll_seconds, max(due, MIN_RENEW_INTERVAL_SECONDS))

    def poke(self) -> None:
        """A push arrived: start a round now (called by the HTTP endpoint)."""
        self.wake.set()

    # ------------------------------------------------------------ to override

    @property
    def push_enabled(self) -> bool:
        return False

    async def begin(self) -> None:
        """Session start: the first cursor, the push registration."""

    async def round(self) -> None:
        """Renew what is due, read above the cursor, produce, save."""

    def renewal_due_in(self) -> float | None:
        return None

    # ------------------------------------------------------------ helpers

    def renewal_due(self, state: ApiCursor | None, *, forced: bool = False) -> bool:
        """The registration is missing or runs out within ``renew_before_seconds``. When the
        server itself granted less than that, it is renewed at most once per
        ``MIN_RENEW_INTERVAL_SECONDS``, not in every round."""
        if not self.push_enabled:
            return False
        if forced or state is None or state.watch_id is None or state.watch_expires_at is None:
            return True
        left = (state.watch_expires_at - datetime.now(UTC)).total_seconds()
        if left > self.renew_before_seconds:
            return False
        recent = time.monotonic() - self._renewed_at < MIN_RENEW_INTERVAL_SECONDS
        return not (recent and state.watch_expires_at == self._granted)

    def renewed(self, granted: datetime | None = None) -> None:
        self._renewed_at = time.monotonic()
        self._granted = granted

    async def load(self) -> ApiCursor | None:
        return await asyncio.to_thread(self.store.load, self.adapter.adapter_id)

    async def save(self, cursor: str | None, seen: Sequence[str] = ()) -> None:
        await asyncio.to_thread(
            self.store.save, self.adapter.adapter_id, self.adapter.tenant_key, cursor, seen
        )

    async def save_watch(self, watch_id: str | None, expires_at: datetime | None) -> None:
        await asyncio.to_thread(
            self.store.save_watch,
            self.adapter.adapter_id,
            self.adapter.tenant_key,
            watch_id,
            expires_at,
        )

    async def call(
        self, method: str, url: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One API request with the bearer token (``bearer_request``) on the session's client."""
        assert self.http is not None
        return await bearer_request(
            self.http, self.token, self.kind, method, url, headers=headers, **kwargs
        )

    def failed(self, what: str, response: httpx.Response) -> PumpError:
        return PumpError(f"{what}: HTTP {response.status_code} {_error_code(response)}")

    async def ingest(self, fetched: Sequence[Fetched], cursor: str | None) -> int:
        """Produce the fetched messages not produced before, wait for Kafka's ack, then save
        the cursor (``None``: unchanged) and their Message-IDs. Returns how many went out."""
        now = datetime.now(UTC)
        records = [inbound_record(self.adapter, f, now) for f in fetched]
        already = await asyncio.to_thread(
            self.store.seen, self.adapter.adapter_id, [r["message_id"] for r in records]
        )
        fresh: list[tuple[Fetched, dict[str, Any]]] = []
        ids: set[str] = set()
        for one, record in zip(fetched, records, strict=True):
            if record["message_id"] in already or record["message_id"] in ids:
                continue
            try:
                self.produce("inbound-messages", self.adapter.tenant_key, record)
            except CodecError as exc:  # bad input: say so, skip it, keep the mailbox going
                self.log.error(
                    "pump %s/%s: message not produced (%s)",
                    self.adapter.adapter_id,
                    self.kind,
                    exc.reason,
                )
                self.metrics.rejected.labels(**self.labels).inc()
                continue
            ids.add(record["message_id"])
            fresh.append((one, record))
        if fresh:
            await self.flush()  # Kafka acknowledged every record of the batch
            crashpoints.reached("pump.before_cursor_save")
        if fresh or cursor is not None:
            await self.save(cursor, [r["message_id"] for _, r in fresh])
        acked = time.time()
        for one, record in fresh:
            self.metrics.messages.labels(**self.labels, intent=record["intent"]).inc()
            if one.internal_date is not None:
                self.metrics.lag.labels(**self.labels).set(
                    max(acked - one.internal_date.timestamp(), 0.0)
                )
        skipped = len(records) - len(fresh)
        if skipped:
            self.metrics.skipped.labels(**self.labels).inc(skipped)
        return len(fresh)

    def telemetry(self, name: str, **attributes: Any) -> None:
        self.produce(
            "telemetry",
            self.adapter.tenant_key,
            {
                "event_id": str(uuid.uuid4()),
                "name": name,
                "tenant_key": self.adapter.tenant_key,
                "at": datetime.now(UTC),
                "attributes": orjson.dumps(
                    {"adapter_id": self.adapter.adapter_id, **attributes}, default=str
                ).decode(),
            },
        )


async def bearer_request(
    http: httpx.AsyncClient,
    token: TokenSource,
    kind: str,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """One API request with the bearer token; a 401 refreshes the token once.

    Raises:
        PumpError: the token endpoint refused or is away, or the API refused the
            fresh token too (the session ends; the supervisor retries later).
    """
    for attempt in (1, 2):
        try:
            access = await token.access_token()
        except AdapterFailureError as exc:
            raise PumpError(f"oauth2 {exc.reason}") from None
        try:
            response = await http.request(
                method,
                url,
                headers={**(headers or {}), "Authorization": f"Bearer {access}"},
                **kwargs,
            )
        except httpx.TransportError as exc:
            raise PumpError(f"{kind} API unreachable ({type(exc).__name__})") from None
        if response.status_code != 401:
            return response
        token.invalidate()  # expired or revoked early: one fresh token, once
        if attempt == 2:
            raise PumpError(f"{kind} API refused the access token (HTTP 401)")
    raise AssertionError("unreachable")


def chunks(items: Sequence[str], size: int = BATCH) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _error_code(response: httpx.Response) -> str:
    """The API's error code (Google's ``status``/reason, Graph's ``code``), never its text."""
    try:
        body = response.json()
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = error.get("code") if isinstance(error.get("code"), str) else error.get("status")
        return str(code or "")[:80]
    return ""


def _safe(exc: BaseException | None) -> str:
    return str(exc).splitlines()[0][:200] if exc is not None and str(exc) else ""
