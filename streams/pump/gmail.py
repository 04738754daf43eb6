"""A Gmail mailbox onto ``inbound-messages`` through the Gmail REST API (httpx).

Documented calls, against ``{api_base}/gmail/v1/users/{user_id}``:

* ``users.watch`` (``POST …/watch``, https://developers.google.com/gmail/api/reference/rest/v1/users/watch,
  guide https://developers.google.com/gmail/api/guides/push): Gmail publishes
  ``{"emailAddress", "historyId"}`` to the adapter's Cloud Pub/Sub topic on each change of
  the label; the topic's push subscription POSTs it to the pump's
  ``/gmail/push/{adapter_id}?token=…`` (``streams/pump/push.py``), which only wakes this
  pump. A watch lasts 7 days (``expiration``, stored in ``inbound_api_cursors``); it is
  renewed when less than ``renew_before_seconds`` (1 day) is left, as Google asks
  ("call watch at least every 7 days", recommended once a day).
* ``users.history.list`` (https://developers.google.com/gmail/api/reference/rest/v1/users.history/list)
  from the stored ``historyId`` with ``historyTypes=messageAdded`` and ``labelId``, page by
  page; the cursor becomes the last record's id, then the answer's ``historyId``.
* ``users.messages.get`` with ``format=raw``
  (https://developers.google.com/gmail/api/reference/rest/v1/users.messages/get): the
  MIME, classified in the core like an IMAP message; ``internalDate`` is the arrival.
* A ``historyId`` too old for Google's history (HTTP 404, "Synchronizing clients",
  https://developers.google.com/gmail/api/guides/sync#full_synchronization): full resync —
  ``users.getProfile`` for the current ``historyId``, ``users.messages.list`` with
  ``q=newer_than:{N}d`` (``N`` = ``resync_days`` + the days since the last save) and the
  label, each message fetched, the Message-IDs already produced skipped
  (``inbound_seen``), then the cursor is the profile's ``historyId``.
* Polling: ``history.list`` every ``poll_seconds`` whether or not pushes come.

The cursor is saved only after Kafka acknowledged the records (``ApiPump.ingest``).
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from streams.pump.apibase import ApiAdapter, ApiPump, chunks
from streams.pump.config import GmailInbound
from streams.pump.cursor import ApiCursor, ApiCursorStore
from streams.pump.imap import Fetched, Flush, Produce, PumpError, TokenSource
from streams.pump.metrics import PumpMetrics

PAGE_SIZE = 500
"""``maxResults`` of history and list pages (Gmail's maximum is 500)."""


class GmailPump(ApiPump):
    """Reads one Gmail mailbox's label (``INBOX``) for as long as the pump runs."""

    kind = "gmail"

    def __init__(
        self,
        adapter: ApiAdapter,
        cfg: GmailInbound,
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
            folder=cfg.label_id,
        )
        self.cfg = cfg
        self.base = f"{cfg.api_base.rstrip('/')}/gmail/v1/users/{quote(cfg.user_id, safe='@')}"
        self._watch_expires_at: datetime | None = None

    @property
    def push_enabled(self) -> bool:
        return self.cfg.topic_name is not None

    def renewal_due_in(self) -> float | None:
        if not self.push_enabled or self._watch_expires_at is None:
            return None
        left = (self._watch_expires_at - datetime.now(UTC)).total_seconds()
        return left - self.renew_before_seconds

    # ------------------------------------------------------------ session

    async def begin(self) -> None:
        state = await self.load()
        if state is None or state.cursor is None:
            # First sight: remember where we start before anything is read, so mail that
            # arrives meanwhile is not skipped by a crash before the first save.
            if self.cfg.start == "all":
                await self.resync(reason="first_start", days=self.cfg.resync_days)
            else:
                await self.save(await self._current_history_id())
        await self._renew_watch(state)

    async def round(self) -> None:
        state = await self.load()
        await self._renew_watch(state)
        if state is None or state.cursor is None:
            raise PumpError("gmail cursor missing")
        start = state.cursor
        page: str | None = None
        while True:
            params: dict[str, Any] = {
                "startHistoryId": start,
                "historyTypes": "messageAdded",
                "labelId": self.cfg.label_id,
                "maxResults": PAGE_SIZE,
            }
            if page:
                params["pageToken"] = page
            response = await self.call("GET", f"{self.base}/history", params=params)
            if response.status_code == 404:  # the historyId is out of Google's history
                age = datetime.now(UTC) - state.updated_at
                days = self.cfg.resync_days + max(0, math.ceil(age.total_seconds() / 86400))
                await self.resync(reason="history_id_expired", days=days, old=start)
                return
            if not response.is_success:
                raise self.failed("users.history.list", response)
            body = _json(response)
            records = [h for h in body.get("history", []) if isinstance(h, dict)]
            ids = _added_ids(records, self.cfg.label_id)
            page = body.get("nextPageToken") or None
            if page is None:
                cursor = str(body.get("historyId") or start)
            else:
                cursor = str(records[-1].get("id") or start) if records else start
            await self._fetch_and_ingest(ids, cursor if cursor != start or ids else None)
            if page is None:
                return

    async def resync(self, *, reason: str, days: int, old: str | None = None) -> None:
        """Everything in the label from the last ``days`` days, minus what was produced."""
        current = await self._current_history_id()
        self.telemetry(
            "pump.cursor_reset",
            kind="gmail",
            reason=reason,
            old_history_id=old,
            history_id=current,
            days=days,
        )
        self.log.warning(
            "pump %s/gmail: %s, resyncing the last %d days", self.adapter.adapter_id, reason, days
        )
        ids: list[str] = []
        page: str | None = None
        while True:
            params: dict[str, Any] = {
                "q": f"newer_than:{days}d",
                "labelIds": self.cfg.label_id,
                "maxResults": PAGE_SIZE,
            }
            if page:
                params["pageToken"] = page
            response = await self.call("GET", f"{self.base}/messages", params=params)
            if not response.is_success:
                raise self.failed("users.messages.list", response)
            body = _json(response)
            ids.extend(str(m["id"]) for m in body.get("messages", []) if "id" in m)
            page = body.get("nextPageToken") or None
            if page is None:
                break
        ids.reverse()  # the list is newest first; produce in arrival order
        await self._fetch_and_ingest(list(dict.fromkeys(ids)), current)

    async def _fetch_and_ingest(self, ids: Sequence[str], cursor: str | None) -> None:
        """Fetch in batches; the cursor moves with the last batch, after its ack."""
        batches = chunks(ids) or [()]
        self.metrics.backlog.labels(**self.labels).set(len(ids))
        for n, batch in enumerate(batches):
            fetched = [f for f in [await self._get(i) for i in batch] if f is not None]
            await self.ingest(fetched, cursor if n == len(batches) - 1 else None)
            self.metrics.backlog.labels(**self.labels).dec(len(batch))

    async def _get(self, message_id: str) -> Fetched | None:
        response = await self.call(
            "GET", f"{self.base}/messages/{quote(message_id, safe='')}", params={"format": "raw"}
        )
        if response.status_code == 404:  # deleted since the history named it
            return None
        if not response.is_success:
            raise self.failed("users.messages.get", response)
        body = _json(response)
        raw_text = body.get("raw")
        if not isinstance(raw_text, str):
            raise PumpError("users.messages.get: no raw in the answer")
        try:
            raw = base64.urlsafe_b64decode(raw_text + "=" * (-len(raw_text) % 4))
        except (binascii.Error, ValueError):
            raise PumpError("users.messages.get: raw is not base64url") from None
        when: datetime | None = None
        internal = body.get("internalDate")
        if isinstance(internal, str | int) and str(internal).isdigit():
            when = datetime.fromtimestamp(int(internal) / 1000, UTC)
        return Fetched(0, when, raw)

    async def _current_history_id(self) -> str:
        response = await self.call("GET", f"{self.base}/profile")
        if not response.is_success:
            raise self.failed("users.getProfile", response)
        history_id = _json(response).get("historyId")
        if not history_id:
            raise PumpError("users.getProfile: no historyId")
        return str(history_id)

    async def _renew_watch(self, state: ApiCursor | None) -> None:
        if state is not None:
            self._watch_expires_at = state.watch_expires_at
        if not self.renewal_due(state):
            return
        body = {
            "topicName": self.cfg.topic_name,
            "labelIds": [self.cfg.label_id],
            "labelFilterBehavior": "INCLUDE",
        }
        response = await self.call("POST", f"{self.base}/watch", json=body)
        self.renewed()
        if not response.is_success:
            raise self.failed("users.watch", response)
        expiration = _json(response).get("expiration")
        try:
            expires = datetime.fromtimestamp(int(str(expiration)) / 1000, UTC)
        except ValueError:
            raise PumpError("users.watch: no expiration in the answer") from None
        await self.save_watch(self.cfg.topic_name, expires)
        self.renewed(expires)
        self._watch_expires_at = expires
        self.telemetry("pump.push_registered", kind="gmail", expires_at=expires.isoformat())
        self.log.info("pump %s/gmail: watch registered until %s", self.adapter.adapter_id, expires)


def _added_ids(records: Sequence[dict[str, Any]], label: str) -> list[str]:
    """Ids of messages added with ``label``, in history order, each once."""
    ids: list[str] = []
    for record in records:
        for added in record.get("messagesAdded", []):
            message = added.get("message") if isinstance(added, dict) else None
            if not isinstance(message, dict) or "id" not in message:
                continue
            if label in message.get("labelIds", [label]):
                ids.append(str(message["id"]))
    return list(dict.fromkeys(ids))


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise PumpError(f"HTTP {response.status_code}: not JSON") from None
    if not isinstance(body, dict):
        raise PumpError(f"HTTP {response.status_code}: not a JSON object")
    return body


def decode_push(envelope: Any) -> dict[str, Any]:
    """The Gmail notification in a Pub/Sub push envelope: ``{"emailAddress", "historyId"}``.

    The envelope is ``{"message": {"data": base64, "messageId", "publishTime", …},
    "subscription": …}`` (https://cloud.google.com/pubsub/docs/push#receive_push).

    Raises:
        ValueError: not such an envelope.
    """
    if not isinstance(envelope, dict) or not isinstance(envelope.get("message"), dict):
        raise ValueError("not a Pub/Sub push envelope")
    data = envelope["message"].get("data")
    if not isinstance(data, str):
        raise ValueError("no message.data")
    try:
        standard = data.replace("-", "+").replace("_", "/")
        decoded = orjson.loads(base64.b64decode(standard + "=" * (-len(standard) % 4)))
    except (binascii.Error, ValueError):
        raise ValueError("message.data is not base64 JSON") from None
    if not isinstance(decoded, dict) or "historyId" not in decoded:
        raise ValueError("message.data is not a Gmail notification")
    return decoded
