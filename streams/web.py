"""``dripdrop web``: the RFC 8058 one-click unsubscribe endpoint (Starlette, uvicorn).

``POST /u/{token}`` with the body ``List-Unsubscribe=One-Click`` (what mailbox providers
send) unsubscribes at once; ``GET /u/{token}`` (a person following the link) shows a
confirmation page whose button makes the same POST. A valid token puts one ``unsubscribe``
record (tenant, enrollment, recipient) on ``health-signals``; the worker suppresses the
recipient in that tenant and stops the enrollment. A forged or altered token is answered
400 and produces nothing. The HMAC key is ``DRIPDROP_UNSUBSCRIBE_KEY``, a secret reference
(``env:NAME`` / ``file:/path``), resolved per request so a rotated file needs no restart.
"""

from __future__ import annotations

import html
import uuid
from datetime import UTC, datetime

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from dripdrop_core.unsubscribe import InvalidTokenError, Unsubscribe, read_token
from streams.codecs import Codecs
from streams.kafka import KafkaPublisher, Publisher, PublishError
from streams.secrets import SecretError, resolve_secret
from streams.settings import Settings

_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Unsubscribe</title></head>
<body><p>{text}</p>{form}</body></html>"""


def _key(settings: Settings) -> bytes:
    if not settings.unsubscribe_key:
        raise SecretError("DRIPDROP_UNSUBSCRIBE_KEY is not set")
    return resolve_secret({"secret": settings.unsubscribe_key}).encode()


def create_app(settings: Settings, publisher: Publisher | None = None) -> Starlette:
    codec = Codecs(settings).for_topic("health-signals")
    holder: dict[str, Publisher] = {}

    def producer() -> Publisher:
        if publisher is not None:
            return publisher
        if "p" not in holder:
            holder["p"] = KafkaPublisher(settings)
        return holder["p"]

    def verified(request: Request) -> Unsubscribe:
        return read_token(_key(settings), str(request.path_params["token"]))

    async def confirm(request: Request) -> Response:
        try:
            verified(request)
        except InvalidTokenError:
            return HTMLResponse(_PAGE.format(text="This link is not valid.", form=""), 400)
        action = html.escape(str(request.url.path), quote=True)
        form = (
            f'<form method="post" action="{action}">'
            '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
            '<button type="submit">Unsubscribe</button></form>'
        )
        return HTMLResponse(_PAGE.format(text="Stop receiving these emails?", form=form))

    async def one_click(request: Request) -> Response:
        try:
            found = verified(request)
        except InvalidTokenError:
            return PlainTextResponse("invalid token", 400)
        record = {
            "event_id": str(uuid.uuid4()),
            "tenant_key": found.tenant_key,
            "occurred_at": datetime.now(UTC),
            "kind": "unsubscribe",
            "recipient": found.recipient,
            "enrollment_id": found.enrollment_id,
            "source": "one_click",
        }
        try:
            out = producer()
            out.produce(
                settings.topic("health-signals"), key=found.tenant_key, value=codec.encode(record)
            )
            out.flush()
        except PublishError:
            return PlainTextResponse("try again later", 503)
        if "text/html" in request.headers.get("accept", ""):
            return HTMLResponse(_PAGE.format(text="You are unsubscribed.", form=""))
        return PlainTextResponse("unsubscribed")

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/u/{token}", confirm, methods=["GET"]),
            Route("/u/{token}", one_click, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ]
    )


def serve(settings: Settings) -> None:
    """Run the endpoint until interrupted (``dripdrop web``); fails at once without a key."""
    import uvicorn  # noqa: PLC0415 - only the web command needs it

    _key(settings)
    uvicorn.run(create_app(settings), host=settings.web_host, port=settings.web_port)
