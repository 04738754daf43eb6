"""The worker's one-click unsubscribe links (RFC 8058, SPEC §13): the HMAC key resolved from
its secret reference as ``dripdrop web`` resolves it, with the endpoint's URL and mailto.

The processor asks for the links at every opted-in send; the key is re-resolved at most once
a minute (a rotated ``file:`` key needs no restart), never logged. Without a key or URL the
sends go out without the headers, and this says why once, in the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from dripdrop_core.unsubscribe import OneClickLinks
from streams.secrets import SecretError, resolve_secret
from streams.settings import Settings

log = logging.getLogger(__name__)

KEY_TTL_SECONDS = 60.0
"""How long a resolved key (or its absence) is reused: a file read per send would cost more
than the send's decision, and a rotation taking a minute to reach the worker is harmless."""


class OneClickSource:
    """``source()`` gives the current ``OneClickLinks``, or ``None`` (and ``missing`` says why)."""

    def __init__(
        self,
        settings: Settings,
        *,
        ttl_seconds: float = KEY_TTL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.ttl_seconds = ttl_seconds
        self.monotonic = monotonic
        self.missing: str | None = None
        self._links: OneClickLinks | None = None
        self._expires = float("-inf")
        self._logged = False

    def __call__(self) -> OneClickLinks | None:
        now = self.monotonic()
        if now >= self._expires:
            self._links, self.missing = self._resolve()
            self._expires = now + self.ttl_seconds
            if self.missing is not None and not self._logged:
                self._logged = True
                log.warning("one-click unsubscribe headers are off: %s", self.missing)
        return self._links

    def _resolve(self) -> tuple[OneClickLinks | None, str | None]:
        settings = self.settings
        if not settings.unsubscribe_key:
            return None, "DRIPDROP_UNSUBSCRIBE_KEY is not set"
        if not settings.unsubscribe_base_url:
            return None, "DRIPDROP_UNSUBSCRIBE_BASE_URL is not set"
        try:
            key = resolve_secret({"secret": settings.unsubscribe_key})
        except SecretError as exc:  # the message names the reference, never the key
            return None, f"DRIPDROP_UNSUBSCRIBE_KEY: {exc}"
        if not key:
            return None, "DRIPDROP_UNSUBSCRIBE_KEY resolves to an empty key"
        links = OneClickLinks(
            key=key.encode(),
            base_url=settings.unsubscribe_base_url,
            mailto=settings.unsubscribe_mailto or None,
        )
        return links, None
