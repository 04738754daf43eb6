"""A Microsoft 365 mailbox folder onto ``inbound-messages`` through Microsoft Graph (httpx).

Documented calls, against ``api_base`` (``https://graph.microsoft.com/v1.0``):

* Change notifications (https://learn.microsoft.com/graph/change-notifications-delivery-webhooks,
  https://learn.microsoft.com/graph/api/subscription-post-subscriptions): a subscription
  on ``me/mailFolders('Inbox')/messages``, ``changeType`` ``created``, with
  ``notificationUrl`` / ``lifecycleNotificationUrl`` the pump's
  ``/graph/notify/{adapter_id}`` (``streams/pump/push.py``) and ``clientState`` the
  adapter's secret. Graph first POSTs ``?validationToken=…``; the endpoint echoes it as
  ``text/plain`` (it answers at once, well inside Graph's 10 s). A notification whose
  ``clientState`` does not match is refused; a matching one only wakes this pump.
* Renewal (https://learn.microsoft.com/graph/api/subscription-update): ``PATCH
  /subscriptions/{id}`` with a new ``expirationDateTime`` when less than
  ``renew_before_seconds`` is left (a mail subscription lives at most 10,080 minutes),
  and at once on a ``reauthorizationRequired`` lifecycle notification
  (https://learn.microsoft.com/graph/change-notifications-lifecycle-events); a
  subscription Graph no longer knows (404, ``subscriptionRemoved``) is created again.
* Delta query (https://learn.microsoft.com/graph/delta-query-messages): ``GET
  mailFolders('{folder}')/messages/delta`` with ``$select=internetMessageId,receivedDateTime``
  and the stored ``@odata.deltaLink`` (or ``@odata.nextLink`` mid-way) as the cursor. Every
  round is a delta round: on start, after every notification, after a ``missed``
  lifecycle notification and every ``poll_seconds``, so no notification is needed for
  correctness. A first start with ``start: new`` asks for ``receivedDateTime ge`` now; a
  delta link Graph refuses (410 Gone, ``syncStateNotFound``/``resyncRequired``) starts a
  fresh delta over the last ``resync_days`` plus the days since the last save.
* The message: ``GET /messages/{id}/$value`` (https://learn.microsoft.com/graph/outlook-get-mime-message),
  its MIME, classified in the core like an IMAP message. Messages whose
  ``internetMessageId`` was already produced (``inbound_seen``) are not fetched again.
"""

from __future__ import annotations

import asyncio
import hmac
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from dripdrop_core.correlation import normalize_message_id
from streams.pump.apibase import ApiAdapter, ApiPump, chunks
from streams.pump.config import GraphInbound
from streams.pump.cursor import ApiCursor, ApiCursorStore
from streams.pump.imap import Fetched, Flush, Produce, PumpError, TokenSource
from streams.pump.metrics import PumpMetrics
from streams.secrets import SecretError, resolve_secret

PAGE_SIZE = 50
"""``Prefer: odata.maxpagesize`` of delta pages."""


