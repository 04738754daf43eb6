"""The Starlette app: routing a webhook URL to its adapter and provider handler, and the
status each refusal gets; ``serve`` runs it under uvicorn. No provider logic here.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from streams.kafka import Publisher
from streams.settings import Settings
from streams.webhooks._adapters import AdapterStore, PostgresAdapters, WebhookAdapter
from streams.webhooks._errors import MalformedError, UnauthorizedError, UnavailableError
from streams.webhooks._mailgun import MailgunHandler
from streams.webhooks._options import MAX_BODY_BYTES, WebhookOptions
from streams.webhooks._postmark import PostmarkHandler
from streams.webhooks._produce import SignalPublisher
from streams.webhooks._recent import Recent
from streams.webhooks._ses import SesHandler
from streams.webhooks._sns import SnsCertificates

log = logging.getLogger("dripdrop.webhooks")

Handler = Callable[[WebhookAdapter, Request, bytes], Awaitable[Response]]
"""A provider's request handler: the adapter the URL named, the request, its body."""


class _Receiver:
    """``POST /webhooks/{provider}/{tenant_key}/{adapter_id}``: find the adapter, hand the
    request to its provider's handler, answer each refusal with its status."""

    def __init__(self, lookup: AdapterStore, handlers: Mapping[str, Handler]) -> None:
        self.lookup = lookup
        self.handlers = handlers

    async def receive(self, request: Request) -> Response:
        provider = str(request.path_params["provider"])
        tenant_key = str(request.path_params["tenant_key"])
        adapter_id = str(request.path_params["adapter_id"])
        where = f"provider={provider} adapter={adapter_id}"
        handler = self.handlers.get(provider)
        if handler is None:
            return PlainTextResponse("unknown provider", 404)
        try:
            uuid.UUID(adapter_id)
        except ValueError:
            return PlainTextResponse("unknown adapter", 404)
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                return PlainTextResponse("body too large", 413)
        try:
            adapter = await self.lookup(tenant_key, adapter_id)
            if adapter is None or adapter.tenant_key != tenant_key:
                return PlainTextResponse("unknown adapter", 404)
            if str(adapter.config.get("webhook_provider") or adapter.provider) != provider:
                return PlainTextResponse("adapter is not a " + provider + " adapter", 404)
            return await handler(adapter, request, raw)
        except MalformedError as exc:
            log.warning("webhook refused (400) %s: %s", where, exc)
            return PlainTextResponse("malformed request", 400)
        except UnauthorizedError as exc:
            log.warning("webhook refused (401) %s: %s", where, exc)
            return PlainTextResponse("unauthorized", 401)
        except UnavailableError as exc:
            log.error("webhook not taken (503) %s: %s", where, exc)
            return PlainTextResponse("try again later", 503)


async def _health(request: Request) -> Response:
    return PlainTextResponse("ok")


def _lifespan(
    *,
    own_http: httpx.AsyncClient | None,
    store: PostgresAdapters | None,
    signals: SignalPublisher,
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """On shutdown, close what ``create_app`` opened itself (not what the caller passed)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if own_http is not None:
                await own_http.aclose()
            if store is not None:
                store.close()
            signals.close()

    return lifespan


def create_app(
    settings: Settings,
    options: WebhookOptions | None = None,
    *,
    publisher: Publisher | None = None,
    adapters: AdapterStore | None = None,
    http: httpx.AsyncClient | None = None,
) -> Starlette:
    """The receiver. ``publisher``, ``adapters`` and ``http`` replace the Kafka producer,
    the PostgreSQL lookup and the HTTP client (certificates, subscription confirmation)."""
    opts = options or WebhookOptions()
    signals = SignalPublisher(settings, publisher=publisher, recent_size=opts.recent_size)
    url_pattern = re.compile(opts.sns_url_pattern)
    store: PostgresAdapters | None = None
    lookup: AdapterStore
    if adapters is None:
        store = lookup = PostgresAdapters(settings.database_url)
    else:
        lookup = adapters
    client = http or httpx.AsyncClient(timeout=opts.http_timeout_seconds, follow_redirects=False)
    certificates = SnsCertificates(client, opts.cert_cache_size)
    handlers: dict[str, Handler] = {
        "ses": SesHandler(
            http=client,
            certificates=certificates,
            url_pattern=url_pattern,
            publish=signals.publish,
        ),
        "mailgun": MailgunHandler(
            max_age_seconds=opts.max_age_seconds,
            tokens=Recent(opts.recent_size, 2 * opts.max_age_seconds),
            publish=signals.publish,
        ),
        "postmark": PostmarkHandler(publish=signals.publish),
    }
    receiver = _Receiver(lookup, handlers)
    app = Starlette(
        routes=[
            Route(
                "/webhooks/{provider}/{tenant_key}/{adapter_id}", receiver.receive, methods=["POST"]
            ),
            Route("/healthz", _health, methods=["GET"]),
        ],
        lifespan=_lifespan(own_http=client if http is None else None, store=store, signals=signals),
    )
    app.state.certificates = certificates
    return app


def serve(settings: Settings, options: WebhookOptions) -> None:
    """Run the receiver until interrupted (``dripdrop webhooks serve``)."""
    import uvicorn  # noqa: PLC0415 - only the webhooks command needs it

    re.compile(options.sns_url_pattern)
    uvicorn.run(create_app(settings, options), host=options.host, port=options.port)
