"""A local OAuth2 authorization server for XOAUTH2 tests: refresh-token grant + introspection.

Started by ``infra/services.py up`` on 127.0.0.1:14080 (``--port``). Dovecot's ``oauth2`` passdb
validates the access tokens here, so Postfix submission and Dovecot IMAP accept XOAUTH2 and
OAUTHBEARER with tokens this server issued — the same chain as Gmail's or Microsoft 365's SMTP.

Endpoints:

* ``POST /token`` follows Google's token endpoint as published in "Using OAuth 2.0 for Web Server
  Applications", section "Refreshing an access token (offline access)"
  (https://developers.google.com/identity/protocols/oauth2/web-server#offline), which is RFC 6749
  §6: form fields ``client_id``, ``client_secret`` (or HTTP Basic, RFC 6749 §2.3.1),
  ``refresh_token``, ``grant_type=refresh_token``; answers ``{"access_token", "expires_in",
  "scope", "token_type": "Bearer"}``. Errors as RFC 6749 §5.2 and Google: 400
  ``invalid_request`` / ``unsupported_grant_type`` / ``invalid_grant`` ("Token has been expired
  or revoked."), 401 ``invalid_client``.
* ``POST /introspect`` is RFC 7662 token introspection (form field ``token``): 200 with
  ``{"active": true, "email", "scope", "client_id", "exp", "token_type"}`` or ``{"active": false}``.
* ``GET /healthz``; ``POST /admin/revoke`` (form ``email``: drop its access tokens, as a
  provider does when a token is revoked early); ``GET /admin/stats`` (grants per client).

Clients and refresh tokens live in a JSON state file (``--state``) that tests add to and that is
re-read on every request: ``{"clients": {id: {"secret", "expires_in"?}}, "refresh_tokens":
{token: {"client_id", "email", "scope"?}}}``. Issued access tokens are kept in memory.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import secrets
import time
from collections import Counter
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

DEFAULT_EXPIRES_IN = 3599  # what Google answers


def _error(status: int, error: str, description: str) -> JSONResponse:
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="oauth"'
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers=headers
    )


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, client_secret = decoded.partition(":")
    return (client_id, client_secret) if sep else None


def build_app(state_file: Path) -> Starlette:
    """The Starlette app; ``state_file`` holds clients and refresh tokens (re-read per request)."""
    access_tokens: dict[str, dict[str, Any]] = {}
    grants: Counter[str] = Counter()

    def state() -> dict[str, Any]:
        try:
            loaded = json.loads(state_file.read_text())
        except (OSError, ValueError):
            loaded = {}
        return loaded if isinstance(loaded, dict) else {}

    async def token(request: Request) -> Response:
        form = await request.form()
        fields = {key: str(value) for key, value in form.items()}
        basic = _basic_credentials(request)
        client_id = basic[0] if basic else fields.get("client_id", "")
        client_secret = basic[1] if basic else fields.get("client_secret", "")
        grant_type = fields.get("grant_type")
        if not grant_type:
            return _error(400, "invalid_request", "Required parameter is missing: grant_type")
        if grant_type != "refresh_token":
            return _error(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")
        if not client_id:
            return _error(400, "invalid_request", "Could not determine client ID from request.")
        current = state()
        client = current.get("clients", {}).get(client_id)
        if client is None or not secrets.compare_digest(
            str(client.get("secret", "")), client_secret
        ):
            return _error(401, "invalid_client", "Unauthorized")
        refresh = fields.get("refresh_token")
        if not refresh:
            return _error(400, "invalid_request", "Missing required parameter: refresh_token")
        grant = current.get("refresh_tokens", {}).get(refresh)
        if grant is None or grant.get("client_id") != client_id:
            return _error(400, "invalid_grant", "Token has been expired or revoked.")
        expires_in = int(client.get("expires_in", DEFAULT_EXPIRES_IN))
        scope = str(grant.get("scope", "https://mail.google.com/"))
        access = "ya29.local-" + secrets.token_urlsafe(32)
        access_tokens[access] = {
            "email": grant["email"],
            "client_id": client_id,
            "scope": scope,
            "exp": int(time.time()) + expires_in,
        }
        grants[client_id] += 1
        return JSONResponse(
            {
                "access_token": access,
                "expires_in": expires_in,
                "scope": scope,
                "token_type": "Bearer",
            },
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    async def introspect(request: Request) -> Response:
        form = await request.form()
        info = access_tokens.get(str(form.get("token", "")))
        if info is None or info["exp"] <= time.time():
            return JSONResponse({"active": False})
        return JSONResponse({"active": True, "token_type": "Bearer", **info})

    async def revoke(request: Request) -> Response:
        form = await request.form()
        email = str(form.get("email", ""))
        dropped = [key for key, info in access_tokens.items() if info["email"] == email]
        for key in dropped:
            del access_tokens[key]
        return JSONResponse({"revoked": len(dropped)})

    async def stats(request: Request) -> Response:
        return JSONResponse({"grants": dict(grants), "active_tokens": len(access_tokens)})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/token", token, methods=["POST"]),
            Route("/introspect", introspect, methods=["POST"]),
            Route("/admin/revoke", revoke, methods=["POST"]),
            Route("/admin/stats", stats, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=14080)
    parser.add_argument("--state", type=Path, required=True)
    args = parser.parse_args()
    uvicorn.run(build_app(args.state), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
