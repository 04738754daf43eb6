"""Ambiguous sends settled from the mailbox's Sent folder (issue 13 item 5, SPEC §7).

A send is ``ambiguous`` when its hand-off started and its outcome is unknown (the worker
died mid-``DATA``). Where the pump can read the adapter's mailbox, the provider's copy of
what it sent answers the question: Gmail and Exchange file every message they accept in
Sent, and a mail client's SMTP relay usually does too. Every ``every`` seconds, for each
adapter with an inbound config, ``SentCheck`` lists the adapter's ambiguous sends and only
then looks their Message-IDs up:

* IMAP: ``SELECT`` the Sent folder (``sent_folder``, else the one flagged ``\\Sent`` by
  RFC 6154 ``LIST``, else one named like it), then ``UID SEARCH HEADER Message-ID <id>``
  (RFC 3501 §6.4.4);
* Gmail: ``users.messages.list`` with ``q=rfc822msgid:<id>`` and ``labelIds=SENT``
  (https://developers.google.com/gmail/api/reference/rest/v1/users.messages/list, search
  operators https://support.google.com/mail/answer/7190);
* Graph: ``GET me/mailFolders('sentitems')/messages?$filter=internetMessageId eq '<id>'``
  (https://learn.microsoft.com/en-us/graph/api/user-list-messages, well-known folder
  names https://learn.microsoft.com/en-us/graph/api/resources/mailfolder).

Found → resolved ``sent`` (the enrollment goes on, threaded under it). Not found once the
send has been ambiguous for ``grace`` (the provider may file it late) → resolved
``not_sent``: re-issued once with the same Message-ID. A re-issue that ends ambiguous again
and is not found is left to the operator (``dripdrop sends``), as is one whose enrollment
is no longer active. Both go through ``streams.sends.Resolver``, the operator's path, with
``by="sent_folder"`` in the ``send.resolved`` telemetry. A failed lookup resolves nothing.
A re-issue still ``intent`` after ``grace`` has its command published again (a crash
between the re-issue's commit and its publish would otherwise strand it; the ledger sends a
command at most once, so a copy is harmless).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from dripdrop_core.errors import ConflictError, NotFoundError
from streams.kafka import PublishError
from streams.pump.apibase import bearer_request
from streams.pump.config import GmailInbound, GraphInbound, ImapConfig
from streams.pump.imap import PumpError, TokenSource, close_imap, open_imap, uid_search
from streams.sends import AmbiguousSend, Resolution

log = logging.getLogger("dripdrop.pump.sent")

SENT_NAMES = ("Sent", "Sent Items", "Sent Messages", "Sent Mail", "[Gmail]/Sent Mail")
"""Folder names tried, in order, when no folder carries the ``\\Sent`` flag."""

_LIST_LINE = re.compile(rb'^\(([^)]*)\) (?:"(?:[^"\\]|\\.)*"|NIL) (.+)$')
_SAFE_ID = re.compile(r"[^\s\"'\\<>]+")
"""A Message-ID we can put in a search: ours always are (``new_message_id``)."""


class SentLookup(Protocol):
    """Which of these (bare) Message-IDs the mailbox's Sent folder holds."""

    async def find(self, message_ids: Sequence[str]) -> set[str]: ...


def searchable(message_id: str) -> bool:
    return _SAFE_ID.fullmatch(message_id) is not None


def sent_folder_of(lines: Sequence[bytes | bytearray]) -> str | None:
    """The Sent folder in a ``LIST "" "*"`` answer: the ``\\Sent`` one, else a usual name."""
    names: list[str] = []
    for line in lines:
        found = _LIST_LINE.match(bytes(line))
        if found is None:
            continue
        name = found.group(2).decode(errors="replace").strip()
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = name[1:-1]
        if "\\sent" in found.group(1).decode(errors="replace").lower().split():
            return name
        names.append(name)
    lowered = {n.lower(): n for n in names}
    return next((lowered[n.lower()] for n in SENT_NAMES if n.lower() in lowered), None)


class ImapSent:
    """Looks Message-IDs up in an IMAP mailbox's Sent folder, one session per check."""

    def __init__(self, cfg: ImapConfig, token: TokenSource | None) -> None:
        self.cfg = cfg
        self.token = token

    async def find(self, message_ids: Sequence[str]) -> set[str]:
        client = await open_imap(self.cfg, self.token)
        try:
            folder = self.cfg.sent_folder
            if folder is None:
                listing = await client.list('""', "*")
                folder = sent_folder_of(listing.lines) if listing.result == "OK" else None
                if folder is None:
                    raise PumpError("no Sent folder found; set inbound.imap.sent_folder")
            # SELECT, not EXAMINE: aioimaplib allows SEARCH only in its SELECTED state, which
            # EXAMINE does not enter; SEARCH alone changes no flag either way.
            answer = await client.select(f'"{folder}"')
            if answer.result != "OK":
                raise PumpError(f"SELECT {folder!r} refused")
            found: set[str] = set()
            for message_id in message_ids:
                if await uid_search(client, "HEADER", "Message-ID", f'"{message_id}"'):
                    found.add(message_id)
            return found
        finally:
            await close_imap(client)


