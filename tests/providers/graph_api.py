"""A local Microsoft Graph server: ``POST /me/sendMail`` and ``/users/{id}/sendMail`` (MIME).

Follows https://learn.microsoft.com/en-us/graph/api/user-sendmail ("Example 4: Send a new
message using MIME format": ``Content-Type: text/plain``, the MIME message base64 encoded
as the body; answers ``202 Accepted`` with no body) and
https://learn.microsoft.com/en-us/graph/outlook-send-mime-message (invalid base64 →
400 ``ErrorMimeContentInvalidBase64String``), the error format of
https://learn.microsoft.com/en-us/graph/errors (``{"error": {"code", "message",
"innerError"}}``; 401 ``InvalidAuthenticationToken`` for an expired token, 403
``ErrorAccessDenied``, 429 with ``Retry-After`` per
https://learn.microsoft.com/en-us/graph/throttling, 503 ``ServiceUnavailable``), and the
Microsoft identity platform's refresh-token grant at ``/{tenant}/oauth2/v2.0/token``
(https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-auth-code-flow#refresh-the-access-token).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.providers.server import ApiServer, TokenIssuer, token_endpoint


def graph_error(code: str, message: str) -> dict[str, Any]:
    """The body of a Graph error answer."""
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {"request-id": str(uuid.uuid4()), "date": "2026-12-03T00:00:00"},
        }
    }


@dataclass(frozen=True)
class GraphMessage:
    """One message Graph accepted, as the MIME it decoded."""

    user: str
    raw: bytes

    @property
    def message(self) -> Message:
        return message_from_bytes(self.raw)

    def header(self, name: str) -> str | None:
        value = self.message[name]
        return None if value is None else str(value)


class GraphApi(ApiServer):
    """Graph's mail sending for the mailboxes of one app registration."""

    def __init__(
        self,
        *,
        tenant: str = "contoso.onmicrosoft.com",
        client_id: str = "00000000-aaaa-bbbb-cccc-000000000001",
        client_secret: str = "graph-client-secret",
        refresh_token: str = "M.R3_BAY.graph-refresh-token",
    ) -> None:
        super().__init__()
        self.tenant = tenant
        self.tokens = TokenIssuer(client_id, client_secret, refresh_token)
        self.sent: list[GraphMessage] = []

    @property
    def token_url(self) -> str:
        return f"{self.url}/{self.tenant}/oauth2/v2.0/token"

    @property
    def api_base(self) -> str:
        return f"{self.url}/v1.0"

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
                Route("/v1.0/me/sendMail", self._send, methods=["POST"]),
                Route("/v1.0/users/{user_id}/sendMail", self._send, methods=["POST"]),
            ]
        )

    async def _token(self, request: Request) -> Response:
        if request.path_params["tenant"] != self.tenant:
            return JSONResponse({"error": "invalid_tenant"}, 400)
        return await token_endpoint(self.tokens, request)

    async def _send(self, request: Request) -> Response:
        if not self.tokens.authorized(request.headers.get("authorization")):
            return JSONResponse(
                graph_error(
                    "InvalidAuthenticationToken",
                    "Lifetime validation failed, the token is expired.",
                ),
                401,
            )
        body = await request.body()
        planned = await self.planned()
        if planned is not None:
            return planned
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type != "text/plain":
            return JSONResponse(
                graph_error("ErrorInvalidRequest", "Empty Payload. JSON content expected."), 400
            )
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return JSONResponse(
                graph_error(
                    "ErrorMimeContentInvalidBase64String",
                    "Invalid base64 string for MIME content.",
                ),
                400,
            )
        message = message_from_bytes(raw)
        if not message["To"] or "@" not in str(message["To"]):
            return JSONResponse(
                graph_error(
                    "ErrorInvalidRecipients",
                    "At least one recipient isn't valid., A message can't be sent because it"
                    " contains no recipients.",
                ),
                400,
            )
        self.sent.append(GraphMessage(request.path_params.get("user_id", "me"), raw))
        return Response(status_code=202)
