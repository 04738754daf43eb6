"""Channel providers behind one interface (SPEC §7) and the registry that builds them.

``ProviderRegistry.provider_for(adapter)`` is the only place that maps an adapter's
``provider`` field to a class; adapters on the same SMTP account share one connection pool.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from dripdrop_core.models import Adapter
from streams.providers import dkim
from streams.providers.base import (
    AdapterFailureError,
    AmbiguousDeliveryError,
    HeaderInjectionError,
    OutboundEmail,
    PermanentDeliveryError,
    Provider,
    ProviderError,
    RecipientDeferredError,
    RecipientRejectedError,
    TransientDeliveryError,
    check_headers,
)
from streams.providers.memory import MemoryProvider
from streams.providers.smtp import SmtpConfig, SmtpProvider

__all__ = [
    "AdapterFailureError",
    "AmbiguousDeliveryError",
    "HeaderInjectionError",
    "MemoryProvider",
    "OutboundEmail",
    "PermanentDeliveryError",
    "Provider",
    "ProviderError",
    "ProviderRegistry",
    "RecipientDeferredError",
    "RecipientRejectedError",
    "SmtpConfig",
    "SmtpProvider",
    "TransientDeliveryError",
    "UnknownProviderError",
    "check_headers",
]


_Key = tuple[object, ...]


class UnknownProviderError(PermanentDeliveryError):
    """The adapter names a provider this build does not ship (a configuration error)."""


log = logging.getLogger("dripdrop.providers")


class ProviderRegistry:
    """Build and cache one provider per account; ``close()`` releases them all.

    Caching matters: an SMTP provider owns a connection pool, so building one per send
    would pay connection setup on every message.
    """

    def __init__(self) -> None:
        self._providers: dict[_Key, Provider] = {}
        self._builders = _BUILDERS

    def provider_for(self, adapter: Adapter) -> Provider:
        """Return the provider for ``adapter`` (``smtp``, ``gmail``, ``microsoft365``, ``ses``,
        ``mailgun``, ``postmark`` or ``memory``).

        Raises:
            UnknownProviderError: the adapter's ``provider`` is not one we ship.
            PermanentDeliveryError: the adapter's ``config`` is invalid.
        """
        builder = self._builders.get(adapter.provider)
        if builder is None:
            raise UnknownProviderError("unknown_provider", adapter.provider)
        dkim.configure(adapter)  # the adapter's DKIM keys, for render_message
        key, build = builder(adapter)
        cached = self._providers.get(key)
        if cached is None:
            self._providers[key] = cached = build()
        return cached

    async def close(self) -> None:
        """Close every provider built so far; one that fails to close (its server gone)
        is logged and the others are still closed."""
        providers, self._providers = list(self._providers.values()), {}
        for provider in providers:
            try:
                await provider.close()
            except Exception as exc:  # noqa: BLE001 - shutting down: report, go on
                log.warning("closing a %s provider failed: %s", type(provider).__name__, exc)


def _smtp(adapter: Adapter) -> tuple[_Key, Callable[[], Provider]]:
    config = SmtpConfig.from_adapter_config(adapter.config)
    return ("smtp", *config.pool_key), lambda: SmtpProvider(config)


# The HTTP API providers are imported when first used: boto3 and httpx cost import time
# that a worker of SMTP mailboxes (or the CLI) need not pay.
def _gmail(adapter: Adapter) -> tuple[_Key, Callable[[], Provider]]:
    from streams.providers.gmail import GmailConfig, GmailProvider

    config = GmailConfig.from_adapter_config(adapter.config)
    return ("gmail", *config.key), lambda: GmailProvider(config)


def _microsoft365(adapter: Adapter) -> tuple[_Key, Callable[[], Provider]]:
    from streams.providers.microsoft365 import GraphConfig, GraphProvider

    config = GraphConfig.from_adapter_config(adapter.config)
    return ("microsoft365", *config.key), lambda: GraphProvider(config)


def _ses(adapter: Adapter) -> tuple[_Key, Callable[[], Provider]]:
    from streams.providers.ses import SesConfig, SesProvider

    config = SesConfig.from_adapter_config(adapter.config)
    return ("ses", *config.key), lambda: SesProvider(config)


def _mailgun(adapter: Adapter) -> tuple[_Key, Callable[[], Provider]]:
    from streams.providers.mailgun import MailgunConfig, MailgunProvider

    config = MailgunConfig.from_adapter_config(adapter.config)
    return ("mailgun", *config.key), lambda: MailgunProvider(config)


def _postmark(adapter: Adapter) -> tuple[_Key, Callable[[], Provider]]:
    from streams.providers.postmark import PostmarkConfig, PostmarkProvider

    config = PostmarkConfig.from_adapter_config(adapter.config)
    return ("postmark", *config.key), lambda: PostmarkProvider(config)


def _memory(adapter: Adapter) -> tuple[_Key, Callable[[], Provider]]:
    # One recorder per adapter, so a test can look at what "this mailbox" sent.
    fail = adapter.config.get("fail") or {}
    return ("memory", adapter.id), lambda: MemoryProvider(fail=fail)


_BUILDERS: dict[str, Callable[[Adapter], tuple[_Key, Callable[[], Provider]]]] = {
    "smtp": _smtp,
    "memory": _memory,
    "gmail": _gmail,
    "microsoft365": _microsoft365,
    "ses": _ses,
    "mailgun": _mailgun,
    "postmark": _postmark,
}
PROVIDERS = frozenset(_BUILDERS)
"""The providers we ship, registered here only; the API refuses an adapter naming another."""