class GraphPump(ApiPump):
    """Reads one folder of one Microsoft 365 mailbox for as long as the pump runs."""

    kind = "graph"

    def __init__(
        self,
        adapter: ApiAdapter,
        cfg: GraphInbound,
        *,
        store: ApiCursorStore,
        produce: Produce,
        flush: Flush,
        metrics: PumpMetrics,
        token: TokenSource,
    ) -> None:
        super().__init__(
            adapter,
            store=store,
            produce=produce,
            flush=flush,
            metrics=metrics,
            token=token,
            poll_seconds=cfg.poll_seconds,
            renew_before_seconds=cfg.renew_before_seconds,
            timeout_seconds=cfg.timeout_seconds,
            folder=cfg.folder,
        )
        self.cfg = cfg
        self.api = cfg.api_base.rstrip("/")
        owner = "me" if cfg.user_id == "me" else f"users/{quote(cfg.user_id, safe='@')}"
        self.resource = f"{owner}/mailFolders('{cfg.folder}')/messages"
        self.base = f"{self.api}/{owner}"
        self.subscription_id: str | None = None
        self._expires_at: datetime | None = None
        self._force_renew = False
        self._recreate = False

    @property
    def push_enabled(self) -> bool:
        return self.cfg.notification_url is not None

    def renewal_due_in(self) -> float | None:
        if not self.push_enabled or self._expires_at is None:
            return None
        left = (self._expires_at - datetime.now(UTC)).total_seconds()
        return left - self.renew_before_seconds

    # ------------------------------------------------------------ notifications

    def client_state_matches(self, offered: object) -> bool:
        """``clientState`` of a notification against the adapter's secret (constant time).

        Raises:
            SecretError: the secret cannot be resolved now.
        """
        if self.cfg.client_state is None or not isinstance(offered, str):
            return False
        expected = resolve_secret(self.cfg.client_state)
        return hmac.compare_digest(offered.encode(), expected.encode())

    def notified(self, item: dict[str, Any]) -> None:
        """One notification whose ``clientState`` matched: note its lifecycle event, wake."""
        event = item.get("lifecycleEvent")
        ours = item.get("subscriptionId") == self.subscription_id
        if event == "reauthorizationRequired" and ours:
            self._force_renew = True
        elif event == "subscriptionRemoved" and ours:
            self._recreate = True
        self.poke()  # any notification (created, missed, …): a delta round now

    # ------------------------------------------------------------ session

    async def begin(self) -> None:
        state = await self.load()
        if state is None or state.cursor is None:
            if self.cfg.start == "all":
                await self._delta(self._delta_url(None))
            else:  # remember where we start; the first round's delta begins there
                await self._delta(self._delta_url(datetime.now(UTC)), produce=False)
            state = await self.load()
        await self._subscribe(state)

    async def round(self) -> None:
        state = await self.load()
        await self._subscribe(state)
        if state is None or state.cursor is None:
            raise PumpError("graph cursor missing")
        if not await self._delta(state.cursor):
            age = datetime.now(UTC) - state.updated_at
            days = self.cfg.resync_days + max(0, math.ceil(age.total_seconds() / 86400))
            since = datetime.now(UTC) - timedelta(days=days)
            self.telemetry(
                "pump.cursor_reset", kind="graph", reason="delta_link_refused", days=days
            )
            self.log.warning(
                "pump %s/graph: delta link refused, resyncing the last %d days",
                self.adapter.adapter_id,
                days,
            )
            if not await self._delta(self._delta_url(since)):
                raise PumpError("graph refused a fresh delta query")

    def _delta_url(self, since: datetime | None) -> str:
        query = "$select=internetMessageId,receivedDateTime"
        if since is not None:
            stamp = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            query += f"&$filter=receivedDateTime+ge+{stamp}"
        return f"{self.base}/mailFolders('{self.cfg.folder}')/messages/delta?{query}"

    async def _delta(self, url: str, *, produce: bool = True) -> bool:
        """Follow the delta pages from ``url`` to a delta link, producing new messages; the
        cursor moves to each page's next/delta link after that page's ack. ``False``: Graph
        refused the link (a resync is needed)."""
        while True:
            response = await self.call(
                "GET", url, headers={"Prefer": f"odata.maxpagesize={PAGE_SIZE}"}
            )
            if response.status_code == 410 or _resync_required(response):
                return False
            if not response.is_success:
                raise self.failed("messages delta", response)
            body = _json(response)
            following = body.get("@odata.nextLink")
            link = following or body.get("@odata.deltaLink")
            if not isinstance(link, str):
                raise PumpError("messages delta: neither nextLink nor deltaLink")
            items = [i for i in body.get("value", []) if isinstance(i, dict)]
            fresh = [i for i in items if "@removed" not in i and "id" in i] if produce else []
            await self._fetch_and_ingest(fresh, link)
            if not following:
                return True
            url = link

    async def _fetch_and_ingest(self, items: Sequence[dict[str, Any]], link: str) -> None:
        by_id = {
            str(i["id"]): normalize_message_id(str(i.get("internetMessageId") or "")) or ""
            for i in items
        }
        known = await asyncio.to_thread(
            self.store.seen, self.adapter.adapter_id, [m for m in by_id.values() if m]
        )
        ids = [gid for gid, mid in by_id.items() if not (mid and mid in known)]
        if len(ids) < len(by_id):
            self.metrics.skipped.labels(**self.labels).inc(len(by_id) - len(ids))
        batches = chunks(ids) or [()]
        for n, batch in enumerate(batches):
            fetched = [f for f in [await self._get(gid) for gid in batch] if f is not None]
            await self.ingest(fetched, link if n == len(batches) - 1 else None)

    async def _get(self, graph_id: str) -> Fetched | None:
        response = await self.call("GET", f"{self.base}/messages/{quote(graph_id, safe='')}/$value")
        if response.status_code == 404:  # deleted or moved since the delta named it
            return None
        if not response.is_success:
            raise self.failed("message $value", response)
        return Fetched(0, None, response.content)

    # ------------------------------------------------------------ subscription

    async def _subscribe(self, state: ApiCursor | None) -> None:
        if state is not None and state.watch_id is not None:
            self.subscription_id = state.watch_id
            self._expires_at = state.watch_expires_at
        forced = self._force_renew or self._recreate
        if not self.renewal_due(state, forced=forced):
            return
        expires = datetime.now(UTC) + timedelta(minutes=self.cfg.subscription_minutes)
        stamp = expires.strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
        self.renewed()
        if self.subscription_id is not None and not self._recreate:
            response = await self.call(
                "PATCH",
                f"{self.api}/subscriptions/{quote(self.subscription_id, safe='')}",
                json={"expirationDateTime": stamp},
            )
            if response.is_success:
                await self._registered(_json(response), expires, "renewed")
                return
            if response.status_code != 404:
                raise self.failed("subscription renewal", response)
        try:
            client_state = resolve_secret(self.cfg.client_state)
        except SecretError as exc:
            raise PumpError(f"secret_unavailable: {exc}") from None
        body = {
            "changeType": "created",
            "notificationUrl": self.cfg.notification_url,
            "lifecycleNotificationUrl": self.cfg.lifecycle_notification_url
            or self.cfg.notification_url,
            "resource": self.resource,
            "expirationDateTime": stamp,
            "clientState": client_state,
        }
        response = await self.call("POST", f"{self.api}/subscriptions", json=body)
        if not response.is_success:
            raise self.failed("subscription creation", response)
        await self._registered(_json(response), expires, "created")

    async def _registered(self, body: dict[str, Any], asked: datetime, how: str) -> None:
        subscription_id = str(body.get("id") or self.subscription_id or "")
        if not subscription_id:
            raise PumpError("subscription answer without id")
        expires = _parse_time(body.get("expirationDateTime")) or asked
        await self.save_watch(subscription_id, expires)
        self.renewed(expires)
        self.subscription_id = subscription_id
        self._expires_at = expires
        self._force_renew = self._recreate = False
        self.telemetry(
            "pump.push_registered",
            kind="graph",
            how=how,
            subscription_id=subscription_id,
            expires_at=expires.isoformat(),
        )
        self.log.info(
            "pump %s/graph: subscription %s %s until %s",
            self.adapter.adapter_id,
            subscription_id,
            how,
            expires,
        )


def _resync_required(response: httpx.Response) -> bool:
    if response.status_code not in (400, 404):
        return False
    try:
        error = response.json().get("error", {})
    except (ValueError, AttributeError):
        return False
    code = str(error.get("code", "")).lower() if isinstance(error, dict) else ""
    return code in ("syncstatenotfound", "resyncrequired", "syncstateinvalid")


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    text = value.strip().replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # Graph writes 7 fractional digits; fromisoformat takes at most 6
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise PumpError(f"HTTP {response.status_code}: not JSON") from None
    if not isinstance(body, dict):
        raise PumpError(f"HTTP {response.status_code}: not a JSON object")
    return body