class GmailSent:
    """``users.messages.list`` with ``rfc822msgid:`` in the ``SENT`` label."""

    def __init__(self, cfg: GmailInbound, token: TokenSource) -> None:
        self.cfg = cfg
        self.token = token
        self.base = f"{cfg.api_base.rstrip('/')}/gmail/v1/users/{quote(cfg.user_id, safe='@')}"

    async def find(self, message_ids: Sequence[str]) -> set[str]:
        return await _listed(
            self.token,
            "gmail",
            f"{self.base}/messages",
            {
                i: {"q": f"rfc822msgid:{i}", "labelIds": "SENT", "maxResults": 1}
                for i in message_ids
            },
            "messages",
            self.cfg.timeout_seconds,
        )


class GraphSent:
    """``mailFolders('sentitems')/messages`` filtered on ``internetMessageId``."""

    def __init__(self, cfg: GraphInbound, token: TokenSource) -> None:
        self.cfg = cfg
        self.token = token
        owner = "me" if cfg.user_id == "me" else f"users/{quote(cfg.user_id, safe='@')}"
        self.url = f"{cfg.api_base.rstrip('/')}/{owner}/mailFolders('sentitems')/messages"

    async def find(self, message_ids: Sequence[str]) -> set[str]:
        return await _listed(
            self.token,
            "graph",
            self.url,
            {i: {"$filter": f"internetMessageId eq '<{i}>'", "$select": "id"} for i in message_ids},
            "value",
            self.cfg.timeout_seconds,
        )


async def _listed(
    token: TokenSource,
    kind: str,
    url: str,
    queries: dict[str, dict[str, Any]],
    items: str,
    timeout: float,
) -> set[str]:
    """The ids whose list query (``queries[id]`` on ``url``) answers a non-empty ``items``."""
    found: set[str] = set()
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout)) as http:
        for message_id, params in queries.items():
            response = await bearer_request(http, token, kind, "GET", url, params=params)
            if not response.is_success:
                raise PumpError(f"{kind} list of sent mail: HTTP {response.status_code}")
            if response.json().get(items):
                found.add(message_id)
    return found


Settle = Callable[[str, str, Resolution], None]
"""``Resolver.resolve(id, tenant, resolution)`` (blocking: PostgreSQL and the broker's ack)."""
Pending = Callable[[str], list[AmbiguousSend]]
"""The adapter's ambiguous sends (blocking: PostgreSQL)."""
Waiting = Callable[[str, datetime], list[tuple[str, str]]]
"""``(id, tenant)`` of the adapter's re-issues still ``intent`` since before the time."""


class SentCheck:
    """Settles one adapter's ambiguous sends from its Sent folder, every ``every`` seconds."""

    def __init__(
        self,
        adapter_id: str,
        lookup: SentLookup,
        *,
        pending: Pending,
        waiting: Waiting,
        settle: Settle,
        grace: timedelta,
        every: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.adapter_id = adapter_id
        self.lookup = lookup
        self.pending = pending
        self.waiting = waiting
        self.settle = settle
        self.grace = grace
        self.every = every
        self.clock = clock
        self._reported: set[str] = set()

    async def run_forever(self) -> None:
        """Checks until cancelled; a failed check is logged and tried again next time."""
        while True:
            try:
                await self.check()
            except Exception as exc:  # noqa: BLE001 - the check's error policy: log, next time
                log.warning(
                    "sent check %s: %s: %s", self.adapter_id, type(exc).__name__, str(exc)[:200]
                )
            await asyncio.sleep(self.every)

    async def check(self) -> None:
        """One pass: look the adapter's ambiguous sends up, settle what the answer decides."""
        stale = await asyncio.to_thread(self.waiting, self.adapter_id, self.clock() - self.grace)
        for execution_id, tenant_key in stale:  # a crash may have lost the command: again
            await self._settle(execution_id, tenant_key, "not_sent")
        sends = await asyncio.to_thread(self.pending, self.adapter_id)
        wanted = [s for s in sends if s.message_id and searchable(s.message_id)]
        if not wanted:
            return
        found = await self.lookup.find([s.message_id for s in wanted if s.message_id])
        now = self.clock()
        for send in wanted:
            if send.message_id in found:
                decision: Resolution | None = "sent"
            elif not send.reissued and now - send.since >= self.grace:
                decision = "not_sent"
            else:
                decision = None
            if decision is None or not await self._settle(
                send.step_execution_id, send.tenant_key, decision
            ):
                self._left_alone(send)

    async def _settle(self, execution_id: str, tenant_key: str, decision: Resolution) -> bool:
        try:
            await asyncio.to_thread(self.settle, execution_id, tenant_key, decision)
        except (NotFoundError, ConflictError) as exc:  # settled meanwhile, or not active
            log.info("sent check %s: %s left as is (%s)", self.adapter_id, execution_id, exc)
            return False
        except PublishError as exc:  # nothing settled: the next check tries again
            log.warning("sent check %s: broker did not acknowledge (%s)", self.adapter_id, exc)
            return False
        log.info(
            "sent check %s: %s resolved %s from the Sent folder",
            self.adapter_id,
            execution_id,
            decision,
        )
        return True

    def _left_alone(self, send: AmbiguousSend) -> None:
        if send.reissued and send.step_execution_id not in self._reported:
            self._reported.add(send.step_execution_id)
            log.warning(
                "sent check %s: %s was re-issued once, is ambiguous again and not in Sent:"
                " left to the operator (dripdrop sends resolve)",
                self.adapter_id,
                send.step_execution_id,
            )
