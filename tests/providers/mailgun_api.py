"""A local Mailgun server: ``POST /v3/{domain_name}/messages.mime``.

Follows https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/messages/post-v3--domain-name--messages-mime
(multipart/form-data with ``to`` and the MIME file in ``message``; HTTP Basic auth, user
``api``, password the API key; answers ``{"id": "<Message-ID>", "message": "Queued.
Thank you."}``) and the documented answers of that page: 400 ``{"message": …}`` for a bad
request, 401 ``Forbidden`` for a wrong key, 404 domain not found, 413, 429 with
``Retry-After``, 500.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.providers.server import ApiServer


@dataclass(frozen=True)
class MailgunMessage:
    domain: str
    to: str
    raw: bytes

    @property
    def message(self) -> Message:
        return message_from_bytes(self.raw)

    def header(self, name: str) -> str | None:
        value = self.message[name]
        return None if value is None else str(value)


class MailgunApi(ApiServer):
    """Mailgun for one API key and its sending domains."""

    def __init__(
        self,
        *,
        api_key: str = "key-mailgun-0123456789",
        domains: tuple[str, ...] = ("mg.example.com",),
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.domains = set(domains)
        self.sent: list[MailgunMessage] = []

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v3/{domain}/messages.mime", self._send, methods=["POST"])])

    def _authorized(self, request: Request) -> bool:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        user, _, password = base64.b64decode(value).decode().partition(":")
        return (user, password) == ("api", self.api_key)

    async def _send(self, request: Request) -> Response:
        if not self._authorized(request):
            return PlainTextResponse("Forbidden", 401)
        async with request.form() as form:  # closes the spooled upload
            to = form.get("to")
            upload = form.get("message")
            raw = await upload.read() if isinstance(upload, UploadFile) else None
        planned = await self.planned(tag=to if isinstance(to, str) else None)
        if planned is not None:
            return planned
        domain = request.path_params["domain"]
        if domain not in self.domains:
            return JSONResponse({"message": f"Domain not found: {domain}"}, 404)
        if not isinstance(to, str) or not to:
            return JSONResponse({"message": "'to' parameter is missing"}, 400)
        if raw is None:
            return JSONResponse({"message": "'message' parameter is missing"}, 400)
        stored = MailgunMessage(domain, to, raw)
        # Mailgun keeps the message's Message-ID and reports it as ``id`` (it makes one
        # up only when the MIME has none).
        message_id = stored.header("Message-ID") or f"<{uuid.uuid4().hex}@{domain}>"
        self.sent.append(stored)
        return JSONResponse({"id": message_id, "message": "Queued. Thank you."})
