"""A local Gmail API server: ``users.messages.send`` (raw MIME) and ``users.messages.list``.

Follows the Gmail API reference:
https://developers.google.com/workspace/gmail/api/reference/rest/v1/users.messages/send
(``POST /gmail/v1/users/{userId}/messages/send``, body a ``Message`` with ``raw``, the
RFC 2822 message base64url encoded, and optional ``threadId``; answers the ``Message``
with ``id``, ``threadId``, ``labelIds``), the threading rules of
https://developers.google.com/workspace/gmail/api/guides/threads ("Adding drafts and
messages to threads": the ``threadId`` is honoured only when ``References`` /
``In-Reply-To`` are set and the ``Subject`` matches), ``users.messages.list`` with the
``rfc822msgid:`` search operator, OAuth 2.0 bearer tokens from Google's token endpoint
(https://developers.google.com/identity/protocols/oauth2/web-server#offline), and the
error format of https://developers.google.com/workspace/gmail/api/guides/handle-errors
(``{"error": {"code", "message", "errors": [{"reason"…}], "status"}}``; 401 for an expired
token, 403 ``rateLimitExceeded`` / ``dailyLimitExceeded``, 429, 500 ``backendError``).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from typing import Any

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

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/token", self._token, methods=["POST"]),
                Route("/gmail/v1/users/{user_id}/messages/send", self._send, methods=["POST"]),
                Route("/gmail/v1/users/{user_id}/messages", self._list, methods=["GET"]),
            ]
        )

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
            id=secrets.token_hex(8),
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
        match = re.fullmatch(r"\s*rfc822msgid:\s*<?([^>\s]+)>?\s*", query)
        found = [
            m
            for m in self.sent
            if m.user_id == user_id and match and m.header("Message-ID") == f"<{match.group(1)}>"
        ]
        if not found:
            return JSONResponse({"resultSizeEstimate": 0})
        return JSONResponse(
            {
                "messages": [{"id": m.id, "threadId": m.thread_id} for m in found],
                "resultSizeEstimate": len(found),
            }
        )
