"""An in-memory provider for tests: records what it was asked to send, fails on request."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

from streams.providers.base import (
    AmbiguousDeliveryError,
    OutboundEmail,
    PermanentDeliveryError,
    ProviderError,
    TransientDeliveryError,
    check_headers,
)

_FAILURES: Mapping[str, type[ProviderError]] = {
    "permanent": PermanentDeliveryError,
    "transient": TransientDeliveryError,
    "ambiguous": AmbiguousDeliveryError,
}


class MemoryProvider:
    """Accept every email (``sent``) except recipients scripted to fail.

    Args:
        fail: recipient → ``"permanent"``, ``"transient"`` or ``"ambiguous"``. An ambiguous
            failure records the email too: that is what "may have been accepted" means.
    """

    def __init__(self, *, fail: Mapping[str, str] | None = None) -> None:
        self.sent: list[OutboundEmail] = []
        self.attempts = 0
        self._fail = {recipient: _FAILURES[kind] for recipient, kind in (fail or {}).items()}
        self._ids = itertools.count(1)
        self.closed = False

    async def send(self, email: OutboundEmail) -> str:
        """Record ``email`` and return ``mem-<n>``; raise the scripted failure, if any."""
        if self.closed:
            raise RuntimeError("MemoryProvider is closed")
        self.attempts += 1
        check_headers(email)
        failure = self._fail.get(email.recipient)
        if failure is AmbiguousDeliveryError:
            self.sent.append(email)
        if failure is not None:
            raise failure("scripted_failure", failure.kind)
        self.sent.append(email)
        return f"mem-{next(self._ids)}"

    async def close(self) -> None:
        """Mark closed; later sends are a misuse."""
        self.closed = True
