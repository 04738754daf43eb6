"""``dripdrop web``: serve the one-click unsubscribe endpoint (``streams/web.py``)."""

from __future__ import annotations

from streams.settings import Settings


def web() -> None:
    """Serve RFC 8058 one-click unsubscribe (DRIPDROP_WEB_HOST, DRIPDROP_WEB_PORT,
    DRIPDROP_UNSUBSCRIBE_KEY as a secret reference: env:NAME or file:/path)."""
    from streams.web import serve  # noqa: PLC0415 - only this command needs Starlette

    serve(Settings())
