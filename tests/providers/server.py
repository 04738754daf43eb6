"""Run a Starlette app on a uvicorn thread at 127.0.0.1 on a free port, with planned faults.

Every local API server here is an ``ApiServer`` subclass: the provider's real client (httpx,
boto3) talks HTTP to it exactly as it would to the provider. ``fail_next`` plans documented
error answers and ``stall_next`` plans an answer that never comes in time (a read timeout
after the request was sent), so each failure class is reached through the real wire.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response


@dataclass(frozen=True)
class Fault:
    """One planned answer: ``status`` with ``body`` (JSON, or text) and ``headers``."""

    status: int
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    stall_seconds: float = 0.0
    route: str = "send"

    def response(self) -> Response:
        if isinstance(self.body, str | bytes):
            return Response(self.body, self.status, headers=dict(self.headers))
        return JSONResponse(self.body, self.status, headers=dict(self.headers))


class ApiServer:
    """Base of the local API servers: lifecycle, the fault plan and a request counter."""

    def __init__(self) -> None:
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        self.requests = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ------------------------------------------------------------------ to override

    def app(self) -> Starlette:
        raise NotImplementedError

    # ------------------------------------------------------------------ faults

    def fail_next(
        self,
        status: int,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        times: int = 1,
        route: str = "send",
    ) -> None:
        """The next ``times`` requests to ``route`` get this answer instead of being processed."""
        with self._lock:
            for _ in range(times):
                self._faults.append(Fault(status, body, headers or {}, route=route))

    def stall_next(self, seconds: float) -> None:
        """The next send request is read, then answered only after ``seconds``."""
        with self._lock:
            self._faults.append(Fault(200, {}, {}, stall_seconds=seconds))

    async def planned(self, route: str = "send", tag: str | None = None) -> Response | None:
        """Called by a handler once the request is read whole: a planned fault, or None.

        ``tag`` names the request (its recipient) for subclasses that watch what is in
        flight, as the crash test does.
        """
        with self._lock:
            self.requests += 1
            fault = next((f for f in self._faults if f.route == route), None)
            if fault is not None:
                self._faults.remove(fault)
        if fault is None:
            return None
        if fault.stall_seconds:
            await asyncio.sleep(fault.stall_seconds)
            return JSONResponse({"stalled": True}, 504)
        return fault.response()

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app(),
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=type(self).__name__, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"{type(self).__name__} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class TokenIssuer:
    """An OAuth 2.0 token endpoint (RFC 6749 §6, refresh-token grant) for Google and Microsoft.

    Issues opaque bearer tokens for one client and refresh token; ``expire_all`` makes every
    token issued so far invalid, as an expired access token is at the real APIs (HTTP 401).
    """

    def __init__(self, client_id: str, client_secret: str, refresh_token: str) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token = refresh_token
        self.valid: set[str] = set()
        self.grants = 0
        self._counter = 0

    def expire_all(self) -> None:
        self.valid.clear()

    def issue(self, form: Mapping[str, str], basic: tuple[str, str] | None) -> Response:
        client_id, client_secret = basic or (
            form.get("client_id", ""),
            form.get("client_secret", ""),
        )
        if form.get("grant_type") != "refresh_token":
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        if (client_id, client_secret) != (self.client_id, self.client_secret):
            return JSONResponse({"error": "invalid_client"}, 401)
        if form.get("refresh_token") != self.refresh_token:
            return JSONResponse({"error": "invalid_grant"}, 400)
        self._counter += 1
        self.grants += 1
        token = f"at-{self._counter}-{time.monotonic_ns()}"
        self.valid.add(token)
        return JSONResponse(
            {"access_token": token, "expires_in": 3599, "token_type": "Bearer"},
            headers={"Cache-Control": "no-store"},
        )

    def authorized(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and token in self.valid


async def token_endpoint(issuer: TokenIssuer, request: Any) -> Response:
    """``POST`` handler of a token endpoint: form body, client auth in the body or Basic."""
    import base64

    async with request.form() as data:
        form = {k: str(v) for k, v in data.items()}
    basic = None
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        user, _, password = base64.b64decode(value).decode().partition(":")
        basic = (user, password)
    return issuer.issue(form, basic)
