"""A local Gmail API server: ``users.messages.send`` (raw MIME) and ``users.messages.list``.

Follows the Gmail API reference:
https://developers.google.com/workspace/gmail/api/reference/rest/v1/users.messages/send
(``POST /gmail/v1/users/{userId}/messages/send``, body a ``Message`` with ``raw``, the
RFC 2822 message base64url encoded, and optional ``threadId``; answers the ``Message``
with ``id``, ``threadId``, ``labelIds``), the threading rules of
https://developers.google.com/workspace/gmail/api/guides/threads ("Adding drafts and
messages to threads": the ``threadId`` is honoured only when ``References`` /
``In-Reply-To`` are set and the ``Subject`` matches), ``users.messages.list`` with the
``rfc822msgid:`` search operator (and ``labelIds``, e.g. ``SENT``: every message sent is
filed there, as Gmail does), OAuth 2.0 bearer tokens from Google's token endpoint
(https://developers.google.com/identity/protocols/oauth2/web-server#offline), and the
error format of https://developers.google.com/workspace/gmail/api/guides/handle-errors
(``{"error": {"code", "message", "errors": [{"reason"…}], "status"}}``; 401 for an expired
token, 403 ``rateLimitExceeded`` / ``dailyLimitExceeded``, 429, 500 ``backendError``).

The receiving side (the Gmail pump, ``streams/pump/gmail.py``): a mailbox per user
(``deliver`` puts a message in ``INBOX`` as Gmail's MX would) with a history, and

* ``users.getProfile`` (https://developers.google.com/gmail/api/reference/rest/v1/users/getProfile):
  ``emailAddress``, ``messagesTotal``, ``historyId``;
* ``users.history.list`` (https://developers.google.com/gmail/api/reference/rest/v1/users.history/list):
  records after ``startHistoryId``, ``historyTypes``, ``labelId``, ``maxResults`` and
  ``pageToken``/``nextPageToken``, the mailbox's current ``historyId``; a ``startHistoryId``
  older than the kept history is answered **404** (``expire_history``), as the sync guide
  says (https://developers.google.com/gmail/api/guides/sync#full_synchronization);
* ``users.messages.get`` with ``format=raw`` (base64url ``raw``, ``internalDate`` in ms),
  and ``users.messages.list`` with ``q=newer_than:Nd`` and ``labelIds``, newest first;
* ``users.watch`` / ``users.stop``
  (https://developers.google.com/gmail/api/reference/rest/v1/users/watch, guide
  https://developers.google.com/gmail/api/guides/push): ``topicName`` must be
  ``projects/*/topics/*``; the answer is ``{"historyId", "expiration"}`` (ms, 7 days). While
  a watch is on, each delivery is published the way a Pub/Sub push subscription delivers
  it (https://cloud.google.com/pubsub/docs/push): ``POST`` of ``{"message": {"data":
  base64 of {"emailAddress", "historyId"}, "messageId", "publishTime"}, "subscription"}``
  to ``push_endpoint``, with an OIDC bearer signed by this server's key when
  ``push_oidc`` is set (authenticated push,
  https://cloud.google.com/pubsub/docs/authenticate-push-subscriptions; its keys at
  ``/oauth2/v3/certs`` like https://www.googleapis.com/oauth2/v3/certs).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.providers.server import ApiServer, TokenIssuer, token_endpoint

_RE = re.compile(r"^\s*((re|aw|sv|fwd?)\s*:\s*)+", re.IGNORECASE)


def gmail_error(code: int, message: str, reason: str, status: str) -> dict[str, Any]:
    """The body of a Gmail API error answer."""
    return {
        "error": {
            "code": code,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": status,
        }
    }


@dataclass(frozen=True)
class GmailMessage:
    """One message as the server stored it in the sender's mailbox."""

    id: str
    thread_id: str
    user_id: str
    raw: bytes
    requested_thread_id: str | None

    @property
    def message(self) -> Message:
        return message_from_bytes(self.raw)

    def header(self, name: str) -> str | None:
        value = self.message[name]
        return None if value is None else str(value)


