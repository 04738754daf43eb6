"""The pump's HTTP endpoint for pushes (``dripdrop pump --http-port``): Starlette, uvicorn.

* ``POST /gmail/push/{adapter_id}?token=…``: a Cloud Pub/Sub push
  (https://cloud.google.com/pubsub/docs/push: ``{"message": {"data": base64 of
  {"emailAddress", "historyId"}, …}, "subscription": …}``). Verified by the shared token
  in the URL's query (``push_token``, compared in constant time) and/or, when the adapter
  sets ``push_oidc``, the OIDC token Pub/Sub's authenticated push puts in
  ``Authorization: Bearer`` (RS256 against Google's published keys, ``aud``, ``iss``,
  ``email`` + ``email_verified``, ``exp``;
  https://cloud.google.com/pubsub/docs/authenticate-push-subscriptions). When both are
  configured both must pass. Answer: 204 (Pub/Sub acks it), 403 forged, 400 malformed.
* ``POST /graph/notify/{adapter_id}``: Microsoft Graph change and lifecycle notifications
  (https://learn.microsoft.com/graph/change-notifications-delivery-webhooks). With
  ``?validationToken=`` it is the subscription handshake: the token is echoed as
  ``text/plain``, 200. Otherwise each notification's ``clientState`` must equal the
  adapter's secret: 202 when at least one does (the others are dropped), 403 when none.
* ``GET /healthz``: ``ok``.

A push never produces anything by itself and never moves a cursor: it wakes the adapter's
pump, whose next round reads from the stored cursor. A lost, repeated or late push costs
nothing; a forged one is refused before it can even cost a round.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import uvicorn
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from streams.pump.config import GooglePushOidc
from streams.pump.gmail import GmailPump, decode_push
from streams.pump.graph import GraphPump
from streams.pump.metrics import PumpMetrics
from streams.secrets import SecretError, resolve_secret

log = logging.getLogger("dripdrop.pump.push")

GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
CERTS_TTL_SECONDS = 3600.0


class PushRoutes:
    """The running Gmail and Graph pumps by adapter id, and the app that wakes them."""

    def __init__(self, metrics: PumpMetrics) -> None:
        self.metrics = metrics
        self.gmail: dict[str, GmailPump] = {}
        self.graph: dict[str, GraphPump] = {}
        self._certs: dict[str, tuple[float, dict[str, Any]]] = {}

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/gmail/push/{adapter_id}", self._gmail, methods=["POST"]),
                Route("/graph/notify/{adapter_id}", self._graph, methods=["POST"]),
                Route("/healthz", lambda _r: PlainTextResponse("ok"), methods=["GET"]),
            ]
        )

    def _refused(self, kind: str, adapter_id: str, why: str) -> Response:
        self.metrics.push_refused.labels(kind=kind).inc()
        log.warning("push %s/%s refused: %s", adapter_id, kind, why)
        return PlainTextResponse("forbidden", 403)

    # ------------------------------------------------------------ Gmail

    async def _gmail(self, request: Request) -> Response:
        adapter_id = request.path_params["adapter_id"]
        pump = self.gmail.get(adapter_id)
        if pump is None:
            return PlainTextResponse("unknown adapter", 404)
        cfg = pump.cfg
        try:
            if cfg.push_token is not None:
                offered = request.query_params.get("token", "")
                expected = resolve_secret(cfg.push_token)
                if not hmac.compare_digest(offered.encode(), expected.encode()):
                    return self._refused("gmail", adapter_id, "token")
        except SecretError:
            return PlainTextResponse("secret unavailable", 503)
        if cfg.push_oidc is not None:
            why = await self._oidc_refusal(request.headers.get("authorization"), cfg.push_oidc)
            if why is not None:
                return self._refused("gmail", adapter_id, why)
        if cfg.push_token is None and cfg.push_oidc is None:
            return self._refused("gmail", adapter_id, "no push authentication configured")
        try:
            notification = decode_push(orjson.loads(await request.body()))
        except ValueError as exc:
            return PlainTextResponse(f"bad request: {exc}", 400)
        self.metrics.pushes.labels(kind="gmail").inc()
        log.debug("push %s/gmail: historyId %s", adapter_id, notification.get("historyId"))
        pump.poke()
        return Response(status_code=204)

    async def _oidc_refusal(self, authorization: str | None, oidc: GooglePushOidc) -> str | None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or token.count(".") != 2:
            return "no OIDC bearer"
        head_b64, claims_b64, sig_b64 = token.split(".")
        try:
            header = orjson.loads(_b64url(head_b64))
            claims = orjson.loads(_b64url(claims_b64))
            signature = _b64url(sig_b64)
        except (binascii.Error, ValueError):
            return "malformed OIDC token"
        if not isinstance(header, dict) or not isinstance(claims, dict):
            return "malformed OIDC token"
        if header.get("alg") != "RS256":
            return "OIDC token not RS256"
        try:
            key = await self._google_key(oidc.certs_url, str(header.get("kid", "")))
        except (httpx.HTTPError, ValueError):
            return "Google's keys unavailable"
        if key is None:
            return "OIDC key id unknown"
        try:
            key.verify(
                signature,
                f"{head_b64}.{claims_b64}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature:
            return "OIDC signature"
        now = time.time()
        checks = (
            (claims.get("aud") == oidc.audience, "OIDC audience"),
            (claims.get("iss") in GOOGLE_ISSUERS, "OIDC issuer"),
            (claims.get("email") == oidc.service_account, "OIDC service account"),
            (claims.get("email_verified") is True, "OIDC email not verified"),
            (isinstance(claims.get("exp"), int | float) and claims["exp"] > now, "OIDC expired"),
        )
        return next((why for ok, why in checks if not ok), None)

    async def _google_key(self, certs_url: str, kid: str) -> rsa.RSAPublicKey | None:
        cached = self._certs.get(certs_url)
        if (
            cached is None
            or time.monotonic() - cached[0] > CERTS_TTL_SECONDS
            or (kid not in cached[1])
        ):
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.get(certs_url)
                response.raise_for_status()
            keys = {
                str(k.get("kid")): k
                for k in response.json().get("keys", [])
                if isinstance(k, dict) and k.get("kty") == "RSA"
            }
            cached = (time.monotonic(), keys)
            self._certs[certs_url] = cached
        jwk = cached[1].get(kid)
        if jwk is None:
            return None
        numbers = rsa.RSAPublicNumbers(
            int.from_bytes(_b64url(str(jwk["e"])), "big"),
            int.from_bytes(_b64url(str(jwk["n"])), "big"),
        )
        return numbers.public_key()

    # ------------------------------------------------------------ Graph

    async def _graph(self, request: Request) -> Response:
        adapter_id = request.path_params["adapter_id"]
        pump = self.graph.get(adapter_id)
        if pump is None:
            return PlainTextResponse("unknown adapter", 404)
        validation = request.query_params.get("validationToken")
        if validation is not None:  # the handshake of a new subscription: echo, at once
            return PlainTextResponse(validation, 200)
        try:
            body = orjson.loads(await request.body())
        except ValueError:
            return PlainTextResponse("bad request: not JSON", 400)
        items = body.get("value") if isinstance(body, dict) else None
        if not isinstance(items, list):
            return PlainTextResponse("bad request: no value", 400)
        accepted = 0
        try:
            for item in items:
                if isinstance(item, dict) and pump.client_state_matches(item.get("clientState")):
                    pump.notified(item)
                    accepted += 1
        except SecretError:
            return PlainTextResponse("secret unavailable", 503)
        if not accepted:
            return self._refused("graph", adapter_id, "clientState")
        if accepted < len(items):
            self._refused("graph", adapter_id, f"clientState of {len(items) - accepted}")
        self.metrics.pushes.labels(kind="graph").inc(accepted)
        return Response(status_code=202)


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class _Server(uvicorn.Server):
    """uvicorn inside the pump's loop: the pump owns SIGTERM/SIGINT, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def http_server(app: Starlette, host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
    )
    return _Server(config)
