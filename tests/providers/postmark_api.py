"""A local Postmark server: ``POST /email``.

Follows https://postmarkapp.com/developer/api/email-api ("Send a single email": JSON body
with ``From``, ``To``, ``Subject``, ``TextBody``/``HtmlBody``, ``ReplyTo``, ``Headers``
as ``[{"Name", "Value"}]``, ``MessageStream``; headers ``Accept``/``Content-Type:
application/json`` and ``X-Postmark-Server-Token``; answers ``{"To", "SubmittedAt",
"MessageID", "ErrorCode": 0, "Message": "OK"}``) and
https://postmarkapp.com/developer/api/overview (HTTP 401 for a wrong or missing token,
422 with an ``ErrorCode``: 300 invalid email request, 406 inactive recipient, 400/401
sender signature, 405 not allowed to send, 409 JSON required…; 429 rate limit; 500).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.providers.server import ApiServer


def postmark_error(code: int, message: str) -> dict[str, Any]:
    return {"ErrorCode": code, "Message": message}


@dataclass(frozen=True)
class PostmarkMessage:
    """One accepted ``/email`` request."""

    message_id: str
    body: dict[str, Any]

    def header(self, name: str) -> str | None:
        for item in self.body.get("Headers") or []:
            if str(item.get("Name", "")).lower() == name.lower():
                return str(item.get("Value"))
        return None


class PostmarkApi(ApiServer):
    """Postmark for one server token, with confirmed sender signatures."""

    def __init__(
        self,
        *,
        server_token: str = "pm-server-token-0001",
        senders: tuple[str, ...] = ("example.com",),
        inactive: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self.server_token = server_token
        self.senders = set(senders)
        self.inactive = set(inactive)
        self.sent: list[PostmarkMessage] = []

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/email", self._send, methods=["POST"])])

    async def _send(self, request: Request) -> Response:
        if request.headers.get("x-postmark-server-token") != self.server_token:
            return JSONResponse(
                postmark_error(
                    10,
                    "The Server Token you provided in the X-Postmark-Server-Token"
                    " request header was invalid.",
                ),
                401,
            )
        if "application/json" not in request.headers.get("content-type", "") or (
            "application/json" not in request.headers.get("accept", "")
        ):
            return JSONResponse(postmark_error(409, "JSON required."), 422)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse(postmark_error(402, "Invalid JSON."), 422)
        planned = await self.planned()
        if planned is not None:
            return planned
        sender = str(body.get("From") or "")
        to = str(body.get("To") or "")
        if not sender:
            return JSONResponse(postmark_error(300, "Invalid 'From' address: ''."), 422)
        if "@" not in to:
            return JSONResponse(
                postmark_error(300, f"Error parsing 'To': Illegal email address '{to}'."), 422
            )
        domain = sender.rpartition("@")[2].rstrip(">").strip()
        if not any(domain == d or domain.endswith("." + d) for d in self.senders):
            return JSONResponse(
                postmark_error(
                    400,
                    "The 'From' address you supplied is not a Sender Signature on your account.",
                ),
                422,
            )
        if to in self.inactive:
            return JSONResponse(
                postmark_error(
                    406, "You tried to send to recipient(s) that have been marked as inactive."
                ),
                422,
            )
        if not body.get("TextBody") and not body.get("HtmlBody"):
            return JSONResponse(
                postmark_error(300, "Provide either email TextBody or HtmlBody or both."), 422
            )
        stored = PostmarkMessage(str(uuid.uuid4()), body)
        self.sent.append(stored)
        return JSONResponse(
            {
                "To": to,
                "SubmittedAt": datetime.now(UTC).isoformat(),
                "MessageID": stored.message_id,
                "ErrorCode": 0,
                "Message": "OK",
            }
        )