@dataclass
class MailboxMessage:
    """A message in a user's mailbox (received or sent), with its labels and history id."""

    id: str
    thread_id: str
    raw: bytes
    label_ids: list[str]
    internal_date_ms: int
    history_id: int


@dataclass
class Watch:
    topic_name: str
    label_ids: list[str]
    expiration_ms: int


@dataclass
class PushOidc:
    """Authenticated push: the service account and audience the pushed token names."""

    service_account: str
    audience: str
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    kid: str = field(default_factory=lambda: secrets.token_hex(8))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _not_found() -> JSONResponse:
    return JSONResponse(
        gmail_error(404, "Requested entity was not found.", "notFound", "NOT_FOUND"), 404
    )


def _subject(message: Message) -> str:
    return _RE.sub("", str(message["Subject"] or "")).strip().lower()


def _ids(value: str | None) -> set[str]:
    return set(re.findall(r"<[^>]+>", value or ""))


class GmailApi(ApiServer):
    """The Gmail API for the mailboxes of one OAuth client."""

    def __init__(
        self,
        *,
        client_id: str = "gmail-client.apps.googleusercontent.com",
        client_secret: str = "gmail-client-secret",
        refresh_token: str = "1//gmail-refresh-token",
    ) -> None:
        super().__init__()
        self.tokens = TokenIssuer(client_id, client_secret, refresh_token)
        self.sent: list[GmailMessage] = []
        self.lists = 0
        self.history_id = 1000
        self.history_floor = 0
        self.mailboxes: dict[str, list[MailboxMessage]] = {}
        self.history: dict[str, list[tuple[int, str, list[str]]]] = {}
        self.watches: dict[str, Watch] = {}
        self.watch_calls = 0
        self.watch_seconds = 7 * 24 * 3600
        self.history_calls = 0
        self.push_endpoint: str | None = None
        self.push_oidc: PushOidc | None = None
        self.push_answers: list[int] = []
        self._mailbox_lock = threading.Lock()

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/token", self._token, methods=["POST"]),
                Route("/gmail/v1/users/{user_id}/messages/send", self._send, methods=["POST"]),
                Route("/gmail/v1/users/{user_id}/messages", self._list, methods=["GET"]),
                Route("/gmail/v1/users/{user_id}/messages/{id}", self._get, methods=["GET"]),
                Route("/gmail/v1/users/{user_id}/profile", self._profile, methods=["GET"]),
                Route("/gmail/v1/users/{user_id}/history", self._history, methods=["GET"]),
                Route("/gmail/v1/users/{user_id}/watch", self._watch, methods=["POST"]),
                Route("/gmail/v1/users/{user_id}/stop", self._stop_watch, methods=["POST"]),
                Route("/oauth2/v3/certs", self._certs, methods=["GET"]),
            ]
        )

    # ------------------------------------------------------------ the mailbox

    def _add(self, user_id: str, raw: bytes, labels: list[str], thread_id: str = "") -> str:
        with self._mailbox_lock:
            self.history_id += 1
            message_id = secrets.token_hex(8)
            stored = MailboxMessage(
                id=message_id,
                thread_id=thread_id or message_id,
                raw=raw,
                label_ids=labels,
                internal_date_ms=int(time.time() * 1000),
                history_id=self.history_id,
            )
            self.mailboxes.setdefault(user_id, []).append(stored)
            self.history.setdefault(user_id, []).append((self.history_id, message_id, labels))
            return message_id

    def deliver(self, raw: bytes, user_id: str = "me", *, email_address: str = "") -> str:
        """Mail arrives in the user's INBOX (as from Gmail's MX); published when watched.

        Returns the Gmail message id. The push (if any) is made before returning, from the
        caller's thread, as Pub/Sub would shortly after; its status is in ``push_answers``.
        """
        message_id = self._add(user_id, raw, ["INBOX", "UNREAD"])
        watch = self.watches.get(user_id)
        if watch is not None and "INBOX" in watch.label_ids and self.push_endpoint:
            self.publish(user_id, email_address or f"{user_id}@gmail.test")
        return message_id

    def publish(self, user_id: str, email_address: str) -> int:
        """One Pub/Sub push of the user's current historyId to ``push_endpoint``."""
        assert self.push_endpoint is not None
        data = json.dumps({"emailAddress": email_address, "historyId": self.history_id})
        envelope = {
            "message": {
                "data": base64.b64encode(data.encode()).decode(),
                "messageId": str(secrets.randbelow(10**15)),
                "publishTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                "attributes": {},
            },
            "subscription": "projects/dripdrop-test/subscriptions/gmail-push",
        }
        headers = {}
        if self.push_oidc is not None:
            headers["Authorization"] = f"Bearer {self.oidc_token()}"
        answer = httpx.post(self.push_endpoint, json=envelope, headers=headers, timeout=30)
        self.push_answers.append(answer.status_code)
        return answer.status_code

    def oidc_token(self, **overrides: object) -> str:
        """An OIDC token as Pub/Sub's authenticated push sends (RS256, Google's claims)."""
        oidc = self.push_oidc
        assert oidc is not None
        now = int(time.time())
        claims: dict[str, object] = {
            "aud": oidc.audience,
            "azp": "1234567890",
            "email": oidc.service_account,
            "email_verified": True,
            "exp": now + 3600,
            "iat": now,
            "iss": "https://accounts.google.com",
            "sub": "1234567890",
            **overrides,
        }
        header = {"alg": "RS256", "kid": oidc.kid, "typ": "JWT"}
        signing = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = oidc.key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing}.{_b64url(signature)}"

    def expire_history(self) -> None:
        """Forget the history so far: an older ``startHistoryId`` is answered 404."""
        with self._mailbox_lock:
            self.history_id += 1
            self.history_floor = self.history_id

    def inbox(self, user_id: str = "me") -> list[MailboxMessage]:
        return [m for m in self.mailboxes.get(user_id, []) if "INBOX" in m.label_ids]

    async def _certs(self, request: Request) -> Response:
        keys = []
        if self.push_oidc is not None:
            public = self.push_oidc.key.public_key().public_numbers()
            keys.append(
                {
                    "kty": "RSA",
                    "alg": "RS256",
                    "use": "sig",
                    "kid": self.push_oidc.kid,
                    "n": _b64url(public.n.to_bytes((public.n.bit_length() + 7) // 8, "big")),
                    "e": _b64url(public.e.to_bytes(3, "big")),
                }
            )
        return JSONResponse({"keys": keys})

    async def _profile(self, request: Request) -> Response:
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        user_id = request.path_params["user_id"]
        return JSONResponse(
            {
                "emailAddress": f"{user_id}@gmail.test",
                "messagesTotal": len(self.mailboxes.get(user_id, [])),
                "threadsTotal": len(self.mailboxes.get(user_id, [])),
                "historyId": str(self.history_id),
            }
        )

    async def _history(self, request: Request) -> Response:
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        self.history_calls += 1
        planned = await self.planned("history")
        if planned is not None:
            return planned
        user_id = request.path_params["user_id"]
        params = request.query_params
        start = params.get("startHistoryId", "")
        if not start.isdigit():
            return JSONResponse(
                gmail_error(400, "Invalid startHistoryId", "invalidArgument", "INVALID_ARGUMENT"),
                400,
            )
        if int(start) < self.history_floor:
            return _not_found()
        types = params.getlist("historyTypes")
        label = params.get("labelId")
        size = min(int(params.get("maxResults", "100")), 500)
        offset = int(params.get("pageToken") or 0)
        by_id = {m.id: m for m in self.mailboxes.get(user_id, [])}
        records = []
        for history_id, message_id, labels in self.history.get(user_id, []):
            if history_id <= int(start) or (label and label not in labels):
                continue
            ref = {"id": message_id, "threadId": by_id[message_id].thread_id}
            record: dict[str, Any] = {"id": str(history_id), "messages": [ref]}
            if not types or "messageAdded" in types:
                record["messagesAdded"] = [{"message": {**ref, "labelIds": labels}}]
            records.append(record)
        page = records[offset : offset + size]
        body: dict[str, Any] = {"historyId": str(self.history_id)}
        if page:
            body["history"] = page
        if offset + size < len(records):
            body["nextPageToken"] = str(offset + size)
        return JSONResponse(body)

    async def _get(self, request: Request) -> Response:
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        user_id = request.path_params["user_id"]
        found = next(
            (m for m in self.mailboxes.get(user_id, []) if m.id == request.path_params["id"]),
            None,
        )
        if found is None:
            return _not_found()
        body: dict[str, Any] = {
            "id": found.id,
            "threadId": found.thread_id,
            "labelIds": found.label_ids,
            "historyId": str(found.history_id),
            "internalDate": str(found.internal_date_ms),
            "sizeEstimate": len(found.raw),
        }
        if request.query_params.get("format", "full") == "raw":
            body["raw"] = base64.urlsafe_b64encode(found.raw).decode()
        return JSONResponse(body)

    async def _watch(self, request: Request) -> Response:
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        planned = await self.planned("watch")
        if planned is not None:
            return planned
        body = await request.json()
        topic = body.get("topicName") if isinstance(body, dict) else None
        if not isinstance(topic, str) or not re.fullmatch(r"projects/[^/]+/topics/[^/]+", topic):
            return JSONResponse(
                gmail_error(400, "Invalid topicName", "invalidArgument", "INVALID_ARGUMENT"), 400
            )
        self.watch_calls += 1
        expiration = int(time.time() * 1000) + self.watch_seconds * 1000
        self.watches[request.path_params["user_id"]] = Watch(
            topic, list(body.get("labelIds") or ["INBOX"]), expiration
        )
        return JSONResponse({"historyId": str(self.history_id), "expiration": str(expiration)})

    async def _stop_watch(self, request: Request) -> Response:
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        self.watches.pop(request.path_params["user_id"], None)
        return Response(status_code=204)

    async def _token(self, request: Request) -> Response:
        return await token_endpoint(self.tokens, request)

    def _unauthorized(self, request: Request) -> Response | None:
        if self.tokens.authorized(request.headers.get("authorization")):
            return None
        body = gmail_error(
            401,
            "Request had invalid authentication credentials. Expected OAuth 2 access token,"
            " login cookie or other valid authentication credential.",
            "authError",
            "UNAUTHENTICATED",
        )
        return JSONResponse(body, 401, headers={"WWW-Authenticate": 'Bearer realm="gmail"'})

    async def _send(self, request: Request) -> Response:
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse(
                gmail_error(
                    400, "Invalid JSON payload received.", "parseError", "INVALID_ARGUMENT"
                ),
                400,
            )
        planned = await self.planned()
        if planned is not None:
            return planned
        raw_text = body.get("raw") if isinstance(body, dict) else None
        if not isinstance(raw_text, str):
            return JSONResponse(
                gmail_error(
                    400,
                    "'raw' RFC822 payload message string or uploading message via"
                    " /upload/* URL required",
                    "invalidArgument",
                    "INVALID_ARGUMENT",
                ),
                400,
            )
        try:
            raw = base64.urlsafe_b64decode(raw_text + "=" * (-len(raw_text) % 4))
        except (binascii.Error, ValueError):
            return JSONResponse(
                gmail_error(
                    400, "Invalid value for ByteString", "invalidArgument", "INVALID_ARGUMENT"
                ),
                400,
            )
        message = message_from_bytes(raw)
        if not message["To"]:
            return JSONResponse(
                gmail_error(
                    400, "Recipient address required", "invalidArgument", "INVALID_ARGUMENT"
                ),
                400,
            )
        if "@" not in str(message["To"]):
            return JSONResponse(
                gmail_error(400, "Invalid To header", "invalidArgument", "INVALID_ARGUMENT"), 400
            )
        user_id = request.path_params["user_id"]
        requested = body.get("threadId")
        thread_id = self._thread_for(user_id, requested, message)
        if thread_id is None and requested:
            return JSONResponse(
                gmail_error(404, "Requested entity was not found.", "notFound", "NOT_FOUND"), 404
            )
        stored = GmailMessage(
            id=self._add(user_id, raw, ["SENT"], thread_id or ""),
            thread_id=thread_id or "",
            user_id=user_id,
            raw=raw,
            requested_thread_id=requested,
        )
        if not stored.thread_id:  # a new thread's id is the id of its first message
            stored = GmailMessage(stored.id, stored.id, user_id, raw, requested)
        self.sent.append(stored)
        return JSONResponse({"id": stored.id, "threadId": stored.thread_id, "labelIds": ["SENT"]})

    def _thread_for(self, user_id: str, requested: Any, message: Message) -> str | None:
        """The thread the message joins: ``""`` for a new thread, ``None`` for an unknown id."""
        if not requested:
            return ""
        members = [m for m in self.sent if m.user_id == user_id and m.thread_id == requested]
        if not members:
            return None
        referenced = _ids(message["In-Reply-To"]) | _ids(message["References"])
        ours = {m.header("Message-ID") for m in members}
        if referenced & ours and _subject(message) == _subject(members[0].message):
            return str(requested)
        return ""  # the criteria are not met: Gmail starts a new thread

    async def _list(self, request: Request) -> Response:
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        self.lists += 1
        planned = await self.planned("list")
        if planned is not None:
            return planned
        user_id = request.path_params["user_id"]
        query = request.query_params.get("q", "")
        newer = re.fullmatch(r"\s*newer_than:(\d+)([dmy])\s*", query)
        if newer is not None:
            return self._list_newer(request, user_id, newer)
        match = re.fullmatch(r"\s*rfc822msgid:\s*<?([^>\s]+)>?\s*", query)
        labels = request.query_params.getlist("labelIds")  # every one must be on the message
        with self._mailbox_lock:
            mailbox = list(self.mailboxes.get(user_id, []))
        found = [
            m
            for m in mailbox
            if match
            and all(label in m.label_ids for label in labels)
            and message_from_bytes(m.raw)["Message-ID"] == f"<{match.group(1)}>"
        ]
        if not found:
            return JSONResponse({"resultSizeEstimate": 0})
        return JSONResponse(
            {
                "messages": [{"id": m.id, "threadId": m.thread_id} for m in found],
                "resultSizeEstimate": len(found),
            }
        )

    def _list_newer(self, request: Request, user_id: str, newer: re.Match[str]) -> Response:
        """``q=newer_than:N{d,m,y}`` with ``labelIds``: the mailbox's messages, newest first."""
        days = int(newer.group(1)) * {"d": 1, "m": 30, "y": 365}[newer.group(2)]
        cutoff = (time.time() - days * 86400) * 1000
        labels = request.query_params.getlist("labelIds")
        found = [
            m
            for m in reversed(self.mailboxes.get(user_id, []))
            if m.internal_date_ms >= cutoff and all(label in m.label_ids for label in labels)
        ]
        size = min(int(request.query_params.get("maxResults", "100")), 500)
        offset = int(request.query_params.get("pageToken") or 0)
        body: dict[str, Any] = {"resultSizeEstimate": len(found)}
        page = found[offset : offset + size]
        if page:
            body["messages"] = [{"id": m.id, "threadId": m.thread_id} for m in page]
        if offset + size < len(found):
            body["nextPageToken"] = str(offset + size)
        return JSONResponse(body)
